"""The card-transaction simulator of the Fraud Detection Handbook, reproduced draw for draw.

Implemented from the description in Le Borgne et al., "Reproducible Machine Learning for
Credit Card Fraud Detection - Practical Handbook", chapter "Transaction data simulator".
With the book's parameters (the defaults of :class:`SimulationConfig`) it yields the book's
dataset: the same rows in the same order, up to the ids of same-second ties, which we
break by generation order (a stable sort) so the output is identical on every machine.

Exactness needs the book's order of random draws: numpy's legacy global generator and
Python's ``random``, both re-seeded with the customer id. A plain per-transaction loop
(:func:`generate_transactions_reference`, kept as the oracle for tests and the benchmark)
takes about a minute at book size. :func:`generate_transactions` gets the same numbers
much faster by replaying the legacy algorithms (Marsaglia's polar Gaussian with its cached
second value, Knuth's multiplicative Poisson, ``uniform``) on the raw MT19937 doubles of
each customer, in lockstep over all customers with numpy; Python's ``random.choice`` is
replayed the same way from bulk 32-bit words. Transcendental functions go through
``math`` (the C library, as numpy's own sampler does) rather than numpy's SIMD versions,
which may round differently in the last bit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from models.contracts import TRANSACTIONS_COLUMNS, arrow_schema

if TYPE_CHECKING:
    import pyarrow as pa

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Progress = Callable[[int], None]
"""Called with a number of completed work units (customers, then fraud days)."""

SECONDS_PER_DAY = 86_400
TIME_MEAN = SECONDS_PER_DAY / 2
TIME_STD = 20_000.0
FRAUD_AMOUNT_THRESHOLD = 220.0
COMPROMISED_TERMINALS_PER_DAY = 2
COMPROMISED_TERMINAL_DAYS = 28
COMPROMISED_CUSTOMERS_PER_DAY = 3
COMPROMISED_CUSTOMER_DAYS = 14
SCENARIO3_AMOUNT_FACTOR = 5


class SimulationConfig(BaseModel):
    """Parameters of a simulation; the defaults are the handbook's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_customers: int = Field(5000, ge=1, description="Number of customers (cards).")
    n_terminals: int = Field(10000, ge=1, description="Number of payment terminals.")
    nb_days: int = Field(183, ge=1, description="Number of simulated days.")
    start_date: date = Field(date(2018, 4, 1), description="Day 0 of the simulation.")
    radius: float = Field(5.0, gt=0, description="Customers use terminals closer than this.")
    seed: int = Field(0, ge=0, description="Seed of the customer profiles; terminals use seed+1.")


@dataclass(frozen=True)
class CustomerProfiles:
    """Customer profiles, one array element per customer id."""

    x: F64
    y: F64
    mean_amount: F64
    std_amount: F64
    mean_nb_tx_per_day: F64


@dataclass(frozen=True)
class TerminalProfiles:
    """Terminal locations, one array element per terminal id."""

    x: F64
    y: F64


@dataclass(frozen=True)
class AvailableTerminals:
    """Each customer's terminals within the radius, as CSR arrays (ascending terminal ids)."""

    indptr: I64
    indices: I64

    def of(self, customer_id: int) -> I64:
        """Terminal ids available to one customer."""
        return self.indices[self.indptr[customer_id] : self.indptr[customer_id + 1]]


@dataclass(frozen=True)
class RawTransactions:
    """Generated transactions in generation order (customer, day, draw), before sorting."""

    customer_id: I64
    terminal_id: I64
    time_seconds: I64
    amount: F64


def customer_profiles(n_customers: int, seed: int) -> CustomerProfiles:
    """Draw customer profiles: per customer, x, y ~ U(0,100), mean ~ U(5,100), rate ~ U(0,4).

    Legacy ``uniform(low, high)`` is ``low + (high - low) * next_double``, so drawing all
    doubles at once and scaling them reproduces the per-customer calls exactly.
    """
    u = np.random.RandomState(seed).random_sample(4 * n_customers).reshape(n_customers, 4)
    mean_amount = 5.0 + 95.0 * u[:, 2]
    return CustomerProfiles(
        x=100.0 * u[:, 0],
        y=100.0 * u[:, 1],
        mean_amount=mean_amount,
        std_amount=mean_amount / 2,
        mean_nb_tx_per_day=4.0 * u[:, 3],
    )


