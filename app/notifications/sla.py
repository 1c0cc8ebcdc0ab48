"""The business-hours clock: when does a service level of N business hours run out?

A business day is a configured weekday that is not a public holiday. On a business day the
window opens when the local clock first reads the opening time and closes when it first reads
the closing time (or midnight, for `24:00`). Time inside windows is counted as real elapsed time,
so a 00:00-24:00 day is 23 hours long when clocks go forward and 25 when they go back. An
opening or closing time skipped by a DST gap takes effect at the instant of the jump; a time
repeated when clocks go back takes effect the first time the clock shows it.

All arithmetic is in whole microseconds of UTC time.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays

from app.settings import Settings, parse_business_days, parse_business_hours

# A calendar with no business day in this many consecutive days is treated as broken.
MAX_DAYS_WITHOUT_BUSINESS = 2 * 366

_ONE_DAY = timedelta(days=1)
_ONE_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class BusinessCalendar:
    """Where and when support works: time zone, weekdays (Monday = 0), hours and holidays."""

    zone: ZoneInfo
    days: frozenset[int]
    start: time
    end: time | None  # None: the end of the day (24:00)
    holidays: holidays.HolidayBase | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if not self.days or not self.days <= frozenset(range(7)):
            raise ValueError("business days must be a non-empty set of weekdays 0-6")
        if self.start.tzinfo is not None or (self.end is not None and self.end.tzinfo is not None):
            raise ValueError("business hours are local wall-clock times without a time zone")
        if self.end is not None and self.end <= self.start:
            raise ValueError("the end of business hours must be after the start")

    @classmethod
    def from_settings(cls, settings: Settings) -> BusinessCalendar:
        """The calendar configured by ORDERPULSE_TIMEZONE, _BUSINESS_DAYS, _HOURS and _HOLIDAYS."""
        start, end = parse_business_hours(settings.business_hours)
        return cls(
            zone=ZoneInfo(settings.timezone),
            days=parse_business_days(settings.business_days),
            start=start,
            end=end,
            holidays=holidays.country_holidays(settings.holidays) if settings.holidays else None,
        )

    def is_business_day(self, day: date) -> bool:
        """Whether `day` is a working weekday and not a public holiday."""
        if day.weekday() not in self.days:
            return False
        return self.holidays is None or day not in self.holidays

    def window(self, day: date) -> tuple[datetime, datetime]:
        """The UTC instants at which business opens and closes on `day` (which may be equal)."""
        opens = _first_reached(datetime.combine(day, self.start), self.zone)
        if self.end is None:
            closes = _first_reached(datetime.combine(day + _ONE_DAY, time()), self.zone)
        else:
            closes = _first_reached(datetime.combine(day, self.end), self.zone)
        return opens, closes


def add_business_hours(calendar: BusinessCalendar, start: datetime, hours: float) -> datetime:
    """The aware UTC instant `hours` business hours after `start`.

    A start outside business time begins counting at the next opening. A result that uses up a
    window exactly is that window's closing instant. Zero hours returns `start` itself (in UTC).
    """
    cursor = _to_utc(start)
    if not math.isfinite(hours) or hours < 0:
        raise ValueError(f"hours must be a finite number >= 0, got {hours!r}")
    remaining = timedelta(hours=hours)
    if remaining <= timedelta(0):
        return cursor
    for opens, closes in _windows_from(calendar, cursor):
        if closes <= cursor:
            continue
        begin = max(opens, cursor)
        available = closes - begin
        if remaining <= available:
            return begin + remaining
        remaining -= available
    raise AssertionError("unreachable: _windows_from is endless or raises")  # pragma: no cover


def is_business_time(calendar: BusinessCalendar, moment: datetime) -> bool:
    """Whether `moment` (aware, any zone) lies inside a business window (opening included)."""
    instant = _to_utc(moment)
    local_day = instant.astimezone(calendar.zone).date()
    # The window containing an instant belongs to its local date, or to a neighbour when a
    # clock change crosses midnight.
    for day in (local_day - _ONE_DAY, local_day, local_day + _ONE_DAY):
        if calendar.is_business_day(day):
            opens, closes = calendar.window(day)
            if opens <= instant < closes:
                return True
    return False


def _to_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("a timezone-aware datetime is required")
    return moment.astimezone(UTC)


def _windows_from(
    calendar: BusinessCalendar, cursor: datetime
) -> Iterator[tuple[datetime, datetime]]:
    """Non-empty business windows in order, starting with any that may contain `cursor`."""
    day = cursor.astimezone(calendar.zone).date() - _ONE_DAY
    days_without_business = 0
    while True:
        if calendar.is_business_day(day):
            opens, closes = calendar.window(day)
            if opens < closes:
                days_without_business = 0
                yield opens, closes
        days_without_business += 1
        if days_without_business > MAX_DAYS_WITHOUT_BUSINESS:
            raise ValueError(
                f"no business hours within {MAX_DAYS_WITHOUT_BUSINESS} days of {day.isoformat()}"
            )
        day += _ONE_DAY


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _first_reached(wall: datetime, zone: ZoneInfo) -> datetime:
    """The earliest UTC instant at which the local clock in `zone` shows `wall` or later.

    For an ordinary time that is its one instant; for a time repeated when clocks go back, the
    first occurrence; for a time skipped when clocks go forward, the instant of the jump.
    """
    earlier = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    later = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = min(earlier, later), max(earlier, later)
    if _wall(low, zone) >= wall:
        return low
    # `wall` falls in a gap: the clock shows less than `wall` at `low` and more at `high`.
    # Find the jump by bisection (transitions are rare, and at most ~32 steps are needed).
    while high - low > _ONE_MICROSECOND:
        middle = low + (high - low) // 2
        if _wall(middle, zone) >= wall:
            high = middle
        else:
            low = middle
    return high
