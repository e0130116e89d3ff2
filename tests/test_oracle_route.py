"""The oracle route of experiment configurations: `[solver] route = "oracle"` (issue 16)."""

import importlib.util
import json

import numpy as np
import pytest

from policyagg.experiments.config import InvalidConfigError, parse_config
from policyagg.experiments.run import run_config
from policyagg.lottery import Lottery, load_outcome


def oracle_config(output, oracle="exact", options=None, rules=None, **changes):
    config = {
        "name": "tiny-oracle",
        "output": str(output),
        "seeds": [0],
        "environment": {"id": "attention", "kwargs": {"n_sites": 3, "n_phases": 3}, "gamma": 0.9},
        "agents": {"population": "one_per_site"},
        "measure": {"name": "optimal-mixture", "samples": 200},
        "rules": rules
        or [
            {"label": "egalitarian", "rule": "egalitarian"},
            {"label": "max-quantile", "rule": "max_quantile"},
            {"label": "utilitarian", "rule": "utilitarian"},
        ],
        "solver": {"route": "oracle", "oracle": oracle, "options": options or {}},
    }
    config.update(changes)
    return config


def test_exact_oracle_route_matches_the_lp_route(tmp_path):
    run = run_config(oracle_config(tmp_path / "oracle"), progress=False, figures=False)
    lp_config = oracle_config(tmp_path / "lp")
    del lp_config["solver"]
    lp_config["rules"] = [
        {"label": "egalitarian", "rule": "egalitarian", "options": {"normalize": True}},
        {"label": "max-quantile", "rule": "max_quantile"},
    ]
    lp = run_config(lp_config, progress=False, figures=False)
    ours, theirs = run.seeds[0].results, lp.seeds[0].results
    assert all(isinstance(result, Lottery) for result in ours.values())
    assert abs(ours["egalitarian"].normalized.min() - theirs["egalitarian"].normalized.min()) <= 0.01
    assert abs(ours["max-quantile"].min_rank - theirs["max-quantile"].min_rank) <= 0.01
    assert ours["max-quantile"].report["min_rank"] == ours["max-quantile"].min_rank
    text = (tmp_path / "oracle" / "summary.md").read_text()
    assert "egalitarian" in text and "max-quantile" in text
    assert isinstance(load_outcome(tmp_path / "oracle" / "seed0" / "egalitarian"), Lottery)
    assert list((tmp_path / "oracle" / "seed0" / "egalitarian.oracle").glob("br-*.npz"))


def test_killed_oracle_run_resumes_from_its_checkpoints(tmp_path):
    """Delete a finished rule's result and the second half of its oracle calls (what a kill
    leaves): the run started again replays the first half and ends with the same lottery."""
    options = {"steps": 20_000, "eval_episodes": 100}
    rules = [{"label": "egalitarian", "rule": "egalitarian", "options": {"max_calls": 6}}]
    out = tmp_path / "out"
    first = run_config(oracle_config(out, "q-learning", options, rules), progress=False, figures=False)
    before = first.seeds[0].results["egalitarian"]
    folder = out / "seed0" / "egalitarian.oracle"
    calls = sorted(folder.glob("br-*.json"))
    calls = [path for path in calls if not path.name.endswith(".eval.json")]
    assert len(calls) == before.diagnostics["oracle_calls"] >= 6
    for path in calls[len(calls) // 2 :]:
        for stale in folder.glob(path.name.replace(".json", ".*")):
            stale.unlink()
    for suffix in (".json", ".npz"):
        (out / "seed0" / f"egalitarian{suffix}").unlink()
    again = run_config(oracle_config(out, "q-learning", options, rules), progress=False, figures=False)
    after = again.seeds[0].results["egalitarian"]
    assert after.diagnostics["replayed_calls"] == len(calls) // 2
    np.testing.assert_array_equal(after.probabilities, before.probabilities)
    np.testing.assert_array_equal(after.support_returns, before.support_returns)
    assert after.diagnostics["evaluation_episodes"] == before.diagnostics["evaluation_episodes"]
    assert after.report == before.report


@pytest.mark.parametrize(
    "change, match",
    [
        ({"solver": {"route": "oracle", "oracle": "q-learning", "options": {"stepz": 10}}}, "stepz"),
        ({"solver": {"route": "oracle", "oracle": "q-learning", "options": {"epsilon": 2.0}}}, "epsilon"),
        ({"solver": {"route": "oracle", "oracle": "exact", "options": {"steps": 10}}}, "no options"),
        ({"solver": {"route": "oracle", "oracle": "dqn"}}, "solver.oracle"),
        ({"solver": {"route": "bandit"}}, "solver.route"),
        ({"solver": {"route": "lp", "oracle": "exact"}}, "only to route"),
        ({"rules": [{"label": "b", "rule": "borda"}]}, "no oracle route"),
        ({"rules": [{"label": "e", "rule": "egalitarian", "options": {"normalize": True}}]}, "normalize"),
    ],
)
def test_bad_oracle_configs_name_the_key(tmp_path, change, match):
    with pytest.raises(InvalidConfigError, match=match):
        parse_config(oracle_config(tmp_path, **change))


@pytest.mark.skipif(importlib.util.find_spec("stable_baselines3") is not None, reason="the rl extra is installed")
def test_sb3_oracle_without_the_extra_names_it(tmp_path):
    config = oracle_config(tmp_path, "sb3:PPO")
    config["environment"] = {"id": "CartPole-v1"}
    config["agents"] = {"population": "env"}
    with pytest.raises(InvalidConfigError, match=r"policyagg\[rl\]"):
        parse_config(config)


def test_bench_oracle_command(tmp_path, capsys):
    from policyagg.experiments.cli import main

    assert main(["bench", "oracle", "--sites", "3", "--samples", "50", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| 3 | 27 | egalitarian | oracle-exact |" in out and "| 3 | 27 | max_quantile | lp |" in out
    rows = json.loads((tmp_path / "bench-oracle.json").read_text())
    assert {row["route"] for row in rows} == {"lp", "oracle-exact"}
    by_route = {(row["rule"], row["route"]): row for row in rows}
    for rule in ("egalitarian", "max_quantile"):
        assert abs(by_route[rule, "lp"]["min_normalized"] - by_route[rule, "oracle-exact"]["min_normalized"]) <= 0.01
