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
    """A window length, in seconds, with the name suffix the feature name carries.

    ``delay_seconds`` (None: the entity's) moves the window's end back, e.g. a customer's
    30-day mean amount as it was a week ago: a reference that a fraud under way (a
    compromised card spends for up to two weeks) has not yet pulled up.
    """

    seconds: int
    suffix: str
    delay_seconds: int | None = None

    @classmethod
    def days(cls, n: int) -> Window:
        """An n-day window, named like the book's (``7DAY_WINDOW``)."""
        return cls(n * SECONDS_PER_DAY, f"{n}DAY_WINDOW")

    @classmethod
    def hours(cls, n: int) -> Window:
        """An n-hour window (``1HOUR_WINDOW``)."""
        return cls(n * 3600, f"{n}HOUR_WINDOW")

    def delayed(self, days: int) -> Window:
        """This window ending ``days`` before the transaction (``30DAY_WINDOW_7DAY_DELAY``)."""
        return Window(self.seconds, f"{self.suffix}_{days}DAY_DELAY", days * SECONDS_PER_DAY)


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

    def delay_of(self, window: Window) -> int:
        """Where a window ends, back from the transaction: its own delay, else the entity's."""
        return self.delay_seconds if window.delay_seconds is None else window.delay_seconds

    @property
    def horizon_seconds(self) -> int:
        """How far back an entity's state must reach: the furthest window's delay + length."""
        return max(self.delay_of(w) + w.seconds for w in self.windows)

    def feature_names(self) -> list[str]:
        """Feature names, window-major: for each window, each aggregation."""
        return [f"{self.key}_{a.name}_{w.suffix}" for w in self.windows for a in self.aggregations]


@dataclass(frozen=True)
class Ratio:
    """A feature divided by another, per transaction (0 where the divisor is 0).

    E.g. the amount over the card's mean amount: a tree needs many splits to learn a
    ratio from its two inputs, and the simulated compromised cards spend five times their
    usual amount. Both engines compute it from features they already computed, so it costs
    no state.
    """

    name: str
    numerator: str
    denominator: str


@dataclass(frozen=True)
class FeatureSpec:
    """The whole feature set: passthrough inputs, calendar flags, entity windows, ratios.

    ``extends``: the spec this one adds features to without changing any of its features
    (same names, same values); a model trained on that spec is served by this one.
    """

    name: str
    passthrough: tuple[str, ...]
    calendar: tuple[Literal["TX_DURING_WEEKEND", "TX_DURING_NIGHT"], ...]
    entities: tuple[EntitySpec, ...]
    night_last_hour: int = 6
    version: int = 1
    notes: str = field(default="", compare=False)
    ratios: tuple[Ratio, ...] = ()
    extends: FeatureSpec | None = None

    def __post_init__(self) -> None:
        names = self.feature_names()
        if len(set(names)) != len(names):
            raise ValueError(f"feature spec {self.name}: a feature name repeats")
        for r in self.ratios:
            missing = {r.numerator, r.denominator} - set(names)
            if missing:
                raise ValueError(f"ratio {r.name}: no feature {sorted(missing)} in the spec")
        if self.extends is not None:
            lost = sorted(set(self.extends.feature_names()) - set(names))
            if lost:
                raise ValueError(f"feature spec {self.name} drops {lost} of {self.extends.name}")

    def feature_names(self) -> list[str]:
        """Model inputs in their fixed, recorded order."""
        names = [*self.passthrough, *self.calendar]
        for entity in self.entities:
            names += entity.feature_names()
        return names + [r.name for r in self.ratios]

    def lineage(self) -> list[FeatureSpec]:
        """This spec, then the spec it extends, and so on."""
        return [self] + ([] if self.extends is None else self.extends.lineage())

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
        """SHA-256 of the spec's semantics: an artifact refuses code with another hash.

        Fields added since the baseline was hashed (window delays, ratios, ``extends``)
        enter the payload only when set, so the baseline's recorded hash stays valid.
        """
        payload = asdict(self)
        for key in ("notes", "extends"):
            payload.pop(key)
        if not payload["ratios"]:
            payload.pop("ratios")
        for entity in payload["entities"]:
            for window in entity["windows"]:
                if window["delay_seconds"] is None:
                    window.pop("delay_seconds")
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

CUSTOMER_REFERENCE: Final = Window.days(30).delayed(LABEL_DELAY_DAYS)
"""The card's month as it was a week ago: its usual spending, before a fraud under way."""

AMOUNT_RATIO_WINDOWS: Final = (*BOOK_WINDOWS, CUSTOMER_REFERENCE)

IMPROVED: Final = FeatureSpec(
    name="rtml_amount_ratios",
    passthrough=BASELINE.passthrough,
    calendar=BASELINE.calendar,
    entities=(
        EntitySpec(
            key="CUSTOMER_ID",
            windows=AMOUNT_RATIO_WINDOWS,
            aggregations=BASELINE.entity("CUSTOMER_ID").aggregations,
        ),
        BASELINE.entity("TERMINAL_ID"),
    ),
    ratios=tuple(
        Ratio(
            f"CUSTOMER_ID_AMOUNT_RATIO_{w.suffix}",
            "TX_AMOUNT",
            f"CUSTOMER_ID_AVG_AMOUNT_{w.suffix}",
        )
        for w in AMOUNT_RATIO_WINDOWS
    ),
    extends=BASELINE,
    notes=(
        "The baseline, plus the card's 30-day count and mean amount as of a week ago, and "
        "the amount over the card's mean amount in each window: 21 model inputs."
    ),
)
"""The baseline plus what the card's own spending says (rtml select, docs/selection)."""

SERVED: Final = IMPROVED
"""The spec the serving paths compute (stream, API, batch): models trained on it or on a
spec it extends (the baseline) are served."""

FEATURE_SETS: Final[dict[str, FeatureSpec]] = {"baseline": BASELINE, "improved": IMPROVED}
"""The feature sets ``rtml features --spec`` and ``rtml train --features`` know."""


def spec_by_hash(spec_hash: str) -> FeatureSpec | None:
    """The known spec with this hash (a feature table's or an artifact's record), if any."""
    return next((s for s in FEATURE_SETS.values() if s.spec_hash() == spec_hash), None)
