"""Sweeps on the local executor: grid expansion, validation at read time, the combined table,
figures, shared samples and resume."""

import csv
from pathlib import Path

import numpy as np
import pytest

from policyagg.errors import CheckpointWarning
from policyagg.experiments.cli import main
from policyagg.experiments.config import InvalidConfigError
from policyagg.experiments.sweep import load_sweep, parse_sweep
from policyagg.result import Result
from policyagg.samples import ReturnSamples

ROOT = Path(__file__).resolve().parents[1]
BASE = {
    "name": "tiny",
    "seeds": [0],
    "environment": {"id": "attention", "kwargs": {"n_sites": 3, "n_phases": 3}, "gamma": 1.0},
    "agents": {"population": "random_subsets", "n_agents": 4},
    "measure": {"name": "policy", "samples": 300},
    "rules": [
        {"label": "approval", "rule": "approval", "options": {"alpha": 0.9}},
        {"label": "utilitarian", "rule": "utilitarian"},
    ],
}


def sweep_dict(output, grid, **extra):
    return {"name": "s", "base": BASE, "output": str(output), "grid": grid, **extra}


def test_the_grid_expands_into_named_points_with_their_values(tmp_path):
    sweep = parse_sweep(sweep_dict(tmp_path, {"rules": {"approval": {"alpha": [0.5, 0.8]}}, "agents.n_agents": [4, 5]}))
    assert sweep.keys == ("rules.approval.alpha", "agents.n_agents")
    names = [p.name for p in sweep.points]
    assert names == ["alpha=0.5_n_agents=4", "alpha=0.5_n_agents=5", "alpha=0.8_n_agents=4", "alpha=0.8_n_agents=5"]
    last = sweep.points[-1].config
    assert last.rules[0].options == {"alpha": 0.8} and last.rules[1].options == {} and last.n_agents == 5
    assert last.output == tmp_path / "alpha=0.8_n_agents=5"
    assert names == [p.name for p in parse_sweep(sweep_dict(tmp_path, dict(sweep_grid(sweep)))).points]  # stable


def sweep_grid(sweep):
    return {key: sorted({p.values[key] for p in sweep.points}) for key in sweep.keys}


def test_set_seeds_and_environment_keys(tmp_path):
    sweep = parse_sweep(
        sweep_dict(
            tmp_path,
            {"seeds": [3, [0, 1]], "environment.kwargs.n_sites": [2, 3]},
            set={"measure": {"samples": 100}},
        )
    )
    assert [p.config.seeds for p in sweep.points] == [(3,), (3,), (0, 1), (0, 1)]
    assert [p.config.env_kwargs["n_sites"] for p in sweep.points] == [2, 3, 2, 3]
    assert all(p.config.samples == 100 for p in sweep.points)


@pytest.mark.parametrize(
    "grid, match",
    [
        ({"agent.n_agents": [4]}, "unknown key 'agent'"),
        ({"agents.n_agent": [4]}, "agents.n_agent"),
        ({"rules.nope.alpha": [0.5]}, "no rule is labelled or named 'nope'"),
        ({"rules.approval.alfa": [0.5]}, "alfa"),
        ({"rules.approval.alpha": [0.5, 1.5]}, r"grid point alpha=1\.5.*alpha"),
        ({"measure.name": ["policy", "nope"]}, "name=nope"),
        ({"rules.approval.alpha": []}, "non-empty array"),
    ],
)
def test_a_bad_grid_fails_at_read_time_naming_the_key(tmp_path, grid, match):
    with pytest.raises(InvalidConfigError, match=match):
        parse_sweep(sweep_dict(tmp_path, grid))


def test_ambiguous_rules_and_bad_sweep_keys_are_refused(tmp_path):
    base = BASE | {"rules": [{"rule": "approval", "label": "a"}, {"rule": "approval", "label": "b"}]}
    with pytest.raises(InvalidConfigError, match="2 rules have rule 'approval'"):
        parse_sweep({"base": base, "grid": {"rules.approval.alpha": [0.5]}})
    with pytest.raises(InvalidConfigError, match="unknown key `grids`"):
        parse_sweep({"base": BASE, "grids": {}})
    with pytest.raises(InvalidConfigError, match="neither a file nor a shipped"):
        parse_sweep({"base": "no-such-config", "grid": {"seeds": [0]}})