def terminal_profiles(n_terminals: int, seed: int) -> TerminalProfiles:
    """Draw terminal locations x, y ~ U(0,100) (the caller passes the customers' seed + 1)."""
    u = np.random.RandomState(seed).random_sample(2 * n_terminals).reshape(n_terminals, 2)
    return TerminalProfiles(x=100.0 * u[:, 0], y=100.0 * u[:, 1])


def available_terminals(
    customers: CustomerProfiles, terminals: TerminalProfiles, radius: float, chunk: int = 256
) -> AvailableTerminals:
    """Terminals at Euclidean distance strictly below ``radius`` of each customer.

    The distance is sqrt(dx**2 + dy**2) summed in that order, as the book computes it, so
    that points right at the radius fall on the same side.
    """
    counts: list[I64] = []
    indices: list[I64] = []
    for start in range(0, len(customers.x), chunk):
        stop = start + chunk
        dx = customers.x[start:stop, None] - terminals.x[None, :]
        dy = customers.y[start:stop, None] - terminals.y[None, :]
        rows, cols = np.nonzero(np.sqrt(np.square(dx) + np.square(dy)) < radius)
        counts.append(np.bincount(rows, minlength=dx.shape[0]).astype(np.int64))
        indices.append(cols.astype(np.int64))
    indptr = np.zeros(len(customers.x) + 1, dtype=np.int64)
    if counts:
        np.cumsum(np.concatenate(counts), out=indptr[1:])
    flat = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    return AvailableTerminals(indptr=indptr, indices=flat)


# --- The reference: the book's algorithm as a plain loop ---------------------------------


def generate_transactions_reference(
    customers: CustomerProfiles, available: AvailableTerminals, nb_days: int
) -> RawTransactions:
    """One customer, one day, one transaction at a time, on the global generators.

    Slow (about a minute at book size) but obviously faithful: the oracle against which
    :func:`generate_transactions` is tested.
    """
    cols: dict[str, list[Any]] = {"c": [], "t": [], "s": [], "a": []}
    for customer_id in range(len(customers.x)):
        mean, std = customers.mean_amount[customer_id], customers.std_amount[customer_id]
        rate = customers.mean_nb_tx_per_day[customer_id]
        terminals = list(available.of(customer_id))
        random.seed(customer_id)
        np.random.seed(customer_id)
        for day in range(nb_days):
            for _ in range(np.random.poisson(rate)):
                time_tx = int(np.random.normal(TIME_MEAN, TIME_STD))
                if 0 < time_tx < SECONDS_PER_DAY:
                    amount = np.random.normal(mean, std)
                    if amount < 0:
                        amount = np.random.uniform(0, mean * 2)
                    amount = np.round(amount, decimals=2)
                    if terminals:
                        cols["c"].append(customer_id)
                        cols["t"].append(random.choice(terminals))
                        cols["s"].append(time_tx + day * SECONDS_PER_DAY)
                        cols["a"].append(amount)
    return RawTransactions(
        customer_id=np.asarray(cols["c"], dtype=np.int64),
        terminal_id=np.asarray(cols["t"], dtype=np.int64),
        time_seconds=np.asarray(cols["s"], dtype=np.int64),
        amount=np.asarray(cols["a"], dtype=np.float64),
    )


# --- The fast path: the same draws, in lockstep over customers ---------------------------


