"""Exact Pareto fronts (policyagg.envs.fronts) against brute force and MO-Gymnasium's shipped fronts.

Brute force: every deterministic policy of a tiny MDP evaluated by a dense linear solve, the
vertices of the convex hull of their returns (scipy.spatial.ConvexHull), the Pareto-optimal
ones by the hull's orientation (2 objectives) or by a primal LP (3-4). For MO-Gymnasium's
environments: independent LPs (scipy.optimize.linprog on tests/reference.py's dense polytope).
"""

import itertools
import json

import numpy as np
import pytest
from reference import dense_polytope, lp_max
from scipy.optimize import linprog
from scipy.spatial import ConvexHull

from policyagg.envs import EnvModel, from_gymnasium
from policyagg.envs.fronts import ParetoFront, pareto_front, read_front, write_front
from policyagg.errors import (
    CorruptFileError,
    InvalidMDPError,
    InvalidProblemError,
    PolicyEvaluationError,
    SolverError,
)
from policyagg.mdp import TabularMDP
from policyagg.polytope import forbid
from policyagg.problem import Problem


# ----------------------------------------------------------------------------- brute force
def random_instance(seed, S, A, k, gamma, dense=False):
    rng = np.random.default_rng(seed)
    if dense:  # every entry positive: every policy is irreducible (average reward)
        P = rng.dirichlet(np.ones(S), size=(S, A))
    else:  # each (s, a) reaches one or two states
        P = np.zeros((S, A, S))
        for s, a in itertools.product(range(S), range(A)):
            targets = rng.choice(S, size=rng.integers(1, 3), replace=False)
            P[s, a, targets] = rng.dirichlet(np.ones(targets.size))
    rho = rng.dirichlet(np.ones(S))
    R = rng.normal(size=(k, S, A))
    return Problem(TabularMDP(P, rho=rho, gamma=gamma), R), P, rho, R


def deterministic_returns(P, rho, R, gamma):
    """{action tuple: per-step returns} for every deterministic policy, by a dense solve."""
    S, A, _ = P.shape
    out = {}
    for actions in itertools.product(range(A), repeat=S):
        P_pi = P[np.arange(S), actions]
        r_pi = R[:, np.arange(S), actions]
        if gamma < 1:
            mu = (1 - gamma) * np.linalg.solve(np.eye(S) - gamma * P_pi.T, rho)
        else:  # stationary distribution: mu (P_pi - I) = 0, sum mu = 1
            M = np.vstack([P_pi.T - np.eye(S), np.ones(S)])
            mu = np.linalg.lstsq(M, np.append(np.zeros(S), 1.0), rcond=None)[0]
        out[actions] = r_pi @ mu
    return out


def hull_vertices(points):
    hull = ConvexHull(points)
    return points[hull.vertices], hull


def pareto_vertices_2d(points):
    """Walk the hull counter-clockwise from the rightmost (then highest) vertex to the highest
    (then rightmost) one: the upper-right chain is the Pareto-optimal vertices."""
    hull = ConvexHull(points)
    ring = points[hull.vertices]  # counter-clockwise in 2-D
    start = max(range(len(ring)), key=lambda i: (ring[i][0], ring[i][1]))
    stop = max(range(len(ring)), key=lambda i: (ring[i][1], ring[i][0]))
    chain, i = [ring[start]], start
    while i != stop:
        i = (i + 1) % len(ring)
        chain.append(ring[i])
    return np.array(chain)


def pareto_vertices_lp(points, eps=1e-9):
    """Points ``p`` with no convex combination of the others ``>= p`` (componentwise), by a primal LP."""
    keep = []
    for j, p in enumerate(points):
        others = np.delete(points, j, axis=0)
        res = linprog(
            np.zeros(len(others)),
            A_ub=-others.T,
            b_ub=-(p - eps),
            A_eq=np.ones((1, len(others))),
            b_eq=[1.0],
            bounds=(0, None),
            method="highs",
        )
        if res.status == 2:  # infeasible: nothing in the hull of the others is as good as p
            keep.append(p)
    return np.array(keep)


def unique_rows(points, decimals=9):
    return np.unique(np.round(points, decimals), axis=0)


def same_sets(a, b, atol=1e-7):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a, b)
    for p in a:
        assert np.abs(b - p).max(axis=1).min() <= atol, (p, b)


