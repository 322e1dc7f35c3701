"""Benchmark: the local stack's start, and a record's trip from ``put_records`` to its stored
prediction through the deployed scorer (Kinesis poller, Lambda subprocess, DynamoDB on moto).

    python -m bench.local_stack --artifact data/artifacts/xgboost --rounds 10
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def measure(artifact: Path, *, rounds: int, per_round: int) -> dict[str, Any]:
    from infra.local.stack import LocalStack
    from models.registry import open_registry

    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(root=Path(tmp), port=_free_port(), api_port=_free_port(),
                           progress=lambda message: None)  # fmt: skip
        started = time.perf_counter()
        stack.up()
        up_s = time.perf_counter() - started
        try:
            registry = open_registry(stack.info["registry"], s3_client=stack.client("s3"))
            version = registry.push(artifact).version
            registry.promote(_name(artifact), version, "champion")
            latencies = _trips(stack, rounds=rounds, per_round=per_round)
        finally:
            stack.down()
    return {
        "up_s": up_s, "up_timings_s": stack.timings, "records": len(latencies),
        "trip_ms_p50": statistics.median(latencies),
        "trip_ms_p95": sorted(latencies)[int(0.95 * (len(latencies) - 1))],
        "trip_ms_max": max(latencies),
    }  # fmt: skip


def _name(artifact: Path) -> str:
    from models.artifact import read_manifest

    return read_manifest(artifact).name


def _trips(stack: Any, *, rounds: int, per_round: int) -> list[float]:
    """Put ``per_round`` records at a time; each one's time until its prediction is stored
    (polled every 10 ms). The first round warms the Lambda environment and is not kept."""
    kinesis, dynamodb = stack.client("kinesis"), stack.client("dynamodb")
    latencies: list[float] = []
    for round_ in range(rounds + 1):
        ids = [900_000 + round_ * per_round + k for k in range(per_round)]
        records = [{"Data": json.dumps({
            "transaction_id": tx, "tx_datetime": f"2018-05-15T10:{round_ % 60:02d}:{k:02d}",
            "customer_id": tx % 97, "terminal_id": tx % 31, "tx_amount": 20.0 + k,
        }).encode(), "PartitionKey": str(tx % 97)} for k, tx in enumerate(ids)]  # fmt: skip
        put_at = time.perf_counter()
        kinesis.put_records(StreamName=stack.info["transactions_stream"], Records=records)
        waiting = set(ids)
        stored: dict[int, float] = {}
        while waiting and time.perf_counter() - put_at < 60:
            keys = [{"transaction_id": {"N": str(tx)}} for tx in sorted(waiting)]
            found = dynamodb.batch_get_item(RequestItems={stack.info["predictions_table"]: {
                "Keys": keys, "ProjectionExpression": "transaction_id"}})  # fmt: skip
            now = time.perf_counter()
            for item in found["Responses"].get(stack.info["predictions_table"], []):
                tx = int(item["transaction_id"]["N"])
                stored[tx] = now
                waiting.discard(tx)
            time.sleep(0.01)
        if waiting:
            raise TimeoutError(f"{len(waiting)} records had no prediction after 60 s")
        if round_:
            latencies += [(stored[tx] - put_at) * 1000 for tx in ids]
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=Path("data/artifacts/xgboost"))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    figures = measure(args.artifact, rounds=args.rounds, per_round=args.per_round)
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
