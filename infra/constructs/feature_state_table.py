"""The online feature-state table: key schema and TTL from ``models.contracts``.

The runtime adapter (``models/features/dynamodb_store.py``) and the test tables on moto
are built from the same constants, so the deployed table cannot drift from the code.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from infra.constructs.tables import rtml_table
from models.contracts import FEATURE_STATE_PK, FEATURE_STATE_SK, FEATURE_STATE_TTL


class FeatureStateTable(Construct):
    """On-demand, encrypted, point-in-time-recoverable table of per-entity feature state.

    On-demand capacity because stream traffic is bursty; PITR because the state is the
    product of weeks of events (a replay could rebuild it, but slowly); TTL on processing
    time expires entities that went quiet.
    """

    table: dynamodb.TableV2
    """Items: one ``S`` item per entity (its encoded state); busy entities add tile parts."""

    def __init__(
        self, scope: Construct, construct_id: str, *, removal_policy: cdk.RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)
        self.table = rtml_table(
            self,
            "Table",
            partition_key=(FEATURE_STATE_PK, "S"),
            sort_key=(FEATURE_STATE_SK, "S"),
            ttl_attribute=FEATURE_STATE_TTL,
            removal_policy=removal_policy,
        )
