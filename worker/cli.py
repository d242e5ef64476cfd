"""The `breadcrumb` command line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn

import typer
from rich.console import Console
from typer.core import TyperCommand

from store.settings import Settings
from worker.demo import DEMO_WAIT

# Plain (click) help: typer's rich panels print a `<bool>` type beside every flag, --help included.
app = typer.Typer(
    help="Breadcrumb: anonymous intent → identity merge → durable journeys on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)
console = Console()


def _configured(delivery: bool | Callable[[Settings], bool] = False) -> Settings:
    """The settings of a process that talks to Temporal, or one line naming the variable to fix and
    exit status 1 — before anything starts."""
    from worker.preflight import (
        ConfigurationError,
        check_delivery,
        check_payload_keys,
        check_temporal_connection,
        load_settings,
    )

    try:
        settings = load_settings()
        check_payload_keys(settings)
        check_temporal_connection(settings)
        if delivery(settings) if callable(delivery) else delivery:
            check_delivery(settings)
    except ConfigurationError as error:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]breadcrumb:[/] {error}", highlight=False)
        raise typer.Exit(1) from None
    return settings


@app.command()
def migrate(db: str = typer.Option(None, help="Database URL (default: BREADCRUMB_DATABASE_URL)")) -> None:
    """Apply the database schema (Alembic migrations) up to the latest version."""
    from store.db import make_engine
    from store.migrate import upgrade

    settings = Settings(database_url=db) if db else Settings()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    console.print(f"[green]schema up to date[/] on {engine.url.render_as_string(hide_password=True)}")


@app.command()
def api(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
    port: int = typer.Option(8000, help="Port to listen on"),
    migrate_on_start: bool = typer.Option(False, "--migrate/--no-migrate", help="Apply migrations at start-up"),
) -> None:
    """Serve the ingestion and admin API."""
    import uvicorn

    from api.app import create_app

    settings = _configured()
    if migrate_on_start:
        settings.auto_migrate = True
    uvicorn.run(_started(create_app, settings, "api"), host=host, port=port, log_level="info")


def _exit_refused() -> NoReturn:
    """Exit status 1 right after a refused Temporal connection has been explained. The Temporal core's
    threads may still be winding that connection down, and a normal interpreter exit can then abort
    in finalization ("PyGILState_Release … finalizing", seen under load) with another status: leave
    at once, output flushed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def _started(start, settings: Settings, command: str):
    """`start(settings)`, or one line naming the missing or wrong setting and exit code 2."""
    from activities.channels import DeliveryConfigError

    try:
        return start(settings)
    except DeliveryConfigError as error:
        typer.echo(f"breadcrumb {command}: {error}", err=True)
        raise typer.Exit(2) from None


@app.command()
def worker(
    metrics_port: int = typer.Option(None, help="Serve Temporal worker metrics for Prometheus on this port"),
    queue: str = typer.Option(
        None,
        "--queue",
        help="The task queue to serve: BREADCRUMB_TASK_QUEUE (default: "
        "hubs and journeys) or BREADCRUMB_BACKTEST_TASK_QUEUE (backtest: backtests only)",
    ),
) -> None:
    """Run a Temporal worker: the hub and journey workflows and their activities, or with --queue backtest the
    backtests. SIGTERM/SIGINT stop it gracefully."""
    import asyncio
    import logging

    from store.db import make_engine
    from dispatch.temporal import TemporalConnectError, connect, metrics_runtime
    from worker.worker import READY, run_until_signalled, start_segment_refresh, workers_for

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = _configured(delivery=lambda s: queue != s.backtest_task_queue)  # a backtest worker sends nothing
    if queue not in (None, settings.task_queue, settings.backtest_task_queue):
        typer.echo(
            f"breadcrumb worker: --queue {queue}: serve {settings.task_queue} (hubs and journeys) or "
            f"{settings.backtest_task_queue} (backtests)",
            err=True,
        )
        raise typer.Exit(2)

    async def main() -> bool:
        """Serve until signalled; False when Temporal could not be reached (said in one line)."""
        runtime = metrics_runtime(metrics_port) if metrics_port else None
        try:
            client = await connect(settings, runtime=runtime)
        except TemporalConnectError as error:
            typer.echo(f"breadcrumb worker: {error}", err=True)
            return False
        engine = make_engine(settings.database_url)
        try:
            workers, ready = workers_for(queue, client, engine, settings)
            if ready == READY:  # the journeys queue, which runs the segment refresh
                await start_segment_refresh(client, settings)
            await run_until_signalled(*workers, ready=ready)
        finally:
            engine.dispose()
        return True

    if not _started(lambda _: asyncio.run(main()), settings, "worker"):
        _exit_refused()


