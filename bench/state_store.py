"""Benchmark: what the online feature state costs in DynamoDB, by DynamoDB's own rules.

Three parts, one run:

- ``book``: the handbook's data set streamed through the store as the stream path would
  (Kinesis batches of ``--batch`` records, labels a week late) after a warm-up of one
  horizon: item sizes per entity type (p50, p99, max, share <= 1 KB), write and read
  units per scored transaction, with a label per transaction ("all") and with
  chargebacks of frauds only ("chargebacks"), plus the prediction's write;
- ``busy``: a synthetic terminal at ``--busy-per-day`` transactions a day for 37 days
  (the terminal of a large merchant): features against the offline engine, the largest
  item, write and read units per event at several batch sizes;
- ``moto``: one day of the book's data through moto, comparing the units computed from
  item sizes with the ``ConsumedCapacity`` moto reports.

The store counts units from the sizes of the items it reads and writes (1 KB a write
unit, 4 KB a read unit, half for eventually consistent reads, double in a transaction),
so the ``book`` and ``busy`` parts run on an in-memory DynamoDB (:class:`FakeDynamoDB`:
conditional puts, transactions, BatchGetItem) to stream weeks of data in minutes.

    python -m bench.state_store --data data/simulated
    python -m bench.state_store --quick                 # small simulated data, smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from models.contracts import TRANSACTIONS_COLUMNS, arrow_schema
from models.features import dynamodb_store as ddb
from models.features.offline import compute_features
from models.features.online import MemoryStore, OnlineFeatures, RawEvent
from models.features.replay import LabelFeed, history_events
from models.features.spec import FEATURE_SETS, SECONDS_PER_DAY, SERVED, FeatureSpec

WRITE_PRICE = 0.625  # $ per million on-demand write request units (us-east-1)
READ_PRICE = 0.125  # $ per million on-demand read request units
TABLE = "bench-feature-state"


# --- an in-memory DynamoDB: enough of the API for the store ---------------------------


class _ConditionalCheckFailedError(Exception):
    pass


class _CancelledError(Exception):
    def __init__(self, reasons: list[dict[str, str]]) -> None:
        super().__init__("transaction cancelled")
        self.response = {"CancellationReasons": reasons}


class _Exceptions:
    ConditionalCheckFailedException = _ConditionalCheckFailedError
    TransactionCanceledException = _CancelledError
    ResourceNotFoundException = KeyError


class FakeDynamoDB:
    """The calls DynamoDBStateStore makes, on a dict; conditions as the store writes them."""

    exceptions = _Exceptions

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def _ok(self, put: dict[str, Any]) -> bool:
        item = put["Item"]
        current = self.items.get((item["pk"]["S"], item["sk"]["S"]))
        condition = put.get("ConditionExpression")
        if condition is None:
            return True
        if condition.startswith("attribute_not_exists"):
            return current is None
        expected = put["ExpressionAttributeValues"][":v"]["N"]
        return current is not None and current["v"]["N"] == expected

    def put_item(self, **put: Any) -> dict[str, Any]:
        if not self._ok(put):
            raise _ConditionalCheckFailedError
        item = put["Item"]
        self.items[(item["pk"]["S"], item["sk"]["S"])] = item
        return {}

    def transact_write_items(self, **kwargs: Any) -> dict[str, Any]:
        puts = [w["Put"] for w in kwargs["TransactItems"]]
        if not all(self._ok(p) for p in puts):
            raise _CancelledError([{"Code": "ConditionalCheckFailed"}])
        for put in puts:
            item = put["Item"]
            self.items[(item["pk"]["S"], item["sk"]["S"])] = item
        return {}

    def batch_get_item(self, **kwargs: Any) -> dict[str, Any]:
        ((table, request),) = kwargs["RequestItems"].items()
        found = [
            self.items[(k["pk"]["S"], k["sk"]["S"])]
            for k in request["Keys"]
            if (k["pk"]["S"], k["sk"]["S"]) in self.items
        ]
        return {"Responses": {table: found}, "UnprocessedKeys": {}}


# --- data -------------------------------------------------------------------------------


def busy_terminal_table(
    per_day: int, days: int, *, customers: int = 2000, fraud_rate: float = 0.01, seed: int = 0
) -> pa.Table:
    """Transactions of one terminal (id 0) at ``per_day`` a day, customers drawn at random."""
    rng = np.random.default_rng(seed)
    n = per_day * days
    start = int(datetime(2018, 4, 1).timestamp()) // SECONDS_PER_DAY * SECONDS_PER_DAY
    seconds = np.sort(start + rng.integers(0, days * SECONDS_PER_DAY, n))
    amounts = np.round(rng.gamma(2.0, 30.0, n), 2)
    fraud = (rng.random(n) < fraud_rate).astype(np.int8)
    columns = {
        "TRANSACTION_ID": np.arange(n, dtype=np.int64),
        "TX_DATETIME": seconds.astype("datetime64[s]"),
        "CUSTOMER_ID": rng.integers(0, customers, n).astype(np.int64),
        "TERMINAL_ID": np.zeros(n, dtype=np.int64),
        "TX_AMOUNT": amounts,
        "TX_TIME_SECONDS": seconds - start,
        "TX_TIME_DAYS": (seconds - start) // SECONDS_PER_DAY,
        "TX_FRAUD": fraud,
        "TX_FRAUD_SCENARIO": fraud,
    }
    return pa.table(columns, schema=arrow_schema(TRANSACTIONS_COLUMNS))


def prediction_item_size(features: dict[str, float] | None = None) -> int:
    """Size of a stored prediction item as the stream writes it (the sink's own item).

    ``features``: a transaction's served features (the book part measures its own); by
    default random float64s (17 digits each: the worst case for the body's compression).
    """
    import random
    from datetime import UTC, datetime

    from models.aws_sinks import DynamoDBPredictions
    from models.contracts import Prediction

    rng = random.Random(0)
    if features is None:
        features = {n: rng.random() * 100 for n in SERVED.feature_names()}
    prediction = Prediction(
        transaction_id=1754154, customer_id=4999, terminal_id=9999,
        tx_datetime=datetime(2018, 9, 30, 23, 59, 59), score=rng.random(), decision="low_risk",
        threshold=0.5, model_name="fraud", model_version="a" * 12, challenger_score=rng.random(),
        challenger_version="b" * 12, features=features,
        scored_at=datetime(2026, 11, 27, 14, 0, 0, 123000, tzinfo=UTC), path="stream",
    )  # fmt: skip
    sink = DynamoDBPredictions(None, "predictions")  # type: ignore[arg-type]  # builds, never sends
    return ddb.item_size(sink._item(prediction))


def percentiles(values: list[int]) -> dict[str, float]:
    """p50, p99, max and the share of values <= 1 KB."""
    a = np.asarray(values, dtype=np.float64)
    return {
        "n": len(values),
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "max": float(np.max(a)),
        "share_le_1kb": float(np.mean(a <= 1024)),
    }


def _batches(events: list[RawEvent], size: int) -> Iterator[list[RawEvent]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


# --- parts ------------------------------------------------------------------------------


def bench_book(
    table: pa.Table,
    labels: LabelFeed,
    *,
    batch: int,
    warm_days: int,
    days: int,
    spec: FeatureSpec = SERVED,
) -> dict[str, Any]:
    """Warm one horizon in memory, copy the state into DynamoDB, stream ``days`` through it."""
    events, _ = history_events(table, timedelta(days=7), labels)
    first = min(e.time for e in events)
    warm_end = first + warm_days * SECONDS_PER_DAY
    measure_end = warm_end + days * SECONDS_PER_DAY
    delivered = [e.time + (7 * SECONDS_PER_DAY if e.is_label else 0) for e in events]
    warm = [e for e, d in zip(events, delivered, strict=True) if d < warm_end]
    measured = [e for e, d in zip(events, delivered, strict=True) if warm_end <= d < measure_end]

    memory = OnlineFeatures(MemoryStore(), spec)
    for chunk in _batches(warm, 5000):
        memory.process_raw(chunk)
    client = FakeDynamoDB()
    store = ddb.DynamoDBStateStore(client, TABLE)  # type: ignore[arg-type]
    for (entity, entity_id), state in memory.store.states.items():  # type: ignore[attr-defined]
        state.version = 0  # the memory store's versions; the table is empty
        store.save((entity, entity_id), state, memory.machines[entity])
    store.usage = ddb.Usage(track_sizes=True)

    engine = OnlineFeatures(store, spec)
    n_tx = sum(1 for e in measured if not e.is_label)
    started = time.perf_counter()
    chunks = list(_batches(measured, batch))
    features: list[dict[str, float]] = []
    for chunk in tqdm(chunks, desc=f"book {labels}", leave=False, disable=None):
        scored = engine.process_raw(chunk)
        features += [{k: float(v) for k, v in r.features.items()} for r in scored if r.features]
    elapsed = time.perf_counter() - started
    predictions = [prediction_item_size(f) for f in features[::20]]  # a sample of 1 in 20
    usage = store.usage
    sizes: dict[str, list[int]] = {"CUSTOMER_ID": [], "TERMINAL_ID": []}
    for (pk, sk), item in client.items.items():
        if sk == ddb.MAIN_SK:
            sizes[pk.split("#")[0]].append(ddb.item_size(item))
    prediction = ddb.write_units(prediction_item_size())
    wu = usage.write_units / n_tx
    ru = usage.read_units / n_tx
    return {
        "spec": spec.name,
        "labels": labels,
        "batch": batch,
        "transactions": n_tx,
        "events": len(measured),
        "seconds": round(elapsed, 1),
        "item_bytes": {k: percentiles(v) for k, v in sizes.items()},
        "prediction_item_bytes": percentiles(predictions),
        "write_units_per_tx_state": round(wu, 3),
        "write_units_per_tx_with_prediction": round(wu + prediction, 3),
        "read_units_per_tx": round(ru, 3),
        "requests_per_batch": round(usage.requests / max(1, len(measured) / batch), 2),
        "items_written_per_tx": round(usage.items_written / n_tx, 3),
        "parts_written": len(usage.item_sizes.get("part", [])),
        "usd_per_million_tx": round((wu + prediction) * WRITE_PRICE + ru * READ_PRICE, 3),
    }


def bench_busy(
    per_day: int, days: int, batches: tuple[int, ...], measure_days: float = 1.0
) -> dict[str, Any]:
    """A terminal at ``per_day`` a day: exactness, largest items, units per event.

    The whole history streams in batches of 1,000 (exactness over all of it); then the
    last ``measure_days`` stream again from the state before them at each batch size,
    which gives the units per event of a terminal that is past its first horizon.
    """
    table = busy_terminal_table(per_day, days)
    expected = compute_features(table)
    events, rows = history_events(table, timedelta(days=7), "chargebacks")
    delivered = np.array([e.time + 7 * SECONDS_PER_DAY * e.is_label for e in events])
    last_tx = max(e.time for e in events if not e.is_label)
    split = int(np.searchsorted(delivered, last_tx - measure_days * SECONDS_PER_DAY))
    end = int(np.searchsorted(delivered, last_tx, side="right"))

    def stream(
        client: FakeDynamoDB, lo: int, hi: int, batch: int
    ) -> tuple[ddb.DynamoDBStateStore, float, float]:
        store = ddb.DynamoDBStateStore(client, TABLE)  # type: ignore[arg-type]
        engine = OnlineFeatures(store)
        worst = 0.0
        started = time.perf_counter()
        chunks = range(lo, hi, batch)
        for start in tqdm(chunks, desc=f"busy x{batch}", leave=False, disable=None):
            end = min(start + batch, hi)
            for scored, row in zip(
                engine.process_raw(events[start:end]), rows[start:end], strict=True
            ):
                if scored.features is not None:
                    diffs = [abs(scored.features[n] - expected[n][row]) for n in expected]
                    worst = max(worst, *diffs)
        return store, worst, time.perf_counter() - started

    client = FakeDynamoDB()
    _, warm_diff, warm_seconds = stream(client, 0, split, 1000)
    snapshot = dict(client.items)
    out: dict[str, Any] = {
        "per_day": per_day,
        "days": days,
        "transactions": table.num_rows,
        "measured_events": end - split,
        "max_abs_diff_vs_offline_warm": warm_diff,
        "warm_seconds": round(warm_seconds, 1),
    }
    machine = OnlineFeatures(MemoryStore()).machines["TERMINAL_ID"]
    for batch in batches:
        client = FakeDynamoDB()
        client.items = dict(snapshot)
        store, diff, elapsed = stream(client, split, end, batch)
        usage = store.usage
        n = end - split
        main = client.items[("TERMINAL_ID#0", ddb.MAIN_SK)]
        state = ddb.decode_main(main["d"]["B"], machine)
        parts = [
            ddb.item_size(item)
            for (pk, sk), item in client.items.items()
            if pk == "TERMINAL_ID#0" and sk != ddb.MAIN_SK
        ]
        out[f"batch_{batch}"] = {
            "max_abs_diff_vs_offline": diff,
            "terminal_main_item_bytes": ddb.item_size(main),
            "largest_part_bytes": max(parts, default=0),
            "parts": len(parts),
            "tile_seconds": state.tiles.seconds if state.tiles else None,
            "tiles": len(state.tiles.ids) if state.tiles else 0,
            "write_units_per_event": round(usage.write_units / n, 4),
            "read_units_per_event": round(usage.read_units / n, 4),
            "terminal_write_units_per_event": round(
                usage.write_units_by_entity.get("TERMINAL_ID", 0.0) / n, 4
            ),
            "terminal_read_units_per_event": round(
                usage.read_units_by_entity.get("TERMINAL_ID", 0.0) / n, 4
            ),
            "requests_per_batch": round(usage.requests / (n / batch), 2),
            "seconds": round(elapsed, 1),
        }
    return out


def bench_moto(table: pa.Table, day: int) -> dict[str, Any]:
    """Computed units against moto's ConsumedCapacity, on one day after a warm-up."""
    import os

    import boto3
    from moto import mock_aws

    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}.items():
        os.environ.setdefault(k, v)
    events, _ = history_events(table, timedelta(days=7), "chargebacks")
    first = min(e.time for e in events)
    lo, hi = first + day * SECONDS_PER_DAY, first + (day + 1) * SECONDS_PER_DAY
    chosen = [e for e in events if lo <= e.time + (7 * SECONDS_PER_DAY) * e.is_label < hi]
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        ddb.create_table(client, TABLE)
        store = ddb.DynamoDBStateStore(client, TABLE)
        engine = OnlineFeatures(store)
        for chunk in _batches(chosen[:3000], 100):
            engine.process_raw(chunk)
    u = store.usage
    return {
        "events": min(len(chosen), 3000),
        "computed_write_units": u.write_units,
        "reported_write_units": u.reported_write_units,
        "computed_read_units": u.read_units,
        "reported_read_units": u.reported_read_units,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="simulated dataset")
    parser.add_argument("--batch", type=int, default=100, help="Kinesis batch size")
    parser.add_argument("--warm-days", type=int, default=40)
    parser.add_argument("--days", type=int, default=7, help="days streamed and measured")
    parser.add_argument(
        "--busy-per-day",
        default="2500,10000",
        help="comma-separated rates of the busy terminal (transactions a day)",
    )
    parser.add_argument("--busy-days", type=int, default=37)
    parser.add_argument("--quick", action="store_true", help="small data, smoke run")
    parser.add_argument(
        "--parts", default="book,busy,moto", help="comma-separated: book, busy, moto"
    )
    parser.add_argument(
        "--specs",
        default="baseline,improved",
        help="comma-separated feature sets of the book part (their state sizes compare)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/state_store_results.json"))
    args = parser.parse_args()

    from models import datasets, simulator

    if args.quick:
        config = simulator.SimulationConfig(n_customers=500, n_terminals=1000, nb_days=50)
        table = simulator.simulate(config).to_arrow()
        args.warm_days, args.days, args.busy_per_day, args.busy_days = 38, 3, "2000", 12
    elif args.data is not None:
        table = datasets.read_dataset(args.data, TRANSACTIONS_COLUMNS)
    else:
        table = simulator.simulate(simulator.SimulationConfig()).to_arrow()

    parts = set(args.parts.split(","))
    # parts run separately update the same results file
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["prediction_item_bytes"] = prediction_item_size()
    if "book" in parts:
        results["book"] = [
            bench_book(
                table,
                feed,
                batch=args.batch,
                warm_days=args.warm_days,
                days=args.days,
                spec=FEATURE_SETS[name],
            )
            for name in args.specs.split(",")
            for feed in ("chargebacks", "all")
        ]
        served = [r for r in results["book"] if r["spec"] == SERVED.name]
        if served:  # what rtml cost prices: the median stored prediction of the book's rows
            results["prediction_item_bytes"] = int(served[0]["prediction_item_bytes"]["p50"])
    if "busy" in parts:
        results["busy"] = [
            bench_busy(int(rate), args.busy_days, (1, 100, 1000))
            for rate in args.busy_per_day.split(",")
        ]
    if "moto" in parts:
        results["moto"] = bench_moto(table, args.warm_days)
    args.out.write_text(json.dumps(results, indent=2))
    report(results)


