"""Many agents and any reward scale (issue 13): leximin never calls a feasible problem
infeasible, and every rule stays exact and Pareto optimal from 1 to 100 agents.

The regression instances below raised ``InfeasibleError`` before the leximin kept its fixed
floors with a priced slack: one round's solution met an agent floor only to the solver's
tolerance, later rounds used up the fixed slack, and the next round was declared infeasible.
"""

import numpy as np
import pytest
from conftest import assert_valid_result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import max_min, ordered_leximin, pareto_gap

from policyagg import Problem, TabularMDP, sample_returns, solvers
from policyagg.errors import InfeasibleError
from policyagg.lottery import Lottery
from policyagg.polytope import return_floor


def random_problem(n_agents: int, n_actions: int, seed: int, n_states: int = 4, gamma: float = 0.9) -> Problem:
    """A random MDP (each ``P(.|s, a)`` ~ Dirichlet(1), uniform start) and ``N(0, 1)`` rewards per agent."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
    mdp = TabularMDP(P, rho=np.full(n_states, 1.0 / n_states), gamma=gamma)
    return solvers.with_ranges(Problem(mdp, rng.normal(size=(n_agents, n_states, n_actions))))


def independent_leximin(problem: Problem, normalize: bool) -> np.ndarray:
    """The sorted leximin vector by Ogryczak's ordered outcomes (``tests/reference.py``)."""
    mdp, ranges = problem.mdp, problem.require_ranges()
    if normalize:
        return ordered_leximin(problem.reward_matrix, mdp.P_dense, mdp.rho, mdp.gamma, ranges.width, ranges.lower)
    return ordered_leximin(problem.reward_matrix, mdp.P_dense, mdp.rho, mdp.gamma)


def assert_pareto_optimal(problem: Problem, result) -> None:
    """Pareto optimality by the dense LP of ``tests/reference.py`` (not the library's check)."""
    mdp, ranges = problem.mdp, problem.require_ranges()
    width = np.where(ranges.flat, 1.0, ranges.width)
    assert pareto_gap(problem.reward_matrix, mdp.P_dense, mdp.rho, mdp.gamma, result.returns, width) < 1e-5


# (n_agents, n_actions, seed) that raised InfeasibleError before, by mode
RAW_FAILURES = [(20, 2, 3), (20, 2, 6), (20, 3, 19), (50, 3, 2)]
NORMALISED_FAILURES = [(20, 2, 2), (20, 3, 5), (50, 3, 1), (50, 2, 18)]
QUANTILE_FAILURES = [(20, 3, 0), (20, 2, 15), (50, 2, 0)]


@pytest.mark.parametrize(
    ("n_agents", "n_actions", "seed", "normalize"),
    [(*case, False) for case in RAW_FAILURES] + [(*case, True) for case in NORMALISED_FAILURES],
)
def test_egalitarian_regressions(n_agents, n_actions, seed, normalize):
    problem = random_problem(n_agents, n_actions, seed)
    result = solvers.egalitarian(problem, normalize=normalize)
    assert_valid_result(problem, result)
    assert_pareto_optimal(problem, result)
    R, mdp, ranges = problem.reward_matrix, problem.mdp, problem.require_ranges()
    if normalize:
        expected = max_min(R, mdp.P_dense, mdp.rho, mdp.gamma, scale=ranges.width, offset=ranges.lower)
        assert result.normalized.min() == pytest.approx(expected, abs=1e-7)
    else:
        assert result.returns.min() == pytest.approx(max_min(R, mdp.P_dense, mdp.rho, mdp.gamma), abs=1e-7)
    assert 0.0 <= result.diagnostics["max_floor_violation"] < 1e-5


@pytest.mark.parametrize(("n_agents", "n_actions", "seed"), QUANTILE_FAILURES)
def test_max_quantile_regressions(n_agents, n_actions, seed):
    problem = random_problem(n_agents, n_actions, seed)
    samples = sample_returns(problem, 500, measure="policy", rng=seed)
    result = solvers.max_quantile(problem, samples)
    assert_valid_result(problem, result)
    assert_pareto_optimal(problem, result)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_agents=st.sampled_from([1, 2, 5, 10, 20]),
    n_actions=st.integers(2, 3),
    seed=st.integers(0, 2**32 - 1),
    normalize=st.booleans(),
)
def test_leximin_equals_ordered_outcomes(n_agents, n_actions, seed, normalize):
    """The whole sorted vector, not only its minimum, against a different formulation."""
    problem = random_problem(n_agents, n_actions, seed)
    result = solvers.egalitarian(problem, normalize=normalize)
    got = np.sort(result.normalized if normalize else result.returns)
    expected = independent_leximin(problem, normalize)
    assert got[0] == pytest.approx(expected[0], abs=1e-7)
    np.testing.assert_allclose(got, expected, atol=1e-7)


