"""The large-MDP paths of policyagg.planning (issue 15 item 5): stationary distributions solved
iteratively, the Cesaro limit of a unichain matrix on its closed class, the closed-class
stationary distribution in policy evaluation and the preconditioned GMRES fallback. Each is
checked against an independent dense computation (an eigenvector, or powers of ``P``)."""

import numpy as np
import pytest
import scipy.sparse as sp

from policyagg import planning


def _random_chain(n: int, seed: int, *, absorbing_tail: int = 0) -> np.ndarray:
    """A dense stochastic ``n x n`` matrix: irreducible on its first ``n - absorbing_tail``
    states (a cycle plus random sparse edges); the last ``absorbing_tail`` states are transient
    and drain into the first block."""
    rng = np.random.default_rng(seed)
    m = n - absorbing_tail
    P = np.zeros((n, n))
    P[np.arange(m), (np.arange(m) + 1) % m] = 1.0  # a cycle: irreducible
    P[:m, :m] += (rng.random((m, m)) < 4 / m) * rng.random((m, m))
    P[m:, :] = (rng.random((absorbing_tail, n)) < 0.3) * rng.random((absorbing_tail, n))
    P[m:, 0] += 1.0  # every transient state leaks into the class
    return P / P.sum(axis=1, keepdims=True)


def _eigen_stationary(P: np.ndarray) -> np.ndarray:
    """The left eigenvector of ``P`` for eigenvalue 1, normalised: independent of the solvers."""
    values, vectors = np.linalg.eig(P.T)
    v = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    return v / v.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stationary_distribution_iterative_path_matches_the_eigenvector(monkeypatch, seed):
    P = _random_chain(60, seed)
    monkeypatch.setattr(planning, "STATIONARY_DIRECT_MAX_STATES", 10)  # force the iterative path
    pi = planning.stationary_distribution(sp.csr_array(P))
    np.testing.assert_allclose(pi, _eigen_stationary(P), atol=1e-12)
    assert pi.sum() == pytest.approx(1.0)


def test_stationary_distribution_falls_back_to_lu_when_iterations_fail(monkeypatch):
    P = _random_chain(40, 3)
    monkeypatch.setattr(planning, "STATIONARY_DIRECT_MAX_STATES", 10)

    def fail(*args, **kwargs):
        raise planning.PolicyEvaluationError("forced")

    monkeypatch.setattr(planning, "_solve_iteratively", fail)
    np.testing.assert_allclose(planning.stationary_distribution(sp.csr_array(P)), _eigen_stationary(P), atol=1e-12)


@pytest.mark.parametrize("direct_max", [10_000, 10])
def test_cesaro_limit_of_a_unichain_matrix_with_transient_states(monkeypatch, direct_max):
    P = _random_chain(50, 4, absorbing_tail=15)
    monkeypatch.setattr(planning, "STATIONARY_DIRECT_MAX_STATES", direct_max)
    rho = np.zeros(50)
    rho[-1] = 1.0  # start in a transient state
    mu = planning.cesaro_limit(sp.csr_array(P), rho)
    # independent: the average of rho^T P^t over many steps (the class is aperiodic: random edges)
    power = np.linalg.matrix_power(P, 4096)
    np.testing.assert_allclose(mu, rho @ power, atol=1e-10)
    assert np.all(mu[-15:] == 0.0)


def test_evaluation_takes_the_stationary_distribution_on_the_closed_class(monkeypatch):
    P = _random_chain(80, 5, absorbing_tail=30)
    c = np.random.default_rng(0).standard_normal(80)
    rho = np.full(80, 1 / 80)
    direct = planning.evaluate_policy(sp.csr_array(P), c, gamma=1.0, rho=rho, direct=True)
    monkeypatch.setattr(planning, "CLASS_DIRECT_MAX_STATES", 1000)
    iterative = planning.evaluate_policy(sp.csr_array(P), c, gamma=1.0, rho=rho, direct=False)
    np.testing.assert_allclose(iterative.mu, _eigen_stationary(P), atol=1e-12)
    np.testing.assert_allclose(direct.mu, iterative.mu, atol=1e-12)
    assert iterative.gain == pytest.approx(direct.gain, abs=1e-10)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_gmres_fallback_with_incomplete_lu_when_bicgstab_breaks_down(monkeypatch, gamma):
    P = _random_chain(70, 6, absorbing_tail=20)
    c = np.random.default_rng(1).standard_normal(70)
    rho = np.full(70, 1 / 70)
    expected = planning.evaluate_policy(sp.csr_array(P), c, gamma=gamma, rho=rho, direct=True)
    built = []
    real_ilu = planning.incomplete_lu

    def counting_ilu(M):
        built.append(M.shape)
        return real_ilu(M)

    def broken_bicgstab(op, b, x0=None, **kwargs):
        return np.zeros_like(b), -10  # a breakdown, as on the absorbing chains of extreme policies

    monkeypatch.setattr(planning, "incomplete_lu", counting_ilu)
    monkeypatch.setattr(planning.spla, "bicgstab", broken_bicgstab)
    monkeypatch.setattr(planning, "CLASS_DIRECT_MAX_STATES", 0)  # mu through the iterative path too
    got = planning.evaluate_policy(sp.csr_array(P), c, gamma=gamma, rho=rho, direct=False)
    assert len(built) == 1  # one factorisation serves the value and the transposed (mu) system
    np.testing.assert_allclose(got.potential, expected.potential, atol=1e-9)
    np.testing.assert_allclose(got.mu, expected.mu, atol=1e-12)


