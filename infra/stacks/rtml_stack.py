"""The rtml stack: every resource of one environment, composed from constructs."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from constructs import Construct

from infra.constructs.artifacts_bucket import ArtifactsBucket
from infra.constructs.feature_state_table import FeatureStateTable
from infra.settings import EnvSettings


class RtmlStack(cdk.Stack):
    """The same stack class in every stage; only its ``EnvSettings`` differ."""

    artifacts: ArtifactsBucket
    """Model artifacts and datasets."""

    feature_state: FeatureStateTable
    """Online feature state (per card and terminal)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, settings: EnvSettings, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.artifacts = ArtifactsBucket(
            self,
            "Artifacts",
            removal_policy=settings.cdk_removal_policy,
            access_log_retention=cdk.Duration.days(settings.log_retention_days),
        )
        self.feature_state = FeatureStateTable(
            self, "FeatureState", removal_policy=settings.cdk_removal_policy
        )