def report(results: dict[str, Any]) -> None:
    """Print the figures as tables."""
    if "book" in results:
        report_book(results)
    for busy in results.get("busy", []):
        report_busy(busy)
    if "moto" in results:
        m = results["moto"]
        print(
            f"\nmoto, {m['events']} events: write units computed"
            f" {m['computed_write_units']:.0f}, reported {m['reported_write_units']:.0f};"
            f" read units computed {m['computed_read_units']:.0f},"
            f" reported {m['reported_read_units']:.0f} (moto reports 1.0 an item or call"
            " whatever its size, and nothing for transactions: a check of counts, not sizes)"
        )


def report_book(results: dict[str, Any]) -> None:
    """The book part's tables."""
    print(f"\nbook data, Kinesis batches of {results['book'][0]['batch']} records")
    print(f"{'spec':<20}{'labels':<12}{'entity':<13}{'p50 B':>7}{'p99 B':>7}{'max B':>7}"
          f"{'<=1KB':>7}")  # fmt: skip
    for r in results["book"]:
        for entity, s in r["item_bytes"].items():
            print(
                f"{r.get('spec', 'handbook_baseline'):<20}{r['labels']:<12}{entity:<13}"
                f"{s['p50']:7.0f}{s['p99']:7.0f}{s['max']:7.0f}{s['share_le_1kb']:7.1%}"
            )
    print(
        f"\n{'spec':<20}{'labels':<12}{'WU/tx state':>12}{'+prediction':>12}{'RU/tx':>8}"
        f"{'req/batch':>10}{'$/M tx':>8}"
    )
    for r in results["book"]:
        print(
            f"{r.get('spec', 'handbook_baseline'):<20}"
            f"{r['labels']:<12}{r['write_units_per_tx_state']:12.3f}"
            f"{r['write_units_per_tx_with_prediction']:12.3f}{r['read_units_per_tx']:8.3f}"
            f"{r['requests_per_batch']:10.2f}{r['usd_per_million_tx']:8.3f}"
        )


