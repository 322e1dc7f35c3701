"""API Gateway (REST, v1 proxy) on the local stack: the template's resources created in moto,
and an HTTP front that does what the gateway does before and after the function.

moto stores REST APIs, keys and usage plans but cannot invoke a proxy integration nor
enforce keys. The front does, from the deployed definition: route by resource template and
method, require the API key where the method does (keys from moto, with their values), the
stage's and the usage plan's rate and burst (token buckets) and daily quota, validate bodies
against the method's model when its validator says so, build the REST proxy event (v1),
invoke the function in its execution environment, and answer with the gateway's own
responses (the template's GatewayResponses where defined) for what never reaches it:
404 unknown route, 403 key, 413 over 10 MB, 429 throttled, 400 invalid body, 502 function
error or malformed response, 504 past the 29 s integration timeout.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from infra.local.deployer import Created, Deployer, handles, physical_name
from infra.local.runtime import Invocation

MAX_PAYLOAD: Final = 10 * 1024 * 1024
"""API Gateway's request payload limit."""
INTEGRATION_TIMEOUT: Final = 29.0

DEFAULT_RESPONSES: Final[dict[str, tuple[int, str]]] = {
    "MISSING_AUTHENTICATION_TOKEN": (403, '{"message":"Missing Authentication Token"}'),
    "INVALID_API_KEY": (403, '{"message":"Forbidden"}'),
    "THROTTLED": (429, '{"message":"Too Many Requests"}'),
    "QUOTA_EXCEEDED": (429, '{"message":"Limit Exceeded"}'),
    "BAD_REQUEST_BODY": (400, '{"message": "Invalid request body"}'),
    "REQUEST_TOO_LARGE": (413, '{"message":"Request Too Long"}'),
    "INTEGRATION_TIMEOUT": (504, '{"message": "Endpoint request timed out"}'),
    "DEFAULT_5XX": (502, '{"message": "Internal server error"}'),
}
"""API Gateway's own answers when the template defines no GatewayResponse for a type."""
_FALLBACK: Final = {
    "MISSING_AUTHENTICATION_TOKEN": "DEFAULT_4XX",
    "INVALID_API_KEY": "DEFAULT_4XX",
    "THROTTLED": "DEFAULT_4XX",
    "QUOTA_EXCEEDED": "DEFAULT_4XX",
    "BAD_REQUEST_BODY": "DEFAULT_4XX",
    "REQUEST_TOO_LARGE": "DEFAULT_4XX",
    "INTEGRATION_TIMEOUT": "DEFAULT_5XX",
}


@dataclass
class Method:
    function: str | None
    api_key_required: bool
    authorization: str
    validate_body: bool = False
    model_schema: dict[str, Any] | None = None


