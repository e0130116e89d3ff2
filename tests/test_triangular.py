"""Block-triangular solves over strongly connected components (policyagg.triangular) and their users:
the sampler's ``triangular`` method, exact occupancies and policy iteration.

References are dense solves written here: ``(I - gamma P_pi^T) mu = (1 - gamma) rho`` and
``(I - gamma P_pi) v = c_pi`` with ``P_pi`` from an einsum, and value iteration for optima."""

import importlib.util

import numpy as np
import pytest
import scipy.sparse as sp
from reference import lp_max
from scipy.sparse import csgraph

import policyagg.mdp as mdp_module
import policyagg.sampling as sampling
import policyagg.triangular as triangular
from policyagg.errors import InvalidMDPError, InvalidProblemError
from policyagg.mdp import TabularMDP
from policyagg.planning import PolicyIteration
from policyagg.problem import Problem
from policyagg.sampling import PolicySampler, sample_policy_returns
from policyagg.triangular import TriangularStructure, component_order, topological_order

HAS_NUMBA = importlib.util.find_spec("numba") is not None
KERNELS_HERE = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAS_NUMBA, reason="needs numba (fast)"))]


def layered_P(levels=5, width=30, n_actions=3, seed=0, branching=3):
    """Dense ``P`` (S, A, S): ``levels`` groups of ``width`` states; each action moves to
    ``branching`` random states of its own group or the next (so groups never lead back), with the
    states then shuffled (the structure must find the order itself)."""
    rng = np.random.default_rng(seed)
    S = levels * width
    P = np.zeros((S, n_actions, S))
    for s in range(S):
        level = s // width
        reach = np.arange(level * width, min(S, (level + 2) * width))
        for a in range(n_actions):
            targets = rng.choice(reach, size=branching, replace=False)
            P[s, a, targets] = rng.random(branching) + 0.1
    P /= P.sum(axis=2, keepdims=True)
    shuffle = rng.permutation(S)
    return P[shuffle][:, :, shuffle]


def layered_problem(gamma=0.95, seed=0, **shape):
    P = layered_P(seed=seed, **shape)
    S, A = P.shape[:2]
    rng = np.random.default_rng(seed + 1)
    rho = rng.random(S)
    mdp = TabularMDP(P, rho=rho / rho.sum(), gamma=gamma)
    return Problem(mdp, rng.random((2, S, A)))


def dense_solutions(P, policy, gamma, rhs, c_pi):
    """``mu`` of ``(I - gamma P_pi^T) mu = rhs`` and ``v`` of ``(I - gamma P_pi) v = c_pi``."""
    P_pi = np.einsum("sa,sat->st", policy, P)
    eye = np.eye(len(P_pi))
    return np.linalg.solve(eye - gamma * P_pi.T, rhs), np.linalg.solve(eye - gamma * P_pi, c_pi)


# --------------------------------------------------------------------------- the structure
def test_structure_orders_components_topologically_with_true_bandwidths():
    P = layered_P(levels=6, width=25, seed=3)
    S, A = P.shape[:2]
    t = TriangularStructure.from_transitions(sp.csr_array(P.reshape(S * A, S)), A)
    assert sorted(t.order) == list(range(S)) and (t.position[t.order] == np.arange(S)).all()
    # the components are the strongly connected components of the union graph
    graph = sp.csr_array((P.sum(axis=1) > 0).astype(float))
    n, labels = csgraph.connected_components(graph, directed=True, connection="strong")
    assert t.n_components == n
    component = np.searchsorted(t.starts, np.arange(S), side="right") - 1  # of each position
    for c in range(n):
        states = t.order[t.starts[c] : t.starts[c + 1]]
        assert len(set(labels[states])) == 1 and (labels == labels[states[0]]).sum() == len(states)
    # no transition leads to an earlier component; inside one, every entry lies in the band
    source, _, target = np.nonzero(P)
    i, j = t.position[target], t.position[source]
    assert (component[i] >= component[j]).all()
    same = component[i] == component[j]
    assert (i[same] - j[same] <= t.lower[component[j[same]]]).all()
    assert (j[same] - i[same] <= t.upper[component[j[same]]]).all()
    assert t.work == int(sum((t.starts[c + 1] - t.starts[c]) * (t.lower[c] + 1) * (t.upper[c] + 1) for c in range(n)))


