"""A Kinesis producer for rtml's wire format: PutRecords within AWS's limits, failed entries
retried, an optional rate.

PutRecords takes at most 500 records and 5 MB a call (a record: 1 MB, partition key
included); it can succeed for some records and fail others (throttling), reporting them per
entry, so the failed ones are sent again with backoff, in their order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from models.contracts import MAX_RECORD_BYTES
from models.errors import RtmlError
from models.retry import backoff

PUT_RECORDS_LIMIT: Final = 500
PUT_RECORDS_BYTES: Final = 5 * 1_048_576


class ProducerError(RtmlError):
    """Records could not be put after every retry."""


@dataclass(frozen=True)
class Entry:
    data: bytes
    partition_key: str


@dataclass
class PutStats:
    records: int = 0
    calls: int = 0
    retried: int = 0
    seconds: float = 0.0


def _chunks(entries: Sequence[Entry]) -> Iterable[list[Entry]]:
    chunk: list[Entry] = []
    size = 0
    for entry in entries:
        entry_size = len(entry.data) + len(entry.partition_key.encode())
        if entry_size > MAX_RECORD_BYTES:
            raise ProducerError(f"record of {entry_size} bytes > Kinesis' {MAX_RECORD_BYTES}")
        if chunk and (len(chunk) == PUT_RECORDS_LIMIT or size + entry_size > PUT_RECORDS_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += entry_size
    if chunk:
        yield chunk


def put_records(
    client: Any,
    stream: str,
    entries: Sequence[Entry],
    *,
    rate: float | None = None,
    max_retries: int = 8,
    progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PutStats:
    """Put every entry; ``rate``: records a second at most.

    Entries keep their order except retried ones, which land after the rest of their call
    (as with any PutRecords producer); consumers of rtml's streams do not depend on it:
    the feature engine applies late events exactly.
    """
    stats = PutStats()
    started = time.perf_counter()
    for chunk in _chunks(entries):
        pending = chunk
        for attempt in range(max_retries + 1):
            response = client.put_records(
                StreamName=stream,
                Records=[{"Data": e.data, "PartitionKey": e.partition_key} for e in pending],
            )
            stats.calls += 1
            failed = [
                e
                for e, result in zip(pending, response["Records"], strict=True)
                if "ErrorCode" in result
            ]
            if not failed:
                break
            if attempt == max_retries:
                raise ProducerError(
                    f"{len(failed)} records not put to {stream} after {max_retries} retries"
                    f" ({response['Records'][0].get('ErrorCode', 'error')})"
                )
            stats.retried += len(failed)
            pending = failed
            sleep(backoff(attempt, base=0.05, cap=2.0))
        stats.records += len(chunk)
        if progress is not None:
            progress(len(chunk))
        if rate:
            ahead = stats.records / rate - (time.perf_counter() - started)
            if ahead > 0:
                sleep(ahead)
    stats.seconds = time.perf_counter() - started
    return stats
