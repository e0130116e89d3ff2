"""`policyagg reference`: our rules on the paper's own instance (experiments/reference-instance/),
checked against what must agree with the paper's code, and the `paper` variant's support checked
against the instance's parameters."""

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from reference import dense_polytope
from scipy.optimize import linprog

from policyagg import solvers
from policyagg.envs.attention import PAPER_AGENT_MULTIPLES, PAPER_ESCALATIONS, PAPER_SITE_WEIGHTS
from policyagg.experiments.cli import main
from policyagg.experiments.reference import RULES, InvalidReferenceError, dominance, load_reference, run_reference
from policyagg.mdp import TabularMDP
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples

ROOT = Path(__file__).resolve().parents[1]
NPZ = ROOT / "experiments" / "reference-instance" / "reference_seed1_N19800.npz"
OURS = ("ours", "ours, paper's choices")


@pytest.fixture(scope="module")
def data():
    with np.load(NPZ, allow_pickle=False) as z:
        arrays = {key: z[key] for key in z.files}
    return arrays, json.loads(NPZ.with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    return run_reference(NPZ, out=out, exact=False, progress=False), out


def _rows(report, experiment, label):
    return {row.source: row for row in report["rows"] if row.experiment == experiment and row.label == label}


def test_shipped_files_are_small_data():
    assert NPZ.stat().st_size < 5_000_000 and NPZ.with_suffix(".json").stat().st_size < 100_000


@pytest.mark.parametrize("experiment", ["base", "subsets"])
def test_lp_ranges_agree_with_the_papers(report, data, experiment):
    arrays, _ = data
    loaded = next(e for e in report[0]["experiments"] if e.name == experiment)
    ranges = loaded.problem.ranges
    np.testing.assert_allclose(ranges.lower, arrays[f"{experiment}_min_expected"], rtol=1e-9, atol=1e-7)
    np.testing.assert_allclose(ranges.upper, arrays[f"{experiment}_max_expected"], rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("experiment", ["base", "subsets"])
def test_paper_points_are_the_papers_reported_returns(report, data, experiment):
    _, reported = data
    loaded = next(e for e in report[0]["experiments"] if e.name == experiment)
    for match in RULES:
        paper = _rows(report[0], experiment, match.label)["paper's code"]
        expected = reported["experiments"][experiment]["rules"][match.paper_key]
        # its occupancy is renormalised to sum 1 here: equal within 1e-7 of each agent's range
        assert np.all(np.abs(paper.returns - expected["returns"]) <= 1e-7 * loaded.problem.ranges.width)
        assert paper.gini == pytest.approx(expected["gini_normalized"], abs=1e-7)


@pytest.mark.parametrize("experiment", ["base", "subsets"])
def test_utilitarian_and_egalitarian_values_agree(report, data, experiment):
    _, reported = data
    rules = reported["experiments"][experiment]["rules"]
    # ours are the exact returns of our policies; the paper's code's are its LP's values, which
    # meet the polytope to Gurobi's tolerance: they agree to 1e-5 (measured: 1.2e-6)
    for source in OURS:
        utilitarian = _rows(report[0], experiment, "utilitarian")[source]
        assert utilitarian.returns.sum() == pytest.approx(rules["0.0-approvals"]["utilitarian_sum_returns"], rel=1e-5)
        egalitarian = _rows(report[0], experiment, "egalitarian")[source]
        assert egalitarian.returns.min() == pytest.approx(min(rules["egalitarian"]["returns"]), rel=1e-5)


@pytest.mark.parametrize("experiment", ["base", "subsets"])
@pytest.mark.parametrize("label, key", [("90%-approval", "0.9-approvals"), ("80%-approval", "0.8-approvals")])
def test_approval_counts_agree(report, data, experiment, label, key):
    _, reported = data
    expected = sum(reported["experiments"][experiment]["rules"][key]["approvals"])
    rows = _rows(report[0], experiment, label)
    assert [rows[source].approvals for source in ("paper's code", *OURS)] == [expected] * 3


@pytest.mark.parametrize("experiment", ["base", "subsets"])
def test_max_quantile_grid_index_agrees(report, data, experiment):
    _, reported = data
    rows = _rows(report[0], experiment, "max-quantile")
    index = reported["experiments"][experiment]["rules"]["quantile"]["max_q_index"]
    assert rows["ours, paper's choices"].q_star_index == index
    assert rows["paper's code"].q_index == index
    # on the N samples alone the grid has two values fewer below the threshold: the best and worst rows
    assert abs(rows["ours"].q_star_index - index) <= 2


@pytest.mark.parametrize("experiment", ["base", "subsets"])
def test_borda_score_at_least_the_papers(report, data, experiment):
    arrays, _ = data
    rows = _rows(report[0], experiment, "Borda")
    hist = arrays[f"{experiment}_histogram_sorted"]  # the paper's code's own (n, N + 2) histograms

    def empirical_borda(returns):  # brute force: share of each agent's histogram at or below its return
        width = arrays[f"{experiment}_max_expected"] - arrays[f"{experiment}_min_expected"]
        return float(np.mean(hist <= (returns + 1e-9 * width)[:, None], axis=1).sum())

    paper, mimic = empirical_borda(rows["paper's code"].returns), empirical_borda(rows["ours, paper's choices"].returns)
    assert mimic >= paper
    assert rows["ours, paper's choices"].borda == pytest.approx(mimic, abs=1e-9)


def _pareto_gap(P, R, returns, width):
    """The SPEC's Pareto check, written independently with scipy's linprog on a sparse average-reward
    polytope: max sum_i (R_i d - returns_i) / width_i over d in O with R_i d >= returns_i - 1e-7 width_i."""
    S, A, _ = P.shape
    inflow = sp.csr_array(P.reshape(S * A, S).T)  # (t, (s, a)): P(t | s, a)
    outflow = sp.kron(sp.eye_array(S), np.ones((1, A)))  # (t, (t, a))
    A_eq = sp.vstack([outflow - inflow, np.ones((1, S * A))], format="csr")
    b_eq = np.append(np.zeros(S), 1.0)
    res = linprog(
        -(R / width[:, None]).sum(axis=0),
        A_ub=-R,
        b_ub=-(returns - 1e-7 * width),
        A_eq=A_eq,
        b_eq=b_eq,
        bounds=(0, None),
        method="highs",
    )
    assert res.status == 0, res.message
    return max(0.0, -res.fun - (returns / width).sum())


@pytest.mark.parametrize("experiment", ["base", "subsets"])
def test_every_our_result_is_pareto_optimal(report, data, experiment):
    arrays, _ = data
    P = arrays["P"]
    R = arrays[f"{experiment}_rewards"].reshape(len(arrays[f"{experiment}_rewards"]), -1)
    width = arrays[f"{experiment}_max_expected"] - arrays[f"{experiment}_min_expected"]
    for row in report[0]["rows"]:
        if row.experiment == experiment and row.source in OURS:
            assert row.status == "optimal"
            assert _pareto_gap(P, R, row.returns, width) <= 1e-5, (row.label, row.source)
            assert row.pareto_gap <= 1e-6
    # the paper's code's max-quantile point is returned without completion: not Pareto optimal
    paper = _rows(report[0], experiment, "max-quantile")["paper's code"]
    assert _pareto_gap(P, R, paper.returns, width) > 1e-4
    assert paper.pareto_gap > 1e-4


def test_outputs_are_written_and_explain_the_differences(report):
    result, out = report
    text = (out / "reference.md").read_text()
    assert result["markdown"] == text
    for phrase in ("Why they differ", "completion", "generalised-logistic", "Pareto gap", "ties"):
        assert phrase in text
    rows = list(csv.DictReader(io.StringIO((out / "reference.csv").read_text())))
    assert len(rows) == 2 * len(RULES) * 3
    assert {r["source"] for r in rows} == {"paper's code", *OURS}
    assert all(len(r["returns"].split(";")) == (5 if r["experiment"] == "base" else 10) for r in rows)


def test_dominance():
    assert dominance(np.array([0.5, 0.6]), np.array([0.5, 0.6])) == "equal"
    assert dominance(np.array([0.5, 0.7]), np.array([0.5, 0.6])) == "ours"
    assert dominance(np.array([0.4, 0.6]), np.array([0.5, 0.6])) == "paper's"
    assert dominance(np.array([0.4, 0.7]), np.array([0.5, 0.6])) == "neither"


# --------------------------------------------------------------------------- bad files
def _write(path, arrays, **changes):
    arrays = dict(arrays) | changes
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"P": None}, r"missing key `P`"),
        ({"base_occ__borda": None}, r"missing key `base_occ__borda`"),
        ({"P": np.ones((3, 2))}, r"`P` must be a real 3-d array"),
        ({"P": np.ones((243, 6, 5))}, r"`P` must have shape \(S, A, S\)"),
        ({"base_rewards": np.zeros((5, 243, 5))}, r"`base_rewards` must have shape \(n, 243, 6\)"),
        ({"base_sampled_returns": np.zeros((10, 4))}, r"`base_sampled_returns` must have shape \(N, 5\)"),
        ({"base_min_expected": np.zeros(4)}, r"`base_min_expected` must have shape \(5,\)"),
        ({"base_occ__quantile": np.full((243, 6), 2.0)}, r"`base_occ__quantile` must be an occupancy measure"),
        ({"base_sampled_returns": np.full((10, 5), np.nan)}, r"`base_sampled_returns` has non-finite entries"),
    ],
)
def test_bad_reference_files_raise_typed_errors(tmp_path, data, changes, match):
    arrays, _ = data
    base_only = {k: v for k, v in arrays.items() if not k.startswith("subsets")}
    path = _write(tmp_path / "bad.npz", base_only, **changes)
    with pytest.raises(InvalidReferenceError, match=match):
        load_reference(path)


