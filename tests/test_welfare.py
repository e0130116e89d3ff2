import numpy as np
import pytest
from conftest import RULE_OPTIONS, assert_valid_result, bandit, chain_discounted, leaky_average, random_problems
from hypothesis import given, settings
from reference import lp_max, max_min

from policyagg import solvers
from policyagg.errors import InfeasibleError, InvalidProblemError
from policyagg.polytope import budget, forbid, return_floor
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples

# ------------------------------------------------- (rule, instance, options, expected returns)
CASES = [
    ("egalitarian", bandit, {}, [0.75, 0.75]),  # p = 3 (1 - p)
    ("egalitarian", bandit, {"normalize": True}, [0.5, 1.5]),  # p = 1 - p
    ("utilitarian", lambda: bandit(weights=[4.0, 1.0]), {}, [1.0, 0.0]),  # 4 p + 3 (1 - p)
    ("utilitarian", bandit, {}, [0.0, 3.0]),
    ("egalitarian", leaky_average, {}, [0.5, 0.5]),
    ("egalitarian", leaky_average, {"normalize": True}, [2 / 3, 1 / 3]),  # mu0 - 1/3 = mu1 = 1 - mu0
    ("utilitarian", chain_discounted, {}, None),  # welfare 1 everywhere: any point; checked below
]


@pytest.mark.parametrize("backend", ["highs", "pulp"])
@pytest.mark.parametrize("rule, instance, options, expected", CASES)
def test_hand_computed(rule, instance, options, expected, backend):
    problem = instance()
    result = solvers.get_rule(rule)(problem, backend=backend, **options)
    if expected is None:
        assert result.returns.sum() == pytest.approx(1.0, abs=1e-7)
    else:
        np.testing.assert_allclose(result.returns, expected, atol=1e-6)
    assert result.rule == rule and result.diagnostics["backend"] == backend


def test_return_ranges_by_hand():
    ranges = solvers.return_ranges(leaky_average())
    np.testing.assert_allclose(ranges.lower, [1 / 3, 0.0], atol=1e-9)
    np.testing.assert_allclose(ranges.upper, [1.0, 2 / 3], atol=1e-9)
    ranges = solvers.return_ranges(chain_discounted())
    np.testing.assert_allclose(ranges.upper, [0.5, 1.0], atol=1e-9)  # move then stay; stay forever


@settings(max_examples=40, deadline=None)
@given(random_problems(max_states=5, max_agents=3))
def test_return_ranges_equal_the_lp(problem):
    """Policy iteration's certified optima against the dense LP of tests/reference.py
    (discounted, average-reward and multichain random MDPs)."""
    ranges = solvers.return_ranges(problem)
    mdp, R = problem.mdp, problem.reward_matrix
    for i in range(problem.n_agents):
        top, _ = lp_max(R[i], mdp.P_dense, mdp.rho, mdp.gamma)
        bottom, _ = lp_max(-R[i], mdp.P_dense, mdp.rho, mdp.gamma)
        scale = 1e-7 * (1.0 + np.abs(R[i]).max())
        assert ranges.upper[i] == pytest.approx(top, abs=scale)
        assert ranges.lower[i] == pytest.approx(-bottom, abs=scale)
        for point, value in ((ranges.best[i], top), (ranges.worst[i], -bottom)):
            assert problem.polytope.violation(point) < 1e-8
            assert R[i] @ point == pytest.approx(value, abs=scale)


def test_leximin_goes_beyond_the_minimum():
    # Three agents: a1 and a2 are in conflict with each other, a0 can be raised on top.
    # Bandit with three actions: rewards chosen so max-min fixes agents 1, 2 at 0.5 and
    # leximin then raises agent 0 on the remaining freedom.
    mdp = bandit().mdp.__class__(np.ones((1, 4, 1)), gamma=0.9)
    rewards = np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]])[:, None, :]
    result = solvers.egalitarian(Problem(mdp, rewards))
    # max-min = 1/2 for agents 1, 2 (they split); agent 0 gets all mass on actions 2, 3 -> 1
    np.testing.assert_allclose(result.returns, [1.0, 0.5, 0.5], atol=1e-6)


def test_constraints_are_honoured():
    problem = leaky_average()
    mdp = problem.mdp
    # forbid 'move' in state 0: the chain stays in state 0 forever
    result = solvers.utilitarian(problem, constraints=forbid(mdp, 0, 1))
    np.testing.assert_allclose(result.returns, [1.0, 0.0], atol=1e-9)
    # a floor on agent 1 and a budget: time in state 1 at least 0.25, at most 0.3
    cost = np.zeros((2, 2))
    cost[1, :] = 1.0
    both = return_floor(mdp, problem.rewards[1], 0.25) & budget(mdp, cost, 0.3)
    result = solvers.egalitarian(problem, constraints=both)
    np.testing.assert_allclose(result.returns, [0.7, 0.3], atol=1e-6)
    with pytest.raises(InfeasibleError, match=r"budget"):
        solvers.utilitarian(problem, constraints=return_floor(mdp, problem.rewards[1], 0.5) & budget(mdp, cost, 0.3))


def test_constraints_in_problem_apply_to_every_rule():
    problem = leaky_average()
    constrained = Problem(problem.mdp, problem.rewards, constraints=forbid(problem.mdp, 0, 1))
    samples = ReturnSamples(np.random.default_rng(0).uniform(size=(50, 2)))
    for name, rule in solvers.RULES.items():
        if name == "pvc":  # its veto region comes from samples of the whole polytope: may miss the one point
            with pytest.raises(InfeasibleError, match="proportional veto core.*veto thresholds"):
                rule(constrained, samples)
            continue
        np.testing.assert_allclose(
            rule(constrained, samples, **RULE_OPTIONS.get(name, {})).returns, [1.0, 0.0], atol=1e-7
        )


