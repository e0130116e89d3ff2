"""Tiny named instances with hand-computed answers, and a hypothesis strategy for random MDPs."""

import os
import sys

# The tests exercise the *installed* package. `python -m pytest` puts the checkout's root on
# sys.path, where the folder policyagg/ would shadow the installation (without its
# subpackages envs, solvers, experiments, which live in other folders of the checkout).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _ROOT]

import numpy as np
import pytest
from hypothesis import strategies as st

from policyagg.lottery import Lottery
from policyagg.mdp import TabularMDP
from policyagg.problem import Problem


def bandit(gamma=0.9, rewards=((1.0, 0.0), (0.0, 3.0)), weights=None):
    """One state, two actions: d = (p, 1 - p). Agent 0 likes action 0, agent 1 action 1 (3x scale)."""
    mdp = TabularMDP(np.ones((1, 2, 1)), gamma=gamma)
    return Problem(mdp, np.asarray(rewards, float)[:, None, :], weights=weights)


def chain_discounted():
    """Two states, actions stay (0) / move (1) deterministically; rho = state 0, gamma = 1/2.

    Agent 0 is rewarded in state 1, agent 1 in state 0. Best for agent 0: move, then stay:
    mu = ((1 - gamma), gamma) = (1/2, 1/2), so max J_0 = 1/2 (discounted value 1).
    """
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[1, 0, 1] = 1.0  # stay
    P[0, 1, 1] = P[1, 1, 0] = 1.0  # move
    mdp = TabularMDP(P, rho=[1.0, 0.0], gamma=0.5)
    rewards = np.zeros((2, 2, 2))
    rewards[0, 1, :] = 1.0
    rewards[1, 0, :] = 1.0
    return Problem(mdp, rewards, names=("likes1", "likes0"))


def leaky_average():
    """Average reward. State 0: stay / move to 1. State 1: 'stay' keeps it w.p. 1/2 else back
    to 0; 'move' goes to 0. Agent 0 is rewarded in state 0, agent 1 in state 1.

    The most time in state 1 is 2/3 (move at 0, stay at 1: mu_1 = mu_0 + mu_1 / 2), so
    J_0 in [1/3, 1] and J_1 in [0, 2/3].
    """
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = 1.0
    P[0, 1, 1] = 1.0
    P[1, 0, 1] = P[1, 0, 0] = 0.5
    P[1, 1, 0] = 1.0
    mdp = TabularMDP(P, gamma=1.0)
    rewards = np.zeros((2, 2, 2))
    rewards[0, 0, :] = 1.0
    rewards[1, 1, :] = 1.0
    return Problem(mdp, rewards)


def assert_valid_result(problem, result, *, pareto=True):
    """A rule's result is a feasible occupancy whose policy re-evaluates to its returns
    and, by default, is Pareto optimal. A lottery: every support policy is, and the
    ex-ante returns are the probability-weighted support returns."""
    if isinstance(result, Lottery):
        for k in range(result.size):
            assert problem.polytope.violation(result.support_occupancies[k]) < 1e-7
            reevaluated = problem.mdp.evaluate(result.support_policies[k], problem.rewards)
            atol = 1e-6 * (1.0 + np.abs(problem.rewards).max())
            np.testing.assert_allclose(reevaluated, result.support_returns[k], atol=atol)
        np.testing.assert_allclose(result.returns, result.probabilities @ result.support_returns, atol=1e-12)
        if pareto:
            assert result.report["ex_post"]["pareto_optimal_probability"] == 1.0, result.report
        return
    assert problem.polytope.violation(result.occupancy) < 1e-7
    reevaluated = problem.mdp.evaluate(result.policy, problem.rewards)
    np.testing.assert_allclose(reevaluated, result.returns, atol=1e-6 * (1.0 + np.abs(problem.rewards).max()))
    if pareto:
        assert result.report["pareto_optimal"], result.report


#: Options so that every registered rule answers on any instance (Borda's LP needs a
#: non-empty concave region; the fallback is opt-in).
RULE_OPTIONS = {"borda": {"fallback": "milp"}}
#: Rules whose default output is deliberately not Pareto optimal: entropy regularisation trades
#: the agents' returns for a broader (stochastic) policy.
NOT_PARETO = frozenset({"entropy_regularized"})


@pytest.fixture
def leaky():
    return leaky_average()


@st.composite
def random_problems(draw, max_states=4, max_actions=3, max_agents=3, gammas=(0.5, 0.9, 1.0)):
    """Random small problems. With gamma = 1 every transition has positive probability
    (every policy is then unichain, so occupancy <-> policy is one-to-one)."""
    S = draw(st.integers(1, max_states))
    A = draw(st.integers(1, max_actions))
    n = draw(st.integers(1, max_agents))
    gamma = draw(st.sampled_from(gammas))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    if gamma < 1.0:
        P = P * (rng.random((S, A, S)) < 0.6)
        P[np.arange(S), :, rng.integers(S, size=S)] += 0.1  # each row keeps some mass
        P /= P.sum(axis=2, keepdims=True)
    rho = rng.dirichlet(np.ones(S))
    rewards = rng.normal(size=(n, S, A)) * rng.uniform(0.1, 10.0, size=(n, 1, 1))
    return Problem(TabularMDP(P, rho=rho, gamma=gamma), rewards, weights=rng.uniform(0.5, 2.0, size=n))
