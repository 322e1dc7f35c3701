"""Day-partitioned Parquet in S3 with a part per writer: round trip, parts, empty days, and
malformed parts reported by key."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import boto3
import pyarrow as pa
import pytest

from models.contracts import TRANSACTIONS_COLUMNS, arrow_schema
from models.s3_datasets import MalformedPartError, part_key, part_keys, read_days, write_part
from tests.functional.conftest import REGION

pytestmark = pytest.mark.functional
BUCKET = "data"


@pytest.fixture
def s3(aws: None) -> Any:
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(
        Bucket=BUCKET,
        CreateBucketConfiguration={"LocationConstraint": REGION},  # type: ignore[typeddict-item]
    )
    return client


def _rows(first_id: int, n: int, day: date) -> pa.Table:
    schema = arrow_schema(TRANSACTIONS_COLUMNS)
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for k in range(n):
        when = datetime(day.year, day.month, day.day, 1, k)
        row = {"TRANSACTION_ID": first_id + k, "TX_DATETIME": when, "CUSTOMER_ID": k,
               "TERMINAL_ID": 7, "TX_AMOUNT": 10.0 + k, "TX_TIME_SECONDS": k,
               "TX_TIME_DAYS": 0, "TX_FRAUD": 0, "TX_FRAUD_SCENARIO": 0}  # fmt: skip
        for name in schema.names:
            columns[name].append(row.get(name, 0))
    return pa.table(columns).cast(schema)


def test_parts_of_a_day_round_trip_in_order(s3: Any) -> None:
    day = date(2018, 8, 10)
    write_part(s3, BUCKET, part_key("predictions", day, 1), _rows(100, 3, day))
    write_part(s3, BUCKET, part_key("predictions", day, 0), _rows(0, 2, day))
    assert part_keys(s3, BUCKET, "predictions", day) == [
        "predictions/date=2018-08-10/part-00000.parquet",
        "predictions/date=2018-08-10/part-00001.parquet",
    ]
    table = read_days(s3, BUCKET, "predictions", [day], TRANSACTIONS_COLUMNS)
    assert table.column("TRANSACTION_ID").to_pylist() == [0, 1, 100, 101, 102]
    # a rerun of chunk 1 overwrites its part, never adds one
    write_part(s3, BUCKET, part_key("predictions", day, 1), _rows(100, 3, day))
    assert len(part_keys(s3, BUCKET, "predictions", day)) == 2


def test_a_day_without_data_is_an_empty_table_with_the_schema(s3: Any) -> None:
    table = read_days(s3, BUCKET, "transactions", [date(2018, 8, 11)], TRANSACTIONS_COLUMNS)
    assert table.num_rows == 0 and table.schema == arrow_schema(TRANSACTIONS_COLUMNS)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(b"not parquet at all", "not Parquet"), (None, "lacks columns")],
)
def test_a_malformed_part_is_reported_with_its_key(
    s3: Any, body: bytes | None, reason: str
) -> None:
    day = date(2018, 8, 12)
    key = part_key("transactions", day, 3)
    if body is None:
        write_part(s3, BUCKET, key, pa.table({"TRANSACTION_ID": [1]}))
    else:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    with pytest.raises(MalformedPartError, match=reason) as raised:
        read_days(s3, BUCKET, "transactions", [day], TRANSACTIONS_COLUMNS)
    assert raised.value.key == key
