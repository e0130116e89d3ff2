"""`policyagg bench convert` (issue 15, item 5): rows for small environments, and the CLI wiring."""

from __future__ import annotations

import math

import pytest

from policyagg.experiments.cli import main


def test_bench_convert_rows_for_small_environments():
    from policyagg.experiments.bench_convert import COLUMNS, bench_convert

    report = bench_convert(cases=[("FrozenLake-v1", "auto"), ("CliffWalking-v1", "enumerate")])
    lake, cliff = report["rows"]
    assert set(COLUMNS) <= set(lake) and set(COLUMNS) <= set(cliff)
    # FrozenLake's table: 16 cells and the absorbing state; CliffWalking stepped: 37 cells reached and the absorbing state
    assert (lake["route"], lake["states"], lake["actions"], lake["exact"]) == ("model", 17, 4, True)
    assert (cliff["route"], cliff["states"], cliff["actions"], cliff["exact"]) == ("enumerate", 38, 4, True)
    for row in (lake, cliff):
        assert row["status"] == "ok"
        assert row["seconds"] > 0 and row["floor_seconds"] > 0
        assert math.isclose(row["ratio"], row["seconds"] / row["floor_seconds"])
        assert row["peak_rss_mb"] >= row["own_rss_mb"] >= 0
    assert report["markdown"].count("\n") == 3  # header, rule, two rows


def test_bench_convert_reports_a_failed_case_in_its_row():
    from policyagg.experiments.bench_convert import bench_convert

    (row,) = bench_convert(cases=[("no-such-env-v0", "auto")])["rows"]
    assert row["env"] == "no-such-env-v0" and row["status"].startswith("error")


def test_cli_bench_convert_full_adds_four_room(monkeypatch, capsys):
    from policyagg.experiments import bench_convert

    seen = {}

    def record(**kwargs):
        seen.update(kwargs)
        return {"rows": [], "markdown": ""}

    monkeypatch.setattr(bench_convert, "bench_convert", record)
    assert main(["bench", "convert"]) == 0
    assert seen["full"] is False
    assert main(["bench", "convert", "--full"]) == 0
    assert seen["full"] is True
    assert "| env | route | states |" in capsys.readouterr().out
    assert ("four-room-v0", "auto") in bench_convert.FULL_CASES
    assert all(env != "four-room-v0" for env, _ in bench_convert.CASES)


@pytest.mark.parametrize("steps", [1, 50])
def test_floor_takes_the_steps_it_is_given(steps):
    from policyagg.experiments.bench_convert import floor_seconds

    assert floor_seconds("FrozenLake-v1", steps) > 0


def test_bench_convert_case_with_make_keywords():
    from policyagg.experiments.bench_convert import FULL_CASES, bench_convert

    (row,) = bench_convert(cases=[("FrozenLake-v1", "enumerate", {"is_slippery": False})])["rows"]
    assert row["env"] == "FrozenLake-v1 is_slippery=False" and row["status"] == "ok"
    # deterministic moves: the 12 cells reachable before a hole or the goal, plus the absorbing state
    assert row["route"] == "enumerate" and row["states"] == 12 and row["exact"] is True
    assert ("Taxi-v4", "auto", {"fickle_passenger": True}) in FULL_CASES


def test_cli_bench_convert_out_writes_the_table_and_rows(monkeypatch, tmp_path):
    import json

    from policyagg.experiments import bench_convert

    rows = [{"env": "FrozenLake-v1", "route": "model", "states": 17}]
    monkeypatch.setattr(bench_convert, "bench_convert", lambda **kwargs: {"rows": rows, "markdown": "| table |"})
    assert main(["bench", "convert", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "bench-convert.md").read_text() == "| table |\n"
    assert json.loads((tmp_path / "b" / "bench-convert.json").read_text()) == rows
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bench-convert.json", "bench-convert.md"]
