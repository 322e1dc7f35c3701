"""The command-line front door: help everywhere, one-line errors, parseable stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rtml import cli


def _commands() -> list[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", [[], *[[c] for c in _commands()]])
def test_cli_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: rtml" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "--out", "x", "--days", "0"], "--days: must be >= 1"),
        (["simulate", "--out", "x", "--start-date", "April"], "not a date"),
        (["simulate", "--out", "x", "--radius", "-1"], "must be > 0"),
        (["simulate"], "required: --out"),
        (["nope"], "invalid choice"),
    ],
)
def test_cli_bad_arguments_give_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rtml: error:") and message in err


def test_cli_simulate_json_on_stdout_logs_on_stderr(tmp_path: Path) -> None:
    # given a fresh process, as a user runs it
    out = tmp_path / "sim"
    argv = ["simulate", "--customers", "30", "--terminals", "60", "--days", "5"]
    argv += ["--out", str(out), "--json"]
    # when
    proc = subprocess.run(
        [sys.executable, "-m", "rtml.cli", *argv], capture_output=True, text=True, check=True
    )
    # then stdout is exactly one JSON document and the data set is on disk
    result = json.loads(proc.stdout)
    assert result["n_transactions"] > 0 and result["files"] == 5
    assert "wrote 5 day partitions" in proc.stderr
    assert (out / "_rtml_dataset.json").exists()


def test_cli_domain_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # given an output path that is a file, not a directory
    target = tmp_path / "file"
    target.write_text("x")
    # when
    code = cli.main(["simulate", "--customers", "3", "--days", "1", "--out", str(target)])
    # then
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rtml: error:")