@app.command("temporal-setup")
def temporal_setup() -> None:
    """Register Breadcrumb's search attributes in the namespace (BREADCRUMB_TEMPORAL_NAMESPACE). On Temporal
    Cloud (BREADCRUMB_TEMPORAL_API_KEY, or where the operator service refuses) check them instead, and print
    the `tcld` line that adds the missing ones (exit status 1)."""
    import asyncio

    from dispatch.temporal import SearchAttributesMissing, TemporalConnectError, connect, register_search_attributes

    settings = _configured()

    async def main() -> list[str]:
        client = await connect(settings)
        return await register_search_attributes(client, may_add=not settings.temporal_api_key)

    try:
        added = asyncio.run(main())
    except (SearchAttributesMissing, TemporalConnectError) as error:
        from rich.markup import escape

        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]breadcrumb temporal-setup:[/] {escape(str(error))}", highlight=False
        )
        _exit_refused()
    console.print(f"search attributes added: {', '.join(added)}" if added else "search attributes already registered")


@app.command("codec-login")
def codec_login(
    api_url: str = typer.Option(None, "--api", help="Base URL of the API (default: BREADCRUMB_PUBLIC_BASE_URL)"),
    ttl: int = typer.Option(900, help="Seconds the link stays valid (the session it opens lasts 12 hours)"),
) -> None:
    """Print a signed link that opens a codec session in your browser, so the Temporal UI shows decoded payloads."""
    from api.codec import login_link

    settings = Settings()
    base = api_url or settings.public_base_url
    if not settings.admin_token or not base:
        console.print(
            "[bold red]breadcrumb:[/] codec-login needs BREADCRUMB_ADMIN_TOKEN and --api "
            "(or BREADCRUMB_PUBLIC_BASE_URL)",
            highlight=False,
        )
        raise typer.Exit(1)
    try:
        print(login_link(settings.admin_token, base, ttl=ttl))
    except ValueError as error:
        console.print(f"[bold red]breadcrumb:[/] {error}", highlight=False)
        raise typer.Exit(1) from None


@app.command()
def dev(
    config: str = typer.Option(None, "--config", help="Journey policy TOML (default: journeys.toml)"),
    db: str = typer.Option(None, "--db", help="Database URL (default: sqlite:///<data-dir>/breadcrumb.db)"),
    api_port: int = typer.Option(8000, help="API port"),
    temporal_port: int = typer.Option(7233, help="Temporal frontend port"),
    ui_port: int = typer.Option(8233, help="Temporal Web UI port"),
    host: str = typer.Option("127.0.0.1", help="Interface the API listens on (0.0.0.0 to reach it from other devices)"),
    data_dir: str = typer.Option("data", help="Where the SQLite database and the Temporal dev server's state live"),
    temporal_log_level: str = typer.Option("error", help="Temporal dev server log level (debug, info, warn, error)"),
    temporal_store: str = typer.Option(
        "wal",
        help="Where the Temporal dev server keeps its state: wal (its file "
        "in <data-dir>, WAL mode), file (the server's default journal) or memory "
        "(lost when it stops)",
    ),
) -> None:
    """Start the embedded stack: Temporal dev server, worker, API + dispatcher. Ctrl-C stops all of it."""
    from worker.devstack import DevStack

    stack = DevStack(
        config=config,
        db=db,
        api_port=api_port,
        temporal_port=temporal_port,
        ui_port=ui_port,
        host=host,
        data_dir=data_dir,
        temporal_log_level=temporal_log_level,
        temporal_store=temporal_store,
    )
    raise typer.Exit(stack.run())


