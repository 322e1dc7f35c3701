"""The cost model: prices times the measured work, for the settings that are deployed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Template

from infra.cost import SECONDS_PER_MONTH, Measured, Prices, estimate
from infra.settings import EnvSettings

MEASURED = Measured(
    stream_wall_ms_per_batch=150.0, stream_batch=100, stream_cpu_us_per_record=200.0,
    stream_write_units=3.0, stream_read_units=2.0, api_in_process_ms=0.2,
    batch_seconds_per_row=1e-4, prediction_item_bytes=360,
)  # fmt: skip


def _line(report: Any, path: str, starts: str) -> Any:
    (found,) = [ln for p in report.paths if p.path == path for ln in p.lines
                if ln.item.startswith(starts)]  # fmt: skip
    return found


def test_the_stream_lines_are_the_measured_work_times_the_published_price(
    settings: dict[str, EnvSettings],
) -> None:
    prices = Prices()
    report = estimate(settings["prod"], tps=1000, measured=MEASURED, prices=prices)
    records = 1000 * SECONDS_PER_MONTH
    writes = _line(report, "stream", "DynamoDB write units")
    assert writes.quantity == pytest.approx(records * 3.0)
    assert writes.usd == pytest.approx(records * 3.0 * 0.625e-6)
    stream = next(p for p in report.paths if p.path == "stream")
    assert stream.resources["records per invocation"] == 100
    assert stream.usd == pytest.approx(sum(ln.usd for ln in stream.lines))
    assert stream.usd_per_million == pytest.approx(stream.usd / records * 1e6)


def test_small_batches_at_a_low_rate_cost_more_a_record(settings: dict[str, EnvSettings]) -> None:
    low = estimate(settings["prod"], tps=10, measured=MEASURED).paths[0]
    high = estimate(settings["prod"], tps=1000, measured=MEASURED).paths[0]
    # prod: 4 shards, 2 batches at once a shard: at 10 tps a batch holds 1.25 records
    assert low.resources["records per invocation"] == pytest.approx(1.2)
    assert high.resources["records per invocation"] == 100
    assert low.usd_per_million > high.usd_per_million  # type: ignore[operator]


def test_the_committed_measurements_load_and_name_their_sources() -> None:
    measured = Measured.load()
    assert measured.stream_write_units > 0 and measured.sources
    assert all(source.startswith("bench/") for source in measured.sources)


def test_the_measured_stream_path_is_within_the_target_per_million(
    settings: dict[str, EnvSettings],
) -> None:
    # the target of the brief: <= $3 per million scored transactions, at a busy steady rate
    report = estimate(settings["prod"], tps=1000)
    stream = next(p for p in report.paths if p.path == "stream")
    assert stream.usd_per_million is not None and stream.usd_per_million <= 3.0


def test_provisioned_streams_price_their_shards(settings: dict[str, EnvSettings]) -> None:
    prod = settings["prod"]
    provisioned = prod.model_copy(update={"stream": prod.stream.model_copy(
        update={"stream_mode": "provisioned", "shards": 2})})  # fmt: skip
    report = estimate(provisioned, tps=5000, measured=MEASURED)
    hours = _line(report, "stream", "Kinesis shard-hours")
    assert hours.quantity == 3 * 730  # 2 + the labels stream's
    assert "5000" in str(report.paths[0].resources["warning"])


def test_the_fixed_costs_count_the_alarms_the_template_deploys(
    templates: dict[str, Template], settings: dict[str, EnvSettings]
) -> None:
    for name, template in templates.items():
        alarms = len(template.find_resources("AWS::CloudWatch::Alarm"))
        report = estimate(settings[name], tps=0, measured=MEASURED)
        assert _line(report, "fixed", "CloudWatch alarms").quantity == alarms


def test_bad_loads_are_refused_naming_them(settings: dict[str, EnvSettings]) -> None:
    with pytest.raises(ValueError, match="tps"):
        estimate(settings["prod"], tps=-1, measured=MEASURED)


def test_the_cli_prints_json_with_every_path(capsys: pytest.CaptureFixture[str]) -> None:
    from rtml import cli

    assert cli.main(["cost", "--tps", "100", "--api-rps", "5", "--batch-rows", "9500",
                     "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert [p["path"] for p in out["paths"]] == ["stream", "api", "batch", "fixed"]
    assert out["prices_as_of"] and out["measured"]
    with pytest.raises(SystemExit, match="2"):
        cli.main(["cost", "--tps", "-3"])
    assert "--tps: must be a finite number >= 0" in capsys.readouterr().err


def test_a_batching_window_fills_batches_at_a_low_rate(settings: dict[str, EnvSettings]) -> None:
    prod = settings["prod"]
    waiting = prod.model_copy(update={"stream": prod.stream.model_copy(
        update={"batching_window_seconds": 20})})  # fmt: skip
    quick = estimate(prod, tps=10, measured=MEASURED).paths[0]
    patient = estimate(waiting, tps=10, measured=MEASURED).paths[0]
    assert patient.resources["records per invocation"] == 25.0  # 10 tps x 20 s / 4 shards / 2
    assert patient.usd_per_million < quick.usd_per_million  # type: ignore[operator]
