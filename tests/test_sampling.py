import importlib.util

import numpy as np
import pytest
from conftest import leaky_average, random_problems
from hypothesis import given, settings
from reference import occupancy_by_dense_solve

import policyagg.sampling as sampling
from policyagg.envs.attention import AttentionModel, one_agent_per_site
from policyagg.errors import InvalidProblemError
from policyagg.mdp import TabularMDP
from policyagg.problem import Problem
from policyagg.sampling import PolicySampler, default_batch_size, resolve_method, sample_policy_returns

HAS_NUMBA = importlib.util.find_spec("numba") is not None
#: Both GMRES kernels; the compiled one needs the `fast` extra (installed with `test`).
KERNELS_HERE = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAS_NUMBA, reason="needs numba (fast)"))]

METHODS = ["dense", "krylov", "sparse"]


def reference_returns(problem, policies):
    """Per-policy dense solve written independently of the package; average reward by the
    rank-one form ``(I - P_pi^T + 1 1^T) mu = 1`` (nonsingular for one closed class) instead
    of the package's replaced row."""
    mdp = problem.mdp
    P, S = mdp.P_dense, mdp.n_states
    out = []
    for policy in policies:
        P_pi = np.einsum("sa,sat->st", policy, P)
        if mdp.gamma < 1:
            mu = np.linalg.solve(np.eye(S) - mdp.gamma * P_pi.T, (1 - mdp.gamma) * mdp.rho)
        else:
            mu = np.linalg.solve(np.eye(S) - P_pi.T + 1.0, np.ones(S))
        out.append(np.einsum("sa,isa->i", mu[:, None] * policy, problem.rewards))
    return np.array(out)


def attention_problem(n_sites=5, gamma=1.0):
    model = AttentionModel(n_sites, 3, seed=0)
    return Problem(model.mdp(gamma=gamma), model.rewards(one_agent_per_site(n_sites, 0)))


@pytest.mark.parametrize("kernel", KERNELS_HERE)
@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=15, deadline=None)
@given(problem=random_problems())
def test_batched_returns_match_a_direct_dense_solve(method, kernel, problem):
    """Tiny random MDPs: GMRES runs into (happy) breakdowns there, which must not matter."""
    sampler = PolicySampler(problem, method=method, kernel=kernel)
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


@pytest.mark.parametrize("kernel", KERNELS_HERE)
@pytest.mark.parametrize("method", ["krylov", "sparse"])
def test_parallel_gmres_is_bitwise_serial_and_follows_the_seeding_contract(method, kernel):
    """Two worker processes give the same bits as one; batch j is the j-th spawned child's
    draw, and every sample equals an independent dense solve of that policy."""
    problem = attention_problem()
    options = {"rng": 3, "method": method, "kernel": kernel, "batch_size": 40, "progress": False}
    serial = sample_policy_returns(problem, 150, workers=1, **options)
    parallel = sample_policy_returns(problem, 150, workers=2, **options)
    assert serial.info["kernel"] == kernel
    np.testing.assert_array_equal(parallel.values, serial.values)
    assert serial.info["method"] == method and serial.info["gmres_steps_per_sample"] > 0
    sampler = PolicySampler(problem)
    children = np.random.default_rng(3).spawn(4)
    policies = np.concatenate([sampler.draw_policies(child, size) for child, size in zip(children, (40, 40, 40, 30))])
    np.testing.assert_allclose(serial.values, reference_returns(problem, policies), rtol=0, atol=1e-9)


@pytest.mark.parametrize("kernel", KERNELS_HERE)
@pytest.mark.parametrize("gamma", [1.0, 0.9])
@pytest.mark.parametrize("method", METHODS)
def test_attention_model_samples_match_policy_evaluation(method, gamma, kernel):
    problem = attention_problem(gamma=gamma)  # 243 states: large enough for the Krylov solvers
    sampler = PolicySampler(problem, method=method, kernel=kernel)
    policies = sampler.draw_policies(np.random.default_rng(0), 3)
    expected = np.array([problem.mdp.evaluate(p, problem.rewards) for p in policies])  # sparse direct solve
    np.testing.assert_allclose(sampler.returns(policies), expected, rtol=1e-9, atol=1e-9)