def test_pickled_or_non_npz_files_are_refused(tmp_path):
    np.savez(tmp_path / "objects.npz", P=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InvalidReferenceError, match="not an .npz of plain arrays"):
        load_reference(tmp_path / "objects.npz")
    np.save(tmp_path / "bare.npy", np.zeros(3))
    with pytest.raises(InvalidReferenceError, match="not an .npz of plain arrays"):
        load_reference(tmp_path / "bare.npy")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(InvalidReferenceError, match="not an .npz of plain arrays"):
        load_reference(tmp_path / "text.npz")
    with pytest.raises(InvalidReferenceError, match="no such file"):
        load_reference(tmp_path / "missing.npz")
    with pytest.raises(InvalidReferenceError, match="unknown experiment 'c'"):
        load_reference(NPZ, experiments=["c"])


def test_cli_reference_reports_a_bad_file_without_traceback(tmp_path, capsys):
    assert main(["reference", str(tmp_path / "missing.npz")]) == 2
    assert "no such file" in capsys.readouterr().err


# --------------------------------------------------------------------------- the paper variant
def test_the_instance_lies_in_the_paper_variants_support(data):
    """The shipped instance's escalations and weights are values our `paper` variant draws."""
    arrays, _ = data
    assert np.all(np.isin(np.round(arrays["phase_trans"][:, :2] * 100), np.round(PAPER_ESCALATIONS * 100)))
    k = arrays["state_tuples"].shape[1]
    noop = k
    for experiment in ("base", "subsets"):
        rewards = arrays[f"{experiment}_rewards"]
        # weight of agent i on site j: the no-op's penalty where only site j is at the top phase
        weights = np.empty((rewards.shape[0], k))
        top = arrays["state_tuples"] == 2
        for j in range(k):
            s = int(np.flatnonzero((top.sum(axis=1) == 1) & top[:, j])[0])  # only site j at the top phase
            weights[:, j] = -rewards[:, s, noop] / 100
        if experiment == "base":
            np.testing.assert_allclose(weights, np.diag(np.diag(weights)))
            assert np.all(np.isin(np.diag(weights), PAPER_AGENT_MULTIPLES))
        else:
            # w_ij = m_i w_j: per agent a multiple, per site a weight shared by every agent
            for i in range(weights.shape[0]):
                on = weights[i] > 0
                assert on.any()
                ratios = {m: weights[i, on] / m for m in PAPER_AGENT_MULTIPLES}
                assert any(np.all(np.isin(np.round(r, 9), PAPER_SITE_WEIGHTS)) for r in ratios.values())


