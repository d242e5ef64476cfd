"""The FastAPI application: Segment and Customer.io front doors, admin API, health and metrics."""

from __future__ import annotations

import asyncio
import gc
from contextlib import asynccontextmanager
from urllib.parse import unquote_to_bytes

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from api import access_log, admin, admin_outbox, admin_segments, customerio, demo_store, segment, shopify, unsubscribe
from api import reports as reports_api
from api import backtest, codec, timeline
from api.deps import CustomerIOAuthError
from api.ratelimit import FrontDoorLimits, RateLimited, limit_customerio
from activities.channels import DeliveryConfigError
from api.docs_pages import serve_api_docs
from api.ingest_queue import IngestQueue
from store.db import make_engine, reading
from store.identity import LocksMoved
from store.migrate import upgrade
from store.settings import Settings
from dispatch.dispatcher import Dispatcher
from dispatch.temporal import converter_for


class RejectNulInUrl:
    """A NUL (%00) in the path or query string is never a valid id, email or filter, and PostgreSQL
    refuses it in text: answer 400 here, in each front door's error shape, before any route runs."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope.get("path", "") or b"\x00" in unquote_to_bytes(scope.get("query_string", b""))
        ):
            message = "the URL contains a NUL character (%00), which is never valid here"
            path = scope.get("path", "")
            if path.startswith("/api/v1"):
                response = customerio.cio_error(400, message)
            elif path.startswith("/v1"):
                response = JSONResponse({"success": False, "error": message}, status_code=400)
            else:
                response = JSONResponse({"detail": message}, status_code=400)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class CorsByPath:
    """CORS only where a browser on another origin calls us: the tracking routes (/v1/*) and the
    snippet and demo-store assets answer any origin (browser SDKs, no cookies); the codec only the
    Temporal UI's origins, with credentials (its session cookie). /admin, /api/v1 (server to
    server) and the unsubscribe pages answer no preflight and send no CORS headers."""

    TRACKING = ("/v1/", "/breadcrumb.js", "/demo/store/")

    def __init__(self, app, codec_origins: list[str]) -> None:
        self.app = app
        self.tracking = CORSMiddleware(
            app, allow_origins=["*"], allow_methods=["GET", "POST", "OPTIONS"], allow_headers=["*"], max_age=86400
        )
        self.codec = CORSMiddleware(
            app,
            allow_origins=codec_origins,
            allow_methods=["POST"],
            allow_credentials=True,
            allow_headers=["Content-Type", "X-Namespace", "Authorization"],
            max_age=86400,
        )

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith(self.TRACKING):
            await self.tracking(scope, receive, send)
        elif path.startswith(codec.PREFIX + "/"):
            await self.codec(scope, receive, send)
        else:
            await self.app(scope, receive, send)


# A batch request makes tens of thousands of short-lived objects; at CPython's default (a young
# collection every 700) the collector ran ~30 times a request and now and then walked the whole heap.
YOUNG_COLLECTION_EVERY = 10_000


def collect_garbage_for_requests() -> None:
    """Tune the garbage collector for a server, once start-up is done: what start-up built (modules,
    schemas, the engine) is never garbage, so full collections stop walking it (`gc.freeze`), and
    young collections run less often. Once a process: a test session starts many apps, and what a
    later freeze caught of an earlier app would never be collected."""
    if gc.get_threshold()[0] == YOUNG_COLLECTION_EVERY:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    _ = settings.policy  # a bad journeys.toml stops start-up here, naming the key
    payload_codec = converter_for(settings).payload_codec  # so do missing or malformed payload keys
    if (settings.smtp_url or settings.sms_webhook_url) and not settings.unsubscribe_secret:
        raise DeliveryConfigError(
            "BREADCRUMB_UNSUBSCRIBE_SECRET is required with real delivery (SMTP_URL or "
            "SMS_WEBHOOK_URL): it verifies the unsubscribe links in sent messages"
        )
    access_log.install()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = make_engine(settings.database_url)
        if settings.auto_migrate:
            upgrade(engine)
        app.state.engine = engine
        app.state.ingest_limiter = anyio.CapacityLimiter(settings.ingest_threads)
        app.state.ingest_queue = IngestQueue(engine, settings, app.state.ingest_limiter)
        stop = asyncio.Event()
        task = None
        if settings.dispatch:
            app.state.dispatcher = Dispatcher(engine, settings)
            task = asyncio.create_task(app.state.dispatcher.run(stop), name="outbox-dispatcher")
        collect_garbage_for_requests()
        try:
            yield
        finally:
            stop.set()
            if task is not None:
                await task
            engine.dispose()

    app = FastAPI(
        title="Breadcrumb",
        version="0.1.0",
        lifespan=lifespan,
        description="Anonymous intent → identity merge → durable journeys on Temporal.",
        docs_url=None,
        redoc_url=None,
    )
    serve_api_docs(app)
    app.state.settings = settings
    app.state.payload_codec = payload_codec
    app.state.dispatcher = None
    app.state.temporal, app.state.temporal_lock = None, asyncio.Lock()  # a client once a backtest needs one
    app.state.rate_limits = FrontDoorLimits(settings)
    app.add_middleware(RejectNulInUrl)
    app.add_middleware(CorsByPath, codec_origins=settings.codec_cors_origins)
    app.include_router(segment.router)
    app.include_router(customerio.router, dependencies=[Depends(limit_customerio)])
    app.include_router(admin.router)
    app.include_router(admin_outbox.router)
    app.include_router(admin_segments.router)
    app.include_router(reports_api.router)
    app.include_router(timeline.router)
    app.include_router(unsubscribe.router)
    app.include_router(demo_store.snippet_router)
    if settings.demo_store_enabled:
        app.include_router(demo_store.router)
    app.include_router(backtest.router)
    app.include_router(codec.router)
    app.include_router(shopify.router)

    @app.exception_handler(CustomerIOAuthError)
    async def _cio_auth(_request: Request, _exc: CustomerIOAuthError) -> JSONResponse:
        return customerio.cio_error(401, "unauthorized: HTTP Basic site_id:api_key did not match")

    @app.exception_handler(RateLimited)
    async def _limited(_request: Request, exc: RateLimited) -> JSONResponse:
        return customerio.cio_error(
            429,
            f"rate limit exceeded for this site id; retry in {exc.retry_after} s",
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(LocksMoved)
    async def _busy(request: Request, _exc: LocksMoved) -> JSONResponse:
        message = "busy: a concurrent merge or delete holds a person this request names; nothing was stored, retry"
        response = (
            customerio.cio_error(503, message)
            if request.url.path.startswith("/api/v1")
            else JSONResponse({"detail": message}, status_code=503)
        )
        response.headers["Retry-After"] = "1"
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        if request.url.path.startswith("/api/v1"):
            return customerio.cio_error(400, *problems)
        return JSONResponse({"detail": problems}, status_code=400)

    @app.get("/healthz", tags=["health"])
    def healthz(request: Request) -> dict:
        with reading(request.app.state.engine).connect() as connection:
            connection.execute(text("SELECT 1"))
        return {"status": "ok"}

    if settings.metrics_enabled:

        @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
        def metrics() -> PlainTextResponse:
            return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
