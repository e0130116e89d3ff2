"""The `volume` measure against exact CDFs (segment lengths, polygon areas), an independent
hit-and-run sampler, and Gruenbaum's bound; and the mixing diagnostics on AR(1) chains.

KS tolerances: for an MCMC sample with effective size ``n_eff`` the KS distance to the true
CDF behaves like the iid one with ``n = n_eff``, whose 99.9% quantile is ``1.95 / sqrt(n)``;
``KS_Z = 1.95`` is used with the smallest per-agent bulk ESS. Runs are seeded, so a pass is
reproducible; the constant says how often another seed would fail (about 1 in 1000 per agent).
"""

import itertools
import sys
import warnings

import numpy as np
import pytest
import scipy.linalg as la
from conftest import bandit, chain_discounted, leaky_average, random_problems
from hypothesis import HealthCheck, given, settings
from scipy import stats

from policyagg import solvers
from policyagg.diagnostics import effective_sample_size, rhat
from policyagg.errors import InvalidProblemError, InvalidSamplesError
from policyagg.mdp import TabularMDP
from policyagg.polytope import forbid
from policyagg.problem import Problem
from policyagg.sampling import sample_policy_returns
from policyagg.volume import (
    ChainSettings,
    MixingWarning,
    VolumeSampler,
    compiled_kernel_available,
    gamma_variates,
    hit_and_run_returns,
    run_chain,
    sample_volume_returns,
)

KS_Z = 1.95
NEEDS_NUMBA = pytest.mark.skipif(not compiled_kernel_available(), reason="numba (the `fast` extra) is not installed")
KERNELS_INSTALLED = [pytest.param("numba", marks=NEEDS_NUMBA), "numpy"]


# ------------------------------------------------------------------ exact CDFs
def vertices(problem) -> np.ndarray:
    """Vertices of O by brute force: basic feasible solutions of {d >= 0, A_eq d = b_eq}."""
    C, b = problem.polytope.A_eq.toarray(), problem.polytope.b_eq
    rank = np.linalg.matrix_rank(C)
    found = []
    for basis in itertools.combinations(range(C.shape[1]), rank):
        sub = C[:, basis]
        if np.linalg.matrix_rank(sub) < rank:
            continue
        x = np.linalg.lstsq(sub, b, rcond=None)[0]
        if np.abs(sub @ x - b).max() > 1e-10 or x.min() < -1e-12:
            continue
        d = np.zeros(C.shape[1])
        d[list(basis)] = np.clip(x, 0.0, None)
        if not any(np.abs(d - v).max() < 1e-10 for v in found):
            found.append(d)
    return np.array(found)


def exact_cdf(problem):
    """``F(agent, v)``: the exact CDF of ``J_agent`` under the uniform measure on O (dim 1 or 2)."""
    V = vertices(problem)
    N = la.null_space(problem.polytope.A_eq.toarray())
    J = V @ problem.reward_matrix.T  # (k, n)
    if N.shape[1] == 1:  # a segment: J is uniform between its end values

        def F(i, v):
            lo, hi = J[:, i].min(), J[:, i].max()
            return float(np.clip((v - lo) / (hi - lo), 0.0, 1.0))

        return F
    assert N.shape[1] == 2
    x = (V - V[0]) @ N  # 2-D coordinates of the vertices
    centre = x.mean(axis=0)
    order = np.argsort(np.arctan2(*(x - centre).T[::-1]))
    x, J = x[order], J[order]

    def area(points):
        if len(points) < 3:
            return 0.0
        p = np.array(points)
        return 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1)))

    total = area(list(x))

    def F(i, v):
        # Sutherland-Hodgman against the half-plane {J_i <= v}; J is linear along each edge
        kept = []
        for k in range(len(x)):
            a, b, ja, jb = x[k], x[(k + 1) % len(x)], J[k, i], J[(k + 1) % len(x), i]
            if ja <= v:
                kept.append(a)
            if (ja - v) * (jb - v) < 0:
                kept.append(a + (v - ja) / (jb - ja) * (b - a))
        return area(kept) / total

    return F


def ks_to_exact(samples, F, agent) -> float:
    values = np.sort(samples.values[:, agent])
    cdf = np.array([F(agent, v) for v in values])
    n = len(values)
    return float(max((np.arange(1, n + 1) / n - cdf).max(), (cdf - np.arange(n) / n).max()))


def two_state_discounted():
    """2 states x 2 actions, stochastic transitions, gamma = 0.8: O is a polygon on which the
    Dirichlet policy measure is far from uniform."""
    P = np.array([[[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.05, 0.95]]])
    rewards = np.array([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.5, 2.0]]])
    return Problem(TabularMDP(P, rho=[0.9, 0.1], gamma=0.8), rewards)


