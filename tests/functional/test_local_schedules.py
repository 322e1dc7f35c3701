"""Schedules on the local stack: deployed into moto from a template, fired by `tick` when due."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from infra.local.deployer import Deployer
from infra.local.intrinsics import TemplateError
from infra.local.schedules import due, tick
from tests.functional.conftest import REGION

pytestmark = pytest.mark.functional


@pytest.mark.parametrize(
    ("expression", "at", "expected"),
    [
        ("cron(0 2 * * ? *)", "2018-08-11T02:00", True),
        ("cron(0 2 * * ? *)", "2018-08-11T03:00", False),
        ("cron(0/15 * * * ? *)", "2018-08-11T05:45", True),
        ("cron(0/15 * * * ? *)", "2018-08-11T05:50", False),
        ("cron(0 9 ? * MON-FRI *)", "2018-08-11T09:00", False),  # a Saturday
        ("cron(0 9 ? * MON-FRI *)", "2018-08-13T09:00", True),
        ("rate(1 hour)", "2018-08-11T05:50", True),
        ("at(2018-08-11T05:50:00)", "2018-08-11T05:50", True),
    ],
)
def test_due_follows_aws_schedule_expressions(expression: str, at: str, expected: bool) -> None:
    assert due(expression, datetime.fromisoformat(at).replace(tzinfo=UTC)) is expected


def test_unsupported_expressions_are_refused_by_name() -> None:
    with pytest.raises(TemplateError, match="not supported locally"):
        due("cron(0 0 L * ? *)", datetime.now(UTC))


def test_deployed_schedule_is_fired_by_tick_when_due(aws: None) -> None:
    # given a template with a daily schedule targeting a function, deployed into moto
    template = {
        "Resources": {
            "Nightly": {
                "Type": "AWS::Scheduler::Schedule",
                "Properties": {
                    "ScheduleExpression": "cron(0 2 * * ? *)",
                    "FlexibleTimeWindow": {"Mode": "OFF"},
                    "Target": {
                        "Arn": f"arn:aws:lambda:{REGION}:123456789012:function:batch-plan",
                        "RoleArn": "arn:aws:iam::123456789012:role/scheduler",
                        "Input": '{"run": "nightly"}',
                    },
                },
            }
        }
    }

    def client(service: str) -> Any:
        return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]

    Deployer(client, stack_name="s", region=REGION).deploy(template)
    calls: list[tuple[str, str]] = []

    def invoke(name: str, payload: str) -> Any:
        calls.append((name, payload))
        return {"ok": True}

    def start(arn: str, name: str, payload: str) -> Any:
        raise AssertionError("no state machine target here")

    scheduler = client("scheduler")
    at_two = datetime(2018, 8, 11, 2, 0, tzinfo=UTC)

    # when ticks come at 01:00 and 02:00
    assert tick(scheduler, at_two.replace(hour=1), invoke=invoke, start_execution=start) == []
    fired = tick(scheduler, at_two, invoke=invoke, start_execution=start)

    # then the function got the schedule's input once, at 02:00
    assert calls == [("batch-plan", '{"run": "nightly"}')]
    assert fired[0]["schedule"] == "s-Nightly"
