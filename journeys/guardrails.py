"""When a journey step may actually send: after the frequency cap clears and outside the
shopper's local quiet hours. Pure timing maths, so the journey workflow can sleep until the
answer instead of polling, and so DST edges are tested without a clock."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta, tzinfo, UTC
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel

from journeys.history import as_utc
from journeys.policy import Policy, QuietHours


class Wait(BaseModel):
    reason: Literal["frequency_cap", "quiet_hours"]
    until: datetime


class SendSlot(BaseModel):
    at: datetime
    waits: list[Wait]


def frequency_cap_clears_at(last_message_at: datetime | None, min_between: timedelta) -> datetime | None:
    """The moment the person may hear from us again; None when nothing holds us back."""
    if last_message_at is None or min_between <= timedelta(0):
        return None
    return as_utc(last_message_at) + min_between


def _zone(name: str) -> tzinfo:
    """The zone as a real tzinfo. Temporal's workflow sandbox wraps `zoneinfo.ZoneInfo`, and the
    wrapped instances are refused by datetime's C code ("tzinfo argument must be ... a tzinfo
    subclass"); there we build the zone from `_zoneinfo`, the C class zoneinfo re-exports."""
    zone = ZoneInfo(name)
    if issubclass(type(zone), tzinfo):
        return zone
    import _zoneinfo  # type: ignore[import-not-found]  # CPython's accelerator module; not wrapped by the sandbox

    accelerated: tzinfo = _zoneinfo.ZoneInfo(name)
    return accelerated


def resolve_timezone(tz_name: str | None, default: str) -> str:
    """The person's timezone if we know it and it is real, else the shop's default: a typo in a
    profile must not stop a journey."""
    if tz_name:
        try:
            _zone(tz_name)
            return tz_name
        # ZoneInfoNotFoundError is a KeyError; caught as such because inside the sandbox the
        # class raised and the class imported here need not be the same object.
        except (KeyError, ValueError, TypeError, OSError):
            pass
    return default


def _is_quiet(wall: time, quiet: QuietHours) -> bool:
    if quiet.start < quiet.end:
        return quiet.start <= wall < quiet.end
    return wall >= quiet.start or wall < quiet.end


def _local_instant(day: date, wall: time, zone: tzinfo) -> list[datetime]:
    """UTC instants at which the local clock reads `wall` on `day`: one normally, two in a
    fall-back hour, and in a spring-forward gap the first instant after it (the transition)."""
    naive = datetime.combine(day, wall)
    early = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    late = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if early.astimezone(zone).replace(tzinfo=None) == naive:
        return sorted({early, late})  # exists; two instants when the hour repeats
    # Nonexistent: find the first second whose local reading is at or past `wall` (zone
    # transitions fall on whole seconds).
    lo = math.floor(min(early, late).timestamp())
    hi = math.ceil(max(early, late).timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return [datetime.fromtimestamp(hi, UTC)]


def quiet_hours_end(at: datetime, quiet: QuietHours, tz_name: str) -> datetime | None:
    """If `at` falls in the local quiet window, the UTC instant it ends; else None.

    The end is the next time the local clock reads `quiet.end` (so 8:00 is 8:00 local on both
    sides of a DST change); a window with start == end, or disabled, is never quiet.
    """
    if not quiet.enabled or quiet.start == quiet.end:
        return None
    zone = _zone(tz_name)
    at = as_utc(at)
    local = at.astimezone(zone)
    wall = local.time().replace(tzinfo=None)
    if not _is_quiet(wall, quiet):
        return None
    day = local.date()
    if quiet.start > quiet.end and wall >= quiet.start:
        day += timedelta(days=1)  # the window spans midnight: it ends tomorrow morning
    candidates = [moment for moment in _local_instant(day, quiet.end, zone) if moment > at]
    if candidates:
        return candidates[0]
    return _local_instant(day + timedelta(days=1), quiet.end, zone)[0]  # defensive; not reached


def earliest_send(now: datetime, last_message_at: datetime | None, policy: Policy, tz_name: str | None) -> SendSlot:
    """The first moment a message may go out, and each wait on the way (for the workflow's
    "waiting for … until …" details). The cap applies first; if it clears inside quiet hours
    we wait on to the end of the window."""
    zone_name = resolve_timezone(tz_name, policy.default_timezone)
    at = now
    waits: list[Wait] = []
    clears = frequency_cap_clears_at(last_message_at, policy.min_time_between_messages)
    if clears is not None and clears > at:
        waits.append(Wait(reason="frequency_cap", until=clears))
        at = clears
    # The end of a window is never itself quiet, but loop (bounded) in case an odd zone
    # transition lands the end in a second window.
    for _ in range(4):
        ends = quiet_hours_end(at, policy.quiet_hours, zone_name)
        if ends is None:
            break
        waits.append(Wait(reason="quiet_hours", until=ends))
        at = ends
    return SendSlot(at=at, waits=waits)
