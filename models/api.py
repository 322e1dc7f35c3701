"""The on-demand path: a transaction in, a decision out, with the stream's features and model.

Read-only on the feature state (the stream owns its writes): the customer's and terminal's
states are read in one batched, eventually consistent call, the transaction is folded into
private copies (so its own amount and count are in its windows, as the stream would have
them), and the champion scores it (the challenger in shadow, or deciding for an A/B share).
A request with a ``transaction_id`` stores its prediction (the first write wins, as on the
stream); one without is scored as the last event of its second and not stored.

Errors are :class:`ApiError` with an HTTP status, a code and the fields at fault; this
module maps every domain error a caller can cause to one of them, in one place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ValidationError

from models.contracts import (
    DEFAULT_MAX_AMOUNT,
    MAX_BATCH_PREDICTIONS,
    MAX_ENTITY_ID,
    BatchItemResult,
    BatchPredictionResponse,
    CustomerScore,
    ErrorResponse,
    FieldProblem,
    Prediction,
    PredictionRequest,
    PredictionResponse,
)
from models.errors import RtmlError
from models.features.online import OnlineFeatures, RawEvent, epoch_seconds
from models.serving import ModelRouter, predict

MAX_BODY_BYTES: Final = 256 * 1024
"""A request body above this is refused with 413 (a full batch of 100 is ~15 KB; Lambda's
own limit, 6 MB, would fail before any code runs)."""

UNNAMED_ID: Final = MAX_ENTITY_ID
"""The id a request without ``transaction_id`` is scored under: last in its second."""


class ApiError(RtmlError):
    """An error the API answers with: status, code, message, fields at fault, headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: Sequence[FieldProblem] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields)
        self.headers = dict(headers or {})

    def body(self, request_id: str | None = None) -> ErrorResponse:
        return ErrorResponse(
            error=self.code, message=self.message, fields=self.fields, request_id=request_id
        )


def _problems(exc: ValidationError) -> list[FieldProblem]:
    return [
        FieldProblem(
            field=".".join(str(p) for p in error["loc"]) or "body",
            problem=error["msg"],
        )
        for error in exc.errors(include_url=False)
    ]


def parse_json(body: bytes | str | None) -> Any:
    """The body as JSON, or 413 / 400 naming what is wrong."""
    data = body.encode() if isinstance(body, str) else (body or b"")
    if len(data) > MAX_BODY_BYTES:
        raise ApiError(
            413, "payload_too_large", f"body of {len(data)} bytes; the limit is {MAX_BODY_BYTES}"
        )
    if not data:
        raise ApiError(400, "bad_request", "the body is empty; send a JSON object")
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_request", f"the body is not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, "bad_request", f"the body is not JSON: {exc.msg} at line {exc.lineno}"
        ) from None


def parse_request(value: Any, *, max_amount: float = DEFAULT_MAX_AMOUNT) -> PredictionRequest:
    """One transaction, by the stream's rules (strict types, limits), or 422 per field."""
    if not isinstance(value, dict):
        raise ApiError(
            422,
            "invalid_transaction",
            "a transaction is a JSON object",
            [FieldProblem(field="body", problem="expected an object")],
        )
    try:
        # from JSON text, as the stream validates: strict JSON types, ISO times as strings
        return PredictionRequest.model_validate_json(
            json.dumps(value), context={"max_amount": max_amount}
        )
    except ValidationError as exc:
        raise ApiError(
            422, "invalid_transaction", "the transaction is not valid", _problems(exc)
        ) from None


