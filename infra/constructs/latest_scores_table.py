"""The latest batch score per customer: written by the batch job, read by the API."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from infra.constructs.tables import rtml_table
from models.contracts import LATEST_SCORES_PK


class LatestScoresTable(Construct):
    """On-demand, encrypted, point-in-time recoverable; one item per customer."""

    table: dynamodb.TableV2

    def __init__(
        self, scope: Construct, construct_id: str, *, removal_policy: cdk.RemovalPolicy
    ) -> None:
        super().__init__(scope, construct_id)
        self.table = rtml_table(
            self, "Table", partition_key=(LATEST_SCORES_PK, "N"), removal_policy=removal_policy
        )
