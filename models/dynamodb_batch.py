"""DynamoDB's batch calls with their limits honoured and their leftovers retried.

BatchGetItem takes 100 keys and BatchWriteItem 25 items a call; under throttling either
returns part of the request as unprocessed, to be sent again after a backoff. The feature
store and the predictions sink both go through here (boto3 clients are passed in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.retry import backoff

BATCH_GET_LIMIT = 100
BATCH_WRITE_LIMIT = 25

Item = dict[str, Any]


def batch_get(
    client: Any,
    table: str,
    keys: list[Item],
    *,
    consistent: bool,
    give_up: Callable[[str], Exception],
    projection: str | None = None,
    max_retries: int = 8,
    sleep: Callable[[float], None],
    on_response: Callable[[list[Item], int, dict[str, Any]], None] | None = None,
) -> list[Item]:
    """Every item of ``keys`` that exists, 100 keys a call, unprocessed keys retried.

    ``on_response(items, keys asked, response)`` sees each response (capacity counting);
    keys still unprocessed after ``max_retries`` raise ``give_up(reason)``.
    """
    found: list[Item] = []
    for start in range(0, len(keys), BATCH_GET_LIMIT):
        pending = keys[start : start + BATCH_GET_LIMIT]
        for attempt in range(max_retries + 1):
            request: dict[str, Any] = {"Keys": pending, "ConsistentRead": consistent}
            if projection is not None:
                request["ProjectionExpression"] = projection
            response = client.batch_get_item(
                RequestItems={table: request}, ReturnConsumedCapacity="TOTAL"
            )
            items = response.get("Responses", {}).get(table, [])
            if on_response is not None:
                on_response(items, len(pending), response)
            found.extend(items)
            unprocessed = response.get("UnprocessedKeys", {}).get(table)
            if not unprocessed:
                break
            if attempt == max_retries:
                raise give_up(
                    f"{len(unprocessed['Keys'])} keys still unprocessed after {attempt} retries"
                )
            pending = list(unprocessed["Keys"])
            sleep(backoff(attempt))
    return found


def batch_put(
    client: Any,
    table: str,
    items: list[Item],
    *,
    give_up: Callable[[str], Exception],
    max_retries: int = 8,
    sleep: Callable[[float], None],
    on_response: Callable[[list[Item], dict[str, Any]], None] | None = None,
) -> None:
    """Put at most 25 items in one BatchWriteItem, unprocessed items retried.

    ``on_response(items written by this call, response)`` sees each response.
    """
    if len(items) > BATCH_WRITE_LIMIT:
        raise ValueError(f"{len(items)} items: BatchWriteItem takes {BATCH_WRITE_LIMIT}")
    pending: list[Item] = [{"PutRequest": {"Item": item}} for item in items]
    for attempt in range(max_retries + 1):
        response = client.batch_write_item(
            RequestItems={table: pending}, ReturnConsumedCapacity="TOTAL"
        )
        unprocessed = response.get("UnprocessedItems", {}).get(table, [])
        if on_response is not None:
            done = [r["PutRequest"]["Item"] for r in pending if r not in unprocessed]
            on_response(done, response)
        if not unprocessed:
            return
        if attempt == max_retries:
            raise give_up(f"{len(unprocessed)} items still unprocessed after {attempt} retries")
        pending = list(unprocessed)
        sleep(backoff(attempt))
