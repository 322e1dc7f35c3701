"""Which day a scheduled task works on: the event's ``date``, or the day its schedule implies.

EventBridge Scheduler passes ``<aws.scheduler.scheduled-time>`` (UTC). A day of the data is a
day of the transactions' naive local time, whose zone is a setting (``data_time_zone``,
default UTC). A daily run takes the last day complete, in that zone, at the scheduled instant;
a run over the day under way takes that one. The schedule's own time zone decides when it
fires, never which day: with UTC data, Tokyo's 02:30 is 17:30 UTC the day before, whose
"yesterday" must not be scored before it ended; with Tokyo data it is Tokyo's yesterday.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import cache
from typing import Any

from pydantic import Field, field_validator

from models import contracts as c


@cache
def data_zone(name: str) -> tzinfo:
    """The data's time zone by IANA name; a clear ValueError naming the setting otherwise."""
    try:
        return c.time_zone(name)
    except ValueError as exc:
        raise ValueError(f"data_time_zone: {exc}") from None


class ScheduledSettings(c.EnvSettings):
    """The data's time zone, for a scheduled function's environment (checked at cold start)."""

    data_time_zone: str = Field("UTC", alias=c.ENV_DATA_TIME_ZONE)

    @field_validator("data_time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        data_zone(value)
        return value


def scheduled_time(event: dict[str, Any]) -> datetime | None:
    """The event's ``scheduled_time`` (ISO 8601, ``Z`` allowed), or None."""
    if not event.get("scheduled_time"):
        return None
    try:
        at = datetime.fromisoformat(str(event["scheduled_time"]).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"scheduled_time: {event['scheduled_time']!r} ({exc})") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def local_time(at: datetime, zone: str = "UTC") -> datetime:
    """``at`` as the data's naive local time (what ``tx_datetime`` holds)."""
    return at.astimezone(data_zone(zone)).replace(tzinfo=None)


def run_day(event: dict[str, Any], *, under_way: bool = False, zone: str = "UTC") -> date:
    """``date``, or the last day (of the data's zone) complete at ``scheduled_time`` (the
    day under way when ``under_way``); a clear ValueError naming the field otherwise."""
    if event.get("date"):
        try:
            return date.fromisoformat(str(event["date"]))
        except ValueError:
            raise ValueError(f"date: expected YYYY-MM-DD, got {event['date']!r}") from None
    at = scheduled_time(event)
    if at is not None:
        return local_time(at, zone).date() - timedelta(days=0 if under_way else 1)
    raise ValueError("date: missing (give date=YYYY-MM-DD, or scheduled_time)")
