"""The monitor end to end on a simulated world: the untouched period raises no alarm, and each
shift of the world after a date (amounts scaled, a broken feature source, a compromised
terminal wave) is caught, never before it happens, within its expected delay."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from rtml import cli

pytestmark = pytest.mark.functional

START, END, SHIFT = "2018-08-06", "2018-09-07", "2018-08-20"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fifth of the book's customers and terminals over 160 days, and a model on it."""
    root: Path = tmp_path_factory.mktemp("world")
    steps = [
        ["simulate", "--customers", "1000", "--terminals", "2000", "--days", "160",
         "--out", str(root / "sim")],
        ["features", "--in", str(root / "sim"), "--out", str(root / "features")],
        ["train", "--data", str(root / "features"), "--model", "logistic_regression",
         "--out", str(root / "model")],
    ]  # fmt: skip
    for step in steps:
        assert cli.main(step) == 0, step
    return root


def _report(world: Path, name: str, scenario: str | None) -> dict[str, Any]:
    out = world / name
    replay = ["monitor", "replay", "--in", str(world / "sim"), "--model", str(world / "model"),
              "--from", START, "--to", END, "--out", str(out)]  # fmt: skip
    if scenario:
        replay += ["--scenario", scenario]
    assert cli.main(replay) == 0
    report = ["monitor", "report", "--archive", str(out / "predictions"),
              "--transactions", str(out / "transactions"), "--model", str(world / "model"),
              "--from", START, "--to", END, "--out", str(out / "report.html")]  # fmt: skip
    assert cli.main(report) == 0
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 4
    loaded: dict[str, Any] = json.loads((out / "report.json").read_text())
    return loaded


def test_the_untouched_period_raises_no_alarm(world: Path) -> None:
    report = _report(world, "clean", None)
    assert report["first_alarm"] == {}
    assert all(d["rows"] == d["transactions_in"] > 200 for d in report["days"])
    assert report["performance"]  # labels known: every day has its AUC/AP/CP@100


@pytest.mark.parametrize(
    ("scenario", "expected", "within_days"),
    [
        ("amounts@2018-08-20:1.6", "drift:TX_AMOUNT", 0),
        ("broken@2018-08-20:CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
         "constant:CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW", 0),
        # terminal risk features see the wave after the week of label delay
        ("compromise@2018-08-20:0.05", None, 14),
    ],
)  # fmt: skip
def test_each_shift_is_caught_after_it_happens_and_not_before(
    world: Path, scenario: str, expected: str | None, within_days: int
) -> None:
    report = _report(world, scenario.split("@", maxsplit=1)[0], scenario)
    first = report["first_alarm"]
    assert first, f"{scenario}: no alarm at all"
    assert min(first.values()) >= SHIFT, f"{scenario}: alarmed before the shift: {first}"
    earliest = date.fromisoformat(min(first.values()))
    assert (earliest - date.fromisoformat(SHIFT)).days <= within_days, first
    if expected is not None:
        assert first[expected] == SHIFT
