"""Benchmark: the stream scorer's batch, with 10 ms added to every AWS call.

A day of the book's data (state warmed to its start with the materialize code path, then
its transactions and chargebacks in Kinesis batches of ``--batch``) through
``StreamScoring`` with every AWS client wrapped: each call sleeps ``--latency`` and is
counted. In-memory fakes stand in for DynamoDB, EventBridge, S3 and SQS (moto's own time
per call would swamp the figures). Targets (the stream issue): a 100-record batch in
<= 150 ms wall at 10 ms a call, <= 3 AWS requests a record, <= 100 us of in-process work
a record (the same run with no latency, divided by the records). Also the DynamoDB units
a record, computed from item sizes by DynamoDB's rules.

    python -m bench.stream --data data/simulated --artifact data/artifacts/xgboost
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.state_store import FakeDynamoDB
from models.aws_sinks import DynamoDBPredictions, EventBridgeAlerts, S3Archive, SQSDeadLetters
from models.contracts import TRANSACTIONS_COLUMNS
from models.features import dynamodb_store as ddb
from models.features.online import OnlineFeatures
from models.features.replay import delivered_between, states_as_of
from models.features.spec import SERVED
from models.registry import ModelLoader, open_registry
from models.serving import ModelRouter
from models.stream import StreamRecord, StreamScoring
from models.wire import encode_event


class FakeAWS(FakeDynamoDB):
    """DynamoDB calls of the predictions sink too, plus EventBridge, S3 and SQS sinks."""

    def batch_write_item(self, **kwargs: Any) -> dict[str, Any]:
        ((_, requests),) = kwargs["RequestItems"].items()
        for r in requests:
            item = r["PutRequest"]["Item"]
            key = next(iter(item.values()))
            self.items[("P", str(key))] = item
            self.written_bytes.append(ddb.item_size(item))
        return {"UnprocessedItems": {}}

    def batch_get_item(self, **kwargs: Any) -> dict[str, Any]:
        ((table, request),) = kwargs["RequestItems"].items()
        keys = request["Keys"]
        if keys and "pk" not in keys[0]:  # the predictions table
            found = [
                self.items[("P", str(next(iter(k.values()))))]
                for k in keys
                if ("P", str(next(iter(k.values())))) in self.items
            ]
            return {"Responses": {table: found}, "UnprocessedKeys": {}}
        return super().batch_get_item(**kwargs)

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        return {}

    def put_events(self, **kwargs: Any) -> dict[str, Any]:
        return {"Entries": [{"EventId": "e"} for _ in kwargs["Entries"]]}

    def put_object(self, **kwargs: Any) -> dict[str, Any]:
        return {}

    def send_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        return {"Successful": kwargs["Entries"], "Failed": []}

    def __init__(self) -> None:
        super().__init__()
        self.written_bytes: list[int] = []


class Delayed:
    """Any client, each call delayed by ``latency`` seconds and counted."""

    def __init__(self, client: Any, latency: float, counter: list[int]) -> None:
        self._client = client
        self._latency = latency
        self._counter = counter
        self.exceptions = client.exceptions if hasattr(client, "exceptions") else None
        self.fake_cpu: list[float] = []
        """CPU seconds spent inside the in-memory stand-ins (not rtml's work: AWS's)."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        target = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            self._counter.append(1)
            if self._latency:
                time.sleep(self._latency)
            cpu = time.thread_time()
            try:
                return target(**kwargs)
            finally:
                self.fake_cpu.append(time.thread_time() - cpu)

        return call


def day_records(table: Any, day: datetime) -> list[StreamRecord]:
    """The day's transactions and chargebacks, as Kinesis would deliver them."""
    start = int(day.replace(tzinfo=UTC).timestamp())
    events = delivered_between(table, start, start + 86_400, labels="chargebacks")
    out = [
        StreamRecord(
            data=encode_event(e),
            shard_id="shardId-000000000000",
            sequence_number=f"{k:020d}",
            arrival=datetime.now(UTC),
        )
        for k, e in enumerate(events)
    ]
    return out


