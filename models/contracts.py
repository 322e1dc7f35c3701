"""Names and schemas shared by runtime code and infra.

This module is deliberately light (stdlib only at import time) so that the CDK
app may import it: table names, key schemas, env var names and Parquet schemas
are declared once here and used by both sides, so the two cannot drift apart.
Column types are written as Arrow type names; :func:`arrow_schema` turns a
column list into a ``pyarrow.Schema`` lazily, for the code that has pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import pyarrow as pa

Column = tuple[str, str]
"""A column: (name, Arrow type name). Type names: int8, int64, float64, timestamp[s], string."""

# --- Simulated transactions (the handbook's columns) ----------------------------------

TRANSACTIONS_COLUMNS: Final[tuple[Column, ...]] = (
    ("TRANSACTION_ID", "int64"),
    # timezone-naive (the book's local time); Parquet stores it in ms, readers cast to s
    ("TX_DATETIME", "timestamp[s]"),
    ("CUSTOMER_ID", "int64"),
    ("TERMINAL_ID", "int64"),
    ("TX_AMOUNT", "float64"),
    ("TX_TIME_SECONDS", "int64"),
    ("TX_TIME_DAYS", "int64"),
    ("TX_FRAUD", "int8"),
    ("TX_FRAUD_SCENARIO", "int8"),
)
"""Columns of the simulator's output, in file order."""

# --- Feature table: the simulator's columns + the baseline spec's 15 model inputs --------

BASELINE_FEATURES: Final[tuple[Column, ...]] = (
    ("TX_AMOUNT", "float64"),
    ("TX_DURING_WEEKEND", "float64"),
    ("TX_DURING_NIGHT", "float64"),
    ("CUSTOMER_ID_NB_TX_1DAY_WINDOW", "int64"),
    ("CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW", "float64"),
    ("CUSTOMER_ID_NB_TX_7DAY_WINDOW", "int64"),
    ("CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW", "float64"),
    ("CUSTOMER_ID_NB_TX_30DAY_WINDOW", "int64"),
    ("CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW", "float64"),
    ("TERMINAL_ID_NB_TX_1DAY_WINDOW", "int64"),
    ("TERMINAL_ID_RISK_1DAY_WINDOW", "float64"),
    ("TERMINAL_ID_NB_TX_7DAY_WINDOW", "int64"),
    ("TERMINAL_ID_RISK_7DAY_WINDOW", "float64"),
    ("TERMINAL_ID_NB_TX_30DAY_WINDOW", "int64"),
    ("TERMINAL_ID_RISK_30DAY_WINDOW", "float64"),
)
"""The model inputs of the baseline feature spec, in order (a test checks the spec agrees)."""

FEATURE_TABLE_COLUMNS: Final[tuple[Column, ...]] = TRANSACTIONS_COLUMNS + BASELINE_FEATURES[1:]
"""Columns of ``rtml features`` output: every transaction column, then the 14 features."""

PARTITION_KEY: Final = "date"
"""Hive partition key of every day-partitioned dataset: ``date=YYYY-MM-DD/``."""

PART_FILE_NAME: Final = "part-00000.parquet"
"""The single part file of a day partition: a fixed name keeps output deterministic."""

DATASET_MANIFEST: Final = "_rtml_dataset.json"
"""Manifest at a dataset's root (parameters, counts); the leading ``_`` hides it from readers."""


def column_names(columns: tuple[Column, ...]) -> list[str]:
    """Names of a column list, in order."""
    return [name for name, _ in columns]


def arrow_schema(columns: tuple[Column, ...]) -> pa.Schema:
    """The ``pyarrow.Schema`` of a column list (imports pyarrow on first use)."""
    import pyarrow as pa

    types = {
        "int8": pa.int8(),
        "int64": pa.int64(),
        "float64": pa.float64(),
        "timestamp[s]": pa.timestamp("s"),
        "string": pa.string(),
    }
    return pa.schema(
        [pa.field(name, types[type_name], nullable=False) for name, type_name in columns]
    )
