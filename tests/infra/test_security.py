"""Security by AWS's own rules, over every synthesized stage: cfn-lint, least privilege,
encryption at rest, retention and deletion protection in prod, no secret in a template.

cdk-nag's AwsSolutions pack runs in ``test_app.py``; these check what it does not, or state
rtml's own policy more strictly (every statement listed, no wildcard unless the service has
no resource-level permission for the action).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import pytest
from aws_cdk.assertions import Template

ENVS: Final = ["dev", "prod"]

CFN_LINT_ACKNOWLEDGED: Final = {
    "W3005": "CDK adds an explicit DependsOn from each function to its role's default policy, "
    "which also reaches the role through GetAtt: redundant, harmless, and CDK's to emit.",
}
"""cfn-lint warnings accepted on rtml's templates, with the reason (errors: none accepted)."""

_XRAY: Final = "X-Ray has no resource-level permissions"
_VENDED_LOGS: Final = "vended log delivery (Step Functions logging) takes no resource"
STAR_RESOURCE_ACTIONS: Final = {
    **dict.fromkeys(("xray:PutTraceSegments", "xray:PutTelemetryRecords",
                     "xray:GetSamplingRules", "xray:GetSamplingTargets"), _XRAY),
    **dict.fromkeys(("logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
                     "logs:DeleteLogDelivery", "logs:ListLogDeliveries",
                     "logs:PutResourcePolicy", "logs:DescribeResourcePolicies",
                     "logs:DescribeLogGroups"), _VENDED_LOGS),
}  # fmt: skip
"""The only actions granted on ``Resource: *``, each because AWS offers nothing narrower."""

STATEFUL: Final = (
    "AWS::DynamoDB::GlobalTable", "AWS::S3::Bucket", "AWS::Kinesis::Stream", "AWS::SQS::Queue",
    "AWS::KMS::Key", "AWS::Logs::LogGroup",
)  # fmt: skip
"""Resources whose loss loses data: retained in prod, deleted with a dev stack."""


def _json(template: Template) -> dict[str, Any]:
    return dict(template.to_json())


def _statements(template: Template) -> list[tuple[str, dict[str, Any]]]:
    """(role logical id, statement) of every identity policy in the template."""
    found = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        for role in policy["Properties"].get("Roles", []):
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                found.append((role["Ref"], statement))
    for logical_id, role in template.find_resources("AWS::IAM::Role").items():
        for inline in role["Properties"].get("Policies", []):
            found += [(logical_id, s) for s in inline["PolicyDocument"]["Statement"]]
    return found


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize("env_name", ENVS)
def test_cfn_lint_finds_no_error_and_only_acknowledged_warnings(
    templates: dict[str, Template], env_name: str
) -> None:
    from cfnlint.api import ManualArgs, lint

    matches = lint(json.dumps(_json(templates[env_name])),
                   config=ManualArgs(regions=["us-east-1"]))  # fmt: skip
    findings = sorted({(m.rule.id, m.message) for m in matches})
    assert [f for f in findings if f[0] not in CFN_LINT_ACKNOWLEDGED] == []
    assert {rule for rule, _ in findings} <= set(CFN_LINT_ACKNOWLEDGED)


@pytest.mark.parametrize("env_name", ENVS)
def test_no_policy_grants_a_wildcard_action_or_an_unlisted_star_resource(
    templates: dict[str, Template], env_name: str
) -> None:
    statements = _statements(templates[env_name])
    assert statements
    for role, statement in statements:
        actions = _listed(statement["Action"])
        assert statement["Effect"] == "Allow", (role, statement)
        for action in actions:
            assert action != "*" and not action.endswith(":*"), (role, action)
        if "*" in _listed(statement.get("Resource")):
            unlisted = set(actions) - set(STAR_RESOURCE_ACTIONS)
            assert not unlisted, f"{role} gets {sorted(unlisted)} on every resource"


