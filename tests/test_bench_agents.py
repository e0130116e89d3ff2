"""`policyagg bench agents`: the rows it reports, failures reported not raised, memory per process."""

import csv
import os
import time
from functools import partial

import numpy as np
import pytest

from policyagg.errors import InfeasibleError, SolverTimeLimitError
from policyagg.experiments.bench import peak_rss_mb
from policyagg.experiments.bench_agents import (
    agents_problem,
    agents_samples,
    bench_agents,
    in_fresh_process,
    rule_names,
    time_rule,
)
from policyagg.experiments.cli import main
from policyagg.experiments.compare import attention_problem
from policyagg.solvers import registered_rule


@pytest.fixture(scope="module")
def five():
    problem = agents_problem(5, seed=0)
    return problem, agents_samples(problem, 100, seed=0, workers=1)


@pytest.mark.slow  # a smoke benchmark (about 10 s)
def test_bench_agents_runs_small_and_writes_both_tables(tmp_path, capsys):
    argv = ["bench", "agents", "--agents", "5,10", "--samples", "200", "--rules", "utilitarian,egalitarian"]
    assert main([*argv, "--out", str(tmp_path), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "| agents | rule | status |" in out
    rows = list(csv.DictReader((tmp_path / "bench-agents.csv").open()))
    assert [(r["agents"], r["rule"]) for r in rows] == [
        ("5", "utilitarian"),
        ("5", "egalitarian"),
        ("10", "utilitarian"),
        ("10", "egalitarian"),
    ]
    assert {r["status"] for r in rows} == {"optimal"}
    assert all(float(r["seconds"]) > 0 and float(r["peak_rss_mb"]) > 0 for r in rows)
    assert [float(r["vs_utilitarian"]) for r in rows if r["rule"] == "utilitarian"] == [1.0, 1.0]
    assert (tmp_path / "bench-agents.md").read_text().count("| optimal |") == 4


def test_the_problem_is_experiment_b_with_n_agents(five):
    problem, samples = five
    reference = attention_problem("b", n_agents=5, seed=0)
    np.testing.assert_array_equal(problem.rewards, reference.rewards)
    assert (problem.mdp.P != reference.mdp.P).nnz == 0
    assert samples.values.shape == (100, 5)


def test_utilitarian_is_run_first_and_unknown_rules_are_named():
    assert rule_names(["egalitarian"]) == ("utilitarian", "egalitarian")
    assert rule_names(["pvc", "utilitarian", "pvc"]) == ("utilitarian", "pvc")
    with pytest.raises(Exception, match="'nope' is not a registered rule; choose among"):
        rule_names(["nope"])


def _infeasible(call):
    raise InfeasibleError("no policy meets the floors")


def _stopped_on_time(call):
    raise SolverTimeLimitError("stopped on time", solution=None)


def test_a_rule_that_raises_is_reported_and_the_benchmark_goes_on():
    with registered_rule("boom", _infeasible), registered_rule("late", _stopped_on_time):
        report = bench_agents(agent_counts=(5,), rules=["boom", "late", "egalitarian"], n_samples=100, workers=1)
    status = {row["rule"]: row["status"] for row in report["rows"]}
    assert status == {
        "utilitarian": "optimal",
        "boom": "error: InfeasibleError",
        "late": "time-limit",
        "egalitarian": "optimal",
    }
    boom_row = next(row for row in report["rows"] if row["rule"] == "boom")
    assert "no policy meets the floors" in boom_row["error"]


def test_time_rule_reports_status_and_solves(five):
    problem, samples = five
    row = time_rule("egalitarian", problem, samples, time_limit=60)
    assert row["status"] == "optimal" and row["solves"] >= 1 and row["seconds"] > 0 and not row["killed"]


def _sleep() -> dict:
    time.sleep(30)
    return {}


def _crash() -> dict:
    os._exit(3)


def test_a_process_past_its_time_is_killed_and_a_crash_is_reported():
    start = time.perf_counter()
    row = in_fresh_process(_sleep, kill_after_seconds=0.5)
    assert row["status"] == "time-limit" and row["killed"] and time.perf_counter() - start < 10
    row = in_fresh_process(_crash, kill_after_seconds=30)
    assert row["status"] == "error: crashed" and "exit code 3" in row["error"]


def _allocate(megabytes: int) -> dict:
    start = peak_rss_mb()
    block = np.ones(megabytes * 2**20 // 8)
    return {"peak_rss_mb": peak_rss_mb(), "start_rss_mb": start, "sum": float(block[:10].sum())}


def test_each_process_reports_its_own_peak_memory():
    big = in_fresh_process(partial(_allocate, 200), kill_after_seconds=60)
    small = in_fresh_process(partial(_allocate, 1), kill_after_seconds=60)
    assert big["peak_rss_mb"] - big["start_rss_mb"] >= 190
    assert small["peak_rss_mb"] < big["peak_rss_mb"] - 150  # the big one's memory did not carry over


def _address_space_mb() -> float:
    with open("/proc/self/status") as handle:
        status = dict(line.split(":", 1) for line in handle)
    return int(status["VmSize"].split()[0]) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_a_rule_past_its_memory_limit_fails_with_memory_error():
    row = in_fresh_process(partial(_allocate, 2000), kill_after_seconds=60, memory_limit_mb=_address_space_mb() + 300)
    assert row["status"] == "error: MemoryError"
