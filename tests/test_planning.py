"""policyagg.planning: graph facts, stationary distributions, steering and policy iteration,
checked by hand and against the dense linprog of tests/reference.py."""

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import random_problems
from hypothesis import given, settings
from reference import lp_max

from policyagg import planning
from policyagg.errors import PolicyEvaluationError
from policyagg.mdp import TabularMDP


def _graph(edges, n):
    rows, cols = zip(*edges)
    return sp.csr_array((np.ones(len(edges)), (rows, cols)), shape=(n, n))


def test_graph_facts_by_hand():
    # 0 -> 1 <-> 2, 3 -> 3 (closed), 4 -> 0 (nobody enters 4)
    graph = _graph([(0, 1), (1, 2), (2, 1), (3, 3), (4, 0)], 5)
    assert [c.tolist() for c in planning.closed_classes(graph)] == [[1, 2], [3]]
    assert planning.reachable_from(graph, [0]).tolist() == [True, True, True, False, False]
    assert not planning.is_strongly_connected(graph)
    assert planning.is_strongly_connected(_graph([(0, 1), (1, 2), (2, 0)], 3))
    info = planning.graph_structure(graph, np.array([0.5, 0, 0, 0.5, 0]))
    assert info.unreachable.tolist() == [4] and len(info.closed_classes) == 2 and not info.communicating
    np.testing.assert_array_equal(planning.distances_to(graph, np.array([0, 0, 1, 0, 0], bool)), [2, 1, 0, np.inf, 3])


def test_stationary_distribution_and_cesaro_limit_by_hand():
    # two-state chain with flip probabilities a = 0.2, b = 0.3: pi = (b, a) / (a + b)
    P = sp.csr_array([[0.8, 0.2], [0.3, 0.7]])
    np.testing.assert_allclose(planning.stationary_distribution(P), [0.6, 0.4])
    # 0 -> {1 w.p. 1/4, 2 w.p. 3/4}, 1 and 2 absorbing: the limit from state 0 splits 1/4, 3/4
    Q = sp.csr_array([[0.0, 0.25, 0.75], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(planning.cesaro_limit(Q, np.array([1.0, 0, 0])), [0, 0.25, 0.75])


def test_steering_moves_every_state_closer():
    # a line 0 - 1 - 2 - 3; action 0 steps left, action 1 steps right
    S = 4
    P = np.zeros((S, 2, S))
    P[np.arange(S), 0, np.maximum(np.arange(S) - 1, 0)] = 1.0
    P[np.arange(S), 1, np.minimum(np.arange(S) + 1, S - 1)] = 1.0
    mdp = TabularMDP(P, gamma=0.9)
    far, action = planning.steering_actions(mdp.P, 2, mdp.union_graph, np.array([0, 0, 0, 1], bool))
    np.testing.assert_array_equal(far, [3, 2, 1, 0])
    assert action[:3].tolist() == [1, 1, 1]  # step right toward state 3


@settings(max_examples=20, deadline=None)
@given(problem=random_problems(max_states=6, max_actions=3, gammas=(0.5, 0.9, 1.0)))
def test_policy_iteration_reaches_the_lp_optimum_and_bounds_it(problem):
    mdp = problem.mdp
    c = problem.reward_matrix[0]
    found = planning.policy_iteration(mdp, c)
    expected, _ = lp_max(c, mdp.P_dense, mdp.rho, mdp.gamma)
    d = np.zeros((mdp.n_states, mdp.n_actions))
    d[np.arange(mdp.n_states), found.policy] = found.mu
    assert d.sum() == pytest.approx(1.0)
    assert (c @ d.ravel()) == pytest.approx(expected, abs=1e-8 * (1 + np.abs(c).max()))
    assert found.bound >= expected - 1e-8 * (1 + np.abs(c).max())


def test_evaluate_policy_matches_the_discounted_formula_and_flags_singular_systems():
    P = sp.csr_array([[0.8, 0.2], [0.3, 0.7]])
    c = np.array([1.0, -1.0])
    out = planning.evaluate_policy(P, c, gamma=0.9, rho=np.array([1.0, 0.0]))
    np.testing.assert_allclose(out.potential, np.linalg.solve(np.eye(2) - 0.9 * P.toarray(), c))
    np.testing.assert_allclose(out.mu, 0.1 * np.linalg.solve(np.eye(2) - 0.9 * P.toarray().T, [1.0, 0.0]))
    iterative = planning.evaluate_policy(P, c, gamma=0.9, rho=np.array([1.0, 0.0]), direct=False)
    np.testing.assert_allclose(iterative.potential, out.potential, atol=1e-10)
    two_classes = sp.csr_array(np.eye(2))  # average reward, multichain: the bordered system is singular
    with pytest.raises(PolicyEvaluationError):
        planning.evaluate_policy(two_classes, c, gamma=1.0, rho=np.array([0.5, 0.5]))


def test_make_unichain_steers_a_corridor_longer_than_its_attempts():
    # corridor 0..N (0 = left, 1 = right; the walls keep the state): left at 0, right elsewhere has
    # closed classes {0} and {N}; each steering step only moves the second one a step to the left,
    # so after UNICHAIN_ATTEMPTS steps the last (steer every other state) must be accepted
    from policyagg.planning import UNICHAIN_ATTEMPTS, PolicyIteration, closed_components

    N = UNICHAIN_ATTEMPTS + 4
    P = np.zeros((N + 1, 2, N + 1))
    for s in range(N + 1):
        P[s, 0, max(s - 1, 0)] = P[s, 1, min(s + 1, N)] = 1.0
    mdp = TabularMDP(P, gamma=1.0)
    c = np.zeros(2 * (N + 1))
    c[0] = 1.0  # (state 0, left): the class to keep
    policy = np.ones(N + 1, dtype=np.int64)
    policy[0] = 0
    planner = PolicyIteration(mdp)
    steered = planner.make_unichain(policy, c)
    assert closed_components(planner.transitions(steered))[1].size == 1
    assert steered[0] == 0 and (steered[1:] == 0).all()
