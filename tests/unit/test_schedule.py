"""Which day a scheduled run works on: a day of the data's time zone, complete when it runs."""

from __future__ import annotations

from datetime import date

import pytest

from batch.schedule import ScheduledSettings, run_day

EVENING_UTC = {"scheduled_time": "2018-05-16T17:30:00Z"}  # 02:30 on the 17th in Tokyo


def test_a_day_is_complete_in_the_datas_time_zone() -> None:
    # Tokyo's 16th ended at 15:00 UTC; UTC's 16th has not ended
    assert run_day(EVENING_UTC, zone="Asia/Tokyo") == date(2018, 5, 16)
    assert run_day(EVENING_UTC) == date(2018, 5, 15)
    # 02:30 UTC on the 17th is 22:30 on the 16th in New York: its 15th is the last complete
    early = {"scheduled_time": "2018-05-17T02:30:00+00:00"}
    assert run_day(early, zone="America/New_York") == date(2018, 5, 15)
    assert run_day(early, zone="America/New_York", under_way=True) == date(2018, 5, 16)


def test_an_explicit_date_wins_and_bad_input_names_its_field() -> None:
    assert run_day({"date": "2018-05-01", **EVENING_UTC}, zone="Asia/Tokyo") == date(2018, 5, 1)
    with pytest.raises(ValueError, match="scheduled_time"):
        run_day({"scheduled_time": "yesterday"})
    with pytest.raises(ValueError, match="data_time_zone"):
        run_day(EVENING_UTC, zone="Mars/Olympus")
    with pytest.raises(ValueError, match="data_time_zone"):
        ScheduledSettings.from_env({"RTML_DATA_TIME_ZONE": "Mars/Olympus"})
    assert ScheduledSettings.from_env({}).data_time_zone == "UTC"