def bandit3(gamma):
    mdp = TabularMDP(np.ones((1, 3, 1)), gamma=gamma)
    return Problem(mdp, np.array([[[0.0, 1.0, 3.0]], [[2.0, -1.0, 0.5]]]))


INSTANCES = {
    "bandit2-discounted": lambda: bandit(0.9),
    "bandit2-average": lambda: bandit(1.0),
    "bandit3-discounted": lambda: bandit3(0.7),
    "bandit3-average": lambda: bandit3(1.0),
    "chain-discounted": chain_discounted,
    "two-state-discounted": two_state_discounted,
    "leaky-average": leaky_average,
}


@pytest.fixture(scope="module")
def volume_samples():
    cache = {}

    def get(name, kernel="auto"):
        if (name, kernel) not in cache:
            cache[name, kernel] = sample_volume_returns(INSTANCES[name](), 4000, rng=1, workers=1, kernel=kernel)
        return cache[name, kernel]

    return get


@pytest.mark.parametrize("kernel", KERNELS_INSTALLED)
@pytest.mark.parametrize("name", list(INSTANCES))
def test_sampled_cdf_matches_exact(name, kernel, volume_samples):
    problem = INSTANCES[name]()
    samples = volume_samples(name, kernel)
    assert samples.info["kernel"] == kernel
    assert samples.measure == "volume" and samples.n_samples == 4000
    ess = np.array(samples.info["ess"])
    assert max(samples.info["rhat"]) < 1.01
    assert ess.min() > 1000
    F = exact_cdf(problem)
    tolerance = KS_Z / np.sqrt(ess.min())
    for i in range(problem.n_agents):
        assert ks_to_exact(samples, F, i) < tolerance, (name, i)


@pytest.mark.parametrize("name", ["two-state-discounted", "leaky-average"])
def test_exact_check_can_fail(name):
    """The same check rejects Dirichlet random policies, which are not uniform on these polygons."""
    problem = INSTANCES[name]()
    samples = sample_policy_returns(problem, 4000, rng=1, progress=False)
    F = exact_cdf(problem)
    assert max(ks_to_exact(samples, F, i) for i in range(problem.n_agents)) > KS_Z / np.sqrt(4000)


def test_exact_cdf_helper_on_triangle():
    """The clipping CDF on the 3-action simplex against the closed form for J = d_2 (Beta(1, 2))."""
    problem = Problem(TabularMDP(np.ones((1, 3, 1)), gamma=0.5), np.array([[[0.0, 0.0, 1.0]]]))
    F = exact_cdf(problem)
    for v in (0.1, 0.3, 0.5, 0.9):
        assert F(0, v) == pytest.approx(1 - (1 - v) ** 2)


# ------------------------------------------------------------------ independent sampler
@pytest.mark.parametrize("gamma", [0.85, 1.0])
def test_agrees_with_hit_and_run(gamma):
    """Two-sample KS against plain hit-and-run on a 6-dimensional polytope (the power of the
    exact checks above is shown by `test_exact_check_can_fail`)."""
    rng = np.random.default_rng(3)
    S, A = 3, 3
    P = rng.dirichlet(np.full(S, 0.5), size=(S, A))
    problem = Problem(TabularMDP(P, rho=rng.dirichlet(np.ones(S)), gamma=gamma), rng.normal(size=(2, S, A)))
    volume = sample_volume_returns(problem, 6000, rng=4, workers=2)
    walk = hit_and_run_returns(problem, 6000, rng=5, workers=2, thin=20)
    assert max(walk.info["rhat"]) < 1.01
    for i in range(problem.n_agents):
        n1, n2 = volume.info["ess"][i], walk.info["ess"][i]
        tolerance = KS_Z * np.sqrt(1 / n1 + 1 / n2)
        assert stats.ks_2samp(volume.values[:, i], walk.values[:, i]).statistic < tolerance


# ------------------------------------------------------------------ the two kernels
@NEEDS_NUMBA
@pytest.mark.filterwarnings("ignore::policyagg.volume.MixingWarning")  # short chains, compared to each other
@pytest.mark.parametrize("gamma", [0.9, 1.0])
def test_kernels_run_the_same_chain(gamma):
    """numba and numpy visit the same proposals with the same thresholds: the chains agree to
    rounding (a flipped decision would make them diverge by O(1))."""
    rng = np.random.default_rng(7)
    S, A = 7, 4
    P = rng.dirichlet(np.full(S, 0.7), size=(S, A))
    problem = Problem(TabularMDP(P, rho=rng.dirichlet(np.ones(S)), gamma=gamma), rng.normal(size=(3, S, A)))
    fast = sample_volume_returns(problem, 400, rng=2, chains=2, burn_in=8, refresh=5, workers=1, kernel="numba")
    slow = sample_volume_returns(problem, 400, rng=2, chains=2, burn_in=8, refresh=5, workers=1, kernel="numpy")
    assert (fast.info["kernel"], slow.info["kernel"]) == ("numba", "numpy")
    assert fast.info["acceptance"] == slow.info["acceptance"]
    np.testing.assert_allclose(fast.values, slow.values, rtol=1e-9, atol=1e-12)


