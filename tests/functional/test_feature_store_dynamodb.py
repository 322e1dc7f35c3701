"""The DynamoDB feature-state store on moto: same features as memory, idempotent, no lost
update under concurrent writers, bounded items, TTL on processing time."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pytest

from models import datasets
from models import simulator as sim
from models.contracts import FEATURE_STATE_TTL, FEATURE_TABLE_COLUMNS, LabelEvent, TransactionEvent
from models.features import dynamodb_store as ddb
from models.features.online import (
    EntityKey,
    EntityMachine,
    EntityState,
    MemoryStore,
    OnlineFeatures,
    RawEvent,
)
from models.features.replay import history_events

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.functional
TABLE = "test-feature-state"
T0 = datetime(2018, 4, 1, 12)
NOW = 1_900_000_000.0


@pytest.fixture
def store(dynamodb: DynamoDBClient) -> ddb.DynamoDBStateStore:
    ddb.create_table(dynamodb, TABLE)
    return ddb.DynamoDBStateStore(dynamodb, TABLE, clock=lambda: NOW, sleep=lambda _: None)


def tx(tx_id: int, at: datetime, customer: int = 1, terminal: int = 7) -> TransactionEvent:
    return TransactionEvent(
        transaction_id=tx_id,
        tx_datetime=at,
        customer_id=customer,
        terminal_id=terminal,
        tx_amount=10.0 + tx_id,
    )


@pytest.fixture(scope="module")
def small_history() -> list[RawEvent]:
    config = sim.SimulationConfig(n_customers=4, n_terminals=5, nb_days=42, radius=40.0)
    table: pa.Table = sim.simulate(config).to_arrow()
    events, _ = history_events(table, timedelta(days=7))
    return events


def test_dynamodb_store_gives_the_memory_store_features(
    store: ddb.DynamoDBStateStore, small_history: list[RawEvent]
) -> None:
    # given the same history through both stores, in Kinesis-sized batches
    memory, dynamo = OnlineFeatures(MemoryStore()), OnlineFeatures(store)
    # when
    got, expected = [], []
    for start in range(0, len(small_history), 100):
        batch = small_history[start : start + 100]
        expected += memory.process_raw(batch)
        got += dynamo.process_raw(batch)
    # then (the history is longer than the horizon: trimming and labels are exercised)
    assert len(small_history) > 400
    assert [s.features for s in got] == [s.features for s in expected]
    assert [s.outcomes for s in got] == [s.outcomes for s in expected]


def test_dynamodb_store_duplicate_delivery_is_idempotent(
    store: ddb.DynamoDBStateStore, small_history: list[RawEvent]
) -> None:
    engine = OnlineFeatures(store)
    batch = small_history[:80]
    first = engine.process_raw(batch)
    # when the whole batch is delivered again (a Kinesis retry)
    again = engine.process_raw(batch)
    # then nothing is applied twice and the features are the same
    assert all(set(s.outcomes.values()) == {"duplicate"} for s in again)
    assert [s.features for s in again] == [s.features for s in first]


def test_dynamodb_store_concurrent_writers_lose_no_update(store: ddb.DynamoDBStateStore) -> None:
    # given two workers (two shards) that both hit terminal 7
    other = OnlineFeatures(ddb.DynamoDBStateStore(store.client, TABLE, clock=lambda: NOW))
    other.process([tx(1, T0, customer=1)])
    conflicts: list[int] = []
    worker = OnlineFeatures(store, on_conflict=conflicts.append)
    original_save = store.save
    interfered = False

    def save_after_interference(key: EntityKey, state: EntityState, machine: EntityMachine) -> None:
        nonlocal interfered
        if key == ("TERMINAL_ID", 7) and not interfered:
            interfered = True  # the other shard writes terminal 7 between our read and write
            other.process([tx(2, T0 + timedelta(seconds=5), customer=2)])
        original_save(key, state, machine)

    store.save = save_after_interference  # type: ignore[method-assign]
    # when
    worker.process([tx(3, T0 + timedelta(seconds=10), customer=3)])
    # then our write conflicted once, was retried, and the terminal holds all three
    assert conflicts == [1]
    machines = worker.machines
    states = store.load({("TERMINAL_ID", 7): []}, machines)
    terminal = states[("TERMINAL_ID", 7)]
    assert sorted(k[1] for k in terminal.keys) == [1, 2, 3]
    assert terminal.version == 3
    assert terminal.counters["applied"] == 3


def test_dynamodb_store_retries_unprocessed_keys(store: ddb.DynamoDBStateStore) -> None:
    # given a client that throttles the first BatchGetItem (returns every key unprocessed)
    real = store.client
    calls: list[int] = []

    class Throttling:
        exceptions = real.exceptions

        def batch_get_item(self, **kwargs: Any) -> dict[str, Any]:
            calls.append(1)
            if len(calls) == 1:
                return {"Responses": {}, "UnprocessedKeys": kwargs["RequestItems"]}
            return dict(real.batch_get_item(**kwargs))

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    store.client = Throttling()  # type: ignore[assignment]
    # when
    (scored,) = OnlineFeatures(store).process([tx(1, T0)])
    # then the read was retried and the event applied
    assert len(calls) == 2
    assert scored.outcomes == {"CUSTOMER_ID": "applied", "TERMINAL_ID": "applied"}


def test_dynamodb_store_label_events_update_terminal_risk(store: ddb.DynamoDBStateStore) -> None:
    engine = OnlineFeatures(store)
    old = tx(1, T0 - timedelta(days=10))
    engine.process([old])
    engine.process(
        [
            LabelEvent(
                transaction_id=1,
                tx_datetime=old.tx_datetime,
                customer_id=1,
                terminal_id=7,
                tx_fraud=1,
            )
        ]
    )
    (now,) = engine.process([tx(2, T0, customer=5)])
    assert now.features is not None
    assert now.features["TERMINAL_ID_RISK_7DAY_WINDOW"] == 1.0


def test_cli_online_features_against_dynamodb(
    dynamodb: DynamoDBClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a small simulated dataset and a feature-state table
    from rtml import cli

    ddb.create_table(dynamodb, TABLE)
    sim_dir, out_dir = tmp_path / "sim", tmp_path / "features"
    args = ["--customers", "3", "--terminals", "4", "--days", "10", "--radius", "50"]
    assert cli.main(["simulate", *args, "--out", str(sim_dir)]) == 0
    assert cli.main(["features", "--in", str(sim_dir), "--out", str(out_dir / "offline")]) == 0
    capsys.readouterr()
    # when the online engine replays it through DynamoDB
    online_args = ["--engine", "online", "--store", "dynamodb", "--table", TABLE, "--json"]
    code = cli.main(
        ["features", *online_args, "--in", str(sim_dir), "--out", str(out_dir / "online")]
    )
    # then the feature table equals the offline one
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counters"]["applied"] == 2 * summary["n_rows"]
    offline = datasets.read_dataset(out_dir / "offline", FEATURE_TABLE_COLUMNS)
    online = datasets.read_dataset(out_dir / "online", FEATURE_TABLE_COLUMNS)
    assert offline.num_rows > 0
    for name in offline.column_names:
        np.testing.assert_allclose(
            online.column(name).to_numpy().astype(float),
            offline.column(name).to_numpy().astype(float),
            rtol=0,
            atol=1e-9,
        )


def test_cli_online_features_missing_table_is_one_line(
    dynamodb: DynamoDBClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rtml import cli

    sim_dir = tmp_path / "sim"
    cli.main(["simulate", "--customers", "2", "--days", "2", "--out", str(sim_dir)])
    capsys.readouterr()
    online_args = ["--engine", "online", "--store", "dynamodb", "--table", "nope"]
    code = cli.main(["features", *online_args, "--in", str(sim_dir), "--out", str(tmp_path / "f")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rtml: error:") and "nope" in err[-1]


