"""The API predictor's real handler on moto, called with API Gateway REST (v1) proxy events:
the happy path, every error class, batches with bad items, routing, hot swaps, and a
prediction written by the stream read back by id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from models import contracts as c
from models.aws_sinks import create_latest_scores_table, create_predictions_table
from models.features import dynamodb_store as ddb
from models.registry import ModelRegistry, open_registry
from tests.functional.conftest import REGION
from tests.functional.test_stream_handler import Context, kinesis_event
from tests.unit.test_scorer import save

pytestmark = pytest.mark.functional
STATE, PREDICTIONS, BUCKET, SCORES = "state", "predictions", "rtml-api-test", "scores"
NAME = "fraud-test"


@dataclass
class World:
    dynamodb: Any
    registry: ModelRegistry
    api: Any
    versions: list[str]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    paths = []
    for seed in (1, 2):
        path = tmp_path_factory.mktemp(f"model{seed}")
        save(path, "logistic_regression", seed=seed)
        paths.append(path)
    return paths


@pytest.fixture
def world(aws: None, artifacts: list[Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    ddb.create_table(dynamodb, STATE)
    create_predictions_table(dynamodb, PREDICTIONS)
    create_latest_scores_table(dynamodb, SCORES)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(
        Bucket=BUCKET,
        CreateBucketConfiguration={"LocationConstraint": REGION},  # type: ignore[typeddict-item]
    )
    registry = open_registry(f"s3://{BUCKET}/registry", s3_client=s3)
    versions = [registry.push(path).version for path in artifacts]
    registry.promote(NAME, versions[0], "champion")
    env = {
        c.ENV_FEATURE_STATE_TABLE: STATE,
        c.ENV_PREDICTIONS_TABLE: PREDICTIONS,
        c.ENV_REGISTRY: f"s3://{BUCKET}/registry",
        c.ENV_MODEL_NAME: NAME,
        c.ENV_DECISION_THRESHOLD: "0.5",
        c.ENV_ALIAS_RECHECK_SECONDS: "0",
        c.ENV_SCORES_TABLE: SCORES,
        "POWERTOOLS_METRICS_NAMESPACE": "rtml-test",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from lambdas import api

    api.service.cache_clear()
    yield World(dynamodb, registry, api, versions)
    api.service.cache_clear()


def rest_event(
    method: str,
    resource: str,
    *,
    body: Any = None,
    raw: str | None = None,
    path_parameters: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event (v1), as the gateway sends it."""
    path = resource
    for key, value in (path_parameters or {}).items():
        path = path.replace("{" + key + "}", value)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", "x-api-key": "k"},
        "multiValueHeaders": {},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/v1{path}",
            "stage": "v1",
            "requestId": "req-42",
            "identity": {"apiKey": "k", "apiKeyId": "key-id", "sourceIp": "203.0.113.9"},
        },
        "body": raw if raw is not None else (None if body is None else json.dumps(body)),
        "isBase64Encoded": False,
    }


