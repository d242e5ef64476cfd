"""`breadcrumb demo`: realistic storefront sessions through the real HTTP API, then what each shopper got.

Each shopper follows a story (a persona): anonymous browsing across pages — some on two devices,
laptop yesterday and phone today, whose anonymous ids merge when the shopper identifies on both —
collection views, quiz answers, add-to-cart with cart_id/sku/price, an email capture, a checkout
email (`Checkout Started` with `properties.email`), an account, and some purchases. Everything goes
over HTTP as a storefront would send it: analytics.js-style Segment calls from the browser (Basic
auth with the write key), `Order Completed` from the shop's server (analytics-python). Then the
demo polls the admin API until every shopper's journey has ended and prints a table: merged events,
route, messages sent, purchase.

The plan is a pure function of `--seed` and `--shoppers` (names, emails, device ids, message ids,
products), so a seed replays the same shoppers. Against a stack running
`examples/journeys.fast.toml` every shopper's story has an expected outcome (route and number of
messages), shown in the last column; a full demo then takes well under a minute.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Literal

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.demo_store import CATALOG, COLLECTIONS, PREFIX, PRODUCTS, QUIZ, QUIZ_CATEGORIES, Product
from journeys.policy import Policy
from store.settings import Settings

FINAL = {"completed", "exited", "decided", "failed", "cancelled", "terminated", "stopped"}
DEMO_WAIT = 90.0  # seconds `breadcrumb demo` waits for the journeys by default
Buys = Literal["never", "at_checkout", "after_first_message"]

FIRST_NAMES = (
    "Ada",
    "Grace",
    "Alan",
    "Katherine",
    "Linus",
    "Margaret",
    "Tim",
    "Radia",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Hedy",
    "Dennis",
    "Sophie",
    "Guido",
    "Annie",
    "Niklaus",
    "Joan",
)
LAST_NAMES = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Johnson",
    "Torvalds",
    "Hamilton",
    "Berners-Lee",
    "Perlman",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Lamarr",
    "Ritchie",
    "Wilson",
    "van Rossum",
    "Easley",
    "Wirth",
    "Clarke",
)
TIMEZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Australia/Sydney",
)
LAPTOP_UA = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
)
PHONE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
BROWSER_LIBRARY = {"name": "breadcrumb.js", "version": "1.0.0"}
SERVER_LIBRARY = {"name": "analytics-python", "version": "2.3.3"}


@dataclass(frozen=True)
class Persona:
    key: str
    story: str
    route: str  # expected with examples/journeys.fast.toml on a fresh database ("none": no journey)
    messages: tuple[int, int]  # expected number of messages sent, inclusive range
    buys: Buys = "never"
    also: tuple[str, ...] = ()  # other routes that are as good (a race the story does not care about)

    def accepts(self, route: str) -> bool:
        return route == self.route or route in self.also

    @property
    def expectation(self) -> str:
        low, high = self.messages
        return f"{self.route} · {low if low == high else f'{low}–{high}'}"


PERSONAS = (
    Persona(
        "two_devices", "browses on a laptop, fills a cart on the phone, email in the pop-up", "cart_recovery", (3, 3)
    ),
    Persona("checkout", "fills a cart, types an email at checkout, never pays", "cart_recovery", (3, 3)),
    Persona("researcher", "reads five products and takes the skin quiz, then signs up", "browse_recovery", (2, 2)),
    Persona("newsletter", "signs up for the newsletter on a first visit", "welcome", (3, 3)),
    Persona("small_cart", "adds one small item, below the cart minimum, and signs up", "welcome", (3, 3)),
    # The order lands right after the checkout email: the hub either sees it before routing (no
    # journey) or starts a cart recovery that exits before its first message.
    Persona("buyer", "checks out and pays straight away", "none", (0, 0), buys="at_checkout", also=("cart_recovery",)),
    Persona(
        "comes_back",
        "creates an account with a full cart, buys after the first reminder",
        "cart_recovery",
        (1, 2),
        buys="after_first_message",
    ),
)
PERSONA_BY_KEY = {p.key: p for p in PERSONAS}


@dataclass
class Call:
    """One HTTP call a storefront (or the shop's server) makes."""

    path: str  # /v1/page, /v1/track, /v1/identify
    body: dict
    offset: float  # seconds from the start of the shopper's timeline (its timestamp)


@dataclass
class Shopper:
    index: int
    first_name: str
    last_name: str
    email: str
    persona: Persona
    devices: list[str]
    timezone: str
    calls: list[Call] = field(default_factory=list)
    cart_id: str | None = None
    cart: list[tuple[Product, int]] = field(default_factory=list)
    user_id: str | None = None
    order_id: str | None = None

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def cart_value(self) -> float:
        return round(sum(p.price * q for p, q in self.cart), 2)

    @property
    def duration(self) -> float:
        return max((c.offset for c in self.calls), default=0.0)


class _Session:
    """Builds one shopper's calls on a timeline, device by device."""

    def __init__(self, shopper: Shopper, rng: random.Random) -> None:
        self.shopper, self.rng = shopper, rng
        self.clock = 0.0

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def later(self, low: float, high: float) -> None:
        self.clock += self.rng.uniform(low, high)

    def _context(self, device: int, path: str, title: str) -> dict:
        return {
            "library": BROWSER_LIBRARY,
            "userAgent": PHONE_UA if device else LAPTOP_UA,
            "locale": "en-US",
            "timezone": self.shopper.timezone,
            "page": {"path": path, "url": f"https://shop.example.com{path}", "title": title, "referrer": ""},
        }

    def _add(self, kind: str, device: int, body: dict, path: str = PREFIX, title: str = "Fern & Field") -> None:
        body = {
            "messageId": self._uuid(),
            "anonymousId": self.shopper.devices[device],
            "context": self._context(device, path, title),
            **body,
        }
        if self.shopper.user_id and kind != "identify":
            body["userId"] = self.shopper.user_id
        self.shopper.calls.append(Call(f"/v1/{kind}", body, self.clock))
        self.later(25, 90)

    def page(self, device: int, path: str, title: str) -> None:
        self._add(
            "page",
            device,
            {"name": title, "properties": {"path": path, "title": title, "url": f"https://shop.example.com{path}"}},
            path,
            title,
        )

    def home(self, device: int) -> None:
        self.page(device, PREFIX, "Home")

    def collection(self, device: int, slug: str) -> None:
        found = next(c for c in COLLECTIONS if c.slug == slug)
        path = f"{PREFIX}/collections/{slug}"
        self.page(device, path, found.name)
        products = [p.properties() for p in CATALOG if p.category == slug]
        self._add(
            "track",
            device,
            {
                "event": "Product List Viewed",  # Segment's name; an alias of Collection Viewed
                "properties": {
                    "list_id": slug,
                    "category": found.name,
                    "products": products,
                    "url": f"https://shop.example.com{path}",
                },
            },
            path,
            found.name,
        )

    def product(self, device: int, product: Product, size_guide: bool = False) -> None:
        path = f"{PREFIX}/products/{product.sku}"
        self.page(device, path, product.name)
        self._add("track", device, {"event": "Product Viewed", "properties": product.properties()}, path, product.name)
        if size_guide:
            self._add(
                "track",
                device,
                {"event": "Size Guide Viewed", "properties": {"sku": product.sku, "category": product.category}},
                path,
                product.name,
            )

    def add_to_cart(self, device: int, product: Product, quantity: int = 1) -> None:
        shopper = self.shopper
        if shopper.cart_id is None:
            shopper.cart_id = "cart-" + self._uuid()[:13]
        shopper.cart.append((product, quantity))
        path = f"{PREFIX}/products/{product.sku}"
        self._add(
            "track",
            device,
            {
                "event": "Added to Cart",
                "properties": {
                    **product.properties(),
                    "cart_id": shopper.cart_id,
                    "quantity": quantity,
                    "value": shopper.cart_value,
                },
            },
            path,
            product.name,
        )

    def quiz(self, device: int) -> None:
        path = f"{PREFIX}/quiz"
        self.page(device, path, "Skin quiz")
        for question in QUIZ:
            answer = self.rng.choice(question["answers"])[0]
            self._add(
                "track",
                device,
                {
                    "event": "Quiz Answered",
                    "properties": {
                        "quiz": "routine",
                        "question": question["question"],
                        "answer": answer,
                        "category": QUIZ_CATEGORIES[answer],
                    },
                },
                path,
                "Skin quiz",
            )

    def _products(self) -> list[dict]:
        return [{**p.properties(), "quantity": q} for p, q in self.shopper.cart]

    def email_popup(self, device: int) -> None:
        """The 10%-off modal: an identify with the email (and an Email Captured track)."""
        shopper = self.shopper
        self._add("identify", device, {"traits": {"email": shopper.email, "first_name": shopper.first_name}})
        self._add(
            "track",
            device,
            {"event": "Email Captured", "properties": {"email": shopper.email, "source": "modal", "offer": "FERN10"}},
        )

    def email_captured_event(self, device: int) -> None:
        """A storefront that only tracks: `Email Captured` carrying the email identifies the device."""
        shopper = self.shopper
        self._add(
            "track",
            device,
            {
                "event": "Email Captured",
                "properties": {"email": shopper.email, "first_name": shopper.first_name, "source": "footer"},
            },
        )

    def newsletter(self, device: int) -> None:
        shopper = self.shopper
        self._add(
            "identify",
            device,
            {
                "traits": {
                    "email": shopper.email,
                    "first_name": shopper.first_name,
                    "last_name": shopper.last_name,
                    "newsletter": True,
                }
            },
        )

    def log_in(self, device: int) -> None:
        """Signing in on another device: an identify that merges that device's anonymous history."""
        self._add("identify", device, {"traits": {"email": self.shopper.email}})

    def create_account(self, device: int) -> None:
        shopper = self.shopper
        shopper.user_id = "cust-" + self._uuid()[:8]
        path = f"{PREFIX}/account"
        self._add(
            "track",
            device,
            {
                "event": "Account Created",
                "properties": {
                    "email": shopper.email,
                    "first_name": shopper.first_name,
                    "last_name": shopper.last_name,
                },
            },
            path,
            "Create account",
        )
        self._add(
            "identify",
            device,
            {
                "userId": shopper.user_id,
                "traits": {"email": shopper.email, "first_name": shopper.first_name, "last_name": shopper.last_name},
            },
            path,
            "Create account",
        )

    def checkout(self, device: int) -> None:
        shopper = self.shopper
        path = f"{PREFIX}/cart"
        self.page(device, path, "Cart")
        self._add(
            "track",
            device,
            {
                "event": "Checkout Started",
                "properties": {
                    "cart_id": shopper.cart_id,
                    "value": shopper.cart_value,
                    "revenue": shopper.cart_value,
                    "currency": "USD",
                    "products": self._products(),
                    "email": shopper.email,
                },
            },
            path,
            "Checkout",
        )

    def order_completed(self, device: int) -> None:
        """Sent by the shop's server once payment succeeds."""
        shopper = self.shopper
        shopper.order_id = "order-" + self._uuid()[:8]
        shopper.calls.append(Call("/v1/track", order_call(shopper, device, self._uuid()), self.clock))
        self.later(1, 3)


def order_call(shopper: Shopper, device: int, message_id: str) -> dict:
    body = {
        "messageId": message_id,
        "anonymousId": shopper.devices[device],
        "event": "Order Completed",
        "context": {"library": SERVER_LIBRARY, "source": "server"},
        "properties": {
            "order_id": shopper.order_id,
            "cart_id": shopper.cart_id,
            "revenue": shopper.cart_value,
            "value": shopper.cart_value,
            "currency": "USD",
            "products": [{**p.properties(), "quantity": q} for p, q in shopper.cart],
        },
    }
    if shopper.user_id:
        body["userId"] = shopper.user_id
    return body


def _story(session: _Session, persona: Persona, rng: random.Random) -> None:
    pick = lambda category: rng.choice([p for p in CATALOG if p.category == category])  # noqa: E731
    expensive = [p for p in CATALOG if p.price >= 50]
    laptop, phone = 0, 1
    if persona.key == "two_devices":
        session.home(laptop)
        session.collection(laptop, "serums")
        session.product(laptop, pick("serums"))
        session.product(laptop, pick("moisturisers"))
        session.later(18 * 3600, 22 * 3600)  # comes back the next day, on the phone
        session.home(phone)
        item = rng.choice(expensive)
        session.product(phone, item, size_guide=True)
        session.add_to_cart(phone, item)
        extra = pick("cleansers")
        session.product(phone, extra)
        session.add_to_cart(phone, extra)
        session.email_popup(phone)
        session.later(120, 600)
        session.log_in(laptop)
    elif persona.key == "checkout":
        session.home(laptop)
        session.collection(laptop, rng.choice(["serums", "moisturisers"]))
        first, second = rng.sample([p for p in CATALOG if p.category in ("serums", "moisturisers")], 2)
        session.product(laptop, first)
        session.add_to_cart(laptop, first)
        session.product(laptop, second)
        session.add_to_cart(laptop, second)
        session.checkout(laptop)
    elif persona.key == "researcher":
        session.home(laptop)
        session.collection(laptop, "serums")
        for product in rng.sample([p for p in CATALOG if p.category in ("serums", "moisturisers")], 4):
            session.product(laptop, product, size_guide=rng.random() < 0.3)
        session.later(3 * 3600, 6 * 3600)  # back in the evening, same laptop
        session.quiz(laptop)
        session.product(laptop, pick("serums"))
        session.email_captured_event(laptop)
    elif persona.key == "newsletter":
        session.home(laptop)
        session.collection(laptop, rng.choice([c.slug for c in COLLECTIONS]))
        session.newsletter(laptop)
    elif persona.key == "small_cart":
        session.home(phone)
        item = rng.choice([p for p in CATALOG if p.price < 30])
        session.product(phone, item)
        session.add_to_cart(phone, item)
        session.email_popup(phone)
    elif persona.key == "buyer":
        session.home(laptop)
        item = pick("sets")
        session.product(laptop, item)
        session.add_to_cart(laptop, item)
        session.checkout(laptop)
        session.order_completed(laptop)
    elif persona.key == "comes_back":
        session.home(laptop)
        session.collection(laptop, "sets")
        item = PRODUCTS["SET-ROUTINE"]
        session.product(laptop, item)
        session.add_to_cart(laptop, item)
        session.create_account(laptop)
    else:  # pragma: no cover - PERSONAS and _story go together
        raise ValueError(persona.key)


def plan(seed: int, shoppers: int) -> list[Shopper]:
    """The shoppers and every call they make: a pure function of (seed, shoppers)."""
    rng = random.Random(seed)
    order = list(PERSONAS)
    rng.shuffle(order)
    names = rng.sample([(f, l) for f in FIRST_NAMES for l in LAST_NAMES], shoppers)
    planned = []
    for index in range(shoppers):
        persona = order[index] if index < len(order) else rng.choice(PERSONAS)
        first, last = names[index]
        local = f"{first}.{last}".lower().replace(" ", "").replace("-", "")
        shopper = Shopper(
            index=index + 1,
            first_name=first,
            last_name=last,
            email=f"{local}.{seed}-{index + 1}@example.com",
            persona=persona,
            devices=[str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(2)],
            timezone=rng.choice(TIMEZONES),
        )
        _story(_Session(shopper, random.Random(rng.getrandbits(64))), persona, rng)
        planned.append(shopper)
    return planned


# --------------------------------------------------------------------------------------------------
# playing it
# --------------------------------------------------------------------------------------------------


def journeys_last(policy: Policy) -> timedelta:
    """How long the longest journey runs from its start to its last message: each step waits its
    delay or the frequency cap, whichever is longer. Quiet hours can make that a night longer."""
    cap = policy.min_time_between_messages
    longest = max(
        sum((max(step.delay, cap) for step in journey.steps), timedelta(0)) for journey in policy.journeys.values()
    )
    return longest + (timedelta(hours=12) if policy.quiet_hours.enabled else timedelta(0))


class DemoError(Exception):
    """Something the person running the demo can fix; said in one line."""


@dataclass
class Outcome:
    shopper: Shopper
    profile: dict | None = None
    bought_at_message: int | None = None  # for after_first_message: how many messages had been sent
    done: bool = False

    @property
    def journeys(self) -> list[dict]:
        return (self.profile or {}).get("journeys", [])

    @property
    def sent(self) -> list[dict]:
        return [m for m in (self.profile or {}).get("messages", []) if m.get("status") == "sent"]

    @property
    def routes(self) -> list[str]:
        return [j["route"] for j in self.journeys]

    @property
    def route(self) -> str:
        """The last routing decision ("none" when the hub decided on no journey)."""
        return self.routes[-1] if self.routes else "—"

    @property
    def purchased(self) -> bool:
        return any(e.get("name") == "Order Completed" for e in (self.profile or {}).get("events", []))

    @property
    def as_expected(self) -> bool:
        persona = self.shopper.persona
        low, high = persona.messages
        return self.profile is not None and persona.accepts(self.route) and low <= len(self.sent) <= high

    def shortfall(self, waited: float) -> str | None:
        """What the shopper did not get, in one line; None when their story ended as expected."""
        if self.done and self.as_expected:
            return None
        shopper = self.shopper
        if self.profile is None:
            got = "was never merged into a person"
        elif not self.journeys:
            got = "no routing decision"
        else:
            got = f"got {self.route} · {len(self.sent)}"
        if self.profile is not None and not self.done:
            got += f" after waiting {waited:.0f} s" + (", journeys still running" if self.journeys else "")
        return f"#{shopper.index} {shopper.name} ({shopper.persona.key}): expected {shopper.persona.expectation}, {got}"

    def summary(self) -> dict:
        profile = self.profile or {}
        return {
            "email": self.shopper.email,
            "name": self.shopper.name,
            "persona": self.shopper.persona.key,
            "person_id": profile.get("person_id"),
            "anonymous_ids": profile.get("anonymous_ids", []),
            "events": len(profile.get("events", [])),
            "routes": self.routes,
            "statuses": [j["status"] for j in self.journeys],
            "messages": len(self.sent),
            "purchased": self.purchased,
            "expected_route": self.shopper.persona.route,
            "expected_messages": list(self.shopper.persona.messages),
            "as_expected": self.as_expected,
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Demo:
    def __init__(
        self,
        api: str,
        write_key: str,
        admin_token: str | None,
        seed: int,
        shoppers: int,
        wait: float = DEMO_WAIT,
        concurrency: int = 4,
        console: Console | None = None,
    ) -> None:
        self.api = api.rstrip("/")
        self.write_key, self.admin_token = write_key, admin_token
        self.seed, self.wait, self.concurrency = seed, wait, max(1, concurrency)
        self.console = console or Console()
        self.shoppers = plan(seed, shoppers)
        self.outcomes = [Outcome(s) for s in self.shoppers]
        self.interrupted = False

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _post(self, http: httpx.AsyncClient, path: str, body: dict) -> None:
        try:
            response = await http.post(path, json=body, auth=(self.write_key, ""))
        except httpx.TransportError as exc:
            raise DemoError(
                f"cannot reach the API at {self.api} ({exc.__class__.__name__}): is `breadcrumb dev` running?"
            ) from None
        if response.status_code == 401:
            raise DemoError(
                "the API refused the write key: pass --write-key or set BREADCRUMB_WRITE_KEYS "
                "(`breadcrumb dev` prints it)"
            )
        if response.status_code != 200:
            raise DemoError(f"POST {path} answered {response.status_code}: {response.text[:300]}")

    async def _profile(self, http: httpx.AsyncClient, email: str) -> dict | None:
        response = await http.get(
            "/admin/people", params={"email": email}, headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        if response.status_code == 404:
            return None
        if response.status_code == 401:
            raise DemoError("the API refused the admin token: pass --admin-token or set BREADCRUMB_ADMIN_TOKEN")
        response.raise_for_status()
        return response.json()

    # -- the two phases -------------------------------------------------------------------------------

    async def _shop(self, http: httpx.AsyncClient, progress: Progress, task) -> None:
        end = datetime.now(UTC)
        semaphore = asyncio.Semaphore(self.concurrency)

        async def one(shopper: Shopper) -> None:
            # The timeline ends now: a two-device story's laptop session happened yesterday.
            start = end - timedelta(seconds=shopper.duration)
            async with semaphore:
                for call in shopper.calls:
                    body = {**call.body, "timestamp": _iso(start + timedelta(seconds=call.offset))}
                    await self._post(http, call.path, body)
                    progress.advance(task)

        # A task group: when one shopper's call fails (say, a refused write key) the others are
        # cancelled and awaited before the HTTP client closes, so nothing is left half-connected.
        try:
            async with asyncio.TaskGroup() as group:
                for shopper in self.shoppers:
                    group.create_task(one(shopper))
        except* DemoError as failed:
            raise failed.exceptions[0] from None

    async def _follow(self, http: httpx.AsyncClient, progress: Progress, task) -> None:
        deadline = time.monotonic() + self.wait
        pending = list(self.outcomes)
        while pending and time.monotonic() < deadline:
            for outcome in list(pending):
                outcome.profile = await self._profile(http, outcome.shopper.email)
                if outcome.profile is None:
                    continue
                shopper = outcome.shopper
                if shopper.persona.buys == "after_first_message" and outcome.bought_at_message is None and outcome.sent:
                    # Back from the first reminder's link: the shop's server reports the order.
                    outcome.bought_at_message = len(outcome.sent)
                    rng = random.Random(f"{self.seed}:{shopper.index}:order")
                    shopper.order_id = f"order-{rng.getrandbits(32):08x}"
                    body = order_call(shopper, 0, str(uuid.UUID(int=rng.getrandbits(128), version=4)))
                    await self._post(http, "/v1/track", {**body, "timestamp": _iso(datetime.now(UTC))})
                    continue
                waiting_to_buy = shopper.persona.buys == "after_first_message" and outcome.bought_at_message is None
                if outcome.journeys and all(j["status"] in FINAL for j in outcome.journeys) and not waiting_to_buy:
                    outcome.done = True
                    pending.remove(outcome)
                    progress.advance(task)
            if pending:
                await asyncio.sleep(0.5)

    async def _preflight(self, http: httpx.AsyncClient) -> None:
        """Fail before playing anything when the API is not there or refuses the admin token."""
        try:
            health = await http.get("/healthz")
        except httpx.TransportError as exc:
            raise DemoError(
                f"cannot reach the API at {self.api} ({exc.__class__.__name__}): is `breadcrumb dev` running?"
            ) from None
        if health.status_code != 200:
            raise DemoError(f"{self.api}/healthz answered {health.status_code}: is this a Breadcrumb API?")
        await self._post(http, "/v1/batch", {"batch": []})  # the write key, checked once before any shopper
        if self.admin_token:
            await self._profile(http, "nobody@demo.invalid")

    async def run(self) -> list[Outcome]:
        columns = (
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        calls = sum(len(s.calls) for s in self.shoppers)
        async with httpx.AsyncClient(base_url=self.api, timeout=30) as http:
            await self._preflight(http)
            with Progress(*columns, console=self.console, transient=False) as progress:
                who = f"{len(self.shoppers)} shopper{'s' if len(self.shoppers) != 1 else ''}"
                shopping = progress.add_task(f"{who} browsing", total=calls)
                await self._shop(http, progress, shopping)
                if self.admin_token and self.wait > 0:
                    following = progress.add_task("journeys running", total=len(self.shoppers))
                    try:
                        await self._follow(http, progress, following)
                    except asyncio.CancelledError:  # Ctrl-C while waiting: show what there is so far
                        self.interrupted = True
            if self.admin_token:
                for outcome in self.outcomes:  # the final state, also for those still waiting
                    outcome.profile = await self._profile(http, outcome.shopper.email)
        return self.outcomes

    # -- the report ------------------------------------------------------------------------------------

    WIDE = 120  # columns the side-by-side table needs; below that each shopper's outcome is stacked in one cell

    def table(self) -> Table:
        wide = self.console.width >= self.WIDE
        table = Table(
            title=f"Breadcrumb demo — seed {self.seed}",
            title_style="bold",
            show_lines=not wide,
            caption="¹ route · messages, with examples/journeys.fast.toml on a fresh database",
            caption_justify="left",
        )
        table.add_column("#", justify="right", style="dim")
        if wide:
            table.add_column("Shopper", no_wrap=True)
            table.add_column("Story", max_width=30)
            table.add_column("Merged events", justify="right")
            table.add_column("Route")
            table.add_column("Messages sent", justify="right")
            table.add_column("Purchase")
            table.add_column("Expected¹", no_wrap=True)
        else:
            table.add_column("Shopper and story", ratio=1, overflow="fold")
            table.add_column("What they got · expected¹", ratio=1)
        for outcome in self.outcomes:
            shopper = outcome.shopper
            who = f"{shopper.name}\n[dim]{shopper.email}[/]"
            if wide:
                table.add_row(
                    str(shopper.index), who, shopper.persona.story, *self._cells(outcome), self._mark(outcome)
                )
            else:
                table.add_row(str(shopper.index), f"{who}\n[italic]{shopper.persona.story}[/]", self._stacked(outcome))
        return table

    def _stacked(self, outcome: Outcome) -> str:
        """One shopper's outcome as lines of one cell, for a terminal narrower than WIDE."""
        profile = outcome.profile
        if profile is None:
            return "[yellow]not merged into a person[/]"
        devices = len(profile.get("anonymous_ids", []))
        sent = outcome.sent
        steps = f" (steps {', '.join(str(m['step']) for m in sent)})" if sent else ""
        purchase = (
            "no purchase"
            if not outcome.purchased
            else f"bought ${outcome.shopper.cart_value:,.2f} "
            + (f"after message {outcome.bought_at_message}" if outcome.bought_at_message else "at checkout")
        )
        return "\n".join(
            (
                " → ".join(f"{j['route']} [dim]({j['status']})[/]" for j in outcome.journeys) or "[dim]deciding…[/]",
                f"{len(profile.get('events', []))} events" + (f", {devices} devices" if devices > 1 else ""),
                f"{len(sent)} sent{steps}",
                purchase,
                self._mark(outcome),
            )
        )

    def _mark(self, outcome: Outcome) -> str:
        if outcome.profile is None:
            return ""
        mark = "[yellow]…[/]" if not outcome.done else "[green]✓[/]" if outcome.as_expected else "[red]✗[/]"
        return f"{mark} {outcome.shopper.persona.expectation}"

    def _cells(self, outcome: Outcome) -> tuple[str, str, str, str]:
        """Merged events, route, messages sent and purchase of one shopper, as table cells."""
        shopper, profile = outcome.shopper, outcome.profile
        if profile is None:
            return "—", "[yellow]not found[/]", "—", "—"
        devices = len(profile.get("anonymous_ids", []))
        events = f"{len(profile.get('events', []))}" + (f"\n[dim]{devices} devices[/]" if devices > 1 else "")
        route = " → ".join(f"{j['route']} [dim]({j['status']})[/]" for j in outcome.journeys) or "[dim]deciding…[/]"
        sent = outcome.sent
        messages = str(len(sent)) + (f"\n[dim]{', '.join(str(m['step']) for m in sent)}[/]" if sent else "")
        if outcome.purchased:
            value = f"${shopper.cart_value:,.2f}"
            purchase = f"[green]{value}[/]" + (
                f"\n[dim]after message {outcome.bought_at_message}[/]"
                if outcome.bought_at_message
                else "\n[dim]at checkout[/]"
            )
        else:
            purchase = "—"
        return events, route, messages, purchase


def run_demo(
    api: str,
    write_key: str | None,
    admin_token: str | None,
    shoppers: int,
    seed: int | None,
    wait: float,
    concurrency: int,
    json_path: Path | None,
    console: Console,
) -> int:
    """Play the shoppers and report; the exit status says whether every story ended as expected:
    0 yes (or not checked: no admin token, --wait 0), 1 someone missed, 130 interrupted (Ctrl-C)."""
    settings = Settings()  # keys not given come from BREADCRUMB_WRITE_KEYS / BREADCRUMB_ADMIN_TOKEN
    write_key = write_key or next(iter(settings.write_keys), None)
    admin_token = admin_token or settings.admin_token or None
    if not write_key:
        raise DemoError("no write key: pass --write-key or set BREADCRUMB_WRITE_KEYS (`breadcrumb dev` prints it)")
    if shoppers < 1:
        raise DemoError("--shoppers must be at least 1")
    if shoppers > len(FIRST_NAMES) * len(LAST_NAMES):
        raise DemoError(f"--shoppers can be at most {len(FIRST_NAMES) * len(LAST_NAMES)}")
    if seed is None:
        seed = random.SystemRandom().randrange(1, 100_000)
    demo = Demo(api, write_key, admin_token, seed, shoppers, wait=wait, concurrency=concurrency, console=console)
    console.print(
        f"Playing [bold]{shoppers}[/] shopper{'s' if shoppers != 1 else ''} against [bold]{demo.api}[/] "
        f"(seed {seed}; replay them with --seed {seed})"
    )
    started = time.monotonic()
    outcomes = asyncio.run(demo.run())
    elapsed = time.monotonic() - started
    if json_path is not None:
        json_path.write_text(
            json.dumps(
                {"seed": seed, "elapsed_seconds": round(elapsed, 2), "shoppers": [o.summary() for o in outcomes]},
                indent=2,
            )
        )
    if not admin_token:
        console.print(
            "[yellow]No admin token (--admin-token or BREADCRUMB_ADMIN_TOKEN): played the sessions but "
            "cannot look up what the shoppers got.[/]"
        )
        return 0
    console.print(demo.table())
    console.print(
        f"See one person: curl -H 'Authorization: Bearer …' '{demo.api}/admin/people?email={outcomes[0].shopper.email}'"
    )
    if demo.interrupted:
        console.print("[yellow]Interrupted: the table shows the journeys so far; they go on in the stack.[/]")
        return 130
    if wait <= 0:
        console.print(
            'Not waited for (--wait 0): watch the journeys in the Temporal UI, search BreadcrumbStatus="waiting".'
        )
        return 0
    missed = [line for outcome in outcomes if (line := outcome.shortfall(wait))]
    if not missed:
        console.print(
            f"{len(outcomes)}/{len(outcomes)} shoppers got what their story expects with "
            f"examples/journeys.fast.toml; finished in {elapsed:.1f} s."
        )
        return 0
    console.print(
        f"[bold red]{len(missed)}/{len(outcomes)} shopper(s) did not get what their story expects:[/]", highlight=False
    )
    for line in missed:
        console.print(f"  ✗ {line}", highlight=False)
    console.print(
        "[yellow]The expectations hold for a stack on examples/journeys.fast.toml and a fresh database; "
        "with longer delays give the journeys time (--wait SECONDS).[/]"
    )
    return 1
