"""Kinesis event source mappings, run as Lambda runs them (moto delivers one record at a time,
swallowing errors).

One poller thread per shard of each mapping: read from the starting position, gather a batch
(batch size, batching window), build the event exactly as Lambda shapes it, invoke, and act
on the outcome:

- success: checkpoint after the batch;
- ``batchItemFailures`` (with ``ReportBatchItemFailures``): checkpoint before the first
  failed record and deliver from it again (a retry); an empty or unknown identifier fails the
  whole batch, as on AWS;
- a function error or timeout: with ``BisectBatchOnFunctionError`` split the batch in two and
  process each half (splitting does not use a retry), else retry the batch;
- after ``MaximumRetryAttempts`` retries, or for records older than
  ``MaximumRecordAgeInSeconds``, the batch's metadata goes to the on-failure destination
  (SQS) in AWS's shape, and the shard moves on.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from infra.local.runtime import Invocation, InvokeError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Mapping:
    """An AWS::Lambda::EventSourceMapping's settings, resolved from the template."""

    function_name: str
    function_arn: str
    stream_arn: str
    batch_size: int = 100
    window_seconds: float = 0.0
    starting_position: str = "LATEST"
    report_item_failures: bool = False
    bisect: bool = False
    max_retries: int = -1
    max_record_age: int = -1
    on_failure_arn: str | None = None
    parallelization: int = 1

    @classmethod
    def from_template(cls, p: dict[str, Any], function_arns: dict[str, str]) -> Mapping:
        name = p["FunctionName"]
        return cls(
            function_name=name,
            function_arn=function_arns[name],
            stream_arn=p["EventSourceArn"],
            batch_size=int(p.get("BatchSize", 100)),
            window_seconds=float(p.get("MaximumBatchingWindowInSeconds", 0)),
            starting_position=p.get("StartingPosition", "LATEST"),
            report_item_failures="ReportBatchItemFailures" in p.get("FunctionResponseTypes", []),
            bisect=bool(p.get("BisectBatchOnFunctionError", False)),
            max_retries=int(p.get("MaximumRetryAttempts", -1)),
            max_record_age=int(p.get("MaximumRecordAgeInSeconds", -1)),
            on_failure_arn=p.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination"),
            parallelization=int(p.get("ParallelizationFactor", 1)),
        )

    @property
    def stream_name(self) -> str:
        return self.stream_arn.rsplit("/", 1)[1]


@dataclass
class ShardStats:
    invocations: int = 0
    records: int = 0
    retries: int = 0
    failed_batches: int = 0


@dataclass
class _Record:
    raw: dict[str, Any]

    @property
    def sequence(self) -> str:
        return str(self.raw["SequenceNumber"])

    @property
    def arrival(self) -> float:
        value = self.raw["ApproximateArrivalTimestamp"]
        return value.timestamp() if isinstance(value, datetime) else float(value)


