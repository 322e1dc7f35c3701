"""The batch job as synthesized from the real cdk.json: its three task functions, the state
machine's shape (plan, three Distributed Maps over S3 item files, finalize; retries by error
class; notifications; the run failing with the cause), the schedule, grants and alarms."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from aws_cdk.assertions import Template

from batch.handlers import BatchSettings
from batch.job import STAGES as JOB_STAGES
from infra.constructs.batch_scoring import (
    CHUNK_HANDLER,
    FINALIZE_HANDLER,
    NOT_RETRIED,
    PLAN_HANDLER,
    STAGES,
)
from infra.local.intrinsics import Resolver
from infra.settings import EnvSettings
from models import contracts as c

pytestmark = pytest.mark.infra

ENVS = ["dev", "prod"]
FUNCTIONS = {
    "Plan": PLAN_HANDLER,
    "Partition": CHUNK_HANDLER,
    "Chunk": CHUNK_HANDLER,
    "Finalize": FINALIZE_HANDLER,
}
"""The batch construct's functions (construct id -> handler)."""


def _function(template: Template, name: str) -> tuple[str, Mapping[str, Any]]:
    found = {
        logical_id: resource
        for logical_id, resource in template.find_resources("AWS::Lambda::Function").items()
        if logical_id.startswith(f"Batch{name}Function")
    }
    assert len(found) == 1, f"expected one Batch{name} function, found {sorted(found)}"
    logical_id, resource = next(iter(found.items()))
    assert resource["Properties"]["Handler"] == FUNCTIONS[name]
    return logical_id, resource


def _definition(template: Template) -> dict[str, Any]:
    """The state machine's definition with every token replaced by a readable placeholder."""
    (machine,) = template.find_resources("AWS::StepFunctions::StateMachine").values()
    resolve = Resolver(
        pseudo={"AWS::Partition": "aws", "AWS::Region": "r", "AWS::AccountId": "1"},
        ref=lambda name: f"<{name}>",
        get_att=lambda name, attribute: f"<{name}.{attribute}>",
    )
    definition: dict[str, Any] = json.loads(resolve(machine["Properties"]["DefinitionString"]))
    return definition


