"""The local stack's Kinesis poller gives Lambda's event source mapping semantics (moto's own
delivery does not): batches, partial-failure retries from the first failed record, bisection,
retries exhausted and records too old sent to the on-failure queue in AWS's shape."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from infra.local.kinesis import KinesisPoller, Mapping
from infra.local.runtime import Invocation
from tests.functional.conftest import REGION

pytestmark = pytest.mark.functional
STREAM = "tx"
ARN = f"arn:aws:kinesis:{REGION}:123456789012:stream/{STREAM}"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:123456789012:function:scorer"


@dataclass
class Function:
    """A stand-in function: records each batch's payloads, answers by a rule."""

    rule: Any = None
    batches: list[list[int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, name: str, event: dict[str, Any]) -> Invocation:
        records = event["Records"]
        values = [json.loads(base64.b64decode(r["kinesis"]["data"])) for r in records]
        with self.lock:
            self.batches.append(values)
            attempt = len(self.batches)
        if self.rule is None:
            return Invocation(result={"batchItemFailures": []})
        answer: Invocation = self.rule(records, values, attempt)
        return answer


@dataclass
class World:
    kinesis: Any
    sqs: Any
    queue_url: str
    queue_arn: str


@pytest.fixture
def world(aws: None) -> Iterator[World]:
    kinesis = boto3.client("kinesis", region_name=REGION)
    kinesis.create_stream(StreamName=STREAM, ShardCount=1)
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="failed")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    yield World(kinesis, sqs, url, arn)


def _put(world: World, values: list[int]) -> None:
    world.kinesis.put_records(
        StreamName=STREAM,
        Records=[{"Data": json.dumps(v).encode(), "PartitionKey": "k"} for v in values],
    )


def _run(world: World, function: Function, **settings: Any) -> KinesisPoller:
    mapping = Mapping(
        function_name="scorer",
        function_arn=FUNCTION_ARN,
        stream_arn=ARN,
        starting_position="TRIM_HORIZON",
        on_failure_arn=world.queue_arn,
        **settings,
    )
    poller = KinesisPoller(
        kinesis=world.kinesis, sqs=world.sqs, invoke=function, region=REGION, poll_seconds=0.02
    )
    poller.start([mapping])
    assert poller.wait_idle(30)
    poller.stop()
    return poller


def _failed_batches(world: World) -> list[dict[str, Any]]:
    messages = world.sqs.receive_message(QueueUrl=world.queue_url, MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def test_poller_delivers_in_batches_of_the_configured_size(world: World) -> None:
    # given 25 records, batch size 10
    _put(world, list(range(25)))
    function = Function()

    # when
    _run(world, function, batch_size=10, report_item_failures=True)

    # then three batches, in order, each record once
    assert function.batches == [list(range(10)), list(range(10, 20)), list(range(20, 25))]


def test_partial_failure_redelivers_from_the_first_failed_record(world: World) -> None:
    # given a function that fails record 3 (and 6) the first time it sees them
    _put(world, list(range(8)))

    def rule(records: list[dict[str, Any]], values: list[int], attempt: int) -> Invocation:
        failed = [r for r, v in zip(records, values, strict=True) if v in (3, 6) and attempt == 1]
        return Invocation(
            result={
                "batchItemFailures": [
                    {"itemIdentifier": r["kinesis"]["sequenceNumber"]} for r in failed
                ]
            }
        )

    function = Function(rule)

    # when
    poller = _run(world, function, batch_size=10, report_item_failures=True, max_retries=3)

    # then Lambda's rule: the retry starts at the first failed record (3), so 3..7 again
    assert function.batches == [list(range(8)), [3, 4, 5, 6, 7]]
    (stats,) = poller.stats.values()
    assert (stats.invocations, stats.retries, stats.records) == (2, 1, 8)


def test_a_malformed_item_failure_fails_the_whole_batch(world: World) -> None:
    _put(world, [1, 2])

    def rule(records: list[dict[str, Any]], values: list[int], attempt: int) -> Invocation:
        failures = [{"itemIdentifier": ""}] if attempt == 1 else []
        return Invocation(result={"batchItemFailures": failures})

    function = Function(rule)
    _run(world, function, batch_size=10, report_item_failures=True, max_retries=3)

    assert function.batches == [[1, 2], [1, 2]]


def test_function_errors_bisect_the_batch_then_exhaust_retries_to_the_on_failure_queue(
    world: World,
) -> None:
    # given a function that always errors on record 5
    _put(world, list(range(8)))

    def rule(records: list[dict[str, Any]], values: list[int], attempt: int) -> Invocation:
        if 5 in values:
            return Invocation(error={"errorType": "ValueError", "errorMessage": "poison"})
        return Invocation(result=None)

    function = Function(rule)

    # when: bisect on error, 2 retries
    poller = _run(world, function, batch_size=8, bisect=True, max_retries=2)

    # then the batch is split until record 5 is alone, retried twice, then given up
    assert [5] in function.batches
    assert function.batches.count([5]) == 3
    delivered = {v for batch in function.batches if 5 not in batch for v in batch}
    assert delivered == {0, 1, 2, 3, 4, 6, 7}
    (message,) = _failed_batches(world)
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert message["requestContext"]["functionArn"] == FUNCTION_ARN
    assert message["responseContext"]["functionError"] == "Unhandled"
    info = message["KinesisBatchInfo"]
    assert (info["batchSize"], info["streamArn"], info["shardId"]) == (
        1,
        ARN,
        "shardId-000000000000",
    )
    assert info["startSequenceNumber"] == info["endSequenceNumber"]
    (stats,) = poller.stats.values()
    assert stats.failed_batches == 1


def test_records_older_than_the_maximum_age_go_to_the_on_failure_queue(world: World) -> None:
    # given records that arrived, by the poller's clock, two hours ago
    _put(world, [1, 2, 3])
    function = Function()
    mapping = Mapping(
        function_name="scorer",
        function_arn=FUNCTION_ARN,
        stream_arn=ARN,
        starting_position="TRIM_HORIZON",
        on_failure_arn=world.queue_arn,
        max_record_age=3600,
    )
    import time

    poller = KinesisPoller(
        kinesis=world.kinesis,
        sqs=world.sqs,
        invoke=function,
        region=REGION,
        poll_seconds=0.02,
        clock=lambda: time.time() + 7200,
    )

    # when
    poller.start([mapping])
    assert poller.wait_idle(30)
    poller.stop()

    # then the function never sees them, and the queue has their range
    assert function.batches == []
    (message,) = _failed_batches(world)
    assert message["requestContext"]["condition"] == "RecordAgeExceeded"
    assert message["KinesisBatchInfo"]["batchSize"] == 3
