"""The stream path as synthesized from the real cdk.json: streams, scorer, mappings, sinks,
grants and alarms, checked on every environment's template."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import cx_api
from aws_cdk.assertions import Match, Template

from infra.bundle import bundle_path
from infra.constructs.stream_scoring import DEAD_LETTER_RETENTION, STREAM_HANDLER
from infra.settings import EnvSettings
from lambdas.stream import StreamSettings
from models import contracts as c

pytestmark = pytest.mark.infra

ENVS = ["dev", "prod"]


def _scorer(template: Template) -> Mapping[str, Any]:
    functions = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": STREAM_HANDLER}}
    )
    assert len(functions) == 1, f"expected one stream scorer, found {sorted(functions)}"
    (resource,) = functions.values()
    return resource


def _logical_id(template: Template, kind: str, **props: Any) -> str:
    found = template.find_resources(kind, {"Properties": props} if props else None)
    assert len(found) == 1, f"expected one {kind} with {props}, found {sorted(found)}"
    return next(iter(found))


def _statements(template: Template, role: str | None = None) -> list[dict[str, Any]]:
    """Policy statements (of one role's policies, when named by logical id)."""
    return [
        statement
        for policy in template.find_resources("AWS::IAM::Policy").values()
        if role is None or {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


@pytest.mark.parametrize("env_name", ENVS)
def test_scorer_is_built_by_the_factory_from_settings(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    # given
    env = settings[env_name]
    props = _scorer(templates[env_name])["Properties"]

    # then: runtime, architecture, memory, timeout, JSON logs, tracing from settings
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == [env.functions.architecture]
    assert props["MemorySize"] == env.stream.memory_mb
    assert props["Timeout"] == env.stream.timeout_seconds
    assert props["LoggingConfig"]["LogFormat"] == "JSON"
    assert props["TracingConfig"] == {"Mode": "Active" if env.functions.tracing else "PassThrough"}
    assert props.get("ReservedConcurrentExecutions") == env.stream.reserved_concurrency
    variables = props["Environment"]["Variables"]
    assert variables["POWERTOOLS_SERVICE_NAME"] == "rtml-stream"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "rtml"
    # and its own log group keeps logs as long as the environment says
    log_group = props["LoggingConfig"]["LogGroup"]["Ref"]
    resource = templates[env_name].to_json()["Resources"][log_group]
    assert resource["Properties"]["RetentionInDays"] == env.log_retention_days


@pytest.mark.parametrize("env_name", ENVS)
def test_scorer_environment_satisfies_the_handler_settings(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    # given the variables the template sets (tokens stand in for deploy-time names)
    variables = _scorer(templates[env_name])["Properties"]["Environment"]["Variables"]
    as_strings = {k: v if isinstance(v, str) else f"resolved-{k}" for k, v in variables.items()}

    # when the handler validates them as at a cold start
    parsed = StreamSettings.from_env(as_strings)

    # then every required setting is there and the values are the environment's
    stream = settings[env_name].stream
    assert parsed.threshold == stream.decision_threshold
    assert parsed.max_amount == stream.max_amount
    assert parsed.max_clock_skew_seconds == stream.max_clock_skew_seconds
    assert parsed.prediction_ttl_days == stream.prediction_ttl_days
    assert parsed.archive_prefix == c.ARCHIVE_PREFIX
    registry = variables[c.ENV_REGISTRY]["Fn::Join"][1]
    assert (registry[0], registry[-1]) == ("s3://", f"/{c.REGISTRY_PREFIX}")


@pytest.mark.parametrize("env_name", ENVS)
def test_both_streams_feed_the_scorer_with_the_configured_mapping(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    # given
    template = templates[env_name]
    stream = settings[env_name].stream
    streams = template.find_resources("AWS::Kinesis::Stream")

    # when
    mappings = template.find_resources("AWS::Lambda::EventSourceMapping")

    # then: one mapping per stream, with every setting that decides delivery semantics
    assert len(streams) == 2
    sources = {m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0] for m in mappings.values()}
    assert sources == set(streams)
    for mapping in mappings.values():
        props = mapping["Properties"]
        assert props["StartingPosition"] == "TRIM_HORIZON"
        assert props["BatchSize"] == stream.batch_size
        assert props["MaximumBatchingWindowInSeconds"] == stream.batching_window_seconds
        assert props["ParallelizationFactor"] == stream.parallelization_factor
        assert props["BisectBatchOnFunctionError"] is stream.bisect_on_error
        assert props["MaximumRetryAttempts"] == stream.max_retries
        assert props["MaximumRecordAgeInSeconds"] == stream.max_record_age_seconds
        assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        destination = props["DestinationConfig"]["OnFailure"]["Destination"]
        assert destination["Fn::GetAtt"][1] == "Arn"
        queue = template.to_json()["Resources"][destination["Fn::GetAtt"][0]]
        assert queue["Type"] == "AWS::SQS::Queue"


@pytest.mark.parametrize("env_name", ENVS)
def test_streams_are_encrypted_with_the_configured_capacity(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    stream = settings[env_name].stream
    mode = "ON_DEMAND" if stream.stream_mode == "on_demand" else "PROVISIONED"
    templates[env_name].all_resources_properties(
        "AWS::Kinesis::Stream",
        {
            "StreamEncryption": {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"},
            "StreamModeDetails": {"StreamMode": mode},
            "RetentionPeriodHours": stream.stream_retention_hours,
        },
    )


@pytest.mark.parametrize("env_name", ENVS)
def test_predictions_table_matches_the_runtime_contract(
    templates: dict[str, Template], env_name: str
) -> None:
    templates[env_name].has_resource_properties(
        "AWS::DynamoDB::GlobalTable",
        {
            "KeySchema": [{"AttributeName": c.PREDICTIONS_PK, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": c.PREDICTIONS_PK, "AttributeType": "N"}],
            "BillingMode": "PAY_PER_REQUEST",
            "TimeToLiveSpecification": {"AttributeName": c.PREDICTIONS_TTL, "Enabled": True},
            "Replicas": [
                Match.object_like(
                    {"PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}}
                )
            ],
        },
    )


@pytest.mark.parametrize("env_name", ENVS)
def test_queues_are_encrypted_tls_only_and_keep_messages_14_days(
    templates: dict[str, Template], env_name: str
) -> None:
    # given
    template = templates[env_name]
    queues = template.find_resources("AWS::SQS::Queue")

    # then: the poison queue and the failed-batch queue
    assert len(queues) == 2
    template.all_resources_properties(
        "AWS::SQS::Queue",
        {
            "SqsManagedSseEnabled": True,
            "MessageRetentionPeriod": DEAD_LETTER_RETENTION.to_seconds(),
        },
    )
    tls_only = {
        queue["Ref"]
        for policy in template.find_resources("AWS::SQS::QueuePolicy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Deny"
        and statement["Condition"]["Bool"]["aws:SecureTransport"] == "false"
        for queue in policy["Properties"]["Queues"]
    }
    assert tls_only == set(queues)


@pytest.mark.parametrize("env_name", ENVS)
def test_alarms_watch_iterator_age_errors_and_both_queues_and_notify_the_topic(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    # given
    template = templates[env_name]
    topic = _logical_id(template, "AWS::SNS::Topic")
    alarms = {
        k: a for k, a in template.find_resources("AWS::CloudWatch::Alarm").items()
        if k.startswith("Stream")
    }  # fmt: skip

    # then
    metrics = sorted(a["Properties"]["MetricName"] for a in alarms.values())
    assert metrics == sorted(["IteratorAge", "Errors", *["ApproximateNumberOfMessagesVisible"] * 2])
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic}]
    (age,) = [a for a in alarms.values() if a["Properties"]["MetricName"] == "IteratorAge"]
    assert (
        age["Properties"]["Threshold"]
        == settings[env_name].stream.iterator_age_alarm_seconds * 1000
    )


@pytest.mark.parametrize("env_name", ENVS)
def test_scorer_role_is_least_privilege(templates: dict[str, Template], env_name: str) -> None:
    """Every statement names its actions and its resources; ``*`` only where AWS allows no
    resource (X-Ray), and the tables get exactly the calls the runtime code makes."""
    template = templates[env_name]
    resources = template.to_json()["Resources"]
    role = _scorer(template)["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = _statements(template, role)
    assert statements

    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert not any(a == "*" or a.endswith(":*") for a in _actions(statement)), statement
        if statement["Resource"] == "*":
            assert set(_actions(statement)) == {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}

    def actions_on(logical_id: str) -> set[str]:
        return {
            action
            for s in statements
            for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
            if r == {"Fn::GetAtt": [logical_id, "Arn"]}
            for action in _actions(s)
        }

    tables = {
        r["Properties"]["KeySchema"][0]["AttributeName"]: k
        for k, r in resources.items()
        if r["Type"] == "AWS::DynamoDB::GlobalTable"
    }
    assert actions_on(tables[c.FEATURE_STATE_PK]) == {"dynamodb:BatchGetItem", "dynamodb:PutItem"}
    assert actions_on(tables[c.PREDICTIONS_PK]) == {
        "dynamodb:BatchGetItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:UpdateItem",
    }
    # and S3 object access is confined to the registry and archive prefixes
    object_resources = [
        s["Resource"]["Fn::Join"][1][1]
        for s in statements
        if any(a in ("s3:GetObject", "s3:PutObject") for a in _actions(s))
    ]
    assert sorted(object_resources) == sorted([f"/{c.REGISTRY_PREFIX}/*", f"/{c.ARCHIVE_PREFIX}/*"])


def test_scorer_code_is_the_serving_bundle_byte_for_byte(
    assembly: cx_api.CloudAssembly, settings: dict[str, EnvSettings]
) -> None:
    # given the file assets of every synthesized stack
    root = Path(assembly.directory)
    assets = [
        entry
        for manifest in root.rglob("*.assets.json")
        for entry in json.loads(manifest.read_text())["files"].values()
        if entry["displayName"].endswith("Scorer/Function/Code")
    ]

    # then each scorer ships the zip make bundle built, as is (CDK would zip a directory)
    assert len(assets) == len(settings)
    for entry in assets:
        assert entry["source"]["packaging"] == "file"
        shipped = next(root.rglob(Path(entry["source"]["path"]).name))
        built = {
            hashlib.sha256(bundle_path(env.functions.architecture).read_bytes()).hexdigest()
            for env in settings.values()
        }
        assert hashlib.sha256(shipped.read_bytes()).hexdigest() in built