def _statements(template: Template, role: str) -> list[dict[str, Any]]:
    return [
        statement
        for policy in template.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    return {
        action
        for s in statements
        for action in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }


def test_the_construct_knows_the_jobs_stages() -> None:
    assert tuple(STAGES) == tuple(JOB_STAGES)


@pytest.mark.parametrize("env_name", ENVS)
def test_task_functions_use_the_batch_bundle_and_satisfy_the_handler_settings(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    batch = settings[env_name].batch
    for name in FUNCTIONS:
        _, function = _function(templates[env_name], name)
        props = function["Properties"]
        assert props["MemorySize"] == batch.memory_mb
        assert props["Timeout"] == batch.timeout_seconds
        variables = props["Environment"]["Variables"]
        # every variable the handlers read is set, and parses (tokens stand in for names)
        resolved = {k: v if isinstance(v, str) else "token" for k, v in variables.items()}
        parsed = BatchSettings.model_validate(resolved)
        assert parsed.prefix == batch.prefix
        assert parsed.max_bytes_per_chunk == batch.max_bytes_per_chunk
        assert parsed.data_time_zone == settings[env_name].data_time_zone
        assert variables[c.ENV_SCORES_TABLE]


@pytest.mark.parametrize("env_name", ENVS)
def test_state_machine_plans_maps_each_stage_from_s3_and_finalizes(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    batch = settings[env_name].batch
    definition = _definition(templates[env_name])
    states = definition["States"]
    order, name = [], definition["StartAt"]
    while name in states and states[name]["Type"] in ("Task", "Map"):
        order.append(name)
        name = states[name].get("Next", "")
    assert order == ["PlanRun", "PartitionStage", "TerminalStage", "CustomerStage", "FinalizeRun"]
    for stage in STAGES:
        stage_map = states[f"{stage.capitalize()}Stage"]
        assert stage_map["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
        reader = stage_map["ItemReader"]
        assert reader["Resource"] == "arn:aws:states:::s3:getObject"
        assert reader["ReaderConfig"] == {"InputType": "JSON"}
        assert reader["Parameters"]["Key.$"] == f"$.plan.items.{stage}"
        assert stage_map["MaxConcurrency"] == batch.max_concurrency
        # only customer chunks may be tolerated: a missing history day or terminal chunk
        # would make every feature silently wrong
        tolerated = batch.tolerated_failure_percentage if stage == "customer" else 0
        assert stage_map.get("ToleratedFailurePercentage", 0) == tolerated
        assert stage_map["ItemSelector"] == {"stage": stage, "item.$": "$$.Map.Item.Value"}
        assert stage_map["ResultPath"] is None  # results stay in S3, not the 256 KB payload
        assert stage_map["Catch"][0]["Next"] == "NotifyRunFailed"


@pytest.mark.parametrize("env_name", ENVS)
def test_chunks_retry_by_error_class_and_notify_naming_the_chunk(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    batch = settings[env_name].batch
    states = _definition(templates[env_name])["States"]
    for stage in STAGES:
        processor = states[f"{stage.capitalize()}Stage"]["ItemProcessor"]["States"]
        task = processor[f"{stage.capitalize()}Chunk"]
        retry = task["Retry"]
        # bad input first, never retried; then the Lambda service; then anything else
        assert retry[0] == {"ErrorEquals": list(NOT_RETRIED), "MaxAttempts": 0}
        assert "Lambda.TooManyRequestsException" in retry[1]["ErrorEquals"]
        assert retry[2]["ErrorEquals"] == ["States.ALL"]
        assert retry[2]["MaxAttempts"] == batch.retry_attempts
        assert retry[2]["IntervalSeconds"] == batch.retry_interval_seconds
        assert retry[2]["JitterStrategy"] == "FULL"
        notify = processor[task["Catch"][0]["Next"]]
        assert notify["Resource"] == "arn:aws:states:::sns:publish"
        message = notify["Parameters"]["Message.$"]
        assert "$.stage" in message and "States.JsonToString($.item)" in message
        assert "$.error.Cause" in message
        assert processor[notify["Next"]]["Type"] == "Fail"
    run_failed = states[states["NotifyRunFailed"]["Next"]]
    assert run_failed == {
        "Type": "Fail",
        "ErrorPath": "$.error.Error",
        "CausePath": "$.error.Cause",
    }


@pytest.mark.parametrize("env_name", ENVS)
def test_state_machine_logs_everything_and_traces(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    (machine,) = templates[env_name].find_resources("AWS::StepFunctions::StateMachine").values()
    props = machine["Properties"]
    assert props["LoggingConfiguration"]["Level"] == "ALL"
    assert props["TracingConfiguration"] == {"Enabled": settings[env_name].functions.tracing}


@pytest.mark.parametrize("env_name", ENVS)
def test_schedule_starts_the_machine_daily_with_its_time(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    batch = settings[env_name].batch
    (machine_id,) = templates[env_name].find_resources("AWS::StepFunctions::StateMachine")
    (props,) = [
        s["Properties"]
        for s in templates[env_name].find_resources("AWS::Scheduler::Schedule").values()
        if s["Properties"]["Target"]["Arn"] == {"Ref": machine_id}
    ]
    assert props["ScheduleExpression"] == batch.schedule
    assert props["ScheduleExpressionTimezone"] == batch.timezone
    assert props["State"] == ("ENABLED" if batch.schedule_enabled else "DISABLED")
    target = props["Target"]
    (machine,) = templates[env_name].find_resources("AWS::StepFunctions::StateMachine")
    assert target["Arn"] == {"Ref": machine}
    assert json.loads(target["Input"]) == {
        "scheduled_time": "<aws.scheduler.scheduled-time>",
        "timezone": batch.timezone,
    }


@pytest.mark.parametrize("env_name", ENVS)
def test_task_roles_are_least_privilege(templates: dict[str, Template], env_name: str) -> None:
    template = templates[env_name]
    base = {
        "logs:CreateLogStream", "logs:PutLogEvents", "s3:GetObject", "s3:PutObject",
        "s3:ListBucket", "xray:PutTraceSegments", "xray:PutTelemetryRecords",
    }  # fmt: skip
    extra = {
        "Plan": {"s3:DeleteObject", "states:DescribeExecution"},
        "Partition": {"s3:DeleteObject"},
        "Chunk": {"dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"},
        "Finalize": {"s3:DeleteObject"},
    }
    for name in FUNCTIONS:
        _, function = _function(template, name)
        role = function["Properties"]["Role"]["Fn::GetAtt"][0]
        statements = _statements(template, role)
        assert _actions(statements) == base | extra[name], name
        for statement in statements:
            if "xray:PutTraceSegments" not in _actions([statement]):
                assert statement["Resource"] != "*", statement
            if "s3:DeleteObject" in _actions([statement]):
                # the source only for the partition split (quarantine), else the job's prefix
                prefix = c.TRANSACTIONS_PREFIX if name == "Partition" else "batch"
                assert json.dumps(statement["Resource"]).count(f"/{prefix}/*") == 1, name


@pytest.mark.parametrize("env_name", ENVS)
def test_alarms_watch_failed_and_timed_out_runs_and_drift(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    alarms = templates[env_name].find_resources("AWS::CloudWatch::Alarm")
    by_metric = {a["Properties"].get("MetricName"): a["Properties"] for a in alarms.values()}
    assert by_metric["ExecutionsFailed"]["Threshold"] == 0
    assert by_metric["ExecutionsTimedOut"]["Threshold"] == 0
    drift = by_metric["BatchMaxPsi"]
    assert drift["Threshold"] == settings[env_name].batch.drift_alarm_psi
    assert drift["Namespace"] == "rtml"
    assert drift["Dimensions"] == [{"Name": "service", "Value": "batch"}]
    for name in ("BatchMissingBuckets", "BatchQuarantinedParts"):
        assert by_metric[name]["Threshold"] == 0
    if settings[env_name].batch.schedule_enabled:
        missing_run = by_metric["ExecutionsSucceeded"]
        assert missing_run["ComparisonOperator"] == "LessThanThreshold"
        assert missing_run["TreatMissingData"] == "breaching"
    for name in by_metric:
        assert by_metric[name]["AlarmActions"], name