def check_no_false_infeasibility(n_agents, n_actions, seed):
    problem = random_problem(n_agents, n_actions, seed)
    samples = sample_returns(problem, 500, measure="policy", rng=seed % 1000)
    results = [solvers.egalitarian(problem, normalize=normalize) for normalize in (False, True)]
    results += [solvers.max_quantile(problem, samples), solvers.proportional_veto_core(problem, samples)]
    for result in results:
        assert_valid_result(problem, result)
        assert_pareto_optimal(problem, result)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_agents=st.sampled_from([1, 2, 5, 10, 20, 50, 100]),
    n_actions=st.integers(2, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_false_infeasibility(n_agents, n_actions, seed):
    check_no_false_infeasibility(n_agents, n_actions, seed)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_agents=st.sampled_from([20, 50, 100]), n_actions=st.integers(2, 3), seed=st.integers(0, 2**32 - 1))
def test_no_false_infeasibility_many(n_agents, n_actions, seed):
    check_no_false_infeasibility(n_agents, n_actions, seed)


def test_infeasible_user_constraints_still_raise():
    problem = random_problem(20, 2, 2)
    ranges = problem.require_ranges()
    # agent 0 above its best return: no slack of the leximin may hide that
    constraints = return_floor(problem.mdp, problem.rewards[0], ranges.upper[0] + 1e-3 * ranges.width[0])
    for normalize in (False, True):
        with pytest.raises(InfeasibleError, match="return floor"):
            solvers.egalitarian(problem, normalize=normalize, constraints=constraints)


# ------------------------------------------------------------------ one scale for everything (item 6)
SCALE_RULES = {
    "utilitarian": {},
    "egalitarian": {},
    "approval": {"alpha": 0.8},
    "borda": {"fallback": "milp"},
    "max_quantile": {},
    "proportional_veto_core": {},
    "nash_welfare": {},
    "random_dictator": {},
    "generalized_gini": {},
    "nash_bargaining": {"status_quo": "uniform"},
    "kalai_smorodinsky": {"status_quo": "uniform"},
    "egalitarian_gains": {"status_quo": "uniform"},
    # lotteries (ex-ante returns compared; their mixtures need not be Pareto optimal ex ante)
    "proportional": {},
    "conditional_utilitarian": {},
    "max_nash_welfare_lottery": {},
    "thompson": {"draws": 20},
    # Bayesian rules read normalised rewards as votes
    "bayes_map": {},
    "bayes_meu": {},
    "bayes_robust": {"draws": 20},
}


@pytest.mark.parametrize("exponent", [-12, -9, -6, -3, 3, 6, 9, 12])
def test_rewards_scaled_by_any_power_of_ten_give_the_same_normalised_results(exponent):
    """Rewards and samples times 10^k: the same normalised returns for every rule (README's promise)."""
    from policyagg import ReturnSamples

    base = random_problem(5, 2, seed=exponent % 7)
    samples = sample_returns(base, 300, measure="policy", rng=0)
    factor = 10.0**exponent
    scaled = solvers.with_ranges(Problem(base.mdp, base.rewards * factor))
    scaled_samples = ReturnSamples(samples.values * factor, measure="policy")
    assert not scaled.require_ranges().flat.any()
    for rule, options in SCALE_RULES.items():
        expected = getattr(solvers, rule)(base, samples, **options)
        got = getattr(solvers, rule)(scaled, scaled_samples, **options)
        np.testing.assert_allclose(got.normalized, expected.normalized, atol=1e-6, err_msg=rule)
        if not isinstance(got, Lottery):
            assert got.report["pareto_optimal"], rule


def test_a_constant_reward_is_flat_at_any_scale_and_a_tiny_one_is_not():
    problem = random_problem(3, 2, seed=1)
    rewards = problem.rewards.copy()
    rewards[0] = 1e-12 * rewards[0]  # tiny but informative
    rewards[1] = 5e-13  # constant: indifferent
    ranges = solvers.with_ranges(Problem(problem.mdp, rewards)).require_ranges()
    assert ranges.flat.tolist() == [False, True, False]


@pytest.mark.parametrize("one_minus_gamma", [1e-4, 1e-6, 1e-9, 1e-12])
def test_discounts_near_one_are_solved(one_minus_gamma):
    """A discount in (0, 1) is solved for every value (the polytope stays bounded)."""
    problem = random_problem(5, 2, seed=0, gamma=1.0 - one_minus_gamma)
    samples = sample_returns(problem, 300, measure="policy", rng=0)
    for rule in ("utilitarian", "egalitarian", "max_quantile", "approval", "proportional_veto_core"):
        result = getattr(solvers, rule)(problem, samples)
        assert problem.polytope.violation(result.occupancy) < 1e-7, rule
        assert abs(result.occupancy.sum() - 1.0) < 1e-9, rule
        assert_pareto_optimal(problem, result)