@NEEDS_NUMBA
def test_kernels_agree_on_one_sweep_of_attention():
    """One sweep on the 27-state attention model (supports of several states, light schedule
    off): same moves, ``G``, ``mu`` and ``log|det|`` from both kernels."""
    from policyagg.envs.attention import AttentionModel, one_agent_per_site

    model = AttentionModel(3, 3, seed=1)
    problem = Problem(model.mdp(), model.rewards(one_agent_per_site(3, 1)))
    results = []
    for kernel in ("numba", "numpy"):
        sampler = VolumeSampler(problem, kernel)
        out = np.empty((3, problem.n_agents))
        stats_ = run_chain(sampler, np.random.default_rng(5), out, ChainSettings(burn_in=6, thin=1, refresh=100))
        results.append((stats_.moved, out))
    assert results[0][0] == results[1][0]
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-9)


def test_unknown_kernel_and_missing_numba(monkeypatch):
    with pytest.raises(InvalidProblemError, match="unknown volume kernel 'cuda'.*auto, numba, numpy"):
        sample_volume_returns(leaky_average(), 10, kernel="cuda")
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba raises ImportError
    monkeypatch.setitem(sys.modules, "policyagg.volume_kernel", None)
    with pytest.raises(InvalidProblemError, match=r"pip install 'policyagg\[fast\]'"):
        sample_volume_returns(leaky_average(), 10, kernel="numba")


@pytest.mark.parametrize("alpha", [0.2, 0.7, 1.0, 3.5])
def test_gamma_variates(alpha):
    """The shape-boosting identity used for the adapted proposals, against scipy's Gamma CDF."""
    draws = gamma_variates(np.random.default_rng(0), np.full(20000, alpha))
    assert stats.kstest(draws, stats.gamma(alpha).cdf).pvalue > 1e-3


# ------------------------------------------------------------------ refusals
def test_refuses_unreachable_state():
    P = np.zeros((3, 2, 3))
    P[0, :, 0] = P[1, :, 1] = 1.0  # states 0 and 1 absorbing
    P[2, :, 0] = 1.0
    problem = Problem(TabularMDP(P, rho=[1.0, 0.0, 0.0], gamma=0.9), np.zeros((1, 3, 2)))
    with pytest.raises(InvalidProblemError, match="unreachable from `rho`.*1, 2"):
        sample_volume_returns(problem, 10)


def test_refuses_transient_states_average_reward():
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[0, 1, 1] = 1.0  # state 0 can stay or leave for good
    P[1, :, 1] = 1.0
    with pytest.warns(UserWarning):
        mdp = TabularMDP(P, gamma=1.0)
    with pytest.raises(InvalidProblemError, match="communicating"):
        sample_volume_returns(Problem(mdp, np.zeros((1, 2, 2))), 10)


def test_refuses_extra_constraints():
    problem = leaky_average()
    constrained = Problem(problem.mdp, problem.rewards, constraints=forbid(problem.mdp, 0, 1))
    with pytest.raises(InvalidProblemError, match="extra linear constraints"):
        sample_volume_returns(constrained, 10)


@pytest.mark.parametrize(
    "option, value", [("n_samples", 0), ("chains", 0), ("thin", 0), ("burn_in", -1), ("workers", 0)]
)
def test_bad_options(option, value):
    kwargs = {"n_samples": 10} | {option: value}
    n_samples = kwargs.pop("n_samples")
    with pytest.raises(InvalidProblemError, match=option):
        sample_volume_returns(leaky_average(), n_samples, **kwargs)


def test_single_action_is_a_point():
    problem = Problem(TabularMDP(np.array([[[0.5, 0.5]], [[1.0, 0.0]]]), gamma=0.9), np.ones((1, 2, 1)))
    samples = sample_volume_returns(problem, 7)
    assert samples.values.shape == (7, 1) and np.all(samples.values == 1.0)


