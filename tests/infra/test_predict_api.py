"""The on-demand path as synthesized from the real cdk.json: the REST API, its key and usage
plan, validators, gateway responses, the predictor's grants and the alarms."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from aws_cdk.assertions import Template

from infra.constructs.predict_api import API_HANDLER, STAGE
from infra.settings import EnvSettings
from lambdas.api import ApiSettings
from models import contracts as c
from models.openapi import ROUTES
from tests.infra.test_stream_scoring import _statements

pytestmark = pytest.mark.infra
ENVS = ["dev", "prod"]


def _predictor(template: Template) -> Mapping[str, Any]:
    (function,) = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": API_HANDLER}}
    ).values()
    return function


def _paths(template: Template) -> dict[str, str]:
    """Resource logical id -> full path, rebuilt from the ParentId chain."""
    resources = template.find_resources("AWS::ApiGateway::Resource")
    out: dict[str, str] = {}

    def path(logical_id: str) -> str:
        if logical_id not in out:
            props = resources[logical_id]["Properties"]
            parent = props["ParentId"]
            prefix = path(parent["Ref"]) if "Ref" in parent else ""
            out[logical_id] = f"{prefix}/{props['PathPart']}"
        return out[logical_id]

    for logical_id in resources:
        path(logical_id)
    return out


@pytest.mark.parametrize("env_name", ENVS)
def test_every_route_of_the_openapi_document_is_a_gateway_method_needing_a_key(
    templates: dict[str, Template], env_name: str
) -> None:
    template = templates[env_name]
    paths = _paths(template)
    methods = {
        (m["Properties"]["HttpMethod"], paths[m["Properties"]["ResourceId"]["Ref"]]): m
        for m in template.find_resources("AWS::ApiGateway::Method").values()
        if m["Properties"]["HttpMethod"] != "OPTIONS"
    }
    assert set(methods) == set(ROUTES)
    for method in methods.values():
        props = method["Properties"]
        assert props["ApiKeyRequired"] is True
        assert props["Integration"]["Type"] == "AWS_PROXY"
    batch = methods[("POST", "/v1/predictions:batch")]["Properties"]
    assert "RequestValidatorId" in batch and "application/json" in batch["RequestModels"]


@pytest.mark.parametrize("env_name", ENVS)
def test_batch_model_caps_items_at_the_gateway(
    templates: dict[str, Template], env_name: str
) -> None:
    models = templates[env_name].find_resources("AWS::ApiGateway::Model").values()
    schemas = [m["Properties"]["Schema"] for m in models]
    batch = next(s for s in schemas if "transactions" in s.get("properties", {}))
    assert batch["properties"]["transactions"]["maxItems"] == c.MAX_BATCH_PREDICTIONS
    assert batch["required"] == ["transactions"]


@pytest.mark.parametrize("env_name", ENVS)
def test_stage_logs_throttles_and_the_plan_carries_the_settings(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    template, api = templates[env_name], settings[env_name].api
    (stage,) = template.find_resources("AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == STAGE
    assert json.loads(props["AccessLogSetting"]["Format"])["requestId"] == "$context.requestId"
    (method_settings,) = props["MethodSettings"]
    assert method_settings["ThrottlingRateLimit"] == api.rate_limit
    assert method_settings["ThrottlingBurstLimit"] == api.burst_limit
    assert method_settings["LoggingLevel"] == "ERROR"
    (plan,) = template.find_resources("AWS::ApiGateway::UsagePlan").values()
    assert plan["Properties"]["Throttle"] == {
        "RateLimit": api.rate_limit,
        "BurstLimit": api.burst_limit,
    }
    assert plan["Properties"]["Quota"] == {"Limit": api.quota_per_day, "Period": "DAY"}
    # a key on the plan, whose value never appears in the template
    (key,) = template.find_resources("AWS::ApiGateway::ApiKey").values()
    assert "Value" not in key["Properties"]
    assert len(template.find_resources("AWS::ApiGateway::UsagePlanKey")) == 1


@pytest.mark.parametrize("env_name", ENVS)
def test_unknown_routes_answer_404_in_the_api_error_shape(
    templates: dict[str, Template], env_name: str
) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in templates[env_name].find_resources("AWS::ApiGateway::GatewayResponse").values()
    }
    missing = responses["MISSING_AUTHENTICATION_TOKEN"]
    assert missing["StatusCode"] == "404"
    body = json.loads(missing["ResponseTemplates"]["application/json"].replace(
        "$context.requestId", "r"))  # fmt: skip
    assert body == {
        "error": "not_found",
        "message": "no such route",
        "fields": [],
        "request_id": "r",
    }
    assert {"THROTTLED", "QUOTA_EXCEEDED", "INVALID_API_KEY", "BAD_REQUEST_BODY",
            "REQUEST_TOO_LARGE", "INTEGRATION_TIMEOUT"} <= set(responses)  # fmt: skip


@pytest.mark.parametrize("env_name", ENVS)
def test_predictor_is_read_only_on_the_state_and_configured_like_the_stream(
    templates: dict[str, Template], settings: dict[str, EnvSettings], env_name: str
) -> None:
    template = templates[env_name]
    props = _predictor(template)["Properties"]
    assert props["Timeout"] <= 29  # under the integration timeout
    variables = props["Environment"]["Variables"]
    parsed = ApiSettings.from_env(
        {k: v if isinstance(v, str) else f"resolved-{k}" for k, v in variables.items()}
    )
    assert parsed.threshold == settings[env_name].stream.decision_threshold
    role = props["Role"]["Fn::GetAtt"][0]
    actions = {
        (a, json.dumps(s["Resource"]))
        for s in _statements(template, role)
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
    }
    state_table = next(
        k for k, r in template.find_resources("AWS::DynamoDB::GlobalTable").items()
        if r["Properties"]["KeySchema"][0]["AttributeName"] == c.FEATURE_STATE_PK
    )  # fmt: skip
    on_state = {a for a, r in actions if state_table in r}
    assert on_state == {"dynamodb:BatchGetItem"}
    scores_table = next(
        k for k, r in template.find_resources("AWS::DynamoDB::GlobalTable").items()
        if r["Properties"]["KeySchema"][0]["AttributeName"] == c.LATEST_SCORES_PK
    )  # fmt: skip
    assert {a for a, r in actions if scores_table in r} == {"dynamodb:GetItem"}


@pytest.mark.parametrize("env_name", ENVS)
def test_api_alarms_and_url_output(templates: dict[str, Template], env_name: str) -> None:
    template = templates[env_name]
    alarms = {k for k in template.find_resources("AWS::CloudWatch::Alarm") if k.startswith("Api")}
    assert len(alarms) == 3
    assert "ApiUrl" in template.to_json()["Outputs"]


def test_iam_auth_setting_signs_calls_instead_of_keys(context: dict[str, Any]) -> None:
    import copy

    from infra.app import build_app
    from infra.settings import ENVIRONMENTS_CONTEXT_KEY
    from infra.stage import RtmlStage

    # given dev with auth: iam and CORS for one origin
    changed = copy.deepcopy(context)
    changed[ENVIRONMENTS_CONTEXT_KEY]["dev"]["api"] = {
        "auth": "iam", "cors_origins": ["https://example.com"]
    }  # fmt: skip
    app = build_app({**changed, "env": "dev"})
    (stage,) = [s for s in app.node.children if isinstance(s, RtmlStage)]
    template = Template.from_stack(stage.stack)

    # then every method is SigV4-authorized, with no key or usage plan, and CORS preflights
    methods = template.find_resources("AWS::ApiGateway::Method").values()
    served = [m["Properties"] for m in methods if m["Properties"]["HttpMethod"] != "OPTIONS"]
    assert {m["AuthorizationType"] for m in served} == {"AWS_IAM"}
    assert template.find_resources("AWS::ApiGateway::ApiKey") == {}
    assert template.find_resources("AWS::ApiGateway::UsagePlan") == {}
    assert any(m["Properties"]["HttpMethod"] == "OPTIONS" for m in methods)


def test_no_cors_unless_configured(templates: dict[str, Template]) -> None:
    methods = templates["dev"].find_resources("AWS::ApiGateway::Method").values()
    assert not any(m["Properties"]["HttpMethod"] == "OPTIONS" for m in methods)
