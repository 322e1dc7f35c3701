"""The local API Gateway front's checks that the e2e stack cannot reach cheaply: usage-plan
rate, burst and quota, malformed function responses, function errors, gateway defaults."""

from __future__ import annotations

import json
from typing import Any

from infra.local.apigateway import ApiFront, ApiKey, LocalApi, Method, Registry, UsagePlan
from infra.local.runtime import Invocation


def _front(
    result: Invocation, *, rate: float = 100.0, burst: int = 100, quota: int | None = None
) -> tuple[ApiFront, list[Any]]:
    api = LocalApi("api1", "test", stages={"v1": {"rate": None, "burst": None}})
    api.methods[("/v1/things/{id}", "GET")] = Method(
        "fn", api_key_required=True, authorization="NONE"
    )
    api.methods[("/v1/things", "POST")] = Method(
        "fn", api_key_required=False, authorization="NONE", validate_body=True,
        model_schema={"type": "object", "required": ["a"]},
    )  # fmt: skip
    registry = Registry(
        apis={"api1": api},
        keys={"k1": ApiKey("k1", "secret", plans=["p1"])},
        plans={"p1": UsagePlan("p1", [("api1", "v1")], rate, burst, quota)},
    )
    calls: list[Any] = []

    def invoke(name: str, event: Any) -> Invocation:
        calls.append(event)
        return result

    return ApiFront(registry, invoke, account="1", region="eu-west-1"), calls


OK = Invocation(result={"statusCode": 200, "headers": {}, "body": "{}"})


def test_front_builds_a_rest_proxy_event_and_passes_the_answer_through() -> None:
    front, calls = _front(OK)
    answer = front.handle("GET", "/v1/v1/things/42?x=1", {"x-api-key": "secret"}, b"", "1.2.3.4")
    assert answer.status == 200
    (event,) = calls
    assert (event["resource"], event["pathParameters"]) == ("/v1/things/{id}", {"id": "42"})
    assert event["queryStringParameters"] == {"x": "1"}
    assert event["requestContext"]["identity"]["apiKey"] == "secret"
    assert event["requestContext"]["stage"] == "v1"


def test_front_refuses_missing_keys_unknown_routes_and_invalid_bodies_before_the_function() -> None:
    front, calls = _front(OK)
    assert front.handle("GET", "/v1/v1/things/42", {}, b"", "ip").status == 403
    assert front.handle("GET", "/v1/v1/things/42", {"x-api-key": "nope"}, b"", "ip").status == 403
    assert front.handle("GET", "/v1/v1/other", {}, b"", "ip").status == 403  # AWS's default
    answer = front.handle("POST", "/v1/v1/things", {}, json.dumps({"b": 1}).encode(), "ip")
    assert answer.status == 400 and b"Invalid request body" in answer.body
    assert (
        front.handle("POST", "/v1/v1/things", {}, b"x" * (10 * 1024 * 1024 + 1), "ip").status == 413
    )
    assert calls == []


def test_front_throttles_by_the_usage_plan_and_counts_the_daily_quota() -> None:
    front, _ = _front(OK, rate=0.001, burst=2)
    statuses = [front.handle("GET", "/v1/v1/things/1", {"x-api-key": "secret"}, b"", "ip").status
                for _ in range(3)]  # fmt: skip
    assert statuses == [200, 200, 429]
    front, _ = _front(OK, quota=2)
    statuses = [front.handle("GET", "/v1/v1/things/1", {"x-api-key": "secret"}, b"", "ip").status
                for _ in range(3)]  # fmt: skip
    assert statuses == [200, 200, 429]


def test_front_answers_502_for_a_function_error_or_a_malformed_response() -> None:
    for result in (
        Invocation(error={"errorType": "ValueError", "errorMessage": "x"}),
        Invocation(result={"body": "no status"}),
        Invocation(result="a string"),
    ):
        front, _ = _front(result)
        answer = front.handle("GET", "/v1/v1/things/1", {"x-api-key": "secret"}, b"", "ip")
        assert answer.status == 502, result
        assert json.loads(answer.body) == {"message": "Internal server error"}
