"""Render a journey step from its Jinja2 template (`templates/{name}.txt.j2`; first line `Subject: …`).

StrictUndefined: a missing variable is an error, never a blank email."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@dataclass
class Rendered:
    subject: str
    body: str


class Renderer:
    def __init__(self, folder: Path = TEMPLATES) -> None:
        self.env = Environment(loader=FileSystemLoader(folder), undefined=StrictUndefined, autoescape=False,
                               trim_blocks=False, keep_trailing_newline=False)

    def check(self, names: list[str]) -> None:
        """Fail at start-up when a configured step has no template."""
        for name in names:
            self.env.get_template(f"{name}.txt.j2")

    def render(self, name: str, context: dict) -> Rendered:
        text = self.env.get_template(f"{name}.txt.j2").render(**context)
        first, _, body = text.partition("\n")
        if not first.startswith("Subject:"):
            raise ValueError(f"template {name} must start with a 'Subject:' line")
        return Rendered(subject=first.removeprefix("Subject:").strip(), body=body.strip())
