"""The on-demand path: a REST API (stage v1) in front of the predictor function.

Explicit resources for every route (models/openapi.py lists them), so the gateway's own
validators run before any invocation: the API key, the usage plan's rate, burst and quota,
and a JSON schema on the request bodies (a batch's ``maxItems``). Gateway responses are JSON
like the function's errors, and an unknown route answers 404 instead of API Gateway's 403
"Missing Authentication Token". Access logs are JSON, execution errors logged, X-Ray on.
"""

from __future__ import annotations

import json

import aws_cdk as cdk
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.constructs.function import RtmlFunction
from infra.nag import API_GATEWAY_LOGS_ROLE, acknowledge
from infra.settings import EnvSettings
from models import contracts as c

API_HANDLER = "lambdas.api.handler"
STAGE = "v1"

GATEWAY_ERRORS: dict[apigw.ResponseType, tuple[str, str, str]] = {
    apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN: ("404", "not_found", "no such route"),
    apigw.ResponseType.INVALID_API_KEY: ("403", "forbidden", "missing or invalid API key"),
    apigw.ResponseType.ACCESS_DENIED: ("403", "forbidden", "$context.error.messageString"),
    apigw.ResponseType.THROTTLED: ("429", "throttled", "too many requests; retry later"),
    apigw.ResponseType.QUOTA_EXCEEDED: ("429", "quota_exceeded", "the daily quota is used up"),
    apigw.ResponseType.BAD_REQUEST_BODY: (
        "400", "bad_request", "$context.error.validationErrorString"
    ),
    apigw.ResponseType.REQUEST_TOO_LARGE: ("413", "payload_too_large", "the body is too large"),
    apigw.ResponseType.INTEGRATION_TIMEOUT: ("504", "timeout", "the prediction timed out"),
    apigw.ResponseType.DEFAULT_5_XX: ("502", "bad_gateway", "$context.error.messageString"),
}  # fmt: skip
"""Gateway answers in the function's error shape: (status, code, message template)."""


def _template(code: str, message: str) -> str:
    """A gateway response body in the function's error shape. ``messageString`` is already a
    quoted JSON string (API Gateway quotes it), so it goes in bare; the rest is quoted."""
    text = message if message == "$context.error.messageString" else json.dumps(message)
    return (
        f'{{"error": {json.dumps(code)}, "message": {text}, "fields": [],'
        f' "request_id": "$context.requestId"}}'
    )