@dataclass
class KinesisPoller:
    """Runs mappings against the local Kinesis and Lambda until stopped."""

    kinesis: Any
    sqs: Any
    invoke: Callable[[str, Any], Invocation]
    region: str
    poll_seconds: float = 0.2
    clock: Callable[[], float] = time.time
    stats: dict[tuple[str, str], ShardStats] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _idle: dict[tuple[str, str], bool] = field(default_factory=dict)

    def start(self, mappings: list[Mapping]) -> None:
        for mapping in mappings:
            shards = self.kinesis.list_shards(StreamName=mapping.stream_name)["Shards"]
            for shard in shards:
                key = (mapping.stream_name + "->" + mapping.function_name, shard["ShardId"])
                self.stats[key] = ShardStats()
                self._idle[key] = False
                thread = threading.Thread(
                    target=self._run,
                    args=(mapping, shard["ShardId"], key),
                    daemon=True,
                    name=f"poller-{mapping.stream_name}-{shard['ShardId']}",
                )
                self._threads.append(thread)
                thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def idle(self) -> bool:
        """Whether every shard has been read to its end and has nothing in flight."""
        return all(self._idle.values())

    def wait_idle(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(0.05)
        return False

    # --- one shard --------------------------------------------------------------------

    def _iterator(self, mapping: Mapping, shard: str, after: str | None) -> str:
        args: dict[str, Any] = {"StreamName": mapping.stream_name, "ShardId": shard}
        if after is not None:
            args.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after)
        else:
            args["ShardIteratorType"] = mapping.starting_position
        return str(self.kinesis.get_shard_iterator(**args)["ShardIterator"])

    def _run(self, mapping: Mapping, shard: str, key: tuple[str, str]) -> None:
        checkpoint: str | None = None
        buffered: list[_Record] = []
        iterator = self._iterator(mapping, shard, None)
        window_started: float | None = None
        while not self._stop.is_set():
            try:
                if len(buffered) < mapping.batch_size:
                    response = self.kinesis.get_records(
                        ShardIterator=iterator, Limit=mapping.batch_size - len(buffered)
                    )
                    iterator = response["NextShardIterator"]
                    buffered += [_Record(r) for r in response["Records"]]
                if not buffered:
                    self._idle[key] = True
                    window_started = None
                    self._stop.wait(self.poll_seconds)
                    continue
                self._idle[key] = False
                if window_started is None:
                    window_started = time.monotonic()
                full = len(buffered) >= mapping.batch_size
                waited = time.monotonic() - window_started >= mapping.window_seconds
                if not (full or waited):
                    self._stop.wait(min(self.poll_seconds, mapping.window_seconds))
                    continue
                batch, buffered = buffered[: mapping.batch_size], buffered[mapping.batch_size :]
                window_started = None
                checkpoint = self._deliver(mapping, shard, key, batch)
            except Exception:  # the poller must outlive any one failure, as Lambda's does
                log.exception("poller %s %s failed; retrying", mapping.stream_name, shard)
                buffered = []
                iterator = self._iterator(mapping, shard, checkpoint)
                self._stop.wait(1.0)

    def _deliver(
        self, mapping: Mapping, shard: str, key: tuple[str, str], batch: list[_Record]
    ) -> str:
        """Process one batch to completion (success, or handed to the on-failure destination);
        the sequence number of its last record, the new checkpoint."""
        pending: list[tuple[list[_Record], int]] = [(batch, 0)]  # (records, retries used)
        stats = self.stats[key]
        while pending and not self._stop.is_set():
            records, retries = pending.pop(0)
            records = self._drop_expired(mapping, shard, records)
            if not records:
                continue
            invocation = self._invoke(mapping, shard, records)
            stats.invocations += 1
            failed_from = self._failed_from(mapping, records, invocation)
            if failed_from is None:
                stats.records += len(records)
                continue
            stats.records += failed_from
            remaining = records[failed_from:]
            if invocation.error is not None and mapping.bisect and len(remaining) > 1:
                half = len(remaining) // 2  # splitting uses no retry
                pending[:0] = [(remaining[:half], retries), (remaining[half:], retries)]
                continue
            if 0 <= mapping.max_retries <= retries:
                self._on_failure(
                    mapping,
                    shard,
                    remaining,
                    condition="RetryAttemptsExhausted",
                    attempts=retries,
                    invocation=invocation,
                )
                stats.failed_batches += 1
                continue
            stats.retries += 1
            self._stop.wait(min(1.0, 0.05 * (retries + 1)))
            pending.insert(0, (remaining, retries + 1))
        return batch[-1].sequence

    def _drop_expired(self, mapping: Mapping, shard: str, records: list[_Record]) -> list[_Record]:
        if mapping.max_record_age < 0:
            return records
        now = self.clock()
        expired = [r for r in records if now - r.arrival > mapping.max_record_age]
        if expired:
            self._on_failure(
                mapping, shard, expired, condition="RecordAgeExceeded", attempts=0, invocation=None
            )
        return [r for r in records if now - r.arrival <= mapping.max_record_age]

    @staticmethod
    def _failed_from(
        mapping: Mapping, records: list[_Record], invocation: Invocation
    ) -> int | None:
        """Index of the first record to deliver again (None: the batch succeeded)."""
        if invocation.error is not None:
            return 0
        if not mapping.report_item_failures:
            return None
        result = invocation.result
        failures = result.get("batchItemFailures") if isinstance(result, dict) else None
        if not failures:
            return None
        position = {r.sequence: k for k, r in enumerate(records)}
        indices = []
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not identifier or identifier not in position:
                return 0  # AWS: a malformed report fails the whole batch
            indices.append(position[identifier])
        return min(indices)

    def _event(self, mapping: Mapping, shard: str, records: list[_Record]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": r.raw["PartitionKey"],
                        "sequenceNumber": r.sequence,
                        "data": base64.b64encode(r.raw["Data"]).decode(),
                        "approximateArrivalTimestamp": r.arrival,
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": f"{shard}:{r.sequence}",
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": mapping.function_arn,
                    "awsRegion": self.region,
                    "eventSourceARN": mapping.stream_arn,
                }
                for r in records
            ]
        }

    def _invoke(self, mapping: Mapping, shard: str, records: list[_Record]) -> Invocation:
        event = self._event(mapping, shard, records)
        while not self._stop.is_set():
            try:
                return self.invoke(mapping.function_name, event)
            except InvokeError as error:  # throttled: Lambda retries until the record ages out
                log.warning("%s", error)
                self._stop.wait(0.2)
        return Invocation(error={"errorType": "Stopped", "errorMessage": "poller stopped"})

    def _on_failure(
        self,
        mapping: Mapping,
        shard: str,
        records: list[_Record],
        *,
        condition: str,
        attempts: int,
        invocation: Invocation | None,
    ) -> None:
        """AWS's invocation record for a discarded batch: metadata, never the payloads."""
        if mapping.on_failure_arn is None:
            log.error("%s: %d records discarded (%s)", shard, len(records), condition)
            return
        message = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": mapping.function_arn,
                "condition": condition,
                "approximateInvokeCount": attempts + 1,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled" if invocation and invocation.error else None,
            },
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat(),
            "KinesisBatchInfo": {
                "shardId": shard,
                "startSequenceNumber": records[0].sequence,
                "endSequenceNumber": records[-1].sequence,
                "approximateArrivalOfFirstRecord": datetime.fromtimestamp(
                    records[0].arrival, UTC
                ).isoformat(),
                "approximateArrivalOfLastRecord": datetime.fromtimestamp(
                    records[-1].arrival, UTC
                ).isoformat(),
                "batchSize": len(records),
                "streamArn": mapping.stream_arn,
            },
        }
        queue_name = mapping.on_failure_arn.rsplit(":", 1)[1]
        url = self.sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
        self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message))
