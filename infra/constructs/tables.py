"""Every rtml DynamoDB table is made the same way: on-demand (stream traffic is bursty),
encrypted, point-in-time recoverable (they hold state that is slow to rebuild), and, where
the stage retains its data (prod), protected from deletion: a retain policy keeps a table
when its stack goes, deletion protection also refuses a console or CLI delete."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER}


def rtml_table(
    scope: Construct,
    construct_id: str,
    *,
    partition_key: tuple[str, str],
    sort_key: tuple[str, str] | None = None,
    ttl_attribute: str | None = None,
    removal_policy: cdk.RemovalPolicy,
) -> dynamodb.TableV2:
    """A table whose keys are ``(name, "S" | "N")``, as models/contracts names them."""
    return dynamodb.TableV2(
        scope,
        construct_id,
        partition_key=dynamodb.Attribute(name=partition_key[0], type=_TYPES[partition_key[1]]),
        sort_key=None
        if sort_key is None
        else dynamodb.Attribute(name=sort_key[0], type=_TYPES[sort_key[1]]),
        billing=dynamodb.Billing.on_demand(),
        encryption=dynamodb.TableEncryptionV2.aws_managed_key(),
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        time_to_live_attribute=ttl_attribute,
        removal_policy=removal_policy,
        deletion_protection=removal_policy == cdk.RemovalPolicy.RETAIN,
    )
