"""The data bucket: datasets, the prediction archive and batch outputs, by key prefix."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.constructs.artifacts_bucket import private_bucket_settings


class DataBucket(Construct):
    """Private, encrypted, TLS-only; access logs into the shared log bucket under ``data/``.

    Not versioned, unlike the artifacts bucket: every writer uses deterministic keys (a rerun
    overwrites its own output), and versions of a data lake would only cost storage.
    """

    bucket: s3.Bucket

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        access_logs: s3.IBucket,
        removal_policy: cdk.RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            **private_bucket_settings(),
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="data/",
            lifecycle_rules=[
                s3.LifecycleRule(abort_incomplete_multipart_upload_after=cdk.Duration.days(7))
            ],
            removal_policy=removal_policy,
        )
