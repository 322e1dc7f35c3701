"""Benchmark: fraud-scoring feature reads from rtml's DynamoDB state against Feast's store.

Both stores sit on one moto server (in this process, on 127.0.0.1) and hold the state at
the end of a simulated history: rtml keeps each entity's recent events
(models/features/dynamodb_store.py) and computes the 12 windowed features when it reads;
Feast 0.67's DynamoDB online store holds the same 12 values, precomputed as of the end
time. rtml's read is ``OnlineFeatures.lookup``: each transaction counts in its own
customer windows, as in training; Feast returns what it stored, so the check adds the
transaction to Feast's customer values (count + 1, mean updated) before comparing, and
compares the stored values themselves exactly, for every entity. Then, one call of each
store after the other (which goes first alternates), for 100 pairs and 1 pair per call, it
measures p50/p99 latency, HTTP requests and KB per call (botocore hooks on each store's
clients) and the calling thread's CPU time. It also times each serving path's imports, and
a cold start (imports, client setup, first read), in fresh processes.

Why: before adopting Feast's online store, or dropping it, know what it costs on the
serving path. Moto is Python, not DynamoDB: latency here is mostly moto's work, so compare
it only as a ratio. Requests, bytes and client CPU carry over to real DynamoDB.

Feast is not in .venv; this runs in .venv-peers:

    make bench-peers
    .venv-peers/bin/python -m bench.peers --quick          # a smoke run, under a minute
    .venv-peers/bin/python -m bench.peers --pairs 50 --repeats 200
"""

from __future__ import annotations

import argparse
import calendar
import json
import logging
import math
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # runtime imports stay inside functions: --cold times them from here
    import pyarrow as pa
    from mypy_boto3_dynamodb import DynamoDBClient

    from models.features.dynamodb_store import DynamoDBStateStore
    from models.features.online import EntityKey, EntityMachine, MemoryStore, RawEvent, Touch

REGION = "us-east-1"
STATE_TABLE = "rtml-peers-feature-state"
FEAST_PROJECT = "rtml_peers"
VIEWS = {"CUSTOMER_ID": "customer_features", "TERMINAL_ID": "terminal_features"}
"""Feast feature view per rtml entity; the join key is the entity column in lower case."""
BOOK_TERMINALS = 10_000
BOOK_RADIUS = 5.0
IMPORTS = {
    "rtml": "import models.features.online, models.features.dynamodb_store, boto3",
    "feast": "import feast",
}
IMPORT_CHILD = """\
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
{statement}
t1, c1 = time.perf_counter(), time.process_time()
print(json.dumps({{"ms": 1e3 * (t1 - t0), "cpu_ms": 1e3 * (c1 - c0), "modules": len(sys.modules)}}))
"""

Row = dict[str, float | int]
Reader = Callable[[Sequence["RawEvent"]], Any]


def book_radius(n_terminals: int) -> float:
    """The reach that gives each customer the book's number of terminals (about 75).

    Terminals are uniform on a 100 x 100 square, so a customer sees n * pi * r^2 / 10^4
    of them: the book's 10,000 terminals with r = 5, or 2,000 with r = 11.2. Per-entity
    transaction rates follow from the profiles and the customers-to-terminals ratio (the
    book's 1:2), not from the radius, as long as every customer has some terminal.
    """
    return BOOK_RADIUS * math.sqrt(BOOK_TERMINALS / n_terminals)


# --- the moto server and traffic counting ---------------------------------------------


def fake_aws_env() -> None:
    """Fake credentials and a region for every client here and in child processes."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION=REGION,
    )
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"):
        os.environ.pop(name, None)


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def dynamodb_client(endpoint: str) -> DynamoDBClient:
    """A DynamoDB client on the moto server."""
    import boto3

    return boto3.client("dynamodb", endpoint_url=endpoint, region_name=REGION)


@dataclass
class Traffic:
    """HTTP requests and body bytes of the DynamoDB clients it watches (retries included)."""

    requests: int = 0
    sent: int = 0
    received: int = 0

    def watch(self, client: Any) -> None:
        """Count a botocore client's DynamoDB requests from now on."""
        client.meta.events.register("before-send.dynamodb", self._on_send)
        client.meta.events.register("response-received.dynamodb", self._on_response)

    def reset(self) -> None:
        self.requests = self.sent = self.received = 0

    def _on_send(self, request: Any, **_: Any) -> None:
        self.requests += 1
        self.sent += len(request.body or b"")

    def _on_response(self, response_dict: dict[str, Any] | None = None, **_: Any) -> None:
        if response_dict is not None:
            self.received += len(response_dict.get("body") or b"")


