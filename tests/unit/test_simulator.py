"""The simulator: exact draws, determinism, schema, and the book's fraud rules."""

from __future__ import annotations

import math
import random
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from models import datasets
from models import simulator as sim
from models.contracts import PART_FILE_NAME, TRANSACTIONS_COLUMNS, arrow_schema

SMALL = sim.SimulationConfig(n_customers=120, n_terminals=400, nb_days=40, radius=8.0, seed=3)


@pytest.fixture(scope="module")
def small_tx() -> sim.Transactions:
    return sim.simulate(SMALL)


def _raw(config: sim.SimulationConfig) -> tuple[sim.CustomerProfiles, sim.AvailableTerminals]:
    customers = sim.customer_profiles(config.n_customers, config.seed)
    terminals = sim.terminal_profiles(config.n_terminals, config.seed + 1)
    return customers, sim.available_terminals(customers, terminals, config.radius)


def test_legacy_streams_draw_what_numpy_draws() -> None:
    # given per-customer streams with a tiny buffer, so that it must grow
    seeds = range(7, 12)
    streams = sim._LegacyStreams(seeds, width=3)
    rows = np.arange(len(seeds))
    lam = np.array([0.3, 1.0, 2.5, 3.9, 0.01])
    # when a mixed program of draws runs in lockstep
    got = [
        streams.poisson_small(rows, np.exp(-lam)).astype(float),
        streams.normal(rows, np.full(5, 43200.0), np.full(5, 20000.0)),
        streams.normal(rows, np.arange(5.0), np.arange(1.0, 6.0)),
        streams.uniform(rows, np.zeros(5), np.full(5, 7.0)),
        streams.normal(rows, np.zeros(5), np.ones(5)),
    ]
    # then every value equals numpy's legacy generator called one customer at a time
    for i, seed in enumerate(seeds):
        rs = np.random.RandomState(seed)
        expected = [
            rs.poisson(lam[i]),
            rs.normal(43200.0, 20000.0),
            rs.normal(float(i), float(i + 1)),
            rs.uniform(0, 7.0),
            rs.normal(0.0, 1.0),
        ]
        assert [g[i] for g in got] == expected


@pytest.mark.parametrize("n_available", [1, 2, 3, 7, 64, 100, 1000])
def test_choices_match_random_choice(n_available: int) -> None:
    # given what random.seed(c) then repeated random.choice picks
    rng = random.Random(42)
    expected = [rng.choice(range(n_available)) for _ in range(300)]
    # when / then
    assert sim._choices(42, n_available, 300).tolist() == expected


@pytest.mark.parametrize(
    "config",
    [
        SMALL,
        # a large radius: many terminals per customer; a tiny one: some customers have none
        sim.SimulationConfig(n_customers=40, n_terminals=50, nb_days=25, radius=40.0, seed=1),
        sim.SimulationConfig(n_customers=80, n_terminals=60, nb_days=20, radius=3.0, seed=9),
    ],
)
def test_fast_generator_equals_reference_loop(config: sim.SimulationConfig) -> None:
    # given
    customers, available = _raw(config)
    # when
    reference = sim.generate_transactions_reference(customers, available, config.nb_days)
    fast = sim.generate_transactions(customers, available, config.nb_days, block_size=33)
    # then the same rows in the same generation order, bit for bit
    for field in ("customer_id", "terminal_id", "time_seconds", "amount"):
        np.testing.assert_array_equal(getattr(fast, field), getattr(reference, field))
    assert len(fast.amount) > 0


def test_customers_without_terminals_emit_nothing() -> None:
    customers, available = _raw(sim.SimulationConfig(n_customers=80, n_terminals=60, radius=3.0))
    lonely = np.flatnonzero(np.diff(available.indptr) == 0)
    assert lonely.size > 0
    raw = sim.generate_transactions(customers, available, 10)
    assert not np.isin(raw.customer_id, lonely).any()


def test_available_terminals_are_strictly_within_radius() -> None:
    customers = sim.customer_profiles(30, 0)
    terminals = sim.terminal_profiles(500, 1)
    available = sim.available_terminals(customers, terminals, 10.0, chunk=7)
    for c in range(30):
        dist = np.hypot(customers.x[c] - terminals.x, customers.y[c] - terminals.y)
        np.testing.assert_array_equal(available.of(c), np.flatnonzero(dist < 10.0))


