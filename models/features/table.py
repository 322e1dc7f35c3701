"""The feature table: every transaction column plus the spec's features, as Arrow.

Both engines (offline, online) produce their features as columns keyed by name; this
module gives them one schema and one writer, so their outputs compare file for file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

from models.contracts import (
    BASELINE_FEATURES,
    FEATURE_TABLE_COLUMNS,
    TRANSACTIONS_COLUMNS,
    Column,
    arrow_schema,
)
from models.features.spec import BASELINE, FeatureSpec

if TYPE_CHECKING:
    import pyarrow as pa


def feature_columns(spec: FeatureSpec = BASELINE) -> tuple[Column, ...]:
    """The model inputs of a spec with their types (counts int64, the rest float64)."""
    counts = spec.count_features()
    return tuple((n, "int64" if n in counts else "float64") for n in spec.feature_names())


def feature_table_columns(spec: FeatureSpec = BASELINE) -> tuple[Column, ...]:
    """Transaction columns, then the spec's features that are not transaction columns."""
    if spec == BASELINE:
        assert feature_columns(spec) == BASELINE_FEATURES, "contracts.py and the spec disagree"
        return FEATURE_TABLE_COLUMNS
    known = {name for name, _ in TRANSACTIONS_COLUMNS}
    return TRANSACTIONS_COLUMNS + tuple(c for c in feature_columns(spec) if c[0] not in known)


def feature_table(
    transactions: pa.Table, features: dict[str, np.ndarray], spec: FeatureSpec = BASELINE
) -> pa.Table:
    """Join computed features (row-aligned) to the transactions, in the contract schema."""
    import pyarrow as pa

    schema = arrow_schema(feature_table_columns(spec))
    arrays = []
    for fld in schema:
        if fld.name in features and fld.name not in transactions.column_names:
            arrays.append(pa.array(features[fld.name], type=fld.type))
        else:
            arrays.append(transactions.column(fld.name).cast(fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class FeatureTableSummary(BaseModel):
    """The manifest of a feature table: how and from what it was computed."""

    engine: str
    source: str
    n_rows: int
    features: list[str]
    seconds: float
    counters: dict[str, int] = Field(default_factory=dict)
    spec_hash: str = BASELINE.spec_hash()
