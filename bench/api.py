"""Benchmark: the API predictor's own work, its latency with the state read on moto, and its
cold start against the obvious way.

1. In-process, the state already read (an in-memory store warmed to a day of the book's
   data): ``ApiScoring.predict_one`` on a JSON body, then the JSON answer: p50 / p99 per
   request. Target (the API issue): p99 <= 1 ms.
2. The same with the state read from DynamoDB on moto (decorator mode): reported beside it.
3. Cold start in a fresh process: importing the handler and loading the model through the
   registry, against importing xgboost and loading the same model with ``Booster``.

    python -m bench.api --data data/simulated --artifact data/artifacts/xgboost
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.api import ApiScoring
from models.contracts import TRANSACTIONS_COLUMNS
from models.features.replay import delivered_between, states_as_of
from models.features.spec import SERVED
from models.registry import ModelLoader, open_registry
from models.serving import ModelRouter


def _bodies(table: Any, day: datetime, n: int) -> list[bytes]:
    start = int(day.replace(tzinfo=UTC).timestamp())
    events = [e for e in delivered_between(table, start, start + 86_400) if not e.is_label][:n]
    return [
        json.dumps({
            "customer_id": e.customer_id, "terminal_id": e.terminal_id,
            "tx_amount": e.values["TX_AMOUNT"],
            "tx_datetime": datetime.fromtimestamp(e.time, UTC).replace(tzinfo=None).isoformat(),
        }).encode()
        for e in events
    ]  # fmt: skip


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_us": 1e6 * statistics.median(ordered),
        "p99_us": 1e6 * ordered[int(0.99 * (len(ordered) - 1))],
    }


def _time(api: ApiScoring, bodies: list[bytes]) -> dict[str, float]:
    for body in bodies[:50]:  # warm: model load, code paths
        api.predict_one(body)
    samples = []
    for body in bodies:
        started = time.perf_counter()
        json.dumps(api.predict_one(body, explain=True).model_dump(mode="json"))
        samples.append(time.perf_counter() - started)
    return _percentiles(samples)


def in_process(table: Any, day: datetime, artifact: Path, n: int) -> dict[str, float]:
    engine, _ = states_as_of(table, int(day.replace(tzinfo=UTC).timestamp()) - 1, SERVED)
    with tempfile.TemporaryDirectory() as tmp:
        registry = open_registry(f"file://{tmp}/registry")
        version = registry.push(artifact).version
        name = registry.list()[0].name
        registry.promote(name, version, "champion")
        router = ModelRouter(ModelLoader(registry, name, cache_dir=Path(tmp) / "cache"))
        api = ApiScoring(engine=engine, router=router, predictions=None)
        return _time(api, _bodies(table, day, n))


def on_moto(table: Any, day: datetime, artifact: Path, n: int) -> dict[str, float]:
    import os

    import boto3
    from moto import mock_aws

    from models.features import dynamodb_store as ddb
    from models.features.online import OnlineFeatures

    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    bodies = _bodies(table, day, n)
    engine, _ = states_as_of(table, int(day.replace(tzinfo=UTC).timestamp()) - 1, SERVED)
    wanted = {("CUSTOMER_ID", json.loads(b)["customer_id"]) for b in bodies} | {
        ("TERMINAL_ID", json.loads(b)["terminal_id"]) for b in bodies
    }
    states = {k: s for k, s in engine.store.states.items() if k in wanted}  # type: ignore[attr-defined]
    with mock_aws(), tempfile.TemporaryDirectory() as tmp:
        client = boto3.client("dynamodb", region_name="eu-west-1")
        ddb.create_table(client, "state")
        store = ddb.DynamoDBStateStore(client, "state", size_items=False)
        store.write_states(states, engine.machines)
        registry = open_registry(f"file://{tmp}/registry")
        version = registry.push(artifact).version
        name = registry.list()[0].name
        registry.promote(name, version, "champion")
        router = ModelRouter(ModelLoader(registry, name, cache_dir=Path(tmp) / "cache"))
        api = ApiScoring(engine=OnlineFeatures(store, SERVED), router=router, predictions=None)
        return _time(api, bodies)


COLD_RTML = """
import time, os, sys
t0 = time.perf_counter()
import lambdas.api as handler
t1 = time.perf_counter()
champion, _ = handler.service().router.models()
t2 = time.perf_counter()
print(f"{t1 - t0} {t2 - t1}")
"""
COLD_XGBOOST = """
import time, sys
t0 = time.perf_counter()
import xgboost
t1 = time.perf_counter()
booster = xgboost.Booster()
booster.load_model(sys.argv[1])
t2 = time.perf_counter()
print(f"{t1 - t0} {t2 - t1}")
"""


def cold_start(artifact: Path, runs: int = 3) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        registry = open_registry(f"file://{tmp}/registry")
        version = registry.push(artifact).version
        name = registry.list()[0].name
        registry.promote(name, version, "champion")
        env = {
            "RTML_FEATURE_STATE_TABLE": "state", "RTML_PREDICTIONS_TABLE": "predictions",
            "RTML_REGISTRY": f"file://{tmp}/registry", "RTML_MODEL_NAME": name,
            "AWS_DEFAULT_REGION": "eu-west-1", "POWERTOOLS_TRACE_DISABLED": "true",
            "PATH": "", "TMPDIR": tmp,
        }  # fmt: skip
        model_file = next(p for p in artifact.iterdir() if p.name.startswith("model."))
        rtml, xgb = [], []
        for _ in range(runs):
            out = subprocess.run([sys.executable, "-c", COLD_RTML], env=env, capture_output=True,
                                 text=True, check=True)  # fmt: skip
            rtml.append([float(x) for x in out.stdout.split()])
            out = subprocess.run([sys.executable, "-c", COLD_XGBOOST, str(model_file)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            xgb.append([float(x) for x in out.stdout.split()])
    rtml_import, rtml_load = (statistics.median(v) for v in zip(*rtml, strict=True))
    xgb_import, xgb_load = (statistics.median(v) for v in zip(*xgb, strict=True))
    return {
        "rtml_import_s": rtml_import, "rtml_model_load_s": rtml_load,
        "xgboost_import_s": xgb_import, "xgboost_model_load_s": xgb_load,
        "ratio": (xgb_import + xgb_load) / (rtml_import + rtml_load),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/simulated"))
    parser.add_argument("--artifact", type=Path, default=Path("data/artifacts/xgboost"))
    parser.add_argument("--day", default="2018-08-10")
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()

    from models import datasets

    table = datasets.read_dataset(args.data, TRANSACTIONS_COLUMNS)
    day = datetime.fromisoformat(args.day)
    local = in_process(table, day, args.artifact, args.requests)
    moto = on_moto(table, day, args.artifact, min(args.requests, 300))
    cold = cold_start(args.artifact)
    print(f"\nAPI predictor, book day {args.day}")
    print(f"  handler's own work (state already read): p50 {local['p50_us']:.0f} us,"
          f" p99 {local['p99_us']:.0f} us (target p99 <= 1000 us)")  # fmt: skip
    print(f"  with the state read on moto:             p50 {moto['p50_us']:.0f} us,"
          f" p99 {moto['p99_us']:.0f} us")  # fmt: skip
    print(f"  cold start: rtml import {cold['rtml_import_s']:.2f} s + model"
          f" {cold['rtml_model_load_s'] * 1000:.0f} ms; xgboost import"
          f" {cold['xgboost_import_s']:.2f} s + model {cold['xgboost_model_load_s'] * 1000:.0f} ms:"
          f" {cold['ratio']:.1f}x faster")  # fmt: skip
    Path("bench/api_results.json").write_text(
        json.dumps({"in_process": local, "moto": moto, "cold_start": cold}, indent=2)
    )


if __name__ == "__main__":
    main()