def run(
    table: Any,
    day: datetime,
    artifact: Path,
    *,
    batch: int,
    latency: float,
    batches: int,
    sizing: bool = True,
    save_workers: int = 32,
) -> dict[str, Any]:
    """Warm the state to ``day``, then stream ``batches`` batches of it; the figures."""
    engine, _ = states_as_of(table, int(day.replace(tzinfo=UTC).timestamp()) - 1, SERVED)
    fake = FakeAWS()
    counter: list[int] = []
    store = ddb.DynamoDBStateStore(fake, "state")  # type: ignore[arg-type]
    store.write_states(engine.store.states, engine.machines)  # type: ignore[attr-defined]
    store.usage = ddb.Usage()
    fake.written_bytes.clear()
    client: Any = Delayed(fake, latency, counter)
    store.client = client
    with tempfile.TemporaryDirectory() as tmp:
        registry = open_registry(f"file://{tmp}/registry")
        version = registry.push(artifact).version
        name = registry.list()[0].name
        registry.promote(name, version, "champion")
        scoring = StreamScoring(
            engine=OnlineFeatures(store, SERVED, save_workers=save_workers),
            router=ModelRouter(ModelLoader(registry, name, cache_dir=Path(tmp) / "cache")),
            predictions=DynamoDBPredictions(client, "predictions"),
            alerts=EventBridgeAlerts(client, "bus"),
            archive=S3Archive(client, "bucket"),
            dead_letters=SQSDeadLetters(client, "queue"),
        )
        records = day_records(table, day)[: batch * batches]
        scoring.process(records[:batch])  # warm: model load, code paths
        counter.clear()
        client.fake_cpu.clear()
        store.usage = ddb.Usage(sizing=sizing)
        fake.written_bytes.clear()
        walls, cpus = [], []
        for start in range(batch, len(records), batch):
            chunk = records[start : start + batch]
            wall, cpu = time.perf_counter(), time.process_time()
            outcomes = scoring.process(chunk)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            assert all(o.status != "retry" for o in outcomes), outcomes
    n = len(records) - batch
    prediction_units = sum(ddb.write_units(s) for s in fake.written_bytes)
    return {
        "records": n,
        "batch": batch,
        "latency_ms": latency * 1000,
        "wall_ms_p50": 1000 * statistics.median(walls),
        "wall_ms_max": 1000 * max(walls),
        "requests_per_record": len(counter) / n,
        # CPU of every thread (the saves run on a pool), less the stand-ins' own work
        "cpu_us_per_record": 1e6 * (sum(cpus) - sum(client.fake_cpu)) / n,
        "fake_cpu_us_per_record": 1e6 * sum(client.fake_cpu) / n,
        "state_write_units_per_record": store.usage.write_units / n,
        "state_read_units_per_record": store.usage.read_units / n,
        "prediction_write_units_per_record": prediction_units / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/simulated"))
    parser.add_argument("--artifact", type=Path, default=Path("data/artifacts/xgboost"))
    parser.add_argument("--day", default="2018-05-15", help="the day streamed (after a horizon)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--latency", type=float, default=0.010, help="seconds added per call")
    args = parser.parse_args()

    from models import datasets

    table = datasets.read_dataset(args.data, TRANSACTIONS_COLUMNS)
    day = datetime.fromisoformat(args.day)
    common = {"batch": args.batch, "batches": args.batches}
    slow = run(table, day, args.artifact, latency=args.latency, **common)
    # as the Lambda runs: no item sizing (DynamoDB reports the units itself)
    fast = run(table, day, args.artifact, latency=0.0, sizing=False, **common)
    print(f"\nstream batch of {args.batch} records, book day {args.day}, {slow['records']} records")
    print(
        f"  with {args.latency * 1000:.0f} ms per AWS call: p50 {slow['wall_ms_p50']:.0f} ms,"
        f" max {slow['wall_ms_max']:.0f} ms a batch (target <= 150);"
        f" {slow['requests_per_record']:.2f} AWS requests a record (target <= 3)"
    )
    print(
        f"  in-process work (no latency): {fast['cpu_us_per_record']:.0f} us a record"
        " (target <= 100)"
    )
    print(
        f"  DynamoDB units a record: state {slow['state_write_units_per_record']:.2f} WU +"
        f" {slow['state_read_units_per_record']:.2f} RU, predictions"
        f" {slow['prediction_write_units_per_record']:.2f} WU"
    )
    Path("bench/stream_results.json").write_text(
        json.dumps({"latency": slow, "no_latency": fast}, indent=2)
    )


if __name__ == "__main__":
    main()