# --- the data and rtml's state ----------------------------------------------------------


def end_time(start: datetime, days: int) -> int:
    """Epoch seconds of midnight after the last simulated day: every event is before it."""
    return calendar.timegm((start + timedelta(days=days)).timetuple())


def replay_until(table: pa.Table, end: int) -> MemoryStore:
    """The states the stream would have built by ``end``: labels arrive a week late."""
    from models.features.online import MemoryStore, OnlineFeatures
    from models.features.replay import history_events
    from models.features.spec import BASELINE

    delay = max(e.delay_seconds for e in BASELINE.entities)
    events, _ = history_events(table, timedelta(seconds=delay))
    arrived = [e for e in events if e.time + (delay if e.is_label else 0) <= end]
    memory = MemoryStore()
    engine = OnlineFeatures(memory)
    for start in range(0, len(arrived), 5000):
        engine.process_raw(arrived[start : start + 5000])
    return memory


def load_rtml_state(
    client: DynamoDBClient, memory: MemoryStore, machines: dict[str, EntityMachine]
) -> DynamoDBStateStore:
    """Each entity's end state written once through ``DynamoDBStateStore.save``.

    Replaying the stream into moto instead (``replay_history(store=..., batch_size=500)``)
    writes every touched entity once per batch: 15 s for 1,770 transactions, so minutes
    for the default history. The end state is the same.
    """
    from models.features import dynamodb_store as ddb

    ddb.create_table(client, STATE_TABLE)
    store = ddb.DynamoDBStateStore(client, STATE_TABLE)
    store.usage.track_sizes = True
    for key, state in memory.states.items():
        state.version = 0  # the store's first write of this entity
        store.save(key, state, machines[key[0]])
    return store


def features_at(
    memory: MemoryStore, machines: dict[str, EntityMachine], end: int
) -> dict[EntityKey, Row]:
    """Each entity's 12-feature half as of ``end``: what Feast will hold, precomputed."""
    from models.features.online import MAX_ID

    return {
        key: machines[key[0]].features(state, end, MAX_ID) for key, state in memory.states.items()
    }


# --- Feast ------------------------------------------------------------------------------


