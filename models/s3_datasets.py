"""Day-partitioned Parquet datasets in S3: the layout of ``models.datasets``, with many parts
per day so parallel writers (batch chunks) never clobber each other.

``<prefix>/date=YYYY-MM-DD/part-<chunk>.parquet``; no root manifest here (a shared file every
writer would rewrite): a run's manifest names its own outputs. A part that cannot be read as
the contract's columns raises :class:`MalformedPartError` naming its key, so the job can
quarantine it and report it, never skip it in silence.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import TYPE_CHECKING, Any

from models.contracts import PART_FILE_TEMPLATE, PARTITION_KEY, Column, arrow_schema, column_names
from models.errors import RtmlError

if TYPE_CHECKING:
    import pyarrow as pa


class MalformedPartError(RtmlError):
    """A part file that is not Parquet, or lacks the contract's columns: its key says which."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"s3 object {key}: {reason}")
        self.key = key
        self.reason = reason


READ_WORKERS: int = 10
"""Concurrent S3 requests of one read: boto3's default connection pool (10 per client)."""


def day_prefix(prefix: str, day: date) -> str:
    return f"{prefix.strip('/')}/{PARTITION_KEY}={day.isoformat()}/"


def part_key(prefix: str, day: date, chunk: int) -> str:
    """The key of one writer's part of a day (deterministic: a rerun overwrites it)."""
    return day_prefix(prefix, day) + PART_FILE_TEMPLATE.format(chunk=chunk)


def write_part(s3: Any, bucket: str, key: str, table: pa.Table) -> int:
    """Write one Parquet part (zstd); its size in bytes."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    data = buffer.getvalue()
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return len(data)


def list_objects(s3: Any, bucket: str, prefix: str) -> list[tuple[str, int]]:
    """(key, size) of every object under ``prefix``, in key order (one listing, no HEADs)."""
    found: list[tuple[str, int]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found += [(o["Key"], int(o["Size"])) for o in page.get("Contents", [])]
    return sorted(found)


def list_etags(s3: Any, bucket: str, prefix: str) -> list[tuple[str, str]]:
    """(key, ETag) of every object under ``prefix``, in key order: what a derived output was
    computed from (a changed, added or removed object changes the list)."""
    found: list[tuple[str, str]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found += [(o["Key"], str(o["ETag"])) for o in page.get("Contents", [])]
    return sorted(found)


def part_keys(s3: Any, bucket: str, prefix: str, day: date) -> list[str]:
    """The part files of one day, in name order (none: an empty day)."""
    return [
        k for k, _ in list_objects(s3, bucket, day_prefix(prefix, day)) if k.endswith(".parquet")
    ]


def read_table(s3: Any, bucket: str, key: str) -> pa.Table:
    """One Parquet object as it is (no contract); :class:`MalformedPartError` if it is not."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    try:
        return pq.read_table(io.BytesIO(body))
    except (pa.ArrowInvalid, OSError) as exc:
        raise MalformedPartError(key, f"not Parquet ({exc})") from None


def read_part(s3: Any, bucket: str, key: str, columns: tuple[Column, ...]) -> pa.Table:
    """One part, as the contract's columns and types, or :class:`MalformedPartError`."""
    import pyarrow as pa

    table = read_table(s3, bucket, key)
    schema = arrow_schema(columns)
    missing = sorted(set(schema.names) - set(table.column_names))
    if missing:
        raise MalformedPartError(key, f"lacks columns {missing}")
    try:
        return table.select(column_names(columns)).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise MalformedPartError(key, f"columns of the wrong type ({exc})") from None


def read_days(
    s3: Any,
    bucket: str,
    prefix: str,
    days: list[date],
    columns: tuple[Column, ...],
    *,
    workers: int | None = None,
) -> pa.Table:
    """Every part of the given days, concatenated in day then part order.

    The listings and GETs run ``workers`` at a time: a chunk's 30-day window is 31+ small
    objects, and one at a time their latency (tens of ms each on S3), not their bytes, would
    set the chunk's read time. boto3 clients are thread-safe; the order is kept.
    """
    import pyarrow as pa

    if not days:
        return arrow_schema(columns).empty_table()
    limit = READ_WORKERS if workers is None else workers
    with ThreadPoolExecutor(max_workers=max(1, min(limit, len(days)))) as pool:
        keys = [k for listed in pool.map(lambda d: part_keys(s3, bucket, prefix, d), days)
                for k in listed]  # fmt: skip
        parts = list(pool.map(lambda k: read_part(s3, bucket, k, columns), keys))
    return pa.concat_tables(parts) if parts else arrow_schema(columns).empty_table()
