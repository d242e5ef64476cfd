"""The API's own HTML pages (the report, the demo store, unsubscribe, the codec login): Jinja
templates under `api/templates/`, every value autoescaped. Message templates are another matter
(`templates/`, rendered by the worker: activities/render.py)."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, PackageLoader

pages = Environment(loader=PackageLoader("api", "templates"), autoescape=True, trim_blocks=True, lstrip_blocks=True)


def render_page(name: str, **values: Any) -> str:
    return pages.get_template(name).render(**values)
