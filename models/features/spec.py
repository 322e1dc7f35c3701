"""The feature spec: one declaration that drives both feature implementations.

Windowed features are per entity (card, terminal): an aggregation of a transaction field
over the entity's events in a time window that ends ``delay`` before the transaction.
The offline (vectorized) and online (incremental) implementations both read this spec,
so adding a window or an aggregation is one line here, e.g. a one-hour customer window::

    EntitySpec(key="CUSTOMER_ID", windows=(Window.hours(1), Window.days(1), ...), ...)

or the maximum amount over the customer's windows::

    aggregations=(Aggregation("NB_TX", "count"), Aggregation("AVG_AMOUNT", "mean", "TX_AMOUNT"),
                  Aggregation("MAX_AMOUNT", "max", "TX_AMOUNT"))

Semantics (the handbook's, so results compare with its tables), for a transaction at t:
with ``delay == 0`` the window is (t - w, t], the transaction itself included, and a
same-second event counts only if its TRANSACTION_ID is not larger; with ``delay = d > 0``
the window is (t - d - w, t - d], which only holds strictly earlier events.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Final, Literal

AggregationKind = Literal["count", "sum", "mean", "max", "min", "ratio"]
"""count: events; sum/mean/max/min: of a field; ratio: sum of a 0/1 field / count, 0 if none."""

SECONDS_PER_DAY: Final = 86_400
EPOCH_WEEKDAY: Final = 3
"""Weekday of 1970-01-01 (a Thursday; Monday = 0): both engines derive weekdays from it."""


@dataclass(frozen=True)
class Window:
    """A window length, in seconds, with the name suffix the feature name carries."""

    seconds: int
    suffix: str

    @classmethod
    def days(cls, n: int) -> Window:
        """An n-day window, named like the book's (``7DAY_WINDOW``)."""
        return cls(n * SECONDS_PER_DAY, f"{n}DAY_WINDOW")

    @classmethod
    def hours(cls, n: int) -> Window:
        """An n-hour window (``1HOUR_WINDOW``)."""
        return cls(n * 3600, f"{n}HOUR_WINDOW")


@dataclass(frozen=True)
class Aggregation:
    """One aggregation over a window's events; ``name`` is the feature name's middle part."""

    name: str
    kind: AggregationKind
    field: str | None = None

    def __post_init__(self) -> None:
        if (self.kind == "count") != (self.field is None):
            raise ValueError(f"aggregation {self.name}: 'count' takes no field, others need one")


@dataclass(frozen=True)
class EntitySpec:
    """Windowed aggregations of one entity (a key column of the transactions)."""

    key: str
    windows: tuple[Window, ...]
    aggregations: tuple[Aggregation, ...]
    delay_seconds: int = 0
    label_fields: tuple[str, ...] = ()
    """Fields that arrive later, as label events, rather than with the transaction."""

    @property
    def value_fields(self) -> tuple[str, ...]:
        """The transaction fields this entity's state must keep, in a fixed order."""
        fields = [a.field for a in self.aggregations if a.field is not None]
        return tuple(dict.fromkeys(fields))

    @property
    def horizon_seconds(self) -> int:
        """How far back an entity's state must reach: delay + the longest window."""
        return self.delay_seconds + max(w.seconds for w in self.windows)

    def feature_names(self) -> list[str]:
        """Feature names, window-major: for each window, each aggregation."""
        return [f"{self.key}_{a.name}_{w.suffix}" for w in self.windows for a in self.aggregations]


@dataclass(frozen=True)
class FeatureSpec:
    """The whole feature set: passthrough inputs, calendar flags, entity windows."""

    name: str
    passthrough: tuple[str, ...]
    calendar: tuple[Literal["TX_DURING_WEEKEND", "TX_DURING_NIGHT"], ...]
    entities: tuple[EntitySpec, ...]
    night_last_hour: int = 6
    version: int = 1
    notes: str = field(default="", compare=False)

    def feature_names(self) -> list[str]:
        """Model inputs in their fixed, recorded order."""
        names = [*self.passthrough, *self.calendar]
        for entity in self.entities:
            names += entity.feature_names()
        return names

    def count_features(self) -> set[str]:
        """Features that are integer counts (stored as int64); the rest are float64."""
        return {
            f"{e.key}_{a.name}_{w.suffix}"
            for e in self.entities
            for w in e.windows
            for a in e.aggregations
            if a.kind == "count"
        }

    def entity(self, key: str) -> EntitySpec:
        """The entity spec of a key column."""
        for entity in self.entities:
            if entity.key == key:
                return entity
        raise KeyError(f"feature spec {self.name} has no entity {key}")

    def spec_hash(self) -> str:
        """SHA-256 of the spec's semantics: an artifact refuses code with another hash."""
        payload = asdict(self)
        payload.pop("notes")
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


LABEL_DELAY_DAYS: Final = 7
BOOK_WINDOWS: Final = (Window.days(1), Window.days(7), Window.days(30))

BASELINE: Final = FeatureSpec(
    name="handbook_baseline",
    passthrough=("TX_AMOUNT",),
    calendar=("TX_DURING_WEEKEND", "TX_DURING_NIGHT"),
    entities=(
        EntitySpec(
            key="CUSTOMER_ID",
            windows=BOOK_WINDOWS,
            aggregations=(
                Aggregation("NB_TX", "count"),
                Aggregation("AVG_AMOUNT", "mean", "TX_AMOUNT"),
            ),
        ),
        EntitySpec(
            key="TERMINAL_ID",
            windows=BOOK_WINDOWS,
            aggregations=(Aggregation("NB_TX", "count"), Aggregation("RISK", "ratio", "TX_FRAUD")),
            delay_seconds=LABEL_DELAY_DAYS * SECONDS_PER_DAY,
            label_fields=("TX_FRAUD",),
        ),
    ),
    notes="The handbook's baseline features (chapter 3.4): 15 model inputs.",
)
"""The handbook's baseline: TX_AMOUNT, 2 calendar flags, 6 card and 6 terminal features."""
