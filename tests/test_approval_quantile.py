import itertools

import numpy as np
import pytest
from conftest import bandit, random_problems
from hypothesis import given, settings
from reference import dense_polytope
from scipy.optimize import linprog

from policyagg import solvers
from policyagg.errors import InvalidProblemError, InvalidSamplesError
from policyagg.mdp import TabularMDP
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples
from policyagg.sampling import sample_policy_returns
from policyagg.solvers.completion import MARGIN_CAP


def grid_samples(problem, steps=11):
    """Samples of the 2-action bandit at p = 0, 0.1, ..., 1 (d = (p, 1 - p))."""
    p = np.linspace(0.0, 1.0, steps)
    d = np.stack([p, 1 - p], axis=1)
    return ReturnSamples(d @ problem.reward_matrix.T)


def feasible(problem, agents, thresholds):
    """Independent check: is {d in O : J_i(d) >= t_i, i in agents} non-empty? (dense linprog)"""
    mdp = problem.mdp
    A_eq, b_eq = dense_polytope(mdp.P_dense, mdp.rho, mdp.gamma)
    R = problem.rewards.reshape(problem.n_agents, -1)[list(agents)]
    res = linprog(
        np.zeros(A_eq.shape[1]),
        A_ub=-R if len(agents) else None,
        b_ub=-np.asarray(thresholds) if len(agents) else None,
        A_eq=A_eq,
        b_eq=b_eq,
        bounds=(0, None),
        method="highs",
    )
    return res.status == 0


# ------------------------------------------------------------------ alpha-approval
@pytest.mark.parametrize(
    "alpha, weights, completion, expected",
    [
        # t = (0.9, 2.7): p >= .9 and p <= .1 cannot both hold; agent 0 (weight 2) wins; leximin in p >= .9
        (0.9, [2.0, 1.0], "egalitarian", [0.9, 0.3]),
        (0.9, [1.0, 2.0], "egalitarian", [0.1, 2.7]),
        # t = (0.5, 1.5): p = 1/2 exactly, both approve
        (0.5, [1.0, 1.0], "egalitarian", [0.5, 1.5]),
        (0.5, [1.0, 1.0], "utilitarian", [0.5, 1.5]),
    ],
)
def test_approval_by_hand(alpha, weights, completion, expected):
    problem = bandit(weights=weights)
    result = solvers.approval(problem, grid_samples(problem), alpha=alpha, completion=completion)
    # within the completion's margin (MARGIN_CAP / 2 of each range, widths 1 and 3) of the region's point
    np.testing.assert_allclose(result.returns, expected, atol=3 * MARGIN_CAP / 2 + 1e-7)


@settings(max_examples=15, deadline=None)
@given(random_problems(gammas=(0.5, 0.9, 1.0)))
def test_approval_matches_brute_force_over_approving_sets(problem):
    problem = solvers.with_ranges(problem)
    samples = sample_policy_returns(problem, 400, rng=0, progress=False)
    for alpha in (0.6, 0.95):
        result = solvers.approval(problem, samples, alpha=alpha)
        t = samples.threshold(alpha)
        best = max(
            problem.weights[list(S)].sum()
            for r in range(problem.n_agents + 1)
            for S in itertools.combinations(range(problem.n_agents), r)
            if feasible(problem, S, t[list(S)])
        )
        assert result.diagnostics["approval_weight"] == pytest.approx(best)
        # the approvers really approve the returned policy
        assert (result.ranks[result.diagnostics["approvers"]] >= alpha - 1e-12).all()
        assert result.report["pareto_optimal"]


@settings(max_examples=15, deadline=None)
@given(random_problems())
def test_approval_alpha_zero_is_utilitarian_and_alpha_one_has_an_approver(problem):
    problem = solvers.with_ranges(problem)
    samples = sample_policy_returns(problem, 200, rng=1, progress=False)
    zero = solvers.approval(problem, samples, alpha=0.0)
    util = solvers.utilitarian(problem, normalize=True)
    assert problem.weights @ zero.normalized == pytest.approx(problem.weights @ util.normalized, abs=1e-6)
    one = solvers.approval(problem, samples, alpha=1.0)
    assert len(one.diagnostics["approvers"]) >= 1


