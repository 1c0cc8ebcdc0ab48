"""The business-hours clock: exact examples, then properties checked against an oracle."""

from __future__ import annotations

import time as timer
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.notifications.sla import BusinessCalendar, add_business_hours, is_business_time
from app.settings import Settings

AMS = ZoneInfo("Europe/Amsterdam")
NY = ZoneInfo("America/New_York")
MON_FRI = frozenset(range(5))
EVERY_DAY = frozenset(range(7))
SUNDAY = frozenset({6})
MICROSECOND = timedelta(microseconds=1)


def calendar(
    zone: ZoneInfo = AMS,
    days: frozenset[int] = MON_FRI,
    hours: tuple[time, time | None] = (time(9), time(17)),
    country: str | None = None,
) -> BusinessCalendar:
    return BusinessCalendar(
        zone=zone, days=days, start=hours[0], end=hours[1], holidays=_country(country)
    )


@cache
def _country(code: str | None) -> holidays.HolidayBase | None:
    return holidays.country_holidays(code) if code else None


def local(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone)  # type: ignore[arg-type,misc]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[arg-type,misc]


# --- Exact examples ----------------------------------------------------------------------------


def test_friday_afternoon_rolls_over_the_weekend() -> None:
    start = local(AMS, 2026, 1, 16, 16, 30)  # a Friday, CET (+01:00)
    result = add_business_hours(calendar(), start, 2)
    assert result == local(AMS, 2026, 1, 19, 10, 30)
    assert result.tzinfo is UTC
    assert result == utc(2026, 1, 19, 9, 30)


def test_failure_on_saturday_counts_from_monday_opening() -> None:
    result = add_business_hours(calendar(), local(AMS, 2026, 1, 17, 13, 5), 2)
    assert result == local(AMS, 2026, 1, 19, 11, 0)


def test_start_before_opening_counts_from_opening() -> None:
    result = add_business_hours(calendar(), local(AMS, 2026, 1, 19, 6, 0), 0.5)
    assert result == local(AMS, 2026, 1, 19, 9, 30)


def test_fractional_hours() -> None:
    result = add_business_hours(calendar(), local(AMS, 2026, 1, 19, 16, 45), 0.5)
    assert result == local(AMS, 2026, 1, 20, 9, 15)


def test_tiny_sla_is_positive() -> None:
    start = local(AMS, 2026, 1, 19, 10, 0)
    result = add_business_hours(calendar(), start, 0.001)
    assert result == start.astimezone(UTC) + timedelta(seconds=3.6)
    assert result > start


def test_zero_hours_is_the_start_itself() -> None:
    start = local(AMS, 2026, 1, 17, 13, 5)  # a Saturday
    assert add_business_hours(calendar(), start, 0) == start


def test_window_used_up_exactly_ends_at_closing() -> None:
    result = add_business_hours(calendar(), local(AMS, 2026, 1, 16, 15, 0), 2)
    assert result == local(AMS, 2026, 1, 16, 17, 0)


def test_start_in_another_zone_is_read_in_the_calendar_zone() -> None:
    start = local(NY, 2026, 1, 16, 10, 30)  # = Friday 16:30 in Amsterdam
    assert add_business_hours(calendar(), start, 2) == local(AMS, 2026, 1, 19, 10, 30)


def test_us_holiday_is_skipped() -> None:
    cal = calendar(zone=NY, country="US")
    # Thursday 24 December 2026, 16:00: one hour left; Friday the 25th is Christmas Day.
    result = add_business_hours(cal, local(NY, 2026, 12, 24, 16, 0), 2)
    assert result == local(NY, 2026, 12, 28, 10, 0)
    without_holidays = calendar(zone=NY)
    assert add_business_hours(without_holidays, local(NY, 2026, 12, 24, 16, 0), 2) == local(
        NY, 2026, 12, 25, 10, 0
    )


def test_dst_weekend_spring_forward() -> None:
    # Clocks go forward on Sunday 29 March 2026; Friday is CET (+1), Monday CEST (+2).
    result = add_business_hours(calendar(), local(AMS, 2026, 3, 27, 16, 0), 2)
    assert result == local(AMS, 2026, 3, 30, 10, 0)
    assert result == utc(2026, 3, 30, 8, 0)


def test_dst_weekend_fall_back() -> None:
    result = add_business_hours(calendar(), local(AMS, 2026, 10, 23, 16, 0), 2)
    assert result == local(AMS, 2026, 10, 26, 10, 0)
    assert result == utc(2026, 10, 26, 9, 0)


