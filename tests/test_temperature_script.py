"""benchmarks/temperature.py: its settings parse or fail naming the culprit, and its table reads the rows."""

from __future__ import annotations

import pytest

from tests.benchmark_scripts import load_benchmark


def script():
    load_benchmark("block_grid"), load_benchmark("demo_recipes")  # imported by name from the script
    return load_benchmark("temperature")


def test_settings_parse_and_bad_ones_name_the_text() -> None:
    temperature = script()
    assert temperature.parse_setting("ode:0:1") == {"sampler": "ode", "temperature": 0.0, "samples": 1}
    assert temperature.parse_setting("posterior:0.25:4")["samples"] == 4
    for bad in ("ode:0", "ode:cold:1", "ode:0:1.5"):
        with pytest.raises(SystemExit, match=bad):
            temperature.parse_setting(bad)


def test_table_line_reports_means_gain_worst_mild_change_and_grid() -> None:
    rows = [{"input": 10.0, "restored": 14.0, "grid": 1.2, "target_grid": 1.1}]
    mild = [
        {"input": 40.0, "restored": 39.0, "grid": 1.0, "target_grid": 1.0},
        {"input": 30.0, "restored": 25.0, "grid": 1.0, "target_grid": 1.0},
    ]
    row = {
        "run": "/x/shadow-latent-x0",
        "task": "shadow",
        "setting": "ode:0:1",
        "held_out": rows,
        "mild": mild,
    }
    line = script().table_line(row)
    assert (
        line
        == "| x/shadow-latent-x0 | shadow | ode:0:1 | 10.00 | 14.00 | +4.00 | 35.00 | 32.00 | -5.00 | 1.20 (1.10) |"
    )