def test_approval_backends_agree():
    rng = np.random.default_rng(3)
    problem = solvers.with_ranges(
        Problem(TabularMDP(rng.dirichlet(np.ones(3), size=(3, 2)), gamma=0.8), rng.normal(size=(3, 3, 2)))
    )
    samples = sample_policy_returns(problem, 300, rng=0, progress=False)
    a = solvers.approval(problem, samples, alpha=0.8, backend="highs")
    b = solvers.approval(problem, samples, alpha=0.8, backend="pulp")
    assert a.diagnostics["approval_weight"] == b.diagnostics["approval_weight"]
    if a.diagnostics["approvers"] == b.diagnostics["approvers"]:  # tied approving sets complete differently
        assert a.normalized.sum() == pytest.approx(b.normalized.sum(), abs=1e-6)


def test_approval_rejects_bad_options():
    problem = bandit()
    with pytest.raises(InvalidProblemError, match=r"`alpha` must be a number in \[0, 1\]"):
        solvers.approval(problem, grid_samples(problem), alpha=1.5)
    with pytest.raises(InvalidSamplesError, match="'approval' ranks policies by volume and needs sampled returns"):
        solvers.approval(problem)
    with pytest.raises(InvalidProblemError, match="`completion` must be one of"):
        solvers.approval(problem, grid_samples(problem), completion="nash")


# ------------------------------------------------------------------- max-quantile
def test_max_quantile_by_hand():
    problem = bandit()
    result = solvers.max_quantile(problem, grid_samples(problem))
    # p = 1/2 gives both agents rank 6/11; any other p drops one of them
    assert result.diagnostics["q_star"] == pytest.approx(6 / 11)
    np.testing.assert_allclose(result.returns, [0.5, 1.5], atol=1e-7)
    assert result.min_rank == pytest.approx(6 / 11)


@settings(max_examples=15, deadline=None)
@given(random_problems())
def test_q_star_is_exact_on_the_sample_grid(problem):
    problem = solvers.with_ranges(problem)
    samples = sample_policy_returns(problem, 300, rng=2, progress=False)
    result = solvers.max_quantile(problem, samples)
    k = round(result.diagnostics["q_star"] * samples.n_samples)
    agents = range(problem.n_agents)
    if k > 0:
        assert feasible(problem, agents, samples.sorted_values[:, k - 1] - 1e-9)
    if k < samples.n_samples:
        assert not feasible(problem, agents, samples.sorted_values[:, k] + 1e-9)
    assert result.min_rank >= k / samples.n_samples - 1e-12
    assert result.report["pareto_optimal"]


@pytest.mark.parametrize("seed", range(6))
def test_q_star_at_least_one_over_e_under_the_uniform_measure(seed):
    """On a 1-state MDP the occupancy polytope is the action simplex and Dirichlet(1)
    policies are uniform on it, so the policy measure is the volume measure: the centroid
    gives every agent rank >= 1/e (Gruenbaum); q* can only be higher."""
    rng = np.random.default_rng(seed)
    A, n = int(rng.integers(2, 6)), int(rng.integers(2, 6))
    problem = solvers.with_ranges(Problem(TabularMDP(np.ones((1, A, 1)), gamma=0.9), rng.normal(size=(n, 1, A))))
    samples = sample_policy_returns(problem, 5000, rng=seed, progress=False)
    result = solvers.max_quantile(problem, samples)
    assert result.diagnostics["q_star"] >= 1 / np.e - 0.035


def test_max_quantile_backends_agree():
    rng = np.random.default_rng(4)
    problem = solvers.with_ranges(
        Problem(TabularMDP(rng.dirichlet(np.ones(3), size=(3, 2)), gamma=1.0), rng.normal(size=(3, 3, 2)))
    )
    samples = sample_policy_returns(problem, 500, rng=0, progress=False)
    a = solvers.max_quantile(problem, samples, backend="highs")
    b = solvers.max_quantile(problem, samples, backend="pulp")
    assert a.diagnostics["q_star"] == b.diagnostics["q_star"]
