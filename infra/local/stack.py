"""``rtml local up``: the synthesized app, deployed on an embedded moto server, no Docker.

Starts moto in this process on 127.0.0.1, configures it before anything is created, hooks
moto's Lambda invoke to rtml's execution environments, synthesizes the selected stage for
this machine's architecture (or reads a given cdk.out), publishes its file assets, deploys
its template with :class:`infra.local.deployer.Deployer`, starts the Kinesis poller for its
event source mappings, and writes the endpoints to ``.rtml/local.json``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from infra.local.deployer import Deployer, publish_file_assets
from infra.local.kinesis import KinesisPoller, Mapping
from infra.local.runtime import FunctionConfig, LocalLambda, ThrottledError

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 4566
DEFAULT_REGION: Final = "eu-west-1"
DEFAULT_ROOT: Final = Path(".rtml")
STATE_FILE: Final = "local.json"
CREDENTIALS: Final = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

OUTPUT_KEYS: Final = {
    "TransactionsStream": "transactions_stream",
    "LabelsStream": "labels_stream",
    "PredictionsTable": "predictions_table",
    "DeadLetterQueueUrl": "dead_letter_queue_url",
    "FailedBatchesQueueUrl": "failed_batches_queue_url",
    "DataBucket": "data_bucket",
    "ArtifactsBucket": "artifacts_bucket",
    "FeatureStateTable": "feature_state_table",
    "AlertBus": "alert_bus",
    "ScorerFunction": "scorer_function",
    "AlarmTopic": "alarm_topic",
    "ApiUrl": "api_url",
    "ApiFunction": "api_function",
    "LatestScoresTable": "latest_scores_table",
    "BatchStateMachine": "batch_state_machine",
    "BatchPrefix": "batch_prefix",
}
"""Stack outputs and their names in local.json (the last ones once those paths exist)."""


def host_architecture() -> str:
    return "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"


@dataclass
class LocalStack:
    """One local deployment of a stage, in this process."""

    root: Path = DEFAULT_ROOT
    port: int = DEFAULT_PORT
    region: str = DEFAULT_REGION
    stage: str = "dev"
    cdk_out: Path | None = None
    progress: Callable[[str], None] = field(default=lambda message: log.info("%s", message))
    server: Any = None
    lambdas: LocalLambda | None = None
    poller: KinesisPoller | None = None
    api_front: Any = None
    api_port: int | None = None
    """Port of the local API Gateway front (default: ``port + 1``)."""
    deployer: Deployer | None = None
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    api_info: dict[str, Any] = field(default_factory=dict)
    """``api_url`` and ``api_key`` of the local front (they replace AWS's in local.json)."""

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str) -> Any:
        return local_client({"endpoint_url": self.endpoint_url, "region": self.region}, service)

    # --- up -------------------------------------------------------------------------------

    def up(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.root.mkdir(parents=True, exist_ok=True)
        self._start_moto()
        self.timings["moto"] = time.perf_counter() - started
        assembly = self.cdk_out or self._synth()
        self.timings["synth"] = time.perf_counter() - started - self.timings["moto"]
        template_path, assets_path, stack_name = _stack_files(Path(assembly), self.stage)
        template = json.loads(template_path.read_text())
        deploy_started = time.perf_counter()
        deployer = Deployer(self.client, stack_name=stack_name, region=self.region)
        self.deployer = deployer
        problems = deployer.check(template)
        if problems:
            raise RuntimeError("the local deployer cannot create:\n  " + "\n  ".join(problems))
        published = publish_file_assets(assets_path, deployer.resolve, self.client("s3"))
        self.progress(f"published {len(published)} asset(s)")
        deployer.deploy(template)
        self.progress(f"deployed {len(deployer.resources)} resources of {stack_name}")
        self._start_functions(assets_path.parent, deployer)
        self._start_api(deployer)
        self.timings["deploy"] = time.perf_counter() - deploy_started
        self.timings["total"] = time.perf_counter() - started
        self.info = self._describe(stack_name, deployer)
        (self.root / STATE_FILE).write_text(json.dumps(self.info, indent=2) + "\n")
        return self.info

    def _start_moto(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
        os.environ.setdefault("MOTO_PORT", str(self.port))  # moto's Step Functions call back here
        # AWS-managed policies (the API Gateway logging role attaches one) exist only then
        os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        _configure_moto(self.endpoint_url)
        self._hook_lambda()
        from infra.local.stepfunctions import enforce_tolerated_failures

        enforce_tolerated_failures()

    def _hook_lambda(self) -> None:
        """moto's Lambda invoke (``aws lambda invoke``, Step Functions tasks) runs our
        execution environments, never Docker (moto 5.2.x's private hook; pinned, tested)."""
        from moto.awslambda.exceptions import LambdaClientError
        from moto.awslambda.models import LambdaFunction

        stack = self

        def invoke(function: Any, event: Any = None) -> tuple[str, bool, str]:
            assert stack.lambdas is not None
            payload = json.loads(event) if isinstance(event, str | bytes) and event else event
            try:
                result = stack.lambdas.invoke(function.function_name, payload or {})
            except ThrottledError as error:  # Lambda's 429, which callers (and Retry) expect
                throttled = LambdaClientError("TooManyRequestsException", str(error))
                throttled.code = 429
                raise throttled from None
            if result.error is not None:
                return json.dumps(result.error), True, ""
            return json.dumps(result.result), False, ""

        LambdaFunction._invoke_lambda = invoke  # type: ignore[method-assign,assignment]

    def _synth(self) -> Path:
        """The stage's assembly, synthesized for this machine's architecture."""
        from infra.app import build_app, cdk_json_context
        from infra.bundle import KINDS, build, bundle_path
        from infra.settings import ENVIRONMENTS_CONTEXT_KEY

        arch = host_architecture()
        for kind in KINDS:
            if _stale(bundle_path(arch, kind=kind)):  # type: ignore[arg-type]
                self.progress(f"building the {kind} bundle for {arch}")
                build(arch, kind=kind)  # type: ignore[arg-type]
        context = cdk_json_context()
        environments = json.loads(json.dumps(context[ENVIRONMENTS_CONTEXT_KEY]))
        if self.stage not in environments:
            raise ValueError(f"unknown stage {self.stage!r}; cdk.json has {sorted(environments)}")
        functions = environments[self.stage].setdefault("functions", {})
        functions["architecture"] = arch
        outdir = self.root / "cdk.out"
        self.progress(f"synthesizing stage {self.stage} ({arch})")
        app = build_app(
            {**context, ENVIRONMENTS_CONTEXT_KEY: environments, "env": self.stage},
            outdir=str(outdir),
        )
        app.synth()
        return outdir

    def _start_functions(self, assembly_dir: Path, deployer: Deployer) -> None:
        base_env = {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "PATH": os.environ.get("PATH", ""),
        }
        self.lambdas = LocalLambda(self.root, base_env)
        for name, function in deployer.functions.items():
            _, key = function["code"]
            code_zip = _asset_file(assembly_dir, key)
            self.lambdas.register(
                FunctionConfig(
                    name=name,
                    handler=function["handler"],
                    # X-Ray has no daemon here: tracing off (a documented local difference)
                    environment={**function["environment"], "POWERTOOLS_TRACE_DISABLED": "true"},
                    timeout=function["timeout"],
                    memory=function["memory"],
                    arn=function["arn"],
                    code_zip=code_zip,
                    reserved_concurrency=function["reserved_concurrency"],
                )
            )
        arns = {name: f["arn"] for name, f in deployer.functions.items()}
        mappings = [Mapping.from_template(m, arns) for m in deployer.event_source_mappings]
        self.poller = KinesisPoller(
            kinesis=self.client("kinesis"),
            sqs=self.client("sqs"),
            invoke=self.lambdas.invoke,
            region=self.region,
        )
        self.poller.start(mappings)
        self.progress(f"{len(arns)} function(s), {len(mappings)} Kinesis mapping(s) running")

    def _start_api(self, deployer: Deployer) -> None:
        from infra.local.apigateway import ApiFront, registry

        apis = registry(deployer)
        if not apis.apis:
            return
        assert self.lambdas is not None
        self.api_front = ApiFront(apis, self.lambdas.invoke, account=deployer.account,
                                  region=self.region)  # fmt: skip
        base = self.api_front.start(self.api_port or self.port + 1)
        api = next(iter(apis.apis.values()))
        stage = next(iter(api.stages), "")
        self.api_info = {
            "api_url": f"{base}/{stage}/",
            "api_key": next((k.value for k in apis.keys.values() if k.enabled), None),
        }
        self.progress(f"API at {self.api_info['api_url']}")

    def _describe(self, stack_name: str, deployer: Deployer) -> dict[str, Any]:
        info: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "stage": self.stage,
            "stack": stack_name,
            "pid": os.getpid(),
            **dict.fromkeys(OUTPUT_KEYS.values()),
        }
        for output, key in OUTPUT_KEYS.items():
            if output in deployer.outputs:
                info[key] = deployer.outputs[output]
        info["api_key"] = None
        info.update(self.api_info)  # the local front's URL, not AWS's
        if info.get("artifacts_bucket"):
            from models.contracts import REGISTRY_PREFIX

            info["registry"] = f"s3://{info['artifacts_bucket']}/{REGISTRY_PREFIX}"
        info["functions"] = sorted(deployer.functions)
        info["logs"] = str((self.root / "logs").resolve())
        info["started_seconds"] = round(self.timings.get("total", 0.0), 2)
        return info

    # --- down -----------------------------------------------------------------------------

    def down(self) -> None:
        if self.api_front is not None:
            self.api_front.stop()
        if self.poller is not None:
            self.poller.stop()
        if self.lambdas is not None:
            self.lambdas.close()
        if self.server is not None:
            self.server.stop()
        state = self.root / STATE_FILE
        if state.exists():
            state.unlink()

    def serve_forever(self, stop: threading.Event) -> None:
        """Keep running until ``stop`` (Ctrl-C or ``rtml local down``) is set."""
        while not stop.wait(0.5):
            pass


def _configure_moto(endpoint: str) -> None:
    """Before anything is created: Step Functions really execute, and Lambda goes through
    the invoke hook (moto's ``use_docker`` path; without it invoke only echoes its input)."""
    import urllib.request

    body = json.dumps(
        {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": True}}
    ).encode()
    request = urllib.request.Request(
        f"{endpoint}/moto-api/config", data=body, method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _stale(bundle: Path) -> bool:
    """Whether the bundle is missing or older than any runtime source or the lock."""
    if not bundle.exists():
        return True
    from infra.bundle import LOCK, PACKAGES, ROOT

    built = bundle.stat().st_mtime
    sources = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    return any(p.stat().st_mtime > built for p in [*sources, LOCK] if p.exists())


def _stack_files(assembly: Path, stage: str) -> tuple[Path, Path, str]:
    """The stage's template, asset manifest and stack name in a cloud assembly."""
    nested = assembly / f"assembly-{stage}"
    manifest = json.loads((nested / "manifest.json").read_text())
    stacks = [
        (name, artifact)
        for name, artifact in manifest["artifacts"].items()
        if artifact["type"] == "aws:cloudformation:stack"
    ]
    if len(stacks) != 1:
        raise ValueError(f"expected one stack in {nested}, found {[n for n, _ in stacks]}")
    name, artifact = stacks[0]
    template = nested / artifact["properties"]["templateFile"]
    stack_name = artifact.get("displayName", name).split("/")[-1]
    stack_name = artifact["properties"].get("stackName", stack_name)
    assets = nested / f"{name}.assets.json"
    return template, assets, stack_name


def _asset_file(assembly_dir: Path, object_key: str) -> Path:
    """The local file a published asset came from (its object key is its hash + suffix)."""
    candidates = list(assembly_dir.parent.glob(f"asset.{object_key}"))
    candidates += list(assembly_dir.glob(f"asset.{object_key}"))
    if not candidates:
        raise FileNotFoundError(f"asset {object_key} not found next to {assembly_dir}")
    return candidates[0]


def local_client(info: dict[str, Any], service: str) -> Any:
    """A boto3 client for a local stack (its ``local.json``, or endpoint and region)."""
    import boto3

    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=info["endpoint_url"],
        region_name=info["region"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def read_state(root: Path = DEFAULT_ROOT) -> dict[str, Any]:
    """The running local stack's ``local.json`` (a clear error when none is up)."""
    path = root / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"no local stack is up ({path} missing): run `rtml local up`")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
