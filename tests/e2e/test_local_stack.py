"""The local stack end to end: `rtml local up`'s deployment of the synthesized app, driven with
plain boto3 as a user would: good, duplicate and poison records through Kinesis, the real
scorer in its execution environments, predictions, dead letters, nothing scored twice."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from infra.local.stack import STATE_FILE, LocalStack

pytestmark = pytest.mark.e2e


def _record(tx: int, customer: int, minute: int, amount: float = 20.0) -> dict[str, Any]:
    return {
        "transaction_id": tx,
        "tx_datetime": f"2018-05-15T10:{minute:02d}:00",
        "customer_id": customer,
        "terminal_id": 7,
        "tx_amount": amount,
    }


def _put(stack: LocalStack, payloads: list[bytes], keys: list[str]) -> None:
    stack.client("kinesis").put_records(
        StreamName=stack.info["transactions_stream"],
        Records=[{"Data": p, "PartitionKey": k} for p, k in zip(payloads, keys, strict=True)],
    )


def _settle(stack: LocalStack) -> None:
    assert stack.poller is not None
    time.sleep(0.5)  # the pollers' next read
    assert stack.poller.wait_idle(120)


def test_local_json_names_what_a_user_needs(stack: LocalStack) -> None:
    info = json.loads((stack.root / STATE_FILE).read_text())
    needed = ("endpoint_url", "region", "transactions_stream", "labels_stream",
              "predictions_table", "dead_letter_queue_url", "data_bucket", "registry")  # fmt: skip
    for key in needed:
        assert info[key], key
    assert info["endpoint_url"] == stack.endpoint_url
    assert info["started_seconds"] > 0


def test_good_duplicate_and_poison_records_through_the_deployed_scorer(
    stack: LocalStack,
) -> None:
    # given 12 good transactions, 4 of them put again (a producer's retry), and poison
    good = [_record(1000 + k, customer=k % 3, minute=k) for k in range(12)]
    poison = [
        b"{not json",
        json.dumps({**_record(2000, 1, 30), "tx_amount": -5}).encode(),
        json.dumps({**_record(1003, 9, 59), "tx_amount": 999.0}).encode(),  # id reused
    ]
    payloads = [json.dumps(r).encode() for r in good]
    keys = [str(r["customer_id"]) for r in good]

    # when they go through Kinesis
    _put(stack, payloads, keys)
    _settle(stack)
    _put(stack, [*payloads[:4], *poison], [*keys[:4], "1", "1", "9"])
    _settle(stack)

    # then every good transaction has exactly one prediction
    dynamodb = stack.client("dynamodb")
    items = dynamodb.scan(TableName=stack.info["predictions_table"])["Items"]
    assert sorted(int(i["transaction_id"]["N"]) for i in items) == [
        r["transaction_id"] for r in good
    ]
    # and each poison record is in the dead-letter queue with its reason
    sqs = stack.client("sqs")
    messages = sqs.receive_message(
        QueueUrl=stack.info["dead_letter_queue_url"], MaxNumberOfMessages=10
    ).get("Messages", [])
    letters = [json.loads(m["Body"]) for m in messages]
    assert len(letters) == 3
    payloads_back = sorted(base64.b64decode(letter["payload_base64"]) for letter in letters)
    assert payloads_back == sorted(poison)
    assert all(letter["reason"] for letter in letters)
    # and the terminal's state counts each transaction once (the duplicates changed nothing)
    from models.features import dynamodb_store as ddb
    from models.features.online import MemoryStore, OnlineFeatures

    item = dynamodb.get_item(
        TableName=stack.info["feature_state_table"],
        Key={"pk": {"S": "TERMINAL_ID#7"}, "sk": {"S": "S"}},
    )["Item"]
    machine = OnlineFeatures(MemoryStore()).machines["TERMINAL_ID"]
    state = ddb.decode_main(item["d"]["B"], machine)
    assert sorted(tx for _, tx in state.keys) == [r["transaction_id"] for r in good]
    # and no batch failed
    assert stack.poller is not None
    assert sum(s.failed_batches for s in stack.poller.stats.values()) == 0


def test_lambda_invoke_runs_the_deployed_handler_through_moto(stack: LocalStack) -> None:
    # given a Kinesis-shaped event with one good record, invoked the way `aws lambda invoke` does
    data = base64.b64encode(json.dumps(_record(3000, 5, 40)).encode()).decode()
    event = {
        "Records": [
            {
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "5",
                            "sequenceNumber": "900", "data": data,
                            "approximateArrivalTimestamp": time.time()},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": "shardId-000000000000:900", "eventName": "aws:kinesis:record",
                "awsRegion": stack.region,
                "eventSourceARN": "arn:aws:kinesis:eu-west-1:123456789012:stream/x",
            }
        ]
    }  # fmt: skip
    function = stack.info["scorer_function"]

    # when
    response = stack.client("lambda").invoke(FunctionName=function, Payload=json.dumps(event))

    # then the handler ran in its execution environment and scored it
    assert "FunctionError" not in response
    assert json.loads(response["Payload"].read()) == {"batchItemFailures": []}
    item = stack.client("dynamodb").get_item(
        TableName=stack.info["predictions_table"], Key={"transaction_id": {"N": "3000"}}
    )
    assert "Item" in item
    log = Path(stack.info["logs"]) / f"{function}.log"
    assert log.exists() and log.stat().st_size > 0


def _http(
    url: str, *, method: str = "GET", body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **({"x-api-key": key} if key else {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_api_answers_through_the_local_gateway_with_the_local_key(stack: LocalStack) -> None:
    url, key = stack.info["api_url"], stack.info["api_key"]
    assert url and key
    request = {"customer_id": 1, "terminal_id": 7, "tx_amount": 42.0,
               "tx_datetime": "2018-05-15T11:00:00"}  # fmt: skip

    # a decision, with the key
    status, body = _http(f"{url}v1/predictions?explain=true", method="POST", body=request, key=key)
    assert status == 200, body
    assert body["decision"] in ("high_risk", "low_risk") and body["features"]
    # the gateway's own answers, in the API's error shape
    status, body = _http(f"{url}v1/predictions", method="POST", body=request)
    assert (status, body["error"]) == (403, "forbidden")
    status, body = _http(f"{url}v1/nothing", key=key)
    assert (status, body["error"]) == (404, "not_found")
    too_many = {"transactions": [request] * 101}
    status, body = _http(f"{url}v1/predictions:batch", method="POST", body=too_many, key=key)
    assert (status, body["error"]) == (400, "bad_request")
    # the function's own refusals pass through
    status, body = _http(f"{url}v1/predictions", method="POST", body={**request, "tx_amount": -1},
                         key=key)  # fmt: skip
    assert (status, body["error"]) == (422, "invalid_transaction")


def test_api_reads_back_a_prediction_the_stream_wrote(stack: LocalStack) -> None:
    record = _record(4000, customer=2, minute=45)
    _put(stack, [json.dumps(record).encode()], ["2"])
    _settle(stack)
    status, body = _http(f"{stack.info['api_url']}v1/predictions/4000", key=stack.info["api_key"])
    assert status == 200, body
    assert (body["transaction_id"], body["path"]) == (4000, "stream")