def test_whole_day_window_on_spring_forward_day_is_23_hours() -> None:
    cal = calendar(days=SUNDAY, hours=(time(0), None))
    saturday = local(AMS, 2026, 3, 28, 12, 0)
    assert add_business_hours(cal, saturday, 23) == utc(2026, 3, 29, 22, 0)  # Monday 00:00 CEST
    assert add_business_hours(cal, saturday, 24) == local(AMS, 2026, 4, 5, 1, 0)


def test_whole_day_window_on_fall_back_day_is_25_hours() -> None:
    cal = calendar(days=SUNDAY, hours=(time(0), None))
    saturday = local(AMS, 2026, 10, 24, 12, 0)
    assert add_business_hours(cal, saturday, 24) == utc(2026, 10, 25, 22, 0)  # Sunday 23:00 CET
    assert add_business_hours(cal, saturday, 25) == utc(2026, 10, 25, 23, 0)  # Monday 00:00 CET
    assert add_business_hours(cal, saturday, 25.5) == local(AMS, 2026, 11, 1, 0, 30)


def test_whole_day_windows_on_every_day_are_plain_elapsed_time() -> None:
    cal = calendar(days=EVERY_DAY, hours=(time(0), None))
    start = local(AMS, 2026, 3, 28, 18, 45, 10)
    # In UTC: adding to an aware local time would be wall-clock arithmetic, blind to the jump.
    assert add_business_hours(cal, start, 100) == start.astimezone(UTC) + timedelta(hours=100)


def test_opening_skipped_by_spring_forward_opens_at_the_jump() -> None:
    cal = calendar(days=EVERY_DAY, hours=(time(2, 30), time(17)))
    # 02:30 does not exist on 29 March 2026: the clock jumps from 02:00 CET to 03:00 CEST.
    result = add_business_hours(cal, local(AMS, 2026, 3, 29, 0, 0), 1)
    assert result == utc(2026, 3, 29, 2, 0)  # 04:00 CEST: opened at 01:00 UTC


def test_opening_repeated_by_fall_back_opens_the_first_time() -> None:
    cal = calendar(days=EVERY_DAY, hours=(time(2, 30), time(17)))
    # 02:30 happens twice on 25 October 2026: first at 00:30 UTC (CEST), then 01:30 UTC (CET).
    result = add_business_hours(cal, local(AMS, 2026, 10, 25, 0, 0), 1)
    assert result == utc(2026, 10, 25, 1, 30)
    assert is_business_time(cal, utc(2026, 10, 25, 0, 30))
    assert not is_business_time(cal, utc(2026, 10, 25, 0, 29, 59))


def test_long_holiday_stretch_is_crossed_quickly() -> None:
    closed = holidays.HolidayBase()
    first = date(2027, 1, 1)
    for offset in range(500):
        closed[first + timedelta(days=offset)] = "Closed"
    cal = BusinessCalendar(zone=AMS, days=MON_FRI, start=time(9), end=time(17), holidays=closed)
    began = timer.perf_counter()
    result = add_business_hours(cal, local(AMS, 2026, 12, 31, 16, 0), 2)
    assert timer.perf_counter() - began < 0.5
    reopening = first + timedelta(days=500)  # Monday 16 May 2028
    assert result == local(AMS, reopening.year, reopening.month, reopening.day, 10, 0)


def test_calendar_without_business_days_in_two_years_is_refused() -> None:
    closed = holidays.HolidayBase()
    for offset in range(3 * 366):
        closed[date(2027, 1, 1) + timedelta(days=offset)] = "Closed"
    cal = BusinessCalendar(zone=AMS, days=MON_FRI, start=time(9), end=time(17), holidays=closed)
    with pytest.raises(ValueError, match="no business hours"):
        add_business_hours(cal, local(AMS, 2027, 1, 1, 10, 0), 1)