@app.command()
def demo(
    api_url: str = typer.Option("http://127.0.0.1:8000", "--api", help="Base URL of a running Breadcrumb API"),
    shoppers: int = typer.Option(7, "--shoppers", "-n", help="How many shoppers to play (7 tells every story once)"),
    seed: int = typer.Option(None, help="Replay the same shoppers (default: a new seed, printed)"),
    write_key: str = typer.Option(
        None,
        "--write-key",
        envvar="BREADCRUMB_WRITE_KEYS",
        help="Segment write key (default: the first of BREADCRUMB_WRITE_KEYS)",
    ),
    admin_token: str = typer.Option(
        None,
        "--admin-token",
        envvar="BREADCRUMB_ADMIN_TOKEN",
        help="Admin token, to show what each shopper got (BREADCRUMB_ADMIN_TOKEN)",
    ),
    wait: float = typer.Option(DEMO_WAIT, help="Seconds to wait for the journeys to finish (0: do not wait)"),
    concurrency: int = typer.Option(4, help="Shoppers browsing at the same time"),
    json_path: str = typer.Option(None, "--json", help="Also write the outcome per shopper to this JSON file"),
) -> None:
    """Play realistic storefront sessions through the HTTP API, then show each shopper's merge, journey and messages."""
    from pathlib import Path

    from worker.demo import DemoError, run_demo

    key = write_key.split(",")[0].strip() if write_key else None
    try:
        code = run_demo(
            api_url,
            key,
            admin_token or None,
            shoppers,
            seed,
            wait,
            concurrency,
            Path(json_path) if json_path else None,
            console,
        )
    except DemoError as error:
        console.print(f"[bold red]breadcrumb demo:[/] {error}", highlight=False)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