@pytest.mark.parametrize("env_name", ENVS)
def test_only_the_api_gateway_logging_role_uses_a_managed_policy(
    templates: dict[str, Template], env_name: str
) -> None:
    managed = {
        logical_id: role["Properties"]["ManagedPolicyArns"]
        for logical_id, role in templates[env_name].find_resources("AWS::IAM::Role").items()
        if role["Properties"].get("ManagedPolicyArns")
    }
    assert list(managed) == [next(k for k in managed if k.startswith("ApiCloudWatchRole"))]
    assert "AmazonAPIGatewayPushToCloudWatchLogs" in json.dumps(managed)


@pytest.mark.parametrize("env_name", ENVS)
def test_every_store_and_queue_is_encrypted_at_rest(
    templates: dict[str, Template], env_name: str
) -> None:
    template = templates[env_name]
    for stream in template.find_resources("AWS::Kinesis::Stream").values():
        assert stream["Properties"]["StreamEncryption"]["EncryptionType"] == "KMS"
    for table in template.find_resources("AWS::DynamoDB::GlobalTable").values():
        assert table["Properties"]["SSESpecification"]["SSEEnabled"] is True
    for queue in template.find_resources("AWS::SQS::Queue").values():
        props = queue["Properties"]
        assert props.get("SqsManagedSseEnabled") or props.get("KmsMasterKeyId")
    for topic in template.find_resources("AWS::SNS::Topic").values():
        assert topic["Properties"]["KmsMasterKeyId"]
    keys = template.find_resources("AWS::KMS::Key")
    assert keys and all(k["Properties"]["EnableKeyRotation"] is True for k in keys.values())


