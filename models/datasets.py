"""Day-partitioned Parquet datasets: the layout the simulator, features and batch job share.

``root/date=YYYY-MM-DD/part-00000.parquet`` (hive partitioning), one file per day with a
fixed name, rows in time order, plus a JSON manifest at the root. Every reader and writer
goes through here with a column list of ``models.contracts``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from models.contracts import (
    DATASET_MANIFEST,
    PART_FILE_NAME,
    PARTITION_KEY,
    Column,
    arrow_schema,
    column_names,
)

if TYPE_CHECKING:
    import pyarrow as pa

TIME_COLUMN = "TX_DATETIME"


def write_dataset(table: pa.Table, root: Path, manifest: BaseModel) -> int:
    """Write one Parquet file per day of ``TX_DATETIME``; return the number of files.

    Rows must be in time order (each day is then one contiguous slice). The layout and
    names are fixed and Parquet writing is deterministic for a pyarrow version, so the
    same table gives the same bytes. Days without rows get no partition.
    """
    import numpy as np
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    days = table.column(TIME_COLUMN).to_numpy().astype("datetime64[D]")
    if len(days) and (np.diff(days.astype(np.int64)) < 0).any():
        raise ValueError("rows are not in time order: cannot write day partitions")
    written = 0
    if len(days):
        bounds = np.flatnonzero(np.diff(days.astype(np.int64))) + 1
        starts = np.concatenate([[0], bounds]).tolist()
        ends = np.concatenate([bounds, [len(days)]]).tolist()
        for s, e in zip(starts, ends, strict=True):
            part = root / f"{PARTITION_KEY}={days[s]}"
            part.mkdir(parents=True, exist_ok=True)
            pq.write_table(table.slice(s, e - s), part / PART_FILE_NAME, compression="zstd")
            written += 1
    (root / DATASET_MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return written


def iter_partitions(root: Path) -> Iterator[Path]:
    """The day partitions of a dataset, in date order."""
    yield from sorted(p for p in root.glob(f"{PARTITION_KEY}=*") if p.is_dir())


def read_dataset(root: Path, columns: tuple[Column, ...]) -> pa.Table:
    """Read the given columns of a day-partitioned dataset, cast to the contract schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(columns)
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset at {root}")
    parts = []
    for part in iter_partitions(root):
        table = pq.read_table(part / PART_FILE_NAME)
        missing = sorted(set(schema.names) - set(table.column_names))
        if missing:
            raise ValueError(f"{part / PART_FILE_NAME} lacks columns {missing}")
        parts.append(table.select(column_names(columns)).cast(schema))
    if not parts:
        return schema.empty_table()
    return pa.concat_tables(parts)


def read_manifest(root: Path) -> dict[str, Any]:
    """The dataset manifest as a dict (its content differs by dataset kind)."""
    path = root / DATASET_MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{root} has no {DATASET_MANIFEST}: not an rtml dataset")
    result: dict[str, Any] = json.loads(path.read_text())
    return result
