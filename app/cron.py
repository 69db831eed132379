"""Cron arithmetic: the instants a cron expression names in an IANA time zone.

Cron expressions name **local wall-clock times** in the trigger's zone. Each named time
fires once: a time that does not exist (spring forward) fires at the instant it is
shifted to by the gap (02:30 → 03:30 in Europe/Paris, as RFC 5545 and ``zoneinfo`` read
it); a time that exists twice (fall back) fires at its first occurrence only. croniter
does the calendar arithmetic on naive local times; the mapping to instants is ours,
because croniter's own tz handling fires ambiguous times twice. Pure functions: no
database, no clock of their own.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from croniter import croniter
from croniter.croniter import CroniterBadDateError, CroniterError


def check_cron(expression: str) -> str:
    """The expression with single spaces, or ``ValueError`` saying what is wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"A cron expression has 5 fields (minute hour day-of-month month day-of-week); "
            f"this one has {len(fields)}."
        )
    normalised = " ".join(fields)
    try:
        croniter(normalised, datetime(2000, 1, 1))
    except (CroniterError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"Not a valid cron expression: {exc}") from exc
    return normalised


_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


@functools.cache
def _zone_names() -> frozenset[str]:
    """Every IANA zone name this machine knows (system tz database or the tzdata package).

    Not ``localtime`` (a system's own zone, which a server's time zone would silently
    decide) nor ``Factory`` or ``posixrules``: they are files in the database, not zones.
    """
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


def check_timezone(name: str) -> zoneinfo.ZoneInfo:
    """The zone for an IANA name, or ``ValueError``."""
    if name not in _zone_names() and name != "UTC":
        raise ValueError(f"Unknown time zone {name!r}; use an IANA name such as 'Europe/Paris'.")
    return zoneinfo.ZoneInfo(name)


def from_ms(ms: int) -> datetime:
    """Epoch milliseconds → an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(moment: datetime) -> int:
    """An aware datetime → epoch milliseconds."""
    return int(moment.timestamp() * 1000)


def _instant(wall: datetime, zone: zoneinfo.ZoneInfo) -> datetime:
    """The UTC instant a naive local time names (``fold=0``: first of two, gap shifted)."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _offset_bounds(zone: zoneinfo.ZoneInfo, around: datetime) -> tuple[timedelta, timedelta]:
    """The least and greatest UTC offset of ``zone`` within six hours of ``around``.

    Six hours is wider than any DST shift, so every local time whose instant lies near
    ``around`` has an offset between the two.
    """
    offsets = [
        (around + timedelta(hours=hours)).astimezone(zone).utcoffset() or timedelta(0)
        for hours in range(-6, 7)
    ]
    return min(offsets), max(offsets)


def next_fire_time(expression: str, zone: zoneinfo.ZoneInfo, after: datetime) -> datetime:
    """The first instant strictly after ``after`` at which ``expression`` fires in ``zone``.

    Raises ``ValueError`` for an expression that never fires (``0 0 31 2 *``).
    """
    low, _ = _offset_bounds(zone, after)
    # A local time n names the instant n - offset(n) <= n - low, so only n > after + low count.
    candidates = croniter(expression, _naive_utc(after) + low)
    best: datetime | None = None
    best_high = timedelta(0)
    try:
        while True:
            wall = candidates.get_next(datetime)
            if best is not None and wall - best_high > _naive_utc(best):
                return best  # every later local time names a later instant
            moment = _instant(wall, zone)
            if moment > after and (best is None or moment < best):
                best = moment
                _, best_high = _offset_bounds(zone, best)
    except CroniterBadDateError as exc:
        raise ValueError("This cron expression never fires.") from exc


def previous_fire_time(
    expression: str, zone: zoneinfo.ZoneInfo, at_or_before: datetime
) -> datetime | None:
    """The last instant at or before ``at_or_before`` at which ``expression`` fires."""
    _, high = _offset_bounds(zone, at_or_before)
    candidates = croniter(expression, _naive_utc(at_or_before) + high + timedelta(microseconds=1))
    best: datetime | None = None
    best_low = timedelta(0)
    try:
        while True:
            wall = candidates.get_prev(datetime)
            if best is not None and wall - best_low < _naive_utc(best):
                return best  # every earlier local time names an earlier instant
            moment = _instant(wall, zone)
            if moment <= at_or_before and (best is None or moment > best):
                best = moment
                best_low, _ = _offset_bounds(zone, best)
    except CroniterBadDateError:
        return best


def fire_times(
    expression: str, zone: zoneinfo.ZoneInfo, start: datetime, end: datetime
) -> Iterator[datetime]:
    """Every fire instant in ``[start, end]``, in order."""
    moment = start - timedelta(microseconds=1)
    while True:
        try:
            moment = next_fire_time(expression, zone, moment)
        except ValueError:
            return
        if moment > end:
            return
        yield moment