class _LegacyStreams:
    """The legacy numpy draws of many customers at once, from their raw MT19937 doubles.

    Each customer c has its own stream ``RandomState(c)``; ``buf[i, ptr[i]]`` is the next
    double of the i-th customer of the block. Draw methods take the rows that draw and
    return one value per row, consuming exactly what numpy's legacy sampler consumes.
    """

    def __init__(self, seeds: range, width: int) -> None:
        self._seeds = seeds
        self._rs = np.random.RandomState()
        self.buf = self._draw(width)
        self.ptr = np.zeros(len(seeds), dtype=np.int64)
        self.has_gauss = np.zeros(len(seeds), dtype=bool)
        self.gauss_cache = np.zeros(len(seeds), dtype=np.float64)

    def _draw(self, width: int) -> F64:
        """The first ``width`` doubles of every stream (re-seeding one generator is cheap)."""
        buf = np.empty((len(self._seeds), width), dtype=np.float64)
        for i, seed in enumerate(self._seeds):
            self._rs.seed(seed)
            buf[i] = self._rs.random_sample(width)
        return buf

    def _ensure(self, rows: I64, count: int) -> None:
        """Redraw longer streams if one of ``rows`` lacks ``count`` more doubles (rare)."""
        if rows.size:
            need = int(np.max(self.ptr[rows])) + count
            if need > self.buf.shape[1]:
                self.buf = self._draw(max(2 * self.buf.shape[1], need + 64))

    def doubles(self, rows: I64) -> F64:
        """The next raw double of each row (what ``next_double`` returns)."""
        self._ensure(rows, 1)
        out = self.buf[rows, self.ptr[rows]]
        self.ptr[rows] += 1
        return out

    def uniform(self, rows: I64, low: F64, high: F64) -> F64:
        """Legacy ``uniform(low, high)``: ``low + (high - low) * next_double``."""
        return low + (high - low) * self.doubles(rows)

    def gauss(self, rows: I64) -> F64:
        """Legacy standard normal: the polar method, caching the pair's second value."""
        out = np.empty(rows.size, dtype=np.float64)
        cached = self.has_gauss[rows]
        out[cached] = self.gauss_cache[rows[cached]]
        self.has_gauss[rows[cached]] = False
        pos = np.flatnonzero(~cached)
        while pos.size:
            pending = rows[pos]
            x1 = 2.0 * self.doubles(pending) - 1.0
            x2 = 2.0 * self.doubles(pending) - 1.0
            r2 = x1 * x1 + x2 * x2
            ok = (r2 < 1.0) & (r2 != 0.0)
            r2_ok = r2[ok]
            log_r2 = np.fromiter(map(math.log, r2_ok.tolist()), np.float64, r2_ok.size)
            f = np.sqrt(-2.0 * log_r2 / r2_ok)
            done = pending[ok]
            self.gauss_cache[done] = f * x1[ok]
            self.has_gauss[done] = True
            out[pos[ok]] = f * x2[ok]
            pos = pos[~ok]
        return out

    def normal(self, rows: I64, loc: F64 | float, scale: F64 | float) -> F64:
        """Legacy ``normal(loc, scale)``: ``loc + scale * gauss``."""
        return loc + scale * self.gauss(rows)

    def poisson_small(self, rows: I64, exp_neg_lam: F64) -> I64:
        """Legacy ``poisson(lam)`` for 0 < lam < 10: multiply uniforms until <= exp(-lam)."""
        count = np.zeros(rows.size, dtype=np.int64)
        prod = np.ones(rows.size, dtype=np.float64)
        pos = np.arange(rows.size)
        while pos.size:
            prod[pos] *= self.doubles(rows[pos])
            more = prod[pos] > exp_neg_lam[pos]
            pos = pos[more]
            count[pos] += 1
        return count