def report_busy(busy: dict[str, Any]) -> None:
    """The busy terminal's table."""
    print(
        f"\nbusy terminal: {busy['per_day']:,} transactions a day for {busy['days']} days;"
        f" max |online - offline| {busy['max_abs_diff_vs_offline_warm']:.1e} over the first"
        f" {busy['days'] - 1} days, then the last day ({busy['measured_events']:,} events)"
        " again per batch size:"
    )
    print(
        f"{'batch':>6}{'max diff':>10}{'main B':>8}{'part B':>8}{'tile s':>7}"
        f"{'WU/event':>9}{'RU/event':>9}{'terminal WU':>12}{'terminal RU':>12}{'req/batch':>10}"
    )
    for key, r in busy.items():
        if key.startswith("batch_"):
            print(
                f"{key[6:]:>6}{r['max_abs_diff_vs_offline']:10.1e}"
                f"{r['terminal_main_item_bytes']:8d}{r['largest_part_bytes']:8d}"
                f"{r['tile_seconds'] or 0:7d}"
                f"{r['write_units_per_event']:9.3f}{r['read_units_per_event']:9.3f}"
                f"{r['terminal_write_units_per_event']:12.3f}"
                f"{r['terminal_read_units_per_event']:12.3f}{r['requests_per_batch']:10.2f}"
            )


if __name__ == "__main__":
    main()
