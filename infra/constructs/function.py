"""The Lambda factory: every rtml function is built here, the same way.

python3.12 on the architecture from settings, a bundle as code (serving, or batch) (built by
``make bundle``, never at synth), JSON logs into a log group of its own with the
environment's retention, X-Ray tracing, Powertools' settings as environment variables, and a
role of its own holding only what the function's construct grants it (no managed policy, so
no wildcard from AWSLambdaBasicExecutionRole).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.bundle import Kind, require_bundle
from infra.nag import acknowledge, acknowledge_object_prefix
from infra.settings import EnvSettings
from models.contracts import REGISTRY_PREFIX

RUNTIME = lambda_.Runtime.PYTHON_3_12
"""The runtime the bundle is built for (see ``infra.bundle.PYTHON_VERSION``)."""

METRICS_NAMESPACE = "rtml"
"""CloudWatch namespace of every EMF metric the functions publish."""

_ARCHITECTURES = {"arm64": lambda_.Architecture.ARM_64, "x86_64": lambda_.Architecture.X86_64}


class RtmlFunction(Construct):
    """One function with its log group and role; grant to ``role`` (or ``function``)."""

    function: lambda_.Function
    log_group: logs.LogGroup
    role: iam.Role

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EnvSettings,
        handler: str,
        service: str,
        description: str,
        environment: Mapping[str, str] | None = None,
        memory_mb: int = 512,
        timeout_seconds: int = 30,
        reserved_concurrency: int | None = None,
        bundle: Kind = "serving",
    ) -> None:
        super().__init__(scope, construct_id)
        functions = settings.functions
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            removal_policy=settings.cdk_removal_policy,
        )
        # RetentionDays has no member per day count; settings already allow only valid ones.
        cfn_log_group = self.log_group.node.default_child
        assert isinstance(cfn_log_group, logs.CfnLogGroup)
        cfn_log_group.retention_in_days = settings.log_retention_days
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"rtml {service}: only what its construct grants",
        )
        # The log group exists before the function, so the function never needs CreateLogGroup.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=_ARCHITECTURES[functions.architecture],
            code=lambda_.Code.from_asset(str(require_bundle(functions.architecture, kind=bundle))),
            handler=handler,
            description=description,
            role=self.role,
            memory_size=memory_mb,
            timeout=cdk.Duration.seconds(timeout_seconds),
            reserved_concurrent_executions=reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE if functions.tracing else lambda_.Tracing.DISABLED,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel(functions.log_level.upper()),
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            log_group=self.log_group,
            environment={
                "POWERTOOLS_SERVICE_NAME": service,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                "POWERTOOLS_LOG_LEVEL": functions.log_level,
                "POWERTOOLS_TRACE_DISABLED": "false" if functions.tracing else "true",
                **(environment or {}),
            },
        )
        acknowledge(self.function, "AwsSolutions-L1")
        if functions.tracing:
            acknowledge(self.role, "AwsSolutions-IAM5[Resource::*]")

    def grant_prefixes(
        self, bucket: s3.IBucket, *, read: Sequence[str], write: Sequence[str] = ()
    ) -> None:
        """Get and list the keys under ``read`` prefixes, put under ``write`` ones: one
        statement each, so a role's policy reads as the code's S3 calls."""
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[bucket.arn_for_objects(f"{prefix}/*") for prefix in read],
            )
        )
        if write:
            self.role.add_to_policy(
                iam.PolicyStatement(
                    actions=["s3:PutObject"],
                    resources=[bucket.arn_for_objects(f"{prefix}/*") for prefix in write],
                )
            )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}/*" for prefix in read]}},
            )
        )
        for prefix in dict.fromkeys([*read, *write]):
            acknowledge_object_prefix(self.role, bucket, prefix)

    def grant_registry_read(self, registry: s3.IBucket) -> None:
        """Read the model registry (``GetObject`` and a prefix-scoped ``ListBucket``), as
        ``ModelLoader`` does; every serving and batch function needs exactly this."""
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[registry.arn_for_objects(f"{REGISTRY_PREFIX}/*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[registry.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{REGISTRY_PREFIX}/*"]}},
            )
        )
        acknowledge_object_prefix(self.role, registry, REGISTRY_PREFIX)