TWINS = [  # seed, S, A, k, gamma, dense
    (0, 4, 2, 2, 0.9, False),
    (1, 3, 3, 2, 0.8, False),
    (2, 5, 2, 2, 0.95, False),
    (3, 4, 3, 2, 0.7, True),
    (4, 3, 3, 2, 1.0, True),
    (5, 4, 2, 2, 1.0, True),
    (6, 4, 3, 3, 0.9, False),
    (7, 3, 3, 3, 1.0, True),
]


@pytest.mark.parametrize("seed,S,A,k,gamma,dense", TWINS, ids=[f"seed{t[0]}-k{t[3]}-g{t[4]}" for t in TWINS])
def test_front_matches_brute_force(seed, S, A, k, gamma, dense):
    problem, P, rho, R = random_instance(seed, S, A, k, gamma, dense)
    table = deterministic_returns(P, rho, R, gamma)
    points = unique_rows(np.array(list(table.values())))
    vertices, _ = hull_vertices(points)
    ccs = pareto_vertices_2d(points) if k == 2 else pareto_vertices_lp(vertices)

    front = pareto_front(problem)
    assert front.mode == "ccs" and front.pareto.all()
    same_sets(front.returns, ccs)
    every = pareto_front(problem, mode="vertices")
    same_sets(every.returns, vertices)
    same_sets(every.returns[every.pareto], ccs)
    assert every.info["dimension"] == k
    for f in (front, every):
        # each point's deterministic policy returns it (brute-force evaluation)
        for policy, J in zip(f.policies, f.returns):
            np.testing.assert_allclose(table[tuple(policy.tolist())], J, atol=1e-9)
        # each point is the best of the front at its weight, the CCS ones at a weight >= 0
        for j, w in enumerate(f.weights):
            scores = f.returns @ w
            assert len(f) == 1 or scores[j] > np.delete(scores, j).max()
            assert (w >= 0).all() or not f.pareto[j]
        assert f.info["certificate_gap"] <= 1e-10 and f.info["evaluation_gap"] <= 1e-9
    values = front.returns if gamma == 1 else front.returns / (1 - gamma)
    np.testing.assert_allclose(front.values, values)


def test_ccs_beyond_three_objectives_matches_brute_force():
    problem, P, rho, R = random_instance(11, 4, 2, 4, 0.9)
    table = deterministic_returns(P, rho, R, 0.9)
    vertices, _ = hull_vertices(unique_rows(np.array(list(table.values()))))
    front = pareto_front(problem)
    same_sets(front.returns, pareto_vertices_lp(vertices))
    with pytest.raises(InvalidProblemError, match="at most 3 objectives; this model has 4.*mode='ccs'"):
        pareto_front(problem, mode="vertices")


def test_degenerate_return_sets():
    problem, *_ = random_instance(3, 4, 2, 1, 0.9)
    r = problem.rewards[0]
    # two copies of one objective: the return set is a segment on the diagonal, one CCS point
    twin = pareto_front(Problem(problem.mdp, [r, 2 * r + 1]), mode="vertices")
    assert twin.info["dimension"] == 1 and len(twin) == 2 and twin.pareto.sum() == 1
    assert twin.returns[twin.pareto][0][0] == pytest.approx(twin.returns[:, 0].max())
    # a zero objective is flat and does not shape the front
    flat = pareto_front(Problem(problem.mdp, [r, np.zeros_like(r)], names=["r", "nothing"]))
    assert flat.info["flat"] == ["nothing"] and len(flat) == 1
    # every objective flat: the return set is one point
    still = pareto_front(Problem(problem.mdp, np.zeros((2, 4, 2))), mode="vertices")
    assert len(still) == 1 and still.info["dimension"] == 0


def test_too_large_a_front_is_a_solver_error():
    problem, *_ = random_instance(2, 5, 2, 2, 0.95)
    with pytest.raises(SolverError, match="made 6 planning calls \\(`max_calls`\\) and is not done"):
        pareto_front(problem, max_calls=6)
    with pytest.raises(InvalidProblemError, match="`max_calls` must be a positive integer"):
        pareto_front(problem, max_calls=0)


def test_gamma_argument_rebuilds_the_mdp():
    problem, P, rho, R = random_instance(0, 4, 2, 2, 0.9)
    other = pareto_front(problem, gamma=0.5)
    assert other.gamma == 0.5
    same_sets(
        other.returns, pareto_vertices_2d(unique_rows(np.array(list(deterministic_returns(P, rho, R, 0.5).values()))))
    )