class PredictApi(Construct):
    """The REST API, its key and usage plan, the predictor function, grants and alarms."""

    api: apigw.RestApi
    function: RtmlFunction
    key: apigw.IApiKey | None
    alarms: list[cloudwatch.Alarm]

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EnvSettings,
        feature_state: dynamodb.ITableV2,
        predictions: dynamodb.ITableV2,
        latest_scores: dynamodb.ITableV2,
        registry_bucket: s3.IBucket,
        alarm_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        api_settings, stream = settings.api, settings.stream
        self.function = RtmlFunction(
            self,
            "Predictor",
            settings=settings,
            handler=API_HANDLER,
            service="rtml-api",
            description="Scores transactions on demand with the stream's features and model",
            environment={
                c.ENV_FEATURE_STATE_TABLE: feature_state.table_name,
                c.ENV_PREDICTIONS_TABLE: predictions.table_name,
                c.ENV_SCORES_TABLE: latest_scores.table_name,
                c.ENV_REGISTRY: f"s3://{registry_bucket.bucket_name}/{c.REGISTRY_PREFIX}",
                c.ENV_MODEL_NAME: c.DEFAULT_MODEL_NAME,
                c.ENV_DECISION_THRESHOLD: str(stream.decision_threshold),
                c.ENV_AB_SHARE: str(stream.ab_share),
                c.ENV_MAX_AMOUNT: str(stream.max_amount),
                c.ENV_PREDICTION_TTL_DAYS: str(stream.prediction_ttl_days),
                c.ENV_ALIAS_RECHECK_SECONDS: str(stream.alias_recheck_seconds),
            },
            memory_mb=api_settings.memory_mb,
            timeout_seconds=api_settings.timeout_seconds,
            reserved_concurrency=api_settings.reserved_concurrency,
        )
        self._grant(feature_state, predictions, registry_bucket)
        self.function.role.add_to_policy(
            iam.PolicyStatement(actions=["dynamodb:GetItem"], resources=[latest_scores.table_arn])
        )
        self.api = self._rest_api(settings)
        self._routes(api_settings.auth)
        self.key = self._usage_plan(settings) if api_settings.auth == "api_key" else None
        self.alarms = self._alarms(settings, alarm_topic)

    def _grant(
        self, feature_state: dynamodb.ITableV2, predictions: dynamodb.ITableV2, registry: s3.IBucket
    ) -> None:
        """Read-only on the feature state (the stream owns its writes)."""
        role = self.function.role
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:BatchGetItem"], resources=[feature_state.table_arn]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["dynamodb:BatchGetItem", "dynamodb:BatchWriteItem", "dynamodb:GetItem"],
                resources=[predictions.table_arn],
            )
        )
        self.function.grant_registry_read(registry)

    def _rest_api(self, settings: EnvSettings) -> apigw.RestApi:
        api_settings = settings.api
        access_logs = logs.LogGroup(self, "AccessLogs", removal_policy=settings.cdk_removal_policy)
        cfn_logs = access_logs.node.default_child
        assert isinstance(cfn_logs, logs.CfnLogGroup)
        cfn_logs.retention_in_days = settings.log_retention_days
        cors = (
            apigw.CorsOptions(
                allow_origins=api_settings.cors_origins, allow_methods=["GET", "POST"]
            )
            if api_settings.cors_origins
            else None
        )
        api = apigw.RestApi(
            self,
            "Api",
            description="rtml on-demand fraud predictions",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # API Gateway writes logs through an account-level role: created here (retained),
            # so a fresh account needs no manual step.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=cdk.RemovalPolicy.RETAIN,
            default_cors_preflight_options=cors,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False, http_method=True, ip=True, protocol=True, request_time=True,
                    resource_path=True, response_length=True, status=True, user=False,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                metrics_enabled=True,
                tracing_enabled=settings.functions.tracing,
                throttling_rate_limit=api_settings.rate_limit,
                throttling_burst_limit=api_settings.burst_limit,
            ),
        )  # fmt: skip
        role = api.node.try_find_child("CloudWatchRole")
        if role is not None:
            acknowledge(role, API_GATEWAY_LOGS_ROLE)
        for response_type, (status, code, message) in GATEWAY_ERRORS.items():
            api.add_gateway_response(
                f"Gateway{response_type.response_type.title().replace('_', '')}",
                type=response_type,
                status_code=status,
                response_headers={"Content-Type": "'application/json'"},
                templates={"application/json": _template(code, message)},
            )  # fmt: skip
        acknowledge(api, "AwsSolutions-APIG3")
        return api

    def _routes(self, auth: str) -> None:
        api = self.api
        integration = apigw.LambdaIntegration(self.function.function, proxy=True)
        validator = api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        transaction = api.add_model(
            "Transaction",
            content_type="application/json",
            schema=apigw.JsonSchema(type=apigw.JsonSchemaType.OBJECT),
        )
        batch = api.add_model(
            "Batch",
            content_type="application/json",
            schema=apigw.JsonSchema(
                type=apigw.JsonSchemaType.OBJECT,
                required=["transactions"],
                properties={
                    "transactions": apigw.JsonSchema(
                        type=apigw.JsonSchemaType.ARRAY,
                        min_items=1,
                        max_items=c.MAX_BATCH_PREDICTIONS,
                    )
                },
            ),
        )
        options: dict[str, object] = (
            {"api_key_required": True}
            if auth == "api_key"
            else {"authorization_type": apigw.AuthorizationType.IAM}
        )
        v1 = api.root.add_resource("v1")
        predictions = v1.add_resource("predictions")
        predictions.add_method(
            "POST", integration, request_validator=validator,
            request_models={"application/json": transaction}, **options,  # type: ignore[arg-type]
        )  # fmt: skip
        v1.add_resource("predictions:batch").add_method(
            "POST", integration, request_validator=validator,
            request_models={"application/json": batch}, **options,  # type: ignore[arg-type]
        )  # fmt: skip
        predictions.add_resource("{transaction_id}").add_method(
            "GET", integration, request_validator=validator,
            request_parameters={"method.request.path.transaction_id": True},
            **options,  # type: ignore[arg-type]
        )  # fmt: skip
        v1.add_resource("customers").add_resource("{customer_id}").add_resource("score").add_method(
            "GET",
            integration,
            request_validator=validator,
            request_parameters={"method.request.path.customer_id": True},
            **options,  # type: ignore[arg-type]
        )
        for path in ("models", "health"):
            v1.add_resource(path).add_method("GET", integration, **options)  # type: ignore[arg-type]
        api.root.add_resource("openapi.json").add_method("GET", integration, **options)  # type: ignore[arg-type]
        if auth == "api_key":
            acknowledge(api, "AwsSolutions-APIG4", "AwsSolutions-COG4")
        else:
            acknowledge(api, "AwsSolutions-COG4")

    def _usage_plan(self, settings: EnvSettings) -> apigw.IApiKey:
        """One key (its value generated by API Gateway, never in the template) on a plan."""
        api_settings = settings.api
        plan = self.api.add_usage_plan(
            "UsagePlan",
            description="rtml predictions: per-key rate, burst and quota",
            throttle=apigw.ThrottleSettings(
                rate_limit=api_settings.rate_limit, burst_limit=api_settings.burst_limit
            ),
            quota=(
                apigw.QuotaSettings(limit=api_settings.quota_per_day, period=apigw.Period.DAY)
                if api_settings.quota_per_day
                else None
            ),
        )
        plan.add_api_stage(stage=self.api.deployment_stage)
        key = self.api.add_api_key("Key", description="rtml predictions client key")
        plan.add_api_key(key)
        return key

    def _alarms(self, settings: EnvSettings, topic: sns.ITopic) -> list[cloudwatch.Alarm]:
        api, period = self.api, cdk.Duration.minutes(1)
        errors_4xx = api.metric_client_error(period=period, statistic=cloudwatch.Stats.SUM)
        count = api.metric_count(period=period, statistic=cloudwatch.Stats.SUM)
        alarms = [
            cloudwatch.Alarm(
                self, "ServerErrors",
                alarm_description="The API answered 5xx",
                metric=api.metric_server_error(period=period, statistic=cloudwatch.Stats.SUM),
                threshold=0, evaluation_periods=3, datapoints_to_alarm=2,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            cloudwatch.Alarm(
                self, "ClientErrorRate",
                alarm_description="A high share of requests is refused (4xx)",
                metric=cloudwatch.MathExpression(
                    expression="IF(requests > 0, errors / requests, 0)",
                    using_metrics={"errors": errors_4xx, "requests": count},
                    period=period,
                ),
                threshold=settings.api.error_rate_alarm, evaluation_periods=5,
                datapoints_to_alarm=3,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            cloudwatch.Alarm(
                self, "LatencyP99",
                alarm_description="The API's p99 latency is above its target",
                metric=api.metric_latency(period=period, statistic="p99"),
                threshold=settings.api.latency_alarm_ms, evaluation_periods=5,
                datapoints_to_alarm=3,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
        ]  # fmt: skip
        action = cloudwatch_actions.SnsAction(topic)
        for alarm in alarms:
            alarm.add_alarm_action(action)
        return alarms