@pytest.mark.parametrize("kernel", KERNELS_HERE)
def test_stored_zeros_pointing_back_are_no_transitions(kernel):
    """A stored zero from the last component to the first must neither order the components nor
    be written into a band (it would fall outside it)."""
    P = layered_P(levels=3, width=10, n_actions=2, seed=4)
    S, A = P.shape[:2]
    matrix = sp.csr_array(P.reshape(S * A, S))
    first = np.flatnonzero(P.sum(axis=(1, 2)) > 0)[0]
    coo = matrix.tocoo()
    rows, cols = np.r_[coo.row, np.arange(S * A)], np.r_[coo.col, np.full(S * A, first)]
    data = np.r_[coo.data, np.zeros(S * A)]
    with_zeros = sp.csr_array((data, (rows, cols)), shape=(S * A, S))
    with_zeros.sum_duplicates()
    assert with_zeros.nnz > matrix.nnz  # the zeros are stored
    t = TriangularStructure.from_transitions(with_zeros, A)
    reference = TriangularStructure.from_transitions(matrix, A)
    assert t.n_components == reference.n_components and t.work == reference.work
    policies = np.random.default_rng(0).dirichlet(np.ones(A), size=(2, S))
    rhs = np.random.default_rng(1).random(S)
    x, _ = triangular.solve(t, policies, rhs, 0.9, kernel=kernel)
    for k, policy in enumerate(policies):
        np.testing.assert_allclose(x[k], dense_solutions(P, policy, 0.9, rhs, rhs)[0], rtol=1e-11, atol=1e-13)


def test_topological_order_of_a_random_dag_and_a_cycle():
    rng = np.random.default_rng(0)
    n = 200
    rank = rng.permutation(n)  # a hidden order; edges go from lower to higher rank
    a, b = rng.integers(0, n, 1000), rng.integers(0, n, 1000)
    source, target = np.where(rank[a] < rank[b], a, b), np.where(rank[a] < rank[b], b, a)
    order = topological_order(n, source, target)
    where = np.empty(n, int)
    where[order] = np.arange(n)
    assert sorted(order) == list(range(n)) and (where[source] <= where[target]).all()
    with pytest.raises(InvalidMDPError, match="cycle"):
        topological_order(3, np.array([0, 1, 2]), np.array([1, 2, 0]))


def test_component_order_without_a_consistent_numbering():
    """Labels that go up along one edge and down along another: Kahn's order is used."""
    labels = np.array([1, 0, 2])  # states 0 -> 1 -> 2, components 1 -> 0 -> 2
    rank = component_order(3, labels, np.array([0, 1]), np.array([1, 2]))
    assert rank[1] < rank[0] < rank[2]
    assert list(component_order(3, np.array([2, 1, 0]), np.array([0, 1]), np.array([1, 2]))) == [2, 1, 0]


# --------------------------------------------------------------------------- solves
@pytest.mark.parametrize("kernel", KERNELS_HERE)
@pytest.mark.parametrize("transpose", [False, True])
def test_solves_match_dense_solves(kernel, transpose):
    P = layered_P(levels=4, width=20, n_actions=3, seed=5)
    S, A = P.shape[:2]
    t = TriangularStructure.from_transitions(sp.csr_array(P.reshape(S * A, S)), A)
    rng = np.random.default_rng(6)
    policies = rng.dirichlet(np.ones(A), size=(3, S))
    policies[2] = np.eye(A)[rng.integers(0, A, S)]  # a deterministic policy too
    rhs, gamma = rng.random(S), 0.97
    x, residuals = triangular.solve(t, policies, rhs, gamma, transpose=transpose, kernel=kernel)
    for k, policy in enumerate(policies):
        mu, v = dense_solutions(P, policy, gamma, rhs, rhs)
        np.testing.assert_allclose(x[k], v if transpose else mu, rtol=1e-11, atol=1e-13)
    assert (residuals < 1e-13 * np.linalg.norm(rhs)).all()


