"""Properties every registered rule must have, parametrised over ``solvers.RULES``."""

import numpy as np
import pytest
from conftest import NOT_PARETO, RULE_OPTIONS, assert_valid_result, leaky_average, random_problems
from hypothesis import given, settings

from policyagg import solvers
from policyagg.errors import InfeasibleError
from policyagg.lottery import Lottery
from policyagg.mdp import TabularMDP
from policyagg.polytope import budget, return_floor
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples
from policyagg.sampling import sample_policy_returns

#: Rules that rank policies by volume (their spec says they need samples): they read
#: preferences only through ranks, hence are invariant to a*r + b.
VOLUMETRIC = sorted(name for name, spec in solvers.RULE_SPECS.items() if spec.needs_samples)
RULES = sorted(solvers.RULES)
OPTIONS = RULE_OPTIONS


@pytest.mark.parametrize("name", RULES)
@settings(max_examples=10, deadline=None)
@given(problem=random_problems(gammas=(0.5, 0.9, 1.0)))
def test_every_rule_is_feasible_and_pareto_optimal(name, problem):
    problem = solvers.with_ranges(Problem(problem.mdp, problem.rewards))
    samples = sample_policy_returns(problem, 300, rng=0, progress=False)
    assert_valid_result(
        problem, solvers.get_rule(name)(problem, samples, **OPTIONS.get(name, {})), pareto=name not in NOT_PARETO
    )


@pytest.mark.parametrize("name", RULES)
def test_every_rule_names_itself_and_the_culprit_when_infeasible(name):
    problem = leaky_average()
    cost = np.zeros((2, 2))
    cost[1, :] = 1.0
    impossible = return_floor(problem.mdp, problem.rewards[1], 0.5) & budget(problem.mdp, cost, 0.3)
    samples = ReturnSamples(np.random.default_rng(0).uniform(size=(50, 2)))
    with pytest.raises(InfeasibleError, match=r"return floor\(>= 0.5\).*budget\(<= 0.3\)"):
        solvers.get_rule(name)(problem, samples, constraints=impossible, **OPTIONS.get(name, {}))


@pytest.mark.parametrize("name", RULES)
def test_every_rule_runs_on_both_backends(name):
    rng = np.random.default_rng(11)
    problem = solvers.with_ranges(
        Problem(TabularMDP(rng.dirichlet(np.ones(3), size=(3, 2)), gamma=0.8), rng.normal(size=(3, 3, 2)))
    )
    samples = sample_policy_returns(problem, 300, rng=0, progress=False)
    a = solvers.get_rule(name)(problem, samples, backend="highs", **OPTIONS.get(name, {}))
    b = solvers.get_rule(name)(problem, samples, backend="pulp", **OPTIONS.get(name, {}))
    assert (pareto_optimal(a) and pareto_optimal(b)) or name in NOT_PARETO
    assert b.diagnostics["backend"] == "pulp"


def pareto_optimal(outcome) -> bool:
    """A result is Pareto optimal; a lottery need not be ex ante (a mixture of the agents' optima
    rarely is), so for it: every policy it draws is."""
    if isinstance(outcome, Lottery):
        return outcome.report["ex_post"]["pareto_optimal_probability"] == 1.0
    return bool(outcome.report["pareto_optimal"])


def _affine_copy(problem, samples, agent, a, b):
    rewards = np.array(problem.rewards)
    rewards[agent] = a * rewards[agent] + b
    values = np.array(samples.values)
    values[:, agent] = a * values[:, agent] + b
    return Problem(problem.mdp, rewards, weights=problem.weights), ReturnSamples(values)


@pytest.mark.parametrize("name", VOLUMETRIC)
@settings(max_examples=10, deadline=None)
@given(problem=random_problems(gammas=(0.5, 0.9)))
def test_volumetric_rules_are_invariant_to_affine_rewards(name, problem):
    samples = sample_policy_returns(problem, 300, rng=0, progress=False)
    scaled, scaled_samples = _affine_copy(problem, samples, agent=0, a=7.5, b=-3.0)
    rule = solvers.get_rule(name)
    options = {"completion": "egalitarian"} | OPTIONS.get(name, {})
    before = rule(problem, samples, **options)
    after = rule(scaled, scaled_samples, **options)
    # the leximin completion's normalised returns are unique, so the outcome must coincide
    np.testing.assert_allclose(after.normalized, before.normalized, atol=1e-6)
    np.testing.assert_allclose(after.ranks, before.ranks)


def test_utilitarian_on_raw_returns_is_not_invariant():
    # bandit: agent 0 likes action 0 (scale 1), agent 1 likes action 1 (scale 3): utilitarian picks action 1;
    # scaling agent 0 by 10 flips the choice.
    mdp = TabularMDP(np.ones((1, 2, 1)), gamma=0.9)
    rewards = np.array([[[1.0, 0.0]], [[0.0, 3.0]]])
    before = solvers.utilitarian(Problem(mdp, rewards))
    rewards[0] *= 10.0
    after = solvers.utilitarian(Problem(mdp, rewards))
    assert not np.allclose(before.occupancy, after.occupancy)


def test_pareto_check_and_complete_on_a_dominated_point():
    # 1 state, 3 actions; action 2 is worse than action 0 for both agents
    mdp = TabularMDP(np.ones((1, 3, 1)), gamma=0.9)
    problem = solvers.with_ranges(Problem(mdp, np.array([[[1.0, 0.0, 0.5]], [[1.0, 2.0, 0.0]]])))
    dominated = np.array([[0.0, 0.5, 0.5]])  # returns (0.25, 1.0)
    optimal, gap = solvers.pareto_check(problem, dominated)
    # normalised sum 1.5 p0 + p1 + 0.5 p2 (widths 1 and 2) under J0 >= .25, J1 >= 1 is maximal at
    # p = (1, 0, 0): 1.5, against 0.75 now
    assert not optimal and gap == pytest.approx(0.75, abs=1e-7)
    lifted = solvers.pareto_complete(problem, dominated)
    assert (lifted.returns >= problem.returns(dominated) - 1e-9).all()
    np.testing.assert_allclose(lifted.returns, [1.0, 1.0], atol=1e-7)
    assert lifted.report["pareto_optimal"] and lifted.rule == "occupancy+pareto"
    assert solvers.pareto_check(problem, lifted) == (True, pytest.approx(0.0, abs=1e-9))
