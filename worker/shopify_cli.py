"""`breadcrumb shopify import`: the Admin API backfill with a progress bar and a summary."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from integrations.shopify import admin_import
from integrations.shopify.graphql import AdminGraphQL, ShopifyError
from store.settings import Settings


class Bars(admin_import.Progress):
    """One rich progress bar per resource (a spinner-like bar when the shop did not say how many)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def start(self, resource: str, total: int | None, done: int) -> None:
        self.tasks[resource] = self.progress.add_task(resource, total=total, completed=done)

    def advance(self, resource: str, nodes: int) -> None:
        self.progress.advance(self.tasks[resource], nodes)


def run_import(
    console: Console,
    settings: Settings,
    shop: str,
    token: str,
    days: int,
    restart: bool,
    api_version: str,
    base_url: str | None,
) -> int:
    from store.db import make_engine

    shop = shop.strip().lower().removeprefix("https://").rstrip("/")
    if not shop.endswith(".myshopify.com"):
        console.print(
            f"[bold red]breadcrumb shopify import:[/] --shop {shop!r}: give the shop's *.myshopify.com "
            "domain (Settings → Domains in the Shopify admin)",
            highlight=False,
        )
        return 2
    engine = make_engine(settings.database_url)
    columns = (TextColumn("{task.description:>9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with (
            AdminGraphQL(shop, token, api_version=api_version, base_url=base_url) as client,
            Progress(*columns, console=console) as progress,
        ):
            results = admin_import.import_shop(
                engine, settings, settings.policy, client, shop, days, restart=restart, progress=Bars(progress)
            )
    except ShopifyError as error:
        console.print(f"[bold red]breadcrumb shopify import:[/] {error}; run it again to resume", highlight=False)
        return 1
    finally:
        engine.dispose()
    table = Table(title=f"{shop} (orders: last {days} days)")
    for column in ("resource", "read", "events stored", "left out", "resumed"):
        table.add_column(column)
    for result in results:
        table.add_row(
            result.resource,
            str(result.read),
            str(result.stored),
            str(len(result.unusable)),
            "yes" if result.resumed else "",
        )
    console.print(table)
    for result in results:
        for reason in result.unusable:
            console.print(f"[yellow]left out[/] {result.resource} {reason}", highlight=False)
    if client.waited:
        console.print(f"waited {client.waited:.1f} s for Shopify's rate limit", highlight=False)
    return 0
