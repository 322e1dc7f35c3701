"""Schedules on the local stack: created in moto (which stores them and never fires them),
fired by ``rtml local tick [--at TIME]`` as EventBridge Scheduler would at that minute.

A schedule is due at a minute when its expression says so: ``cron(...)`` (the six fields of
AWS's cron: minutes, hours, day of month, month, day of week, year; ``*``, ``?``, ``,``,
``-``, ``/``, ``L`` not supported), ``rate(...)`` (due at every tick: a tick stands for one
period), ``at(yyyy-mm-ddThh:mm:ss)``, in the schedule's timezone (UTC unless set). Its
target gets the schedule's ``Input``: a Lambda function is invoked, a state machine started.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from infra.local.deployer import Created, Deployer, handles, physical_name
from infra.local.intrinsics import TemplateError

_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}
_MONTHS = {
    m: i
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}


@handles(
    "AWS::Scheduler::Schedule", "Name", "Description", "FlexibleTimeWindow", "GroupName",
    "ScheduleExpression", "ScheduleExpressionTimezone", "State", "Target", "StartDate", "EndDate",
)  # fmt: skip
def _schedule(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    name = p.get("Name") or physical_name(d.stack_name, logical_id, limit=64)
    due(p["ScheduleExpression"], datetime.now(UTC), p.get("ScheduleExpressionTimezone"))  # parses
    target = p["Target"]
    args: dict[str, Any] = {
        "Name": name,
        "ScheduleExpression": p["ScheduleExpression"],
        "FlexibleTimeWindow": p.get("FlexibleTimeWindow", {"Mode": "OFF"}),
        "Target": {
            k: v for k, v in target.items() if k in ("Arn", "RoleArn", "Input", "RetryPolicy")
        },
        "State": p.get("State", "ENABLED"),
    }
    if "ScheduleExpressionTimezone" in p:
        args["ScheduleExpressionTimezone"] = p["ScheduleExpressionTimezone"]
    if "GroupName" in p:
        args["GroupName"] = p["GroupName"]
    arn = d.client("scheduler").create_schedule(**args)["ScheduleArn"]
    return Created(name, {"Arn": arn})


def _field(text: str, value: int, low: int, high: int, names: dict[str, int]) -> bool:
    if text in ("*", "?"):
        return True
    for item in text.split(","):
        part, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if part in ("*", ""):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = names.get(a) or int(a), names.get(b) or int(b)
        else:
            start = names.get(part) or int(part)
            end = high if step_text else start
        if start <= value <= end and (value - start) % step == 0:
            return True
    return False


def due(expression: str, at: datetime, timezone: str | None = None) -> bool:
    """Whether a schedule expression fires in the minute of ``at`` (a TemplateError when the
    expression is not one the local stack understands)."""
    local = at.astimezone(ZoneInfo(timezone or "UTC"))
    if match := re.fullmatch(r"rate\((\d+) (minutes?|hours?|days?)\)", expression):
        return True
    if match := re.fullmatch(r"at\((\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\)", expression):
        when = datetime.fromisoformat(match.group(1))
        return when.replace(second=0) == local.replace(tzinfo=None, second=0, microsecond=0)
    if match := re.fullmatch(r"cron\(([^)]*)\)", expression):
        fields = match.group(1).split()
        if len(fields) != 6 or any("L" in f or "W" in f or "#" in f for f in fields):
            raise TemplateError(f"cron expression not supported locally: {expression}")
        minute, hour, dom, month, dow, year = fields
        weekday = (local.isoweekday() % 7) + 1  # AWS: SUN=1 .. SAT=7
        return (
            _field(minute, local.minute, 0, 59, {})
            and _field(hour, local.hour, 0, 23, {})
            and _field(dom, local.day, 1, 31, {})
            and _field(month, local.month, 1, 12, _MONTHS)
            and _field(dow, weekday, 1, 7, _DAYS)
            and _field(year, local.year, 1970, 2199, {})
        )
    raise TemplateError(f"schedule expression not supported locally: {expression}")


def _context_attributes(payload: str, at: datetime, schedule: dict[str, Any]) -> str:
    """EventBridge Scheduler's context attributes in a target's input, as AWS fills them."""
    values = {
        "<aws.scheduler.scheduled-time>": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "<aws.scheduler.schedule-arn>": str(schedule.get("Arn", "")),
        "<aws.scheduler.execution-id>": uuid.uuid4().hex,
        "<aws.scheduler.attempt-number>": "1",
    }
    for name, value in values.items():
        payload = payload.replace(name, value)
    return payload


def tick(
    scheduler: Any,
    at: datetime,
    *,
    invoke: Callable[[str, str], Any],
    start_execution: Callable[[str, str, str], Any],
    fire_all: bool = False,
) -> list[dict[str, Any]]:
    """Fire every enabled schedule due at ``at`` (or all of them); what was fired."""
    fired = []
    for summary in scheduler.list_schedules().get("Schedules", []):
        schedule = scheduler.get_schedule(
            Name=summary["Name"], GroupName=summary.get("GroupName", "default")
        )
        if schedule.get("State", "ENABLED") != "ENABLED":
            continue
        if not fire_all and not due(schedule["ScheduleExpression"], at,
                                    schedule.get("ScheduleExpressionTimezone")):  # fmt: skip
            continue
        target = schedule["Target"]
        payload = _context_attributes(target.get("Input", "{}"), at, schedule)
        arn = target["Arn"]
        if ":lambda:" in arn and ":function:" in arn:
            result = invoke(arn.split(":function:")[1].split(":")[0], payload)
        elif ":states:" in arn:
            result = start_execution(arn, f"tick-{at:%Y%m%dT%H%M}-{uuid.uuid4().hex[:8]}", payload)
        else:
            raise TemplateError(f"schedule {summary['Name']}: target {arn} is not fired locally")
        fired.append({"schedule": summary["Name"], "target": arn,
                      "result": json.loads(json.dumps(result, default=str))})  # fmt: skip
    return fired
