"""Reports (admin): `GET /admin/reports/summary`, `GET /admin/reports/tracking` (JSON, Bearer token)
and `GET /admin/report` (the HTML page; Bearer token or a signed short-lived link)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine

from api import report_link, report_page
from api.deps import get_engine, get_policy, get_settings, matches_any, require_admin
from journeys.policy import Policy
from store import reports
from store.reports.experiments import experiments as experiment_report
from store.settings import Settings

router = APIRouter(prefix="/admin", tags=["reports"])

SINCE = Query(None, description="Start of the period: 2025-03-01, 2025-03-01T12:00:00Z or 30d (before now)")
UNTIL = Query(None, description="End of the period (exclusive; a plain date includes that day)")
DAYS = Query(
    reports.DEFAULT_CONVERSION_DAYS, ge=1, le=365, description="First-purchase conversion window: days after identify"
)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # No scripts, nothing fetched: inline styles and inline SVG only.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
}


def _period(since: str | None, until: str | None) -> reports.Period:
    try:
        return reports.make_period(since, until)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    except OverflowError:  # 0001-01-01 minus a time zone, 99999999d before now: past what a datetime holds
        raise HTTPException(400, "since/until is out of range (years 1–9999)") from None


@router.get(
    "/reports/summary",
    dependencies=[Depends(require_admin)],
    summary="Journey report: conversion (per route, holdout lift), revenue per recipient, cart recovery, "
    "messages by reason, funnel",
)
def summary(
    since: str | None = SINCE,
    until: str | None = UNTIL,
    days: int = DAYS,
    engine: Engine = Depends(get_engine),
    policy: Policy = Depends(get_policy),
) -> dict:
    return reports.summary(engine, policy, _period(since, until), conversion_days=days)


@router.get(
    "/reports/tracking",
    dependencies=[Depends(require_admin)],
    summary="Tracking health: identify lateness, fragmented ids, missing properties, duplicates, unmerged activity",
)
def tracking(
    since: str | None = SINCE,
    until: str | None = UNTIL,
    engine: Engine = Depends(get_engine),
    policy: Policy = Depends(get_policy),
) -> dict:
    return reports.tracking(engine, policy, _period(since, until))


@router.get(
    "/reports/experiments",
    dependencies=[Depends(require_admin)],
    summary="Message experiments: per variant recipients, conversions, revenue per recipient with its interval, "
    "the probability it beats the others, and the auto-winner decision",
)
def experiments(
    since: str | None = SINCE,
    until: str | None = UNTIL,
    engine: Engine = Depends(get_engine),
    policy: Policy = Depends(get_policy),
) -> dict:
    return experiment_report(engine, policy, _period(since, until))


def page_access(request: Request, settings: Settings = Depends(get_settings)) -> None:
    """The Bearer admin token, or a valid signed link (`expires` + `sig`) to this very page."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and settings.admin_token and matches_any(token.strip(), [settings.admin_token]):
        return
    try:
        report_link.verify(settings.admin_token, dict(request.query_params), path=request.url.path)
    except report_link.BadLink as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None


@router.get(
    "/report",
    dependencies=[Depends(page_access)],
    response_class=HTMLResponse,
    summary="The report page: figures and charts (HTML, works offline)",
)
def page(
    since: str | None = SINCE,
    until: str | None = UNTIL,
    days: int = DAYS,
    engine: Engine = Depends(get_engine),
    policy: Policy = Depends(get_policy),
) -> HTMLResponse:
    period = _period(since, until)
    html = report_page.render(
        reports.summary(engine, policy, period, conversion_days=days),
        reports.tracking(engine, policy, period),
        experiment_report(engine, policy, period),
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)