def feast_repo(repo: Path, endpoint: str, expected: dict[EntityKey, Row], end: int) -> Path:
    """A Feast repo (feature_store.yaml + the rows as Parquet), applied on the moto server."""
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, Int64

    from models.features.spec import BASELINE

    (repo / "feature_store.yaml").write_text(
        f"project: {FEAST_PROJECT}\n"
        "provider: local\n"
        "registry:\n"
        f"  path: {repo / 'registry.db'}\n"
        "  cache_ttl_seconds: 0\n"  # load once, never refresh while timing
        "online_store:\n"
        "  type: dynamodb\n"
        f"  region: {REGION}\n"
        f"  endpoint_url: {endpoint}\n"
        "offline_store:\n"
        "  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    store = FeatureStore(repo_path=str(repo))
    counts = BASELINE.count_features()
    as_of = datetime.fromtimestamp(end, UTC)
    objects: list[Any] = []
    frames: dict[str, pd.DataFrame] = {}
    for key, view in VIEWS.items():
        join_key, names = key.lower(), BASELINE.entity(key).feature_names()
        rows = [(k[1], f) for k, f in expected.items() if k[0] == key]
        frame = pd.DataFrame(
            {join_key: [i for i, _ in rows], **{n: [f[n] for _, f in rows] for n in names}}
        )
        frame["event_timestamp"] = as_of
        path = repo / f"{view}.parquet"
        frame.to_parquet(path)
        entity = Entity(
            name=join_key.removesuffix("_id"), join_keys=[join_key], value_type=ValueType.INT64
        )
        objects += [
            entity,
            FeatureView(
                name=view,
                entities=[entity],
                ttl=timedelta(0),  # no expiry: the history is in 2018
                schema=[Field(name=join_key, dtype=Int64)]
                + [Field(name=n, dtype=Int64 if n in counts else Float64) for n in names],
                source=FileSource(path=str(path), timestamp_field="event_timestamp"),
                online=True,
            ),
        ]
        frames[view] = frame
    store.apply(objects)
    for view, frame in frames.items():
        store.write_to_online_store(view, frame)
    return repo


# --- the two reads ----------------------------------------------------------------------


class RtmlRead:
    """rtml's serving read: ``OnlineFeatures.lookup``, one batched eventually consistent read.

    Each transaction is folded into a private copy of its entities' states, so its
    features include itself, as the model was trained.
    """

    def __init__(self, client: DynamoDBClient) -> None:
        from models.features import dynamodb_store as ddb
        from models.features.online import OnlineFeatures

        self.store = ddb.DynamoDBStateStore(client, STATE_TABLE)
        self.engine = OnlineFeatures(self.store)
        self.client = client

    def __call__(self, events: Sequence[RawEvent]) -> list[Row]:
        return self.engine.lookup(events)

    def stored(self, events: Sequence[RawEvent]) -> list[Row]:
        """The features of the stored state as of each event, the event left out (checks)."""
        machines = self.engine.machines
        touches: dict[EntityKey, list[Touch]] = {}
        for e in events:
            for key in machines:
                k = (key, int(getattr(e, key.lower())))
                touches.setdefault(k, []).append((e.time, e.transaction_id, False))
        states = self.store.load(touches, machines, consistent=False)
        return [self.engine.as_of(states, e) for e in events]


class FeastRead:
    """Feast's serving read: ``get_online_features`` of the 12 features, as a dict."""

    def __init__(self, repo: Path) -> None:
        from feast import FeatureStore

        from models.features.spec import BASELINE

        self.store = FeatureStore(repo_path=str(repo))
        self.refs = [
            f"{view}:{name}"
            for key, view in VIEWS.items()
            for name in BASELINE.entity(key).feature_names()
        ]

    def __call__(self, events: Sequence[RawEvent]) -> dict[str, list[Any]]:
        rows = [{"customer_id": e.customer_id, "terminal_id": e.terminal_id} for e in events]
        response = self.store.get_online_features(features=self.refs, entity_rows=rows)
        return cast(dict[str, list[Any]], response.to_dict())

    def boto_clients(self, endpoint: str, *, pooled: bool = True) -> list[Any]:
        """The botocore clients Feast reads through (Feast internals: checked, not assumed).

        One batch of keys per feature view goes through a boto3 resource; more than
        ``batch_size`` (100) keys go through a client, from a thread pool. Creating that
        client here (``pooled``; Feast caches it) lets both be watched.
        """
        online: Any = self.store._get_provider().online_store  # DynamoDBOnlineStore
        clients = [online._get_dynamodb_resource(REGION, endpoint).meta.client]
        if pooled:
            clients.append(online._get_dynamodb_client(REGION, endpoint))
        if any(c is None for c in clients):
            raise RuntimeError(f"{type(online).__name__}: no boto3 client to watch")
        return clients


def with_transactions(feast: dict[str, list[Any]], events: Sequence[RawEvent]) -> list[Row]:
    """Feast's stored values with each transaction folded into its customer's windows.

    Feast serves what was written; the model's customer windows include the transaction
    being scored (and earlier ones of the same call, as rtml's lookup does), so a Feast
    client has to add it: count + 1, the mean updated. Terminal windows end a week
    earlier and are unchanged.
    """
    from models.features.spec import BASELINE

    customer = BASELINE.entity("CUSTOMER_ID")
    seen: dict[int, tuple[int, float]] = {}
    rows: list[Row] = []
    for i, e in enumerate(events):
        row: Row = {name: column[i] for name, column in feast.items()}
        n_before, total_before = seen.get(e.customer_id, (0, 0.0))
        n_new, total_new = n_before + 1, total_before + e.values["TX_AMOUNT"]
        seen[e.customer_id] = (n_new, total_new)
        for window in customer.windows:
            count_name = f"CUSTOMER_ID_NB_TX_{window.suffix}"
            mean_name = f"CUSTOMER_ID_AVG_AMOUNT_{window.suffix}"
            count = int(row[count_name])
            row[count_name] = count + n_new
            row[mean_name] = (float(row[mean_name]) * count + total_new) / (count + n_new)
        rows.append(row)
    return rows


def rows(feast: dict[str, list[Any]]) -> list[Row]:
    """Feast's columns as one row per pair."""
    n = len(next(iter(feast.values())))
    return [{name: column[i] for name, column in feast.items()} for i in range(n)]


def check_equal(rtml: Sequence[Row], feast: Sequence[Row], names: Sequence[str]) -> int:
    """Assert both reads give the same features; returns the number of values compared.

    Counts must match exactly; means to 1e-12 relative, as a mean updated from a stored
    mean may differ from a fresh sum in the last bits.
    """
    compared = 0
    for i, (ours, theirs) in enumerate(zip(rtml, feast, strict=True)):
        for name in names:
            a, b = ours[name], theirs[name]
            same = a == b if isinstance(b, int) else math.isclose(a, b, rel_tol=1e-12)
            if not same or type(a) is not type(b):
                raise AssertionError(f"pair {i} {name}: rtml {a!r} != Feast {b!r}")
            compared += 1
    return compared


# --- measurement ------------------------------------------------------------------------


@dataclass
class Call:
    """One timed read."""

    wall_ms: float
    cpu_ms: float
    requests: int
    sent_kb: float
    received_kb: float


def timed(read: Reader, events: Sequence[RawEvent], traffic: Traffic) -> tuple[Any, Call]:
    """Run one read; wall time, this thread's CPU time (moto runs on others) and traffic."""
    traffic.reset()
    c0, t0 = time.thread_time(), time.perf_counter()
    result = read(events)
    t1, c1 = time.perf_counter(), time.thread_time()
    call = Call(
        wall_ms=1e3 * (t1 - t0),
        cpu_ms=1e3 * (c1 - c0),
        requests=traffic.requests,
        sent_kb=traffic.sent / 1024,
        received_kb=traffic.received / 1024,
    )
    return result, call


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarize(calls: Sequence[Call]) -> dict[str, float]:
    """p50/p99 wall time and per-call medians of the rest."""
    return {
        "p50_ms": statistics.median(c.wall_ms for c in calls),
        "p99_ms": percentile([c.wall_ms for c in calls], 99),
        "requests_per_call": statistics.mean(c.requests for c in calls),
        "sent_kb_per_call": statistics.mean(c.sent_kb for c in calls),
        "received_kb_per_call": statistics.mean(c.received_kb for c in calls),
        "cpu_ms_p50": statistics.median(c.cpu_ms for c in calls),
        "calls": len(calls),
    }


@dataclass(frozen=True)
class Workload:
    """Probe transactions: (customer, terminal, amount) of real rows, at the end time."""

    pairs: list[tuple[int, int, float]]
    end: int
    first_id: int

    def events(self, rng: random.Random, n: int) -> list[RawEvent]:
        """n new transactions at the end time, on pairs drawn from the history."""
        from models.features.online import RawEvent

        return [
            RawEvent(
                is_label=False,
                transaction_id=self.first_id + i,
                time=self.end,
                customer_id=c,
                terminal_id=t,
                values={"TX_AMOUNT": amount},
            )
            for i, (c, t, amount) in enumerate(rng.choices(self.pairs, k=n))
        ]

    def in_order(self) -> list[RawEvent]:
        """One event per pair, in order (the equality check over every entity)."""
        from models.features.online import RawEvent

        return [
            RawEvent(False, self.first_id + i, self.end, c, t, {"TX_AMOUNT": amount})
            for i, (c, t, amount) in enumerate(self.pairs)
        ]


def run_reads(
    reads: dict[str, tuple[Reader, Traffic]],
    workload: Workload,
    *,
    size: int,
    repeats: int,
    names: Sequence[str],
    seed: int,
) -> tuple[dict[str, list[Call]], int]:
    """``repeats`` rounds of one call per store on the same pairs, first store alternating."""
    rng = random.Random(seed)
    calls: dict[str, list[Call]] = {name: [] for name in reads}
    compared = 0
    order = list(reads)
    for round_ in range(-3, repeats):  # three warm-up rounds
        events = workload.events(rng, size)
        results = {}
        for name in order if round_ % 2 == 0 else order[::-1]:
            read, traffic = reads[name]
            results[name], call = timed(read, events, traffic)
            if round_ >= 0:
                calls[name].append(call)
        compared += check_equal(results["rtml"], with_transactions(results["feast"], events), names)
    return calls, compared


def import_times(runs: int, cache: Path) -> dict[str, dict[str, float]]:
    """Import time, CPU and module count of each serving path, in fresh processes.

    Bytecode goes to a scratch PYTHONPYCACHEPREFIX, written by one untimed run, so both
    import from .pyc and nothing is written into the tree or site-packages.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in IMPORTS}
    baseline: list[dict[str, float]] = []
    for run in range(-1, runs):
        order = list(IMPORTS) if run % 2 == 0 else list(IMPORTS)[::-1]
        for name in [*order, "python"]:
            statement = IMPORTS.get(name, "pass")
            out = subprocess.run(
                [sys.executable, "-c", IMPORT_CHILD.format(statement=statement)],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            if run >= 0:
                samples.get(name, baseline).append(json.loads(out.stdout))
    result = {
        name: {
            "p50_ms": statistics.median(s["ms"] for s in runs_),
            "max_ms": max(s["ms"] for s in runs_),
            "cpu_ms_p50": statistics.median(s["cpu_ms"] for s in runs_),
            "modules": runs_[-1]["modules"],
        }
        for name, runs_ in samples.items()
    }
    result["python"] = {"modules": baseline[-1]["modules"]}
    return result


def cold_starts(
    runs: int, cache: Path, endpoint: str, repo: Path, event: RawEvent
) -> dict[str, dict[str, float]]:
    """A fresh process: imports, store and client setup, one 1-pair read (``--cold``)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    probe = f"{event.customer_id},{event.terminal_id},{event.values['TX_AMOUNT']},{event.time}"
    samples: dict[str, list[dict[str, float]]] = {"rtml": [], "feast": []}
    for run in range(-1, runs):
        for name in list(samples) if run % 2 == 0 else list(samples)[::-1]:
            out = subprocess.run(
                [
                    *(sys.executable, "-m", "bench.peers", "--cold", name),
                    *("--endpoint", endpoint, "--feast-repo", str(repo), "--probe", probe),
                ],
                check=False,
                capture_output=True,
                text=True,
                env=env,
                cwd=Path(__file__).resolve().parent.parent,
            )
            if out.returncode:
                raise RuntimeError(f"cold start of {name} failed:\n{out.stderr[-3000:]}")
            if run >= 0:
                samples[name].append(json.loads(out.stdout.splitlines()[-1]))
    return {
        name: {
            "p50_ms": statistics.median(s["ms"] for s in runs_),
            "max_ms": max(s["ms"] for s in runs_),
            "cpu_ms_p50": statistics.median(s["cpu_ms"] for s in runs_),
            "requests": runs_[-1]["requests"],
            "modules": runs_[-1]["modules"],
        }
        for name, runs_ in samples.items()
    }


def cold_child(kind: str, endpoint: str, repo: Path, probe: str) -> None:
    """The child of :func:`cold_starts`: time from here to the first features, as JSON."""
    t0, c0 = time.perf_counter(), time.process_time()
    from models.features.online import RawEvent

    customer, terminal, amount, at = probe.split(",")
    event = RawEvent(False, 1, int(at), int(customer), int(terminal), {"TX_AMOUNT": float(amount)})
    traffic = Traffic()
    read: Reader
    if kind == "rtml":
        client = dynamodb_client(endpoint)
        traffic.watch(client)
        read = RtmlRead(client)
    else:
        feast_read = FeastRead(repo)
        for client in feast_read.boto_clients(endpoint, pooled=False):
            traffic.watch(client)
        read = feast_read
    read([event])
    t1, c1 = time.perf_counter(), time.process_time()
    result = {"ms": 1e3 * (t1 - t0), "cpu_ms": 1e3 * (c1 - c0), "requests": traffic.requests}
    print(json.dumps({**result, "modules": len(sys.modules)}))


# --- report -----------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    """The side-by-side table."""
    head = f"{'p50 ms':>8} {'p99 ms':>8} {'req/call':>9} {'KB/call':>8} {'CPU ms':>7}"
    lines = [
        f"{'':22}| {'rtml (state, computed on read)':^44} | {'Feast 0.67 (precomputed)':^44}",
        f"{'':22}| {head} | {head}",
    ]

    def cells(r: dict[str, float]) -> str:
        return (
            f"{r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['requests_per_call']:9.1f}"
            f" {r['received_kb_per_call']:8.1f} {r['cpu_ms_p50']:7.2f}"
        )

    for size, label in ((results["config"]["pairs"], "pairs/call"), (1, "pair/call")):
        r = results["reads"][str(size)]
        lines.append(f"{f'{size} {label}':22}| {cells(r['rtml'])} | {cells(r['feast'])}")
    for row, label in (("import", "import (fresh proc)"), ("cold", "cold start, 1 pair")):
        r = results[row]

        def process(x: dict[str, float]) -> str:
            requests = f"{x['requests']:9d}" if "requests" in x else f"{'-':>9}"
            return (
                f"{x['p50_ms']:8.1f} {x['max_ms']:8.1f} {requests} {'-':>8} {x['cpu_ms_p50']:7.1f}"
            )

        lines.append(f"{label:22}| {process(r['rtml'])} | {process(r['feast'])}")
    imports, cold = results["import"], results["cold"]
    lines.append(
        f"import and cold start: median and max of {results['config']['import_runs']} fresh"
        f" processes (CPU: the process's own); modules loaded: rtml {imports['rtml']['modules']}"
        f" / {cold['rtml']['modules']} cold, Feast {imports['feast']['modules']}"
        f" / {cold['feast']['modules']} cold, python alone {imports['python']['modules']}"
    )
    return "\n".join(lines)


def versions() -> dict[str, str]:
    """Versions of what the figures depend on."""
    out = {"python": platform.python_version()}
    for package in ("feast", "boto3", "botocore", "moto", "pandas", "pyarrow"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "absent"
    return out


def log(message: str, since: float | None = None) -> None:
    suffix = f" ({time.perf_counter() - since:.1f} s)" if since is not None else ""
    print(f"[peers] {message}{suffix}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--terminals", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--radius", type=float, help="terminal reach (default: the book's terminals/customer)"
    )
    parser.add_argument("--pairs", type=int, default=100, help="pairs per batched call")
    parser.add_argument("--repeats", type=int, default=100, help="timed calls per store and size")
    parser.add_argument("--imports", type=int, default=7, help="fresh processes per import test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("peers_results.json"))
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--cold", choices=("rtml", "feast"), help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--feast-repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold:
        cold_child(args.cold, args.endpoint, args.feast_repo, args.probe)
        return
    if args.quick:
        args.customers, args.terminals, args.days = 100, 200, 10
        args.pairs, args.repeats, args.imports = 20, 5, 1
    if args.pairs > 100:
        log("over 100 pairs, Feast reads from a thread pool: its CPU column misses that work")
    try:
        import feast  # noqa: F401
        from moto.server import ThreadedMotoServer  # noqa: F401
    except ImportError as exc:
        sys.exit(f"{exc}: bench.peers needs the 'peers' extra; run it with make bench-peers")
    run(args)


def run(args: argparse.Namespace) -> None:
    from models import simulator as sim
    from models.features.online import OnlineFeatures
    from models.features.spec import BASELINE

    fake_aws_env()
    load_start = os.getloadavg()[0]
    radius = args.radius or book_radius(args.terminals)
    config = sim.SimulationConfig(
        n_customers=args.customers, n_terminals=args.terminals, nb_days=args.days, radius=radius
    )
    start = datetime.combine(config.start_date, datetime.min.time())
    end = end_time(start, args.days)
    names = [n for key in VIEWS for n in BASELINE.entity(key).feature_names()]
    t = time.perf_counter()
    tx = sim.simulate(config).to_arrow()
    log(f"simulated {tx.num_rows} transactions, radius {radius:.2f}", t)
    t = time.perf_counter()
    memory = replay_until(tx, end)
    machines = OnlineFeatures(memory).machines
    expected = features_at(memory, machines, end)
    log(f"replayed into memory: {len(memory.states)} entity states", t)

    with moto_server() as endpoint, tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        t = time.perf_counter()
        client = dynamodb_client(endpoint)
        usage = load_rtml_state(client, memory, machines).usage
        log(f"rtml state: {usage.items_written} items, {usage.bytes_written} bytes", t)
        t = time.perf_counter()
        (work / "feast").mkdir()
        repo = feast_repo(work / "feast", endpoint, expected, end)
        log(f"Feast: {len(expected)} rows written to its online store", t)

        rtml_traffic, feast_traffic = Traffic(), Traffic()
        rtml = RtmlRead(dynamodb_client(endpoint))
        rtml_traffic.watch(rtml.client)
        feast_read = FeastRead(repo)
        for boto in feast_read.boto_clients(endpoint):
            feast_traffic.watch(boto)
        reads: dict[str, tuple[Reader, Traffic]] = {
            "rtml": (rtml, rtml_traffic),
            "feast": (feast_read, feast_traffic),
        }

        # every entity at least once, through the same two reads
        t = time.perf_counter()
        customers = sorted(k[1] for k in expected if k[0] == "CUSTOMER_ID")
        terminals = sorted(k[1] for k in expected if k[0] == "TERMINAL_ID")
        n = max(len(customers), len(terminals))
        everyone = [
            (customers[i % len(customers)], terminals[i % len(terminals)], 1.0) for i in range(n)
        ]
        first_id = int(max(tx.column("TRANSACTION_ID").to_pylist())) + 1
        all_compared = 0
        for lo in range(0, n, args.pairs):
            events = Workload(everyone[lo : lo + args.pairs], end, first_id).in_order()
            all_compared += check_equal(rtml.stored(events), rows(feast_read(events)), names)
        log(f"equal: {all_compared} values, every entity of both kinds", t)

        workload = Workload(
            list(
                zip(
                    tx.column("CUSTOMER_ID").to_pylist(),
                    tx.column("TERMINAL_ID").to_pylist(),
                    tx.column("TX_AMOUNT").to_pylist(),
                    strict=True,
                )
            ),
            end,
            first_id,
        )
        reads_out: dict[str, dict[str, dict[str, float]]] = {}
        compared = all_compared
        for size in dict.fromkeys((args.pairs, 1)):
            t = time.perf_counter()
            calls, n_compared = run_reads(
                reads, workload, size=size, repeats=args.repeats, names=names, seed=args.seed
            )
            compared += n_compared
            reads_out[str(size)] = {name: summarize(c) for name, c in calls.items()}
            log(f"{size} pairs/call: {args.repeats} rounds", t)

        t = time.perf_counter()
        cache = work / "pycache"
        imports = import_times(args.imports, cache)
        probe = workload.events(random.Random(args.seed), 1)[0]
        cold = cold_starts(args.imports, cache, endpoint, repo, probe)
        log("imports and cold starts", t)

    results: dict[str, Any] = {
        "config": {
            "customers": args.customers,
            "terminals": args.terminals,
            "days": args.days,
            "radius": radius,
            "transactions": tx.num_rows,
            "as_of": datetime.fromtimestamp(end, UTC).isoformat(),
            "pairs": args.pairs,
            "repeats": args.repeats,
            "import_runs": args.imports,
            "seed": args.seed,
        },
        "versions": versions(),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        },
        "state": {
            "entities": len(expected),
            "rtml_items": usage.items_written,
            "rtml_bytes": usage.bytes_written,
            "rtml_item_bytes_max": max(max(v) for v in usage.item_sizes.values()),
            "feast_rows": len(expected),
        },
        "check": {"values_compared": compared, "every_entity_values": all_compared},
        "reads": reads_out,
        "import": imports,
        "cold": cold,
    }
    print(table(results))
    busy = max(load_start, os.getloadavg()[0])
    if busy > (os.cpu_count() or 1):
        print(f"the machine was busy (load average {busy:.1f}): trust ratios over absolutes")
    print(
        f"equal: {compared} feature values ({all_compared} of the stored state, every one of"
        f" {len(expected)} entities; the rest as served, transaction included); latency is"
        " moto's, compare it only as a ratio"
    )
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
