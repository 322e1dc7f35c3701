"""The benchmark suite's bookkeeping: targets decide the exit code, a partial run keeps the
other figures, the table holds every figure (the benchmarks themselves run in make bench)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import suite
from bench.suite import Figure


def _fake(figures: list[Figure]) -> Any:
    return lambda paths, small, tmp: figures


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    paths = suite.Paths(tmp_path, tmp_path / "s", tmp_path / "f", tmp_path / "a")
    monkeypatch.setattr(suite, "prepare", lambda data, small: paths)
    import infra.cost

    monkeypatch.setattr(infra.cost.Measured, "save", lambda self, path=None: None)
    return tmp_path / "results.json"


def _main(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["suite", *args])
    return suite.main()


def test_a_missed_target_fails_the_run_and_is_named(
    quiet: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fast = suite._ratio_figure("simulate", "w", value=1.0, reference="loop", reference_value=6.0,
                               unit="s", at_least=5)  # fmt: skip
    slow = suite._ratio_figure("features_offline", "w", value=1.0, reference="pandas",
                               reference_value=10.0, unit="s", at_least=30)  # fmt: skip
    monkeypatch.setattr(suite, "BENCHMARKS", {"simulate": _fake([fast]),
                                              "features_offline": _fake([slow])})  # fmt: skip
    assert (fast.met, fast.ratio, slow.met) == (True, 6.0, False)
    assert _main(monkeypatch, "--out", str(quiet)) == 1
    written = json.loads(quiet.read_text())
    assert written["missed"] == ["features_offline"]
    out = capsys.readouterr().out
    assert "simulate" in out and "NO" in out and "1 targets missed: features_offline" in out


def test_a_partial_run_replaces_its_figures_and_keeps_the_others(
    quiet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = [Figure("simulate", "w", 2.0, "s", met=True), Figure("score_batch", "w", 1.0, "x",
                                                                 met=False)]  # fmt: skip
    quiet.write_text(json.dumps({"small": False, "figures": [f.as_dict() for f in old]}))
    better = Figure("score_batch", "again", 2.0, "x", met=True)
    monkeypatch.setattr(suite, "BENCHMARKS", {"simulate": _fake([]),
                                              "score_batch": _fake([better])})  # fmt: skip
    assert _main(monkeypatch, "--only", "score_batch", "--out", str(quiet)) == 0
    names = [(f["name"], f["what"]) for f in json.loads(quiet.read_text())["figures"]]
    assert names == [("simulate", "w"), ("score_batch", "again")]
    # a small world's figures never join the book's table
    assert _main(monkeypatch, "--small", "--only", "score_batch", "--out", str(quiet)) == 0
    assert [f["name"] for f in json.loads(quiet.read_text())["figures"]] == ["score_batch"]


def test_an_unknown_benchmark_is_refused_by_name(
    quiet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit):
        _main(monkeypatch, "--only", "warp_drive", "--out", str(quiet))
