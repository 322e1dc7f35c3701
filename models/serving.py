"""Which model decides a transaction, and the prediction every serving path writes.

The champion decides. A challenger, when its alias exists, is scored in shadow: its score
and version go on the prediction, it never decides. With an A/B share, the challenger
decides for that share of customers instead, chosen by a stable hash of the customer id
(``hashlib``, never the per-process salted ``hash()``), so a customer sees one model for
as long as the share stays. Pure logic over loaded models: the loaders do the I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.artifact import LoadedModel
from models.contracts import Prediction, ServingPath
from models.registry import AliasNotFoundError, ModelLoader


def ab_bucket(customer_id: int, salt: str = "rtml-ab") -> float:
    """A stable number in [0, 1) per customer: the same on every host and every run."""
    digest = hashlib.blake2b(f"{salt}:{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class ModelRouter:
    """The champion, an optional challenger, and the A/B share the challenger decides."""

    champion: ModelLoader
    challenger: ModelLoader | None = None
    ab_share: float = 0.0
    """Share of customers (by :func:`ab_bucket`) the challenger decides; 0: shadow only."""
    segment: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.ab_share <= 1.0:
            raise ValueError(f"ab_share must be within [0, 1], not {self.ab_share}")

    @classmethod
    def from_registry(
        cls, registry: Any, name: str, *, recheck_seconds: float, ab_share: float = 0.0
    ) -> ModelRouter:
        """The serving functions' router: the champion and challenger aliases of ``name``."""
        return cls(
            champion=ModelLoader(registry, name, "champion", recheck_seconds=recheck_seconds),
            challenger=ModelLoader(registry, name, "challenger", recheck_seconds=recheck_seconds),
            ab_share=ab_share,
        )

    def models(self) -> tuple[LoadedModel, LoadedModel | None]:
        """(champion, challenger or None); no champion raises: never a default score."""
        champion = self.champion.get(self.segment)
        if self.challenger is None:
            return champion, None
        try:
            challenger = self.challenger.get(self.segment)
        except AliasNotFoundError:
            return champion, None  # no challenger alias: no shadow
        return champion, challenger

    def choose(
        self, customer_id: int, champion: LoadedModel, challenger: LoadedModel | None
    ) -> tuple[LoadedModel, LoadedModel | None]:
        """(the model that decides, the one scored in shadow) for one customer."""
        if challenger is None or challenger.version == champion.version:
            return champion, None
        if self.ab_share and ab_bucket(customer_id) < self.ab_share:
            return challenger, champion
        return champion, challenger


def predict(
    transactions: Sequence[tuple[int, int, int, datetime, dict[str, float | int]]],
    router: ModelRouter,
    *,
    threshold: float,
    path: ServingPath,
    scored_at: datetime,
) -> list[Prediction]:
    """Score (transaction id, customer, terminal, time, features) rows into predictions.

    Models are resolved once for the whole batch (a promote mid-batch cannot mix
    versions); rows are scored in one call per model.
    """
    champion, challenger = router.models()
    chosen = [router.choose(customer, champion, challenger) for _, customer, *_ in transactions]
    scores: dict[tuple[int, str], float] = {}
    for model in {m.version: m for pair in chosen for m in pair if m is not None}.values():
        rows = [
            (i, model.vector(t[4]))
            for i, (t, pair) in enumerate(zip(transactions, chosen, strict=True))
            if model.version in {m.version for m in pair if m is not None}
        ]
        for (i, _), score in zip(rows, model.score_batch([r for _, r in rows]), strict=True):
            scores[(i, model.version)] = score
    out = []
    for i, ((tx_id, customer, terminal, at, features), (decider, shadow)) in enumerate(
        zip(transactions, chosen, strict=True)
    ):
        score = scores[(i, decider.version)]
        out.append(
            Prediction(
                transaction_id=tx_id,
                customer_id=customer,
                terminal_id=terminal,
                tx_datetime=at,
                score=score,
                decision="high_risk" if score >= threshold else "low_risk",
                threshold=threshold,
                model_name=decider.name,
                model_version=decider.version,
                challenger_score=None if shadow is None else scores[(i, shadow.version)],
                challenger_version=None if shadow is None else shadow.version,
                features={k: float(v) for k, v in features.items()},
                scored_at=scored_at,
                path=path,
            )
        )
    return out
