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
from models.contracts import (
    FEATURE_STATE_TTL,
    FEATURE_TABLE_COLUMNS,
    TRANSACTIONS_COLUMNS,
    LabelEvent,
    TransactionEvent,
)
from models.features import dynamodb_store as ddb
from models.features.online import (
    EntityKey,
    EntityMachine,
    EntityState,
    MemoryStore,
    OnlineFeatures,
    RawEvent,
    Scored,
    epoch_seconds,
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


def assert_same_scores(got: list[Scored], expected: list[Scored]) -> None:
    """Equal outcomes, counts, and other features to 1e-9 (tile sums add in another order)."""
    assert [s.outcomes for s in got] == [s.outcomes for s in expected]
    for g, e in zip(got, expected, strict=True):
        if e.features is None:
            assert g.features is None
            continue
        assert g.features is not None
        assert g.features == pytest.approx(e.features, abs=1e-9, rel=0)
        counts = [n for n in e.features if "_NB_TX_" in n]
        assert [g.features[n] for n in counts] == [e.features[n] for n in counts]


def side_by_side(
    store: ddb.DynamoDBStateStore, history: list[RawEvent], batch: int
) -> tuple[list[Scored], list[Scored]]:
    """The history through the store and through memory: (store's, memory's)."""
    memory, dynamo = OnlineFeatures(MemoryStore()), OnlineFeatures(store)
    got, expected = [], []
    for start in range(0, len(history), batch):
        chunk = history[start : start + batch]
        expected += memory.process_raw(chunk)
        got += dynamo.process_raw(chunk)
    return got, expected


def test_dynamodb_store_gives_the_memory_store_features(
    store: ddb.DynamoDBStateStore, small_history: list[RawEvent]
) -> None:
    # given the same history through both stores, in Kinesis-sized batches
    # when
    got, expected = side_by_side(store, small_history, 100)
    # then (the history is longer than the horizon: trimming and labels are exercised)
    assert len(small_history) > 400
    assert_same_scores(got, expected)


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

    def save_after_interference(
        key: EntityKey, state: EntityState, machine: EntityMachine, *, seal: bool = True
    ) -> None:
        nonlocal interfered
        if key == ("TERMINAL_ID", 7) and not interfered:
            interfered = True  # the other shard writes terminal 7 between our read and write
            other.process([tx(2, T0 + timedelta(seconds=5), customer=2)])
        original_save(key, state, machine, seal=seal)

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


def main_items(dynamodb: DynamoDBClient) -> dict[str, dict[str, Any]]:
    items = dynamodb.scan(TableName=TABLE)["Items"]
    return {i["pk"]["S"] + "|" + i["sk"]["S"]: i for i in items}


def test_dynamodb_store_keeps_one_small_item_per_entity(
    store: ddb.DynamoDBStateStore, small_history: list[RawEvent], dynamodb: DynamoDBClient
) -> None:
    # given a history of ordinary entities (tens of events a month)
    store.usage.track_sizes = True
    engine = OnlineFeatures(store)
    for start in range(0, len(small_history), 100):
        engine.process_raw(small_history[start : start + 100])
    # then every entity has one main item of at most a write unit
    items = main_items(dynamodb)
    entities = {f"CUSTOMER_ID#{e.customer_id}" for e in small_history}
    entities |= {f"TERMINAL_ID#{e.terminal_id}" for e in small_history}
    mains = {key.split("|")[0]: item for key, item in items.items() if key.endswith("|S")}
    assert set(mains) == entities
    assert max(ddb.item_size(i) for i in mains.values()) <= 1024
    # and most are nothing else: those whose events outgrew a KB (this tiny simulation's
    # cards spend wildly: its fraud scenario compounds) keep older events in tile parts
    tiled = {key.split("|")[0] for key in items if "|T#" in key}
    assert len(tiled) < len(entities) / 2
    for pk, item in mains.items():
        state = ddb.decode_main(item["d"]["B"], engine.machines[pk.split("#")[0]])
        assert (state.tiles is not None) == (pk in tiled)
    # written with one conditional PutItem each, but for the seals of the tiled ones
    sizes = store.usage.item_sizes
    flat_writes = store.usage.items_written - len(sizes.get("part", [])) * 2
    assert flat_writes > 0
    ttl = {int(i[FEATURE_STATE_TTL]["N"]) for i in mains.values()}
    assert ttl <= {int(NOW) + 30 * 86400 + 86400, int(NOW) + 37 * 86400 + 86400}


@pytest.mark.parametrize(
    "layout",
    [
        {"item_bytes": 0, "seal_bytes": 100, "tile_seconds": 3600},
        {"item_bytes": 0, "seal_bytes": 200},
        {"item_bytes": 0, "seal_bytes": 60, "tile_seconds": 86400, "max_part_events": 3},
    ],
    ids=["hour-tiles", "chosen-tiles", "day-tiles-small-parts"],
)
def test_dynamodb_store_tiled_entities_give_the_memory_store_features(
    dynamodb: DynamoDBClient, small_history: list[RawEvent], layout: dict[str, Any]
) -> None:
    # given a store that seals almost at once, so that every entity is tiled
    ddb.create_table(dynamodb, TABLE)
    store = ddb.DynamoDBStateStore(dynamodb, TABLE, clock=lambda: NOW, **layout)
    # when the same history goes through both
    got, expected = side_by_side(store, small_history, 50)
    # then the same outcomes and features
    assert_same_scores(got, expected)
    parts = [k for k in main_items(dynamodb) if "|T#" in k]
    assert parts, "the layout under test must have sealed tiles"


def test_dynamodb_store_redelivery_writes_nothing(
    store: ddb.DynamoDBStateStore, small_history: list[RawEvent]
) -> None:
    engine = OnlineFeatures(store)
    batch = small_history[:80]
    engine.process_raw(batch)
    written = store.usage.items_written
    # when Kinesis delivers the batch again
    engine.process_raw(batch)
    # then it costs reads only
    assert store.usage.items_written == written


def test_lookup_reads_eventually_consistent_and_writes_nothing(
    store: ddb.DynamoDBStateStore, small_history: list[RawEvent]
) -> None:
    # given state built by the stream
    engine = OnlineFeatures(store)
    engine.process_raw(small_history[:300])
    written = store.usage.items_written
    next_tx = [e for e in small_history[300:] if not e.is_label][:5]
    calls: list[bool] = []
    real = store.client.batch_get_item

    def spy(**kwargs: Any) -> Any:
        calls.append(kwargs["RequestItems"][TABLE]["ConsistentRead"])
        return real(**kwargs)

    store.client.batch_get_item = spy  # type: ignore[method-assign]
    # when the API looks up the next transactions
    looked_up = engine.lookup(next_tx)
    # then an eventually consistent read of the main items (and a strongly consistent one of
    # the tile parts of busy entities: a replica may lag a fresh seal), no write, and the
    # very features the stream computes when it applies them
    assert calls in ([False], [False, True])
    assert store.usage.items_written == written
    store.client.batch_get_item = real  # type: ignore[method-assign]
    applied = OnlineFeatures(MemoryStore())
    applied.process_raw(small_history[:300])
    for mine, theirs in zip(looked_up, applied.process_raw(next_tx), strict=True):
        assert mine == pytest.approx(theirs.features, abs=1e-9, rel=0)
    with pytest.raises(ValueError, match="transactions only"):
        engine.lookup([e for e in small_history if e.is_label][:1])


def test_dynamodb_store_conditional_put_conflict_is_retried_with_backoff(
    store: ddb.DynamoDBStateStore,
) -> None:
    # given a client whose first conditional PutItem loses to another writer
    real = store.client
    attempts: list[int] = []

    class Contended:
        exceptions = real.exceptions

        def put_item(self, **kwargs: Any) -> dict[str, Any]:
            attempts.append(1)
            if len(attempts) == 1:
                raise real.exceptions.ConditionalCheckFailedException(
                    {"Error": {"Code": "ConditionalCheckFailedException", "Message": "x"}},
                    "PutItem",
                )
            return dict(real.put_item(**kwargs))

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    store.client = Contended()  # type: ignore[assignment]
    pauses: list[float] = []
    engine = OnlineFeatures(store, sleep=pauses.append)
    # when
    (scored,) = engine.process([tx(1, T0)])
    # then the lost write was read again, re-applied and written, after a short pause
    assert scored.outcomes == {"CUSTOMER_ID": "applied", "TERMINAL_ID": "applied"}
    assert len(pauses) == 1 and 0 < pauses[0] <= 0.01
    assert len(attempts) == 3  # customer (lost), customer again, terminal


def busy_terminal(n: int, start: datetime, every: timedelta) -> list[TransactionEvent]:
    return [tx(i, start + i * every, customer=1000 + i % 50) for i in range(n)]


def test_dynamodb_store_transaction_conflict_on_a_tiled_entity_is_retried(
    dynamodb: DynamoDBClient,
) -> None:
    # given a tiled terminal whose next write carries new tile parts
    ddb.create_table(dynamodb, TABLE)
    store = ddb.DynamoDBStateStore(dynamodb, TABLE, item_bytes=0, seal_bytes=32, tile_seconds=3600)
    engine = OnlineFeatures(store, sleep=lambda _: None)
    engine.process(busy_terminal(40, T0, timedelta(minutes=7)))
    real = store.client
    cancelled: list[int] = []

    class Contended:
        exceptions = real.exceptions

        def transact_write_items(self, **kwargs: Any) -> dict[str, Any]:
            if not cancelled:
                cancelled.append(1)
                raise real.exceptions.TransactionCanceledException(
                    {
                        "Error": {"Code": "TransactionCanceledException", "Message": "x"},
                        "CancellationReasons": [{"Code": "TransactionConflict"}, {"Code": "None"}],
                    },
                    "TransactWriteItems",
                )
            return dict(real.transact_write_items(**kwargs))

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    store.client = Contended()  # type: ignore[assignment]
    # when
    more = busy_terminal(60, T0, timedelta(minutes=7))[40:]
    engine.process(more)
    # then the write was retried and the terminal holds every event, in its tiles
    assert cancelled == [1]
    states = store.load(
        {("TERMINAL_ID", 7): [(int(T0.timestamp()) + 60 * 7 * 60, 0, False)]}, engine.machines
    )
    terminal = states[("TERMINAL_ID", 7)]
    assert terminal.tiles is not None
    assert (
        sum(terminal.tiles.counts)
        + len(terminal.keys)
        - sum(1 for k in terminal.keys if k < terminal.tiles.frontier)
        == 60
    )


def test_dynamodb_store_missing_tile_part_is_a_clear_error(dynamodb: DynamoDBClient) -> None:
    ddb.create_table(dynamodb, TABLE)
    store = ddb.DynamoDBStateStore(dynamodb, TABLE, item_bytes=0, seal_bytes=64, tile_seconds=3600)
    engine = OnlineFeatures(store)
    engine.process(busy_terminal(60, T0, timedelta(minutes=7)))
    # given the part of the tile that the 8-day edge of the next transaction cuts is gone
    at = T0 + timedelta(days=8, hours=1)
    edge_tile = epoch_seconds(at - timedelta(days=8)) // 3600
    assert f"TERMINAL_ID#7|T#{edge_tile}#0" in main_items(dynamodb)
    dynamodb.delete_item(
        TableName=TABLE, Key={"pk": {"S": "TERMINAL_ID#7"}, "sk": {"S": f"T#{edge_tile}#0"}}
    )
    # when that transaction arrives, then the store says what is missing
    with pytest.raises(ddb.MissingStateError, match=r"TERMINAL_ID#7: tile part T#\d+#\d+"):
        engine.process([tx(999, at, customer=5)])


def throttled(error_code: str = "ProvisionedThroughputExceededException") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": error_code, "Message": "slow down"}}, "PutItem")


def test_a_failed_save_marks_exactly_the_records_of_that_entity(
    store: ddb.DynamoDBStateStore, dynamodb: DynamoDBClient
) -> None:
    # given the table throttles every write of terminal 7 for now
    real_save = store.save
    outage = {"on": True}

    def save(
        key: EntityKey, state: EntityState, machine: EntityMachine, *, seal: bool = True
    ) -> None:
        if outage["on"] and key == ("TERMINAL_ID", 7):
            raise throttled()
        real_save(key, state, machine, seal=seal)

    store.save = save  # type: ignore[method-assign]
    engine = OnlineFeatures(store, save_workers=4)
    batch = [tx(1, T0, customer=1, terminal=7), tx(2, T0, customer=2, terminal=8)]
    # when (a stream handler asks for per-record outcomes)
    first = engine.process_raw([RawEvent.from_event(e) for e in batch], strict=False)
    # then only the record that touches terminal 7 failed, with the store's reason
    assert first[0].error is not None and "ProvisionedThroughputExceeded" in str(first[0].error)
    assert first[1].error is None
    # and strict mode (replays) raises it
    with pytest.raises(Exception, match="ProvisionedThroughputExceeded"):
        engine.process_raw([RawEvent.from_event(tx(3, T0, customer=3, terminal=7))])
    # when the record is delivered again after the outage
    outage["on"] = False
    (again,) = engine.process_raw([RawEvent.from_event(batch[0])], strict=False)
    # then it completes: the card had it already, the terminal takes it now
    assert again.error is None
    assert again.outcomes == {"CUSTOMER_ID": "duplicate", "TERMINAL_ID": "applied"}
    assert again.features == first[0].features


def test_concurrent_saves_give_the_sequential_result(
    dynamodb: DynamoDBClient, small_history: list[RawEvent]
) -> None:
    # given a pool of 8 writers for the entities of each batch
    ddb.create_table(dynamodb, TABLE)
    store = ddb.DynamoDBStateStore(dynamodb, TABLE, clock=lambda: NOW)
    memory = OnlineFeatures(MemoryStore())
    pooled = OnlineFeatures(store, save_workers=8)
    # when
    got, expected = [], []
    for start in range(0, len(small_history), 100):
        chunk = small_history[start : start + 100]
        expected += memory.process_raw(chunk)
        got += pooled.process_raw(chunk)
    # then the same outcomes and features, and every write counted once
    assert_same_scores(got, expected)
    written = dynamodb.scan(TableName=TABLE, Select="COUNT")["Count"]
    assert store.usage.items_written >= written > 0


def test_materialize_gives_the_state_a_replay_would(
    dynamodb: DynamoDBClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a simulated history and a feature-state table
    from rtml import cli

    ddb.create_table(dynamodb, TABLE)
    sim_dir = tmp_path / "sim"
    args = ["--customers", "6", "--terminals", "8", "--days", "45", "--radius", "50"]
    assert cli.main(["simulate", *args, "--out", str(sim_dir)]) == 0
    capsys.readouterr()
    as_of = datetime(2018, 5, 8, 12)
    # when the state as of day 37 is materialized in bulk (chargebacks only)
    code = cli.main(
        [
            "features", "materialize", "--in", str(sim_dir), "--table", TABLE,
            "--as-of", as_of.isoformat(), "--labels", "chargebacks", "--json",
        ]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0 < summary["entities"] <= 6 + 8
    assert summary["items"] >= summary["entities"]
    # then the rest of the history streamed on top gives the features a replay gives
    table = datasets.read_dataset(sim_dir, TRANSACTIONS_COLUMNS)
    events, _ = history_events(table, timedelta(days=7), "chargebacks")
    cut = epoch_seconds(as_of)
    later = [e for e in events if e.time + 7 * 86400 * e.is_label > cut]
    replayed = OnlineFeatures(MemoryStore())
    replayed.process_raw([e for e in events if e.time + 7 * 86400 * e.is_label <= cut])
    expected = replayed.process_raw(later)
    store = ddb.DynamoDBStateStore(dynamodb, TABLE)
    got = []
    for start in range(0, len(later), 100):
        got += OnlineFeatures(store).process_raw(later[start : start + 100])
    assert len(later) > 50
    assert_same_scores(got, expected)


def test_materialize_refuses_a_bad_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rtml import cli

    sim_dir = tmp_path / "sim"
    cli.main(["simulate", "--customers", "2", "--days", "2", "--out", str(sim_dir)])
    capsys.readouterr()
    code = cli.main(
        ["features", "materialize", "--in", str(sim_dir), "--table", "t", "--as-of", "soon"]
    )
    assert code == 1
    assert "--as-of" in capsys.readouterr().err


def test_labels_spanning_more_parts_than_a_transaction_takes_are_written(
    dynamodb: DynamoDBClient,
) -> None:
    # given a terminal whose 150 transactions sit in 150 sealed tile parts
    ddb.create_table(dynamodb, TABLE)
    store = ddb.DynamoDBStateStore(
        dynamodb, TABLE, item_bytes=0, seal_bytes=0, tile_seconds=900, clock=lambda: NOW
    )
    engine, memory = OnlineFeatures(store), OnlineFeatures(MemoryStore())
    sales = [tx(i, T0 + timedelta(minutes=15 * i), customer=i) for i in range(150)]
    for start in range(0, 150, 10):
        engine.process(sales[start : start + 10])
        memory.process(sales[start : start + 10])
    # when one batch charges back every one of them (150 parts: over a transaction's 100)
    chargebacks = [
        LabelEvent(
            transaction_id=e.transaction_id,
            tx_datetime=e.tx_datetime,
            customer_id=e.customer_id,
            terminal_id=e.terminal_id,
            tx_fraud=1,
        )
        for e in sales
    ]
    got, expected = engine.process(chargebacks), memory.process(chargebacks)
    # then they are written (mid-batch, in transactions of under 100 items) and counted
    assert_same_scores(got, expected)
    later = [tx(999, T0 + timedelta(days=8), customer=999)]
    assert_same_scores(engine.process(later), memory.process(later))
    assert engine.process(later)[0].outcomes["TERMINAL_ID"] == "duplicate"


def test_materialize_seals_a_busy_entity_whole(dynamodb: DynamoDBClient) -> None:
    # given a terminal state of 3,000 events over 5 days, never written
    ddb.create_table(dynamodb, TABLE)
    memory = OnlineFeatures(MemoryStore())
    sales = [tx(i, T0 + timedelta(minutes=2 * i), customer=i % 40) for i in range(3000)]
    memory.process(sales)
    store = ddb.DynamoDBStateStore(dynamodb, TABLE, tile_seconds=900, clock=lambda: NOW)
    live: dict[EntityKey, EntityState] = memory.store.states  # type: ignore[attr-defined]
    states = {k: v.copy() for k, v in live.items()}
    # when it is written in bulk (no transaction, so no limit of 100 items)
    store.write_states(states, memory.machines)
    # then every event is sealed into parts and the main item stays small
    items = main_items(dynamodb)
    parts = [k for k in items if k.startswith("TERMINAL_ID#7|T#")]
    assert len(parts) > 100
    assert ddb.item_size(items["TERMINAL_ID#7|S"]) < 4096
    later = [tx(5000, T0 + timedelta(days=8), customer=1)]
    assert_same_scores(OnlineFeatures(store).process(later), memory.process(later))
