#!/usr/bin/env python3
"""Ingest benchmark: events/s through `POST /v1/batch` against raw DBAPI `executemany`, plus merge time.

Run with `make bench` or `.venv/bin/python bench/ingest.py [--batches N] [--postgres URL] [--profile]`.

For each backend (SQLite always; PostgreSQL with `--postgres URL`, in a database created and dropped
here) the script:

1. migrates a fresh database and starts the API as a separate uvicorn process (one worker);
2. sends realistic Segment batches (500 messages: page calls, Product Viewed, Collection Viewed,
   Added to Cart with cart_id/sku/price, a few identifies) sequentially with httpx, after one
   warm-up batch, and times each request (bodies are serialised before the clock starts);
3. interleaved with those requests, writes the same rows (same columns, same JSON text, other
   messageIds) into the same `events` table with raw DBAPI `executemany`, one transaction per
   batch. Rows are prepared before the clock starts, so this is the database's ceiling, and the
   ratio API/raw is the share of that ceiling the API reaches (target: ≥ 0.5 on both backends).
   PostgreSQL is ANALYZEd after the warm-up batch, as autovacuum keeps a live shop's statistics
   (SQLite gathers none unless asked, and Breadcrumb does not ask);
4. times the identify (`POST /v1/identify`) that merges 0, 10, 1 000 and 10 000 stored anonymous
   events of one anonymousId, checks they were all merged, fits time = constant + slope × events,
   and times the bare DBAPI `UPDATE` of an equal raw history next to it (the database's share).

`--profile` samples the API process with py-spy during the timed batches; `--extra-sql` applies a
statement after migrating (to measure an index before proposing it).

Results are printed as a table and written to bench/results/ingest.json. Below-target results are
reported, never asserted: the exit code is 0 unless the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, UTC
from pathlib import Path
from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from journeys import taxonomy  # noqa: E402
from store.db import make_engine  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from common import ApiProcess, fresh_database  # noqa: E402

WRITE_KEY = "wk_bench"
TARGET_RATIO = 0.5  # issue 16: on SQLite and on PostgreSQL
MERGE_SIZES = (0, 10, 1000, 10000)
REQUEST_LIMIT = 500 * 1024  # the API's documented limit per request (DESIGN section 3)
RESULTS = REPO_ROOT / "bench" / "results" / "ingest.json"
EVENT_COLUMNS = (
    "message_id",
    "type",
    "name",
    "original_name",
    "anonymous_id",
    "user_id",
    "person_id",
    "properties",
    "context",
    "timestamp",
    "received_at",
    "source",
    "cart_id",
    "order_id",
    "missing_properties",
)

console = Console(width=None if sys.stdout.isatty() else 110)


# --------------------------------------------------------------------------------------------------
# Realistic Segment traffic
# --------------------------------------------------------------------------------------------------

CATEGORIES = ["Dresses", "Tops", "Knitwear", "Denim", "Shoes", "Accessories", "Outerwear", "Swim"]
ADJECTIVES = ["Linen", "Organic", "Relaxed", "Cropped", "Oversized", "Ribbed", "Pleated", "Washed", "Merino"]
NOUNS = {
    "Dresses": "Midi Dress",
    "Tops": "Tee",
    "Knitwear": "Cardigan",
    "Denim": "Straight Jeans",
    "Shoes": "Leather Loafer",
    "Accessories": "Tote Bag",
    "Outerwear": "Trench Coat",
    "Swim": "Bikini Top",
}
SIZES = ["XS", "S", "M", "L", "XL"]
USER_AGENTS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
]
LOCALES = [
    ("en-US", "America/New_York"),
    ("en-GB", "Europe/London"),
    ("de-DE", "Europe/Berlin"),
    ("en-US", "America/Los_Angeles"),
    ("fr-FR", "Europe/Paris"),
]
REFERRERS = [
    "https://www.google.com/",
    "https://www.instagram.com/",
    "",
    "https://l.facebook.com/",
    "https://shop.example.com/",
]
CAMPAIGNS = [
    None,
    None,
    None,
    {"source": "instagram", "medium": "social", "name": "spring_drop"},
    {"source": "newsletter", "medium": "email", "name": "weekly_edit"},
]
SHOP = "https://shop.example.com"


@dataclass
class Product:
    product_id: str
    sku: str
    name: str
    category: str
    brand: str
    price: float
    slug: str


@dataclass
class Visitor:
    anonymous_id: str
    user_agent: str
    locale: str
    timezone: str
    ip: str
    campaign: dict | None
    cart_id: str
    user_id: str | None = None
    email: str | None = None


class Traffic:
    """A shop's storefront traffic as analytics.js would batch it."""

    def __init__(self, seed: int = 7, visitors: int = 4000) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        self.products = []
        for i in range(240):
            category = CATEGORIES[i % len(CATEGORIES)]
            name = f"{rng.choice(ADJECTIVES)} {NOUNS[category]}"
            slug = f"{name.lower().replace(' ', '-')}-{i:04d}"
            self.products.append(
                Product(
                    f"prod_{i:05d}",
                    f"SKU-{i:05d}",
                    name,
                    category,
                    "Maison Breadcrumb",
                    rng.choice([29.0, 39.95, 49.0, 59.0, 79.95, 89.0, 119.0, 149.0, 229.0]),
                    slug,
                )
            )
        self.visitors = [self._visitor() for _ in range(visitors)]
        self.sequence = 0

    def _visitor(self) -> Visitor:
        rng = self.rng
        locale, tz = rng.choice(LOCALES)
        return Visitor(
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            rng.choice(USER_AGENTS),
            locale,
            tz,
            f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            rng.choice(CAMPAIGNS),
            f"cart_{rng.getrandbits(48):012x}",
        )

    def _context(self, v: Visitor, path: str, title: str) -> dict:
        context = {
            "library": {"name": "analytics.js", "version": "next-1.70.0"},
            "page": {
                "path": path,
                "referrer": self.rng.choice(REFERRERS),
                "search": "",
                "title": title,
                "url": f"{SHOP}{path}",
            },
            "userAgent": v.user_agent,
            "locale": v.locale,
            "timezone": v.timezone,
            "ip": v.ip,
        }
        if v.campaign:
            context["campaign"] = v.campaign
        return context

    def _base(self, v: Visitor, kind: str, at: datetime, sent_at: str, path: str, title: str) -> dict:
        self.sequence += 1
        message = {
            "type": kind,
            "messageId": f"ajs-next-{uuid.UUID(int=self.rng.getrandbits(128), version=4).hex}",
            "anonymousId": v.anonymous_id,
            "timestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sentAt": sent_at,
            "context": self._context(v, path, title),
            "integrations": {},
        }
        if v.user_id:
            message["userId"] = v.user_id
        return message

    def _product_props(self, p: Product, size: str) -> dict:
        return {
            "product_id": p.product_id,
            "sku": f"{p.sku}-{size}",
            "name": p.name,
            "category": p.category,
            "brand": p.brand,
            "variant": size,
            "price": p.price,
            "currency": "USD",
            "url": f"{SHOP}/products/{p.slug}",
        }

    def message(self, kind: str, v: Visitor, at: datetime, sent_at: str) -> dict:
        rng = self.rng
        p = rng.choice(self.products)
        size = rng.choice(SIZES)
        if kind == "page":
            path = rng.choice(["/", f"/collections/{p.category.lower()}", f"/products/{p.slug}", "/pages/about"])
            m = self._base(v, "page", at, sent_at, path, f"{p.category} | Maison Breadcrumb")
            m["name"] = p.category
            m["properties"] = {
                "path": path,
                "referrer": m["context"]["page"]["referrer"],
                "search": "",
                "title": m["context"]["page"]["title"],
                "url": f"{SHOP}{path}",
            }
        elif kind == "Product Viewed":
            m = self._base(v, "track", at, sent_at, f"/products/{p.slug}", p.name)
            m["event"] = kind
            m["properties"] = self._product_props(p, size)
        elif kind == "Added to Cart":
            m = self._base(v, "track", at, sent_at, f"/products/{p.slug}", p.name)
            m["event"] = kind
            m["properties"] = {
                **self._product_props(p, size),
                "cart_id": v.cart_id,
                "quantity": rng.choice([1, 1, 1, 2]),
            }
        elif kind == "Collection Viewed":
            path = f"/collections/{p.category.lower()}"
            m = self._base(v, "track", at, sent_at, path, p.category)
            m["event"] = kind
            listed = rng.sample([q for q in self.products if q.category == p.category], 4)
            m["properties"] = {
                "list_id": p.category.lower(),
                "category": p.category,
                "url": f"{SHOP}{path}",
                "products": [
                    {"product_id": q.product_id, "sku": q.sku, "price": q.price, "position": i + 1}
                    for i, q in enumerate(listed)
                ],
            }
        elif kind == "identify":
            v.user_id = v.user_id or f"usr_{rng.getrandbits(40):010x}"
            v.email = v.email or f"shopper.{v.user_id[4:]}@example.com"
            m = self._base(v, "identify", at, sent_at, "/account/register", "Create account")
            m["traits"] = {
                "email": v.email,
                "first_name": rng.choice(["Ada", "Lin", "Sam", "Noor", "Jo"]),
                "last_name": rng.choice(["Berg", "Okafor", "Silva", "Tan"]),
                "accepts_marketing": True,
            }
        else:
            raise ValueError(kind)
        return m

    def batch(self, size: int = 500, identifies: int = 5) -> list[dict]:
        """`size` messages from ~60 browsing sessions; `identifies` of them are sign-ups."""
        rng = self.rng
        now = datetime.now(UTC)
        sent_at = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        sessions = rng.sample(self.visitors, 60)
        kinds = rng.choices(
            ["page", "Product Viewed", "Collection Viewed", "Added to Cart"],
            weights=[35, 35, 13, 17],
            k=size - identifies,
        )
        kinds[:0] = ["identify"] * identifies
        rng.shuffle(kinds)
        return [
            self.message(kind, rng.choice(sessions), now - timedelta(seconds=rng.uniform(1, 3600)), sent_at)
            for kind in kinds
        ]

    def anonymous_history(self, anonymous_id: str, count: int) -> Iterator[list[dict]]:
        """`count` Product Viewed events of one device, in batches under the request limit, inside the merge window."""
        v = self._visitor()
        v.anonymous_id = anonymous_id
        now = datetime.now(UTC)
        sent_at = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        left = count
        while left > 0:
            n = min(400, left)
            left -= n
            yield [
                self.message(
                    "Product Viewed", v, now - timedelta(minutes=5, seconds=self.rng.uniform(0, 86400)), sent_at
                )
                for _ in range(n)
            ]