def _system(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A well-conditioned nonsymmetric ``I - 0.9 P`` (``P`` stochastic), a right-hand side and
    its solution by dense LU (independent of the iterative solvers)."""
    M = np.eye(n) - 0.9 * _random_chain(n, seed)
    b = np.random.default_rng(seed).normal(size=n)
    return M, b, np.linalg.solve(M, b)


def test_scaled_start_is_the_best_multiple_of_the_old_solution_or_none():
    M, b, x = _system(40, 5)
    op = sp.linalg.aslinearoperator(M)
    np.testing.assert_allclose(planning.scaled_start(op, b, 1e4 * x), x, rtol=1e-12)  # a stale scale
    np.testing.assert_allclose(planning.scaled_start(op, 3.0 * b, -x), 3.0 * x, rtol=1e-12)  # and sign
    assert planning.scaled_start(op, b, None) is None
    assert planning.scaled_start(op, b, np.zeros(40)) is None
    other = np.linalg.solve(M, np.random.default_rng(6).normal(size=40))  # unrelated: no better than zero
    start = planning.scaled_start(op, b, other)
    assert start is None or np.linalg.norm(b - M @ start) < np.linalg.norm(b)


def test_refine_solution_reduces_the_residual_and_never_makes_it_worse():
    M, b, x = _system(60, 7)
    op = sp.linalg.aslinearoperator(M)
    rough = x + 1e-6 * np.random.default_rng(8).normal(size=60)
    refined = planning.refine_solution(op, b, rough)
    assert np.abs(b - M @ refined).max() < 1e-3 * np.abs(b - M @ rough).max()
    np.testing.assert_allclose(refined, x, atol=1e-12)
    kept = planning.refine_solution(op, b, x)  # dense LU's solution: kept or improved, never worse
    assert np.abs(b - M @ kept).max() <= np.abs(b - M @ x).max()


def test_warm_started_policy_iteration_equals_cold_and_direct_on_the_6_site_attention_model():
    """Pricing-like calls whose rewards change scale (as the master's duals do): one warm-started
    :class:`PolicyIteration` (iterative evaluation, 729 states) against a cold one per call and
    against evaluation by sparse LU."""
    from policyagg.experiments.compare import attention_problem

    problem = attention_problem("b", n_sites=6, n_agents=3, seed=0)
    mdp = problem.mdp
    assert mdp.n_states > planning.DIRECT_MAX_STATES  # the iterative path
    rng = np.random.default_rng(0)
    warm = planning.PolicyIteration(mdp)
    for scale in (1.0, 3e4, 1e-2, -50.0, 2e3):
        c = scale * (rng.dirichlet(np.ones(problem.n_agents)) @ problem.reward_matrix)
        tol = 1e-10 * np.abs(c).max()
        found = warm.run(c)
        cold = planning.PolicyIteration(mdp).run(c)
        direct = planning.PolicyIteration(mdp, direct_max_states=10**6).run(c)
        assert warm._start is not None  # the next call starts from this one's values
        assert found.gain == pytest.approx(cold.gain, abs=tol) and found.gain == pytest.approx(direct.gain, abs=tol)
        assert found.bound == pytest.approx(direct.gain, abs=tol)  # the certificate closes
        value = c.reshape(mdp.n_states, -1)[np.arange(mdp.n_states), found.policy] @ found.mu
        assert value == pytest.approx(direct.gain, abs=tol)
        if (found.policy == direct.policy).all():
            np.testing.assert_allclose(found.mu, direct.mu, atol=1e-10)


def test_a_stale_warm_start_is_rescaled_instead_of_falling_back_to_the_incomplete_lu(monkeypatch):
    """A start 1e5 times the solution (the previous round's rewards were larger): unscaled,
    BiCGSTAB would have to shrink its residual by 1e-18 and fall back to the incomplete LU (measured
    at 9 sites: 18 s per factorisation)."""
    P = _random_chain(300, 9)
    c = np.random.default_rng(9).normal(size=300)
    x = np.linalg.solve(np.eye(300) - 0.95 * P, c)
    built = []
    monkeypatch.setattr(planning, "incomplete_lu", lambda M: built.append(M) or None)
    found = planning.evaluate_policy(
        sp.csr_array(P), c, gamma=0.95, rho=np.full(300, 1 / 300), need_mu=False, direct=False, start=1e5 * x
    )
    assert not built
    np.testing.assert_allclose(found.potential, x, atol=1e-10)


def test_refined_policy_iteration_resolves_improvements_below_1e_12_of_max_c():
    """State 0 is absorbing (action 1 earns 1e-7 more); state 1 is transient with rewards -1e6.
    Unrefined, an improvement must exceed 1e-12 * max |c| = 1e-6; refined, a few roundings of
    max |c| + max |h| (about 1e-8 here)."""
    from policyagg.mdp import StructureWarning, TabularMDP

    P = np.zeros((2, 2, 2))
    P[:, :, 0] = 1.0
    with pytest.warns(StructureWarning, match="not communicating"):  # state 1 is transient: intended
        mdp = TabularMDP(P, gamma=1.0)
    c = np.array([0.0, 1e-7, -1e6, -1e6])  # row s*A + a
    coarse = planning.PolicyIteration(mdp).run(c)
    assert coarse.policy[0] == 0 and coarse.bound - coarse.gain == pytest.approx(1e-7, rel=1e-6)
    fine = planning.PolicyIteration(mdp).run(c, refine=True)
    assert fine.policy[0] == 1
    assert fine.gain == pytest.approx(1e-7, abs=1e-12) and fine.bound == pytest.approx(1e-7, abs=1e-12)