def test_ranks_from_user_samples():
    problem = bandit()
    values = np.column_stack([np.linspace(0, 1, 11), 3 * np.linspace(1, 0, 11)])  # p = 0, .1, ..., 1
    result = solvers.egalitarian(problem, ReturnSamples(values))
    # p* = 0.75: agent 0 has J = .75 -> samples 0..0.7 below (8/11); agent 1 J = .75 -> 3(1-p) <= .75 iff p >= .75 (3/11)
    np.testing.assert_allclose(result.ranks, [8 / 11, 3 / 11])
    assert result.min_rank == pytest.approx(3 / 11)


def test_egalitarian_with_unequal_weights_needs_normalize():
    with pytest.raises(InvalidProblemError, match="needs `normalize=True`"):
        solvers.egalitarian(bandit(weights=[1.0, 2.0]))
    # entitlements: u_1 = 2 u_0 on normalised returns: 1 - p = 2 p
    result = solvers.egalitarian(bandit(weights=[1.0, 2.0]), normalize=True)
    np.testing.assert_allclose(result.normalized, [1 / 3, 2 / 3], atol=1e-6)


def test_unknown_rule_and_backend():
    with pytest.raises(
        InvalidProblemError, match="unknown rule 'condorcet'; choose one of: .*egalitarian.*utilitarian"
    ):
        solvers.get_rule("condorcet")
    with pytest.raises(InvalidProblemError, match=r"`backend` must be one of highs, pulp"):
        solvers.utilitarian(bandit(), backend="gurobi")


# ------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None)
@given(random_problems())
def test_utilitarian_is_optimal_and_feasible(problem):
    result = solvers.utilitarian(problem)
    assert_valid_result(problem, result)
    c = problem.weights @ problem.rewards.reshape(problem.n_agents, -1)
    best, _ = lp_max(c, problem.mdp.P_dense, problem.mdp.rho, problem.mdp.gamma)
    welfare = problem.weights @ result.returns
    assert welfare == pytest.approx(best, abs=1e-6 * (1 + abs(best)))
    # at least every agent-optimal policy's welfare
    for i in range(problem.n_agents):
        _, d_i = lp_max(problem.rewards[i].ravel(), problem.mdp.P_dense, problem.mdp.rho, problem.mdp.gamma)
        assert welfare >= problem.weights @ (problem.rewards.reshape(problem.n_agents, -1) @ d_i) - 1e-6 * (
            1 + abs(best)
        )


@settings(max_examples=25, deadline=None)
@given(random_problems())
def test_leximin_minimum_equals_max_min(problem):
    problem = Problem(problem.mdp, problem.rewards)  # equal weights for raw returns
    result = solvers.egalitarian(problem)
    assert_valid_result(problem, result)
    R = problem.rewards.reshape(problem.n_agents, -1)
    expected = max_min(R, problem.mdp.P_dense, problem.mdp.rho, problem.mdp.gamma)
    assert result.returns.min() == pytest.approx(expected, abs=1e-6 * (1 + abs(expected)))


@settings(max_examples=20, deadline=None)
@given(random_problems())
def test_normalised_leximin_with_weights(problem):
    result = solvers.egalitarian(problem, normalize=True)
    assert_valid_result(problem, result)
    R = problem.rewards.reshape(problem.n_agents, -1)
    lo = np.array([-lp_max(-r, problem.mdp.P_dense, problem.mdp.rho, problem.mdp.gamma)[0] for r in R])
    hi = np.array([lp_max(r, problem.mdp.P_dense, problem.mdp.rho, problem.mdp.gamma)[0] for r in R])
    keep = hi - lo > 1e-6
    if not keep.any():
        return
    w = problem.weights[keep]
    expected = max_min(
        R[keep], problem.mdp.P_dense, problem.mdp.rho, problem.mdp.gamma, scale=(hi - lo)[keep] * w, offset=lo[keep]
    )
    got = (result.normalized[keep] / w).min()
    assert got == pytest.approx(expected, abs=1e-5)


def test_backends_agree_on_random_problems():
    rng = np.random.default_rng(5)
    for _ in range(5):
        S, A, n = 4, 3, 3
        from policyagg.mdp import TabularMDP

        mdp = TabularMDP(rng.dirichlet(np.ones(S), size=(S, A)), gamma=0.8)
        problem = Problem(mdp, rng.normal(size=(n, S, A)))
        for rule in (solvers.utilitarian, solvers.egalitarian):
            for normalize in (False, True):
                a = rule(problem, normalize=normalize, backend="highs")
                b = rule(problem, normalize=normalize, backend="pulp")
                if rule is solvers.egalitarian:  # the leximin utility vector is unique
                    np.testing.assert_allclose(a.returns, b.returns, atol=1e-5)
                else:  # optima may tie: compare welfare
                    welfare = [(r.normalized if normalize else r.returns).sum() for r in (a, b)]
                    assert welfare[0] == pytest.approx(welfare[1], abs=1e-6)


def test_problem_copies_user_arrays():
    rewards = np.zeros((1, 1, 2))
    weights = np.ones(1)
    problem = Problem(bandit().mdp, rewards, weights=weights)
    rewards[0, 0, 0] = 5.0  # the caller's arrays stay writable and the problem keeps its copy
    weights[0] = 2.0
    assert problem.rewards[0, 0, 0] == 0.0 and problem.weights[0] == 1.0