def parse_batch(value: Any) -> list[Any]:
    """The items of a batch body (each validated on its own later), or 422 / 413."""
    if not isinstance(value, dict) or set(value) != {"transactions"}:
        raise ApiError(
            422,
            "invalid_batch",
            'a batch is {"transactions": [...]}',
            [FieldProblem(field="body", problem="expected exactly 'transactions'")],
        )
    items = value["transactions"]
    if not isinstance(items, list) or not items:
        raise ApiError(
            422,
            "invalid_batch",
            "'transactions' must be a non-empty list",
            [FieldProblem(field="transactions", problem="expected a list")],
        )
    if len(items) > MAX_BATCH_PREDICTIONS:
        raise ApiError(
            413,
            "batch_too_large",
            f"{len(items)} transactions; a batch takes at most {MAX_BATCH_PREDICTIONS}",
            [FieldProblem(field="transactions", problem=f"at most {MAX_BATCH_PREDICTIONS}")],
        )
    return items


@dataclass
class ApiScoring:
    """Scores requests; everything but HTTP (lambdas/api.py) lives here."""

    engine: OnlineFeatures
    router: ModelRouter
    predictions: Any
    """``write`` (first write wins) and ``get``: models/aws_sinks.DynamoDBPredictions."""
    threshold: float = 0.5
    max_amount: float = DEFAULT_MAX_AMOUNT
    latest_scores: Any = None
    """``get(customer_id) -> CustomerScore | None`` (the batch path's table), or None."""
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def score(
        self, requests: Sequence[PredictionRequest], *, explain: bool = False
    ) -> list[PredictionResponse | ApiError]:
        """Score valid requests in one state read and one model call per model version."""
        from models.features.dynamodb_store import StoreUnavailableError
        from models.registry import RegistryError

        now = self.clock()
        naive_now = now.replace(tzinfo=None)
        events = [
            RawEvent(
                is_label=False,
                transaction_id=UNNAMED_ID if r.transaction_id is None else r.transaction_id,
                time=epoch_seconds(r.tx_datetime or naive_now),
                customer_id=r.customer_id,
                terminal_id=r.terminal_id,
                values={"TX_AMOUNT": r.tx_amount},
            )
            for r in requests
        ]
        try:
            rows = self.engine.lookup(events)
            scored = predict(
                [
                    (e.transaction_id, e.customer_id, e.terminal_id, r.tx_datetime or naive_now, f)
                    for e, r, f in zip(events, requests, rows, strict=True)
                ],
                self.router,
                threshold=self.threshold,
                path="api",
                scored_at=now,
            )
        except RegistryError as exc:  # no champion alias, or no version of it loads
            message = str(exc).splitlines()[0]
            raise ApiError(
                503, "model_unavailable", message, headers={"Retry-After": "30"}
            ) from exc
        except StoreUnavailableError as exc:
            raise ApiError(
                503,
                "state_unavailable",
                "the feature state is unavailable",
                headers={"Retry-After": "5"},
            ) from exc
        outcomes = self._store(
            [p for p, r in zip(scored, requests, strict=True) if r.transaction_id is not None]
        )
        return [
            (outcomes.get(p.transaction_id) or _response(p, stored=True, explain=explain))
            if r.transaction_id is not None
            else _response(p, stored=False, explain=explain, unnamed=True)
            for p, r in zip(scored, requests, strict=True)
        ]

    def _store(self, predictions: list[Prediction]) -> dict[int, ApiError]:
        """Store named predictions (first write wins); the ones that could not be."""
        if not predictions:
            return {}
        try:
            result = self.predictions.write(predictions)
        except Exception as exc:  # the decision stands; storing it is what failed
            raise ApiError(
                503,
                "store_unavailable",
                "the predictions table is unavailable",
                headers={"Retry-After": "5"},
            ) from exc
        errors: dict[int, ApiError] = {}
        for tx, reason in result.conflicts.items():
            errors[tx] = ApiError(
                409,
                "transaction_id_conflict",
                reason,
                [FieldProblem(field="transaction_id", problem=reason)],
            )
        for tx in result.failed:
            errors[tx] = ApiError(
                503,
                "store_unavailable",
                "the prediction could not be stored",
                headers={"Retry-After": "5"},
            )
        return errors

    def predict_one(self, body: bytes | str | None, *, explain: bool = False) -> PredictionResponse:
        request = parse_request(parse_json(body), max_amount=self.max_amount)
        (outcome,) = self.score([request], explain=explain)
        if isinstance(outcome, ApiError):
            raise outcome
        return outcome

    def predict_batch(
        self, body: bytes | str | None, *, explain: bool = False
    ) -> BatchPredictionResponse:
        items = parse_batch(parse_json(body))
        results: list[BatchItemResult | None] = [None] * len(items)
        valid: list[tuple[int, PredictionRequest]] = []
        for i, item in enumerate(items):
            try:
                valid.append((i, parse_request(item, max_amount=self.max_amount)))
            except ApiError as error:
                results[i] = BatchItemResult(index=i, error=error.body())
        if valid:
            for (i, _), outcome in zip(
                valid, self.score([r for _, r in valid], explain=explain), strict=True
            ):
                results[i] = (
                    BatchItemResult(index=i, error=outcome.body())
                    if isinstance(outcome, ApiError)
                    else BatchItemResult(index=i, prediction=outcome)
                )
        done = [r for r in results if r is not None]
        scored = sum(r.prediction is not None for r in done)
        return BatchPredictionResponse(results=done, scored=scored, refused=len(done) - scored)

    def get(self, transaction_id: str) -> Prediction:
        tx = _parse_id(transaction_id, "transaction_id")
        found = self.predictions.get(tx)
        if found is None:
            raise ApiError(404, "not_found", f"no prediction for transaction {tx}")
        prediction: Prediction = found
        return prediction

    def customer_score(self, customer_id: str) -> CustomerScore:
        """The customer's latest batch score, or 404 (422 for a malformed id)."""
        customer = _parse_id(customer_id, "customer_id")
        found = None if self.latest_scores is None else self.latest_scores.get(customer)
        if found is None:
            raise ApiError(404, "not_found", f"no batch score for customer {customer}")
        score: CustomerScore = found
        return score

    def models(self) -> dict[str, Any]:
        """The versions serving now (resolving them loads them if needed)."""
        out: dict[str, Any] = {"ab_share": self.router.ab_share, "segment": self.router.segment}
        try:
            champion, challenger = self.router.models()
        except Exception as exc:
            raise ApiError(
                503, "model_unavailable", str(exc), headers={"Retry-After": "30"}
            ) from exc
        out["champion"] = {"name": champion.name, "version": champion.version}
        out["challenger"] = (
            None if challenger is None else {"name": challenger.name, "version": challenger.version}
        )
        return out

    def health(self) -> dict[str, Any]:
        try:
            champion, _ = self.router.models()
        except Exception as exc:
            return {"status": "degraded", "model_loaded": False, "reason": str(exc).splitlines()[0]}
        return {"status": "ok", "model_loaded": True, "model_version": champion.version}


def _parse_id(value: str, field: str) -> int:
    """A path id, or 422 naming the field."""
    try:
        parsed = int(value)
    except ValueError:
        parsed = -1
    if not 0 <= parsed <= MAX_ENTITY_ID:
        raise ApiError(422, f"invalid_{field}", f"{field} is an integer in [0, 2^63)",
                       [FieldProblem(field=field, problem="not an id")])  # fmt: skip
    return parsed


def _response(
    p: Prediction, *, stored: bool, explain: bool, unnamed: bool = False
) -> PredictionResponse:
    return PredictionResponse(
        transaction_id=None if unnamed else p.transaction_id,
        customer_id=p.customer_id,
        terminal_id=p.terminal_id,
        tx_datetime=p.tx_datetime,
        score=p.score,
        decision=p.decision,
        threshold=p.threshold,
        model_name=p.model_name,
        model_version=p.model_version,
        challenger_score=p.challenger_score,
        challenger_version=p.challenger_version,
        stored=stored,
        features=dict(p.features) if explain else None,
        scored_at=p.scored_at,
    )
