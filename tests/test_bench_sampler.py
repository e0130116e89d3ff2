"""`policyagg bench sampler`: the flop models counted by hand, the peak, the report's keys and shares."""

import importlib.util

import numpy as np
import pytest

from policyagg.errors import InvalidProblemError
from policyagg.experiments.bench import bench_sampler, dense_work, format_sampler, gmres_work, matmul_peak
from policyagg.mdp import TabularMDP
from policyagg.problem import Problem
from policyagg.sampling import PolicySampler


def three_states(gamma):
    """Hand-countable structure: 8 non-zeros in P (S*A x S), 6 in P_pi, S = 3.

    s0: a0 -> {s0, s1}, a1 -> {s2}   (P_pi row s0: s0, s1, s2)
    s1: a0 -> {s1},     a1 -> {s1, s2} (row s1: s1, s2)
    s2: a0 -> {s0},     a1 -> {s0}     (row s2: s0)
    """
    P = np.zeros((3, 2, 3))
    P[0, 0] = [0.5, 0.5, 0.0]
    P[0, 1] = [0.0, 0.0, 1.0]
    P[1, 0] = [0.0, 1.0, 0.0]
    P[1, 1] = [0.0, 0.5, 0.5]
    P[2, 0] = [1.0, 0.0, 0.0]
    P[2, 1] = [1.0, 0.0, 0.0]
    return Problem(TabularMDP(P, gamma=gamma), np.ones((1, 3, 2)))


def two_states():
    """Average reward, S = 2: 5 non-zeros in P, 4 in P_pi. The uniform policy's system
    [[1/2, -3/4], [1, 1]] (last row replaced by ones) has no zero entry, so its LU, pivoted or
    not, is full: L stores 2 (unit diagonal) + 1 entries, U 3."""
    P = np.zeros((2, 2, 2))
    P[0, 0] = [1.0, 0.0]
    P[0, 1] = [0.0, 1.0]
    P[1, 0] = [0.5, 0.5]
    P[1, 1] = [1.0, 0.0]
    return Problem(TabularMDP(P, gamma=1.0), np.ones((1, 2, 2)))


@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_gmres_work_krylov_by_hand(gamma):
    # m = 2 steps: minimal 2 * 6 * 2 = 24; product 2 * 8 * 2 = 32; dense inverse 2 * 3^2 * 2 = 36;
    # Gram-Schmidt 4 * 1 * 3 + 4 * 2 * 3 = 36; full 32 + 36 + 36 = 104.
    work = gmres_work(PolicySampler(three_states(gamma), method="krylov"), 2)
    assert work == {"minimal": 24.0, "full": 104.0, "product": 32.0, "preconditioner": 36.0, "gram_schmidt": 36.0}


def test_gmres_work_sparse_by_hand():
    # m = 3 steps: minimal 2 * 4 * 3 = 24; product 2 * 5 * 3 = 30; ILU 2 * (3 + 3) * 3 = 36;
    # Gram-Schmidt 4 * 2 * (1 + 2 + 3) = 48; full 30 + 36 + 48 = 114.
    work = gmres_work(PolicySampler(two_states(), method="sparse"), 3)
    assert work == {"minimal": 24.0, "full": 114.0, "product": 30.0, "preconditioner": 36.0, "gram_schmidt": 48.0}


def test_gmres_work_at_a_mean_step_count_and_zero_steps():
    sampler = PolicySampler(three_states(1.0), method="krylov")
    assert gmres_work(sampler, 0) == {
        "minimal": 0.0,
        "full": 0.0,
        "product": 0.0,
        "preconditioner": 0.0,
        "gram_schmidt": 0.0,
    }
    # 1.5 steps: Gram-Schmidt 2 * 3 * 1.5 * 2.5 = 22.5 (between 1 step's 12 and 2 steps' 36).
    assert gmres_work(sampler, 1.5)["gram_schmidt"] == 22.5


def test_gmres_work_refuses_dense_and_bad_steps():
    with pytest.raises(InvalidProblemError, match="needs a GMRES sampler"):
        gmres_work(PolicySampler(three_states(0.9), method="dense"), 2)
    sampler = PolicySampler(three_states(0.9), method="krylov")
    for steps in (-1, float("nan"), float("inf")):
        with pytest.raises(InvalidProblemError, match="`steps` must be a non-negative number"):
            gmres_work(sampler, steps)
    with pytest.raises(InvalidProblemError, match="`steps` must be a real number"):
        gmres_work(sampler, "2")