def test_naive_start_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_business_hours(calendar(), datetime(2026, 1, 19, 10, 0), 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        is_business_time(calendar(), datetime(2026, 1, 19, 10, 0))


@pytest.mark.parametrize("hours", [-1.0, float("nan"), float("inf")])
def test_invalid_hours_are_refused(hours: float) -> None:
    with pytest.raises(ValueError, match="hours"):
        add_business_hours(calendar(), utc(2026, 1, 19, 10, 0), hours)


def test_invalid_calendars_are_refused() -> None:
    with pytest.raises(ValueError):
        calendar(days=frozenset())
    with pytest.raises(ValueError):
        calendar(days=frozenset({7}))
    with pytest.raises(ValueError):
        calendar(hours=(time(17), time(9)))


def test_is_business_time() -> None:
    cal = calendar(country="NL")
    assert is_business_time(cal, local(AMS, 2026, 1, 19, 9, 0))  # opening included
    assert is_business_time(cal, local(AMS, 2026, 1, 19, 16, 59, 59, 999999))
    assert not is_business_time(cal, local(AMS, 2026, 1, 19, 17, 0))  # closing excluded
    assert not is_business_time(cal, local(AMS, 2026, 1, 17, 12, 0))  # Saturday
    assert not is_business_time(cal, local(AMS, 2026, 4, 27, 12, 0))  # King's Day, a Monday


def test_from_settings() -> None:
    cal = BusinessCalendar.from_settings(
        Settings(
            timezone="Europe/Amsterdam",
            business_days="mon-thu,sat",
            business_hours="08:30-24:00",
            holidays="nl",
        )
    )
    assert cal.zone == AMS
    assert cal.days == frozenset({0, 1, 2, 3, 5})
    assert (cal.start, cal.end) == (time(8, 30), None)
    assert cal.holidays is not None and date(2026, 4, 27) in cal.holidays
    assert BusinessCalendar.from_settings(Settings(holidays=None)).holidays is None


# --- Properties ----------------------------------------------------------------------------------

ZONES = [ZoneInfo(name) for name in ("UTC", "Europe/Amsterdam", "America/New_York", "Asia/Kolkata")]
MINUTES_PER_DAY = 24 * 60


@st.composite
def calendars(draw: st.DrawFn, min_days: int = 1, min_window_minutes: int = 1) -> BusinessCalendar:
    """Calendars whose opening and closing times are whole minutes (so minute slots are exact)."""
    days = draw(st.frozensets(st.integers(0, 6), min_size=min_days))
    # Often in the 02:00-03:00 hour that DST skips or repeats in Amsterdam and New York.
    latest_opening = MINUTES_PER_DAY - min_window_minutes
    opening = draw(st.integers(0, latest_opening) | st.integers(120, min(179, latest_opening)))
    earliest_closing = opening + min_window_minutes
    closing = draw(
        st.integers(earliest_closing, MINUTES_PER_DAY)
        | st.integers(earliest_closing, max(earliest_closing, 179))
    )
    return BusinessCalendar(
        zone=draw(st.sampled_from(ZONES)),
        days=days,
        start=time(opening // 60, opening % 60),
        end=None if closing == MINUTES_PER_DAY else time(closing // 60, closing % 60),
        holidays=_country(draw(st.sampled_from([None, "US", "NL"]))),
    )


# Years with DST changes in every zone used; starts straddle the March and October transitions.
starts = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
# The 2026 DST changes in Amsterdam (01:00 UTC) and New York (07:00 and 06:00 UTC).
TRANSITIONS = [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1), utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)]
near_transitions = st.sampled_from(TRANSITIONS).flatmap(
    lambda instant: st.integers(-4 * 24 * 3600 * 10**6, 6 * 3600 * 10**6).map(
        lambda offset: instant + timedelta(microseconds=offset)
    )
)
right_at_transitions = st.sampled_from(TRANSITIONS).flatmap(
    lambda instant: st.integers(-3 * 3600, 3 * 3600).map(
        lambda offset: instant + timedelta(seconds=offset)
    )
)
any_start = st.one_of(starts, near_transitions, right_at_transitions)
hours = st.floats(min_value=0, max_value=60, allow_nan=False)
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


def business_time_between(cal: BusinessCalendar, begin: datetime, end: datetime) -> timedelta:
    """Business time in [begin, end), integrated over one-minute UTC slots, independently.

    The rule, restated: follow the local clock but never let it go back (the highest local time
    seen so far); an instant is business time when that time is on a working, non-holiday day
    and within the opening hours. All boundaries are whole minutes, so each slot is all in or all
    out. Walking starts a day early so that the highest local time seen so far is right.
    """
    slot = timedelta(minutes=1)
    cursor = (begin - timedelta(hours=26)).replace(second=0, microsecond=0)
    highest: datetime | None = None
    total = timedelta(0)
    while cursor < end:
        wall = cursor.astimezone(cal.zone).replace(tzinfo=None)
        highest = wall if highest is None else max(highest, wall)
        working = highest.weekday() in cal.days and (
            cal.holidays is None or highest.date() not in cal.holidays
        )
        in_hours = cal.start <= highest.time() and (cal.end is None or highest.time() < cal.end)
        overlap = min(cursor + slot, end) - max(cursor, begin)
        if working and in_hours and overlap > timedelta(0):
            total += overlap
        cursor += slot
    return total


@PROPERTY_SETTINGS
@given(cal=calendars(), start=any_start, amount=hours)
def test_result_is_not_before_start_and_ends_inside_business_time(
    cal: BusinessCalendar, start: datetime, amount: float
) -> None:
    result = add_business_hours(cal, start, amount)
    assert result.tzinfo is UTC
    assert result >= start
    if timedelta(hours=amount) > timedelta(0):
        # Inside a window, or exactly at its (excluded) closing instant.
        assert is_business_time(cal, result - MICROSECOND)
    else:
        assert result == start


@PROPERTY_SETTINGS
@given(cal=calendars(), first=any_start, later_by=st.timedeltas(timedelta(0), timedelta(days=9)))
def test_monotonic_in_start(cal: BusinessCalendar, first: datetime, later_by: timedelta) -> None:
    amount = 2.0
    assert add_business_hours(cal, first, amount) <= add_business_hours(
        cal, first + later_by, amount
    )


@PROPERTY_SETTINGS
@given(cal=calendars(min_window_minutes=30), start=any_start, smaller=hours, extra=hours)
def test_monotonic_in_hours(
    cal: BusinessCalendar, start: datetime, smaller: float, extra: float
) -> None:
    assert add_business_hours(cal, start, smaller) <= add_business_hours(
        cal, start, smaller + extra
    )


# Whole milliseconds: float hours that are not whole microseconds round independently, so a sum
# could differ by a microsecond that happens to straddle a closing time (a weekend apart).
millisecond_hours = st.integers(0, 40 * 3_600_000).map(lambda ms: ms / 3_600_000)


@PROPERTY_SETTINGS
@given(cal=calendars(), start=any_start, first=millisecond_hours, second=millisecond_hours)
def test_additive(cal: BusinessCalendar, start: datetime, first: float, second: float) -> None:
    stepwise = add_business_hours(cal, add_business_hours(cal, start, first), second)
    at_once = add_business_hours(cal, start, first + second)
    assert abs(stepwise - at_once) <= MICROSECOND


@settings(max_examples=60, deadline=None)
@given(
    cal=calendars(min_days=3, min_window_minutes=180),
    start=any_start,
    amount=st.floats(min_value=0, max_value=12, allow_nan=False),
)
def test_business_time_between_start_and_result_equals_hours(
    cal: BusinessCalendar, start: datetime, amount: float
) -> None:
    result = add_business_hours(cal, start, amount)
    assert business_time_between(cal, start, result) == timedelta(hours=amount)


@settings(max_examples=100, deadline=None)
@given(cal=calendars(), moment=any_start)
def test_is_business_time_agrees_with_the_oracle(cal: BusinessCalendar, moment: datetime) -> None:
    inside = business_time_between(cal, moment, moment + MICROSECOND) == MICROSECOND
    assert is_business_time(cal, moment) == inside


@st.composite
def around_a_transition(draw: st.DrawFn) -> tuple[BusinessCalendar, datetime]:
    """Every-day calendars opening or closing near the DST hour, and a moment near the change."""
    zone, instant = draw(
        st.sampled_from([(AMS, TRANSITIONS[0]), (AMS, TRANSITIONS[1])])
        | st.sampled_from([(NY, TRANSITIONS[2]), (NY, TRANSITIONS[3])])
    )
    opening = draw(st.integers(0, 200))
    closing = draw(st.integers(opening + 30, 300) | st.just(MINUTES_PER_DAY))
    cal = BusinessCalendar(
        zone=zone,
        days=EVERY_DAY,
        start=time(opening // 60, opening % 60),
        end=None if closing == MINUTES_PER_DAY else time(closing // 60, closing % 60),
    )
    moment = instant + timedelta(microseconds=draw(st.integers(-3 * 3600, 3 * 3600)) * 10**6)
    return cal, moment


@settings(max_examples=100, deadline=None)
@given(case=around_a_transition(), amount=st.floats(min_value=0, max_value=1.5, allow_nan=False))
def test_dst_hour_agrees_with_the_oracle(
    case: tuple[BusinessCalendar, datetime], amount: float
) -> None:
    cal, moment = case
    inside = business_time_between(cal, moment, moment + MICROSECOND) == MICROSECOND
    assert is_business_time(cal, moment) == inside
    result = add_business_hours(cal, moment, amount)
    assert business_time_between(cal, moment, result) == timedelta(hours=amount)
