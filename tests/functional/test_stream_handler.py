"""The stream scorer's real handler on moto: Kinesis events as Lambda delivers them.

Happy path, poison records dead-lettered while the rest is scored, a redelivered batch
that changes nothing, a throttled predictions table that fails exactly its records (and
a retry that ends in the fault-free state), and a missing champion that fails loudly.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from models import contracts as c
from models.aws_sinks import create_predictions_table, decode_body
from models.features import dynamodb_store as ddb
from models.registry import open_registry
from tests.functional.conftest import REGION
from tests.unit.test_scorer import save

pytestmark = pytest.mark.functional
STATE, PREDICTIONS, BUCKET, BUS, QUEUE = "state", "predictions", "rtml-test", "rtml-alerts", "dlq"
ARRIVAL = datetime(2026, 11, 26, 12, tzinfo=UTC)
T0 = datetime(2018, 4, 1, 12)


@dataclass
class World:
    """The moto resources the function is deployed against, and its handler module."""

    dynamodb: Any
    sqs: Any
    s3: Any
    queue_url: str
    handler: Any


class Context:
    function_name = "rtml-stream-test"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:rtml-stream-test"
    aws_request_id = "req-1"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model")
    save(path, "logistic_regression", seed=1)
    return path


@pytest.fixture
def world(aws: None, artifact: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    ddb.create_table(dynamodb, STATE)
    create_predictions_table(dynamodb, PREDICTIONS)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(
        Bucket=BUCKET,
        CreateBucketConfiguration={"LocationConstraint": REGION},  # type: ignore[typeddict-item]
    )
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
    boto3.client("events", region_name=REGION).create_event_bus(Name=BUS)
    registry = open_registry(f"s3://{BUCKET}/registry", s3_client=s3)
    version = registry.push(artifact).version
    registry.promote("fraud-test", version, "champion")
    env = {
        c.ENV_FEATURE_STATE_TABLE: STATE,
        c.ENV_PREDICTIONS_TABLE: PREDICTIONS,
        c.ENV_REGISTRY: f"s3://{BUCKET}/registry",
        c.ENV_MODEL_NAME: "fraud-test",
        c.ENV_ALERT_BUS: BUS,
        c.ENV_ARCHIVE_BUCKET: BUCKET,
        c.ENV_DEAD_LETTER_QUEUE_URL: queue_url,
        c.ENV_DECISION_THRESHOLD: "0.5",
        "POWERTOOLS_METRICS_NAMESPACE": "rtml-test",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from lambdas import stream

    stream.scoring.cache_clear()
    yield World(dynamodb, sqs, s3, queue_url, stream)
    stream.scoring.cache_clear()


def body(tx_id: int, minutes: int = 0, customer: int = 1, terminal: int = 7, **extra: Any) -> bytes:
    fields = {
        "transaction_id": tx_id,
        "tx_datetime": (T0 + timedelta(minutes=minutes)).isoformat(),
        "customer_id": customer,
        "terminal_id": terminal,
        "tx_amount": 25.5 + tx_id,
        **extra,
    }
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def kinesis_event(payloads: list[bytes], first_sequence: int = 1, shard: int = 0) -> dict[str, Any]:
    """A Kinesis event exactly as Lambda shapes it (base64 data, ids, arrival time)."""
    records = []
    for k, data in enumerate(payloads):
        sequence = f"4959000000000000000000000000000000000000000000{first_sequence + k:010d}"
        records.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "1",
                    "sequenceNumber": sequence,
                    "data": base64.b64encode(data).decode(),
                    "approximateArrivalTimestamp": ARRIVAL.timestamp() + k / 1000,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-{shard:012d}:{sequence}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/rtml-stream",
                "awsRegion": REGION,
                "eventSourceARN": f"arn:aws:kinesis:{REGION}:123456789012:stream/rtml-transactions",
            }
        )
    return {"Records": records}


def stored(world: World) -> dict[int, dict[str, Any]]:
    items = world.dynamodb.scan(TableName=PREDICTIONS)["Items"]
    return {int(i["transaction_id"]["N"]): i for i in items}


def dead_letters(world: World) -> list[dict[str, Any]]:
    messages = world.sqs.receive_message(QueueUrl=world.queue_url, MaxNumberOfMessages=10)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def failures(response: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_stream_scores_a_batch_and_archives_it(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    # given three transactions and a label
    label = body(1, event_type="label", tx_amount=..., tx_fraud=1)
    event = kinesis_event([body(1), body(2, 5), body(3, 9, customer=2), label])
    # when
    response = world.handler.handler(event, Context())
    # then EMF metrics: counts per outcome, the score distribution, the model version
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line]
    names = {
        m["Name"] for e in emitted for d in e["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]
    }
    assert {"RecordsIn", "Records_scored", "Records_labelled", "Score_0", "HighRiskShare"} <= names
    assert any(e.get("ModelVersion") for e in emitted)
    # then nothing to retry, three predictions stored with the model version
    assert failures(response) == []
    predictions = stored(world)
    assert sorted(predictions) == [1, 2, 3]
    first = decode_body(predictions[1])
    assert first.path == "stream" and first.model_name == "fraud-test"
    assert first.features["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 1
    second = decode_body(predictions[2])
    assert second.features["CUSTOMER_ID_NB_TX_1DAY_WINDOW"] == 2  # fresh to the second
    # and the archive holds them under the transactions' day
    listing = world.s3.list_objects_v2(Bucket=BUCKET, Prefix="predictions/date=2018-04-01/")
    (key,) = [o["Key"] for o in listing["Contents"]]
    lines = world.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().splitlines()
    assert sorted(json.loads(line)["transaction_id"] for line in lines) == [1, 2, 3]


def test_stream_dead_letters_poison_and_scores_the_rest(world: World) -> None:
    poison = [
        b"{not json",
        body(10, tx_amount=-5.0),
        body(11, merchant="acme"),
        b"\xff\xfe",
        body(12, customer_id="7"),
    ]
    event = kinesis_event([body(1), *poison, body(2, 3)])
    # when
    response = world.handler.handler(event, Context())
    # then the shard is not blocked: no failure reported, the good records scored
    assert failures(response) == []
    assert sorted(stored(world)) == [1, 2]
    # and every poison record is in the dead-letter queue with a reason naming its field
    letters = dead_letters(world)
    assert sorted(m["field"] for m in letters) == [
        "customer_id",
        "merchant",
        "record",
        "record",
        "tx_amount",
    ]
    for letter in letters:
        raw = base64.b64decode(letter["payload_base64"])
        assert raw in poison
        assert letter["shard_id"] == "shardId-000000000000"
        assert letter["reason"].startswith(letter["field"] + ": ")


def test_stream_redelivered_batch_changes_nothing(world: World) -> None:
    event = kinesis_event([body(1), body(2, 5), body(3, 9)])
    world.handler.handler(event, Context())
    before = stored(world)
    state_before = world.dynamodb.scan(TableName=STATE)["Items"]
    # when Lambda delivers the very same batch again
    response = world.handler.handler(event, Context())
    # then no state write, no second prediction
    assert failures(response) == []
    assert stored(world) == before
    assert world.dynamodb.scan(TableName=STATE)["Items"] == state_before


def test_stream_throttled_predictions_fail_exactly_their_records(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the predictions table refuses the writes of the second chunk of 25
    scoring = world.handler.scoring()
    sink = scoring.predictions
    real_put = sink._put
    calls: list[int] = []

    def flaky_put(chunk: Any) -> None:
        calls.append(len(chunk))
        if len(calls) == 2:
            raise RuntimeError("ProvisionedThroughputExceededException")
        real_put(chunk)

    monkeypatch.setattr(sink, "_put", flaky_put)
    event = kinesis_event([body(i, i, customer=i % 5) for i in range(1, 31)])
    # when
    response = world.handler.handler(event, Context())
    # then exactly the records of the refused chunk are reported for redelivery
    sequences = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert failures(response) == sequences[25:]
    assert sorted(stored(world)) == list(range(1, 26))
    # when Lambda redelivers from the first failure and the table is fine again
    monkeypatch.setattr(sink, "_put", real_put)
    retry = {"Records": event["Records"][25:]}
    assert failures(world.handler.handler(retry, Context())) == []
    # then the end state is the fault-free one
    assert sorted(stored(world)) == list(range(1, 31))


def test_stream_without_a_champion_fails_the_whole_batch(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a function configured for a model that has no champion
    monkeypatch.setenv(c.ENV_MODEL_NAME, "no-such-model")
    world.handler.scoring.cache_clear()
    # when a batch arrives, then it fails as a whole (Lambda retries it): no default score
    with pytest.raises(Exception, match="no-such-model"):
        world.handler.handler(kinesis_event([body(1)]), Context())
    assert stored(world) == {}


def test_stream_alerts_once_per_high_risk_transaction(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given every score is high risk, and a spy on the bus
    monkeypatch.setenv(c.ENV_DECISION_THRESHOLD, "0")
    world.handler.scoring.cache_clear()
    alerts = world.handler.scoring().alerts
    published: list[dict[str, Any]] = []
    real = alerts.client.put_events

    def spy(**kwargs: Any) -> Any:
        published.extend(kwargs["Entries"])
        return real(**kwargs)

    monkeypatch.setattr(alerts.client, "put_events", spy)
    event = kinesis_event([body(1), body(2, 5)])
    # when the batch is delivered twice
    world.handler.handler(event, Context())
    world.handler.handler(event, Context())
    # then one alert per transaction, carrying the prediction (its id dedupes)
    details = [json.loads(e["Detail"]) for e in published]
    assert sorted(d["transaction_id"] for d in details) == [1, 2]
    assert {e["DetailType"] for e in published} == {"HighRiskTransaction"}
    assert {i["alert"]["S"] for i in stored(world).values()} == {"sent"}


def test_stream_alert_outage_retries_and_alerts_on_redelivery(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given the bus is down during the first delivery
    monkeypatch.setenv(c.ENV_DECISION_THRESHOLD, "0")
    world.handler.scoring.cache_clear()
    alerts = world.handler.scoring().alerts
    real = alerts.client.put_events

    def down(**kwargs: Any) -> Any:
        raise RuntimeError("EventBridge unavailable")

    monkeypatch.setattr(alerts.client, "put_events", down)
    event = kinesis_event([body(1)])
    # then every record of the batch failed: Powertools raises (Lambda retries it all)
    from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

    with pytest.raises(BatchProcessingError, match="All records failed"):
        world.handler.handler(event, Context())
    assert stored(world)[1]["alert"]["S"] == "pending"
    # when the record is delivered again with the bus back
    monkeypatch.setattr(alerts.client, "put_events", real)
    assert failures(world.handler.handler(event, Context())) == []
    # then the stored prediction's alert went out
    assert stored(world)[1]["alert"]["S"] == "sent"


def test_stream_scores_the_challenger_in_shadow(
    world: World, artifact: Path, tmp_path: Path
) -> None:
    # given a challenger next to the champion
    other = tmp_path / "challenger"
    save(other, "logistic_regression", seed=2)
    registry = open_registry(f"s3://{BUCKET}/registry", s3_client=world.s3)
    challenger = registry.push(other).version
    registry.promote("fraud-test", challenger, "challenger")
    world.handler.scoring.cache_clear()
    # when
    world.handler.handler(kinesis_event([body(1)]), Context())
    # then the champion decides and the challenger's score rides along
    prediction = decode_body(stored(world)[1])
    assert prediction.challenger_version == challenger
    assert prediction.model_version != challenger
    assert prediction.challenger_score is not None


def test_stream_day_replay_equals_the_offline_table(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a champion trained on the served (improved) features, a small simulation, and
    # the online state warmed to the start of its last day
    import numpy as np

    from models import datasets
    from models.artifact import load_artifact
    from models.features.offline import compute_features
    from models.features.replay import delivered_between
    from models.features.spec import SERVED
    from models.wire import encode_event
    from rtml import cli

    artifact = tmp_path / "improved"
    save(artifact, "xgboost", seed=5, spec=SERVED)
    registry = open_registry(f"s3://{BUCKET}/registry", s3_client=world.s3)
    registry.promote("fraud-test", registry.push(artifact).version, "champion")

    sim_dir = tmp_path / "sim"
    sizes = ["--customers", "40", "--terminals", "80", "--days", "40", "--radius", "20"]
    assert cli.main(["simulate", *sizes, "--out", str(sim_dir)]) == 0
    table = datasets.read_dataset(sim_dir, c.TRANSACTIONS_COLUMNS)
    day = datetime(2018, 5, 10)  # the last day of 40 from 2018-04-01
    args = ["features", "materialize", "--in", str(sim_dir), "--table", STATE]
    assert cli.main([*args, "--as-of", (day - timedelta(seconds=1)).isoformat()]) == 0
    capsys.readouterr()
    # when that day's transactions and chargebacks stream through the handler, in order
    start = int(day.replace(tzinfo=UTC).timestamp())
    events = delivered_between(table, start, start + 86_400, labels="chargebacks")
    payloads = [encode_event(e) for e in events]
    for k in range(0, len(payloads), 100):
        chunk = kinesis_event(payloads[k : k + 100], first_sequence=k + 1)
        assert failures(world.handler.handler(chunk, Context())) == []
    # then every prediction's features equal the offline table's, and its score the
    # same model's on those offline features
    offline = compute_features(table, SERVED)
    ids = table.column("TRANSACTION_ID").to_pylist()
    row_of = {tx: i for i, tx in enumerate(ids)}
    model = load_artifact(artifact)
    predictions = [decode_body(i) for i in stored(world).values()]
    assert len(predictions) == sum(1 for p in payloads if b'"label"' not in p) > 50
    worst_feature = worst_score = 0.0
    for p in predictions:
        row = row_of[p.transaction_id]
        expected = {name: float(values[row]) for name, values in offline.items()}
        worst_feature = max(worst_feature, *(abs(p.features[n] - v) for n, v in expected.items()))
        worst_score = max(worst_score, abs(p.score - model.score(model.vector(expected))))
    assert worst_feature <= 1e-9
    assert worst_score <= 1e-6
    assert np.isfinite(worst_score)


def test_stream_dead_letters_a_reused_transaction_id(world: World) -> None:
    world.handler.handler(kinesis_event([body(1)]), Context())
    state_before = world.dynamodb.scan(TableName=STATE)["Items"]
    # when another transaction arrives under the same id (another amount)
    reused = body(1, tx_amount=999.0)
    response = world.handler.handler(kinesis_event([reused], first_sequence=5), Context())
    # then it is dead-lettered with its reason, and neither state nor prediction changes
    assert failures(response) == []
    (letter,) = dead_letters(world)
    assert letter["field"] == "transaction_id" and "reusing the id" in letter["reason"]
    assert world.dynamodb.scan(TableName=STATE)["Items"] == state_before
    assert decode_body(stored(world)[1]).features["TX_AMOUNT"] == 26.5


def test_stream_hot_swaps_between_batches_and_keeps_serving_on_a_broken_model(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a function that re-reads the aliases on every batch
    monkeypatch.setenv(c.ENV_ALIAS_RECHECK_SECONDS, "0")
    world.handler.scoring.cache_clear()
    registry = open_registry(f"s3://{BUCKET}/registry", s3_client=world.s3)
    first = registry.resolve("fraud-test", "champion")
    world.handler.handler(kinesis_event([body(1)]), Context())
    # when a new champion is promoted between two batches (no redeploy)
    newer = tmp_path / "v2"
    save(newer, "logistic_regression", seed=3)
    second = registry.push(newer).version
    registry.promote("fraud-test", second, "champion")
    world.handler.handler(kinesis_event([body(2, 5)], first_sequence=2), Context())
    # then the next batch is scored by it
    assert decode_body(stored(world)[1]).model_version == first
    assert decode_body(stored(world)[2]).model_version == second
    # when the next champion is broken (its model file corrupted after push)
    broken = tmp_path / "v3"
    save(broken, "logistic_regression", seed=4)
    third = registry.push(broken).version
    key = f"registry/models/fraud-test/versions/{third}/model.json"
    data = world.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    world.s3.put_object(Bucket=BUCKET, Key=key, Body=data.replace(b"coef", b"coef ", 1))
    registry.promote("fraud-test", third, "champion")
    response = world.handler.handler(kinesis_event([body(3, 9)], first_sequence=3), Context())
    # then the working model keeps serving, and the record is scored
    assert failures(response) == []
    assert decode_body(stored(world)[3]).model_version == second


def test_stream_chargeback_raises_the_terminal_risk(world: World) -> None:
    # given a transaction at terminal 7, charged back a week later
    day = 24 * 60
    world.handler.handler(kinesis_event([body(1, 0, customer=1)]), Context())
    chargeback = body(1, 0, customer=1, event_type="label", tx_amount=..., tx_fraud=1)
    response = world.handler.handler(kinesis_event([chargeback], first_sequence=2), Context())
    assert failures(response) == []
    # when another card pays at the terminal the day after the chargeback
    world.handler.handler(
        kinesis_event([body(2, 8 * day, customer=2)], first_sequence=3), Context()
    )
    # then its terminal features count the fraud (labels are known a week late)
    features = decode_body(stored(world)[2]).features
    assert features["TERMINAL_ID_NB_TX_7DAY_WINDOW"] == 1
    assert features["TERMINAL_ID_RISK_7DAY_WINDOW"] == 1.0


def test_stream_ab_share_lets_the_challenger_decide(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a challenger and an A/B share of all customers
    other = tmp_path / "challenger"
    save(other, "logistic_regression", seed=2)
    registry = open_registry(f"s3://{BUCKET}/registry", s3_client=world.s3)
    champion = registry.resolve("fraud-test", "champion")
    challenger = registry.push(other).version
    registry.promote("fraud-test", challenger, "challenger")
    monkeypatch.setenv(c.ENV_AB_SHARE, "1")
    world.handler.scoring.cache_clear()
    # when
    world.handler.handler(kinesis_event([body(1), body(2, 5, customer=3)]), Context())
    # then the challenger decides and the champion runs in shadow
    for prediction in map(decode_body, stored(world).values()):
        assert prediction.model_version == challenger
        assert prediction.challenger_version == champion


class _PerThreadProcessor:
    """Powertools' module-level BatchProcessor, one per thread: two threads here stand for
    two execution environments (one per shard), which never share a processor."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _get(self) -> Any:
        if not hasattr(self._local, "processor"):
            from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType

            self._local.processor = BatchProcessor(event_type=EventType.KinesisDataStreams)
        return self._local.processor

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get()(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


# One module-level Metrics serves both threads here (two environments in Lambda): whichever
# flushes second finds nothing left to publish.
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_stream_concurrent_shards_on_one_terminal_lose_no_update(world: World) -> None:
    # given two execution environments (one per shard), each with its own clients and engine,
    # whose first state read waits for the other's, so both read the terminal at one version
    stream = world.handler
    with pytest.MonkeyPatch.context() as monkeypatch:
        environments = [stream.scoring.__wrapped__() for _ in range(2)]
        barrier = threading.Barrier(2, timeout=30)
        conflicts: list[int] = []
        by_thread: dict[int, Any] = {}
        for scoring in environments:
            client = scoring.engine.store.client
            read = client.batch_get_item
            waited = threading.Event()

            def batch_get_item(
                *args: Any, _read: Any = read, _waited: Any = waited, **kw: Any
            ) -> Any:
                response = _read(*args, **kw)
                if not _waited.is_set():
                    _waited.set()
                    barrier.wait()
                return response

            monkeypatch.setattr(client, "batch_get_item", batch_get_item)
            scoring.engine.on_conflict = conflicts.append
        monkeypatch.setattr(stream, "scoring", lambda: by_thread[threading.get_ident()])
        monkeypatch.setattr(stream, "processor", _PerThreadProcessor())
        # and two batches of different customers on the same terminal, interleaved in time
        shard_a = [body(k, minutes=2 * k, customer=k, terminal=7) for k in range(1, 21)]
        shard_b = [
            body(100 + k, minutes=2 * k + 1, customer=100 + k, terminal=7) for k in range(1, 21)
        ]
        responses: dict[int, dict[str, Any]] = {}

        def invoke(shard: int, payloads: list[bytes]) -> None:
            by_thread[threading.get_ident()] = environments[shard]
            event = kinesis_event(payloads, first_sequence=1, shard=shard)
            responses[shard] = stream.handler(event, Context())

        # when both shards' batches run at once
        threads = [
            threading.Thread(target=invoke, args=(n, p)) for n, p in enumerate([shard_a, shard_b])
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    # then both succeed, the race really happened (one write lost the version check and
    # was re-applied on a fresh read), and the terminal holds every one of the 40 events
    assert responses == {0: {"batchItemFailures": []}, 1: {"batchItemFailures": []}}
    assert conflicts, "both environments wrote without a conflict: the race did not happen"
    item = world.dynamodb.get_item(
        TableName=STATE, Key={"pk": {"S": "TERMINAL_ID#7"}, "sk": {"S": "S"}}
    )["Item"]
    terminal = ddb.decode_main(item["d"]["B"], environments[0].engine.machines["TERMINAL_ID"])
    assert sorted(tx for _, tx in terminal.keys) == [*range(1, 21), *range(101, 121)]
    assert len(stored(world)) == 40
