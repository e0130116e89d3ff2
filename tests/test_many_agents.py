"""Leximin on many agents never calls a feasible problem infeasible (issue 13, item 1).

Random rewards on small MDPs with 20-50 agents used to fail: one round's solution violated an
agent floor by about the solver's feasibility tolerance and the next round was declared
infeasible. The regression instances below failed (InfeasibleError) before the fix.
"""

import numpy as np
import pytest
from conftest import assert_valid_result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import max_min

from policyagg import Problem, TabularMDP, sample_returns, solvers
from policyagg.errors import InfeasibleError
from policyagg.polytope import return_floor


def random_problem(n_agents: int, n_actions: int, seed: int, n_states: int = 4) -> Problem:
    """A random discounted MDP (each ``P(.|s, a)`` ~ Dirichlet(1)) and ``N(0, 1)`` rewards per agent."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
    mdp = TabularMDP(P, rho=np.full(n_states, 1.0 / n_states), gamma=0.9)
    return solvers.with_ranges(Problem(mdp, rng.normal(size=(n_agents, n_states, n_actions))))


# (n_agents, n_actions, seed): egalitarian raised InfeasibleError for normalize=True or False
EGALITARIAN_FAILURES = [(20, 2, 2), (20, 3, 5), (50, 3, 1)]
# (n_agents, n_actions, seed): max_quantile's egalitarian completion raised InfeasibleError
QUANTILE_FAILURES = [(20, 3, 0), (50, 2, 4)]


@pytest.mark.parametrize(("n_agents", "n_actions", "seed"), EGALITARIAN_FAILURES)
@pytest.mark.parametrize("normalize", [False, True])
def test_egalitarian_regressions(n_agents, n_actions, seed, normalize):
    problem = random_problem(n_agents, n_actions, seed)
    result = solvers.egalitarian(problem, normalize=normalize)
    assert_valid_result(problem, result)
    # the smallest utility is the independent LP's max-min
    R, mdp = problem.reward_matrix, problem.mdp
    if normalize:
        ranges = problem.require_ranges()
        expected = max_min(R, mdp.P_dense, mdp.rho, mdp.gamma, scale=ranges.width, offset=ranges.lower)
        assert result.normalized.min() == pytest.approx(expected, abs=1e-5)
    else:
        expected = max_min(R, mdp.P_dense, mdp.rho, mdp.gamma)
        assert result.returns.min() == pytest.approx(expected, abs=1e-6 * (1 + abs(expected)))


@pytest.mark.parametrize(("n_agents", "n_actions", "seed"), [(20, 3, 5), (20, 3, 6)])
@pytest.mark.parametrize("normalize", [False, True])
def test_egalitarian_regressions_with_cbc(n_agents, n_actions, seed, normalize):
    """With PuLP/CBC these raised InfeasibleError (20-3-5 raw; 20-3-6 both)."""
    problem = random_problem(n_agents, n_actions, seed)
    result = solvers.egalitarian(problem, normalize=normalize, backend="pulp")
    assert_valid_result(problem, result)
    expected = solvers.egalitarian(problem, normalize=normalize)  # HiGHS: the leximin vector is unique
    np.testing.assert_allclose(result.returns, expected.returns, atol=1e-5 * (1 + np.abs(expected.returns).max()))


@pytest.mark.parametrize(("n_agents", "n_actions", "seed"), QUANTILE_FAILURES)
def test_max_quantile_regressions(n_agents, n_actions, seed):
    problem = random_problem(n_agents, n_actions, seed)
    samples = sample_returns(problem, 5_000, measure="policy", rng=seed)
    result = solvers.max_quantile(problem, samples)
    assert_valid_result(problem, result)
    assert result.min_rank >= result.diagnostics["q_star"] - 1e-12


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_agents=st.sampled_from([1, 2, 5, 10, 20, 50]),
    n_actions=st.integers(2, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_spurious_infeasibility(n_agents, n_actions, seed):
    problem = random_problem(n_agents, n_actions, seed)
    samples = sample_returns(problem, 500, measure="policy", rng=seed % 1000)
    results = [solvers.egalitarian(problem, normalize=normalize) for normalize in (False, True)]
    results.append(solvers.max_quantile(problem, samples))
    if n_agents <= 20:
        results.append(solvers.proportional_veto_core(problem, samples))
    for result in results:
        assert_valid_result(problem, result)
        # a recovered round relaxes the fixed levels by no more than a few solver tolerances
        assert result.diagnostics.get("max_floor_violation", 0.0) < 1e-6


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_agents=st.sampled_from([20, 50]), n_actions=st.integers(2, 3), seed=st.integers(0, 2**32 - 1))
def test_no_spurious_infeasibility_many(n_agents, n_actions, seed):
    test_no_spurious_infeasibility.hypothesis.inner_test(n_agents, n_actions, seed)


def test_infeasible_user_constraints_still_raise():
    problem = random_problem(20, 2, 2)
    ranges = problem.require_ranges()
    # agent 0 above its best return: no policy does that, whatever the slack of the leximin
    above_best = ranges.upper[0] + 1e-3 * ranges.width[0]
    constraints = return_floor(problem.mdp, problem.rewards[0], above_best)
    for normalize in (False, True):
        with pytest.raises(InfeasibleError, match="return floor"):
            solvers.egalitarian(problem, normalize=normalize, constraints=constraints)
