"""The batch job's entity-bucket chunks give exactly the offline features of a day, while
each chunk reads only its bucket's history."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from batch.chunks import (
    SECONDS_PER_DAY,
    assemble,
    bucket_history,
    bucket_of,
    entity_stage,
    history_days,
    rows_of_day,
    split_by_bucket,
)
from models import datasets
from models.contracts import TRANSACTIONS_COLUMNS
from models.features.offline import compute_features
from models.features.spec import BASELINE


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    from rtml import cli

    out: Path = tmp_path_factory.mktemp("sim")
    args = ["simulate", "--customers", "60", "--terminals", "120", "--days", "50",
            "--radius", "20", "--out", str(out)]  # fmt: skip
    assert cli.main(args) == 0
    return datasets.read_dataset(out, TRANSACTIONS_COLUMNS)


def test_buckets_are_stable_and_even() -> None:
    ids = np.arange(100_000)
    buckets = bucket_of(ids, 8)
    assert buckets.tolist()[:10] == bucket_of(ids[:10], 8).tolist()
    shares = np.bincount(buckets, minlength=8) / len(ids)
    assert np.all(np.abs(shares - 1 / 8) < 0.01)
    assert bucket_of([2**63 - 1], 3)[0] in (0, 1, 2)
    with pytest.raises(ValueError, match="buckets"):
        bucket_of(ids, 0)


@pytest.mark.parametrize(("customer_buckets", "terminal_buckets"), [(1, 1), (4, 3), (7, 16)])
def test_bucket_stages_equal_the_offline_features_of_the_day(
    table: pa.Table, customer_buckets: int, terminal_buckets: int
) -> None:
    # given the offline feature table of the whole history, and the day to score
    offline = compute_features(table)
    day = datetime(2018, 5, 15, tzinfo=UTC)
    start = int(day.timestamp())
    customers, terminals = BASELINE.entities
    assert (customers.key, terminals.key) == ("CUSTOMER_ID", "TERMINAL_ID")

    # when the terminal stage runs per terminal bucket, then the customer stage per customer
    # bucket, each on its bucket's history only
    terminal_features = pa.concat_tables(
        entity_stage(history, terminals, start, start + SECONDS_PER_DAY)
        for history in bucket_history(table, terminals, terminal_buckets, start).values()
    )
    results: dict[int, dict[str, float]] = {}
    for history in bucket_history(table, customers, customer_buckets, start).values():
        day_rows = rows_of_day(history, start)
        customer_features = entity_stage(history, customers, start, start + SECONDS_PER_DAY)
        features = assemble(day_rows, [customer_features, terminal_features])
        for k, tx in enumerate(day_rows.column("TRANSACTION_ID").to_pylist()):
            results[tx] = {name: float(values[k]) for name, values in features.items()}

    # then every transaction of the day has exactly the offline features
    ids = table.column("TRANSACTION_ID").to_numpy()
    day_ids = rows_of_day(table, start).column("TRANSACTION_ID").to_pylist()
    assert sorted(results) == sorted(day_ids) and len(day_ids) > 50
    row = {int(tx): i for i, tx in enumerate(ids)}
    worst = max(
        abs(results[tx][name] - float(offline[name][row[tx]])) for tx in day_ids for name in offline
    )
    assert worst <= 1e-9


def test_a_bucket_reads_only_its_entities_within_the_horizon(table: pa.Table) -> None:
    customers, terminals = BASELINE.entities
    start = int(datetime(2018, 5, 15, tzinfo=UTC).timestamp())
    parts = bucket_history(table, terminals, 4, start)
    total = sum(p.num_rows for p in parts.values())
    for bucket, part in parts.items():
        assert set(bucket_of(part.column("TERMINAL_ID").to_numpy(), 4)) == {bucket}
        seconds = part.column("TX_DATETIME").to_numpy().astype("datetime64[s]").astype(np.int64)
        assert seconds.min() >= start - history_days(terminals) * SECONDS_PER_DAY
        assert part.num_rows < total  # a share, not the whole history
    assert history_days(terminals) == 37 and history_days(customers) == 30


def test_assemble_refuses_rows_missing_from_a_stage(table: pa.Table) -> None:
    start = int(datetime(2018, 5, 15, tzinfo=UTC).timestamp())
    day_rows = rows_of_day(table, start)
    _, terminals = BASELINE.entities
    partial = split_by_bucket(entity_stage(table, terminals, start, start + SECONDS_PER_DAY),
                              "TRANSACTION_ID", 2)[0]  # fmt: skip
    with pytest.raises(ValueError, match="rows without"):
        assemble(day_rows, [partial])
