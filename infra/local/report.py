"""What a day streamed through the local stack gave: the demo's closing report.

Reads the running stack (predictions table, dead-letter queue, the transactions stream's
arrival times, the registry) and the simulated dataset, then reports: records scored,
dead-lettered by reason, latency from Kinesis arrival to stored prediction, the model
versions that scored, and the day's AUC / AP / Card Precision@100 of the stored scores
against the same models scoring the offline feature table, as JSON and an HTML page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from infra.local.stack import local_client as _client


def _predictions(info: dict[str, Any], ids: set[int]) -> dict[int, Any]:
    from models.aws_sinks import decode_body

    dynamodb = _client(info, "dynamodb")
    found: dict[int, Any] = {}
    for page in dynamodb.get_paginator("scan").paginate(TableName=info["predictions_table"]):
        for item in page["Items"]:
            tx = int(item["transaction_id"]["N"])
            if tx in ids:
                found[tx] = decode_body(item)
    return found


def _dead_letters(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Every message of the dead-letter queue, left in it (visibility timeout 0)."""
    sqs = _client(info, "sqs")
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(1000):
        response = sqs.receive_message(
            QueueUrl=info["dead_letter_queue_url"], MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        messages = response.get("Messages", [])
        new = [m for m in messages if m["MessageId"] not in seen]
        if not new:
            break
        for m in new:
            seen[m["MessageId"]] = json.loads(m["Body"])
    return list(seen.values())


def _arrivals(info: dict[str, Any]) -> dict[int, float]:
    """Transaction id -> Kinesis arrival time, read back from the transactions stream."""
    kinesis = _client(info, "kinesis")
    stream = info["transactions_stream"]
    arrivals: dict[int, float] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for record in response["Records"]:
                try:
                    tx = int(json.loads(record["Data"])["transaction_id"])
                except (ValueError, KeyError, TypeError):
                    continue
                arrivals.setdefault(tx, record["ApproximateArrivalTimestamp"].timestamp())
            if not response["Records"] or response.get("MillisBehindLatest", 0) == 0:
                break
            iterator = response["NextShardIterator"]
    return arrivals


def wait_for_scored(
    info: dict[str, Any],
    ids: set[int],
    *,
    timeout: float = 900.0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Wait until every transaction in ``ids`` has a stored prediction, or nothing changed
    for 30 s (some were refused); the number of stored predictions. Reads by key (one
    BatchGetItem per 100 ids still missing), not by scanning the table."""
    from models.dynamodb_batch import batch_get

    dynamodb = _client(info, "dynamodb")
    missing = set(ids)
    deadline = time.monotonic() + timeout
    still_since = time.monotonic()
    while missing and time.monotonic() < deadline:
        keys = [{"transaction_id": {"N": str(tx)}} for tx in sorted(missing)]
        found = {
            int(item["transaction_id"]["N"])
            for item in batch_get(
                dynamodb,
                info["predictions_table"],
                keys,
                consistent=True,
                give_up=RuntimeError,
                projection="transaction_id",
                sleep=time.sleep,
            )
        }
        if found:
            missing -= found
            still_since = time.monotonic()
            if progress is not None:
                progress(len(found))
        elif time.monotonic() - still_since > 30:
            break
        time.sleep(0.5)
    return len(ids) - len(missing)


def build(info: dict[str, Any], dataset: Path, day: date, *, wait: bool = True) -> dict[str, Any]:
    """The report's figures (and the data for its plots, under ``_plots``)."""
    import numpy as np

    from models import datasets, evaluation
    from models.artifact import load_artifact
    from models.contracts import TRANSACTIONS_COLUMNS
    from models.features.offline import compute_features
    from models.features.spec import SERVED
    from models.registry import open_registry

    table = datasets.read_dataset(dataset, TRANSACTIONS_COLUMNS)
    times = table.column("TX_DATETIME").to_numpy()
    start = np.datetime64(day.isoformat())
    in_day = (times >= start) & (times < start + np.timedelta64(1, "D"))
    rows = np.flatnonzero(in_day)
    ids = table.column("TRANSACTION_ID").to_numpy()[rows]
    id_set = {int(x) for x in ids}
    if wait:
        wait_for_scored(info, id_set)
    stored = _predictions(info, id_set)
    letters = _dead_letters(info)
    arrivals = _arrivals(info)

    latencies = sorted(
        (p.scored_at.timestamp() - arrivals[tx]) * 1000
        for tx, p in stored.items()
        if tx in arrivals
    )
    versions = Counter(p.model_version for p in stored.values())
    reasons = Counter(str(letter.get("reason", "?")).split(":")[0] for letter in letters)

    # offline: the same model versions scoring the offline feature table's rows of the day
    features = compute_features(table, SERVED)  # what the stream computes
    registry = open_registry(info["registry"], s3_client=_client(info, "s3"))
    cache = Path(info.get("logs", ".rtml/logs")).parent / "report-models"
    models = {}
    for version in versions:
        name = next(iter(stored.values())).model_name
        models[version] = load_artifact(registry.fetch(name, version, cache))
    scored_rows = [(k, int(tx)) for k, tx in zip(rows, ids, strict=True) if int(tx) in stored]
    online = np.array([stored[tx].score for _, tx in scored_rows])
    offline = np.array(
        [
            models[stored[tx].model_version].score(
                models[stored[tx].model_version].vector(
                    {name: float(values[k]) for name, values in features.items()}
                )
            )
            for k, tx in scored_rows
        ]
    )
    labels = table.column("TX_FRAUD").to_numpy()[[k for k, _ in scored_rows]]
    days = times[[k for k, _ in scored_rows]].astype("datetime64[D]")
    cards = table.column("CUSTOMER_ID").to_numpy()[[k for k, _ in scored_rows]]
    quality: dict[str, Any] = {}
    if len(set(labels.tolist())) == 2:
        quality = {
            "stored": evaluation.evaluate(labels, online, days, cards).model_dump(),
            "offline": evaluation.evaluate(labels, offline, days, cards).model_dump(),
        }
    return {
        "date": day.isoformat(),
        "transactions_of_the_day": len(id_set),
        "scored": len(stored),
        "not_scored": len(id_set) - len(stored),
        "dead_lettered": len(letters),
        "dead_letter_reasons": dict(reasons.most_common()),
        "frauds_of_the_day": int(labels.sum()) if len(labels) else 0,
        "model_versions": dict(versions.most_common()),
        "latency_ms": _percentiles(latencies),
        "max_score_difference_vs_offline": float(np.max(np.abs(online - offline)))
        if len(online)
        else None,
        # the streams' shards run in parallel, so a chargeback can reach a terminal's state a
        # moment before or after the transactions next to it in time: offline order is strict
        "scores_differing_from_offline": int(np.sum(np.abs(online - offline) > 1e-6)),
        "throughput_per_second": _throughput(stored, arrivals),
        "quality": quality,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "_plots": {"online": online.tolist(), "offline": offline.tolist(), "latency": latencies},
    }


def _throughput(stored: dict[int, Any], arrivals: dict[int, float]) -> float | None:
    """Predictions a second, from the first arrival to the last stored prediction."""
    times = [arrivals[tx] for tx in stored if tx in arrivals]
    if len(times) < 2:
        return None
    last = max(float(p.scored_at.timestamp()) for p in stored.values())
    rate: float = len(times) / max(1e-9, last - min(times))
    return round(rate, 1)


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None

    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 1)

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": round(values[-1], 1)}


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def write_html(report: dict[str, Any], path: Path) -> Path:
    """The report as one self-contained HTML page (figures inline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = report["_plots"]
    figures = []
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.hist([plots["online"], plots["offline"]], bins=40, label=["stored (stream)", "offline"])
    ax.set_yscale("log")
    ax.set_xlabel("score")
    ax.set_title("Scores of the day: stream vs offline")
    ax.legend()
    figures.append(_png(fig))
    plt.close(fig)
    if plots["latency"]:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.hist(plots["latency"], bins=50)
        ax.set_xlabel("ms from Kinesis arrival to stored prediction")
        ax.set_title("Latency")
        figures.append(_png(fig))
        plt.close(fig)
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(json.dumps(v))}</code></td></tr>"
        for k, v in report.items()
        if not k.startswith("_")
    )
    images = "".join(f'<img src="data:image/png;base64,{png}">' for png in figures)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>rtml local stream report</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}"
        "td,th{vertical-align:top;border-bottom:1px solid #ddd}img{margin:1em 1em 0 0}</style>"
        f"<h1>rtml: {html.escape(report['date'])} through the local stack</h1>"
        f"<table>{rows}</table>{images}"
    )
    return path
