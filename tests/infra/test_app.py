"""The CDK app built from the real cdk.json context: stages, bucket properties, settings, cdk-nag.

The app is synthesized once per session (tests/infra/conftest.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk import cx_api
from aws_cdk.assertions import Match, Template

from infra.app import build_app, failed_validations
from infra.settings import ENVIRONMENTS_CONTEXT_KEY, SettingsError
from infra.stage import RtmlStage

pytestmark = pytest.mark.infra

CDK_JSON = Path(__file__).resolve().parents[2] / "cdk.json"
NAG_PLUGIN = "AwsSolutions"
REQUIRED_KEYS = ("stage_name", "removal_policy", "log_retention_days")


def _stack_names(assembly: cx_api.CloudAssembly) -> set[str]:
    return {stack.stack_name for stack in assembly.stacks_recursively}


def _validation_report(directory: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((Path(directory) / "validation-report.json").read_text())
    return report


def _denies_insecure_transport(document: dict[str, Any]) -> bool:
    """Whether a bucket policy denies every request not made over TLS."""
    return any(
        statement["Effect"] == "Deny"
        and statement.get("Principal") == {"AWS": "*"}
        and statement.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        for statement in document["Statement"]
    )


def _nag_errors(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(rule, construct path) of every unacknowledged cdk-nag error in a validation report."""
    return [
        (violation["ruleName"], construct["constructPath"])
        for plugin in report["pluginReports"]
        if plugin["pluginName"] == NAG_PLUGIN
        for violation in plugin["violations"]
        if violation["severity"] == "error"
        for construct in violation["violatingConstructs"]
    ]


# --- stages -------------------------------------------------------------------------------


def test_app_synthesizes_one_stack_per_environment(
    assembly: cx_api.CloudAssembly, environments: dict[str, dict[str, Any]]
) -> None:
    # given the cdk.json environments, when the app synthesizes with no env selected
    expected = {f"rtml-{entry['stage_name']}" for entry in environments.values()}

    # then every environment has its stack
    assert _stack_names(assembly) == expected


def test_app_env_context_selects_only_that_stage(context: dict[str, Any]) -> None:
    # given the equivalent of `cdk synth -c env=dev`
    app = build_app({**context, "env": "dev"})

    # when
    assembly = app.synth()

    # then
    assert _stack_names(assembly) == {"rtml-dev"}


# --- the artifacts bucket -----------------------------------------------------------------


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_artifacts_bucket_is_encrypted_private_versioned_and_logged(
    templates: dict[str, Template], env_name: str
) -> None:
    # when / then
    templates[env_name].has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": Match.any_value()}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "VersioningConfiguration": {"Status": "Enabled"},
            "LoggingConfiguration": {"DestinationBucketName": Match.any_value()},
        },
    )


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_every_bucket_is_encrypted_and_denies_insecure_transport(
    templates: dict[str, Template], env_name: str
) -> None:
    # given
    template = templates[env_name]
    buckets = template.find_resources("AWS::S3::Bucket")

    # when
    tls_only = {
        policy["Properties"]["Bucket"]["Ref"]
        for policy in template.find_resources("AWS::S3::BucketPolicy").values()
        if _denies_insecure_transport(policy["Properties"]["PolicyDocument"])
    }

    # then: the artifact, data and access-log buckets are all encrypted and TLS-only
    assert len(buckets) == 3
    assert tls_only == set(buckets)
    template.all_resources_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": Match.any_value(),
            "PublicAccessBlockConfiguration": Match.any_value(),
        },
    )


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_buckets_follow_the_environment_removal_policy_and_log_retention(
    templates: dict[str, Template], environments: dict[str, dict[str, Any]], env_name: str
) -> None:
    # given
    entry = environments[env_name]
    policy = {"destroy": "Delete", "retain": "Retain"}[entry["removal_policy"]]

    # then
    template = templates[env_name]
    template.all_resources(
        "AWS::S3::Bucket", {"DeletionPolicy": policy, "UpdateReplacePolicy": policy}
    )
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "LifecycleConfiguration": {
                "Rules": [{"ExpirationInDays": entry["log_retention_days"], "Status": "Enabled"}]
            }
        },
    )


@pytest.mark.parametrize("env_name", ["dev", "prod"])
def test_every_bucket_carries_project_and_environment_tags(
    templates: dict[str, Template], environments: dict[str, dict[str, Any]], env_name: str
) -> None:
    # given
    stage_name = environments[env_name]["stage_name"]

    # then
    templates[env_name].all_resources_properties(
        "AWS::S3::Bucket",
        {
            "Tags": Match.array_with(
                [{"Key": "environment", "Value": stage_name}, {"Key": "project", "Value": "rtml"}]
            )
        },
    )


# --- cdk-nag ------------------------------------------------------------------------------


def test_cdk_nag_reports_no_unsuppressed_errors(assembly: cx_api.CloudAssembly) -> None:
    """The report lists only plugins with findings; the next test proves the plugin does run."""
    # given the module's synth, when reading its validation report
    report = _validation_report(assembly.directory)

    # then: no cdk-nag error, and nothing else that `python -m infra.app` would fail on
    assert _nag_errors(report) == []
    assert failed_validations(assembly.directory) == []