def test_simulate_is_deterministic_to_the_byte(tmp_path: Path) -> None:
    # given two runs with the same arguments
    summary = []
    for run in ("a", "b"):
        tx = sim.simulate(SMALL)
        summary.append(sim.summarize(tx, SMALL))
        datasets.write_dataset(tx.to_arrow(), tmp_path / run, summary[-1])
    # then the same files with the same bytes
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.*"))
    assert files_a == files_b and len(files_a) == SMALL.nb_days + 1
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_dataset_schema_layout_and_round_trip(small_tx: sim.Transactions, tmp_path: Path) -> None:
    # when
    table = small_tx.to_arrow()
    datasets.write_dataset(table, tmp_path, sim.summarize(small_tx, SMALL))
    # then one hive partition per day, with the contract schema in each file
    parts = list(datasets.iter_partitions(tmp_path))
    assert [p.name for p in parts][:2] == ["date=2018-04-01", "date=2018-04-02"]
    file_schema = pq.read_schema(parts[0] / PART_FILE_NAME)
    assert file_schema.names == [name for name, _ in TRANSACTIONS_COLUMNS]
    # Parquet has no seconds unit: files hold milliseconds, readers cast back to the contract
    assert str(file_schema.field("TX_DATETIME").type) == "timestamp[ms]"
    back = datasets.read_dataset(tmp_path, TRANSACTIONS_COLUMNS)
    assert back.schema == arrow_schema(TRANSACTIONS_COLUMNS)
    assert back.equals(table)
    assert datasets.read_manifest(tmp_path)["n_transactions"] == len(small_tx)


def test_every_partition_holds_only_its_day(small_tx: sim.Transactions, tmp_path: Path) -> None:
    datasets.write_dataset(small_tx.to_arrow(), tmp_path, sim.summarize(small_tx, SMALL))
    for part in datasets.iter_partitions(tmp_path):
        day = date.fromisoformat(part.name.split("=")[1])
        days = pq.read_table(part / PART_FILE_NAME).column("TX_TIME_DAYS").to_numpy()
        assert set(days.tolist()) == {(day - SMALL.start_date).days}


def test_rows_are_sorted_by_time_with_ties_in_generation_order(
    small_tx: sim.Transactions,
) -> None:
    seconds = small_tx.tx_time_seconds
    assert (np.diff(seconds) >= 0).all()
    assert (small_tx.tx_time_days == seconds // 86400).all()
    expected = np.datetime64("2018-04-01T00:00:00") + seconds.astype("timedelta64[s]")
    np.testing.assert_array_equal(small_tx.tx_datetime, expected)
    # same-second ties: generation order is customer id first
    tie = np.flatnonzero(np.diff(seconds) == 0)
    assert (small_tx.customer_id[tie] <= small_tx.customer_id[tie + 1]).all()


def test_every_amount_above_220_is_fraud(small_tx: sim.Transactions) -> None:
    assert small_tx.tx_fraud[small_tx.tx_amount > 220].all()
    assert ((small_tx.tx_fraud == 1) == (small_tx.tx_fraud_scenario > 0)).all()


def test_compromised_terminals_are_fraud_for_28_days(small_tx: sim.Transactions) -> None:
    for day in range(int(np.max(small_tx.tx_time_days))):
        terminals = np.random.RandomState(day).permutation(SMALL.n_terminals)[:2]
        window = (small_tx.tx_time_days >= day) & (small_tx.tx_time_days < day + 28)
        hit = window & np.isin(small_tx.terminal_id, terminals)
        assert small_tx.tx_fraud[hit].all()
        # scenario 3 is applied last and may overwrite scenario 2's label
        assert np.isin(small_tx.tx_fraud_scenario[hit], [2, 3]).all()


def test_scenario_3_multiplies_a_third_of_compromised_cards_amounts() -> None:
    # given the same data before fraud labelling
    customers, available = _raw(SMALL)
    raw = sim.generate_transactions(customers, available, SMALL.nb_days)
    tx = sim.sort_transactions(raw, SMALL.start_date)
    before = tx.tx_amount.copy()
    # when
    sim.add_frauds(tx, SMALL.n_customers, SMALL.n_terminals)
    # then each changed amount is the original times a power of 5, and labelled scenario 3
    changed = np.flatnonzero(tx.tx_amount != before)
    assert changed.size > 0
    ratio = tx.tx_amount[changed] / before[changed]
    powers = np.round(np.log(ratio) / math.log(5))
    np.testing.assert_allclose(ratio, 5.0**powers)
    assert (tx.tx_fraud_scenario[changed] == 3).all()
    assert (tx.tx_fraud_scenario == 3).sum() == changed.size


def test_fraud_rate_is_plausible_on_a_small_configuration() -> None:
    # a tenth of the book's population keeps the book's terminal/customer ratio
    config = sim.SimulationConfig(n_customers=500, n_terminals=1000, nb_days=60)
    summary = sim.summarize(sim.simulate(config), config)
    rate = summary.n_frauds / summary.n_transactions
    assert 0.005 < rate < 0.1
    assert all(count > 0 for count in summary.frauds_by_scenario.values())


def test_read_dataset_of_a_missing_directory_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no dataset"):
        datasets.read_dataset(tmp_path / "nope", TRANSACTIONS_COLUMNS)


@pytest.mark.slow
def test_book_size_run_matches_the_published_counts() -> None:
    # The handbook publishes 1,754,155 transactions of which 14,681 are fraudulent.
    config = sim.SimulationConfig()
    summary = sim.summarize(sim.simulate(config), config)
    assert summary.n_transactions == 1_754_155
    assert summary.n_frauds == 14_681