class _ReportCommand(TyperCommand):
    """`--open` takes an optional URL: bare (last, or before another option) it means the
    configured public base URL, passed on as an empty value."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        bare = [
            i for i, arg in enumerate(args) if arg == "--open" and (i + 1 == len(args) or args[i + 1].startswith("-"))
        ]
        return super().parse_args(ctx, ["--open=" if i in bare else arg for i, arg in enumerate(args)])


@app.command(cls=_ReportCommand)
def report(
    kind: str = typer.Argument(
        "summary",
        metavar="[summary|tracking|experiments]",
        help="summary: did the journeys make money; tracking: is the tracking healthy; "
        "experiments: which message variant earns more per recipient",
    ),
    since: str = typer.Option(None, help="Period start: 2025-03-01, 2025-03-01T12:00:00Z or 30d (before now)"),
    until: str = typer.Option(None, help="Period end, exclusive (a plain date includes that day)"),
    days: int = typer.Option(14, min=1, max=365, help="First-purchase conversion window: days after identify"),
    db: str = typer.Option(None, "--db", help="Database URL (default: BREADCRUMB_DATABASE_URL, else the dev stack's)"),
    config: str = typer.Option(
        None,
        "--config",
        help="Journey policy TOML, for the attribution and merge windows "
        "(default: the dev stack's, else journeys.toml)",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON"),
    exact: bool = typer.Option(
        False, "--exact", help="Compute the journey report from the stored rows, not the roll-ups (slow; the reference)"
    ),
    open_url: str = typer.Option(
        None,
        "--open",
        metavar="[URL]",
        help="Print a signed, short-lived link to the report page of the API at URL "
        "(default: BREADCRUMB_PUBLIC_BASE_URL)",
    ),
    ttl: int = typer.Option(900, help="Seconds the --open link stays valid"),
    data_dir: str = typer.Option(
        "data",
        help="Data directory of a `breadcrumb dev` stack: its database and "
        "journey config are used unless --db/--config or their "
        "BREADCRUMB_ variables say otherwise",
    ),
) -> None:
    """Reports: conversion, revenue per recipient, cart recovery, messages by reason — or tracking health."""
    from worker.report_cli import run_report

    raise typer.Exit(
        run_report(kind, since, until, days, db, as_json, open_url, ttl, config=config, data_dir=data_dir, exact=exact)
    )


@app.command()
def simulate(
    person: str = typer.Option(..., "--person", help="Email, user id or person id of an identified person"),
    config: str = typer.Option(None, "--config", help="Journey policy TOML to simulate (default: the current one)"),
    at: str = typer.Option(None, "--at", help="Start at this ISO time instead of the identify moment"),
    as_json: bool = typer.Option(False, "--json", help="Print the timeline as JSON"),
    db: str = typer.Option(None, "--db", help="Database URL (default: BREADCRUMB_DATABASE_URL)"),
) -> None:
    """What-if: run the real hub and journeys for one person on the time-skipping server, dry run, and show the timeline."""
    from worker.simulate_cli import run_simulate

    raise typer.Exit(run_simulate(console, person, config, at, as_json, db))


@app.command()
def backtest(
    since: str = typer.Option("30d", "--since", help="Simulate everyone identified in this window (30d, 12h…)"),
    config: str = typer.Option(None, "--config", help="The new journey policy TOML (default: the current one)"),
    against: str = typer.Option(None, "--against", help="The policy to compare with (default: the current one)"),
    limit: int = typer.Option(None, "--limit", min=1, help="At most this many people (oldest identify first)"),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
    db: str = typer.Option(None, "--db", help="Database URL (default: BREADCRUMB_DATABASE_URL)"),
) -> None:
    """What-if across the base: simulate everyone identified in the window under both policies and compare."""
    from worker.simulate_cli import run_backtest

    raise typer.Exit(run_backtest(console, since, config, against, limit, as_json, db))


shopify = typer.Typer(
    help="Shopify: import a shop's past customers, orders and products.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(shopify, name="shopify")


@shopify.command("import")
def shopify_import(
    shop: str = typer.Option(..., "--shop", help="The shop's domain, X.myshopify.com"),
    token: str = typer.Option(
        ...,
        "--token",
        help="The custom app's Admin API access token (scopes read_customers, read_orders, read_products)",
    ),
    days: int = typer.Option(60, "--days", min=1, help="Import the orders of the last N days"),
    restart: bool = typer.Option(False, "--restart", help="Start over instead of resuming an interrupted import"),
    api_version: str = typer.Option("2025-01", "--api-version", help="Admin API version"),
    base_url: str = typer.Option(
        None, "--base-url", hidden=True, help="Talk to this URL instead of https://<shop> (tests)"
    ),
) -> None:
    """Backfill customers, orders (last N days) and products through the Admin GraphQL API; resumable, idempotent."""
    from worker.shopify_cli import run_import

    raise typer.Exit(run_import(console, _configured(), shop, token, days, restart, api_version, base_url))


@app.command()
def maintenance(db: str = typer.Option(None, "--db", help="Database URL (default: BREADCRUMB_DATABASE_URL)")) -> None:
    """Create the events table's monthly partitions ahead (PostgreSQL), drop whole months past
    BREADCRUMB_EVENT_RETENTION, delete the rest of the events past it and never-identified anonymous
    events older than the merge window. Idempotent: run it daily from cron."""
    from datetime import UTC, datetime

    from rich.table import Table

    from store.db import make_engine
    from store.maintenance import upkeep
    from worker.preflight import ConfigurationError, load_settings

    try:
        settings = load_settings(**({"database_url": db} if db else {}))
    except ConfigurationError as error:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]breadcrumb:[/] {error}", highlight=False)
        raise typer.Exit(1) from None
    engine = make_engine(settings.database_url)
    try:
        with console.status("Maintaining the events table…"):
            policy = settings.policy
            done = upkeep(
                engine, datetime.now(UTC), settings.event_retention, policy.merge_window, policy.attribution_window
            )
    finally:
        engine.dispose()
    if done.created or done.dropped:
        table = Table("Partition", "Done", "Rows (estimate)", title="Monthly partitions of events")
        for name in done.created:
            table.add_row(name, "created", "")
        for dropped in done.dropped:
            table.add_row(dropped.name, "dropped (past retention)", str(dropped.rows))
        console.print(table)
    console.print(
        f"Deleted {done.expired.past_retention} events past retention and {done.expired.never_identified} "
        "anonymous events that can no longer merge."
    )
    if done.forgotten:
        console.print(f"Forgot {done.forgotten} message ids of events past retention.")
    console.print(f"Report roll-ups up to date ({done.recomputed} people and devices re-computed).")


if __name__ == "__main__":
    app()