def test_cdk_nag_fails_synth_on_a_non_compliant_bucket_in_a_stage(
    context: dict[str, Any], tmp_path: Path
) -> None:
    # given a bare bucket (no access logs, no TLS-only policy) inside a stage's stack
    app = build_app({**context, "env": "dev"}, outdir=str(tmp_path))
    stage = next(child for child in app.node.children if isinstance(child, RtmlStage))
    s3.Bucket(stage.stack, "NonCompliant")

    # when
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()

    # then the findings name the bucket: the plugin reaches stacks nested in stages
    errors = _nag_errors(_validation_report(str(tmp_path)))
    assert ("AwsSolutions-S1", "dev/Rtml/NonCompliant/Resource") in errors
    assert ("AwsSolutions-S10", "dev/Rtml/NonCompliant/Resource") in errors
    # and the check the app's entry point runs after a CLI synth reports them too
    assert any(
        line.startswith("AwsSolutions: ERROR AwsSolutions-S1 at dev/Rtml/NonCompliant/")
        for line in failed_validations(tmp_path)
    )


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_build_app_missing_environment_key_fails_naming_it(
    context: dict[str, Any], key: str
) -> None:
    # given
    broken = copy.deepcopy(context)
    del broken[ENVIRONMENTS_CONTEXT_KEY]["prod"][key]

    # when / then: even with only dev selected, a broken prod entry fails fast
    with pytest.raises(
        SettingsError, match=rf"rtml:environments\.prod.*missing required key '{key}'"
    ):
        build_app({**broken, "env": "dev"})


def test_build_app_without_environments_context_fails(context: dict[str, Any]) -> None:
    broken = {k: v for k, v in context.items() if k != ENVIRONMENTS_CONTEXT_KEY}

    with pytest.raises(SettingsError, match=r"missing required key 'rtml:environments'"):
        build_app(broken)


def test_build_app_unknown_env_fails_listing_known_ones(context: dict[str, Any]) -> None:
    with pytest.raises(SettingsError, match=r"unknown environment 'qa'.*known: dev, prod"):
        build_app({**context, "env": "qa"})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("log_retention_days", 8, "not a CloudWatch Logs retention period"),
        ("log_retention_days", "7", "valid integer"),
        ("removal_policy", "snapshot", "removal_policy"),
        ("retention", 7, "unknown key 'retention'"),
        ("stream", {"stream_mode": "provisioned"}, "'shards' is required"),
        ("stream", {"shards": 2}, "'shards' applies only"),
        ("stream", {"batch_size": 0}, r"stream\.batch_size"),
        ("functions", {"architecture": "sparc"}, r"functions\.architecture"),
        ("data_time_zone", "Mars/Olympus", r"data_time_zone.*not an IANA time zone"),
        ("batch", {"timezone": "CET+1"}, r"batch\.timezone.*not an IANA time zone"),
    ],
)
def test_build_app_invalid_environment_value_fails(
    context: dict[str, Any], key: str, value: object, message: str
) -> None:
    broken = copy.deepcopy(context)
    broken[ENVIRONMENTS_CONTEXT_KEY]["dev"][key] = value

    with pytest.raises(SettingsError, match=message):
        build_app(broken)


def test_feature_state_table_matches_the_runtime_contract(templates: dict[str, Template]) -> None:
    # The key schema and TTL come from models.contracts, as the runtime adapter's do.
    from models.contracts import FEATURE_STATE_PK, FEATURE_STATE_SK, FEATURE_STATE_TTL

    for template in templates.values():
        template.has_resource_properties(
            "AWS::DynamoDB::GlobalTable",
            {
                "KeySchema": [
                    {"AttributeName": FEATURE_STATE_PK, "KeyType": "HASH"},
                    {"AttributeName": FEATURE_STATE_SK, "KeyType": "RANGE"},
                ],
                "BillingMode": "PAY_PER_REQUEST",
                "TimeToLiveSpecification": {"AttributeName": FEATURE_STATE_TTL, "Enabled": True},
                "Replicas": [
                    Match.object_like(
                        {"PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}}
                    )
                ],
            },
        )


def test_feature_state_table_has_the_schema_of_the_runtime_tables(
    templates: dict[str, Template], monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the table the runtime code creates on moto (functional tests, local stack)
    import boto3
    from moto import mock_aws

    from models.contracts import FEATURE_STATE_PK
    from models.features.dynamodb_store import create_table

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        create_table(client, "t")
        described = client.describe_table(TableName="t")["Table"]
        ttl = client.describe_time_to_live(TableName="t")["TimeToLiveDescription"]
    # then the synthesized table has the same keys, attribute types and TTL attribute
    tables = templates["dev"].find_resources("AWS::DynamoDB::GlobalTable")
    (props,) = [
        t["Properties"]
        for t in tables.values()
        if t["Properties"]["KeySchema"][0]["AttributeName"] == FEATURE_STATE_PK
    ]
    assert props["KeySchema"] == described["KeySchema"]
    assert sorted(props["AttributeDefinitions"], key=str) == sorted(
        described["AttributeDefinitions"], key=str
    )
    assert props["TimeToLiveSpecification"]["AttributeName"] == ttl["AttributeName"]