def test_sparse_method_on_a_larger_model():
    problem = attention_problem(n_sites=7)  # 2187 states: above the dense direct fallback too
    assert resolve_method("auto", problem.mdp.n_states) == "sparse"  # (without its Kronecker structure)
    sampler = PolicySampler(problem, method="sparse")
    assert sampler.method == "sparse" and sampler._inverse_T is None
    policies = sampler.draw_policies(np.random.default_rng(0), 3)
    expected = np.array([problem.mdp.evaluate(p, problem.rewards) for p in policies])
    np.testing.assert_allclose(sampler.returns(policies), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kernel", KERNELS_HERE)
@pytest.mark.parametrize("method", ["krylov", "sparse"])
def test_gmres_checks_the_true_residual_restarts_and_falls_back(method, kernel, monkeypatch):
    problem = attention_problem()
    sampler = PolicySampler(problem, method=method, kernel=kernel)
    name = "gmres_compiled" if kernel == "numba" else "gmres"
    policies = sampler.draw_policies(np.random.default_rng(0), 8)
    block = np.ascontiguousarray(np.moveaxis(policies, 0, 2))
    x0 = np.tile(sampler._x_uniform, (8, 1))
    exact = sampler.solve_dense(policies)
    _, converged, steps = getattr(sampler, name)(block, x0, iterations=3)
    assert not converged.any() and (steps == 3).all()  # 3 steps cannot reach 1e-12
    mu, converged, steps = getattr(sampler, name)(block, x0)
    assert converged.all() and (steps < sampling.KRYLOV_ITERATIONS).all()
    np.testing.assert_allclose(mu, exact, rtol=0, atol=1e-12)

    full_gmres = getattr(sampler, name)
    # Cycles of 12 steps: the first falls short, the restarts finish the job.
    monkeypatch.setattr(sampler, name, lambda p, x: full_gmres(p, x, iterations=12))
    mu, counts = sampler.solve_block(block)
    assert counts[1] > 0 and counts[2] == 0
    np.testing.assert_allclose(mu, exact, rtol=0, atol=1e-12)
    # Cycles of 2 steps never converge: every sample is solved directly.
    monkeypatch.setattr(sampler, name, lambda p, x: full_gmres(p, x, iterations=2))
    mu, counts = sampler.solve_block(block)
    assert counts[1] == 8 * (sampling.KRYLOV_CYCLES - 1) and counts[2] == 8
    np.testing.assert_allclose(mu, exact, rtol=0, atol=1e-12)


def test_sparse_direct_fallback(monkeypatch):
    problem = attention_problem(gamma=0.9)
    sampler = PolicySampler(problem, method="sparse")
    policies = sampler.draw_policies(np.random.default_rng(4), 3)
    monkeypatch.setattr(sampling, "DENSE_DIRECT_MAX_STATES", 10)
    monkeypatch.setattr(sampler, "solve_dense", None)  # must not be used
    mu = sampler.solve_direct(policies)
    d = mu[:, :, None] * policies
    np.testing.assert_allclose(
        np.einsum("bsa,isa->bi", d, problem.rewards), reference_returns(problem, policies), rtol=0, atol=1e-10
    )


def test_method_choice_and_batch_memory():
    assert [resolve_method("auto", S) for S in (27, 243, 2187)] == ["dense", "krylov", "sparse"]
    for S, A in ((27, 4), (243, 6), (6561, 9), (10**6, 3)):
        for method in ("krylov", "sparse"):
            batch = default_batch_size(S, method, A)
            assert 1 <= batch <= sampling.MAX_BATCH
            assert batch == 1 or batch * 8 * S * (sampling.KRYLOV_ITERATIONS + 6 + 3 * A) <= sampling.BATCH_BYTES
        batch = default_batch_size(S, "kronecker", A)
        per_sample = 8 * S * (sampling.KRONECKER_ITERATIONS + 6 + 3 * A)
        assert 1 <= batch <= sampling.MAX_BATCH and (batch == 1 or batch * per_sample <= sampling.KRONECKER_BATCH_BYTES)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_samples": 0}, r"`n_samples` must be a positive integer"),
        ({"n_samples": 2.5}, r"`n_samples` must be a positive integer"),
        ({"n_samples": 10, "batch_size": 0}, r"`batch_size` must be a positive integer"),
        ({"n_samples": 10, "batch_size": 2.5}, r"`batch_size` must be a positive integer"),
        ({"n_samples": 10, "workers": 0}, r"`workers` must be a positive integer"),
        ({"n_samples": 10, "concentration": -1.0}, r"`concentration` must be a positive number"),
        ({"n_samples": 10, "method": "lu"}, r"`method` must be one of auto, dense, krylov, sparse"),
        ({"n_samples": 10, "kernel": "c"}, r"`kernel` must be one of auto, numba, numpy"),
    ],
)
def test_invalid_sampling_options(kwargs, match):
    with pytest.raises(InvalidProblemError, match=match):
        sample_policy_returns(leaky_average(), **kwargs)


@pytest.mark.parametrize("method", ["dense", "krylov", "sparse", "kronecker"])
def test_a_sampler_sent_to_another_process_gives_the_same_bits(method):
    """Executors on other machines (Ray) receive the sampler serialised; SciPy's SuperLU cannot
    be, so the sparse method's incomplete LU is rebuilt on arrival, with the same factors."""
    import pickle  # the transport of a Ray task, never a file

    problem = attention_problem(n_sites=3)
    sampler = PolicySampler(problem, method=method)
    copy = pickle.loads(pickle.dumps(sampler))
    policies = sampler.draw_policies(np.random.default_rng(0), 20)
    np.testing.assert_array_equal(copy.returns(policies), sampler.returns(policies))
    np.testing.assert_allclose(sampler.returns(policies), reference_returns(problem, policies), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n_actions", [1, 2, 7, 8, 11])
def test_drawn_policies_are_normalised_as_numpy_sums_them(n_actions):
    """The draw sums fewer than 8 actions by hand: the same bits as numpy's sum (the seeds' policies
    do not change), and rows summing to 1."""
    rng = np.random.default_rng(n_actions)
    P = rng.random((5, n_actions, 5))
    P /= P.sum(axis=2, keepdims=True)
    sampler = PolicySampler(Problem(TabularMDP(P, gamma=0.9), np.ones((1, 5, n_actions))), method="dense")
    drawn = sampler.draw_policies(np.random.default_rng(3), 40)
    g = np.random.default_rng(3).standard_exponential((40, 5, n_actions))
    np.testing.assert_array_equal(drawn, g / g.sum(axis=2, keepdims=True))
    np.testing.assert_allclose(drawn.sum(axis=2), 1.0, rtol=0, atol=1e-15)