@dataclass
class LocalApi:
    """One REST API as deployed: resources, methods, responses, stages, keys, plans."""

    api_id: str
    name: str
    paths: dict[str, str] = field(default_factory=dict)
    """Resource id -> full path template ("/" for the root)."""
    methods: dict[tuple[str, str], Method] = field(default_factory=dict)
    """(resource path, HTTP method) -> method."""
    responses: dict[str, tuple[int, dict[str, str], str]] = field(default_factory=dict)
    validators: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Stage name -> {"rate": float|None, "burst": int|None}."""


@dataclass
class ApiKey:
    key_id: str
    value: str
    enabled: bool = True
    plans: list[str] = field(default_factory=list)


@dataclass
class UsagePlan:
    plan_id: str
    stages: list[tuple[str, str]]
    rate: float | None
    burst: int | None
    quota: int | None


@dataclass
class Registry:
    """The deployed REST APIs of a stack (kept on the deployer)."""

    apis: dict[str, LocalApi] = field(default_factory=dict)
    keys: dict[str, ApiKey] = field(default_factory=dict)
    plans: dict[str, UsagePlan] = field(default_factory=dict)


def registry(d: Deployer) -> Registry:
    found = getattr(d, "apigateway", None)
    if found is None:
        found = Registry()
        d.apigateway = found  # type: ignore[attr-defined]
    return found


def _function_name(uri: str) -> str | None:
    match = re.search(r":function:([^/:]+)", uri)
    return match.group(1) if match else None


# --- deployer handlers ----------------------------------------------------------------------


@handles("AWS::ApiGateway::RestApi", "Name", "Description", "EndpointConfiguration")
def _rest_api(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    name = p.get("Name") or physical_name(d.stack_name, logical_id)
    api = d.client("apigateway").create_rest_api(
        name=name,
        description=p.get("Description", ""),
        endpointConfiguration={
            "types": p.get("EndpointConfiguration", {}).get("Types", ["REGIONAL"])
        },
    )
    root = next(
        r["id"]
        for r in d.client("apigateway").get_resources(restApiId=api["id"])["items"]
        if r["path"] == "/"
    )
    local = LocalApi(api["id"], name, paths={root: "/"})
    registry(d).apis[api["id"]] = local
    return Created(api["id"], {"RootResourceId": root, "RestApiId": api["id"]})


@handles("AWS::ApiGateway::Resource", "ParentId", "PathPart", "RestApiId")
def _resource(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    resource = d.client("apigateway").create_resource(
        restApiId=p["RestApiId"], parentId=p["ParentId"], pathPart=p["PathPart"]
    )
    api = registry(d).apis[p["RestApiId"]]
    parent = api.paths[p["ParentId"]]
    api.paths[resource["id"]] = parent.rstrip("/") + "/" + p["PathPart"]
    return Created(resource["id"], {"ResourceId": resource["id"]})


@handles(
    "AWS::ApiGateway::RequestValidator",
    "RestApiId",
    "ValidateRequestBody",
    "ValidateRequestParameters",
    "Name",
)
def _validator(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    validator = d.client("apigateway").create_request_validator(
        restApiId=p["RestApiId"],
        name=p.get("Name", logical_id),
        validateRequestBody=bool(p.get("ValidateRequestBody")),
        validateRequestParameters=bool(p.get("ValidateRequestParameters")),
    )
    registry(d).apis[p["RestApiId"]].validators[validator["id"]] = (
        bool(p.get("ValidateRequestBody")),
        bool(p.get("ValidateRequestParameters")),
    )
    return Created(validator["id"], {"RequestValidatorId": validator["id"]})


@handles("AWS::ApiGateway::Model", "ContentType", "RestApiId", "Schema", "Name")
def _model(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    name = p.get("Name") or re.sub(r"[^A-Za-z0-9]", "", logical_id)
    schema = p["Schema"] if isinstance(p["Schema"], dict) else json.loads(p["Schema"])
    d.client("apigateway").create_model(
        restApiId=p["RestApiId"], name=name, contentType=p["ContentType"], schema=json.dumps(schema)
    )
    registry(d).apis[p["RestApiId"]].models[name] = schema
    return Created(name)


@handles(
    "AWS::ApiGateway::Method",
    "ApiKeyRequired",
    "AuthorizationType",
    "HttpMethod",
    "Integration",
    "RequestModels",
    "RequestParameters",
    "RequestValidatorId",
    "ResourceId",
    "RestApiId",
)
def _method(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    client = d.client("apigateway")
    api = registry(d).apis[p["RestApiId"]]
    client.put_method(
        restApiId=p["RestApiId"],
        resourceId=p["ResourceId"],
        httpMethod=p["HttpMethod"],
        authorizationType=p.get("AuthorizationType", "NONE"),
        apiKeyRequired=bool(p.get("ApiKeyRequired")),
    )
    integration = p.get("Integration", {})
    if integration.get("Type") not in ("AWS_PROXY", "MOCK"):
        from infra.local.intrinsics import TemplateError

        raise TemplateError(f"{logical_id}: only Lambda proxy (AWS_PROXY) integrations locally")
    if integration.get("Type") == "AWS_PROXY":
        client.put_integration(
            restApiId=p["RestApiId"],
            resourceId=p["ResourceId"],
            httpMethod=p["HttpMethod"],
            type="AWS_PROXY",
            integrationHttpMethod="POST",
            uri=integration["Uri"],
        )
    validate_body = api.validators.get(p.get("RequestValidatorId", ""), (False, False))[0]
    model_name = (p.get("RequestModels") or {}).get("application/json")
    api.methods[(api.paths[p["ResourceId"]], p["HttpMethod"])] = Method(
        function=_function_name(integration.get("Uri", "")),
        api_key_required=bool(p.get("ApiKeyRequired")),
        authorization=p.get("AuthorizationType", "NONE"),
        validate_body=validate_body,
        model_schema=api.models.get(model_name) if model_name else None,
    )
    return Created(physical_name(d.stack_name, logical_id))


@handles(
    "AWS::ApiGateway::GatewayResponse",
    "ResponseParameters",
    "ResponseTemplates",
    "ResponseType",
    "RestApiId",
    "StatusCode",
)
def _gateway_response(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    d.client("apigateway").put_gateway_response(
        restApiId=p["RestApiId"],
        responseType=p["ResponseType"],
        statusCode=str(p.get("StatusCode", "")),
        responseParameters=p.get("ResponseParameters", {}),
        responseTemplates=p.get("ResponseTemplates", {}),
    )
    headers = {
        k.removeprefix("gatewayresponse.header."): v.strip("'")
        for k, v in p.get("ResponseParameters", {}).items()
    }
    template = p.get("ResponseTemplates", {}).get("application/json", "")
    status = (
        int(p["StatusCode"])
        if p.get("StatusCode")
        else DEFAULT_RESPONSES.get(p["ResponseType"], (500, ""))[0]
    )
    registry(d).apis[p["RestApiId"]].responses[p["ResponseType"]] = (status, headers, template)
    return Created(physical_name(d.stack_name, logical_id))


@handles("AWS::ApiGateway::Deployment", "Description", "RestApiId", "StageName")
def _deployment(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    deployment = d.client("apigateway").create_deployment(
        restApiId=p["RestApiId"], description=p.get("Description", "")
    )
    return Created(deployment["id"], {"DeploymentId": deployment["id"]})


@handles(
    "AWS::ApiGateway::Stage",
    "AccessLogSetting",
    "DeploymentId",
    "MethodSettings",
    "RestApiId",
    "StageName",
    "TracingEnabled",
    "Description",
    "Variables",
)
def _stage(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    d.client("apigateway").create_stage(
        restApiId=p["RestApiId"],
        stageName=p["StageName"],
        deploymentId=p["DeploymentId"],
        tracingEnabled=bool(p.get("TracingEnabled")),
        variables=p.get("Variables", {}),
    )
    throttle: dict[str, Any] = {"rate": None, "burst": None, "variables": p.get("Variables", {})}
    for setting in p.get("MethodSettings", []):
        if setting.get("ResourcePath") == "/*" and setting.get("HttpMethod") == "*":
            throttle["rate"] = setting.get("ThrottlingRateLimit")
            throttle["burst"] = setting.get("ThrottlingBurstLimit")
    registry(d).apis[p["RestApiId"]].stages[p["StageName"]] = throttle
    return Created(p["StageName"])


@handles("AWS::ApiGateway::ApiKey", "Description", "Enabled", "StageKeys", "Name", "Value")
def _api_key(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    args: dict[str, Any] = {
        "name": p.get("Name") or physical_name(d.stack_name, logical_id),
        "description": p.get("Description", ""),
        "enabled": bool(p.get("Enabled", True)),
    }
    if "Value" in p:
        args["value"] = p["Value"]
    key = d.client("apigateway").create_api_key(**args)
    registry(d).keys[key["id"]] = ApiKey(key["id"], key["value"], bool(p.get("Enabled", True)))
    return Created(key["id"], {"APIKeyId": key["id"]})


@handles(
    "AWS::ApiGateway::UsagePlan", "ApiStages", "Description", "Quota", "Throttle", "UsagePlanName"
)
def _usage_plan(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    stages = [(s["ApiId"], s["Stage"]) for s in p.get("ApiStages", [])]
    args: dict[str, Any] = {
        "name": p.get("UsagePlanName") or physical_name(d.stack_name, logical_id),
        "description": p.get("Description", ""),
        "apiStages": [{"apiId": a, "stage": s} for a, s in stages],
    }
    throttle, quota = p.get("Throttle", {}), p.get("Quota", {})
    if throttle:
        args["throttle"] = {
            "rateLimit": float(throttle["RateLimit"]),
            "burstLimit": int(throttle["BurstLimit"]),
        }
    if quota:
        args["quota"] = {"limit": int(quota["Limit"]), "period": quota["Period"]}
    if quota and quota.get("Period") != "DAY":
        from infra.local.intrinsics import TemplateError

        raise TemplateError(f"{logical_id}: only daily quotas are enforced locally")
    plan = d.client("apigateway").create_usage_plan(**args)
    registry(d).plans[plan["id"]] = UsagePlan(
        plan["id"],
        stages,
        float(throttle["RateLimit"]) if throttle else None,
        int(throttle["BurstLimit"]) if throttle else None,
        int(quota["Limit"]) if quota else None,
    )
    return Created(plan["id"], {"Id": plan["id"]})


@handles("AWS::ApiGateway::UsagePlanKey", "KeyId", "KeyType", "UsagePlanId")
def _usage_plan_key(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    d.client("apigateway").create_usage_plan_key(
        usagePlanId=p["UsagePlanId"], keyId=p["KeyId"], keyType=p["KeyType"]
    )
    registry(d).keys[p["KeyId"]].plans.append(p["UsagePlanId"])
    return Created(f"{p['UsagePlanId']}:{p['KeyId']}")


@handles("AWS::ApiGateway::Account", "CloudWatchRoleArn")
def _account(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    d.client("apigateway").update_account(
        patchOperations=[
            {"op": "replace", "path": "/cloudwatchRoleArn", "value": p["CloudWatchRoleArn"]}
        ]
    )
    return Created(physical_name(d.stack_name, logical_id))


@handles("AWS::Lambda::Permission", "Action", "FunctionName", "Principal", "SourceArn")
def _permission(d: Deployer, logical_id: str, p: dict[str, Any]) -> Created:
    d.client("lambda").add_permission(
        FunctionName=p["FunctionName"],
        StatementId=logical_id[-100:],
        Action=p["Action"],
        Principal=p["Principal"],
        **({"SourceArn": p["SourceArn"]} if "SourceArn" in p else {}),
    )
    return Created(logical_id)


# --- the HTTP front -------------------------------------------------------------------------


class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, max(1, burst)
        self.tokens = float(self.burst)
        self.at = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class ApiFront:
    """Turns HTTP requests into REST proxy events for the deployed APIs' functions."""

    def __init__(
        self,
        apis: Registry,
        invoke: Callable[[str, Any], Invocation],
        *,
        account: str,
        region: str,
    ) -> None:
        self.registry = apis
        self.invoke = invoke
        self.account, self.region = account, region
        self._buckets: dict[tuple[str, ...], _Bucket] = {}
        self._quota: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    # --- routing ----------------------------------------------------------------------

    def _api(self, path: str) -> tuple[LocalApi, str, str] | None:
        """(api, stage, rest of the path) for ``/<stage>/...`` or, as LocalStack spells it,
        ``/restapis/<id>/<stage>/_user_request_/...``."""
        parts = path.split("/")
        if len(parts) > 4 and parts[1] == "restapis" and parts[4] == "_user_request_":
            api = self.registry.apis.get(parts[2])
            return (api, parts[3], "/" + "/".join(parts[5:])) if api else None
        for api in self.registry.apis.values():
            if len(parts) > 1 and parts[1] in api.stages:
                return api, parts[1], "/" + "/".join(parts[2:])
        return None

    @staticmethod
    def _match(api: LocalApi, path: str) -> tuple[str, dict[str, str]] | None:
        segments = [s for s in path.split("/") if s]
        best: tuple[int, str, dict[str, str]] | None = None
        for template in {p for p, _ in api.methods}:
            t_segments = [s for s in template.split("/") if s]
            params: dict[str, str] = {}
            score = 0
            if t_segments and t_segments[-1].endswith("+}"):
                if len(segments) < len(t_segments):
                    continue
                head = t_segments[:-1]
                params[t_segments[-1][1:-2]] = "/".join(segments[len(head) :])
                pairs = list(zip(head, segments, strict=False))
            else:
                if len(t_segments) != len(segments):
                    continue
                pairs = list(zip(t_segments, segments, strict=True))
            ok = True
            for t, s in pairs:
                if t.startswith("{") and t.endswith("}"):
                    params[t[1:-1]] = s
                elif t == s:
                    score += 1
                else:
                    ok = False
                    break
            if ok and (best is None or score > best[0]):
                best = (score, template, params)
        return None if best is None else (best[1], best[2])

    # --- responses --------------------------------------------------------------------

    def _gateway(
        self,
        api: LocalApi | None,
        kind: str,
        request_id: str,
        message: str = "",
        validation: str = "",
    ) -> Answer:
        defined = api.responses.get(kind) if api else None
        if defined is None and api is not None:
            fallback = _FALLBACK.get(kind, "DEFAULT_5XX")
            generic = api.responses.get(fallback)
            if generic is not None:
                status = DEFAULT_RESPONSES.get(kind, (generic[0], ""))[0]
                defined = (status, generic[1], generic[2])
        if defined is None:
            status, body = DEFAULT_RESPONSES.get(kind, (500, '{"message":"error"}'))
            return Answer(
                status,
                {
                    "Content-Type": "application/json",
                    "x-amzn-RequestId": request_id,
                    "x-amzn-ErrorType": kind,
                },
                body.encode(),
            )
        status, headers, template = defined
        body = (
            template.replace("$context.requestId", request_id)
            .replace("$context.error.messageString", json.dumps(message or kind))
            .replace("$context.error.validationErrorString", validation.replace('"', "'"))
            .replace("$context.error.message", message or kind)
        )
        return Answer(
            status,
            {**headers, "x-amzn-RequestId": request_id, "x-amzn-ErrorType": kind},
            body.encode(),
        )

    def _throttled(self, api: LocalApi, stage: str, key: ApiKey | None) -> str | None:
        """None, or the gateway response type: stage throttle, then the key's plan."""
        settings = api.stages.get(stage, {})
        with self._lock:
            if settings.get("rate"):
                bucket = self._buckets.setdefault(
                    ("stage", api.api_id, stage), _Bucket(settings["rate"], settings["burst"] or 1)
                )
                if not bucket.take():
                    return "THROTTLED"
            if key is None:
                return None
            for plan_id in key.plans:
                plan = self.registry.plans[plan_id]
                if (api.api_id, stage) not in plan.stages:
                    continue
                if plan.rate:
                    bucket = self._buckets.setdefault(
                        ("plan", plan_id, key.key_id), _Bucket(plan.rate, plan.burst or 1)
                    )
                    if not bucket.take():
                        return "THROTTLED"
                if plan.quota:
                    day = time.strftime("%Y-%m-%d", time.gmtime())
                    used = self._quota.get((key.key_id, day), 0)
                    if used >= plan.quota:
                        return "QUOTA_EXCEEDED"
                    self._quota[(key.key_id, day)] = used + 1
        return None

    def _key(self, api: LocalApi, stage: str, value: str | None) -> ApiKey | None:
        if not value:
            return None
        for key in self.registry.keys.values():
            if (
                key.value == value
                and key.enabled
                and any((api.api_id, stage) in self.registry.plans[p].stages for p in key.plans)
            ):
                return key
        return None

    def handle(  # noqa: PLR0911 (one early answer per gateway check, as API Gateway)
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes, source_ip: str
    ) -> Answer:
        request_id = str(uuid.uuid4())
        split = urlsplit(raw_path)
        found = self._api(split.path)
        if found is None:
            return self._gateway(None, "MISSING_AUTHENTICATION_TOKEN", request_id)
        api, stage, path = found
        if len(body) > MAX_PAYLOAD:
            return self._gateway(api, "REQUEST_TOO_LARGE", request_id)
        matched = self._match(api, path)
        route = None
        if matched is not None:
            resource, params = matched
            route = api.methods.get((resource, method)) or api.methods.get((resource, "ANY"))
        if matched is None or route is None:
            return self._gateway(api, "MISSING_AUTHENTICATION_TOKEN", request_id)
        lower = {k.lower(): v for k, v in headers.items()}
        key = self._key(api, stage, lower.get("x-api-key"))
        if route.api_key_required and key is None:
            return self._gateway(api, "INVALID_API_KEY", request_id, "Forbidden")
        limited = self._throttled(api, stage, key)
        if limited is not None:
            return self._gateway(api, limited, request_id, "Too Many Requests")
        if route.validate_body and route.model_schema is not None:
            problem = _validate(body, route.model_schema)
            if problem is not None:
                return self._gateway(
                    api, "BAD_REQUEST_BODY", request_id, "Invalid request body", problem
                )
        if route.function is None:
            return self._gateway(api, "DEFAULT_5XX", request_id, "no integration")
        query = parse_qsl(split.query, keep_blank_values=True)
        event = {
            "resource": resource,
            "path": path,
            "httpMethod": method,
            "headers": dict(headers),
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "queryStringParameters": dict(query) or None,
            "multiValueQueryStringParameters": (
                {k: [v for q, v in query if q == k] for k, _ in query} or None
            ),
            "pathParameters": params or None,
            "stageVariables": api.stages.get(stage, {}).get("variables") or None,
            "requestContext": {
                "accountId": self.account,
                "apiId": api.api_id,
                "resourcePath": resource,
                "httpMethod": method,
                "path": f"/{stage}{path}",
                "stage": stage,
                "requestId": request_id,
                "requestTimeEpoch": int(time.time() * 1000),
                "protocol": "HTTP/1.1",
                "domainName": lower.get("host", "localhost"),
                "identity": {
                    "apiKey": key.value if key else None,
                    "apiKeyId": key.key_id if key else None,
                    "sourceIp": source_ip,
                    "userAgent": lower.get("user-agent"),
                },
            },
            "body": body.decode("utf-8", "replace") if body else None,
            "isBase64Encoded": False,
        }
        started = time.monotonic()
        result = self.invoke(route.function, event)
        if time.monotonic() - started > INTEGRATION_TIMEOUT:
            return self._gateway(api, "INTEGRATION_TIMEOUT", request_id)
        if result.error is not None:  # a function error or timeout: the gateway's 502
            return self._gateway(api, "DEFAULT_5XX", request_id, "Internal server error")
        response = result.result
        if (
            not isinstance(response, dict)
            or not isinstance(response.get("statusCode"), int)
            or not isinstance(response.get("body", ""), str | type(None))
        ):
            return self._gateway(api, "DEFAULT_5XX", request_id, "Internal server error")
        out_headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
        out_headers["x-amzn-RequestId"] = request_id
        return Answer(response["statusCode"], out_headers, (response.get("body") or "").encode())

    # --- server -----------------------------------------------------------------------

    def start(self, port: int) -> str:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                answer = front.handle(
                    self.command,
                    self.path,
                    dict(self.headers.items()),
                    body,
                    self.client_address[0],
                )
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve  # noqa: N815

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="api-front").start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _validate(body: bytes, schema: dict[str, Any]) -> str | None:
    """API Gateway's body validation against a model (JSON Schema draft 4)."""
    import jsonschema

    try:
        document = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        return "[Invalid JSON in request body]"
    errors = sorted(jsonschema.Draft4Validator(schema).iter_errors(document), key=str)
    if not errors:
        return None
    return "[" + ", ".join(e.message for e in errors) + "]"
