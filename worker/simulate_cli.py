"""`breadcrumb simulate` and `breadcrumb backtest`: argument handling, progress and output."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from journeys.history import as_utc
from journeys.policy import Policy, PolicyError, load_policy
from store.settings import Settings


def _policy(path: str | None, settings: Settings) -> tuple[Policy, str]:
    if path:
        return load_policy(path), Path(path).name
    return settings.policy, Path(str(settings.journeys)).name


def _engine(db: str | None, settings: Settings):
    from store.db import make_engine

    return make_engine(db or settings.database_url)


def run_simulate(
    console: Console,
    person: str,
    config: str | None,
    at: str | None,
    as_json: bool,
    db: str | None = None,
    horizon_days: float = 30,
) -> int:
    from datetime import timedelta

    from simulation.simulator import SimulationError, simulate_person
    from simulation.views import render_timeline

    settings = Settings()
    try:
        policy, name = _policy(config, settings)
        moment = as_utc(datetime.fromisoformat(at.replace("Z", "+00:00"))) if at else None
    except (PolicyError, ValueError) as error:
        console.print(f"[bold red]breadcrumb simulate:[/] {error}", highlight=False)
        return 2
    engine = _engine(db, settings)
    try:
        timeline = asyncio.run(
            simulate_person(engine, person, policy, at=moment, policy_name=name, horizon=timedelta(days=horizon_days))
        )
    except SimulationError as error:
        console.print(f"[bold red]breadcrumb simulate:[/] {error}", highlight=False)
        return 1
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps(timeline.as_json(), indent=2, ensure_ascii=False))
    else:
        render_timeline(console, timeline)
    return 0


def run_backtest(
    console: Console,
    since: str,
    config: str | None,
    against: str | None,
    limit: int | None,
    as_json: bool,
    db: str | None = None,
) -> int:
    from simulation.simulator import SimulationError, backtest, parse_since
    from simulation.views import render_backtest

    settings = Settings()
    try:
        new, new_name = _policy(config, settings)
        current, current_name = _policy(against, settings)
        window = parse_since(since)
    except (PolicyError, SimulationError) as error:
        console.print(f"[bold red]breadcrumb backtest:[/] {error}", highlight=False)
        return 2
    engine = _engine(db, settings)
    progress = Progress(
        TextColumn("simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=as_json,
    )
    try:
        with progress:
            task = progress.add_task("simulate", total=None)
            result = asyncio.run(
                backtest(
                    engine,
                    new,
                    current,
                    window,
                    limit=limit,
                    new_name=new_name,
                    current_name=current_name,
                    progress=lambda done, total: progress.update(task, completed=done, total=total),
                )
            )
    except SimulationError as error:
        console.print(f"[bold red]breadcrumb backtest:[/] {error}", highlight=False)
        return 1
    finally:
        engine.dispose()
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        render_backtest(console, result)
    return 0
