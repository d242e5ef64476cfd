"""Render a journey step from its Jinja2 templates in `templates/`.

An email step `NAME` has two files a marketer edits:

- `NAME.txt.j2`  — first line `Subject: …`, then the plain-text part (not escaped);
- `NAME.html.j2` — the HTML part, autoescaped, normally `{% extends "_layout.html.j2" %}` with
  `{% block preheader %}` and `{% block content %}`.

An SMS step `NAME` has `NAME.sms.j2` (plain text; keep it short and say how to opt out).
The text part of an email always ends with `_footer.txt.j2` (unsubscribe link, shop address).

StrictUndefined everywhere: a missing variable is an error, never a blank email. `Renderer.check`
renders every configured step at worker start-up against sample data covering the shapes real
data takes (items or none, a category or none), so a typo stops the worker instead of a send. An
error in a branch the samples never reach still surfaces at send time: that message is marked
`failed` with `describe`'s account of it, never retried (rendering again cannot help).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError, pass_context

from journeys.links import LinkHosts

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
CURRENCY_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "CAD": "CA$", "AUD": "A$", "JPY": "¥", "INR": "₹"}
SAMPLE_UNSUBSCRIBE = "https://breadcrumb.example/u/SAMPLE-TOKEN"


class TemplateProblem(ValueError):
    """A template that cannot be used; the message names the file and what is wrong."""


@dataclass
class Rendered:
    subject: str
    text: str
    html: str = ""


def money(value: object, currency: str | None = None) -> str:
    """`64` → `$64.00`; unknown currencies print their code (`64.00 SEK`); no value prints nothing."""
    if value is None or value == "" or isinstance(value, bool):
        return ""
    try:
        amount = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    code = (currency or "USD").upper()
    decimals = 0 if code == "JPY" else 2
    symbol = CURRENCY_SYMBOLS.get(code)
    return f"{symbol}{amount:,.{decimals}f}" if symbol else f"{amount:,.{decimals}f} {code}"


def slug(value: object) -> str:
    """`Sensitive Skin` → `sensitive-skin` (for collection links)."""
    return re.sub(r"[^a-z0-9]+", "-", str(value or "").lower()).strip("-")


def absolute(url: str | None, base: str) -> str:
    if not url:
        return base or ""
    if urlsplit(url).scheme:
        return url
    return urljoin(base.rstrip("/") + "/", url.lstrip("/")) if base else url


def with_utm(url: str, medium: str, campaign: str, content: str) -> str:
    """Tag a storefront link so the shop's analytics credit the journey; existing utm_* are kept."""
    parts = urlsplit(url)
    if not parts.scheme.startswith("http"):
        return url
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key.startswith("utm_") for key, _ in query):
        return url
    query += [
        ("utm_source", "breadcrumb"),
        ("utm_medium", medium),
        ("utm_campaign", campaign),
        ("utm_content", content),
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


@pass_context
def _link(context, url: str | None) -> str:
    """`{{ link(item.url) }}`: absolute (joined to the shop URL) and UTM-tagged; a link off the shop's
    hosts becomes the shop's own URL."""
    shop = context.get("shop") or {}
    hosts = context.get("link_hosts")
    if url and isinstance(hosts, LinkHosts) and not hosts.allows(url):
        url = None
    full = absolute(url, shop.get("url", ""))
    return with_utm(full, context.get("channel", "email"), context.get("journey", ""), context.get("template", ""))


def _environment(folder: Path, autoescape: bool) -> Environment:
    # auto_reload off: templates are checked once at worker start-up and used as checked; an edit
    # takes effect (and is checked again) when the workers restart.
    env = Environment(
        loader=FileSystemLoader(folder),
        undefined=StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    env.filters["money"] = money
    env.filters["slug"] = slug
    env.globals["link"] = _link
    return env


def describe(exc: TemplateProblem | TemplateError, name: str, channel: str) -> str:
    """What is wrong and where: `templates/welcome_1.txt.j2 line 7: UndefinedError: 'colour' is
    undefined`. A render-time error carries no location of its own; the template's frame in the
    traceback (Jinja maps it to the template line) does."""
    if isinstance(exc, TemplateProblem):
        return str(exc)
    where, line = getattr(exc, "filename", None) or getattr(exc, "name", None), getattr(exc, "lineno", None)
    if where is None:
        frame = exc.__traceback__
        while frame is not None:
            if frame.tb_frame.f_code.co_filename.endswith(".j2"):
                where, line = Path(frame.tb_frame.f_code.co_filename).name, frame.tb_lineno
            frame = frame.tb_next
    if where is not None and not where.startswith("templates/"):
        where = f"templates/{Path(where).name}"
    files = ", ".join(f"templates/{f}" for f in template_files(name, channel))
    return f"{where or files}{f' line {line}' if line else ''}: {type(exc).__name__}: {exc.message or exc}"


def template_files(name: str, channel: str) -> list[str]:
    return [f"{name}.sms.j2"] if channel == "sms" else [f"{name}.txt.j2", f"{name}.html.j2"]


def _on_shop_hosts(products: object, hosts: LinkHosts) -> object:
    """Product lines with any link or image off the shop's hosts left out (the template then links
    the shop itself and shows no image)."""
    if not isinstance(products, list):
        return products
    return [
        {**p, **{k: None for k in ("url", "image_url") if not hosts.allows(p.get(k) or "")}}
        if isinstance(p, dict)
        else p
        for p in products
    ]


class Renderer:
    def __init__(self, folder: Path = TEMPLATES, link_hosts: tuple[str, ...] | list[str] = ()) -> None:
        self.folder = folder
        self.link_hosts = tuple(link_hosts)  # besides the host of the context's shop URL
        self.text_env = _environment(folder, autoescape=False)
        self.html_env = _environment(folder, autoescape=True)

    def render(self, name: str, channel: str, context: dict, subject: str | None = None) -> Rendered:
        """`subject`: a Jinja line replacing the template's own subject (an experiment's subject variant)."""
        hosts = LinkHosts.of((context.get("shop") or {}).get("url"), self.link_hosts)
        context = {
            **context,
            "template": name,
            "channel": "sms" if channel == "sms" else "email",
            "link_hosts": hosts,
            **{key: _on_shop_hosts(context[key], hosts) for key in ("items", "picks") if key in context},
        }
        if channel == "sms":
            body = self.text_env.get_template(f"{name}.sms.j2").render(**context).strip()
            return Rendered(subject=_first_line(body), text=body)
        text = self.text_env.get_template(f"{name}.txt.j2").render(**context)
        first, _, body = text.lstrip().partition("\n")
        if not first.startswith("Subject:"):
            raise TemplateProblem(f"templates/{name}.txt.j2 must start with a 'Subject: …' line")
        line = self.text_env.from_string(subject).render(**context) if subject else first.removeprefix("Subject:")
        subject = " ".join(line.split())
        if not subject:
            raise TemplateProblem(f"templates/{name}.txt.j2 renders an empty subject")
        footer = self.text_env.get_template("_footer.txt.j2").render(**context)
        html = self.html_env.get_template(f"{name}.html.j2").render(**context, subject=subject)
        text = _tidy(f"{body.strip()}\n\n{footer.strip()}\n")
        return Rendered(subject=subject, text=text, html=html.strip() + "\n")

    def check(self, steps: Iterable[tuple[str, str] | tuple[str, str, str | None]]) -> None:
        """Render every (template, channel[, variant subject]) of the policy against sample data; raise
        naming the file and the problem (missing file, syntax error, undefined variable, no unsubscribe link)."""
        problems: list[str] = []
        for name, channel, *subject in dict.fromkeys(steps):
            override = subject[0] if subject else None
            for sample in sample_contexts(name):
                try:
                    rendered = self.render(name, channel, sample, subject=override)
                except (TemplateProblem, TemplateError) as exc:
                    where = describe(exc, name, channel)
                    problems.append(f"{where} (with the variant subject {override!r})" if override else where)
                    break
                if channel != "sms" and SAMPLE_UNSUBSCRIBE not in rendered.html:
                    problems.append(
                        f"templates/{name}.html.j2 has no unsubscribe link: extend _layout.html.j2 "
                        "or show {{ unsubscribe_url }}"
                    )
                    break
        if problems:
            raise TemplateProblem("message templates: " + "; ".join(problems))


def _tidy(text: str) -> str:
    """Plain text as a person would write it: no trailing spaces, never more than one blank line."""
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def _first_line(text: str, limit: int = 60) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _sample_item(
    sku: str,
    name: str,
    variant: str | None,
    price: float,
    quantity: int | None,
    category: str = "sensitive skin",
    in_stock: bool = True,
) -> dict:
    return {
        "sku": sku,
        "variant": variant,
        "name": name,
        "category": category,
        "price": price,
        "currency": "USD",
        "quantity": quantity,
        "image_url": f"https://shop.example/images/{sku}.jpg",
        "url": f"/products/{sku.lower()}",
        "in_stock": in_stock,
    }


def sample_contexts(name: str) -> list[dict]:
    """The shapes real data takes: rich (items, category, a first name), bare (nothing known), and a
    cart line that sold out. Also what `breadcrumb templates preview` renders."""
    shop = {"name": "Glow Skincare", "url": "https://shop.example", "address": "1 Market St, Springfield"}
    journey = name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name
    base = {
        "journey": journey,
        "step": 1,
        "shop": shop,
        "unsubscribe_url": SAMPLE_UNSUBSCRIBE,
        "resume_url": "https://shop.example/cart",
        "currency": "USD",
    }
    rich_items = [
        _sample_item("SER-30", "Night Serum", "30 ml", 64.0, 1),
        _sample_item("CLN-01", "Gentle Cleanser", None, 18.5, 2),
    ]
    picks = [
        _sample_item("MST-50", "Barrier Moisturiser", "50 ml", 32.0, None),
        _sample_item("SPF-30", "Daily SPF 30", None, 24.0, None),
    ]
    return [
        {
            **base,
            "first_name": "Ada",
            "items": rich_items,
            "cart_value": 101.0,
            "category": "sensitive skin",
            "picks": picks,
        },
        {**base, "first_name": None, "items": [], "cart_value": None, "category": None, "picks": []},
        {
            **base,
            "first_name": "Bo",
            "items": [_sample_item("SER-30", "Night Serum", "30 ml", 64.0, 1, in_stock=False)],
            "cart_value": 64.0,
            "category": None,
            "picks": picks,
        },
    ]
