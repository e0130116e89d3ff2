"""Kronecker-structured transitions: the products against a brute-force P, validation, and the
sampler's ``kronecker`` method against direct solves."""

import importlib.util
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import occupancy_by_dense_solve

from policyagg.envs.attention import AttentionModel, one_agent_per_site
from policyagg.errors import InvalidMDPError, InvalidProblemError
from policyagg.kronecker import KroneckerTransitions
from policyagg.mdp import TabularMDP
from policyagg.problem import Problem
from policyagg.sampling import PolicySampler, resolve_method, sample_policy_returns

HAVE_NUMBA = importlib.util.find_spec("numba") is not None
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="needs numba (fast)")
KERNELS_HERE = [
    "numpy",
    pytest.param(
        "numba", marks=pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="needs numba (fast)")
    ),
]


def stochastic(rng, m, zeros=0.3):
    """A random row-stochastic m x m matrix with some zero entries (an invertible one, whp)."""
    matrix = rng.random((m, m)) * (rng.random((m, m)) > zeros) + np.eye(m)
    return matrix / matrix.sum(axis=1, keepdims=True)


def brute_force_P(sizes, factors_of_action):
    """P[s*A + a, t] = prod_i F_{a,i}[s_i, t_i], by enumerating every pair of states."""
    A = len(factors_of_action)
    states = list(itertools.product(*[range(m) for m in reversed(sizes)]))  # s_{n-1} slowest
    S = len(states)
    P = np.zeros((S * A, S))
    for s, source in enumerate(states):
        for t, target in enumerate(states):
            for a, factors in enumerate(factors_of_action):
                value = 1.0
                for i in range(len(sizes)):  # component i is digit i from the right
                    value *= factors[i][source[-1 - i], target[-1 - i]]
                P[s * A + a, t] = value
    return P


