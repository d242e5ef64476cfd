"""Which links may reach a message: only the shop's own hosts.

Product `url` / `image_url` and a cart's `checkout_url` / `cart_url` arrive in storefront events,
and a public write key can send anything. A link is allowed when it is relative (joined to the shop
URL) or an http(s) URL on the host of `BREADCRUMB_SHOP_URL` or one of `BREADCRUMB_LINK_HOSTS`
(`cdn.shop.example`, or `*.shop.example` for every subdomain). Used at ingest (the catalog keeps no
foreign link) and at render (no foreign link is shown, whatever the store holds).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

# Event properties whose URLs can reach a message: the product's link and image, the cart's link.
LINK_PROPERTIES = ("url", "image_url", "checkout_url", "cart_url")
MAX_HOST_PREFIX = 300  # longer than any scheme://host we allow
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")  # control characters and the backslash


def _host(value: str) -> str:
    return value.strip().lower().rstrip(".")


@dataclass(frozen=True)
class LinkHosts:
    """The hosts messages may link to."""

    hosts: frozenset[str] = frozenset()
    subdomains_of: frozenset[str] = frozenset()  # from `*.example.com` entries

    @cached_property
    def _prefixes(self) -> tuple[str, ...]:
        """`https://host` and `http://host` of every allowed host: most links start with one, and
        then only a `/`, `?`, `#` or nothing may follow (a `:` or `@` could start another host)."""
        return tuple(f"{scheme}://{host}" for host in self.hosts for scheme in ("https", "http"))

    @classmethod
    def of(cls, shop_url: str | None, extra: Iterable[str] = ()) -> LinkHosts:
        hosts, subdomains = set(), set()
        shop_host = urlsplit(shop_url or "").hostname
        if shop_host:
            hosts.add(_host(shop_host))
        for entry in extra:
            entry = _host(entry)
            if entry.startswith("*."):
                subdomains.add(entry[2:])
            elif entry:
                hosts.add(entry)
        return cls(frozenset(hosts), frozenset(subdomains))

    def allows(self, url: object) -> bool:
        """True for a relative link and for an http(s) URL on an allowed host. Backslashes and
        control characters are refused: browsers read `https://evil\\@shop` differently from us."""
        if not isinstance(url, str):
            return False
        url = url.strip()
        if not url:
            return True
        if _UNSAFE.search(url):
            return False
        head = url[:MAX_HOST_PREFIX].lower()
        for prefix in self._prefixes:
            if head.startswith(prefix) and head[len(prefix) : len(prefix) + 1] in ("", "/", "?", "#"):
                return True
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            return False
        if not parts.scheme and not parts.netloc:
            return ":" not in url.split("/", 1)[0]  # a path; `javascript:…` has a scheme-like head
        if parts.scheme.lower() not in ("http", "https", "") or not host:
            return False
        host = _host(host)
        return host in self.hosts or any(host.endswith("." + parent) for parent in self.subdomains_of)

    def foreign(self, properties: dict[str, Any], keys: Iterable[str] = LINK_PROPERTIES) -> list[str]:
        """The keys of `properties` whose value is a link messages must not show."""
        return [key for key in keys if properties.get(key) not in (None, "") and not self.allows(properties[key])]
