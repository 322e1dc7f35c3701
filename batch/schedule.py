"""Which day a scheduled task works on: the event's ``date``, or the day its schedule implies.

EventBridge Scheduler passes ``<aws.scheduler.scheduled-time>`` (UTC). The data's days are UTC
days: a daily run takes the last one complete at the scheduled instant (the schedule's time
zone decides when it fires, not which day: Tokyo's 02:30 is still the previous UTC day, whose
"yesterday" would be scored before it ended); a run over the day under way takes that one.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any


def scheduled_time(event: dict[str, Any]) -> datetime | None:
    """The event's ``scheduled_time`` (ISO 8601, ``Z`` allowed), or None."""
    if not event.get("scheduled_time"):
        return None
    try:
        return datetime.fromisoformat(str(event["scheduled_time"]).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"scheduled_time: {event['scheduled_time']!r} ({exc})") from None


def run_day(event: dict[str, Any], *, under_way: bool = False) -> date:
    """``date``, or the last UTC day complete at ``scheduled_time`` (the current UTC day
    when ``under_way``); a clear ValueError naming the field otherwise."""
    if event.get("date"):
        try:
            return date.fromisoformat(str(event["date"]))
        except ValueError:
            raise ValueError(f"date: expected YYYY-MM-DD, got {event['date']!r}") from None
    at = scheduled_time(event)
    if at is not None:
        return at.astimezone(UTC).date() - timedelta(days=0 if under_way else 1)
    raise ValueError("date: missing (give date=YYYY-MM-DD, or scheduled_time)")
