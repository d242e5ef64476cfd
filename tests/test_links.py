"""Which links may reach a message (journeys/links.py): a pure rule, tested without I/O."""

from __future__ import annotations

import pytest

from journeys.links import LinkHosts

HOSTS = LinkHosts.of("https://Glow.example/shop", ["cdn.glow.example", "*.images.example", " "])


@pytest.mark.parametrize(
    "url",
    [
        "/products/serum",
        "products/serum",
        "?page=2",
        "",
        "https://glow.example/p/1",
        "http://GLOW.example:8443/p",
        "https://cdn.glow.example/a.jpg",
        "https://eu.images.example/a.jpg",
        "//glow.example/p",
        "https://glow.example./p",
        "https://glow.example?next=@evil.example",
        "https://glow.example/@evil.example",
    ],
)
def test_allowed(url):
    assert HOSTS.allows(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/p",
        "https://glow.example.evil.example/p",
        "https://evilglow.example/p",
        "https://glow.example@evil.example/p",
        "https://glow.example:@evil.example/p",  # userinfo: the host is evil
        "https://evil.example\\@glow.example/p",  # browsers read the backslash as a slash
        "https://glow.example/p\n<script>",
        "//evil.example/p",
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "data:text/html,hi",
        "ftp://glow.example/p",
        "https://images.example/a.jpg",
        "https://[::1/p",
        None,
        42,
    ],
)
def test_refused(url):
    assert not HOSTS.allows(url)


def test_without_a_shop_url_only_relative_links_pass():
    nothing = LinkHosts.of("", [])
    assert nothing.allows("/cart") and not nothing.allows("https://glow.example/cart")


def test_foreign_names_the_properties_to_leave_out():
    props = {
        "url": "https://evil.example/x",
        "image_url": "https://cdn.glow.example/x.jpg",
        "checkout_url": "",
        "cart_url": None,
        "name": "https://evil.example/is-just-a-name",
    }
    assert HOSTS.foreign(props) == ["url"]