def _sqlite_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def raw_rows(batch: list[dict], backend: str, prefix: str = "raw-") -> list[tuple]:
    """The rows the API stores for `batch` (same columns, same JSON text), other messageIds."""
    received_at = datetime.now(UTC)
    rows = []
    for m in batch:
        kind = m["type"]
        if kind == "track":
            original = m["event"]
            name = taxonomy.canonical_name(original)
        else:
            original = name = taxonomy.PAGE_VIEWED if kind == "page" else taxonomy.IDENTIFY
        props = m.get("traits" if kind == "identify" else "properties", {})
        if kind == "page":
            props = {**props, "name": m["name"]}
        at = datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00"))
        missing = taxonomy.missing_recommended(name, props) if kind == "track" else []
        stamp = _sqlite_time if backend == "sqlite" else (lambda d: d)
        rows.append(
            (
                prefix + m["messageId"],
                kind,
                name,
                original,
                m.get("anonymousId"),
                m.get("userId"),
                None,
                json.dumps(props),
                json.dumps(m["context"]),
                stamp(at),
                stamp(received_at),
                "client",
                props.get("cart_id"),
                props.get("order_id"),
                json.dumps(missing),
            )
        )
    return rows


# --------------------------------------------------------------------------------------------------
# Databases, the raw baseline and the API process
# --------------------------------------------------------------------------------------------------