@pytest.mark.parametrize(
    "call,match,error",
    [
        (lambda p: pareto_front(np.zeros(3)), "EnvModel .* or a Problem; got ndarray", InvalidProblemError),
        (lambda p: pareto_front(p, mode="all"), "`mode` must be one of", InvalidProblemError),
        (lambda p: pareto_front(p, tol=0.5), r"`tol` must be in \(0, 0.01\)", InvalidProblemError),
        (lambda p: pareto_front(p, tol="1e-9"), "`tol` must be a real number", InvalidProblemError),
        (lambda p: pareto_front(p, gamma=1.5), r"`gamma` must be in \(0, 1\]", InvalidMDPError),
        (lambda p: pareto_front(p, names=["a"]), "`names` must be 2 strings", InvalidProblemError),
        (
            lambda p: pareto_front(Problem(p.mdp, p.rewards, constraints=forbid(p.mdp, 0, 0))),
            "without `constraints`",
            InvalidProblemError,
        ),
    ],
)
def test_bad_arguments(call, match, error):
    problem, *_ = random_instance(0, 4, 2, 2, 0.9)
    with pytest.raises(error, match=match):
        call(problem)


def test_write_and_read_round_trip(tmp_path):
    problem, *_ = random_instance(6, 4, 3, 3, 0.9)
    front = pareto_front(problem, mode="vertices")
    csv_path, json_path = write_front(front, tmp_path / "out", meta={"source": "test"})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["front.csv", "front.json"]  # no temporaries
    lines = csv_path.read_text().splitlines()
    assert lines[0].split(",")[:3] == ["point", "pareto", "value_agent0"] and len(lines) == len(front) + 1
    row = lines[1].split(",")
    assert float(row[2]) == front.values[0, 0] and int(row[1]) == front.pareto[0]
    back = read_front(json_path)
    for name in ("returns", "values", "policies", "weights", "pareto"):
        np.testing.assert_array_equal(getattr(back, name), getattr(front, name))
    assert (back.mode, back.gamma, back.names) == (front.mode, front.gamma, front.names)
    assert json.loads(json_path.read_text())["meta"] == {"source": "test"}
    ccs = front.ccs()
    assert isinstance(ccs, ParetoFront) and len(ccs) == front.pareto.sum() and ccs.pareto.all()
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(CorruptFileError, match="not a Pareto front written by policyagg"):
        read_front(tmp_path / "bad.json")


# ------------------------------------------------------------------------ MO-Gymnasium
@pytest.fixture(scope="module")
def mo_gym():
    return pytest.importorskip("mo_gymnasium")


_MODELS = {}


def model_of(mo_gym, env_id, gamma):
    """The environment and its model at ``gamma``: converted once per environment (at 0.99), the
    same transitions and per-step rewards with another discount for the other ``gamma``."""
    if env_id not in _MODELS:
        env = mo_gym.make(env_id)
        _MODELS[env_id] = (env, from_gymnasium(env, gamma=0.99))
    env, model = _MODELS[env_id]
    if gamma != model.mdp.gamma:
        mdp = TabularMDP(model.mdp.P, rho=model.mdp.rho, gamma=gamma, n_actions=model.mdp.n_actions)
        model = EnvModel(mdp, model.rewards, model.observations, model.route, model.info, model.actions)
    return env, model


def lp_best(model, w):
    """max_{d in O} w @ R d by scipy's linprog on the dense polytope (per-step units)."""
    R = model.rewards.reshape(model.n_agents, -1)
    value, _ = lp_max(w @ R, model.mdp.P_dense, model.mdp.rho, model.mdp.gamma)
    return value


def check_exact(model, front, rng, directions=20):
    """Independently: each point is optimal at its weight, and no weight finds more than the front."""
    for w, J in zip(front.weights, front.returns):
        assert lp_best(model, w) == pytest.approx(w @ J, abs=1e-9)
    widths = np.ptp(np.array(front.info["ranges"]), axis=1)
    for _ in range(directions):  # random weights >= 0, each objective on the scale of its range
        w = rng.dirichlet(np.ones(front.n_objectives)) / widths
        assert lp_best(model, w) <= (front.returns @ w).max() + 1e-9 * np.abs(w).sum()


