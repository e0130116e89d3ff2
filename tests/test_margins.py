"""Completions keep a margin inside their rule's region (issue 13, item 4): the point is
strictly above every threshold when the region has an interior, so its ranks counted
strictly (no tie tolerance) reach what the rule reports."""

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_many_agents import random_problem

from policyagg import sample_returns, solvers
from policyagg.solvers.completion import MARGIN_CAP


def strict_ranks(returns, values):
    """``#{k : V[k, i] <= J_i} / N`` by direct comparison, no tie tolerance."""
    return (values <= returns[None, :]).mean(axis=0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_agents=st.sampled_from([2, 3, 5, 10]), n_actions=st.integers(2, 3), seed=st.integers(0, 2**32 - 1))
@example(n_agents=10, n_actions=2, seed=7816)  # a kept floor 6.2e-8 (of the range) short: within HiGHS's 1e-7
def test_max_quantile_point_is_strictly_inside(n_agents, n_actions, seed):
    problem = random_problem(n_agents, n_actions, seed)
    samples = sample_returns(problem, 300, measure="policy", rng=seed % 1000)
    for completion in ("egalitarian", "utilitarian"):
        result = solvers.max_quantile(problem, samples, completion=completion)
        q_star = result.diagnostics["q_star"]
        assert strict_ranks(result.returns, samples.values).min() >= q_star - 1e-12
        width = problem.require_ranges().width
        above = (result.returns - np.asarray(result.diagnostics["thresholds"])) / width
        margin = result.diagnostics["region_margin"]
        assert 0.0 <= margin <= MARGIN_CAP / 2
        # the floors the completion kept, to the LP's tolerance (HiGHS's primal feasibility, 1e-7; the
        # exact policy's returns differ from the LP's point by as much): the strict ranks above are the guarantee
        assert above.min() >= margin - 1e-7


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_agents=st.sampled_from([2, 3, 5]), seed=st.integers(0, 2**32 - 1), alpha=st.sampled_from([0.5, 0.8, 0.9]))
def test_approvers_approve_strictly(n_agents, seed, alpha):
    problem = random_problem(n_agents, 2, seed)
    samples = sample_returns(problem, 300, measure="policy", rng=seed % 1000)
    result = solvers.approval(problem, samples, alpha=alpha)
    approvers = np.asarray(result.diagnostics["approvers"], dtype=int)
    assert (strict_ranks(result.returns, samples.values)[approvers] >= alpha - 1e-12).all()


def test_margin_is_half_the_interior_up_to_the_cap():
    # one state, two actions, agents (1, 0) and (0, 1): thresholds 0.4 each leave an interior of 0.2
    from policyagg import Problem, TabularMDP
    from policyagg.solvers.completion import complete, threshold_rows
    from policyagg.solvers.occupancy import SolveLog

    problem = solvers.with_ranges(Problem(TabularMDP(np.ones((1, 2, 1)), gamma=0.5), np.eye(2)[:, None, :]))
    log = SolveLog("highs")
    d = complete(problem, [threshold_rows(problem, [0, 1], [0.4, 0.4], "floors")], how="utilitarian", log=log)
    assert log.region_margin == pytest.approx(MARGIN_CAP / 2)
    assert (problem.reward_matrix @ d >= 0.4 + MARGIN_CAP / 2 - 1e-9).all()
    log = SolveLog("highs")
    complete(problem, [threshold_rows(problem, [0, 1], [0.5, 0.5], "floors")], how="utilitarian", log=log)
    assert log.region_margin == pytest.approx(0.0, abs=1e-9)  # no interior: the floors stay
