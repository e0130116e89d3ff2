import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from policyagg import solvers
from policyagg.experiments.cli import main
from policyagg.result import Result

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    try:
        for code in blocks:
            exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    finally:
        if "dictator" in solvers.RULES:  # the README registers a rule of its own
            solvers.unregister_rule("dictator")
    assert Result.load(tmp_path / "out" / "fair").rule == "max_quantile"
    out = capsys.readouterr().out
    assert "enumerate 5 states" in out and "agrees" in out


def test_compare_writes_results_and_prints_table(tmp_path, capsys):
    code = main(["compare", "--sites", "3", "--samples", "300", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert "| utilitarian (raw) |" in out and "| egalitarian (normalised) |" in out and "| 90%-approval |" in out
    folder = tmp_path / "experiment-a-seed0"
    assert (folder / "90-approval.json").exists() and (folder / "samples.npz").exists()
    result = Result.load(folder / "egalitarian-normalised")
    assert result.ranks is not None and len(result.names) == 3
    assert main(["show", str(folder / "egalitarian")]) == 0
    assert "site0" in capsys.readouterr().out


def test_compare_is_reproducible(tmp_path):
    for run in ("x", "y"):
        main(
            [
                "compare",
                "--experiment",
                "b",
                "--sites",
                "3",
                "--agents",
                "4",
                "--samples",
                "200",
                "--out",
                str(tmp_path / run),
            ]
        )
    a = Result.load(tmp_path / "x" / "experiment-b-seed0" / "utilitarian")
    b = Result.load(tmp_path / "y" / "experiment-b-seed0" / "utilitarian")
    np.testing.assert_array_equal(a.occupancy, b.occupancy)
    np.testing.assert_array_equal(a.ranks, b.ranks)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["show", str(tmp_path / "missing")]) == 2
    assert "policyagg: error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["compare", "--experiment", "c"])


@pytest.mark.slow
def test_bench_sampler_agrees_with_baseline():
    from policyagg.experiments.bench import bench_sampler

    report = bench_sampler(n_samples=2000, baseline_samples=100)
    assert max(report["max_abs_difference"].values()) < 1e-9
    assert set(report["per_s"]) == {"dense", "krylov"}


@pytest.mark.slow  # a smoke benchmark
def test_bench_rules_runs_every_registered_case(capsys):
    assert main(["bench", "rules", "--sites", "3", "--agents", "3", "--samples", "300"]) == 0
    out = capsys.readouterr().out
    assert "utilitarian (baseline)" in out and "max-quantile" in out and "0.9-approval" in out


@pytest.mark.slow  # smoke benchmarks
@pytest.mark.parametrize("target", ["growth", "scale", "volume", "sampler"])
def test_bench_targets_run_small(target, capsys):
    extra = {
        "growth": ["--sites", "4", "--samples", "50"],
        "scale": ["--sites", "3", "--agents", "3", "--samples", "200"],
        "volume": ["--sites", "2", "--samples", "200", "--workers", "1"],
        "sampler": ["--sites", "3", "--samples", "300", "--baseline-samples", "20", "--repeats", "1", "--workers", "1"],
    }[target]
    assert main(["bench", target, *extra]) == 0
    out = capsys.readouterr().out
    assert "peak RSS" in out or "| rule |" in out


SUBCOMMANDS = (
    "reproduce",
    "run",
    "sweep",
    "compare",
    "measures",
    "reference",
    "bench",
    "norms",
    "rules",
    "front",
    "show",
    "axioms",
)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"policyagg {command}" in out.split("examples:")[1]
    from policyagg.experiments.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    assert sub.description
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help text"


def test_building_the_parser_imports_nothing_heavy():
    code = (
        "import sys; import policyagg.experiments.cli as cli; cli.build_parser(); "
        "print(sorted(m for m in ('numpy', 'scipy', 'matplotlib', 'highspy', 'tqdm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-P", "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_cli_measure_names_are_the_measures():
    from policyagg.experiments.cli import MEASURE_NAMES
    from policyagg.measures import MEASURES

    assert MEASURE_NAMES == MEASURES


def test_bench_defaults_are_the_ones_the_help_states(monkeypatch):
    """`bench --samples` claimed 10000 for the sampler, which runs 20000."""
    from policyagg.experiments import bench, bench_agents, bench_scale, bench_volume
    from policyagg.experiments.cli import build_parser

    seen = {}

    def record(name):
        def fake(**kwargs):
            seen[name] = kwargs
            raise SystemExit(0)

        return fake

    monkeypatch.setattr(bench, "bench_sampler", record("sampler"))
    monkeypatch.setattr(bench, "bench_rules", record("rules"))
    monkeypatch.setattr(bench_scale, "bench_scale", record("scale"))
    monkeypatch.setattr(bench_volume, "bench_volume", record("volume"))
    monkeypatch.setattr(bench_agents, "bench_agents", record("agents"))
    for target in ("sampler", "rules", "scale", "volume", "agents"):
        with pytest.raises(SystemExit):
            main(["bench", target])
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["bench"]
    text = next(a for a in sub._actions if a.dest == "samples").help
    for target in ("sampler", "rules", "scale", "volume", "agents"):
        assert f"{target} {seen[target]['n_samples']}" in text
    assert seen["agents"]["agent_counts"] == bench_agents.AGENT_COUNTS
    assert seen["agents"]["time_limit"] == bench_agents.DEFAULT_TIME_LIMIT


def test_bench_agents_takes_lists_and_the_other_benches_one_number(capsys):
    assert main(["bench", "rules", "--agents", "3,4"]) == 2
    assert "takes one number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "agents", "--agents", "5,x"])
    assert "positive integers separated by commas" in capsys.readouterr().err


def write_tiny_toml(path, output):
    from test_experiments import _toml, small_config

    path.write_text(_toml(small_config(output, seeds=[0])))
    return path


def test_readme_flow_run_after_reproduce_needs_overwrite(tmp_path, capsys):
    """`policyagg reproduce` then `policyagg run <config> --samples N`: the second run meets the
    first one's folder; the error names --overwrite and --out, and --overwrite replaces it."""
    config = write_tiny_toml(tmp_path / "tiny.toml", tmp_path / "out")
    assert main(["run", str(config)]) == 0
    capsys.readouterr()
    assert main(["run", str(config), "--samples", "200"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--out" in err
    assert main(["run", str(config), "--samples", "200", "--overwrite"]) == 0
    assert '"samples": 200' in (tmp_path / "out" / "config.json").read_text()


def test_measures_markdown_without_spread_for_one_seed_and_with_ties():
    from policyagg.experiments.measure_comparison import comparison_markdown, rank_order

    assert rank_order({"a": 0.2, "b": 0.1, "c": 0.1 + 1e-12, "d": 0.1004}) == "b = c ≈ d < a"
    figures = {
        m: {
            "samples": 10,
            "seeds": 1,
            "labels": {"u": "u (raw)"},
            "gini": {"mq": (0.1, 0.0), "borda": (0.1, 0.0), "u": (0.3, 0.0)},
            "quantile": {"mq": (1.0, 0.0), "borda": (1.0, 0.0), "u": (0.2, 0.0)},
            "window_mass": 0.5,
            "rules_at_top": 0.5,
            "ess": None,
            "rhat": None,
        }
        for m in ("policy", "volume")
    }
    text = comparison_markdown("tiny", figures)
    assert "±" not in text and "one seed" in text
    assert "* policy: mq = borda < u (raw)" in text and "| u (raw) | 0.300 | 0.300 | 0.200 | 0.200 |" in text
    figures["policy"]["seeds"] = 2
    assert "| mq | 0.100 ± 0.000 |" in comparison_markdown("tiny", figures)


@pytest.mark.slow  # a smoke benchmark
def test_bench_scale_samples_are_real_policy_samples():
    from policyagg.experiments.bench_scale import bench_scale

    report = bench_scale(n_sites=3, n_agents=3, n_samples=200, rules=(("utilitarian", "utilitarian", {}),))
    assert "`policy` measure" in report["samples"] and "timing only" not in report["samples"]
    mixture = bench_scale(
        n_sites=3, n_agents=3, n_samples=200, mixture=True, rules=(("utilitarian", "utilitarian", {}),)
    )
    assert "timing only" in mixture["samples"]


def test_bench_scale_times_every_lp_rule_with_status_load_and_phases():
    from policyagg.experiments.bench_scale import SCALE_CASES, bench_scale, format_scale

    assert {name for _, name, _ in SCALE_CASES} == {
        "utilitarian",
        "egalitarian",
        "max_quantile",
        "pvc",
        "approval",
        "borda",
        "nash_welfare",
        "generalized_gini",
        "random_dictator",
    }
    report = bench_scale(n_sites=3, n_agents=3, n_samples=200, mixture=True)
    assert list(report["phases"]) == ["model build", "return ranges", "samples"]
    assert all(p["seconds"] >= 0 and p["peak_rss_mb"] > 0 for p in report["phases"].values())
    assert set(report["rules"]) == {label for label, _, _ in SCALE_CASES}
    assert all(t["status"] in ("optimal", "gap", "time-limit") for t in report["rules"].values())
    text = format_scale(report)
    assert "return ranges" in text and "load" in text and "| random dictator |" in text


def test_compare_progress_bars_name_the_seed(tmp_path, capsys):
    assert main(["compare", "--sites", "3", "--samples", "200", "--seed", "2", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "compare (a) seed 2: rules" in err and "compare (a) seed 2: policy samples" in err


def test_rules_lists_every_registered_rule_and_its_options(capsys):
    from policyagg import solvers

    assert main(["rules"]) == 0
    listing = capsys.readouterr().out
    assert [line.split(":")[0].split()[0] for line in listing.splitlines()] == list(solvers.RULES)
    assert "max_quantile  (needs samples)" in listing and "utilitarian  (needs" not in listing
    assert main(["rules", "approval"]) == 0
    options = capsys.readouterr().out
    assert "alpha = 0.9: a number in [0, 1]" in options and "time_limit = None" in options
    assert main(["rules", "aproval"]) == 2
    assert "choose one of" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "rules", "--samples", "0"],
        ["bench", "rules", "--samples", "-5"],
        ["reproduce", "--seeds", "0"],
        ["reproduce", "--workers", "two"],
        ["bench", "growth", "--sites", "0"],
    ],
)
def test_counts_on_the_command_line_must_be_positive(argv, capsys):
    from policyagg.experiments.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err


def test_reproduce_variants_pick_the_shipped_configs(monkeypatch, tmp_path):
    from policyagg.envs.attention import VARIANTS
    from policyagg.experiments import cli
    from policyagg.experiments.config import CONFIGS, load_config

    assert cli.VARIANTS == VARIANTS and cli.DEFAULT_VARIANT in VARIANTS
    assert cli.paper_configs("classic") == ("attention-a", "attention-b")
    assert cli.paper_configs("paper") == ("attention-a-paper", "attention-b-paper")
    for variant in VARIANTS:
        for name in cli.paper_configs(variant):
            assert load_config(CONFIGS / f"{name}.toml").env_kwargs.get("variant", "classic") == variant
    seen = []
    monkeypatch.setattr("policyagg.experiments.run.run_configs", lambda configs, **_: seen.extend(configs) or [])
    assert main(["reproduce", "--out", str(tmp_path)]) == 0
    assert [c.name for c in seen] == list(cli.paper_configs(cli.DEFAULT_VARIANT))
    seen.clear()
    assert main(["reproduce", "--variant", "classic", "--out", str(tmp_path)]) == 0
    assert [c.output for c in seen] == [tmp_path / "attention-a", tmp_path / "attention-b"]


def bench_scale_arguments(monkeypatch, argv):
    """The keyword arguments `policyagg ARGV` passes to `bench_scale` (which is not run)."""
    from policyagg.experiments import bench_scale

    seen = {}

    def fake(**kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(bench_scale, "bench_scale", fake)
    with pytest.raises(SystemExit):
        main(argv)
    return seen


def test_bench_scale_env_option_reaches_the_bench(monkeypatch):
    seen = bench_scale_arguments(
        monkeypatch, ["bench", "scale", "--env", "four-room-v0", "--rules", "max-quantile", "--workers", "2"]
    )
    assert seen["env"] == "four-room-v0" and seen["workers"] == 2
    assert [case[0] for case in seen["rules"]] == ["utilitarian", "max-quantile"]
    seen.clear()
    with pytest.raises(SystemExit):
        main(["bench", "scale"])
    assert seen["env"] is None


def test_bench_scale_on_a_converted_gymnasium_environment():
    """A four-room maze with two shapes (a few hundred states): the phases are the conversion's,
    the samples are the `policy` measure's by the triangular method, and the rules solve."""
    pytest.importorskip("mo_gymnasium")
    from test_enumerate_scale import _four_room_maze

    from policyagg.experiments.bench_scale import SCALE_CASES, bench_scale, format_scale

    rules = tuple(case for case in SCALE_CASES if case[1] in ("utilitarian", "egalitarian", "max_quantile"))
    report = bench_scale(
        env="four-room-v0", env_options={"maze": _four_room_maze(2)}, n_samples=60, rules=rules, workers=1
    )
    assert report["model"].startswith("four-room-v0 (route enumerate, gamma 0.99)")
    assert list(report["phases"]) == ["conversion", "return ranges", "samples"]
    assert all(p["seconds"] >= 0 and p["cpu_seconds"] >= 0 and p["peak_rss_mb"] > 0 for p in report["phases"].values())
    assert "method triangular" in report["samples"] and "60 samples" in report["samples"]
    assert list(report["rules"]) == ["utilitarian", "egalitarian", "max-quantile"]
    assert all(t["status"] == "optimal" and t["violation"] < 1e-9 for t in report["rules"].values())
    assert "| max-quantile |" in format_scale(report) and "CPU s" in format_scale(report)


def test_bench_scale_rules_select_cases_and_keep_the_baseline(monkeypatch, capsys):
    seen = bench_scale_arguments(monkeypatch, ["bench", "scale", "--rules", "max-quantile,egalitarian"])
    # in the table's order, the utilitarian baseline first although not asked for
    assert [case[0] for case in seen["rules"]] == ["utilitarian", "egalitarian", "max-quantile"]
    with pytest.raises(SystemExit):
        main(["bench", "scale", "--rules", "max_quantile"])  # a rule's registered name works too
    assert [case[1] for case in seen["rules"]] == ["utilitarian", "max_quantile"]
    seen.clear()
    with pytest.raises(SystemExit):
        main(["bench", "scale"])
    assert len(seen["rules"]) == 9  # every LP rule by default
    assert main(["bench", "scale", "--rules", "maxquantile"]) != 0
    assert "unknown rule(s) ['maxquantile']" in capsys.readouterr().err