def distance_to_return_set(model, p):
    """min ||R d / (1 - gamma) - p||_inf over d in O (scipy linprog): 0 iff p is achievable."""
    mdp = model.mdp
    R = model.rewards.reshape(model.n_agents, -1) / (1 - mdp.gamma)
    A_eq, b_eq = dense_polytope(mdp.P_dense, mdp.rho, mdp.gamma)
    n, m = R.shape
    A_ub = np.block([[R, -np.ones((n, 1))], [-R, -np.ones((n, 1))]])
    res = linprog(
        np.append(np.zeros(m), 1.0),
        A_ub=A_ub,
        b_ub=np.concatenate([p, -p]),
        A_eq=np.hstack([A_eq, np.zeros((A_eq.shape[0], 1))]),
        b_eq=b_eq,
        bounds=(0, None),
        method="highs",
    )
    assert res.status == 0
    return res.fun


def mixture_margin(points, p):
    """max t such that a convex combination of ``points`` is >= p + t in every objective."""
    m, k = points.shape
    res = linprog(
        np.append(np.zeros(m), -1.0),
        A_ub=np.hstack([-points.T, np.ones((k, 1))]),
        b_ub=-p,
        A_eq=np.append(np.ones(m), 0.0)[None],
        b_eq=[1.0],
        bounds=[(0, None)] * m + [(None, None)],
        method="highs",
    )
    assert res.status == 0
    return -res.fun


def find(points, p, rtol=1e-6):
    """Index of ``p`` among ``points`` (within rtol: the environments' rewards are float32), or None."""
    hits = np.flatnonzero(np.all(np.isclose(points, p, rtol=rtol, atol=1e-9), axis=1))
    return int(hits[0]) if hits.size else None


DST_CASES = [  # env id, gamma, how many of MO-Gymnasium's 10 treasures are in the CCS
    ("deep-sea-treasure-v0", 0.99, 10),
    ("deep-sea-treasure-v0", 0.95, 6),
    ("deep-sea-treasure-v0", 0.9, 3),
    ("deep-sea-treasure-concave-v0", 0.99, 2),
]


@pytest.mark.parametrize("env_id,gamma,supported", DST_CASES)
def test_deep_sea_treasure_front(mo_gym, env_id, gamma, supported):
    env, model = model_of(mo_gym, env_id, gamma)
    front = pareto_front(model)
    theirs = np.array(env.unwrapped.pareto_front(gamma))
    check_exact(model, front, np.random.default_rng(0))
    # every point of our CCS is one of their treasures (same discounting: a treasure reached on
    # step n is worth T gamma^(n-1), the time penalty -(1 - gamma^n) / (1 - gamma))
    matched = [find(theirs, v) for v in front.values]
    assert None not in matched and len(set(matched)) == len(front) == supported
    # each of theirs not in our CCS is achievable but not supported: a mixture of CCS policies beats it
    scale = np.ptp(theirs, axis=0)
    for j in sorted(set(range(len(theirs))) - set(matched)):
        assert distance_to_return_set(model, theirs[j]) <= 1e-6 * scale.max()
        assert mixture_margin(front.values / scale, theirs[j] / scale) > 1e-4
    # the policies deliver: one episode in the real (deterministic) environment
    for policy, value in zip(front.policies, front.values):
        obs, _ = env.reset(seed=0)
        total, discount, done = np.zeros(2), 1.0, False
        while not done:
            obs, reward, done, _, _ = env.step(model.actions[policy[model.state_index(obs)]])
            total += discount * np.asarray(reward, float)
            discount *= gamma
        np.testing.assert_allclose(total, value, rtol=1e-9)