def test_dense_work_by_hand():
    assert dense_work(3) == pytest.approx(18.0 + 18.0)  # (2/3) 27 + 2 * 9
    with pytest.raises(InvalidProblemError, match="`n_states`"):
        dense_work(0)


def test_matmul_peak_reports_median_min_max_and_loads():
    peak = matmul_peak(1, size=64, repeats=3)
    rates = peak["gflop_s"]
    assert 0 < rates["min"] <= rates["median"] <= rates["max"]
    assert len(peak["load_average"]) == 3 and all(len(pair) == 2 for pair in peak["load_average"])
    with pytest.raises(InvalidProblemError, match="`threads`"):
        matmul_peak(0)


def test_bench_sampler_reports_shares_of_the_peak(capsys):
    report = bench_sampler(
        n_sites=3,
        n_samples=200,
        baseline_samples=20,
        workers=2,
        repeats=1,
        methods=("dense", "krylov", "sparse"),
        peak_size=300,
        peak_repeats=3,
    )
    machine = report["machine"]
    assert machine["cpu_model"] and machine["logical_cpus"] >= 1 and machine["usable_cpus"] >= 1
    assert set(report["peaks"]) == {1, 2}
    assert set(report["baseline_per_s"]) == {"median", "min", "max"}
    assert len(report["baseline_load_average"]) == 1
    assert {(row["method"], row["workers"]) for row in report["rows"]} == {
        (method, workers) for method in ("dense", "krylov", "sparse") for workers in (1, 2)
    }
    for row in report["rows"]:
        assert row["peak_threads"] == row["workers"] and "kernel" in row
        assert row["per_s"]["min"] <= row["per_s"]["median"] <= row["per_s"]["max"]
        assert len(row["load_average"]) == 1 and len(row["load_average"][0]) == 2
        assert 0 < row["share_of_peak"]["full"] <= 1
        if row["method"] == "dense":
            assert row["share_of_peak"]["minimal"] is None and row["gflop_s"]["minimal"] is None
        else:
            assert 0 < row["share_of_peak"]["minimal"] <= row["share_of_peak"]["full"]
            assert row["gmres_steps_per_sample"] > 0
        assert row["max_abs_difference"] < 1e-9 and row["bitwise_equal_to_1_worker"]
    # Printing: one line per row plus the baseline, then the peaks and the load.
    text = format_sampler(report)
    assert "median (min-max) of 1 repeat" in text and machine["cpu_model"] in text
    assert "peak GFLOP/s (float64 300x300 matmul" in text and "1 thread" in text and "2 threads" in text
    assert len([line for line in text.splitlines() if line.startswith("  batched ")]) == 6


def test_bench_sampler_refuses_zero_repeats():
    with pytest.raises(InvalidProblemError, match="`repeats`"):
        bench_sampler(n_sites=3, n_samples=10, repeats=0)


def test_gmres_work_kronecker_by_hand():
    """Components of sizes 2 and 3 (S = 6), two actions, action 0 overriding component 0: per step
    2 A S weighting flops, and 2 m S per dense component product (base 2 and 3, override 2):
    2 * 6 * (2 + 2 + 3 + 2) = 108; Gram-Schmidt 2 S m (m + 1); no preconditioner."""
    from policyagg.kronecker import KroneckerTransitions

    kron = KroneckerTransitions([np.array([[0.75, 0.25], [0.25, 0.75]]), np.eye(3)], [{0: np.eye(2)}, {}])
    mdp = TabularMDP(kron.matrix(), gamma=0.9, n_actions=2, kronecker=kron)
    sampler = PolicySampler(Problem(mdp, np.ones((1, 6, 2))), method="kronecker", solver="gmres")
    work = gmres_work(sampler, 2.0)
    assert work["product"] == 2 * 108 and work["preconditioner"] == 0.0
    assert work["gram_schmidt"] == 2 * 6 * 2 * 3 and work["full"] == 216 + 72
    if importlib.util.find_spec("numba") is not None:  # BiCGSTAB: no basis, 12 S flops of vector work per product
        bicgstab = gmres_work(
            PolicySampler(Problem(mdp, np.ones((1, 6, 2))), method="kronecker", solver="bicgstab"), 2.0
        )
        assert bicgstab["product"] == 2 * 108 and bicgstab["gram_schmidt"] == 12 * 6 * 2
        assert bicgstab["full"] == 216 + 144
