import numpy as np
import pytest
from hypothesis import given, settings

from conftest import leaky_average, random_problems
from envs.attention import AttentionModel, one_agent_per_site
from policyagg.errors import InvalidProblemError
from policyagg.problem import Problem
from policyagg.sampling import PolicySampler, sample_policy_returns
from reference import occupancy_by_dense_solve


@settings(max_examples=30, deadline=None)
@given(random_problems())
def test_batched_returns_match_a_direct_dense_solve(problem):
    sampler = PolicySampler(problem)
    policies = sampler.draw_policies(np.random.default_rng(1), 4)
    got = sampler.returns(policies)
    mdp = problem.mdp
    for k, policy in enumerate(policies):
        d = occupancy_by_dense_solve(mdp.P_dense, mdp.rho, mdp.gamma, policy)
        np.testing.assert_allclose(got[k], problem.rewards.reshape(problem.n_agents, -1) @ d.ravel(), atol=1e-8)


def test_policies_are_dirichlet_rows():
    sampler = PolicySampler(leaky_average())
    policies = sampler.draw_policies(np.random.default_rng(0), 20000)
    np.testing.assert_allclose(policies.sum(axis=2), 1.0)
    # Dirichlet(1, 1) on 2 actions: the first probability is U(0, 1): mean 1/2, variance 1/12
    first = policies[:, 0, 0]
    assert abs(first.mean() - 0.5) < 0.01 and abs(first.var() - 1 / 12) < 0.005


def test_returns_agree_with_simulated_rollouts():
    """Average reward on the 2-state leaky chain: long simulated trajectories, per policy."""
    problem = leaky_average()
    sampler = PolicySampler(problem)
    policies = sampler.draw_policies(np.random.default_rng(2), 3)
    predicted = sampler.returns(policies)
    P = problem.mdp.P_dense
    rng = np.random.default_rng(3)
    T = 200_000
    for k, policy in enumerate(policies):
        state, visits = 0, np.zeros(2)
        u = rng.random((T, 2))
        for t in range(T):
            visits[state] += 1
            action = int(u[t, 0] > policy[state, 0])
            state = int(u[t, 1] > P[state, action, 0])
        # agent 0 is rewarded in state 0, agent 1 in state 1
        np.testing.assert_allclose(visits / T, predicted[k], atol=0.01)


def test_seeded_and_independent_of_workers():
    problem = leaky_average()
    a = sample_policy_returns(problem, 1000, rng=7, workers=1, batch_size=64, progress=False)
    b = sample_policy_returns(problem, 1000, rng=np.random.default_rng(7), workers=2, batch_size=64, progress=False)
    c = sample_policy_returns(problem, 1000, rng=8, workers=2, batch_size=64, progress=False)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    assert a.values.shape == (1000, 2) and a.measure == "policy"


@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("method", ["dense", "krylov"])
def test_attention_model_samples_match_policy_evaluation(method, gamma):
    model = AttentionModel(5, 3, seed=0)  # 243 states: large enough for the Krylov solver
    problem = Problem(model.mdp(gamma=gamma), model.rewards(one_agent_per_site(5, 0)))
    sampler = PolicySampler(problem, method=method)
    policies = sampler.draw_policies(np.random.default_rng(0), 3)
    expected = np.array([problem.mdp.evaluate(p, problem.rewards) for p in policies])  # sparse direct solve
    np.testing.assert_allclose(sampler.returns(policies), expected, rtol=1e-9, atol=1e-9)


def test_krylov_flags_unconverged_samples_and_falls_back_to_dense():
    model = AttentionModel(5, 3, seed=0)
    problem = Problem(model.mdp(), model.rewards(one_agent_per_site(5, 0)))
    sampler = PolicySampler(problem, method="krylov")
    policies = sampler.draw_policies(np.random.default_rng(0), 8)
    _, converged = sampler.solve_krylov(policies, iterations=3)
    assert not converged.any()  # 3 iterations cannot reach 1e-12
    exact = sampler.solve_dense(policies)
    mu, converged = sampler.solve_krylov(policies)
    assert converged.all()
    np.testing.assert_allclose(mu, exact, atol=1e-12)
    # a sample the Krylov solver gives up on is re-solved densely
    sampler.solve_krylov = lambda p: (np.zeros((len(p), sampler.S)), np.arange(len(p)) % 2 == 0)
    np.testing.assert_allclose(sampler.state_occupancies(policies)[1::2], exact[1::2], atol=1e-12)
    assert (sampler.state_occupancies(policies)[::2] == 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_samples": 0}, r"`n_samples` must be a positive integer"),
        ({"n_samples": 2.5}, r"`n_samples` must be a positive integer"),
        ({"n_samples": 10, "batch_size": 0}, r"`batch_size` must be >= 1"),
        ({"n_samples": 10, "workers": 0}, r"`workers` must be >= 1"),
        ({"n_samples": 10, "concentration": -1.0}, r"`concentration` must be a positive number"),
        ({"n_samples": 10, "method": "lu"}, r"`method` must be one of auto, dense, krylov"),
    ],
)
def test_invalid_sampling_options(kwargs, match):
    with pytest.raises(InvalidProblemError, match=match):
        sample_policy_returns(leaky_average(), **kwargs)
