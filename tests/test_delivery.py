"""Policies deliver the returns of their results (issue 15, item 3).

What a user deploys is ``result.policy``. A result reports that policy's exact occupancy, so
its returns are what the policy does; where the rule's own point cannot be delivered by a
stationary policy (closed classes mixed, average reward), the result says so. These tests
evaluate the policy independently (dense linear algebra: the discounted occupancy by
``numpy.linalg.solve``, the average-reward Cesaro limit as the limit of powers of the lazy
chain ``(I + P_pi) / 2``).
"""

import warnings

import numpy as np
import pytest
from conftest import RULE_OPTIONS
from hypothesis import given, settings
from hypothesis import strategies as st

from policyagg import solvers
from policyagg.lottery import Lottery
from policyagg.mdp import DELIVERY_TOL, DeliveryWarning, StructureWarning, TabularMDP
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples
from policyagg.solvers.completion import POLICY_GAP_STATUS, POLICY_RETURN_TOL
from policyagg.solvers.registry import registered_rule


def brute_force_occupancy(P, rho, gamma, policy):
    """``d_pi`` (S, A) from dense ``P`` (S, A, S), independently of :mod:`policyagg.planning`.

    Average reward: ``rho^T lim_t L^t`` with ``L = (I + P_pi) / 2`` (aperiodic, the same
    invariant measures and absorption probabilities as ``P_pi``), by repeated squaring.
    """
    S = P.shape[0]
    P_pi = np.einsum("sa,sat->st", policy, P)
    if gamma < 1:
        mu = np.linalg.solve(np.eye(S) - gamma * P_pi.T, (1 - gamma) * np.asarray(rho, float))
    else:
        L = 0.5 * (np.eye(S) + P_pi)
        for _ in range(200):  # L^(2^200)
            L = L @ L
            L /= L.sum(axis=1, keepdims=True)
        mu = np.asarray(rho, float) @ L
    return mu[:, None] * policy


def trap_mdp():
    """A route 0 <-> 1 (agent 0 earns 1 per step on it) and an off-route loop 2 <-> 3 (0 reward).

    Action 1 at state 0 leaves the route for state 2; states 2 and 3 go back to 0 with action 1.
    """
    P = np.zeros((4, 2, 4))
    P[0, 0, 1] = P[0, 1, 2] = 1.0
    P[1, :, 0] = 1.0
    P[2, 0, 3] = P[2, 1, 0] = 1.0
    P[3, 0, 2] = P[3, 1, 0] = 1.0
    rewards = np.zeros((1, 4, 2))
    rewards[0, 0, 0] = rewards[0, 1, 0] = 1.0
    return P, rewards


def noisy_route_occupancy(noise=1e-9):
    """The route's occupancy plus solver-like noise on the off-route loop and the exit."""
    d = np.zeros((4, 2))
    d[0, 0] = d[1, 0] = 0.5
    d[0, 1] = d[2, 0] = d[3, 0] = noise
    return d / d.sum()


@pytest.mark.parametrize("noise", [1e-11, 1e-9, 3e-7])
def test_noise_on_an_unvisited_loop_does_not_trap_the_policy(noise):
    # the mechanism (breakable-bottles, gamma = 1): the plain ratio d(s, a) / d(s) sends
    # mass off the route with probability ~noise, and the noise loop 2 <-> 3 keeps it forever
    P, rewards = trap_mdp()
    mdp = TabularMDP(P, rho=[1, 0, 0, 0], gamma=1.0)
    d = noisy_route_occupancy(noise)
    ratio = d / d.sum(axis=1, keepdims=True)
    assert (rewards[0] * brute_force_occupancy(P, mdp.rho, 1.0, ratio)).sum() == pytest.approx(0.0, abs=1e-9)

    derived = mdp.derive_policy(d)
    delivered = brute_force_occupancy(P, mdp.rho, 1.0, derived.policy)
    assert (rewards[0] * delivered).sum() == pytest.approx((rewards[0] * d).sum(), abs=10 * noise)
    assert derived.delivers and derived.distance <= DELIVERY_TOL
    np.testing.assert_allclose(derived.occupancy, delivered, atol=1e-8)


