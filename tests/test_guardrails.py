"""Send-time guardrails: frequency cap and local quiet hours, including DST edges. No Temporal."""

from __future__ import annotations

from datetime import datetime, time, timedelta, UTC
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from journeys.guardrails import (
    SendSlot,
    Wait,
    earliest_send,
    frequency_cap_clears_at,
    quiet_hours_end,
    resolve_timezone,
)
from journeys.policy import Policy, QuietHours, parse_policy

UTC = UTC
NIGHT = QuietHours()  # 21:00 → 08:00, spans midnight


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def policy_with(**overrides) -> Policy:
    return parse_policy(overrides)


# --------------------------------------------------------------------------- frequency cap


def test_frequency_cap_clears_at():
    last = utc(2026, 3, 2, 9, 0)
    assert frequency_cap_clears_at(None, timedelta(hours=20)) is None
    assert frequency_cap_clears_at(last, timedelta(0)) is None
    assert frequency_cap_clears_at(last, timedelta(hours=20)) == utc(2026, 3, 3, 5, 0)
    # naive moments from the store are UTC
    assert frequency_cap_clears_at(datetime(2026, 3, 2, 9, 0), timedelta(hours=1)) == utc(2026, 3, 2, 10, 0)


# --------------------------------------------------------------------------- quiet hours, plain


@pytest.mark.parametrize(
    ("at", "ends"),
    [
        (utc(2026, 3, 2, 20, 59, 59), None),
        (utc(2026, 3, 2, 21, 0), utc(2026, 3, 3, 8, 0)),  # start is quiet
        (utc(2026, 3, 2, 23, 30), utc(2026, 3, 3, 8, 0)),  # before midnight: ends tomorrow
        (utc(2026, 3, 3, 0, 0), utc(2026, 3, 3, 8, 0)),
        (utc(2026, 3, 3, 3, 0), utc(2026, 3, 3, 8, 0)),  # after midnight: ends today
        (utc(2026, 3, 3, 7, 59, 59, 999999), utc(2026, 3, 3, 8, 0)),
        (utc(2026, 3, 3, 8, 0), None),  # end is not quiet
        (utc(2026, 3, 3, 12, 0), None),
    ],
)
def test_quiet_hours_across_midnight(at, ends):
    assert quiet_hours_end(at, NIGHT, "UTC") == ends


def test_quiet_window_within_one_day():
    lunch = QuietHours(start=time(13, 0), end=time(14, 0))
    assert quiet_hours_end(utc(2026, 3, 2, 12, 59), lunch, "UTC") is None
    assert quiet_hours_end(utc(2026, 3, 2, 13, 0), lunch, "UTC") == utc(2026, 3, 2, 14, 0)
    assert quiet_hours_end(utc(2026, 3, 2, 13, 30), lunch, "UTC") == utc(2026, 3, 2, 14, 0)
    assert quiet_hours_end(utc(2026, 3, 2, 14, 0), lunch, "UTC") is None
    assert quiet_hours_end(utc(2026, 3, 2, 23, 0), lunch, "UTC") is None


def test_disabled_or_empty_window_is_never_quiet():
    off = QuietHours(enabled=False)
    empty = QuietHours(start=time(9, 0), end=time(9, 0))
    for hour in range(24):
        at = utc(2026, 3, 2, hour, 30)
        assert quiet_hours_end(at, off, "America/New_York") is None
        assert quiet_hours_end(at, empty, "America/New_York") is None


def test_local_time_not_utc():
    # 02:00 UTC is 21:00 EST the evening before: quiet until 08:00 EST = 13:00 UTC
    assert quiet_hours_end(utc(2026, 1, 15, 2, 0), NIGHT, "America/New_York") == utc(2026, 1, 15, 13, 0)
    # 22:00 UTC is 17:00 EST: not quiet there, though it is in UTC
    assert quiet_hours_end(utc(2026, 1, 15, 22, 0), NIGHT, "America/New_York") is None
    # a zone with a half-hour offset
    assert quiet_hours_end(utc(2026, 1, 15, 16, 0), NIGHT, "Asia/Kolkata") == utc(2026, 1, 16, 2, 30)


def test_aware_non_utc_input_is_the_same_instant():
    at = datetime(2026, 1, 14, 21, 0, tzinfo=ZoneInfo("America/New_York"))
    ends = quiet_hours_end(at, NIGHT, "America/New_York")
    assert ends == utc(2026, 1, 15, 13, 0) and ends.utcoffset() == timedelta(0)


