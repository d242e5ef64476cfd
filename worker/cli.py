"""The `breadcrumb` command line."""

from __future__ import annotations

import typer
from rich.console import Console

from store.settings import Settings

app = typer.Typer(help="Breadcrumb: anonymous intent → identity merge → durable journeys on Temporal.",
                  no_args_is_help=True, add_completion=False)
console = Console()


@app.command()
def migrate(db: str = typer.Option(None, help="Database URL (default: BREADCRUMB_DATABASE_URL)")) -> None:
    """Apply the database schema (Alembic migrations) up to the latest version."""
    from store.db import make_engine
    from store.migrate import upgrade

    settings = Settings(**({"database_url": db} if db else {}))
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    console.print(f"[green]schema up to date[/] on {engine.url.render_as_string(hide_password=True)}")


@app.command()
def api(host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
        port: int = typer.Option(8000, help="Port to listen on"),
        migrate_on_start: bool = typer.Option(False, "--migrate/--no-migrate", help="Apply migrations at start-up")) -> None:
    """Serve the ingestion and admin API."""
    import uvicorn

    from api.app import create_app

    settings = Settings()
    if migrate_on_start:
        settings.auto_migrate = True
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


if __name__ == "__main__":
    app()
