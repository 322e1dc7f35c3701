"""Private, versioned S3 storage for model artifacts and datasets, plus its access-log bucket."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from constructs import Construct

_ACCESS_LOG_PREFIX = "artifacts/"
"""Key prefix of the artifact bucket's logs, so more buckets can share the log bucket later."""


def private_bucket_settings() -> dict[str, Any]:
    """What both buckets share: SSE-S3, no public access, no ACLs, TLS 1.2+ only.

    (Access-log targets only support SSE-S3, so the artifact bucket uses it too.)
    """
    return {
        "encryption": s3.BucketEncryption.S3_MANAGED,
        "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
        "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
        "enforce_ssl": True,
        "minimum_tls_version": 1.2,
    }


class ArtifactsBucket(Construct):
    """An encrypted, TLS-only, private, versioned bucket whose access logs go to a second bucket.

    Versioning lets a bad model upload be rolled back; access logs give the audit trail that
    cdk-nag (AwsSolutions-S1) asks for. Bucket names are left to CloudFormation so several stages
    can share an account.
    """

    bucket: s3.Bucket
    """Holds model artifacts, registry manifests and datasets."""

    access_logs_bucket: s3.Bucket
    """Receives the server access logs of ``bucket``; objects expire after the retention period."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        removal_policy: cdk.RemovalPolicy,
        access_log_retention: cdk.Duration,
    ) -> None:
        super().__init__(scope, construct_id)

        # Access-log targets only support SSE-S3, and log delivery needs no ACLs with
        # BUCKET_OWNER_ENFORCED because CDK grants it through the bucket policy.
        self.access_logs_bucket = s3.Bucket(
            self,
            "AccessLogs",
            **private_bucket_settings(),
            lifecycle_rules=[s3.LifecycleRule(expiration=access_log_retention)],
            removal_policy=removal_policy,
        )

        self.bucket = s3.Bucket(
            self,
            "Bucket",
            **private_bucket_settings(),
            versioned=True,
            server_access_logs_bucket=self.access_logs_bucket,
            server_access_logs_prefix=_ACCESS_LOG_PREFIX,
            lifecycle_rules=[
                s3.LifecycleRule(abort_incomplete_multipart_upload_after=cdk.Duration.days(7))
            ],
            removal_policy=removal_policy,
        )
