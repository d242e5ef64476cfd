"""Message templates: a snapshot of every step's subject, text and HTML (rich and bare data), HTML
autoescaping, and start-up errors for a missing template, a missing variable or a missing
unsubscribe link.

Snapshots live in tests/snapshots/. After an intended template change, regenerate them with
`UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_templates.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from activities.render import Renderer, TemplateProblem, money, with_utm
from journeys.policy import load_policy
from store.settings import REPO_ROOT

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("UPDATE_SNAPSHOTS") == "1"
SHOP = {"name": "Glow Skincare", "url": "https://shop.example", "address": "1 Market St, Springfield"}
UNSUBSCRIBE = "https://crumbs.example/u/TOKEN"
CDN = ["cdn.example"]  # BREADCRUMB_LINK_HOSTS: the shop's images live there


def item(sku, name, variant=None, price=10.0, quantity=None, in_stock=True, category="sensitive skin"):
    return {
        "sku": sku,
        "variant": variant,
        "name": name,
        "category": category,
        "price": price,
        "currency": "USD",
        "quantity": quantity,
        "image_url": f"https://cdn.example/{sku}.jpg",
        "url": f"/products/{sku.lower()}",
        "in_stock": in_stock,
    }


def context(journey: str, step: int, rich: bool) -> dict:
    base = {
        "journey": journey,
        "step": step,
        "shop": SHOP,
        "unsubscribe_url": UNSUBSCRIBE,
        "currency": "USD",
        "resume_url": "https://shop.example/checkouts/c-1",
    }
    if not rich:
        return {**base, "first_name": None, "items": [], "cart_value": None, "category": None, "picks": []}
    if journey == "cart_recovery":
        items = [
            item("SER-30", "Night Serum", "30 ml", 64.0, 1),
            item("CLN-01", "Gentle Cleanser", None, 18.5, 2, in_stock=False),
        ]
        value = 101.0
    else:
        items = [item("SER-30", "Night Serum", "30 ml", 64.0), item("MSK-02", "Calm Mask", None, 28.0)]
        value = None
    picks = [item("MST-50", "Barrier Moisturiser", "50 ml", 32.0), item("SPF-30", "Daily SPF 30", None, 24.0)]
    return {
        **base,
        "first_name": "Ada",
        "items": items,
        "cart_value": value,
        "category": "sensitive skin",
        "picks": picks,
    }


def steps() -> list[tuple[str, str, str, int]]:
    policy = load_policy(REPO_ROOT / "journeys.toml")
    found = [
        (s.template, s.channel, route, i) for route, j in policy.journeys.items() for i, s in enumerate(j.steps, 1)
    ]
    return found + [("cart_recovery_sms", "sms", "cart_recovery", 4)]


def compare(name: str, actual: str) -> None:
    path = SNAPSHOTS / name
    if UPDATE or not path.exists():
        if not UPDATE and os.environ.get("CI"):
            pytest.fail(f"snapshot {path} is missing; generate it with UPDATE_SNAPSHOTS=1 and commit it")
        path.parent.mkdir(exist_ok=True)
        path.write_text(actual)
        return
    expected = path.read_text()
    assert actual == expected, f"{name} differs from its snapshot (UPDATE_SNAPSHOTS=1 to accept an intended change)"


@pytest.mark.parametrize("template,channel,journey,step", steps(), ids=lambda v: str(v))
@pytest.mark.parametrize("shape", ["rich", "bare"])
def test_every_step_matches_its_snapshot(template, channel, journey, step, shape):
    rendered = Renderer(link_hosts=CDN).render(template, channel, context(journey, step, shape == "rich"))
    if channel == "sms":
        compare(f"{template}.{shape}.sms.txt", rendered.text + "\n")
        return
    compare(f"{template}.{shape}.txt", f"Subject: {rendered.subject}\n\n{rendered.text}")
    compare(f"{template}.{shape}.html", rendered.html)
    assert UNSUBSCRIBE in rendered.text and UNSUBSCRIBE in rendered.html
    assert rendered.html.startswith("<!DOCTYPE html>")


def test_cart_snapshot_shows_every_line_item_with_variant_quantity_price_image_and_total():
    rendered = Renderer(link_hosts=CDN).render("cart_recovery_1", "email", context("cart_recovery", 1, True))
    for text in (
        "Night Serum",
        "30 ml",
        "Qty 1",
        "$64.00",
        "https://cdn.example/SER-30.jpg",
        "Gentle Cleanser",
        "Qty 2",
        "$18.50",
        "Cart total $101.00",
        "Sold out right now",
    ):
        assert text in rendered.html, text
    assert "Night Serum (30 ml) × 1 — $64.00" in rendered.text
    assert "https://shop.example/checkouts/c-1?utm_source=breadcrumb" in rendered.text


@pytest.mark.parametrize(
    "template", [t for t, channel, journey, _ in steps() if journey == "cart_recovery" and channel == "email"]
)
def test_every_cart_email_shows_the_cart_value(template):
    rendered = Renderer(link_hosts=CDN).render(template, "email", context("cart_recovery", 3, True))
    assert "($101.00)" in rendered.text and "Cart total $101.00" in rendered.html


def test_browse_snapshot_has_the_category_anchor_and_the_items():
    rendered = Renderer(link_hosts=CDN).render("browse_recovery_1", "email", context("browse_recovery", 1, True))
    assert rendered.subject == "Still thinking about sensitive skin?"
    assert "Night Serum" in rendered.text and "Calm Mask" in rendered.text
    assert "https://shop.example/collections/sensitive-skin?" in rendered.html


def test_welcome_falls_back_to_bestsellers_wording():
    bare = context("welcome", 2, False)
    bare["picks"] = [item("SPF-30", "Daily SPF 30", None, 24.0)]
    rendered = Renderer(link_hosts=CDN).render("welcome_2", "email", bare)
    assert rendered.subject == "Our bestsellers"
    assert "Daily SPF 30" in rendered.text


def test_html_is_autoescaped_text_is_not():
    data = context("welcome", 1, True)
    data["first_name"] = "<b>Ada</b> & co"
    data["picks"][0]["name"] = '<img src=x onerror="alert(1)">'
    rendered = Renderer(link_hosts=CDN).render("welcome_1", "email", data)
    assert "<b>Ada</b>" not in rendered.html and "&lt;b&gt;Ada&lt;/b&gt; &amp; co" in rendered.html
    assert 'onerror="alert(1)"' not in rendered.html
    assert rendered.subject == "Welcome, <b>Ada</b> & co!"  # headers are not HTML
    assert "<b>Ada</b> & co" in rendered.text


def test_sms_is_short_and_says_how_to_opt_out():
    rendered = Renderer(link_hosts=CDN).render("cart_recovery_sms", "sms", context("cart_recovery", 4, True))
    assert "Reply STOP" in rendered.text and rendered.html == ""
    assert "utm_medium=sms" in rendered.text


def test_the_shipped_config_passes_the_start_up_check():
    Renderer().check([(t, c) for t, c, *_ in steps()])


def write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


FOOTER = "Unsubscribe: {{ unsubscribe_url }}\n"
LAYOUT = '<html>{% block content %}{% endblock %}<a href="{{ unsubscribe_url }}">u</a></html>'


def test_missing_template_is_an_error_naming_the_file(tmp_path):
    write(tmp_path, {"_footer.txt.j2": FOOTER, "a.txt.j2": "Subject: hi\nbody"})
    with pytest.raises(TemplateProblem, match=r"a\.html\.j2"):
        Renderer(tmp_path).check([("a", "email")])
    with pytest.raises(TemplateProblem, match=r"nope\.sms\.j2"):
        Renderer(tmp_path).check([("nope", "sms")])


def test_undefined_variable_is_an_error_not_a_blank(tmp_path):
    write(
        tmp_path,
        {
            "_footer.txt.j2": FOOTER,
            "_layout.html.j2": LAYOUT,
            "a.txt.j2": "Subject: Hi {{ frist_name }}\nbody",
            "a.html.j2": '{% extends "_layout.html.j2" %}{% block content %}x{% endblock %}',
        },
    )
    with pytest.raises(TemplateProblem, match=r"a\.txt\.j2.*frist_name"):
        Renderer(tmp_path).check([("a", "email")])


def test_undefined_attribute_is_an_error(tmp_path):
    write(
        tmp_path,
        {
            "_footer.txt.j2": FOOTER,
            "_layout.html.j2": LAYOUT,
            "a.txt.j2": "Subject: Hi\nbody",
            "a.html.j2": '{% extends "_layout.html.j2" %}{% block content %}'
            "{% for i in items %}{{ i.colour }}{% endfor %}{% endblock %}",
        },
    )
    with pytest.raises(TemplateProblem, match="colour"):
        Renderer(tmp_path).check([("a", "email")])


def test_subject_line_is_required(tmp_path):
    write(
        tmp_path,
        {
            "_footer.txt.j2": FOOTER,
            "_layout.html.j2": LAYOUT,
            "a.txt.j2": "Hello\nbody",
            "a.html.j2": '{% extends "_layout.html.j2" %}',
        },
    )
    with pytest.raises(TemplateProblem, match="Subject"):
        Renderer(tmp_path).check([("a", "email")])


def test_html_without_an_unsubscribe_link_is_refused(tmp_path):
    write(tmp_path, {"_footer.txt.j2": FOOTER, "a.txt.j2": "Subject: Hi\nbody", "a.html.j2": "<p>no footer</p>"})
    with pytest.raises(TemplateProblem, match="unsubscribe"):
        Renderer(tmp_path).check([("a", "email")])


def test_worker_start_up_fails_on_a_step_without_template(tmp_path):
    from journeys.policy import parse_policy
    from store.settings import Settings
    from worker.worker import build_worker

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")
    settings.__dict__["policy"] = parse_policy(
        {
            "journeys": {
                "cart_recovery": {"steps": [{"delay": "1h", "template": "cart_recovery_1"}]},
                "browse_recovery": {"steps": [{"delay": "1h", "template": "browse_recovery_9"}]},
                "welcome": {"steps": [{"delay": "1h", "template": "welcome_1", "channel": "sms"}]},
            }
        }
    )
    with pytest.raises(TemplateProblem) as failure:
        build_worker(None, None, settings)  # fails before it needs a client
    assert "browse_recovery_9.txt.j2" in str(failure.value) and "welcome_1.sms.j2" in str(failure.value)


def test_money_and_utm_helpers():
    assert money(64) == "$64.00" and money(1234.5, "EUR") == "€1,234.50" and money(5, "SEK") == "5.00 SEK"
    assert money(None) == "" and money(1500, "JPY") == "¥1,500"
    assert with_utm("https://s.example/p?a=1", "email", "welcome", "welcome_1") == (
        "https://s.example/p?a=1&utm_source=breadcrumb&utm_medium=email&utm_campaign=welcome&utm_content=welcome_1"
    )
    assert with_utm("https://s.example/p?utm_source=x", "email", "w", "w1") == "https://s.example/p?utm_source=x"
