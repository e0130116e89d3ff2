import numpy as np
import pytest
import scipy.sparse as sp
from conftest import chain_discounted, leaky_average, random_problems
from hypothesis import given, settings
from reference import occupancy_by_dense_solve

from policyagg.errors import InvalidMDPError
from policyagg.mdp import StructureWarning, TabularMDP


def two_state_P():
    P = np.zeros((2, 2, 2))
    P[:, 0, 0] = 1.0
    P[:, 1, 1] = 1.0
    return P


# --------------------------------------------------------------------- hand-computed
def test_chain_discounted_occupancy_by_hand():
    mdp = chain_discounted().mdp
    always_move = np.array([[0.0, 1.0], [0.0, 1.0]])
    # alternating 0,1,0,...: mu_0 = (1 - g) / (1 - g^2) = 1 / (1 + g) = 2/3
    np.testing.assert_allclose(mdp.state_occupancy(always_move), [2 / 3, 1 / 3])
    move_then_stay = np.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(mdp.occupancy(move_then_stay), [[0, 0.5], [0.5, 0]])
    rewards = chain_discounted().rewards
    # agent 'likes1': discounted value gamma / (1 - gamma) = 1, per step J = 1/2
    np.testing.assert_allclose(mdp.evaluate(move_then_stay, rewards), [0.5, 0.5])