class RawWriter:
    """Plain DBAPI: one `executemany` of a batch's rows, one transaction per batch."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.backend = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql"
        columns = ", ".join(EVENT_COLUMNS)
        if self.backend == "sqlite":
            self.conn = sqlite3.connect(parsed.database, isolation_level=None, timeout=60)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=60000"):
                self.conn.execute(f"PRAGMA {pragma}")
            self.sql = f"INSERT INTO events ({columns}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
        else:
            import psycopg

            self.conn = psycopg.connect(parsed.set(drivername="postgresql").render_as_string(hide_password=False))
            json_columns = {"properties", "context", "missing_properties"}
            marks = ", ".join("%s::jsonb" if c in json_columns else "%s" for c in EVENT_COLUMNS)
            self.sql = f"INSERT INTO events ({columns}) VALUES ({marks})"

    def write(self, rows: list[tuple]) -> None:
        if self.backend == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(self.sql, rows)
            self.conn.execute("COMMIT")
        else:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany(self.sql, rows)

    def merge(self, anonymous_id: str, person_id: str, since: datetime) -> int:
        """The set-based UPDATE an identify does, alone: the database's floor for a merge."""
        if self.backend == "sqlite":
            self.conn.execute("BEGIN IMMEDIATE")
            count = self.conn.execute(
                "UPDATE events SET person_id = ? WHERE anonymous_id = ? AND person_id IS NULL AND timestamp >= ?",
                (person_id, anonymous_id, _sqlite_time(since)),
            ).rowcount
            self.conn.execute("COMMIT")
            return count
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.execute(
                "UPDATE events SET person_id = %s WHERE anonymous_id = %s AND person_id IS NULL AND timestamp >= %s",
                (person_id, anonymous_id, since),
            )
            return cur.rowcount

    def close(self) -> None:
        self.conn.close()