def test_a_rule_that_returns_a_noisy_occupancy_still_delivers():
    P, rewards = trap_mdp()
    problem = Problem(TabularMDP(P, rho=[1, 0, 0, 0], gamma=1.0), rewards)

    def noisy(call):
        return call.finish(noisy_route_occupancy(1e-9).ravel(), lift=False)

    with registered_rule("noisy-route", noisy), warnings.catch_warnings():
        warnings.simplefilter("error", DeliveryWarning)
        result = solvers.get_rule("noisy-route")(problem)
    delivered = (rewards[0] * brute_force_occupancy(P, problem.mdp.rho, 1.0, result.policy)).sum()
    assert delivered == pytest.approx(result.returns[0], abs=1e-8)
    assert result.status == "optimal" and result.report["pareto_optimal"]
    assert result.report["policy_return_gap"] <= POLICY_RETURN_TOL


def two_islands():
    """Start state 0 chooses island A (state 1, absorbing) or B (state 2, absorbing); agent i
    earns 1 per step on island i. The egalitarian occupancy is half on each island."""
    P = np.zeros((3, 2, 3))
    P[0, 0, 1] = P[0, 1, 2] = 1.0
    P[1, :, 1] = P[2, :, 2] = 1.0
    rewards = np.zeros((2, 3, 2))
    rewards[0, 1, :] = rewards[1, 2, :] = 1.0
    return P, rewards


def test_a_point_no_policy_delivers_is_not_claimed():
    # From rho = state 1 the chain never leaves island A: no stationary policy gives agent 1
    # anything, while the rule's occupancy (0.5 on each island) gives both agents 0.5. The
    # result reports what its policy does, and says that the rule's point was not delivered.
    P, rewards = two_islands()
    with pytest.warns(StructureWarning):
        mdp = TabularMDP(P, rho=[0, 1, 0], gamma=1.0, allow_multichain=True)
    with pytest.warns(DeliveryWarning, match="no stationary policy delivers the rule's point"):
        result = solvers.egalitarian(Problem(mdp, rewards))
    delivered = np.einsum("isa,sa->i", rewards, brute_force_occupancy(P, mdp.rho, 1.0, result.policy))
    np.testing.assert_allclose(delivered, [1.0, 0.0], atol=1e-8)
    np.testing.assert_allclose(result.returns, delivered, atol=1e-8)
    np.testing.assert_allclose(result.diagnostics["optimizer_returns"], [0.5, 0.5], atol=1e-7)
    assert result.diagnostics["policy_classes"] == 2
    assert result.report["policy_return_gap"] == pytest.approx(0.5, abs=1e-6)
    assert result.status == POLICY_GAP_STATUS and not result.report["pareto_optimal"]
    assert f"status: {POLICY_GAP_STATUS}" in result.table()


def two_rooms():
    """Two rooms, each with a stay action that pays its own agent 1 per step, joined by a
    move action that pays nobody: a communicating MDP whose egalitarian point (half the time in
    each room) mixes the two closed classes of the policy that stays."""
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[1, 0, 1] = 1.0  # stay
    P[0, 1, 1] = P[1, 1, 0] = 1.0  # move
    rewards = np.zeros((2, 2, 2))
    rewards[0, 0, 0] = rewards[1, 1, 0] = 1.0
    return P, rewards


def test_classes_an_mdp_connects_are_mixed_by_a_stationary_policy():
    from policyagg.solvers.completion import CLASS_MIXING

    P, rewards = two_rooms()
    problem = Problem(TabularMDP(P, rho=[1, 0], gamma=1.0), rewards)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeliveryWarning)
        result = solvers.egalitarian(problem)
    delivered = np.einsum("isa,sa->i", rewards, brute_force_occupancy(P, [1.0, 0.0], 1.0, result.policy))
    np.testing.assert_allclose(delivered, result.returns, atol=1e-9)
    np.testing.assert_allclose(result.returns, [0.5, 0.5], atol=2 * CLASS_MIXING)
    assert result.status == "optimal" and result.report["pareto_optimal"]
    assert result.diagnostics["class_mixing"]["classes"] == 2
    assert 0 < result.policy[0, 1] < 1e-5  # it leaves a room, rarely


