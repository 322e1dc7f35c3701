"""Shifts of the simulated world after a date, to prove the monitor catches them.

Each is a small transform of the simulator's output (transactions) or of a feature table,
deterministic for a seed, touching nothing before ``after``:

- ``amounts``: every amount multiplied by a factor (customers spend more: inflation, a
  currency change upstream). Inputs drift at once; labels do not change.
- ``compromise``: a new wave of compromised terminals (the handbook's scenario 2): a share
  of terminals is compromised at ``after`` and every transaction there in the next 28 days
  is a fraud. The terminal risk features move a week later (labels are known after the
  delay), the fraud rate at once.
- ``broken``: a feature source broken to a constant (an upstream join returning defaults).

A scenario is written ``KIND@YYYY-MM-DD[:PARAM]`` on the command line, e.g.
``amounts@2018-09-01:1.5``, ``compromise@2018-09-01:0.02``,
``broken@2018-09-01:CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    import pyarrow as pa

Kind = Literal["amounts", "compromise", "broken"]
KINDS: Final[tuple[Kind, ...]] = ("amounts", "compromise", "broken")
COMPROMISED_DAYS: Final = 28
"""How long a compromised terminal stays compromised (the handbook's scenario 2)."""
SCENARIO_COMPROMISED: Final = 2
"""TX_FRAUD_SCENARIO of the handbook's compromised-terminal frauds."""


@dataclass(frozen=True)
class Scenario:
    """One shift of the world from ``after`` on."""

    kind: Kind
    after: date
    param: str | None = None

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """``KIND@YYYY-MM-DD[:PARAM]``; a ValueError names what is wrong."""
        kind, _, rest = text.partition("@")
        if kind not in KINDS:
            raise ValueError(f"scenario {text!r}: kind must be one of {', '.join(KINDS)}")
        day, _, param = rest.partition(":")
        try:
            after = date.fromisoformat(day)
        except ValueError:
            raise ValueError(f"scenario {text!r}: expected a date YYYY-MM-DD after '@'") from None
        scenario = cls(kind, after, param or None)
        scenario.check()
        return scenario

    def check(self) -> None:
        if self.kind == "amounts" and not (self.param and float(self.param) > 0):
            raise ValueError("scenario amounts: PARAM is the factor, > 0 (amounts@DATE:1.5)")
        if self.kind == "compromise" and not (self.param and 0 < float(self.param) <= 1):
            raise ValueError("scenario compromise: PARAM is the share of terminals in (0, 1]")
        if self.kind == "broken" and not self.param:
            raise ValueError("scenario broken: PARAM is the feature's name")

    @property
    def on_transactions(self) -> bool:
        """Whether it changes the transactions (else the feature table)."""
        return self.kind in ("amounts", "compromise")

    def __str__(self) -> str:
        return f"{self.kind}@{self.after.isoformat()}" + (f":{self.param}" if self.param else "")


def _after_mask(table: pa.Table, after: date) -> object:
    import numpy as np

    times = table.column("TX_DATETIME").to_numpy()
    return times >= np.datetime64(datetime(after.year, after.month, after.day))


def apply_to_transactions(table: pa.Table, scenario: Scenario, seed: int = 0) -> pa.Table:
    """The transactions with the scenario applied (only ``amounts`` and ``compromise``)."""
    import numpy as np
    import pyarrow as pa

    after = np.asarray(_after_mask(table, scenario.after))
    if scenario.kind == "amounts":
        factor = float(scenario.param or 1)
        amounts = table.column("TX_AMOUNT").to_numpy().astype(np.float64)
        scaled = np.where(after, np.round(amounts * factor, 2), amounts)
        index = table.schema.get_field_index("TX_AMOUNT")
        return table.set_column(
            index, "TX_AMOUNT", pa.array(scaled, table.schema.field(index).type)
        )
    if scenario.kind == "compromise":
        share = float(scenario.param or 0)
        terminals = np.unique(table.column("TERMINAL_ID").to_numpy())
        rng = np.random.default_rng(seed)
        count = max(1, round(share * len(terminals)))
        chosen = rng.choice(terminals, size=count, replace=False)
        times = table.column("TX_DATETIME").to_numpy()
        start = np.datetime64(datetime(scenario.after.year, scenario.after.month,
                                       scenario.after.day))  # fmt: skip
        window = (times >= start) & (times < start + np.timedelta64(COMPROMISED_DAYS, "D"))
        hit = window & np.isin(table.column("TERMINAL_ID").to_numpy(), chosen)
        fraud = table.column("TX_FRAUD").to_numpy().copy()
        kind = table.column("TX_FRAUD_SCENARIO").to_numpy().copy()
        newly = hit & (fraud == 0)
        fraud[newly] = 1
        kind[newly] = SCENARIO_COMPROMISED
        for name, values in (("TX_FRAUD", fraud), ("TX_FRAUD_SCENARIO", kind)):
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, pa.array(values, table.schema.field(index).type))
        return table
    raise ValueError(f"scenario {scenario}: applies to the feature table, not transactions")


def apply_to_features(table: pa.Table, scenario: Scenario) -> pa.Table:
    """The feature table with a ``broken`` scenario applied: the feature constant (0)."""
    import numpy as np
    import pyarrow as pa

    if scenario.kind != "broken" or scenario.param is None:
        raise ValueError(f"scenario {scenario}: applies to transactions, not the feature table")
    if scenario.param not in table.column_names:
        raise ValueError(f"scenario {scenario}: no feature {scenario.param!r} in the table")
    after = np.asarray(_after_mask(table, scenario.after))
    index = table.schema.get_field_index(scenario.param)
    values = table.column(index).to_numpy().astype(np.float64)
    broken = np.where(after, 0.0, values)
    return table.set_column(index, scenario.param, pa.array(broken, table.schema.field(index).type))