def _choices(customer_id: int, n_available: int, n_draws: int) -> I64:
    """Indices that ``random.seed(customer_id)`` then n x ``random.choice`` would pick.

    ``choice`` draws ``getrandbits(k)`` with k = n.bit_length() and rejects values >= n; for
    k <= 32 that is one 32-bit MT word shifted right by 32 - k. ``getrandbits(32 * m)``
    returns m consecutive words, least significant first, so the picks come from bulk words.
    """
    rng = random.Random(customer_id)
    shift = 32 - n_available.bit_length()
    picked: list[I64] = []
    missing = n_draws
    while missing > 0:
        m = 2 * missing + 64
        words = np.frombuffer(rng.getrandbits(32 * m).to_bytes(4 * m, "little"), dtype="<u4")
        values = (words >> shift).astype(np.int64)
        accepted = values[values < n_available][:missing]
        picked.append(accepted)
        missing -= accepted.size
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def _generate_block(
    customers: CustomerProfiles, available: AvailableTerminals, ids: range, nb_days: int
) -> RawTransactions:
    """Transactions of a block of consecutive customers, in generation order."""
    n = len(ids)
    rows_all = np.arange(n)
    lam = customers.mean_nb_tx_per_day[ids.start : ids.stop]
    mean = customers.mean_amount[ids.start : ids.stop]
    std = customers.std_amount[ids.start : ids.stop]
    exp_neg_lam = np.array([math.exp(-v) for v in lam.tolist()], dtype=np.float64)
    drawing = rows_all[lam > 0]  # poisson(0) returns 0 without drawing
    # Enough doubles for the expected draws of most customers; the buffer grows if needed.
    width = int(nb_days * (1 + 3.7 * float(np.max(lam, initial=0.0)))) + 64
    streams = _LegacyStreams(ids, width)

    # seeded with empty arrays, so a block that emits nothing concatenates like any other
    out_row: list[I64] = [np.zeros(0, dtype=np.int64)]
    out_day: list[I64] = [np.zeros(0, dtype=np.int64)]
    out_draw: list[I64] = [np.zeros(0, dtype=np.int64)]
    out_time: list[I64] = [np.zeros(0, dtype=np.int64)]
    out_amount: list[F64] = [np.zeros(0, dtype=np.float64)]
    for day in range(nb_days):
        nb_tx = np.zeros(n, dtype=np.int64)
        nb_tx[drawing] = streams.poisson_small(drawing, exp_neg_lam[drawing])
        for draw in range(int(np.max(nb_tx, initial=0))):
            rows = rows_all[nb_tx > draw]
            time_tx = np.trunc(streams.normal(rows, TIME_MEAN, TIME_STD))
            kept = (time_tx > 0) & (time_tx < SECONDS_PER_DAY)
            rows, time_tx = rows[kept], time_tx[kept]
            amount = streams.normal(rows, mean[rows], std[rows])
            negative = np.flatnonzero(amount < 0)
            if negative.size:
                neg_rows = rows[negative]
                amount[negative] = streams.uniform(
                    neg_rows, np.zeros(negative.size), mean[neg_rows] * 2
                )
            out_row.append(rows)
            out_day.append(np.full(rows.size, day, dtype=np.int64))
            out_draw.append(np.full(rows.size, draw, dtype=np.int64))
            out_time.append(time_tx.astype(np.int64) + day * SECONDS_PER_DAY)
            out_amount.append(np.round(amount, decimals=2))

    row = np.concatenate(out_row)
    order = np.lexsort((np.concatenate(out_draw), np.concatenate(out_day), row))
    row = row[order]
    time_seconds = np.concatenate(out_time)[order]
    amount_all = np.concatenate(out_amount)[order]

    # Customers without a terminal in reach draw their numbers but emit nothing.
    n_avail = np.diff(available.indptr)[ids.start : ids.stop]
    emits = n_avail[row] > 0
    row, time_seconds, amount_all = row[emits], time_seconds[emits], amount_all[emits]
    terminal = np.empty(row.size, dtype=np.int64)
    counts = np.bincount(row, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    for i in np.flatnonzero(counts).tolist():
        customer_id = ids.start + i
        picks = _choices(customer_id, int(n_avail[i]), int(counts[i]))
        terminal[offsets[i] : offsets[i + 1]] = available.of(customer_id)[picks]
    return RawTransactions(
        customer_id=row + ids.start,
        terminal_id=terminal,
        time_seconds=time_seconds,
        amount=amount_all,
    )


def generate_transactions(
    customers: CustomerProfiles,
    available: AvailableTerminals,
    nb_days: int,
    block_size: int = 5000,
    progress: Progress | None = None,
) -> RawTransactions:
    """All customers' transactions in generation order, equal to the reference loop's."""
    blocks: list[RawTransactions] = []
    n = len(customers.x)
    for start in range(0, n, block_size):
        ids = range(start, min(start + block_size, n))
        blocks.append(_generate_block(customers, available, ids, nb_days))
        if progress:
            progress(len(ids))
    return RawTransactions(
        customer_id=np.concatenate([b.customer_id for b in blocks]),
        terminal_id=np.concatenate([b.terminal_id for b in blocks]),
        time_seconds=np.concatenate([b.time_seconds for b in blocks]),
        amount=np.concatenate([b.amount for b in blocks]),
    )


# --- Sorting and fraud scenarios ---------------------------------------------------------


@dataclass
class Transactions:
    """The simulated table as numpy columns, sorted by time; row i has TRANSACTION_ID i."""

    tx_datetime: npt.NDArray[np.datetime64]
    customer_id: I64
    terminal_id: I64
    tx_amount: F64
    tx_time_seconds: I64
    tx_time_days: I64
    tx_fraud: npt.NDArray[np.int8]
    tx_fraud_scenario: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.customer_id)

    def to_arrow(self) -> pa.Table:
        """The table with the contract schema (TRANSACTIONS_COLUMNS)."""
        import pyarrow as pa

        arrays = [
            np.arange(len(self), dtype=np.int64),
            self.tx_datetime,
            self.customer_id,
            self.terminal_id,
            self.tx_amount,
            self.tx_time_seconds,
            self.tx_time_days,
            self.tx_fraud,
            self.tx_fraud_scenario,
        ]
        schema = arrow_schema(TRANSACTIONS_COLUMNS)
        return pa.Table.from_arrays(
            [pa.array(a, type=f.type) for a, f in zip(arrays, schema, strict=True)], schema=schema
        )