class Sampler:
    """Optional py-spy sampling of the API process while the timed batches run (`--profile`)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid, self.out, self.proc = pid, out, None

    def __enter__(self) -> Sampler:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(py_spy).exists():
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
        self.proc = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                "250",
                "--format",
                "raw",
                "--threads",
                "-o",
                str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(1.0)  # let it attach before the clock starts
        return self

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


PROJECT_PACKAGES = ("api", "store", "journeys", "activities", "workflows", "worker")


def summarise_profile(path: Path, top: int = 15) -> dict:
    """From py-spy's collapsed stacks: the project's own source lines by inclusive share of samples
    (where to look), and the leaf functions by self share (what the time is actually spent on)."""
    total, lines, leaves = 0, Counter(), Counter()
    for row in path.read_text().splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";")[1:] if f.strip()]  # the first entry names the thread
        if not frames:
            continue
        total += n
        for key in {
            _frame(f, line=True)
            for f in frames
            if _frame(f, line=True).split(" (")[-1].startswith(tuple(f"{p}/" for p in PROJECT_PACKAGES))
        }:
            lines[key] += n
        leaves[_frame(frames[-1], line=False)] += n
    if not total:
        return {}
    share = lambda counter: [{"frame": k, "share": round(v / total, 3)} for k, v in counter.most_common(top)]  # noqa: E731
    return {"samples": total, "project_lines_inclusive": share(lines), "leaf_functions_self": share(leaves)}


def _frame(frame: str, line: bool) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; paths are made short.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    if not line:
        where = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    else:
        where = where.replace(str(REPO_ROOT) + "/", "")
    return f"{name} ({where})"


# --------------------------------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------------------------------


@dataclass
class BackendResult:
    backend: str
    batches: int
    batch_size: int
    events: int = 0
    api_seconds: float = 0.0
    raw_seconds: float = 0.0
    api_request_ms: list[float] = field(default_factory=list)
    raw_batch_ms: list[float] = field(default_factory=list)
    body_bytes: int = 0
    merge: list[dict] = field(default_factory=list)
    merge_fit: dict = field(default_factory=dict)
    profile: dict = field(default_factory=dict)

    @property
    def api_eps(self) -> float:
        return self.events / self.api_seconds if self.api_seconds else 0.0

    @property
    def raw_eps(self) -> float:
        return self.events / self.raw_seconds if self.raw_seconds else 0.0

    @property
    def ratio(self) -> float:
        return self.api_eps / self.raw_eps if self.raw_eps else 0.0

    def as_dict(self) -> dict:
        def stats(values: list[float]) -> dict:
            ordered = sorted(values)
            return (
                {
                    "median": round(statistics.median(ordered), 2),
                    "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
                    "max": round(ordered[-1], 2),
                }
                if ordered
                else {}
            )

        return {
            "backend": self.backend,
            "batches": self.batches,
            "batch_size": self.batch_size,
            "events": self.events,
            "mean_body_kb": round(self.body_bytes / max(self.batches, 1) / 1024, 1),
            "api_events_per_s": round(self.api_eps),
            "raw_events_per_s": round(self.raw_eps),
            "ratio": round(self.ratio, 3),
            "target_ratio": TARGET_RATIO,
            "meets_target": self.ratio >= TARGET_RATIO,
            "api_request_ms": stats(self.api_request_ms),
            "raw_batch_ms": stats(self.raw_batch_ms),
            "merge": self.merge,
            "merge_fit": self.merge_fit,
            "profile_top": self.profile,
        }


def post(client: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


def check(response: httpx.Response, expected_stored: int | None = None) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url.path} answered {response.status_code}: {response.text[:500]}")
    stored = response.headers.get("X-Breadcrumb-Stored")
    if expected_stored is not None and stored is not None and int(stored) != expected_stored:
        raise RuntimeError(
            f"expected {expected_stored} stored, the API says {stored} "
            f"(duplicates {response.headers.get('X-Breadcrumb-Duplicates')}, "
            f"rejected {response.headers.get('X-Breadcrumb-Rejected')})"
        )


def linear_fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx if sxx else 0.0
    return mean_y - slope * mean_x, slope


def run_backend(backend: str, args: argparse.Namespace, workdir: Path, progress: Progress) -> BackendResult:
    result = BackendResult(backend, args.batches, args.batch_size)
    traffic = Traffic(seed=args.seed)
    with fresh_database(workdir, args.postgres if backend == "postgresql" else None) as url:
        engine = make_engine(url)
        upgrade(engine)
        for statement in args.extra_sql:
            with engine.begin() as conn:
                conn.exec_driver_sql(statement)
        raw = RawWriter(url)
        try:
            with (
                ApiProcess(url, workdir / f"api-{backend}.log", write_keys=WRITE_KEY, dispatch="false") as api,
                httpx.Client(base_url=api.url, auth=(WRITE_KEY, ""), timeout=120) as client,
            ):
                # Everything is generated and serialised before any clock starts.
                prepared = []
                for _ in range(args.batches + 1):
                    batch = traffic.batch(args.batch_size, args.identifies)
                    body = orjson.dumps({"batch": batch})
                    if len(body) > REQUEST_LIMIT:
                        raise RuntimeError(f"generated a {len(body)}-byte batch, over the API's request limit")
                    prepared.append((body, raw_rows(batch, raw.backend), len(batch)))
                warm_body, warm_rows, warm_n = prepared.pop(0)
                check(post(client, "/v1/batch", warm_body), warm_n)
                raw.write(warm_rows)
                if backend == "postgresql":  # a live one has statistics (autovacuum); SQLite gathers none by itself
                    with engine.begin() as conn:
                        conn.exec_driver_sql("ANALYZE")

                task = progress.add_task(f"{backend}: API + raw batches", total=args.batches)
                sampler = Sampler(api.proc.pid, workdir / f"profile-{backend}.txt") if args.profile else None
                if sampler:
                    sampler.__enter__()
                try:
                    for body, rows, n in prepared:
                        started = time.perf_counter()
                        response = post(client, "/v1/batch", body)
                        elapsed = time.perf_counter() - started
                        check(response, n)
                        result.api_seconds += elapsed
                        result.api_request_ms.append(elapsed * 1000)

                        started = time.perf_counter()
                        raw.write(rows)
                        elapsed = time.perf_counter() - started
                        result.raw_seconds += elapsed
                        result.raw_batch_ms.append(elapsed * 1000)

                        result.events += n
                        result.body_bytes += len(body)
                        progress.advance(task)
                finally:
                    if sampler:
                        sampler.__exit__(None, None, None)
                if sampler and sampler.out.exists():
                    result.profile = summarise_profile(sampler.out)
                    shutil.copy(sampler.out, args.output.with_name(f"profile-{backend}.txt"))

                merge_task = progress.add_task(f"{backend}: merge timing", total=len(args.merge_sizes) * args.repeats)
                for size in args.merge_sizes:
                    timings, raw_timings = [], []
                    for rep in range(args.repeats):
                        anonymous_id = f"bench-merge-{size}-{rep}-{uuid.uuid4().hex[:8]}"
                        for history in traffic.anonymous_history(anonymous_id, size):
                            check(post(client, "/v1/batch", orjson.dumps({"batch": history})), len(history))
                        identify = orjson.dumps(
                            {
                                "type": "identify",
                                "anonymousId": anonymous_id,
                                "userId": f"usr_merge_{size}_{rep}_{uuid.uuid4().hex[:6]}",
                                "messageId": str(uuid.uuid4()),
                                "traits": {"email": f"merge.{size}.{rep}.{uuid.uuid4().hex[:6]}@example.com"},
                                "timestamp": datetime.now(UTC).isoformat(),
                            }
                        )
                        started = time.perf_counter()
                        response = post(client, "/v1/identify", identify)
                        elapsed_ms = (time.perf_counter() - started) * 1000
                        check(response, 1)
                        with engine.connect() as conn:
                            merged = conn.execute(
                                text("SELECT count(*) FROM events WHERE anonymous_id = :a AND person_id IS NOT NULL"),
                                {"a": anonymous_id},
                            ).scalar()
                        if merged != size + 1:  # the history plus the identify itself
                            raise RuntimeError(f"identify merged {merged - 1} of {size} anonymous events")
                        timings.append(elapsed_ms)

                        # The same history written raw, merged by the bare UPDATE: the database's share.
                        raw_anonymous_id = f"raw-{anonymous_id}"
                        for history in traffic.anonymous_history(raw_anonymous_id, size):
                            raw.write(raw_rows(history, raw.backend, prefix="rawm-"))
                        started = time.perf_counter()
                        updated = raw.merge(raw_anonymous_id, str(uuid.uuid4()), datetime.now(UTC) - timedelta(days=30))
                        raw_timings.append((time.perf_counter() - started) * 1000)
                        if updated != size:
                            raise RuntimeError(f"the raw UPDATE merged {updated} of {size} events")
                        progress.advance(merge_task)
                    ms = statistics.median(timings)
                    result.merge.append(
                        {
                            "events": size,
                            "ms": round(ms, 2),
                            "runs_ms": [round(t, 2) for t in timings],
                            "ms_per_1000_events": round(ms / size * 1000, 2) if size else None,
                            "raw_update_ms": round(statistics.median(raw_timings), 2),
                        }
                    )
                constant, slope = linear_fit([(m["events"], m["ms"]) for m in result.merge])
                result.merge_fit = {"constant_ms": round(constant, 2), "ms_per_1000_events": round(slope * 1000, 2)}
        finally:
            raw.close()
            engine.dispose()
    return result


def report(results: list[BackendResult]) -> None:
    table = Table(title=f"POST /v1/batch vs raw executemany ({results[0].batch_size} events per batch)")
    for column in ("backend", "events", "API ev/s", "raw ev/s", "API/raw", "ms/request", "ms/raw txn", "verdict"):
        table.add_column(column, justify="right" if column not in ("backend", "verdict") else "left")
    for r in results:
        d = r.as_dict()
        verdict = "[green]PASS[/]" if r.ratio >= TARGET_RATIO else "[red]BELOW TARGET[/]"
        table.add_row(
            r.backend,
            f"{r.events:,}",
            f"{r.api_eps:,.0f}",
            f"{r.raw_eps:,.0f}",
            f"{r.ratio:.3f}",
            f"{d['api_request_ms']['median']:.1f}",
            f"{d['raw_batch_ms']['median']:.1f}",
            verdict,
        )
    console.print(table)
    console.print(
        f"Target on both backends: API/raw ≥ {TARGET_RATIO}. ms columns are medians; raw rows are prepared "
        "before the clock starts, API bodies are serialised before it starts."
    )

    merge = Table(title="Identify merging N stored anonymous events (median of runs)")
    for column in ("backend", "anon events", "identify ms", "ms per 1 000", "raw UPDATE ms"):
        merge.add_column(column, justify="right" if column != "backend" else "left")
    for r in results:
        for m in r.merge:
            per = f"{m['ms_per_1000_events']:.2f}" if m["ms_per_1000_events"] is not None else "—"
            merge.add_row(r.backend, f"{m['events']:,}", f"{m['ms']:.1f}", per, f"{m['raw_update_ms']:.1f}")
        merge.add_row(
            r.backend,
            "linear fit",
            f"{r.merge_fit['constant_ms']:.1f} +",
            f"{r.merge_fit['ms_per_1000_events']:.2f}",
            "",
            end_section=True,
        )
    console.print(merge)
    console.print(
        "identify ms: the whole POST /v1/identify; linear fit: constant + ms per 1 000 events; "
        "raw UPDATE ms: the same merge as one bare UPDATE over DBAPI on an equal history."
    )

    for r in results:
        if not r.profile:
            continue
        for key, title in (
            ("project_lines_inclusive", "project source lines, inclusive"),
            ("leaf_functions_self", "leaf functions, self"),
        ):
            prof = Table(
                title=f"{r.backend}: API process during the timed batches — {title} "
                f"(share of {r.profile['samples']:,} py-spy samples)"
            )
            prof.add_column("frame")
            prof.add_column("share", justify="right")
            for row in r.profile[key]:
                prof.add_row(row["frame"], f"{row['share']:.1%}")
            console.print(prof)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=40, help="timed batches per backend (default 40)")
    parser.add_argument("--batch-size", type=int, default=500, help="messages per batch (default 500)")
    parser.add_argument("--identifies", type=int, default=5, help="identify calls per batch (default 5)")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also run on PostgreSQL: a server URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/"
        "postgres); a fresh database is created there and dropped afterwards",
    )
    parser.add_argument(
        "--merge-sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=list(MERGE_SIZES),
        help="anonymous history sizes to merge (default 0,10,1000,10000)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="identify timings per merge size (median; default 3)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the API process with py-spy during the timed batches and print where time goes",
    )
    parser.add_argument(
        "--extra-sql",
        action="append",
        default=[],
        metavar="SQL",
        help="run this statement after migrating (repeatable), e.g. to try an index before proposing it",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    backends = ["sqlite"] + (["postgresql"] if args.postgres else [])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    results: list[BackendResult] = []
    with (
        tempfile.TemporaryDirectory(prefix="breadcrumb-bench-") as tmp,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress,
    ):
        for backend in backends:
            results.append(run_backend(backend, args, Path(tmp), progress))

    report(results)
    payload = {
        "benchmark": "ingest",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "settings": {
            "extra_sql": args.extra_sql,
            "batches": args.batches,
            "batch_size": args.batch_size,
            "identifies_per_batch": args.identifies,
            "merge_sizes": args.merge_sizes,
            "merge_repeats": args.repeats,
        },
        "results": {r.backend: r.as_dict() for r in results},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(
        f"results written to {args.output.relative_to(REPO_ROOT) if args.output.is_relative_to(REPO_ROOT) else args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