class _Wrapped:
    """Stands in for Temporal's sandbox proxy: forwards everything, but is not a tzinfo."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_works_when_the_sandbox_wraps_zoneinfo(monkeypatch):
    import journeys.guardrails as guardrails

    monkeypatch.setattr(guardrails, "ZoneInfo", lambda name: _Wrapped(ZoneInfo(name)))
    assert quiet_hours_end(utc(2026, 1, 15, 2, 0), NIGHT, "America/New_York") == utc(2026, 1, 15, 13, 0)
    assert earliest_send(utc(2026, 1, 15, 2, 0), None, Policy(), "America/New_York").at == utc(2026, 1, 15, 13, 0)


# --------------------------------------------------------------------------- quiet hours, DST


NY = "America/New_York"


def test_new_york_spring_forward_night_is_an_hour_shorter():
    # 2026-03-08 02:00 EST → 03:00 EDT (07:00 UTC). 22:00 EST on the 7th = 03:00 UTC.
    assert quiet_hours_end(utc(2026, 3, 8, 3, 0), NIGHT, NY) == utc(2026, 3, 8, 12, 0)  # 08:00 EDT
    assert quiet_hours_end(utc(2026, 3, 8, 6, 59), NIGHT, NY) == utc(2026, 3, 8, 12, 0)  # 01:59 EST
    assert quiet_hours_end(utc(2026, 3, 8, 7, 0), NIGHT, NY) == utc(2026, 3, 8, 12, 0)  # 03:00 EDT
    assert quiet_hours_end(utc(2026, 3, 8, 12, 0), NIGHT, NY) is None
    # the evening after the change is measured in EDT: 21:00 EDT = 01:00 UTC
    assert quiet_hours_end(utc(2026, 3, 9, 1, 0), NIGHT, NY) == utc(2026, 3, 9, 12, 0)
    assert quiet_hours_end(utc(2026, 3, 9, 0, 59), NIGHT, NY) is None


def test_window_ending_in_the_spring_forward_gap_ends_when_the_clock_jumps():
    # 02:30 does not exist on 2026-03-08 in New York: the first valid instant after it is 03:00 EDT.
    late_night = QuietHours(start=time(22, 0), end=time(2, 30))
    assert quiet_hours_end(utc(2026, 3, 8, 4, 0), late_night, NY) == utc(2026, 3, 8, 7, 0)
    assert quiet_hours_end(utc(2026, 3, 8, 6, 59, 59), late_night, NY) == utc(2026, 3, 8, 7, 0)
    assert quiet_hours_end(utc(2026, 3, 8, 7, 0), late_night, NY) is None  # 03:00 EDT
    # the same window a day later is ordinary again
    assert quiet_hours_end(utc(2026, 3, 9, 3, 0), late_night, NY) == utc(2026, 3, 9, 6, 30)


def test_window_starting_in_the_spring_forward_gap():
    early = QuietHours(start=time(2, 30), end=time(6, 0))
    assert quiet_hours_end(utc(2026, 3, 8, 6, 59, 59), early, NY) is None  # 01:59:59 EST
    assert quiet_hours_end(utc(2026, 3, 8, 7, 0), early, NY) == utc(2026, 3, 8, 10, 0)  # 03:00 → 06:00 EDT


def test_new_york_fall_back_night_is_an_hour_longer():
    # 2026-11-01 02:00 EDT → 01:00 EST (06:00 UTC). 21:00 EDT on Oct 31 = 01:00 UTC.
    assert quiet_hours_end(utc(2026, 11, 1, 1, 0), NIGHT, NY) == utc(2026, 11, 1, 13, 0)  # 08:00 EST
    assert quiet_hours_end(utc(2026, 11, 1, 5, 30), NIGHT, NY) == utc(2026, 11, 1, 13, 0)  # 01:30 EDT
    assert quiet_hours_end(utc(2026, 11, 1, 6, 30), NIGHT, NY) == utc(2026, 11, 1, 13, 0)  # 01:30 EST
    assert quiet_hours_end(utc(2026, 11, 1, 13, 0), NIGHT, NY) is None
    assert quiet_hours_end(utc(2026, 11, 1, 12, 59), NIGHT, NY) == utc(2026, 11, 1, 13, 0)  # 07:59 EST


def test_window_ending_in_the_repeated_hour_ends_at_the_next_reading():
    # 01:30 happens twice on 2026-11-01: 05:30 UTC (EDT) and 06:30 UTC (EST).
    late_night = QuietHours(start=time(21, 0), end=time(1, 30))
    assert quiet_hours_end(utc(2026, 11, 1, 5, 15), late_night, NY) == utc(2026, 11, 1, 5, 30)  # 01:15 EDT
    assert quiet_hours_end(utc(2026, 11, 1, 5, 30), late_night, NY) is None  # 01:30 EDT
    assert quiet_hours_end(utc(2026, 11, 1, 5, 45), late_night, NY) is None  # 01:45 EDT
    # the clock goes back and reads 01:15 again: quiet until it reads 01:30 again
    assert quiet_hours_end(utc(2026, 11, 1, 6, 15), late_night, NY) == utc(2026, 11, 1, 6, 30)  # 01:15 EST


SYDNEY = "Australia/Sydney"


def test_sydney_summer_and_winter():
    # January is AEDT (+11): 22:00 on the 15th local = 11:00 UTC; 08:00 on the 16th = 21:00 UTC on the 15th
    assert quiet_hours_end(utc(2026, 1, 15, 11, 0), NIGHT, SYDNEY) == utc(2026, 1, 15, 21, 0)
    # June is AEST (+10): 05:00 on the 16th local is 19:00 UTC on the 15th
    assert quiet_hours_end(utc(2026, 6, 15, 19, 0), NIGHT, SYDNEY) == utc(2026, 6, 15, 22, 0)
    assert quiet_hours_end(utc(2026, 6, 15, 22, 0), NIGHT, SYDNEY) is None
    # midday UTC is 22:00 in Sydney: quiet
    assert quiet_hours_end(utc(2026, 6, 15, 12, 0), NIGHT, SYDNEY) == utc(2026, 6, 15, 22, 0)


def test_sydney_dst_transitions():
    # 2026-10-04 02:00 AEST → 03:00 AEDT: 21:00 AEST on the 3rd = 11:00 UTC; 08:00 AEDT on the 4th = 21:00 UTC on the 3rd
    assert quiet_hours_end(utc(2026, 10, 3, 11, 0), NIGHT, SYDNEY) == utc(2026, 10, 3, 21, 0)
    # 2026-04-05 03:00 AEDT → 02:00 AEST: 22:00 AEDT on the 4th = 11:00 UTC; 08:00 AEST on the 5th = 22:00 UTC on the 4th
    assert quiet_hours_end(utc(2026, 4, 4, 11, 0), NIGHT, SYDNEY) == utc(2026, 4, 4, 22, 0)


# --------------------------------------------------------------------------- earliest_send


NOON = utc(2026, 3, 2, 12, 0)


def test_nothing_in_the_way_sends_now():
    slot = earliest_send(NOON, None, Policy(), "UTC")
    assert slot == SendSlot(at=NOON, waits=[])
    assert earliest_send(NOON, NOON - timedelta(hours=25), Policy(), "UTC") == SendSlot(at=NOON, waits=[])
    assert earliest_send(NOON, NOON - timedelta(hours=20), Policy(), "UTC") == SendSlot(
        at=NOON, waits=[]
    )  # cap just cleared


def test_capped_sleeps_until_the_cap_clears():
    slot = earliest_send(NOON, NOON - timedelta(hours=15), Policy(), "UTC")  # clears 17:00, daytime
    assert slot.at == utc(2026, 3, 2, 17, 0)
    assert slot.waits == [Wait(reason="frequency_cap", until=utc(2026, 3, 2, 17, 0))]


def test_cap_clearing_inside_quiet_hours_waits_for_the_window_to_open():
    slot = earliest_send(NOON, NOON - timedelta(hours=10), Policy(), "UTC")  # clears 22:00, quiet
    assert slot.at == utc(2026, 3, 3, 8, 0)
    assert slot.waits == [
        Wait(reason="frequency_cap", until=utc(2026, 3, 2, 22, 0)),
        Wait(reason="quiet_hours", until=utc(2026, 3, 3, 8, 0)),
    ]


def test_inside_quiet_hours_without_cap():
    late = utc(2026, 3, 2, 23, 0)
    slot = earliest_send(late, None, Policy(), "UTC")
    assert slot == SendSlot(at=utc(2026, 3, 3, 8, 0), waits=[Wait(reason="quiet_hours", until=utc(2026, 3, 3, 8, 0))])


def test_cap_clearing_inside_quiet_hours_across_spring_forward():
    # last message 2026-03-07 12:00 UTC + 20h = 08:00 UTC on the 8th = 04:00 EDT: quiet until 08:00 EDT
    slot = earliest_send(utc(2026, 3, 7, 20, 0), utc(2026, 3, 7, 12, 0), Policy(), NY)
    assert slot.waits == [
        Wait(reason="frequency_cap", until=utc(2026, 3, 8, 8, 0)),
        Wait(reason="quiet_hours", until=utc(2026, 3, 8, 12, 0)),
    ]
    assert slot.at == utc(2026, 3, 8, 12, 0)


def test_cap_in_sydney():
    # clears 10:00 UTC = 21:00 AEDT in January: quiet until 08:00 AEDT = 21:00 UTC
    slot = earliest_send(utc(2026, 1, 15, 2, 0), utc(2026, 1, 14, 14, 0), Policy(), SYDNEY)
    assert [w.reason for w in slot.waits] == ["frequency_cap", "quiet_hours"]
    assert slot.at == utc(2026, 1, 15, 21, 0)


def test_unknown_or_missing_timezone_uses_the_shop_default():
    policy = policy_with(default_timezone=NY)
    late_utc = utc(2026, 1, 15, 23, 0)  # 18:00 in New York, 23:00 in UTC
    for tz_name in (None, "", "Mars/Olympus_Mons", "../etc/passwd"):
        assert earliest_send(late_utc, None, policy, tz_name).waits == []
    assert earliest_send(late_utc, None, policy, "UTC").at == utc(2026, 1, 16, 8, 0)
    assert resolve_timezone("Europe/Berlin", "UTC") == "Europe/Berlin"
    assert resolve_timezone("Not/AZone", "UTC") == "UTC"


def test_no_cap_configured_and_quiet_hours_disabled():
    no_cap = policy_with(min_hours_between_messages=0)
    assert earliest_send(NOON, NOON - timedelta(minutes=1), no_cap, "UTC") == SendSlot(at=NOON, waits=[])
    no_quiet = policy_with(quiet_hours={"enabled": False})
    slot = earliest_send(NOON, NOON - timedelta(hours=10), no_quiet, "UTC")
    assert slot == SendSlot(
        at=utc(2026, 3, 2, 22, 0), waits=[Wait(reason="frequency_cap", until=utc(2026, 3, 2, 22, 0))]
    )


def test_send_slot_round_trips_as_json():
    slot = earliest_send(NOON, NOON - timedelta(hours=10), Policy(), "UTC")
    assert SendSlot.model_validate_json(slot.model_dump_json()) == slot


# --------------------------------------------------------------------------- properties


ZONES = [
    "UTC",
    NY,
    "America/Los_Angeles",
    "America/Sao_Paulo",  # DST began at midnight until 2019: midnight itself did not exist
    "America/St_Johns",
    "Europe/London",
    "Europe/Berlin",
    SYDNEY,
    "Australia/Lord_Howe",  # half-hour DST shift
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Chatham",
]
moments = st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC))
walls = st.times().map(lambda t: t.replace(microsecond=0))


def _quiet_at(moment: datetime, quiet: QuietHours, zone: str) -> bool:
    wall = moment.astimezone(ZoneInfo(zone)).time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        return quiet.start <= wall < quiet.end
    return wall >= quiet.start or wall < quiet.end


@settings(max_examples=500, deadline=None)
@given(at=moments, start=walls, end=walls, zone=st.sampled_from(ZONES))
def test_quiet_hours_end_properties(at, start, end, zone):
    assume(start != end)
    quiet = QuietHours(start=start, end=end)
    ends = quiet_hours_end(at, quiet, zone)
    assert (ends is not None) == _quiet_at(at, quiet, zone)
    if ends is None:
        return
    assert ends > at
    assert ends - at <= timedelta(hours=25)
    assert not _quiet_at(ends, quiet, zone)  # the window is open at the answer...
    assert _quiet_at(ends - timedelta(microseconds=1), quiet, zone)  # ...and not a moment before
    for k in range(1, 8):  # and it was closed all the way there
        assert _quiet_at(at + (ends - at) * k / 8, quiet, zone)
    # it is when the local clock reads `end`, or the first instant after a gap that skipped it
    local = ends.astimezone(ZoneInfo(zone))
    jumped = local.utcoffset() != (ends - timedelta(seconds=1)).astimezone(ZoneInfo(zone)).utcoffset()
    assert local.time().replace(tzinfo=None) == end or jumped


@settings(max_examples=500, deadline=None)
@given(
    now=moments,
    since_last=st.one_of(st.none(), st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=2))),
    hours=st.sampled_from([0, 1, 20, 24]),
    zone=st.sampled_from(ZONES),
)
def test_earliest_send_properties(now, since_last, hours, zone):
    policy = policy_with(min_hours_between_messages=hours)
    last = None if since_last is None else now - since_last
    slot = earliest_send(now, last, policy, zone)
    assert slot.at >= now
    if last is not None:
        assert slot.at >= last + timedelta(hours=hours)
    assert not _quiet_at(slot.at, policy.quiet_hours, zone)
    if not slot.waits:
        assert slot.at == now
    else:
        assert slot.waits[-1].until == slot.at
        assert [w.until for w in slot.waits] == sorted(w.until for w in slot.waits)
        assert [w.reason for w in slot.waits].count("frequency_cap") <= 1
