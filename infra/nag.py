"""Every cdk-nag finding rtml acknowledges, with its reason, in one reviewed place.

Constructs call :func:`acknowledge` with rule ids only; the reasons live here, so a review of
this file is a review of every exception to AwsSolutions. An id missing here is an error.
"""

from __future__ import annotations

from typing import Final

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from constructs import IConstruct

API_GATEWAY_LOGS_ROLE: Final = (
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    "AmazonAPIGatewayPushToCloudWatchLogs]"
)

REASONS: Final[dict[str, str]] = {
    "AwsSolutions-L1": (
        "Functions pin python3.12: the serving bundle's wheels and compiled .pyc are built for"
        " it (infra/bundle.py); moving runtime is a deliberate change of the lock and bundle."
    ),
    "AwsSolutions-IAM5[Resource::*]": (
        "X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level"
        " permissions (CDK adds them for active tracing); every other statement is scoped."
    ),
    "AwsSolutions-IAM5[Resource::<Bucket.Arn>/<prefix>/*]": (
        "Object actions on the keys under one prefix of one bucket (the registry, the archive):"
        " S3 object ARNs can only be scoped by prefix."
    ),
    "AwsSolutions-APIG3": (
        "No WAF web ACL: the API is keyed and throttled by its usage plan; a web ACL costs"
        " $5/month plus per request and belongs to the account's edge policy, not this app."
    ),
    "AwsSolutions-APIG4": (
        "Callers are machines holding an API key under a usage plan (auth: api_key); set"
        " auth: iam in cdk.json for SigV4 authorization instead."
    ),
    "AwsSolutions-COG4": (
        "No Cognito user pool: callers are services, not end users (API keys or IAM)."
    ),
    API_GATEWAY_LOGS_ROLE: (
        "The account-level role API Gateway needs to write access and execution logs; AWS's"
        " managed policy is the documented one and is scoped to logs."
    ),
    "AwsSolutions-SQS3": (
        "A terminal dead-letter queue: poison records and failed-batch metadata end here for"
        " an operator to inspect and replay; a queue behind it would only move the problem."
    ),
}


def acknowledge(construct: IConstruct, *rule_ids: str) -> None:
    """Acknowledge findings on ``construct`` with the reasons recorded in :data:`REASONS`."""
    for rule_id in rule_ids:
        if rule_id not in REASONS:
            raise KeyError(f"no reviewed reason for {rule_id}: add it to infra/nag.py")
        cdk.Validations.of(construct).acknowledge(
            cdk.Acknowledgment(id=rule_id, reason=REASONS[rule_id])
        )


def acknowledge_object_prefix(construct: IConstruct, bucket: s3.IBucket, prefix: str) -> None:
    """Acknowledge a grant on ``bucket``'s keys under ``prefix/`` (nag names the bucket's
    logical id in the finding, so the id is built here)."""
    stack = cdk.Stack.of(bucket)
    resource = bucket.node.default_child
    assert isinstance(resource, cdk.CfnElement)
    logical_id = stack.resolve(stack.get_logical_id(resource))
    reason = REASONS["AwsSolutions-IAM5[Resource::<Bucket.Arn>/<prefix>/*]"]
    cdk.Validations.of(construct).acknowledge(
        cdk.Acknowledgment(
            id=f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/{prefix}/*]", reason=reason
        )
    )
