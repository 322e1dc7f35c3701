"""Benchmark: one batch chunk end to end (read, features, score, write) against the model's
own throughput on the same rows, and where the chunk's time goes.

A day of the book's data goes through the batch job's own steps (``batch/job.py``) on moto's
S3 in this process: plan, the history partitioned by entity bucket, the terminal stage, then
each customer chunk with its time split into read (S3 + Parquet), features (the offline
engine over the bucket's 30-day history, joined with the terminal stage's output), score
(the numpy batch scorer) and write (Parquet to S3). The references score the very same
feature rows: the batch scorer alone, the pure-Python lean scorer, and xgboost's own
``inplace_predict`` (the training library). moto's S3 is in-process memory, so read and
write here are Parquet encoding plus moto's overhead, not network time.

    python -m bench.batch --data data/simulated --artifact data/artifacts/xgboost
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np


class Latent:
    """An S3 client whose object calls each take ``latency`` more seconds (S3's first-byte
    latency is tens of ms; moto's in-process S3 has none, which hides what concurrency buys)."""

    CALLS = frozenset({"get_object", "put_object", "copy_object", "delete_objects"})

    def __init__(self, client: Any, latency: float) -> None:
        self._client, self._latency = client, latency

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in self.CALLS or not self._latency:
            return attribute

        def call(**kwargs: Any) -> Any:
            time.sleep(self._latency)
            return attribute(**kwargs)

        return call


def _upload(s3: Any, bucket: str, source: Path, days: list[date]) -> int:
    from models.contracts import PART_FILE_NAME, TRANSACTIONS_PREFIX

    size = 0
    for day in days:
        part = source / f"date={day.isoformat()}" / PART_FILE_NAME
        if part.exists():
            body = part.read_bytes()
            key = f"{TRANSACTIONS_PREFIX}/date={day.isoformat()}/part-00000.parquet"
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            size += len(body)
    return size


def _reference(model: Any, rows: np.ndarray, artifact: Path) -> dict[str, float]:
    """Rows/s of the three scorers on the same matrix (best of 3), and their agreement."""
    from models.batch_scorer import load_batch_scorer

    scorer = load_batch_scorer(model)

    def best(run: Any) -> tuple[float, Any]:
        times, out = [], None
        for _ in range(3):
            t = time.perf_counter()
            out = run()
            times.append(time.perf_counter() - t)
        return min(times), out

    t_batch, batch_scores = best(lambda: scorer.score_matrix(rows))
    sample = rows[: min(len(rows), 20_000)]
    t_lean, _ = best(lambda: model.score_batch(sample.tolist()))
    result = {
        "batch_scorer_rows_per_s": len(rows) / t_batch,
        "lean_rows_per_s": len(sample) / t_lean,
    }
    try:
        import xgboost as xgb
    except ImportError:
        return result
    booster = xgb.Booster()
    booster.load_model(str(artifact / "model.json"))
    booster.set_param({"nthread": os.cpu_count() or 1})
    mean = np.array(model.manifest.scaler.mean)
    scale = np.array(model.manifest.scaler.scale)
    scaled = (rows - mean) / scale
    t_xgb, xgb_scores = best(lambda: booster.inplace_predict(scaled))
    result["xgboost_rows_per_s"] = len(rows) / t_xgb
    result["max_abs_diff_vs_xgboost"] = float(np.max(np.abs(batch_scores - xgb_scores)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/simulated"))
    parser.add_argument("--artifact", type=Path, default=Path("data/artifacts/xgboost"))
    parser.add_argument("--date", type=date.fromisoformat, default=date(2018, 8, 10))
    parser.add_argument(
        "--max-bytes-per-chunk", type=int, default=64 * 1024 * 1024, help="the plan's rule"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per S3 call")
    parser.add_argument("--read-workers", type=int, default=None, help="concurrent GETs")
    args = parser.parse_args()
    if args.read_workers is not None:
        import models.s3_datasets

        models.s3_datasets.READ_WORKERS = args.read_workers

    import boto3
    from moto import mock_aws

    from batch import job
    from models.artifact import load_artifact

    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "testing")
    model = load_artifact(args.artifact)
    with mock_aws():
        s3: Any = boto3.client("s3", region_name="eu-west-1")
        bucket = "bench-data"
        s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
        days = job._days(args.date, 38)
        source_bytes = _upload(s3, bucket, args.data, days)
        s3 = Latent(s3, args.latency)
        config = job.JobConfig(bucket=bucket, max_bytes_per_chunk=args.max_bytes_per_chunk)
        started = time.perf_counter()
        run = job.plan(s3, config, args.date, model_name=model.name, model_version=model.version)
        stage_seconds: dict[str, float] = {"plan": time.perf_counter() - started}
        chunks: list[dict[str, Any]] = []
        for stage in job.STAGES:
            t = time.perf_counter()
            for item in getattr(run, f"{stage}_items"):
                result = job.run_task(s3, config, run, stage, item, model=model)
                if stage == "customer":
                    chunks.append(result)
            stage_seconds[stage] = time.perf_counter() - t
        t = time.perf_counter()
        manifest = job.finalize(s3, config, run, model).manifest
        stage_seconds["finalize"] = time.perf_counter() - t

        # the same rows the chunks scored, as a matrix, for the references
        keys = manifest["outputs"]["predictions"]
        from models.s3_datasets import read_table

        predictions = [read_table(s3, bucket, k) for k in keys]
        names = list(model.manifest.feature_names)
        rows = np.column_stack(
            [np.concatenate([p.column(n).to_numpy() for p in predictions]) for n in names]
        )
    scored = int(manifest["outputs"]["rows"])
    chunk_rows = [c["rows"] for c in chunks]
    chunk_seconds = [c["seconds"] for c in chunks]
    split = {
        step: sum(c.get(step, 0.0) for c in chunks)
        for step in ("read", "features", "score", "write")
    }
    reference = _reference(model, rows, args.artifact)
    chunk_rate = sum(chunk_rows) / sum(chunk_seconds)
    terminal_share = stage_seconds["terminal"] / max(scored, 1)
    results: dict[str, Any] = {
        "date": args.date.isoformat(),
        "s3_latency_s": args.latency,
        "read_workers": args.read_workers or "default",
        "rows": scored,
        "source_megabytes_38_days": round(source_bytes / 1e6, 1),
        "buckets": manifest["buckets"],
        "customer_chunks": len(chunks),
        "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
        "customer_chunk_rows_per_s": round(chunk_rate),
        "customer_chunk_split_seconds": {k: round(v, 3) for k, v in split.items()},
        "rows_per_s_with_terminal_stage": round(
            sum(chunk_rows) / (sum(chunk_seconds) + terminal_share * sum(chunk_rows))
        ),
        **{k: (round(v) if k.endswith("per_s") else v) for k, v in reference.items()},
    }
    if "xgboost_rows_per_s" in reference:
        results["chunk_vs_xgboost_predict"] = round(chunk_rate / reference["xgboost_rows_per_s"], 4)
    results["chunk_vs_batch_scorer"] = round(chunk_rate / reference["batch_scorer_rows_per_s"], 4)
    width = max(len(k) for k in results)
    for key, value in results.items():
        shown = json.dumps(value) if isinstance(value, dict) else value
        print(f"{key:<{width}}  {shown}")
    total = sum(split.values())
    print(
        "where a customer chunk's time goes: "
        + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in split.items())
        + f" (median chunk {statistics.median(chunk_seconds):.2f} s)"
    )
    Path("bench/batch_results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
