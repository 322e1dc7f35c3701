"""API predictor: a thin Powertools handler for API Gateway REST (v1) proxy events.

Routes on the resource API Gateway matched (``event["resource"]``), so the handler serves
exactly the routes the gateway defines (models/openapi.py lists them); the work lives in
``models.api.ApiScoring``. Every error is JSON with a code, the fields at fault and the
request id; nothing internal ever reaches a caller.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from models import contracts as c
from models.api import ApiError, ApiScoring

logger = Logger(service="rtml-api")
metrics = Metrics(namespace="rtml", service="api")
tracer = Tracer(service="rtml-api")


class ApiSettings(c.EnvSettings):
    """The function's environment, validated once (names in models.contracts)."""

    feature_state_table: str = Field(alias=c.ENV_FEATURE_STATE_TABLE)
    predictions_table: str = Field(alias=c.ENV_PREDICTIONS_TABLE)
    registry: str = Field(alias=c.ENV_REGISTRY)
    model_name: str = Field(c.DEFAULT_MODEL_NAME, alias=c.ENV_MODEL_NAME)
    threshold: float = Field(0.5, ge=0, le=1, alias=c.ENV_DECISION_THRESHOLD)
    max_amount: float = Field(c.DEFAULT_MAX_AMOUNT, gt=0, alias=c.ENV_MAX_AMOUNT)
    ab_share: float = Field(0.0, ge=0, le=1, alias=c.ENV_AB_SHARE)
    prediction_ttl_days: int = Field(
        c.DEFAULT_PREDICTION_TTL_DAYS, ge=1, alias=c.ENV_PREDICTION_TTL_DAYS
    )
    alias_recheck_seconds: float = Field(60.0, ge=0, alias=c.ENV_ALIAS_RECHECK_SECONDS)
    scores_table: str | None = Field(None, alias=c.ENV_SCORES_TABLE)


@cache
def service() -> ApiScoring:
    """Clients, loaders and the engine, once per execution environment."""
    import boto3

    from models.aws_sinks import DynamoDBLatestScores, DynamoDBPredictions
    from models.features.dynamodb_store import DynamoDBStateStore
    from models.features.online import OnlineFeatures
    from models.features.spec import SERVED
    from models.registry import open_registry
    from models.serving import ModelRouter

    settings = ApiSettings.from_env()
    dynamodb = boto3.client("dynamodb")
    registry = open_registry(settings.registry, s3_client=boto3.client("s3"))
    return ApiScoring(
        engine=OnlineFeatures(
            DynamoDBStateStore(dynamodb, settings.feature_state_table, size_items=False), SERVED
        ),
        router=ModelRouter.from_registry(
            registry,
            settings.model_name,
            recheck_seconds=settings.alias_recheck_seconds,
            ab_share=settings.ab_share,
        ),
        predictions=DynamoDBPredictions(
            dynamodb, settings.predictions_table, ttl_seconds=settings.prediction_ttl_days * 86_400
        ),
        threshold=settings.threshold,
        max_amount=settings.max_amount,
        latest_scores=(
            DynamoDBLatestScores(dynamodb, settings.scores_table) if settings.scores_table else None
        ),
    )


def _explain(event: dict[str, Any]) -> bool:
    value = (event.get("queryStringParameters") or {}).get("explain", "false")
    return str(value).lower() in ("1", "true", "yes")


def _body(event: dict[str, Any]) -> bytes | str | None:
    body = event.get("body")
    if body is not None and event.get("isBase64Encoded"):
        import base64

        return base64.b64decode(body)
    return body


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


Route = Callable[[dict[str, Any]], Any]
ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "/v1/predictions"): lambda e: service().predict_one(_body(e), explain=_explain(e)),
    ("POST", "/v1/predictions:batch"): lambda e: service().predict_batch(
        _body(e), explain=_explain(e)
    ),
    ("GET", "/v1/predictions/{transaction_id}"): lambda e: service().get(
        (e.get("pathParameters") or {}).get("transaction_id", "")
    ),
    ("GET", "/v1/customers/{customer_id}/score"): lambda e: service().customer_score(
        (e.get("pathParameters") or {}).get("customer_id", "")
    ),
    ("GET", "/v1/models"): lambda e: service().models(),
    ("GET", "/v1/health"): lambda e: service().health(),
    ("GET", "/openapi.json"): lambda e: _openapi(),
}


def _openapi() -> dict[str, Any]:
    from models.openapi import openapi_spec

    return openapi_spec()


def _response(status: int, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps(_dump(body), default=str),
    }


@metrics.log_metrics
@tracer.capture_lambda_handler
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Answer one API Gateway request."""
    request_id = (event.get("requestContext") or {}).get("requestId") or context.aws_request_id
    method, resource = event.get("httpMethod", ""), event.get("resource", "")
    logger.append_keys(request_id=request_id, route=f"{method} {resource}")
    route = ROUTES.get((method, resource))
    try:
        if route is None:
            if any(r == resource for _, r in ROUTES):
                raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {resource}")
            raise ApiError(404, "not_found", f"no route {method} {event.get('path', resource)}")
        result = route(event)
        metrics.add_metric("Requests", MetricUnit.Count, 1)
        return _response(200, result)
    except ApiError as error:
        metrics.add_metric(f"Errors_{error.status}", MetricUnit.Count, 1)
        logger.info("refused", extra={"status": error.status, "code": error.code})
        return _response(error.status, error.body(request_id), error.headers)
    except Exception:  # never a stack trace to a caller: the id finds it in the logs
        logger.exception("unexpected error")
        metrics.add_metric("Errors_500", MetricUnit.Count, 1)
        return _response(
            500,
            ApiError(500, "internal_error", "an unexpected error; quote the request id").body(
                request_id
            ),
        )