def sort_transactions(raw: RawTransactions, start_date: date) -> Transactions:
    """Sort by time, stably: same-second ties keep generation order, on every machine."""
    order = np.argsort(raw.time_seconds, kind="stable")
    seconds = raw.time_seconds[order]
    start = np.datetime64(start_date.isoformat(), "s")
    n = len(order)
    return Transactions(
        tx_datetime=start + seconds.astype("timedelta64[s]"),
        customer_id=raw.customer_id[order],
        terminal_id=raw.terminal_id[order],
        tx_amount=raw.amount[order].copy(),
        tx_time_seconds=seconds,
        tx_time_days=seconds // SECONDS_PER_DAY,
        tx_fraud=np.zeros(n, dtype=np.int8),
        tx_fraud_scenario=np.zeros(n, dtype=np.int8),
    )


def _rows_by(entity: I64, n_entities: int) -> tuple[I64, I64]:
    """CSR index of rows per entity id, rows ascending (transaction id order) within each."""
    order = np.argsort(entity, kind="stable")
    indptr = np.zeros(n_entities + 1, dtype=np.int64)
    np.cumsum(np.bincount(entity, minlength=n_entities), out=indptr[1:])
    return indptr, order


def _compromised_rows(
    ids: I64, index: tuple[I64, I64], days: I64, first_day: int, length: int
) -> I64:
    """Rows of the given entities with first_day <= day < first_day + length, ascending."""
    indptr, order = index
    parts = [order[indptr[i] : indptr[i + 1]] for i in ids.tolist()]
    rows = np.sort(np.concatenate(parts))
    return rows[(days[rows] >= first_day) & (days[rows] < first_day + length)]


