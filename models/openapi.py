"""The API's OpenAPI 3 document, generated from the pydantic contracts it serves.

``make openapi`` writes it to ``docs/openapi.json``; a test fails when that file drifts from
this code, so the published spec is always the served one (``GET /openapi.json``).
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

from models.contracts import (
    MAX_BATCH_PREDICTIONS,
    BatchPredictionResponse,
    CustomerScore,
    ErrorResponse,
    Prediction,
    PredictionRequest,
    PredictionResponse,
)

API_VERSION: Final = "1.0.0"
ROUTES: Final[tuple[tuple[str, str], ...]] = (
    ("POST", "/v1/predictions"),
    ("POST", "/v1/predictions:batch"),
    ("GET", "/v1/predictions/{transaction_id}"),
    ("GET", "/v1/customers/{customer_id}/score"),
    ("GET", "/v1/models"),
    ("GET", "/v1/health"),
    ("GET", "/openapi.json"),
)
"""Every route the API serves: (method, resource as API Gateway names it)."""


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _id_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 0}}  # fmt: skip


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "The body is not JSON (or empty, or not UTF-8).",
        403: "Missing or invalid API key.",
        404: "Unknown route, or no such prediction.",
        409: "The transaction id was already scored for a different transaction.",
        413: "The body is over 256 KB, or the batch over its limit.",
        422: "A field is missing, unknown, of the wrong type or out of range.",
        429: "Throttled by the usage plan (rate, burst or quota).",
        503: "No model can be loaded, or a store is unavailable (see Retry-After).",
    }
    return {str(s): _json(_ref(ErrorResponse), text[s]) for s in statuses}


def openapi_spec() -> dict[str, Any]:
    """The whole document (deterministic: the same code gives the same bytes)."""
    schemas: dict[str, Any] = {}
    for model in (PredictionRequest, PredictionResponse, BatchPredictionResponse,
                  ErrorResponse, Prediction, CustomerScore):  # fmt: skip
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    batch_request = {
        "type": "object",
        "additionalProperties": False,
        "required": ["transactions"],
        "properties": {
            "transactions": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH_PREDICTIONS,
                "items": _ref(PredictionRequest),
            }
        },
    }
    schemas["BatchPredictionRequest"] = batch_request
    explain = {
        "name": "explain",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean", "default": False},
        "description": "Return the model inputs (features) with each prediction.",
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "rtml predictions",
            "version": API_VERSION,
            "description": (
                "Card-fraud scores with the stream's features and model version. Every "
                "request needs an API key (x-api-key)."
            ),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
        "security": [{"apiKey": []}],
        "paths": {
            "/v1/predictions": {
                "post": {
                    "summary": "Score one transaction",
                    "parameters": [explain],
                    "requestBody": {"required": True, **_json(_ref(PredictionRequest), "")},
                    "responses": {
                        "200": _json(_ref(PredictionResponse), "The decision."),
                        **_errors(400, 403, 409, 413, 422, 429, 503),
                    },
                }
            },
            "/v1/predictions:batch": {
                "post": {
                    "summary": f"Score up to {MAX_BATCH_PREDICTIONS} transactions",
                    "parameters": [explain],
                    "requestBody": {
                        "required": True,
                        **_json({"$ref": "#/components/schemas/BatchPredictionRequest"}, ""),
                    },
                    "responses": {
                        "200": _json(
                            _ref(BatchPredictionResponse),
                            "One result per item, in order: a prediction or its error.",
                        ),
                        **_errors(400, 403, 413, 422, 429, 503),
                    },
                }
            },
            "/v1/predictions/{transaction_id}": {
                "get": {
                    "summary": "The stored prediction of a transaction (stream or API)",
                    "parameters": [_id_parameter("transaction_id")],
                    "responses": {
                        "200": _json(_ref(Prediction), "The stored prediction."),
                        **_errors(403, 404, 422, 429, 503),
                    },
                }
            },
            "/v1/customers/{customer_id}/score": {
                "get": {
                    "summary": "A customer's latest batch score",
                    "parameters": [_id_parameter("customer_id")],
                    "responses": {
                        "200": _json(_ref(CustomerScore), "The latest batch score."),
                        **_errors(403, 404, 422, 429),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "summary": "The model versions serving now",
                    "responses": {
                        "200": _json({"type": "object"}, "Champion, challenger, A/B share."),
                        **_errors(403, 429, 503),
                    },
                }
            },
            "/v1/health": {
                "get": {
                    "summary": "Liveness, and whether a model is loaded",
                    "responses": {"200": _json({"type": "object"}, "ok or degraded")},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3")},
                }
            },
        },
    }