def test_the_shipped_alpha_sweep_has_twelve_valid_points():
    sweep = load_sweep(ROOT / "experiments" / "configs" / "sweeps" / "alpha-sweep.toml")
    alphas = [p.config.rules[0].options["alpha"] for p in sweep.points]
    assert len(alphas) == 12 == len(set(alphas)) and all(len(p.config.rules) == 1 for p in sweep.points)


def _gini(x):
    """Gini index by its definition: sum_ij |x_i - x_j| / (2 n^2 mean)."""
    x = np.asarray(x, float)
    return float(np.abs(x[:, None] - x[None, :]).sum() / (2 * x.size**2 * x.mean()))


def test_a_sweep_runs_writes_one_table_and_figures_and_resumes(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(
        'name = "s"\nbase = "base.toml"\n[grid]\n"rules.approval.alpha" = [0.5, 0.9]\n',
        encoding="utf-8",
    )
    (tmp_path / "base.toml").write_text(_toml(BASE), encoding="utf-8")
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "2"]) == 0
    with open(out / "sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["point"], r["rule"]) for r in rows] == [
        ("alpha=0.5", "approval"),
        ("alpha=0.5", "utilitarian (raw)"),
        ("alpha=0.9", "approval"),
        ("alpha=0.9", "utilitarian (raw)"),
    ]
    for row in rows:
        label = "utilitarian" if row["rule"].startswith("utilitarian") else "approval"
        result = Result.load(out / row["point"] / "seed0" / label)
        assert float(row["gini"]) == pytest.approx(_gini(result.normalized), abs=1e-12)
        assert float(row["min_normalized"]) == pytest.approx(result.normalized.min(), abs=1e-12)
    assert "| rules.approval.alpha | rule |" in (out / "sweep.md").read_text()
    assert (out / "sweep-alpha.png").stat().st_size > 0 and (out / "sweep-alpha.svg").stat().st_size > 0
    # the points share the MDP: the same sampled policies (common random numbers)
    a = ReturnSamples.load(out / "alpha=0.5" / "seed0" / "samples.npz")
    b = ReturnSamples.load(out / "alpha=0.9" / "seed0" / "samples.npz")
    np.testing.assert_array_equal(a.values, b.values)

    # resume: finished points are read back, a missing one is run again
    kept = (out / "alpha=0.5" / "seed0" / "approval.json").stat().st_mtime_ns
    (out / "alpha=0.9" / "seed0" / "approval.json").unlink()
    with pytest.warns(CheckpointWarning, match="approval.json is missing"):
        assert main(["sweep", str(path), "--out", str(out), "--workers", "1"]) == 0
    assert (out / "alpha=0.5" / "seed0" / "approval.json").stat().st_mtime_ns == kept
    assert Result.load(out / "alpha=0.9" / "seed0" / "approval").options["alpha"] == 0.9


def test_the_cli_reports_a_bad_sweep_before_running(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('base = "attention-a-paper"\n[grid]\n"rules.max-quantile.alfa" = [1]\n', encoding="utf-8")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "alfa" in capsys.readouterr().err and not (tmp_path / "out").exists()


def _toml(config: dict) -> str:
    env = config["environment"]
    lines = [
        f'name = "{config["name"]}"',
        f"seeds = {config['seeds']}",
        "[environment]",
        'id = "attention"',
        f"kwargs = {{ n_sites = {env['kwargs']['n_sites']}, n_phases = {env['kwargs']['n_phases']} }}",
        f"gamma = {env['gamma']}",
        "[agents]",
        'population = "random_subsets"',
        f"n_agents = {config['agents']['n_agents']}",
        "[measure]",
        'name = "policy"',
        f"samples = {config['measure']['samples']}",
    ]
    for rule in config["rules"]:
        options = ", ".join(f"{k} = {v}" for k, v in rule.get("options", {}).items())
        lines += ["[[rules]]", f'label = "{rule["label"]}"', f'rule = "{rule["rule"]}"', f"options = {{ {options} }}"]
    return "\n".join(lines) + "\n"