def call(world: World, event: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    response = world.api.handler(event, Context())
    return response["statusCode"], json.loads(response["body"]), response["headers"]


def tx(tx_id: int | None = 1, **extra: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "transaction_id": tx_id,
        "tx_datetime": "2018-04-01T12:00:00",
        "customer_id": 3,
        "terminal_id": 7,
        "tx_amount": 25.5,
        **extra,
    }
    return {k: v for k, v in fields.items() if v is not None}


def test_api_scores_stores_and_reads_back_a_transaction(world: World) -> None:
    # when
    status, body, _ = call(
        world, rest_event("POST", "/v1/predictions", body=tx(11), query={"explain": "true"})
    )

    # then a decision from the champion, stored, with its features on request
    assert status == 200, body
    assert body["transaction_id"] == 11 and body["stored"] is True
    assert body["model_version"] == world.versions[0]
    assert body["decision"] in ("high_risk", "low_risk")
    assert body["features"]["TX_AMOUNT"] == 25.5
    assert body["features"]["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1  # itself, as the stream
    # and GET by id returns the stored prediction
    status, stored, _ = call(
        world,
        rest_event(
            "GET", "/v1/predictions/{transaction_id}", path_parameters={"transaction_id": "11"}
        ),
    )
    assert status == 200
    assert stored["score"] == body["score"] and stored["path"] == "api"


def test_api_without_id_or_time_scores_now_and_stores_nothing(world: World) -> None:
    request = {"customer_id": 3, "terminal_id": 7, "tx_amount": 10.0}
    status, body, _ = call(world, rest_event("POST", "/v1/predictions", body=request))
    assert status == 200, body
    assert body["transaction_id"] is None and body["stored"] is False
    assert world.dynamodb.scan(TableName=PREDICTIONS)["Count"] == 0


@pytest.mark.parametrize(
    ("raw", "status", "code", "field"),
    [
        ("{not json", 400, "bad_request", None),
        ("", 400, "bad_request", None),
        (json.dumps(tx(1, tx_amount="12")), 422, "invalid_transaction", "tx_amount"),
        (json.dumps(tx(1, promo=1)), 422, "invalid_transaction", "promo"),
        (json.dumps({"customer_id": 1, "tx_amount": 1.0}), 422, "invalid_transaction",
         "terminal_id"),
        (json.dumps(tx(1, tx_amount=-1.0)), 422, "invalid_transaction", "tx_amount"),
        (json.dumps(tx(2**63)), 422, "invalid_transaction", "transaction_id"),
        (json.dumps(tx(1, tx_datetime="2018-04-01T12:00:00+02:00")), 422, "invalid_transaction",
         "tx_datetime"),
        (json.dumps([tx(1)]), 422, "invalid_transaction", "body"),
        ("x" * (300 * 1024), 413, "payload_too_large", None),
    ],
)  # fmt: skip
def test_api_refuses_bad_input_naming_the_field(
    world: World, raw: str, status: int, code: str, field: str | None
) -> None:
    got, body, _ = call(world, rest_event("POST", "/v1/predictions", raw=raw))
    assert (got, body["error"]) == (status, code), body
    assert body["request_id"] == "req-42"
    if field is not None:
        assert field in [f["field"] for f in body["fields"]]
    assert "Traceback" not in json.dumps(body)


def test_api_unknown_route_is_404_and_wrong_method_405(world: World) -> None:
    assert call(world, rest_event("GET", "/v2/things"))[0] == 404
    assert call(world, rest_event("DELETE", "/v1/predictions"))[0] == 405


def test_api_get_of_unknown_or_malformed_id(world: World) -> None:
    unknown = rest_event("GET", "/v1/predictions/{transaction_id}",
                         path_parameters={"transaction_id": "999"})  # fmt: skip
    malformed = rest_event("GET", "/v1/predictions/{transaction_id}",
                           path_parameters={"transaction_id": "abc"})  # fmt: skip
    assert call(world, unknown)[0] == 404
    assert call(world, malformed)[0] == 422


def test_api_batch_scores_valid_items_and_reports_bad_ones_by_index(world: World) -> None:
    items = [
        tx(21),
        tx(22, tx_amount="x"),
        {"customer_id": 4, "terminal_id": 7, "tx_amount": 5.0},
        "nope",
    ]
    status, body, _ = call(
        world, rest_event("POST", "/v1/predictions:batch", body={"transactions": items})
    )
    assert status == 200, body
    assert (body["scored"], body["refused"]) == (2, 2)
    results = {r["index"]: r for r in body["results"]}
    assert results[0]["prediction"]["transaction_id"] == 21
    assert results[1]["error"]["fields"][0]["field"] == "tx_amount"
    assert results[2]["prediction"]["stored"] is False
    assert results[3]["error"]["error"] == "invalid_transaction"


def test_api_batch_over_its_limit_is_413(world: World) -> None:
    items = [tx(k) for k in range(c.MAX_BATCH_PREDICTIONS + 1)]
    status, body, _ = call(
        world, rest_event("POST", "/v1/predictions:batch", body={"transactions": items})
    )
    assert (status, body["error"]) == (413, "batch_too_large")


def test_api_reused_id_for_another_transaction_is_409(world: World) -> None:
    assert call(world, rest_event("POST", "/v1/predictions", body=tx(5)))[0] == 200
    # the same transaction again: the stored decision stands, no error
    assert call(world, rest_event("POST", "/v1/predictions", body=tx(5)))[0] == 200
    status, body, _ = call(world, rest_event("POST", "/v1/predictions", body=tx(5, tx_amount=99.0)))
    assert (status, body["error"]) == (409, "transaction_id_conflict")


def test_api_without_a_champion_is_503_with_retry_after(world: World) -> None:
    world.registry.unset(NAME, "champion")
    status, body, headers = call(world, rest_event("POST", "/v1/predictions", body=tx(7)))
    assert (status, body["error"]) == (503, "model_unavailable")
    assert headers["Retry-After"]
    health = call(world, rest_event("GET", "/v1/health"))[1]
    assert health["model_loaded"] is False


def test_api_shadow_ab_and_hot_swap(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # a challenger in shadow
    world.registry.promote(NAME, world.versions[1], "challenger")
    body = call(world, rest_event("POST", "/v1/predictions", body=tx(31)))[1]
    assert body["model_version"] == world.versions[0]
    assert body["challenger_version"] == world.versions[1]
    models = call(world, rest_event("GET", "/v1/models"))[1]
    assert models["champion"]["version"] == world.versions[0]
    # a hot swap while serving (alias re-check 0 s here): the next request uses it
    world.registry.promote(NAME, world.versions[1], "champion")
    body = call(world, rest_event("POST", "/v1/predictions", body=tx(32)))[1]
    assert body["model_version"] == world.versions[1]
    # A/B: with the whole share, the challenger decides
    world.registry.promote(NAME, world.versions[0], "challenger")
    monkeypatch.setenv(c.ENV_AB_SHARE, "1.0")
    world.api.service.cache_clear()
    body = call(world, rest_event("POST", "/v1/predictions", body=tx(33)))[1]
    assert body["model_version"] == world.versions[0]
    assert body["challenger_version"] == world.versions[1]


def test_api_features_equal_the_streams_and_read_back_a_stream_prediction(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the stream scorer on the same tables, and a transaction history it has scored
    monkeypatch.setenv(c.ENV_ALERT_BUS, "bus")
    monkeypatch.setenv(c.ENV_ARCHIVE_BUCKET, BUCKET)
    sqs = boto3.client("sqs", region_name=REGION)
    monkeypatch.setenv(c.ENV_DEAD_LETTER_QUEUE_URL, sqs.create_queue(QueueName="d")["QueueUrl"])
    boto3.client("events", region_name=REGION).create_event_bus(Name="bus")
    from lambdas import stream

    stream.scoring.cache_clear()
    history = [
        json.dumps(tx(k, tx_datetime=f"2018-04-01T1{k}:00:00")).encode() for k in range(1, 5)
    ]
    assert stream.handler(kinesis_event(history), Context())["batchItemFailures"] == []

    # when the API previews the next transaction, then the stream scores that same one
    nxt = tx(5, tx_datetime="2018-04-01T16:30:00", tx_amount=80.0)
    preview = call(
        world,
        rest_event(
            "POST",
            "/v1/predictions",
            body={k: v for k, v in nxt.items() if k != "transaction_id"},
            query={"explain": "true"},
        ),
    )[1]
    assert (
        stream.handler(kinesis_event([json.dumps(nxt).encode()], 10), Context())[
            "batchItemFailures"
        ]
        == []
    )
    stream.scoring.cache_clear()

    # then the API read the stream's state exactly: the same features and score
    status, stored, _ = call(
        world,
        rest_event(
            "GET", "/v1/predictions/{transaction_id}", path_parameters={"transaction_id": "5"}
        ),
    )
    assert status == 200 and stored["path"] == "stream"
    assert stored["features"] == preview["features"]
    assert stored["score"] == pytest.approx(preview["score"], abs=1e-12)


def test_api_unexpected_error_is_a_500_with_only_the_request_id(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(world.api.service(), "predict_one", boom)
    status, body, _ = call(world, rest_event("POST", "/v1/predictions", body=tx(1)))
    assert status == 500
    assert body == {
        "error": "internal_error",
        "message": body["message"],
        "fields": [],
        "request_id": "req-42",
    }
    assert "secret" not in json.dumps(body)


def test_api_serves_the_latest_batch_score_of_a_customer(world: World) -> None:
    from datetime import date, datetime

    import pyarrow as pa

    from batch.job import Plan, _write_latest

    route = "/v1/customers/{customer_id}/score"
    assert call(world, rest_event("GET", route, path_parameters={"customer_id": "8"}))[0] == 404
    assert call(world, rest_event("GET", route, path_parameters={"customer_id": "x"}))[0] == 422
    # given the batch job's write of a day's scores (two transactions of customer 8)
    run = Plan(run_id="2018-08-10-v1", day=date(2018, 8, 10), model_name=NAME,
               model_version="v1", customer_buckets=1, terminal_buckets=1, history_bytes=0,
               partition_items=[], terminal_items=[], customer_items=[])  # fmt: skip
    scored = pa.table({
        "TRANSACTION_ID": [1, 2], "CUSTOMER_ID": [8, 8], "SCORE": [0.1, 0.7],
        "TX_DATETIME": [datetime(2018, 8, 10, 9), datetime(2018, 8, 10, 17)],
    })  # fmt: skip
    _write_latest(world.dynamodb, SCORES, scored, run)
    # then the API answers with the day's last one
    status, body, _ = call(world, rest_event("GET", route, path_parameters={"customer_id": "8"}))
    assert status == 200, body
    assert (body["score"], body["transaction_id"], body["run_id"]) == (0.7, 2, "2018-08-10-v1")


def test_openapi_document_is_served_and_checked_in() -> None:
    from models.openapi import openapi_spec

    checked_in = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
    assert json.loads(checked_in.read_text()) == json.loads(json.dumps(openapi_spec())), (
        "docs/openapi.json drifted from the code: run `make openapi`"
    )


def test_the_api_key_never_reaches_a_log_or_a_response(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scored, refused and failed requests: the key a caller sent appears in no log line
    (Powertools writes them to stdout) and in no response body."""
    secret = "kQ9zSECRETvalue0123456789abcdefghij"
    bodies = []
    for body, raw in ((tx(7), None), ({"customer_id": "x"}, None), (None, "{not json")):
        event = rest_event("POST", "/v1/predictions", body=body, raw=raw)
        event["headers"]["x-api-key"] = secret
        event["requestContext"]["identity"]["apiKey"] = secret
        bodies.append(world.api.handler(event, Context())["body"])
    logged = capsys.readouterr()
    assert logged.out  # the handler did log (else this test could not fail)
    assert secret not in logged.out + logged.err
    assert not any(secret in b for b in bodies)