# --------------------------------------------------------------------------- raw-sum completion
def test_approval_with_raw_sum_completion_maximises_the_raw_sum():
    """Two states, two actions; alpha = 0 approves everything, so the completion alone decides:
    `utilitarian-raw` must reach linprog's max of the raw sum; the normalised one may not."""
    P = np.zeros((2, 2, 2))
    P[:, 0, 0] = P[:, 1, 1] = 1.0  # action a moves to state a
    # agents 0 and 2 like state 0 (rewards 1 and 0.1), agent 1 state 1 (reward 3): the raw sum
    # prefers state 1 (3 > 1.1), the sum of normalised returns state 0 (2 > 1)
    rewards = np.array([[[1.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [3.0, 3.0]], [[0.1, 0.1], [0.0, 0.0]]])
    problem = Problem(TabularMDP(P, gamma=1.0), rewards)
    samples = ReturnSamples(np.random.default_rng(0).uniform(0, 1, size=(50, 3)) * [1, 3, 0.1])
    A_eq, b_eq = dense_polytope(P, np.full(2, 0.5), 1.0)
    best = -linprog(-rewards.reshape(3, -1).sum(axis=0), A_eq=A_eq, b_eq=b_eq, bounds=(0, None)).fun
    raw = solvers.approval(problem, samples, alpha=0.0, completion="utilitarian-raw")
    assert raw.returns.sum() == pytest.approx(best, rel=1e-6)
    assert raw.options["completion"] == "utilitarian-raw"
    normalised = solvers.approval(problem, samples, alpha=0.0)
    assert normalised.returns.sum() == pytest.approx(1.1, rel=1e-6)