# ------------------------------------------------------------------ property: every rule
@st.composite
def structured_problems(draw):
    """Small MDPs of the kinds that break naive policy extraction: sparse random, multichain
    (several absorbing islands), periodic (deterministic cycles), with gamma from 0.5 to 1."""
    kind = draw(st.sampled_from(["sparse", "multichain", "periodic"]))
    gamma = draw(st.sampled_from([0.5, 0.99, 1.0]))
    n = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    S, A = int(rng.integers(2, 6)), int(rng.integers(1, 4))
    if kind == "sparse":
        P = rng.dirichlet(np.ones(S), size=(S, A)) * (rng.random((S, A, S)) < 0.5)
        P[np.arange(S), :, rng.integers(S, size=S)] += 0.1
    elif kind == "multichain":  # states 0 and 1 absorbing, the others move anywhere
        P = rng.dirichlet(np.ones(S), size=(S, A))
        P[0], P[1] = 0.0, 0.0
        P[0, :, 0] = P[1, :, 1] = 1.0
    else:  # deterministic moves: action a at s goes to (s + 1 + a * k) mod S
        P = np.zeros((S, A, S))
        step = int(rng.integers(1, S))
        for s in range(S):
            for a in range(A):
                P[s, a, (s + 1 + a * step) % S] = 1.0
    P /= P.sum(axis=2, keepdims=True)
    rho = rng.dirichlet(np.ones(S)) * (rng.random(S) < 0.7)
    rho[int(rng.integers(S))] += 0.2
    rewards = rng.normal(size=(n, S, A)) * rng.uniform(0.1, 10.0, size=(n, 1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureWarning)
        mdp = TabularMDP(P, rho=rho / rho.sum(), gamma=gamma, allow_multichain=True)
    return Problem(mdp, rewards)


def random_deterministic_returns(problem, count=200, seed=0):
    """Returns of random deterministic policies (evaluated exactly from rho): samples for the
    volumetric rules that need no stationary distribution to be unique."""
    rng = np.random.default_rng(seed)
    mdp = problem.mdp
    eye = np.eye(mdp.n_actions)
    return np.array(
        [mdp.evaluate(eye[rng.integers(mdp.n_actions, size=mdp.n_states)], problem.rewards) for _ in range(count)]
    )


@pytest.mark.parametrize("name", sorted(solvers.RULES))
@settings(max_examples=12, deadline=None)
@given(problem=structured_problems())
def test_every_rule_delivers_its_returns_or_says_it_does_not(name, problem):
    problem = solvers.with_ranges(problem)
    samples = ReturnSamples(random_deterministic_returns(problem))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # structure, gap and delivery warnings are checked below
        result = solvers.get_rule(name)(problem, samples, **RULE_OPTIONS.get(name, {}))
    mdp = problem.mdp
    top = np.abs(problem.reward_matrix).max(axis=1)  # an indifferent agent: its reward scale
    width = np.where(problem.ranges.flat, np.where(top > 0, top, 1.0), problem.ranges.width)
    if isinstance(result, Lottery):  # every policy it draws delivers its returns, or it says so
        for pi, returns in zip(result.support_policies, result.support_returns, strict=True):
            occupancy = brute_force_occupancy(mdp.P_dense, mdp.rho, mdp.gamma, pi)
            assert float(np.max(np.abs(np.einsum("isa,sa->i", problem.rewards, occupancy) - returns) / width)) <= 1e-7
        trapped = result.diagnostics["support_policy_classes"] > 1
        if trapped and result.diagnostics["support_return_gap"] > POLICY_RETURN_TOL:
            assert result.status == POLICY_GAP_STATUS
        else:
            assert result.status != POLICY_GAP_STATUS
        return
    delivered = np.einsum(
        "isa,sa->i", problem.rewards, brute_force_occupancy(mdp.P_dense, mdp.rho, mdp.gamma, result.policy)
    )
    # the result is what its policy does
    assert float(np.max(np.abs(delivered - result.returns) / width)) <= 1e-7
    # and it says where the rule's own point was not delivered
    optimizer = np.asarray(result.diagnostics["optimizer_returns"])
    gap = float(np.max(np.abs(delivered - optimizer) / width))
    assert result.report["policy_return_gap"] == pytest.approx(gap, abs=1e-7)
    if result.diagnostics["policy_classes"] > 1 and gap > POLICY_RETURN_TOL:
        assert result.status != "optimal" and not result.report["pareto_optimal"]
    else:
        assert result.status != POLICY_GAP_STATUS
    if mdp.gamma < 1:  # discounted: the occupancy's policy always delivers it
        assert gap <= POLICY_RETURN_TOL, (gap, result.report)