@st.composite
def structures(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    n_actions = draw(st.integers(1, 3))
    base = [stochastic(rng, m) for m in sizes]
    overrides = []
    for _ in range(n_actions):
        chosen = draw(st.sets(st.integers(0, len(sizes) - 1), max_size=len(sizes)))
        overrides.append({i: stochastic(rng, sizes[i], zeros=0.6) for i in chosen})
    return sizes, base, overrides


@settings(max_examples=40, deadline=None)
@given(structure=structures())
def test_products_match_a_brute_force_P(structure):
    sizes, base, overrides = structure
    kron = KroneckerTransitions(base, overrides)
    factors = [[overrides[a].get(i, base[i]) for i in range(len(sizes))] for a in range(len(overrides))]
    P = brute_force_P(sizes, factors)
    np.testing.assert_allclose(kron.matrix().toarray(), P, atol=1e-14)
    S, A = kron.n_states, kron.n_actions
    rng = np.random.default_rng(0)
    v = rng.random((S, 2))
    for a in range(A):
        np.testing.assert_allclose(kron.product(a, v), P[a::A] @ v, atol=1e-13)
    weights = rng.random((A, S, 3))
    x = rng.random((S, 3))
    expected = np.einsum("sat,sab,sb->tb", P.reshape(S, A, S), weights.transpose(1, 0, 2), x)
    np.testing.assert_allclose(kron.transposed_sum(weights, x), expected, atol=1e-12)
    if HAVE_NUMBA:  # the compiled A_pi x = x - gamma sum_a P_a^T (w_a x), by slices of the slowest component
        compiled_apply_matches(kron, P, weights, x)
    assert kron.agrees_with(kron.matrix())


def test_the_attention_model_is_its_kronecker_structure():
    model = AttentionModel(3, 3, seed=4)
    kron = model.kronecker()
    assert (kron.n_states, kron.n_actions) == (27, 4)
    factors = [[model.site_matrix(i, attended=(a == i)).toarray() for i in range(3)] for a in range(4)]
    np.testing.assert_allclose(
        model.transition_matrix().toarray(), brute_force_P([3, 3, 3], factors), rtol=0, atol=1e-15
    )
    assert model.mdp().kronecker is not None


@pytest.mark.parametrize(
    ("base", "overrides", "match"),
    [
        ([np.ones((2, 3)) / 3], [{}], "square"),
        ([np.array([[0.5, 0.6], [0.5, 0.5]])], [{}], "sum to 1"),
        ([np.array([[1.5, -0.5], [0.5, 0.5]])], [{}], "non-negative"),
        ([np.eye(2)], [{1: np.eye(2)}], "components are 0..0"),
        ([np.eye(2)], [{0: np.eye(3)}], r"shape \(3, 3\), not \(2, 2\)"),
        ([np.eye(2)], [], "one entry"),
    ],
)
def test_invalid_structures_are_refused(base, overrides, match):
    with pytest.raises(InvalidMDPError, match=match):
        KroneckerTransitions(base, overrides)


def test_a_singular_overridden_base_has_no_summed_product_but_a_matrix():
    singular = np.array([[0.5, 0.5], [0.5, 0.5]])
    kron = KroneckerTransitions([singular, np.eye(2)], [{0: np.eye(2)}, {}])
    assert kron.matrix().shape == (8, 4)
    with pytest.raises(InvalidMDPError, match="condition number"):
        kron.check_transposed_sum()
    mdp = TabularMDP(kron.matrix(), gamma=0.9, n_actions=2, kronecker=kron)
    problem = Problem(mdp, np.ones((1, 4, 2)))
    with pytest.raises(InvalidProblemError, match="method='kronecker' is not available"):
        PolicySampler(problem, method="kronecker")


def test_an_mdp_refuses_a_structure_that_is_not_its_P():
    other = AttentionModel(3, 3, seed=1).kronecker()
    P = AttentionModel(3, 3, seed=0).transition_matrix()
    with pytest.raises(InvalidMDPError, match="does not describe `P`"):
        TabularMDP(P, gamma=0.9, n_actions=4, kronecker=other)
    with pytest.raises(InvalidMDPError, match="must be a KroneckerTransitions"):
        TabularMDP(P, gamma=0.9, n_actions=4, kronecker=P)


def attention_problem(n_sites, gamma=1.0):
    model = AttentionModel(n_sites, 3, seed=0)
    return Problem(model.mdp(gamma=gamma), model.rewards(one_agent_per_site(n_sites, 0)))


@pytest.mark.parametrize(
    ("kernel", "solver"),
    [
        ("numpy", "gmres"),
        pytest.param("numba", "gmres", marks=needs_numba),
        pytest.param("numba", "bicgstab", marks=needs_numba),
    ],
)
@pytest.mark.parametrize("gamma", [1.0, 0.9, 0.999, 0.9999])
def test_the_kronecker_method_gives_the_exact_returns(gamma, kernel, solver):
    problem = attention_problem(4, gamma)  # 81 states
    sampler = PolicySampler(problem, method="kronecker", kernel=kernel, solver=solver)
    assert sampler.solver == solver
    policies = sampler.draw_policies(np.random.default_rng(2), 12)
    mdp = problem.mdp
    R = problem.rewards.reshape(problem.n_agents, -1)
    expected = [R @ occupancy_by_dense_solve(mdp.P_dense, mdp.rho, mdp.gamma, p).ravel() for p in policies]
    np.testing.assert_allclose(sampler.returns(policies), expected, rtol=1e-9, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(structure=structures(), gamma=st.sampled_from([0.5, 0.95]), kernel=st.sampled_from(["numpy", "numba"]))
def test_the_kronecker_method_on_random_factored_mdps(structure, gamma, kernel):
    if kernel == "numba" and importlib.util.find_spec("numba") is None:
        kernel = "numpy"
    sizes, base, overrides = structure
    kron = KroneckerTransitions(base, overrides)
    mdp = TabularMDP(kron.matrix(), gamma=gamma, n_actions=kron.n_actions, kronecker=kron)
    rewards = np.random.default_rng(1).random((2, mdp.n_states, mdp.n_actions))
    sampler = PolicySampler(Problem(mdp, rewards), method="kronecker", kernel=kernel)
    policies = sampler.draw_policies(np.random.default_rng(3), 5)
    expected = [
        rewards.reshape(2, -1) @ occupancy_by_dense_solve(mdp.P_dense, mdp.rho, gamma, p).ravel() for p in policies
    ]
    np.testing.assert_allclose(sampler.returns(policies), expected, rtol=0, atol=1e-10)


def test_auto_picks_the_kronecker_method_on_large_factored_models():
    assert resolve_method("auto", 2187, factored=True) == "kronecker"
    assert resolve_method("auto", 2187, factored=False) == "sparse"
    assert resolve_method("auto", 243, factored=True) == "krylov"
    assert resolve_method("auto", 243, factored=True, compiled=True) == "kronecker"  # (its BiCGSTAB)
    assert resolve_method("auto", 100, factored=True, compiled=True) == "dense"
    with pytest.raises(InvalidProblemError, match="needs an MDP with a Kronecker structure"):
        resolve_method("kronecker", 243, factored=False)


def test_seven_sites_by_the_kronecker_method_match_policy_evaluation_and_do_not_depend_on_workers():
    problem = attention_problem(7)  # 2187 states
    options = {"rng": 5, "batch_size": 4, "progress": False}
    serial = sample_policy_returns(problem, 8, workers=1, **options)
    parallel = sample_policy_returns(problem, 8, workers=2, **options)
    assert serial.info["method"] == "kronecker" and serial.info["direct_solves"] == 0
    assert PolicySampler(problem)._structure_residuals  # P is the structure to rounding: no product with P
    np.testing.assert_array_equal(parallel.values, serial.values)
    sampler = PolicySampler(problem)
    children = np.random.default_rng(5).spawn(2)
    policies = np.concatenate([sampler.draw_policies(child, 4) for child in children])
    expected = np.array([problem.mdp.evaluate(p, problem.rewards) for p in policies])  # sparse direct solves
    np.testing.assert_allclose(serial.values, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kernel", KERNELS_HERE)
def test_a_structure_slightly_off_p_still_gives_the_returns_of_p(kernel):
    """A structure within the MDP's check (1e-7) but 5e-8 off one row of P: the samples are
    the exact returns of P (the residuals that decide convergence use P, or the structure plus a
    bound on the difference), not those of the structure."""
    model = AttentionModel(4, 3, seed=0)
    kron = model.kronecker()
    P = kron.matrix().tolil()
    row = 7 * kron.n_actions + 2
    columns = P.rows[row]
    P[row, columns[0]] += 5e-8
    P[row, columns[1]] -= 5e-8
    mdp = TabularMDP(P.tocsr(), rho=model.mdp().rho, gamma=1.0, n_actions=kron.n_actions, kronecker=kron)
    problem = Problem(mdp, model.rewards(one_agent_per_site(4, 0)))
    sampler = PolicySampler(problem, method="kronecker", kernel=kernel)
    assert sampler._structure_gap == pytest.approx(1e-7, rel=1e-6) and not sampler._structure_residuals
    assert mdp.kronecker_gap == sampler._structure_gap  # (measured once, kept on the MDP)
    with pytest.raises(InvalidMDPError, match="no Kronecker structure"):
        _ = TabularMDP(P.tocsr(), gamma=1.0, n_actions=kron.n_actions).kronecker_gap
    policies = sampler.draw_policies(np.random.default_rng(0), 6)
    R = problem.rewards.reshape(problem.n_agents, -1)
    of_p = np.array([R @ occupancy_by_dense_solve(mdp.P_dense, mdp.rho, 1.0, p).ravel() for p in policies])
    kron_dense = kron.matrix().toarray().reshape(mdp.n_states, mdp.n_actions, mdp.n_states)
    of_structure = np.array([R @ occupancy_by_dense_solve(kron_dense, mdp.rho, 1.0, p).ravel() for p in policies])
    assert np.abs(of_p - of_structure).max() > 1e-9  # the two models are told apart at the tolerance below
    np.testing.assert_allclose(sampler.returns(policies), of_p, rtol=0, atol=2e-10)


def compiled_apply_matches(kron, P, weights, x):
    """:func:`kronecker_apply` against the dense ``P`` (S*A, S), for gamma 0.7 and for average reward."""
    from policyagg.sampling_kernel import kronecker_apply

    S, A = kron.n_states, kron.n_actions
    summed = np.einsum("sat,sab,sb->tb", P.reshape(S, A, S), weights.transpose(1, 0, 2), x)
    for gamma, average in ((0.7, False), (1.0, True)):
        expected = x - gamma * summed
        if average:
            expected[-1] = x.sum(axis=0)
        out = np.empty(x.shape)
        kronecker_apply(np.ascontiguousarray(weights), np.ascontiguousarray(x), gamma, average, kron.packed, out,
                        np.empty((3, x.size)), np.empty((0, 0)))  # fmt: skip
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
        # scaled: A_pi (scale x) from weights multiplied by the scale
        scale = np.linspace(0.5, 2.0, x.size).reshape(x.shape)
        expected = scale * x - gamma * np.einsum(
            "sat,sab,sb->tb", P.reshape(S, A, S), weights.transpose(1, 0, 2), scale * x
        )
        if average:
            expected[-1] = (scale * x).sum(axis=0)
        kronecker_apply(np.ascontiguousarray(weights * scale), np.ascontiguousarray(x), gamma, average, kron.packed,
                        out, np.empty((3, x.size)), scale)  # fmt: skip
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


@needs_numba
def test_the_compiled_product_with_larger_components_and_several_overrides():
    """Components of 4, 2 and 3 values (the general loops, not the 3-value one), an action that overrides
    two components, one that overrides the slowest, one that overrides none."""
    rng = np.random.default_rng(7)
    sizes = [4, 2, 3]
    base = [stochastic(rng, m) for m in sizes]
    overrides = [{0: stochastic(rng, 4), 2: stochastic(rng, 3)}, {2: stochastic(rng, 3)}, {}, {1: stochastic(rng, 2)}]
    kron = KroneckerTransitions(base, overrides)
    factors = [[overrides[a].get(i, base[i]) for i in range(3)] for a in range(4)]
    P = brute_force_P(sizes, factors)
    compiled_apply_matches(kron, P, rng.random((4, 24, 5)), rng.random((24, 5)))


@needs_numba
def test_bicgstab_blocks_give_the_samples_solved_alone():
    """A batch is solved in blocks (of 44 samples at 729 states, BICGSTAB_BLOCK_ENTRIES): the same
    occupancies, to rounding, as each sample solved alone (numpy's reductions over a block of one
    sum in another order)."""
    from policyagg.sampling import BICGSTAB_BLOCK_ENTRIES

    block = BICGSTAB_BLOCK_ENTRIES // 729

    problem = attention_problem(6)  # 729 states: kronecker under auto
    sampler = PolicySampler(problem)
    assert (sampler.method, sampler.solver) == ("kronecker", "bicgstab")
    policies = sampler.draw_policies(np.random.default_rng(4), 2 * block + 3)
    together, counts = sampler.solve_batch(policies)
    alone = np.concatenate([sampler.solve_batch(p[None])[0] for p in policies])
    np.testing.assert_allclose(together, alone, rtol=1e-9, atol=1e-15)
    assert counts[0] > 0 and counts[2] == 0
    expected = np.array([problem.mdp.evaluate(p, problem.rewards) for p in policies[:4]])
    np.testing.assert_allclose(sampler.returns(policies[:4]), expected, rtol=1e-9, atol=1e-9)


@needs_numba
def test_the_kronecker_product_is_compiled_once():
    """BiCGSTAB's scaled and unscaled products and the sampler's own residual product share one
    compiled version of :func:`kronecker_apply` (a flag argument passed as a constant made numba
    compile it three times: 4 s more on a cold cache)."""
    from policyagg.sampling_kernel import kronecker_apply

    sampler = PolicySampler(attention_problem(5))  # 243 states: residuals by the structure's product
    assert (sampler.method, sampler.solver) == ("kronecker", "bicgstab")
    sampler.returns(sampler.draw_policies(np.random.default_rng(0), 3))
    x = np.ones((sampler.S, 2))
    by_action = np.full((sampler.A, sampler.S, 2), 1.0 / sampler.A)
    expected = sampler.apply(np.ascontiguousarray(np.moveaxis(by_action, 0, 1)), x.T).T  # by the sparse P
    np.testing.assert_allclose(sampler.apply_columns(by_action, x), expected, rtol=0, atol=1e-12)
    assert len(kronecker_apply.signatures) == 1, kronecker_apply.signatures


@needs_numba
def test_bicgstab_that_stops_short_is_finished_by_gmres(monkeypatch):
    """Samples BiCGSTAB leaves above the tolerance (here: after 2 iterations) are restarted by GMRES
    and come out exact; the restarts are counted."""
    problem = attention_problem(4)
    sampler = PolicySampler(problem, method="kronecker", solver="bicgstab")
    short = sampler._bicgstab_columns
    monkeypatch.setattr(sampler, "_bicgstab_columns", lambda by_action, scale, x: short(by_action, scale, x, 2))
    policies = sampler.draw_policies(np.random.default_rng(6), 5)
    values, counts = sampler.block_returns(policies)
    assert counts[1] == 5 and counts[0] >= 5 * 4  # every sample restarted, after 2 iterations (4 products) each
    R = problem.rewards.reshape(problem.n_agents, -1)
    mdp = problem.mdp
    expected = [R @ occupancy_by_dense_solve(mdp.P_dense, mdp.rho, 1.0, p).ravel() for p in policies]
    np.testing.assert_allclose(values, expected, rtol=1e-9, atol=1e-9)


def test_bicgstab_is_refused_where_it_is_not_available():
    from policyagg.sampling import resolve_solver

    assert resolve_solver("auto", "kronecker", "numba") == "bicgstab"
    assert resolve_solver("auto", "kronecker", "numpy") == "gmres"
    assert resolve_solver("auto", "krylov", "numba") == "gmres"
    with pytest.raises(InvalidProblemError, match="needs method='kronecker'"):
        resolve_solver("bicgstab", "krylov", "numba")
    with pytest.raises(InvalidProblemError, match="numba kernel"):
        resolve_solver("bicgstab", "kronecker", "numpy")
    with pytest.raises(InvalidProblemError, match="`solver` must be one of"):
        resolve_solver("cg", "kronecker", "numba")
    with pytest.raises(InvalidProblemError, match="needs method='kronecker'"):
        sample_policy_returns(attention_problem(3), 2, solver="bicgstab", progress=False)


@pytest.mark.parametrize("solver", ["gmres", pytest.param("bicgstab", marks=needs_numba)])
def test_the_kronecker_method_on_a_periodic_chain(solver):
    """Components that cycle (a 3-cycle and a swap: one closed class of period 6 under the base
    matrices) with a second action that holds component 0 still: the average-reward systems have
    eigenvalues on the unit circle, and every sample still comes out exact (by restarts or direct
    solves where the Krylov solver stalls)."""
    cycle, swap = np.roll(np.eye(3), 1, axis=1), np.roll(np.eye(2), 1, axis=1)
    kron = KroneckerTransitions([cycle, swap], [{}, {0: np.eye(3)}])
    mdp = TabularMDP(kron.matrix(), gamma=1.0, n_actions=2, kronecker=kron)
    rewards = np.random.default_rng(2).random((3, 6, 2))
    sampler = PolicySampler(Problem(mdp, rewards), method="kronecker", solver=solver)
    policies = sampler.draw_policies(np.random.default_rng(8), 7)
    expected = [
        rewards.reshape(3, -1) @ occupancy_by_dense_solve(mdp.P_dense, mdp.rho, 1.0, p).ravel() for p in policies
    ]
    np.testing.assert_allclose(sampler.returns(policies), expected, rtol=0, atol=1e-10)


@needs_numba
def test_a_seed_draws_the_same_policies_with_and_without_numba():
    """Below KRONECKER_MIN_STATES numba moves "auto" from krylov to the kronecker method, whose own
    default batch would be larger here (10 actions): the draws keep krylov's batch, so the two
    installs give the same samples up to the solvers' rounding."""
    rng = np.random.default_rng(11)
    sizes = [8, 8, 7]  # 448 states
    base = [stochastic(rng, m, zeros=0.0) for m in sizes]
    overrides = [{a % 3: stochastic(rng, sizes[a % 3], zeros=0.0)} for a in range(10)]
    kron = KroneckerTransitions(base, overrides)
    mdp = TabularMDP(kron.matrix(), gamma=1.0, n_actions=10, kronecker=kron)
    problem = Problem(mdp, rng.random((2, 448, 10)))
    options = {"rng": 3, "workers": 1, "progress": False}
    compiled = sample_policy_returns(problem, 300, **options)
    plain = sample_policy_returns(problem, 300, kernel="numpy", **options)
    assert (compiled.info["method"], compiled.info["solver"], plain.info["method"]) == (
        "kronecker",
        "bicgstab",
        "krylov",
    )
    assert compiled.info["batch_size"] == plain.info["batch_size"] < 128
    np.testing.assert_allclose(compiled.values, plain.values, rtol=1e-9, atol=1e-12)
