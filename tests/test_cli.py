import re
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
    assert "| utilitarian |" in out and "| egalitarian (normalised) |" in out and "| 90%-approval |" in out
    folder = tmp_path / "experiment-a-seed0"
    assert (folder / "90-approval.json").exists() and (folder / "samples.npz").exists()
    result = Result.load(folder / "egalitarian-normalised")
    assert result.ranks is not None and len(result.names) == 3
    assert main(["show", str(folder / "egalitarian")]) == 0
    assert "site0" in capsys.readouterr().out


def test_compare_is_reproducible(tmp_path):
    for run in ("x", "y"):
        main(["compare", "--experiment", "b", "--sites", "3", "--agents", "4", "--samples", "200", "--out", str(tmp_path / run)])
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


def test_bench_rules_runs_every_registered_case(capsys):
    assert main(["bench", "rules", "--sites", "3", "--agents", "3", "--samples", "300"]) == 0
    out = capsys.readouterr().out
    assert "utilitarian (baseline)" in out and "max-quantile" in out and "0.9-approval" in out


@pytest.mark.parametrize("target", ["growth", "scale", "volume", "sampler"])
def test_bench_targets_run_small(target, capsys):
    extra = {"growth": ["--sites", "4", "--samples", "50"], "scale": ["--sites", "3", "--agents", "3", "--samples", "200"],
             "volume": ["--sites", "2", "--samples", "200", "--workers", "1"],
             "sampler": ["--sites", "3", "--samples", "300", "--baseline-samples", "20", "--repeats", "1",
                         "--workers", "1"]}[target]
    assert main(["bench", target, *extra]) == 0
    out = capsys.readouterr().out
    assert "peak RSS" in out or "| rule |" in out
