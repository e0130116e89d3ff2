"""Config-driven experiments: validation, resume after SIGKILL, determinism."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from policyagg.experiments.config import InvalidConfigError, load_config, parse_config
from policyagg.experiments.run import run_config
from policyagg.result import Result

ROOT = Path(__file__).resolve().parents[1]
RESULT_ARRAYS = ("occupancy", "policy", "returns", "normalized", "ranks")


def small_config(output, **changes):
    config = {
        "name": "tiny",
        "output": str(output),
        "seeds": [0, 1],
        "environment": {"id": "attention", "kwargs": {"n_sites": 3, "n_phases": 3}, "gamma": 1.0},
        "agents": {"population": "random_subsets", "n_agents": 4},
        "measure": {"name": "policy", "samples": 300},
        "rules": [
            {"label": "max-quantile", "rule": "max_quantile"},
            {"label": "90%-approval", "rule": "approval", "options": {"alpha": 0.9}},
            {"label": "utilitarian", "rule": "utilitarian"},
        ],
    }
    for key, value in changes.items():
        config[key] = value
    return config


def same_results(folder_a: Path, folder_b: Path) -> None:
    names = sorted(p.name for p in folder_a.rglob("*.json") if p.name != "config.json")
    assert names == sorted(p.name for p in folder_b.rglob("*.json") if p.name != "config.json") and names
    for path in folder_a.rglob("seed*/*.json"):
        a, b = Result.load(path), Result.load(folder_b / path.relative_to(folder_a))
        for field in RESULT_ARRAYS:
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert a.report == b.report
    for name in ("summary.csv", "bars.csv"):
        assert (folder_a / name).read_bytes() == (folder_b / name).read_bytes()


def test_shipped_configs_parse():
    for path in sorted((ROOT / "experiments" / "configs").glob("*.toml")):
        config = load_config(path)
        assert config.env_id == "attention" and len(config.rules) >= 6


def test_python_api_runs_a_dict_and_writes_tables_and_figures(tmp_path):
    run = run_config(small_config(tmp_path / "out"), progress=False)
    assert [s.seed for s in run.seeds] == [0, 1]
    assert list(run.seeds[0].results) == ["max-quantile", "90%-approval", "utilitarian"]
    for name in ("summary.md", "summary.csv", "bars.csv", "bars.png", "bars.svg", "cdf-seed0.png", "cdf-seed0.svg"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "max-quantile" in (tmp_path / "out" / "summary.md").read_text()
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_same_config_gives_identical_results(tmp_path):
    run_config(small_config(tmp_path / "x"), progress=False)
    run_config(small_config(tmp_path / "y"), progress=False)
    same_results(tmp_path / "x", tmp_path / "y")
    assert (tmp_path / "x" / "bars.svg").read_bytes() == (tmp_path / "y" / "bars.svg").read_bytes()


def test_resume_reuses_finished_work(tmp_path):
    out = tmp_path / "out"
    run_config(small_config(out), progress=False, figures=False)
    marker = out / "seed0" / "utilitarian.json"
    before = marker.stat().st_mtime_ns
    run_config(small_config(out), progress=False, figures=False)
    assert marker.stat().st_mtime_ns == before  # not recomputed


def test_output_folder_of_another_configuration_is_refused(tmp_path):
    run_config(small_config(tmp_path / "out"), progress=False, figures=False)
    other = small_config(tmp_path / "out", measure={"name": "policy", "samples": 400})
    with pytest.raises(InvalidConfigError, match="different configuration.*samples"):
        run_config(other, progress=False)


def test_killed_run_resumes_to_identical_results(tmp_path):
    """SIGKILL a real `policyagg run` once some results exist, run it again, compare with an
    uninterrupted run."""
    config = small_config(tmp_path / "killed", seeds=[0, 1, 2])
    path = tmp_path / "tiny.toml"
    path.write_text(_toml(config))
    command = [sys.executable, "-P", "-m", "policyagg.experiments.cli", "run", str(path)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "seed0" / "max-quantile.json"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first.exists(), "the run was killed before it wrote anything"
    assert not (tmp_path / "killed" / "summary.md").exists(), "the run finished before it was killed"
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_config(small_config(tmp_path / "clean", seeds=[0, 1, 2]), progress=False)
    same_results(tmp_path / "killed", tmp_path / "clean")


def _toml(config: dict) -> str:
    def value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    lines = [f"{k} = {value(config[k])}" for k in ("name", "output", "seeds")]
    for table in ("environment", "agents", "measure"):
        lines.append(f"[{table}]")
        lines += [f"{k} = {value(v)}" for k, v in config[table].items()]
    for rule in config["rules"]:
        lines.append("[[rules]]")
        lines += [f"{k} = {value(v)}" for k, v in rule.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "change, match",
    [
        ({"colour": "blue"}, r"unknown key `colour`"),
        ({"environment": {"id": "attention", "gama": 1.0}}, r"unknown key `environment.gama`"),
        ({"environment": {"id": "attention", "gamma": 1.5}}, r"`environment.gamma` must be a number in \(0, 1\]"),
        ({"environment": {"id": "attention", "on_termination": "stop"}}, r"`environment.on_termination`"),
        ({"agents": {"population": "everyone"}}, r"`agents.population` must be one of one_per_site, random_subsets"),
        ({"agents": {"population": "random_subsets"}}, r"`agents.n_agents` must be a positive integer"),
        ({"agents": {"population": "one_per_site", "n_agents": 3}}, r"`agents.n_agents` applies only"),
        (
            {"measure": {"name": "uniform", "samples": 10}},
            r"`measure.name` must be one of policy, volume, optimal-mixture",
        ),
        (
            {"measure": {"name": "volume", "samples": 10, "options": {"alpha": 1}}},
            r"unknown key `measure.options.alpha` for measure 'volume'; its options are: .*chains",
        ),
        ({"measure": {"name": "policy", "samples": 10, "options": 3}}, r"`measure.options` must be a table"),
        ({"measure": {"name": "policy", "samples": 0}}, r"`measure.samples` must be a positive integer"),
        ({"measure": {"name": "policy"}}, r"`measure.samples` must be a positive integer"),
        ({"seeds": [0, 0]}, r"`seeds` must be distinct"),
        ({"seeds": [-1]}, r"`seeds` must be a non-empty array of non-negative integers"),
        ({"rules": []}, r"`rules` must be a non-empty array"),
        ({"rules": [{"rule": "condorcet"}]}, r"`rules\[0\].rule` = 'condorcet' is not a rule"),
        ({"rules": [{"rule": "borda", "weight": 2}]}, r"unknown key `rules\[0\].weight`"),
        ({"rules": [{"rule": "borda"}, {"rule": "borda"}]}, r"rule labels must be distinct"),
        (
            {"rules": [{"rule": "approval", "options": {"alfa": 0.9}}]},
            r"`rules\[0\].options`: rule 'approval' has no option `alfa`; its options are: `alpha`, `completion`",
        ),
        (
            {"rules": [{"rule": "approval", "options": {"alpha": 1.9}}]},
            r"`rules\[0\].options`: rule 'approval': `alpha` must be a number in \[0, 1\]; got 1.9",
        ),
        (
            {"rules": [{"rule": "borda", "options": {"solver": "simplex"}}]},
            r"rule 'borda': `solver` must be one of lp, milp; got 'simplex'",
        ),
        ({"name": ""}, r"`name` must be a non-empty string"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, change, match):
    with pytest.raises(InvalidConfigError, match=match):
        parse_config(small_config(tmp_path, **change))


def test_bad_rule_options_are_refused_before_sampling(tmp_path):
    config = small_config(tmp_path / "out")
    config["rules"][1]["options"] = {"alpha": 1.9}
    with pytest.raises(InvalidConfigError, match=r"`rules\[1\].options`: rule 'approval': `alpha` must be"):
        run_config(config, progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_table_and_bad_toml(tmp_path):
    config = small_config(tmp_path)
    del config["agents"]
    with pytest.raises(InvalidConfigError, match=r"the table `\[agents\]` is missing"):
        parse_config(config)
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(InvalidConfigError, match="not valid TOML"):
        load_config(path)


def test_gymnasium_environment_config(tmp_path):
    config = small_config(
        tmp_path / "frozen",
        seeds=[0],
        environment={"id": "FrozenLake-v1", "kwargs": {"is_slippery": True}, "gamma": 0.95},
        agents={"population": "env"},
        rules=[{"label": "utilitarian", "rule": "utilitarian"}, {"label": "max-quantile", "rule": "max_quantile"}],
    )
    run = run_config(config, progress=False, figures=False)
    assert run.seeds[0].results["utilitarian"].returns.shape == (1,)


def test_measure_and_workers_do_not_change_the_contract(tmp_path):
    """A config under another measure runs end to end with options; 1 and 2 workers give the
    same files (rules run in forked processes, sampling in batches)."""
    config = small_config(tmp_path / "one", seeds=[0, 1])
    config["measure"] = {"name": "optimal-mixture", "samples": 300, "options": {"concentration": 0.5}}
    one = run_config(config, progress=False, figures=False, workers=1)
    assert one.seeds[0].samples.measure == "optimal-mixture"
    assert one.seeds[0].samples.info["concentration"] == 0.5
    config["output"] = str(tmp_path / "two")
    run_config(config, progress=False, figures=False, workers=2)
    same_results(tmp_path / "one", tmp_path / "two")


def test_configs_on_the_same_mdp_share_their_sampled_policies(tmp_path):
    """Two populations on one attention MDP: run together, each config's samples are the
    returns of the same policies it would have sampled alone (common random numbers)."""
    from policyagg.experiments.run import run_configs

    a = small_config(tmp_path / "a", seeds=[0])
    a["agents"] = {"population": "one_per_site"}
    b = small_config(tmp_path / "b", seeds=[0])
    together = run_configs([a, b], progress=False, figures=False, workers=1)
    assert together[0].seeds[0].samples.info["shared_with"] == ["tiny", "tiny"]
    for config, run in zip((a, b), together):
        config = dict(config, output=str(tmp_path / ("alone-" + Path(config["output"]).name)))
        alone = run_config(config, progress=False, figures=False, workers=1)
        np.testing.assert_allclose(run.seeds[0].samples.values, alone.seeds[0].samples.values, rtol=0, atol=1e-12)
        assert run.seeds[0].samples.values.shape[1] == alone.seeds[0].samples.values.shape[1]


def test_raw_rules_are_labelled_in_tables_and_figures(tmp_path):
    run = run_config(small_config(tmp_path / "out", seeds=[0]), progress=False)
    out = tmp_path / "out"
    assert "| utilitarian (raw) |" in (out / "summary.md").read_text()
    assert "±" not in (out / "summary.md").read_text()  # one seed: no standard error
    assert "utilitarian (raw)," in (out / "summary.csv").read_text()
    assert "<!-- utilitarian (raw) -->" in (out / "bars.svg").read_text()
    assert "<!-- utilitarian (raw) -->" in (out / "cdf-seed0.svg").read_text()
    assert "error bars" not in (out / "bars.svg").read_text()  # one seed: none drawn
    assert (out / "seed0" / "utilitarian.json").exists()  # result files keep the configuration's label
    assert list(run.seeds[0].results) == ["max-quantile", "90%-approval", "utilitarian"]


def test_progress_bars_name_the_experiment_seed_and_measure(tmp_path, capsys):
    run_config(small_config(tmp_path / "out"), figures=False, workers=1)
    err = capsys.readouterr().err
    for label in (
        "tiny seed 0: policy samples",
        "tiny seed 1: policy samples",
        "tiny (policy measure): seeds",
        "tiny (policy measure): rules on seed(s) 0,1",
    ):
        assert label in err
    assert "sampling policies" not in err


def test_overwrite_replaces_another_configuration(tmp_path):
    out = tmp_path / "out"
    run_config(small_config(out), progress=False)
    other = small_config(out, measure={"name": "policy", "samples": 400})
    with pytest.raises(InvalidConfigError, match=r"different configuration.*`--overwrite`.*`--out DIR`"):
        run_config(other, progress=False)
    run = run_config(other, progress=False, overwrite=True)
    assert run.config.output == out and all(path.parent == out or out in path.parents for path in run.files)
    assert all(path.exists() for path in run.files)
    assert json.loads((out / "config.json").read_text())["samples"] == 400
    assert json.loads((out / "config.json").read_text())["output"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or set-aside folder left
    run_config(small_config(tmp_path / "fresh", measure={"name": "policy", "samples": 400}), progress=False)
    same_results(out, tmp_path / "fresh")
    run_config(other, progress=False)  # the replaced folder now resumes as usual


def test_failed_overwrite_leaves_the_old_results(tmp_path, monkeypatch):
    from policyagg.experiments import run as run_module

    out = tmp_path / "out"
    run_config(small_config(out), progress=False, figures=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def fail(*args, **kwargs):
        raise RuntimeError("killed while writing the summary")

    monkeypatch.setattr(run_module, "write_summary", fail)
    other = small_config(out, measure={"name": "policy", "samples": 400})
    with pytest.raises(RuntimeError, match="killed"):
        run_config(other, progress=False, workers=1, overwrite=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    monkeypatch.undo()
    staging = tmp_path / ".out.overwrite"
    assert (staging / "seed0" / "samples.npz").exists()  # the unfinished new run waits beside it
    run_config(other, progress=False, workers=1, overwrite=True)  # and resumes from there
    assert json.loads((out / "config.json").read_text())["samples"] == 400
    assert not staging.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\xff\xfe not utf-8", "not UTF-8"), (None, "is a folder")],
)
def test_unreadable_config_paths_raise_config_errors(tmp_path, content, message):
    from policyagg.experiments.config import InvalidConfigError, load_config

    path = tmp_path / "config.toml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(InvalidConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize("garbage", [b"", b"PK\x03\x04 truncated", b"not an npz at all"])
def test_damaged_samples_file_is_a_typed_error(tmp_path, garbage):
    from policyagg import ReturnSamples
    from policyagg.errors import CorruptFileError

    path = tmp_path / "samples.npz"
    path.write_bytes(garbage)
    with pytest.raises(CorruptFileError, match="delete it to sample again"):
        ReturnSamples.load(path)


def test_attention_variant_in_configs(tmp_path):
    from policyagg.envs.attention import VARIANTS
    from policyagg.experiments.config import ATTENTION_VARIANTS
    from policyagg.experiments.run import build_problem

    assert ATTENTION_VARIANTS == VARIANTS
    for name in ("a", "b"):
        config = load_config(ROOT / "experiments" / "configs" / f"attention-{name}-paper.toml")
        assert config.env_kwargs["variant"] == "paper" and config.name == f"attention-{name}-paper"
        classic = load_config(ROOT / "experiments" / "configs" / f"attention-{name}.toml")
        assert "variant" not in classic.env_kwargs  # the classic configs (and their results' fingerprints) unchanged
        assert [(r.label, r.rule, r.options) for r in config.rules] == [
            (r.label, r.rule, r.options) for r in classic.rules
        ]
    problem = build_problem(config, 0)
    noop = -problem.rewards[:, :, 5]  # sums of 100 m_i w_j: multiples of 100 x 0.25 x 0.5 = 12.5
    assert problem.n_agents == 10 and np.allclose(np.round(noop / 12.5) * 12.5, noop) and noop.max() > 0
    env = {"id": "attention", "kwargs": {"n_sites": 3, "n_phases": 3, "variant": "paper"}}
    assert parse_config(small_config(tmp_path, environment=env)).env_kwargs["variant"] == "paper"
    assert build_problem(parse_config(small_config(tmp_path, environment=env)), 0).n_agents == 4
    env["kwargs"]["variant"] = "fancy"
    with pytest.raises(InvalidConfigError, match=r"`environment.kwargs`: `variant` must be one of 'classic', 'paper'"):
        parse_config(small_config(tmp_path, environment=env))
