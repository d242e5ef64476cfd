"""A demo storefront at `/demo/store`, tracked by the first-party snippet served at `/breadcrumb.js`.

Static pages (no auth, nothing stored server-side): a home page, collections, product pages, a
skin quiz and a cart with checkout. The page gets the Segment write key from `?writeKey=…` (the
link `breadcrumb dev` prints) and hands it to the snippet as `data-write-key`; internal links carry it
along. Write keys are public by design (every storefront ships one); the admin token is never
rendered. `?cookieDomain=.example.com` sets the snippet's cookie domain.

`CATALOG` is also what `breadcrumb demo` shops from.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse
from markupsafe import Markup

from api.pages import render_page

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/demo/store"
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
DOMAIN_PATTERN = re.compile(r"^\.?[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*$")
SHOP = "Fern & Field"
CURRENCY = "USD"


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price: float
    category: str
    blurb: str
    colour: str

    @property
    def variant(self) -> str:
        """The size in the sku (`SER-NIGHT-30` → `30 ml`); a set comes in one variant."""
        size = self.sku.rsplit("-", 1)[-1]
        return f"{size} ml" if size.isdigit() else "set"

    def properties(self) -> dict:
        """Segment e-commerce v2 product properties, with every recommended key of the taxonomy."""
        return {
            "sku": self.sku,
            "product_id": self.sku,
            "variant": self.variant,
            "name": self.name,
            "price": self.price,
            "category": self.category,
            "currency": CURRENCY,
            "url": f"{PREFIX}/products/{self.sku}",
        }


@dataclass(frozen=True)
class Collection:
    slug: str
    name: str
    blurb: str


COLLECTIONS = (
    Collection("serums", "Serums", "Concentrated actives for targeted results."),
    Collection("moisturisers", "Moisturisers", "Barrier-first creams for every skin type."),
    Collection("cleansers", "Cleansers", "Gentle, low-foam cleansers that never strip."),
    Collection("sets", "Sets", "Routines, bundled and a little cheaper."),
)

CATALOG = (
    Product(
        "SER-NIGHT-30", "Night Renewal Serum", 64.0, "serums", "Retinal 0.1% in squalane. Wakes up smoother.", "#6b4e9b"
    ),
    Product(
        "SER-VITC-30", "Vitamin C Glow Serum", 48.0, "serums", "15% ascorbic acid, ferulic and vitamin E.", "#e8a33d"
    ),
    Product(
        "SER-HYAL-30", "Hyaluronic Dew Serum", 36.0, "serums", "Three weights of hyaluronic acid for bounce.", "#4fa3c7"
    ),
    Product(
        "MOI-BARR-50",
        "Barrier Repair Cream",
        42.0,
        "moisturisers",
        "Ceramides, cholesterol and fatty acids 3:1:1.",
        "#c9b79c",
    ),
    Product("MOI-GEL-50", "Oil-Free Water Gel", 34.0, "moisturisers", "Weightless hydration for oily skin.", "#8fd1c1"),
    Product(
        "MOI-SPF-50",
        "Daily Defence SPF 50",
        38.0,
        "moisturisers",
        "Invisible mineral-chemical hybrid sunscreen.",
        "#f2d16b",
    ),
    Product(
        "CLN-MILK-150", "Oat Milk Cleanser", 24.0, "cleansers", "Colloidal oat; for sensitive mornings.", "#efe6d2"
    ),
    Product(
        "CLN-BALM-100", "Melting Cleansing Balm", 32.0, "cleansers", "Takes SPF and make-up off in one.", "#e4b7a0"
    ),
    Product("SET-ROUTINE", "The Full Routine Set", 118.0, "sets", "Cleanser, serum, moisturiser and SPF.", "#7a9a6b"),
    Product("SET-MINI", "Travel Minis Trio", 29.0, "sets", "Three best sellers in 15 ml sizes.", "#b5a1d6"),
)

PRODUCTS = {p.sku: p for p in CATALOG}
COLLECTION_BY_SLUG = {c.slug: c for c in COLLECTIONS}

QUIZ = (
    {
        "question": "skin_type",
        "label": "How does your skin feel by midday?",
        "answers": [
            ("oily", "Shiny"),
            ("dry", "Tight"),
            ("combination", "Both, depending where"),
            ("normal", "Comfortable"),
        ],
    },
    {
        "question": "concern",
        "label": "What would you most like to change?",
        "answers": [
            ("texture", "Texture"),
            ("dullness", "Dullness"),
            ("dehydration", "Dehydration"),
            ("redness", "Redness"),
        ],
    },
)
QUIZ_PICKS = {
    "texture": "SER-NIGHT-30",
    "dullness": "SER-VITC-30",
    "dehydration": "SER-HYAL-30",
    "redness": "MOI-BARR-50",
}
# The category each answer points the shopper to (`Quiz Answered` carries it: the category anchor
# counts quiz answers): a concern leads to its pick's category, a skin type to a moisturiser.
QUIZ_CATEGORIES = {
    **{answer: "moisturisers" for answer, _ in QUIZ[0]["answers"]},
    **{answer: PRODUCTS[sku].category for answer, sku in QUIZ_PICKS.items()},
}

router = APIRouter(include_in_schema=False)  # the demo store: off in production (DEMO_STORE_ENABLED=false)
snippet_router = APIRouter(include_in_schema=False)  # the tracking snippet every storefront loads: always on


def _json_for_script(value: object) -> Markup:
    """JSON safe inside <script type="application/json"> (no closing tag, no HTML comment)."""
    text = json.dumps(value, separators=(",", ":"))
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _render(request: Request, template: str, page: str, title: str, **values) -> HTMLResponse:
    write_key = request.query_params.get("writeKey", "")
    write_key = write_key if KEY_PATTERN.match(write_key) else ""
    cookie_domain = request.query_params.get("cookieDomain", "")
    cookie_domain = cookie_domain if DOMAIN_PATTERN.match(cookie_domain) and len(cookie_domain) <= 253 else ""
    carried = {k: v for k, v in (("writeKey", write_key), ("cookieDomain", cookie_domain)) if v}
    query = f"?{urlencode(carried)}" if carried else ""

    def link(path: str) -> str:
        return f"{PREFIX}{path}{query}"

    attributes = Markup(' data-write-key="{}"').format(write_key) if write_key else Markup("")
    if cookie_domain:
        attributes += Markup(' data-cookie-domain="{}"').format(cookie_domain)
    html = render_page(
        f"demo_store/{template}.html.j2",
        title=title,
        page=page,
        shop=SHOP,
        prefix=PREFIX,
        link=link,
        write_key=write_key,
        snippet_attributes=attributes,
        collections=COLLECTIONS,
        **values,
    )
    return HTMLResponse(
        html, headers={"Cache-Control": "no-store", "Referrer-Policy": "strict-origin-when-cross-origin"}
    )


@router.get(PREFIX)
@router.get(PREFIX + "/")
def home(request: Request) -> HTMLResponse:
    featured = [PRODUCTS[s] for s in ("SER-NIGHT-30", "MOI-BARR-50", "SER-VITC-30", "SET-ROUTINE")]
    return _render(request, "home", "home", "Home", featured=featured)


@router.get(PREFIX + "/collections/{slug}")
def collection(request: Request, slug: str) -> HTMLResponse:
    found = COLLECTION_BY_SLUG.get(slug)
    if found is None:
        raise HTTPException(404, "no such collection")
    products = [p for p in CATALOG if p.category == slug]
    data = {"list_id": slug, "category": found.name, "products": [p.properties() for p in products]}
    return _render(
        request,
        "collection",
        "collection",
        found.name,
        collection=found,
        products=products,
        data=_json_for_script(data),
    )


@router.get(PREFIX + "/products/{sku}")
def product(request: Request, sku: str) -> HTMLResponse:
    found = PRODUCTS.get(sku)
    if found is None:
        raise HTTPException(404, "no such product")
    related = [p for p in CATALOG if p.category == found.category and p.sku != sku][:3]
    return _render(
        request,
        "product",
        "product",
        found.name,
        product=found,
        collection=COLLECTION_BY_SLUG[found.category],
        related=related,
        data=_json_for_script(found.properties()),
    )


@router.get(PREFIX + "/quiz")
def quiz(request: Request) -> HTMLResponse:
    picks = {answer: {"sku": sku, "name": PRODUCTS[sku].name} for answer, sku in QUIZ_PICKS.items()}
    return _render(
        request,
        "quiz",
        "quiz",
        "Skin quiz",
        quiz=QUIZ,
        data=_json_for_script({"quiz": "routine", "picks": picks, "categories": QUIZ_CATEGORIES}),
    )


@router.get(PREFIX + "/cart")
def cart(request: Request) -> HTMLResponse:
    return _render(request, "cart", "cart", "Cart", data=_json_for_script({p.sku: p.properties() for p in CATALOG}))


@router.get(PREFIX + "/catalog.json")
def catalog() -> list[dict]:
    return [{**asdict(p), **p.properties()} for p in CATALOG]


def _static(name: str, media_type: str, max_age: int = 300) -> FileResponse:
    return FileResponse(STATIC / name, media_type=media_type, headers={"Cache-Control": f"public, max-age={max_age}"})


@snippet_router.get("/breadcrumb.js")
def snippet() -> FileResponse:
    """The first-party tracking snippet, for the demo store and for your own storefront."""
    return _static("breadcrumb.js", "application/javascript; charset=utf-8")


@router.get(PREFIX + "/assets/store.js")
def store_js() -> FileResponse:
    return _static("store.js", "application/javascript; charset=utf-8")


@router.get(PREFIX + "/assets/store.css")
def store_css() -> FileResponse:
    return _static("store.css", "text/css; charset=utf-8")