def test_leaky_average_reward_occupancy_by_hand():
    mdp = leaky_average().mdp
    move_then_stay = np.array([[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(mdp.state_occupancy(move_then_stay), [1 / 3, 2 / 3])


def test_average_reward_cesaro_limit_with_two_recurrent_classes():
    # state 0 transient: goes to 1 or 2 w.p. 1/4, 3/4; states 1 and 2 absorbing under this policy
    P = np.zeros((3, 2, 3))
    P[0, 0] = [0, 0.25, 0.75]
    P[0, 1] = [1, 0, 0]
    P[1, 0, 1] = P[2, 0, 2] = 1.0
    P[1, 1, 0] = P[2, 1, 0] = 1.0
    mdp = TabularMDP(P, rho=[1, 0, 0], gamma=1.0)
    policy = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(mdp.state_occupancy(policy), [0, 0.25, 0.75])


def test_sparse_and_dense_inputs_agree():
    P = two_state_P()
    dense = TabularMDP(P, gamma=0.9)
    sparse = TabularMDP(sp.csr_array(P.reshape(4, 2)), gamma=0.9, n_actions=2)
    assert (dense.P != sparse.P).nnz == 0
    assert dense.n_states == sparse.n_states == 2 and dense.n_actions == 2


def test_rows_within_tolerance_are_renormalised():
    P = two_state_P()
    P[0, 0, 0] = 1 + 1e-10
    mdp = TabularMDP(P, gamma=0.9)
    assert np.allclose(mdp.P.sum(axis=1), 1.0, atol=1e-15)


# ----------------------------------------------------------------------- structure
def test_structure_reports_unreachable_states():
    P = np.zeros((3, 1, 3))
    P[0, 0, 1] = P[1, 0, 0] = 1.0
    P[2, 0, 0] = 1.0  # state 2 leads in but is never entered
    mdp = TabularMDP(P, rho=[1, 0, 0], gamma=0.9)
    info = mdp.structure
    assert info.unreachable.tolist() == [2]
    assert not info.communicating
    assert len(info.closed_classes) == 1
    assert "unreachable" in info.describe()


def test_average_reward_refuses_multiple_closed_classes():
    with pytest.raises(InvalidMDPError, match="2 closed classes.*allow_multichain"):
        TabularMDP(two_state_P() * 0 + np.eye(2)[:, None, :], gamma=1.0)


def test_average_reward_multichain_allowed_with_warning():
    with pytest.warns(StructureWarning, match="closed classes"):
        TabularMDP(np.repeat(np.eye(2)[:, None, :], 2, axis=1), gamma=1.0, allow_multichain=True)


def test_average_reward_warns_when_not_communicating():
    P = np.zeros((2, 1, 2))
    P[0, 0, 1] = P[1, 0, 1] = 1.0  # state 0 is transient for every policy
    with pytest.warns(StructureWarning, match="not communicating"):
        TabularMDP(P, gamma=1.0)


def test_communicating_average_reward_mdp_is_quiet(recwarn):
    leaky_average()
    assert not [w for w in recwarn if issubclass(w.category, StructureWarning)]


# ------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"P": np.ones((2, 2))}, r"dense `P` must have shape \(S, A, S\)"),
        ({"P": np.ones((2, 1, 3)) / 3}, r"dense `P` must have shape"),
        ({"P": sp.csr_array(np.eye(2))}, r"`n_actions` is required"),
        ({"P": sp.csr_array(np.ones((3, 2)) / 2), "n_actions": 2}, r"sparse `P` must have shape \(S\*A, S\)"),
        ({"P": np.ones((1, 2, 1)), "n_actions": 3}, r"`n_actions`=3 does not match"),
        ({"P": np.zeros((0, 1, 0))}, r"at least one state"),
        ({"P": np.array([[[np.nan, 1.0]], [[0.0, 1.0]]])}, r"non-finite probability at \(state, action\) = \(0, 0\)"),
        ({"P": np.array([[[-0.5, 1.5]], [[0.0, 1.0]]])}, r"negative probability at \(state, action\) = \(0, 0\)"),
        ({"P": np.array([[[0.5, 0.6]], [[0.0, 1.0]]])}, r"\(state, action\) = \(0, 0\) sums to 1.1"),
        ({"P": np.ones((1, 1, 1)), "gamma": 0.0}, r"`gamma` must be in \(0, 1\]"),
        ({"P": np.ones((1, 1, 1)), "gamma": 1.5}, r"`gamma` must be in \(0, 1\]"),
        ({"P": np.ones((1, 1, 1)), "gamma": "high"}, r"`gamma` must be a real number; got 'high'"),
        ({"P": np.ones((1, 1, 1)), "gamma": "0.9"}, r"`gamma` must be a real number; got '0.9' \(str\)"),
        ({"P": np.ones((1, 1, 1)), "gamma": True}, r"`gamma` must be a real number; got True \(bool\)"),
        ({"P": [[["a"]]]}, r"`P` must be an array of numbers of one shape"),
        ({"P": [[[1.0], [0.5, 0.5]]]}, r"`P` must be an array of numbers of one shape"),
        ({"P": np.ones((1, 1, 1), dtype=complex)}, r"`P` must be real; got a complex array"),
        ({"P": sp.csr_array(np.ones((1, 1), dtype=complex)), "n_actions": 1}, r"`P` must be real"),
        ({"P": np.ones((1, 1, 1)), "rho": [0.5, 0.5]}, r"`rho` must have shape \(S,\) = \(1,\)"),
        ({"P": np.ones((2, 1, 2)) / 2, "rho": [np.inf, 0]}, r"`rho` has a non-finite entry at state 0"),
        ({"P": np.ones((2, 1, 2)) / 2, "rho": [-0.5, 1.5]}, r"`rho` has a negative entry at state 0"),
        ({"P": np.ones((2, 1, 2)) / 2, "rho": [0.5, 0.6]}, r"`rho` must sum to 1"),
    ],
)
def test_invalid_mdp(kwargs, match):
    kwargs.setdefault("gamma", 0.9)
    with pytest.raises(InvalidMDPError, match=match):
        TabularMDP(**kwargs)


def test_invalid_mdp_error_is_a_value_error():
    assert issubclass(InvalidMDPError, ValueError)


@pytest.mark.parametrize(
    "policy, match",
    [
        (np.ones((3, 2)), r"`policy` must have shape \(S, A\) = \(2, 2\)"),
        (np.array([[1.0, 0.0], [-1.0, 2.0]]), r"`policy` row 1 has a negative"),
        (np.array([[1.0, 0.0], [0.3, 0.3]]), r"`policy` row 1 sums to 0.6"),
    ],
)
def test_invalid_policy(policy, match):
    with pytest.raises(InvalidMDPError, match=match):
        chain_discounted().mdp.occupancy(policy)


# ------------------------------------------------------------------ properties
@settings(max_examples=40, deadline=None)
@given(random_problems())
def test_policy_occupancy_round_trip(problem):
    mdp = problem.mdp
    rng = np.random.default_rng(0)
    policy = rng.dirichlet(np.ones(mdp.n_actions), size=mdp.n_states)
    d = mdp.occupancy(policy)
    expected = occupancy_by_dense_solve(mdp.P_dense, mdp.rho, mdp.gamma, policy)
    np.testing.assert_allclose(d, expected, atol=1e-9)
    assert problem.polytope.violation(d) < 1e-9
    visited = d.sum(axis=1) > 1e-12
    np.testing.assert_allclose(mdp.policy_from_occupancy(d)[visited], policy[visited], atol=1e-9)


def test_policy_from_occupancy_steers_unvisited_states_into_the_support():
    # state 0 absorbing (the support of d); start in state 1 where action 0 leads to 0 and
    # action 1 to the absorbing state 2. A uniform filler would lose half the mass to state 2.
    P = np.zeros((3, 2, 3))
    P[0, :, 0] = 1.0
    P[1, 0, 0] = P[1, 1, 2] = 1.0
    P[2, :, 2] = 1.0
    with pytest.warns(StructureWarning):
        mdp = TabularMDP(P, rho=[0, 1, 0], gamma=1.0, allow_multichain=True)
    d = np.zeros((3, 2))
    d[0, 0] = 1.0
    policy = mdp.policy_from_occupancy(d)
    np.testing.assert_allclose(policy[1], [1.0, 0.0])
    np.testing.assert_allclose(mdp.occupancy(policy), d)