def test_resource_gathering_front(mo_gym):
    gamma = 0.99
    env, model = model_of(mo_gym, "resource-gathering-v0", gamma)
    theirs = np.array(env.unwrapped.pareto_front(gamma))
    front = pareto_front(model)
    every = pareto_front(model, mode="vertices")
    check_exact(model, front, np.random.default_rng(1))
    same_sets(every.values[every.pareto], front.values, atol=1e-12)
    # (death, gold, diamond): gold alone dodging both enemies (12 steps), gold and diamond
    # dodging both (18 steps), the diamond alone (10 steps); a reward on step n is worth gamma^(n-1)
    expected = np.array([[0, gamma**11, 0], [0, gamma**17, gamma**17], [0, 0, gamma**9]])
    same_sets(front.values, expected, atol=1e-12)
    # theirs discount one step too many: divided by gamma, two of their three points are ours ...
    shifted = theirs / gamma
    ours = [find(front.values, p) for p in shifted]
    assert sorted(i for i in ours if i is not None) == [0, 2]
    # ... and the third (gold and diamond through E2, death risk 0.1) is a vertex of the return
    # set that the 18-step route avoiding both enemies dominates, for gamma > 0.9 ** (1 / 4)
    (third,) = [p for p, i in zip(shifted, ours) if i is None]
    k = find(every.values, third)
    assert k is not None and not every.pareto[k]
    assert np.all(front.values[1] >= third) and np.any(front.values[1] > third + 1e-3)
    np.testing.assert_allclose(third, [-0.1 * gamma**6, 0.9 * gamma**13, 0.9 * gamma**13])


@pytest.mark.parametrize("gamma", [0.9, 0.97])
def test_resource_gathering_front_below_0974(mo_gym, gamma):
    # below gamma = 0.9 ** (1 / 4) their points are all in the CCS, one discount step off; at 0.97
    # the CCS also has the enemy-free route to both resources (18 steps), which they omit
    env, model = model_of(mo_gym, "resource-gathering-v0", gamma)
    front = pareto_front(model)
    check_exact(model, front, np.random.default_rng(2), directions=15)
    shifted = np.array(env.unwrapped.pareto_front(gamma)) / gamma
    if gamma == 0.9:
        same_sets(front.values, shifted, atol=1e-7)
    else:
        same_sets(front.values, np.vstack([shifted, [0, gamma**17, gamma**17]]), atol=1e-7)


def test_cli_front_writes_csv_and_json(tmp_path, capsys, mo_gym):
    from policyagg.experiments.cli import main

    assert main(["front", "deep-sea-treasure-v0", "--gamma", "0.9", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "route 'enumerate'" in out and "pareto" in out
    front = read_front(tmp_path / "deep-sea-treasure-v0-gamma0.9-ccs.json")
    assert len(front) == 3 and (tmp_path / "deep-sea-treasure-v0-gamma0.9-ccs.csv").exists()
    assert json.loads((tmp_path / "deep-sea-treasure-v0-gamma0.9-ccs.json").read_text())["meta"]["model_exact"]


def test_average_reward_fronts_of_episodic_environments(mo_gym):
    # gamma = 1 with `reset`: the long-run rate over repeated episodes (reward per episode / steps)
    env = mo_gym.make("deep-sea-treasure-v0")
    dst = pareto_front(from_gymnasium(env, gamma=1.0, on_termination="reset"), mode="vertices")
    # the time penalty is -1 on every step of every policy: flat; the best treasure rate is 8.2 / 3
    assert dst.info["flat"] == ["objective1"] and dst.info["dimension"] == 1
    same_sets(dst.values[dst.pareto], [[8.2 / 3, -1.0]], atol=1e-6)
    env = mo_gym.make("resource-gathering-v0")
    front = pareto_front(from_gymnasium(env, gamma=1.0, on_termination="reset"))
    # the enemy-free routes: gold in 12 steps, gold and diamond in 18, the diamond in 10
    for point in ([0, 1 / 12, 0], [0, 1 / 18, 1 / 18], [0, 0, 1 / 10]):
        assert find(front.values, point) is not None
    assert len(front) == 7 and (front.values[:, 0] < 0).sum() == 4  # four routes past an enemy
    assert front.info["evaluation_gap"] <= 1e-12


def test_average_reward_front_refuses_unreachable_vertices():
    # state 0 (stay: reward 1 to objective 0) is unreachable from rho = state 1: the average-reward
    # polytope has a vertex there that no policy started from rho attains
    P = np.zeros((2, 2, 2))
    P[0, 0, 0] = P[0, 1, 1] = P[1, :, 1] = 1.0
    with pytest.warns(UserWarning, match="not communicating"):
        mdp = TabularMDP(P, rho=[0.0, 1.0], gamma=1.0)
    rewards = np.zeros((2, 2, 2))
    rewards[0, 0, 0] = rewards[1, 1, :] = 1.0
    with pytest.raises(PolicyEvaluationError, match="communicating MDP\\): use `gamma` < 1"):
        pareto_front(Problem(mdp, rewards))