@pytest.mark.parametrize("kernel", KERNELS_HERE)
@pytest.mark.parametrize("gamma, scale", [(0.9999, 1.0), (0.99, 1e-12), (0.99, 1e12)])
def test_solves_match_dense_solves_near_one_and_at_extreme_scales(kernel, gamma, scale):
    """A discount near 1 (the blocks are barely diagonally dominant) and right-hand sides from
    1e-12 to 1e12: the same relative accuracy against the dense solve."""
    P = layered_P(levels=4, width=20, n_actions=3, seed=11)
    S, A = P.shape[:2]
    t = TriangularStructure.from_transitions(sp.csr_array(P.reshape(S * A, S)), A)
    rng = np.random.default_rng(12)
    policies = rng.dirichlet(np.ones(A), size=(2, S))
    rhs = scale * rng.random(S)
    for transpose in (False, True):
        x, residuals = triangular.solve(t, policies, rhs, gamma, transpose=transpose, kernel=kernel)
        for k, policy in enumerate(policies):
            mu, v = dense_solutions(P, policy, gamma, rhs, rhs)
            want = v if transpose else mu
            np.testing.assert_allclose(x[k], want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
            assert triangular.accepted(residuals[k], rhs, x[k])
            P_pi = np.einsum("sa,sat->st", policy, P)
            system = np.eye(S) - gamma * (P_pi if transpose else P_pi.T)
            off = x[k] * (1 + 1e-6 * rng.standard_normal(S))  # a solution wrong in its 7th digit
            assert not triangular.accepted(np.linalg.norm(rhs - system @ off), rhs, off)


def test_occupancy_near_one_discount_is_accepted_from_the_blocks(monkeypatch):
    """At gamma = 0.9999 the block solve's residual is about 1e-11 of the right-hand side (the
    occupancy grows like 1 / (1 - gamma) before normalising); the backward-error test accepts it,
    so no sparse LU is needed."""
    import policyagg.mdp as mdp_module

    monkeypatch.setattr(mdp_module, "TRIANGULAR_MIN_STATES", 10)
    problem = layered_problem(gamma=0.9999, seed=13)
    mdp = problem.mdp
    assert mdp.triangular is not None
    policy = np.random.default_rng(14).dirichlet(np.ones(mdp.n_actions), size=mdp.n_states)
    lu_called = []
    monkeypatch.setattr(mdp_module.spla, "spsolve", lambda *a, **k: lu_called.append(1))
    mu = mdp.state_occupancy(policy)
    assert not lu_called
    want, _ = dense_solutions(mdp.P_dense, policy, mdp.gamma, (1 - mdp.gamma) * mdp.rho, np.zeros(mdp.n_states))
    np.testing.assert_allclose(mu, want / want.sum(), rtol=1e-9, atol=1e-14)


def test_large_components_are_solved_by_sparse_lu(monkeypatch):
    monkeypatch.setattr(triangular, "DENSE_COMPONENT_MAX_STATES", 5)
    P = layered_P(levels=3, width=15, seed=7)
    S, A = P.shape[:2]
    t = TriangularStructure.from_transitions(sp.csr_array(P.reshape(S * A, S)), A)
    assert t.sizes.max() > 5
    policies = np.random.default_rng(8).dirichlet(np.ones(A), size=(2, S))
    rhs = np.random.default_rng(9).random(S)
    for transpose in (False, True):
        x, _ = triangular.solve(t, policies, rhs, 0.9, transpose=transpose, kernel="numpy")
        for k, policy in enumerate(policies):
            expected = dense_solutions(P, policy, 0.9, rhs, rhs)[int(transpose)]
            np.testing.assert_allclose(x[k], expected, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("transpose", [False, True])
def test_residual_norms_see_a_wrong_solution(transpose):
    P = layered_P(levels=3, width=10, seed=2)
    S, A = P.shape[:2]
    t = TriangularStructure.from_transitions(sp.csr_array(P.reshape(S * A, S)), A)
    policy = np.random.default_rng(1).dirichlet(np.ones(A), size=(1, S))
    rhs = np.random.default_rng(2).random(S)
    wrong = np.random.default_rng(3).random(S)
    P_pi = np.einsum("sa,sat->st", policy[0], P)
    system = np.eye(S) - 0.9 * (P_pi if transpose else P_pi.T)
    got = triangular.residual_norms(t, policy, rhs, 0.9, wrong[t.order][None], transpose=transpose)
    np.testing.assert_allclose(got, [np.linalg.norm(rhs - system @ wrong)], rtol=1e-12)


# --------------------------------------------------------------------------- the sampler
@pytest.mark.parametrize("kernel", KERNELS_HERE)
def test_sampler_picks_the_triangular_method_and_matches_dense_solves(kernel):
    problem = layered_problem(levels=6, width=30)  # 180 states: above the dense method
    sampler = PolicySampler(problem, kernel=kernel)
    assert sampler.method == "triangular" and sampler.blocks is not None
    policies = sampler.draw_policies(np.random.default_rng(2), 5)
    got = sampler.returns(policies)
    mdp = problem.mdp
    for k, policy in enumerate(policies):
        mu, _ = dense_solutions(mdp.P_dense, policy, mdp.gamma, (1 - mdp.gamma) * mdp.rho, np.zeros(mdp.n_states))
        expected = np.einsum("s,sa,isa->i", mu, policy, problem.rewards)
        np.testing.assert_allclose(got[k], expected, rtol=1e-11, atol=1e-13)


def test_triangular_samples_are_seeded_and_independent_of_workers():
    problem = layered_problem(levels=6, width=30, seed=4)
    options = {"rng": 3, "batch_size": 16, "progress": False}
    serial = sample_policy_returns(problem, 100, workers=1, **options)
    parallel = sample_policy_returns(problem, 100, workers=2, **options)
    np.testing.assert_array_equal(serial.values, parallel.values)
    assert serial.info["method"] == "triangular" and serial.info["direct_solves"] == 0
    # the same policies through the krylov method: the same returns (both exact)
    krylov = sample_policy_returns(problem, 100, workers=1, method="krylov", **options)
    np.testing.assert_allclose(serial.values, krylov.values, rtol=1e-10, atol=1e-12)


def test_a_failed_residual_check_falls_back_to_a_direct_solve(monkeypatch):
    problem = layered_problem(levels=6, width=30, seed=5)
    sampler = PolicySampler(problem, method="triangular")
    policies = sampler.draw_policies(np.random.default_rng(0), 4)
    expected, counts = sampler.solve_batch(policies)
    assert counts.tolist() == [0, 0, 0]
    monkeypatch.setattr(sampling, "RESIDUAL_TOL", -1.0)  # no residual passes
    monkeypatch.setattr(sampler, "solve_direct", lambda p: np.full((len(p), sampler.S), 7.0))
    mu, counts = sampler.solve_batch(policies)
    assert counts.tolist() == [0, 0, 4] and (mu == 7.0).all()
    # and the real direct solve agrees with the triangular one
    np.testing.assert_allclose(PolicySampler(problem, method="sparse").solve_direct(policies), expected, atol=1e-13)


@pytest.mark.filterwarnings("ignore::policyagg.mdp.StructureWarning")  # gamma = 1 on a non-communicating MDP
def test_triangular_method_needs_discounting_and_auto_skips_one_big_component():
    P = layered_P(levels=6, width=30)
    with pytest.raises(InvalidProblemError, match="gamma"):
        PolicySampler(
            Problem(TabularMDP(P, gamma=1.0, allow_multichain=True), np.ones((1,) + P.shape[:2])), method="triangular"
        )
    # one strongly connected component: the banded elimination would cost more than GMRES
    rng = np.random.default_rng(0)
    S, A = 400, 3
    dense = rng.random((S, A, S)) * (rng.random((S, A, S)) < 0.05)
    dense[np.arange(S), 0, (np.arange(S) + 1) % S] += 1.0  # a cycle through every state
    dense /= dense.sum(axis=2, keepdims=True)
    sampler = PolicySampler(Problem(TabularMDP(dense, gamma=0.9), np.ones((1, S, A))))
    assert sampler.blocks is None and sampler.method == "krylov"
    assert sampling.resolve_method("auto", 2000, triangular=True) == "triangular"
    assert sampling.resolve_method("auto", 100, triangular=True) == "dense"


# --------------------------------------------------------------------------- exact evaluation, policy iteration
def test_occupancy_by_blocks_matches_a_sparse_lu(monkeypatch):
    monkeypatch.setattr(mdp_module, "TRIANGULAR_MIN_STATES", 100)
    problem = layered_problem(levels=6, width=30, seed=6)
    mdp = problem.mdp
    assert mdp.triangular is not None
    policy = np.random.default_rng(0).dirichlet(np.ones(mdp.n_actions), size=mdp.n_states)
    P_pi = sp.csr_array(np.einsum("sa,sat->st", policy, mdp.P_dense))
    mu = sp.linalg.spsolve(sp.csc_array(sp.eye_array(mdp.n_states) - mdp.gamma * P_pi.T), (1 - mdp.gamma) * mdp.rho)
    np.testing.assert_allclose(mdp.state_occupancy(policy), mu / mu.sum(), rtol=1e-11, atol=1e-14)


def test_policy_iteration_by_blocks_reaches_the_lp_optimum(monkeypatch):
    monkeypatch.setattr(mdp_module, "TRIANGULAR_MIN_STATES", 100)
    problem = layered_problem(levels=5, width=24, seed=7)
    mdp = problem.mdp
    assert mdp.triangular is not None
    c = problem.rewards[0].ravel()
    planner = PolicyIteration(mdp, direct_max_states=0)  # above it: the iterative path, here by blocks
    calls = []
    original = planner._evaluate_triangular
    monkeypatch.setattr(planner, "_evaluate_triangular", lambda *a: calls.append(1) or original(*a))
    result = planner.run(c)
    value, _ = lp_max(c, mdp.P_dense, mdp.rho, mdp.gamma)
    d = np.zeros(mdp.n_state_actions)
    d[np.arange(mdp.n_states) * mdp.n_actions + result.policy] = result.mu
    assert calls and abs(c @ d - value) < 1e-10 and abs(result.bound - value) < 1e-10


def test_rules_on_a_small_four_room_match_the_direct_lp(monkeypatch):
    """Four-room with three shapes (about 1,200 states in 8 components): ranges and column
    generation price by policy iteration evaluated by blocks, exact occupancies are solved by
    blocks, samples are drawn by the triangular method; the rules agree with one HiGHS LP over
    the whole polytope, and each agent's range with its own direct LP."""
    pytest.importorskip("mo_gymnasium")
    from test_enumerate_scale import _four_room_maze

    from policyagg import solvers
    from policyagg.envs.tabular import from_gymnasium, make_env
    from policyagg.solvers.occupancy import decomposition

    monkeypatch.setattr(mdp_module, "TRIANGULAR_MIN_STATES", 100)
    model = from_gymnasium(make_env("four-room-v0", maze=_four_room_maze(3)), gamma=0.99, rng=0)
    problem = model.problem()
    assert problem.mdp.triangular is not None and problem.mdp.n_states > 500  # above policy iteration's LU
    problem = solvers.with_ranges(problem)
    samples = sample_policy_returns(problem, 200, rng=0, workers=1, progress=False)
    assert samples.info["method"] == "triangular"
    results = {}
    for mode in ("always", "never"):
        with decomposition(mode):
            results[mode] = [
                solvers.get_rule("utilitarian")(problem, normalize=True),
                solvers.get_rule("egalitarian")(problem, normalize=True),
                solvers.get_rule("max_quantile")(problem, samples),
            ]
            if mode == "never":
                best = [
                    solvers.get_rule("utilitarian")(Problem(problem.mdp, r[None])).returns[0] for r in problem.rewards
                ]
    np.testing.assert_allclose(problem.ranges.upper, best, rtol=1e-9)
    (u_gen, e_gen, q_gen), (u_dir, e_dir, q_dir) = results.values()
    assert all(r.status == "optimal" for r in (u_gen, e_gen, q_gen, u_dir, e_dir, q_dir))
    assert abs(u_gen.normalized.sum() - u_dir.normalized.sum()) < 1e-7  # the welfare (optima may tie)
    np.testing.assert_allclose(np.sort(e_gen.normalized), np.sort(e_dir.normalized), atol=1e-7)  # leximin levels
    assert q_gen.diagnostics["q_star"] == q_dir.diagnostics["q_star"] and q_gen.min_rank >= q_gen.diagnostics["q_star"]


@pytest.mark.parametrize("levels, width", [(5, 30), (1, 150), (2, 100)])
def test_if_it_pays_decides_as_pays_does(levels, width):
    """``if_it_pays`` decides from the ordering alone, before the copy of ``P``: the same answer as
    :func:`pays` on the full structure, for many small components and for one large one."""
    P = layered_P(levels=levels, width=width, n_actions=3, seed=levels)
    S, A = P.shape[:2]
    csr = sp.csr_array(P.reshape(S * A, S))
    full = TriangularStructure.from_transitions(csr, A)
    lazy = TriangularStructure.if_it_pays(csr, A)
    assert (lazy is not None) == triangular.pays(full, csr.nnz)
    if lazy is not None:
        np.testing.assert_array_equal(lazy.order, full.order)
        np.testing.assert_array_equal(lazy.data, full.data)


def test_one_large_component_keeps_no_structure(monkeypatch):
    """A discounted MDP of one strongly connected component: the sampler picks an iterative method
    and neither it nor the MDP keeps a block structure (a copy of ``P``) around."""
    import policyagg.mdp as mdp_module

    monkeypatch.setattr(mdp_module, "TRIANGULAR_MIN_STATES", 100)
    rng = np.random.default_rng(3)
    S, A = 200, 3
    P = rng.random((S, A, S)) * (rng.random((S, A, S)) < 0.05)
    P[np.arange(S), :, (np.arange(S) + 1) % S] += 1.0  # a cycle through every state: one component
    P /= P.sum(axis=2, keepdims=True)
    mdp = TabularMDP(P, gamma=0.95)
    sampler = PolicySampler(Problem(mdp, np.ones((1, S, A))))
    assert sampler.method != "triangular" and sampler.blocks is None
    assert mdp.triangular is None and "triangular_structure" not in vars(mdp)
