"""Monitoring as synthesized from the real cdk.json: the monitor function and its schedules,
an alarm per detector and the stream's silence alarm on the alarm topic, the dashboard's
widgets, and the function's least privilege."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from aws_cdk.assertions import Template

from batch.monitor_handler import MonitorSettings
from infra.constructs.monitoring import MONITOR_HANDLER
from infra.settings import EnvSettings
from models import contracts as c

pytestmark = pytest.mark.infra

ENVS = ["dev", "prod"]


def _function(template: Template) -> tuple[str, Mapping[str, Any]]:
    found = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": MONITOR_HANDLER}}
    )
    assert len(found) == 1, sorted(found)
    return next(iter(found.items()))


@pytest.mark.parametrize("env_name", ENVS)
def test_monitor_function_settings_parse_as_the_handler_reads_them(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    _, function = _function(templates[env_name])
    variables = function["Properties"]["Environment"]["Variables"]
    parsed = MonitorSettings.model_validate(
        {k: v if isinstance(v, str) else "token" for k, v in variables.items()}
    )
    monitor = settings[env_name].monitor
    assert parsed.window_days == monitor.window_days
    assert parsed.data_time_zone == settings[env_name].data_time_zone
    assert c.MonitorThresholds.model_validate_json(parsed.thresholds) == monitor.thresholds


@pytest.mark.parametrize("env_name", ENVS)
def test_daily_and_hourly_schedules_invoke_the_monitor(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    logical_id, _ = _function(templates[env_name])
    schedules = [
        s["Properties"]
        for s in templates[env_name].find_resources("AWS::Scheduler::Schedule").values()
        if s["Properties"]["Target"]["Arn"] == {"Fn::GetAtt": [logical_id, "Arn"]}
    ]
    inputs = sorted((json.loads(s["Target"]["Input"]) for s in schedules), key=len)
    assert inputs[0] == {"scheduled_time": "<aws.scheduler.scheduled-time>"}
    if settings[env_name].monitor.hourly:
        assert inputs[1] == {"scheduled_time": "<aws.scheduler.scheduled-time>", "partial": True}
    daily = next(s for s in schedules if "partial" not in s["Target"]["Input"])
    assert daily["ScheduleExpression"] == settings[env_name].monitor.schedule


@pytest.mark.parametrize("env_name", ENVS)
def test_every_detector_and_silence_has_an_alarm_on_the_topic(
    templates: dict[str, Template], env_name: str
) -> None:
    alarms = list(templates[env_name].find_resources("AWS::CloudWatch::Alarm").values())
    by_metric = {a["Properties"].get("MetricName"): a["Properties"] for a in alarms}
    for metric in c.MONITOR_ALARM_METRICS.values():
        alarm = by_metric[metric]
        assert alarm["Namespace"] == "rtml" and alarm["Threshold"] == 0
        assert alarm["Dimensions"] == [{"Name": "service", "Value": "monitor"}]
        assert alarm["AlarmActions"]
    (silence,) = [a["Properties"] for a in alarms if "Metrics" in a["Properties"]
                  and "IncomingRecords" in json.dumps(a["Properties"]["Metrics"])]  # fmt: skip
    expression = next(m["Expression"] for m in silence["Metrics"] if "Expression" in m)
    assert "incoming" in expression and "scored" in expression
    assert silence["AlarmActions"]


@pytest.mark.parametrize("env_name", ENVS)
def test_dashboard_shows_every_path_and_the_monitors_figures(
    templates: dict[str, Template], env_name: str
) -> None:
    (dashboard,) = templates[env_name].find_resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for title in ("Throughput per path", "Errors", "IteratorAge", "Latency percentiles",
                  "Score distribution", "High-risk share", "Model version in service",
                  "Dead letters", "Batch runs", "Largest PSI", "Daily AP", "Alarms"):  # fmt: skip
        assert title in body, title
    for metric in ("Records_scored", "ArrivalLagMax", "HighRiskShare", "MonitorMaxPsi",
                   "BatchMaxPsi", "LabelledAP", "ExecutionsFailed"):  # fmt: skip
        assert metric in body, metric


@pytest.mark.parametrize("env_name", ENVS)
def test_monitor_role_reads_the_archive_and_transactions_and_writes_reports_only(
    templates: dict[str, Template], env_name: str
) -> None:
    template = templates[env_name]
    _, function = _function(template)
    role = function["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = [
        s
        for p in template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
        for s in p["Properties"]["PolicyDocument"]["Statement"]
    ]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str)
                                               else s["Action"])}  # fmt: skip
    assert actions == {"logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject",
                       "s3:PutObject", "s3:ListBucket", "xray:PutTraceSegments",
                       "xray:PutTelemetryRecords"}  # fmt: skip
    for statement in statements:
        if statement["Action"] == "s3:PutObject":
            assert f"/{c.MONITOR_PREFIX}/*" in json.dumps(statement["Resource"])
    # its own day summaries, read back by the next run (listed too: a missing one is a 404)
    summaries = f"{c.MONITOR_PREFIX}/days/*"
    for action in ("s3:GetObject", "s3:ListBucket"):
        granted = [s for s in statements if s["Action"] == action]
        assert any(summaries in json.dumps(s) for s in granted), action