# ------------------------------------------------------------------ reproducibility, warnings
@pytest.mark.filterwarnings("ignore::policyagg.volume.MixingWarning")  # 100 draws per chain, compared to each other
def test_seeded_and_independent_of_workers():
    problem = two_state_discounted()
    a = sample_volume_returns(problem, 301, rng=11, chains=3, workers=1)
    b = sample_volume_returns(problem, 301, rng=11, chains=3, workers=2)
    c = sample_volume_returns(problem, 301, rng=12, chains=3, workers=2)
    assert a.values.shape == (301, 2)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)
    for key in ("chains", "sweeps", "burn_in", "thin", "acceptance", "refreshes", "max_drift", "seconds"):
        assert key in a.info
    assert a.info["max_drift"] < 1e-8


def test_warns_when_chains_disagree():
    """One sweep per chain and no burn-in on a 243-state model: R-hat cannot be near 1."""
    from policyagg.envs.attention import AttentionModel, one_agent_per_site

    model = AttentionModel(3, 3, seed=0)  # 27 states
    problem = Problem(model.mdp(), model.rewards(one_agent_per_site(3, 0)))
    with pytest.warns(MixingWarning, match="poor mixing"):
        sample_volume_returns(problem, 16, rng=0, chains=4, burn_in=0, workers=1)


# ------------------------------------------------------------------ max-quantile and Gruenbaum
def exact_q_star(problem, F, grid=60):
    """max over a grid of O (convex combinations of the vertices) of min_i F_i(J_i(d))."""
    V = vertices(problem)
    weights = [w for w in itertools.product(range(grid + 1), repeat=len(V) - 1) if sum(w) <= grid]
    W = np.array([list(w) + [grid - sum(w)] for w in weights]) / grid
    J = W @ V @ problem.reward_matrix.T
    best = 0.0
    for values in J:
        best = max(best, min(F(i, v) for i, v in enumerate(values)))
    return best


@pytest.mark.parametrize("name", ["bandit2-discounted", "bandit3-average", "chain-discounted", "leaky-average"])
def test_max_quantile_matches_brute_force(name, volume_samples):
    problem = INSTANCES[name]()
    samples = volume_samples(name)
    result = solvers.RULES["max_quantile"](problem, samples)
    q_star = result.diagnostics["q_star"]
    F = exact_cdf(problem)
    exact = exact_q_star(problem, F, grid=400 if len(vertices(problem)) == 2 else 40)
    tolerance = KS_Z / np.sqrt(min(samples.info["ess"])) + 0.01  # sampling + grid resolution
    assert abs(q_star - exact) < tolerance, (q_star, exact)
    assert q_star >= 1 / np.e - tolerance


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_problems(max_states=3, max_actions=3, max_agents=3))
def test_gruenbaum_bound(problem):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MixingWarning)
        samples = sample_volume_returns(problem, 1500, rng=0, workers=1)
    result = solvers.RULES["max_quantile"](problem, samples)
    tolerance = KS_Z / np.sqrt(max(min(samples.info["ess"]), 1.0))
    assert result.diagnostics["q_star"] >= 1 / np.e - tolerance


# ------------------------------------------------------------------ diagnostics
def ar1(rng, phi, chains, n):
    x = np.empty((chains, n))
    x[:, 0] = rng.normal(size=chains)
    noise = rng.normal(size=(chains, n)) * np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[:, t] = phi * x[:, t - 1] + noise[:, t]
    return x


@pytest.mark.parametrize("phi, tolerance", [(0.0, 0.1), (0.5, 0.1), (0.9, 0.25)])
def test_ess_of_ar1(phi, tolerance):
    chains = ar1(np.random.default_rng(0), phi, 4, 5000)
    expected = chains.size * (1 - phi) / (1 + phi)
    assert effective_sample_size(chains) == pytest.approx(expected, rel=tolerance)
    assert rhat(chains) < 1.01


def test_rhat_detects_shifted_chain_and_trend():
    rng = np.random.default_rng(1)
    chains = rng.normal(size=(4, 1000))
    chains[0] += 1.0
    assert rhat(chains) > 1.05
    trend = rng.normal(size=(4, 1000)) + np.linspace(0, 3, 1000)  # each chain drifts: split halves disagree
    assert rhat(trend) > 1.1
    scale = rng.normal(size=(4, 1000)) * np.array([[1.0], [1.0], [1.0], [4.0]])  # same centre, wider tails
    assert rhat(scale) > 1.01


def test_diagnostics_per_column_and_bad_input():
    draws = np.random.default_rng(2).normal(size=(3, 200, 2))
    assert np.shape(rhat(draws)) == (2,) and np.shape(effective_sample_size(draws)) == (2,)
    assert rhat(np.ones((2, 10))) == 1.0
    with pytest.raises(InvalidSamplesError, match="draws"):
        rhat(np.ones((2, 3)))