def add_frauds(
    tx: Transactions, n_customers: int, n_terminals: int, progress: Progress | None = None
) -> None:
    """Label the three scenarios in place, in the book's order (later ones overwrite).

    1. amount > 220. 2. each day, 2 terminals compromised for 28 days. 3. each day, 3
    cards compromised for 14 days, a third of their transactions x5 (cumulatively).
    The day's compromised entities are the first of ``RandomState(day).permutation(n)``,
    which is what ``pandas.Series.sample(n=k, random_state=day)`` draws.
    """
    large = tx.tx_amount > FRAUD_AMOUNT_THRESHOLD
    tx.tx_fraud[large] = 1
    tx.tx_fraud_scenario[large] = 1
    last_day = int(np.max(tx.tx_time_days, initial=0))

    by_terminal = _rows_by(tx.terminal_id, n_terminals)
    for day in range(last_day):
        terminals = np.random.RandomState(day).permutation(n_terminals)
        rows = _compromised_rows(
            terminals[:COMPROMISED_TERMINALS_PER_DAY],
            by_terminal,
            tx.tx_time_days,
            day,
            COMPROMISED_TERMINAL_DAYS,
        )
        tx.tx_fraud[rows] = 1
        tx.tx_fraud_scenario[rows] = 2
        if progress:
            progress(1)

    by_customer = _rows_by(tx.customer_id, n_customers)
    for day in range(last_day):
        cards = np.random.RandomState(day).permutation(n_customers)
        rows = _compromised_rows(
            cards[:COMPROMISED_CUSTOMERS_PER_DAY],
            by_customer,
            tx.tx_time_days,
            day,
            COMPROMISED_CUSTOMER_DAYS,
        )
        picked = np.asarray(random.Random(day).sample(rows.tolist(), k=len(rows) // 3), np.int64)
        tx.tx_amount[picked] = tx.tx_amount[picked] * SCENARIO3_AMOUNT_FACTOR
        tx.tx_fraud[picked] = 1
        tx.tx_fraud_scenario[picked] = 3
        if progress:
            progress(1)


def simulate(
    config: SimulationConfig,
    progress: Progress | None = None,
    generator: Callable[[CustomerProfiles, AvailableTerminals, int], RawTransactions] | None = None,
) -> Transactions:
    """Run the whole simulation: profiles, transactions, sort, fraud scenarios.

    ``progress`` is called with completed units: one per customer, then one per fraud day
    (:func:`work_units` gives the total). ``generator`` swaps the transaction generator
    (the reference loop, in tests and the benchmark).

    >>> tx = simulate(SimulationConfig(n_customers=5, n_terminals=10, nb_days=3, radius=50))
    >>> len(tx) > 0
    True
    """
    customers = customer_profiles(config.n_customers, config.seed)
    terminals = terminal_profiles(config.n_terminals, config.seed + 1)
    available = available_terminals(customers, terminals, config.radius)
    if generator is None:
        raw = generate_transactions(customers, available, config.nb_days, progress=progress)
    else:
        raw = generator(customers, available, config.nb_days)
        if progress:
            progress(config.n_customers)
    tx = sort_transactions(raw, config.start_date)
    add_frauds(tx, config.n_customers, config.n_terminals, progress)
    return tx


def work_units(config: SimulationConfig) -> int:
    """Total progress units of :func:`simulate` (customers + 2 passes over fraud days)."""
    return config.n_customers + 2 * max(config.nb_days - 1, 0)


# --- Summary ------------------------------------------------------------------------------


class DatasetSummary(BaseModel):
    """What a simulated dataset holds; written next to it as its manifest."""

    config: SimulationConfig
    n_transactions: int
    n_frauds: int
    frauds_by_scenario: dict[int, int]
    n_days_with_data: int
    first_datetime: str | None
    last_datetime: str | None


def summarize(tx: Transactions, config: SimulationConfig) -> DatasetSummary:
    """Counts that the book also publishes, for comparison."""
    scenarios = np.bincount(tx.tx_fraud_scenario.astype(np.int64), minlength=4)
    return DatasetSummary(
        config=config,
        n_transactions=len(tx),
        n_frauds=int(tx.tx_fraud.sum(dtype=np.int64)),
        frauds_by_scenario={s: int(scenarios[s]) for s in (1, 2, 3)},
        n_days_with_data=len(np.unique(tx.tx_time_days)),
        first_datetime=str(tx.tx_datetime[0]) if len(tx) else None,
        last_datetime=str(tx.tx_datetime[-1]) if len(tx) else None,
    )
