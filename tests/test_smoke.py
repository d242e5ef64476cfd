def test_identify_merges_anonymous_history(api, db):
    anon = "anon-1"
    r = api.segment(
        "track", {"anonymousId": anon, "event": "Product Viewed", "properties": {"sku": "S1"}, "messageId": "m1"}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}
    r = api.segment("identify", {"anonymousId": anon, "traits": {"email": " Ada@Example.COM "}, "messageId": "m2"})
    assert r.status_code == 200, r.text
    person = api.person(email="ada@example.com")
    assert person["emails"] == ["ada@example.com"]
    assert [e["name"] for e in person["events"]] == ["Product Viewed", "Identify"]
