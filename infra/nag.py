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
        "X-Ray's PutTraceSegments and PutTelemetryRecords, and the CloudWatch Logs delivery"
        " actions a state machine's logging needs, support no resource-level permissions (CDK"
        " adds them for active tracing and logging); every other statement is scoped."
    ),
    "AwsSolutions-IAM5[Resource::<Function.Arn>:*]": (
        "Step Functions' Lambda task, or EventBridge Scheduler's target role, may invoke the"
        " function's versions and aliases (function ARN plus ':*'); it is still the one"
        " function."
    ),
    "AwsSolutions-IAM5[Resource::<Bucket.Arn>/*]": (
        "A Distributed Map's S3 item reader reads the item file whose key the plan task"
        " puts in the state; CDK scopes it to the bucket, the key is only known at run time."
    ),
    "AwsSolutions-IAM5[Resource::<execution of the batch machine>:*]": (
        "The batch plan asks whether the execution holding a run's lock still runs: the"
        " executions of the one state machine, whose ARNs end in their names."
    ),
    "AwsSolutions-IAM5[Resource::<StateMachine execution>:*]": (
        "The Distributed Map's own policy: describe, stop and redrive the state machine's"
        " child executions, whose ARNs end in their generated names."
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


def _logical_id(element: IConstruct) -> str:
    resource = element.node.default_child
    assert isinstance(resource, cdk.CfnElement)
    stack = cdk.Stack.of(element)
    return str(stack.resolve(stack.get_logical_id(resource)))


def acknowledge_function_versions(construct: IConstruct, function: IConstruct) -> None:
    """Acknowledge the ``<function ARN>:*`` an invoke grant adds (versions and aliases)."""
    reason = REASONS["AwsSolutions-IAM5[Resource::<Function.Arn>:*]"]
    rule = f"AwsSolutions-IAM5[Resource::<{_logical_id(function)}.Arn>:*]"
    cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


def acknowledge_bucket_objects(construct: IConstruct, bucket: s3.IBucket) -> None:
    """Acknowledge an object grant on a whole bucket (an item reader's)."""
    reason = REASONS["AwsSolutions-IAM5[Resource::<Bucket.Arn>/*]"]
    rule = f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::<{_logical_id(bucket)}>/*]"
    cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


def acknowledge_child_executions(
    construct: IConstruct, machine: IConstruct, labels: list[str]
) -> None:
    """Acknowledge a Distributed Map's grants on its child executions (one ARN pattern per
    map label, plus the machine's own executions), as CDK writes them."""
    reason = REASONS["AwsSolutions-IAM5[Resource::<StateMachine execution>:*]"]
    region = cdk.Stack.of(machine).region
    name = '{"Fn::Select":[6,{"Fn::Split":[":",{"Ref":"' + _logical_id(machine) + '"}]}]}'
    for suffix in ["", *(f"/{label}" for label in labels)]:
        rule = (
            f"AwsSolutions-IAM5[Resource::arn:aws:states:{region}:<AWS::AccountId>:execution:"
            f"{name}{suffix}:*]"
        )
        cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


def acknowledge_executions_of(construct: IConstruct, machine_name: str) -> None:
    """Acknowledge a grant on the executions of a named state machine."""
    reason = REASONS["AwsSolutions-IAM5[Resource::<execution of the batch machine>:*]"]
    stack = cdk.Stack.of(construct)
    unresolved = cdk.Token.is_unresolved(stack.partition)
    partition = "<AWS::Partition>" if unresolved else stack.partition
    rule = (
        f"AwsSolutions-IAM5[Resource::arn:{partition}:states:{stack.region}:"
        f"<AWS::AccountId>:execution:{machine_name}:*]"
    )
    cdk.Validations.of(construct).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


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