@pytest.mark.parametrize("env_name", ENVS)
def test_every_table_holding_state_has_point_in_time_recovery(
    templates: dict[str, Template], env_name: str
) -> None:
    tables = templates[env_name].find_resources("AWS::DynamoDB::GlobalTable")
    assert len(tables) == 3
    for table in tables.values():
        for replica in table["Properties"]["Replicas"]:
            assert replica["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]


def test_prod_retains_and_protects_what_holds_data_and_dev_cleans_up(
    templates: dict[str, Template],
) -> None:
    for env_name, policy in (("prod", "Retain"), ("dev", "Delete")):
        resources = _json(templates[env_name])["Resources"]
        stateful = {k: r for k, r in resources.items() if r["Type"] in STATEFUL}
        assert {r["Type"] for r in stateful.values()} == set(STATEFUL)
        for logical_id, resource in stateful.items():
            assert resource.get("DeletionPolicy") == policy, (env_name, logical_id)
            assert resource.get("UpdateReplacePolicy") == policy, (env_name, logical_id)
        for table in (r for r in stateful.values() if r["Type"] == "AWS::DynamoDB::GlobalTable"):
            protected = {bool(replica.get("DeletionProtectionEnabled"))
                         for replica in table["Properties"]["Replicas"]}  # fmt: skip
            assert protected == {env_name == "prod"}


SECRET_LIKE: Final = re.compile(
    r"AKIA[0-9A-Z]{16}|aws_secret_access_key|-----BEGIN [A-Z ]*PRIVATE KEY|"
    r"\"(Password|Secret|Token|ApiKeyValue)\"\s*:",
    re.IGNORECASE,
)


@pytest.mark.parametrize("env_name", ENVS)
def test_no_secret_or_api_key_value_is_in_a_template(
    templates: dict[str, Template], env_name: str
) -> None:
    template = _json(templates[env_name])
    for key in (
        r for r in template["Resources"].values() if r["Type"] == "AWS::ApiGateway::ApiKey"
    ):
        assert "Value" not in key["Properties"], "API Gateway generates the key; none is set"
    assert not SECRET_LIKE.search(json.dumps(template))
    for output in template.get("Outputs", {}).values():
        assert "ApiKey" not in json.dumps(output.get("Value")) or "Ref" in json.dumps(output)


_LOGS: Final = {"logs:CreateLogStream", "logs:PutLogEvents"}
_TRACE: Final = {"xray:PutTelemetryRecords", "xray:PutTraceSegments"}
ROLE_ACTIONS: Final[dict[str, set[str]]] = {
    "StreamScorerRole": _LOGS | _TRACE | {
        "kinesis:DescribeStream", "kinesis:DescribeStreamConsumer",
        "kinesis:DescribeStreamSummary", "kinesis:GetRecords", "kinesis:GetShardIterator",
        "kinesis:ListShards", "kinesis:ListStreams", "kinesis:SubscribeToShard",
        "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:PutItem",
        "dynamodb:UpdateItem", "events:PutEvents", "s3:GetObject", "s3:ListBucket",
        "s3:PutObject", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage",
    },
    "ApiPredictorRole": _LOGS | _TRACE | {
        "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:GetItem", "s3:GetObject",
        "s3:ListBucket",
    },
    "BatchPlanRole": _LOGS | _TRACE | {
        "s3:DeleteObject", "s3:GetObject", "s3:ListBucket", "s3:PutObject",
        "states:DescribeExecution",
    },
    "BatchPartitionRole": _LOGS | _TRACE | {
        "s3:DeleteObject", "s3:GetObject", "s3:ListBucket", "s3:PutObject",
    },
    "BatchChunkRole": _LOGS | _TRACE | {
        "dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "s3:GetObject", "s3:ListBucket",
        "s3:PutObject",
    },
    "BatchFinalizeRole": _LOGS | _TRACE | {
        "s3:DeleteObject", "s3:GetObject", "s3:ListBucket", "s3:PutObject",
    },
    "BatchStateMachineRole": _TRACE | {
        "xray:GetSamplingRules", "xray:GetSamplingTargets", "logs:CreateLogDelivery",
        "logs:DeleteLogDelivery", "logs:DescribeLogGroups", "logs:DescribeResourcePolicies",
        "logs:GetLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy",
        "logs:UpdateLogDelivery", "kms:Decrypt", "kms:GenerateDataKey",
        "lambda:InvokeFunction", "s3:GetObject", "sns:Publish", "states:DescribeExecution",
        "states:RedriveExecution", "states:StartExecution", "states:StopExecution",
    },
    "MonitoringMonitorRole": _LOGS | _TRACE | {
        "s3:GetObject", "s3:ListBucket", "s3:PutObject",
    },
}  # fmt: skip
"""Every action each role holds: a new grant fails here until it is listed (and reviewed).
Narrower checks per path (which prefix, which table) are in each construct's tests."""

SCHEDULER_ROLE_ACTIONS: Final = [{"lambda:InvokeFunction"}, {"states:StartExecution"}]
"""The schedules' roles (the monitor's two schedules share one; the batch job's its own)."""


@pytest.mark.parametrize("env_name", ENVS)
def test_every_role_holds_exactly_its_listed_actions(
    templates: dict[str, Template], env_name: str
) -> None:
    held: dict[str, set[str]] = {}
    for role, statement in _statements(templates[env_name]):
        held.setdefault(re.sub(r"[0-9A-F]{8}$", "", role), set()).update(
            _listed(statement["Action"])
        )
    schedulers = sorted((a for r, a in held.items() if r.startswith("SchedulerRoleForTarget")),
                        key=sorted)  # fmt: skip
    assert schedulers == SCHEDULER_ROLE_ACTIONS
    functions = {r: a for r, a in held.items() if not r.startswith("SchedulerRoleForTarget")}
    assert functions == ROLE_ACTIONS


REPO_SECRET: Final = re.compile(
    r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|"
    r"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}"
)


def test_no_credential_or_private_key_is_committed() -> None:
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True,
                           check=True).stdout.decode().split("\0")  # fmt: skip
    found = []
    for name in filter(None, files):
        path = root / name
        if path.is_file() and path.stat().st_size < 5_000_000:
            text = path.read_bytes().decode("utf-8", errors="ignore")
            found += [f"{name}: {m.group(0)[:12]}..." for m in REPO_SECRET.finditer(text)]
    assert len(files) > 100 and found == []
