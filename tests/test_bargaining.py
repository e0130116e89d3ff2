"""The status quo, individual rationality and the bargaining rules (issue 19, item 3).

Closed forms on a segment and a simplex; brute force over the return polytope of tiny random
MDPs (the convex hull of the deterministic policies' returns, each evaluated by a dense solve,
then scipy); the bargaining axioms as property tests; individual rationality for every rule.
"""

import itertools
import warnings

import numpy as np
import pytest
from conftest import RULE_OPTIONS, assert_valid_result, random_problems
from hypothesis import given, settings
from reference import occupancy_by_dense_solve, pareto_gap
from scipy.optimize import linprog, minimize

from policyagg import solvers
from policyagg.bargaining import disagreement_point, individual_rationality
from policyagg.errors import GapWarning, InfeasibleError, InvalidProblemError
from policyagg.experiments.config import InvalidConfigError, parse_config
from policyagg.mdp import TabularMDP
from policyagg.polytope import LinearConstraints
from policyagg.problem import Problem
from policyagg.sampling import sample_policy_returns

BARGAINING = ("nash_bargaining", "kalai_smorodinsky", "egalitarian_gains")
#: The Nash product is certified to the tolerance plus the LP solver's own (about 1e-9 here); the
#: product is flat at its optimum, so returns are accurate only to about sqrt of that (NASH_ATOL).
NASH_TIGHT = {"tolerance": 1e-10, "max_rounds": 200}
NASH_ATOL = 1e-4


def rule(name):
    return solvers.get_rule(name)


def segment(rewards=((1.0, 0.0), (0.0, 3.0)), weights=None):
    """One state, two actions: the return set is the segment from (1, 0) to (0, 3) (3 J_0 + J_1 = 3)."""
    mdp = TabularMDP(np.ones((1, 2, 1)), gamma=0.9)
    return solvers.with_ranges(Problem(mdp, np.asarray(rewards, float)[:, None, :], weights=weights))


def simplex(scales=(1.0, 2.0, 4.0), weights=None):
    """One state, three actions (three deterministic policies): agent i gets scales[i] * p_i."""
    mdp = TabularMDP(np.ones((1, 3, 1)), gamma=0.5)
    return solvers.with_ranges(Problem(mdp, np.diag(scales)[:, None, :], weights=weights))


# ------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("weights", [None, (1.0, 1.0), (2.0, 1.0), (1.0, 3.0)])
@pytest.mark.parametrize("status_quo", ["worst", (0.2, 0.3), (0.0, 2.0), (0.6, 0.1)])
def test_nash_on_a_segment_splits_the_surplus_by_weight(weights, status_quo):
    # on the frontier 3 J_0 + J_1 = 3 the weighted Nash product splits the surplus s = 3 - 3 d_0 - d_1
    # in proportion to the weights: 3 (J_0 - d_0) = w_0 / W * s, J_1 - d_1 = w_1 / W * s
    problem = segment(weights=weights)
    d = np.zeros(2) if status_quo == "worst" else np.asarray(status_quo)
    w = np.ones(2) if weights is None else np.asarray(weights)
    surplus = 3 - 3 * d[0] - d[1]
    expected = d + w / w.sum() * surplus / np.array([3.0, 1.0])
    result = rule("nash_bargaining")(problem, status_quo=status_quo, **NASH_TIGHT)
    np.testing.assert_allclose(result.returns, expected, atol=NASH_ATOL)
    assert result.status == "optimal" and result.diagnostics["certified_gap"] <= 1e-10
    assert result.diagnostics["nash_log_product"] <= result.diagnostics["upper_bound"] + 1e-9
    assert result.diagnostics["nash_log_product"] == pytest.approx(float(w @ np.log(expected - d)), abs=1e-8)
    assert_valid_result(problem, result)


@pytest.mark.parametrize("status_quo", ["worst", (0.2, 0.3), (0.0, 2.0), (0.6, 0.1)])
def test_kalai_smorodinsky_on_a_segment_is_on_the_line_to_the_ideal_point(status_quo):
    problem = segment()
    d = np.zeros(2) if status_quo == "worst" else np.asarray(status_quo)
    ideal = np.array([1 - d[1] / 3, 3 - 3 * d[0]])  # each agent's best with the other at its status quo
    # d + t (ideal - d) on the frontier: 3 (d_0 + t g_0) + d_1 + t g_1 = 3
    gain = ideal - d
    t = (3 - 3 * d[0] - d[1]) / (3 * gain[0] + gain[1])
    result = rule("kalai_smorodinsky")(problem, status_quo=status_quo)
    np.testing.assert_allclose(result.returns, d + t * gain, atol=1e-8)
    np.testing.assert_allclose(result.diagnostics["ideal_point"], ideal, atol=1e-9)
    assert result.diagnostics["ks_share"] == pytest.approx(t, abs=1e-8)
    assert_valid_result(problem, result)


@pytest.mark.parametrize("normalize, expected", [(False, [0.725, 0.825]), (True, [0.55, 1.35])])
def test_egalitarian_gains_on_a_segment(normalize, expected):
    # raw: J_0 - 0.2 = J_1 - 0.3 on 3 J_0 + J_1 = 3 -> J_0 = 0.725; normalised by the ranges (1, 3):
    # J_0 - 0.2 = (J_1 - 0.3) / 3 -> J_0 = 0.55, J_1 = 1.35
    result = rule("egalitarian_gains")(segment(), status_quo=[0.2, 0.3], normalize=normalize)
    np.testing.assert_allclose(result.returns, expected, atol=1e-8)


def test_a_symmetric_segment_is_split_in_the_middle():
    problem = segment(rewards=((1.0, 0.0), (0.0, 1.0)))
    for name in BARGAINING:
        options = NASH_TIGHT if name == "nash_bargaining" else {}
        result = rule(name)(problem, status_quo=[0.1, 0.1], **options)
        np.testing.assert_allclose(result.returns, [0.5, 0.5], atol=NASH_ATOL)


@pytest.mark.parametrize("weights", [None, (1.0, 2.0, 0.5)])
def test_the_simplex_of_three_deterministic_policies(weights):
    # J_i = a_i p_i, sum p = 1. Nash: p_i = d_i / a_i + w_i / W (1 - sum_j d_j / a_j);
    # KS (equal weights): the same share 1 / 3 of every ideal gain, in p-units p_i - d_i / a_i = (1 - sum d / a) / 3
    a, d = np.array([1.0, 2.0, 4.0]), np.array([0.1, 0.2, 0.4])
    problem = simplex(a, weights=weights)
    w = np.ones(3) if weights is None else np.asarray(weights)
    free = 1 - (d / a).sum()
    nash = rule("nash_bargaining")(problem, status_quo=d, **NASH_TIGHT)
    np.testing.assert_allclose(nash.returns, a * (d / a + w / w.sum() * free), atol=NASH_ATOL)
    if weights is None:
        ks = rule("kalai_smorodinsky")(problem, status_quo=d)
        np.testing.assert_allclose(ks.returns, a * (d / a + free / 3), atol=1e-8)
        assert ks.diagnostics["ks_share"] == pytest.approx(1 / 3, abs=1e-8)


def test_a_triangle_of_three_deterministic_policies_separates_the_three_rules():
    # two agents, one state, three actions with returns (1, 0), (0, 2), (0.7, 1.2); status quo (0, 0).
    # The frontier is (1, 0) - (0.7, 1.2) - (0, 2). Nash: x y is largest at the kink (0.7, 1.2) (on the
    # first edge it grows up to t = 5/3 > 1, on the second it falls). KS: the line y = 2 x to the
    # ideal point (1, 2) meets the second edge at (7/11, 14/11). Egalitarian gains: x = y on the
    # first edge, (0.8, 0.8).
    mdp = TabularMDP(np.ones((1, 3, 1)), gamma=0.9)
    problem = solvers.with_ranges(Problem(mdp, np.array([[[1.0, 0.0, 0.7]], [[0.0, 2.0, 1.2]]])))
    nash = rule("nash_bargaining")(problem, status_quo=[0.0, 0.0], **NASH_TIGHT)
    np.testing.assert_allclose(nash.returns, [0.7, 1.2], atol=NASH_ATOL)
    ks = rule("kalai_smorodinsky")(problem, status_quo=[0.0, 0.0])
    np.testing.assert_allclose(ks.returns, [7 / 11, 14 / 11], atol=1e-8)
    assert ks.diagnostics["ks_share"] == pytest.approx(7 / 11, abs=1e-8)
    egal = rule("egalitarian_gains")(problem, status_quo=[0.0, 0.0])
    np.testing.assert_allclose(egal.returns, [0.8, 0.8], atol=1e-8)


def test_nash_bargaining_from_the_worst_point_is_nash_welfare():
    problem = solvers.with_ranges(random_problem(seed=3, n=3))
    ours = rule("nash_bargaining")(problem, **NASH_TIGHT)
    theirs = solvers.nash_welfare(problem, tolerance=1e-10, max_rounds=200)
    np.testing.assert_allclose(ours.normalized, theirs.normalized, atol=NASH_ATOL)


# ------------------------------------------------------------------ brute force on tiny MDPs
def random_problem(seed, S=3, A=2, n=3, gamma=0.8):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    return Problem(TabularMDP(P, rho=rng.dirichlet(np.ones(S)), gamma=gamma), rng.normal(size=(n, S, A)))


def vertex_returns(problem):
    """Returns of every deterministic policy (their convex hull is the return set), by dense solves."""
    mdp = problem.mdp
    S, A = mdp.n_states, mdp.n_actions
    eye, P = np.eye(A), mdp.P_dense
    out = []
    for actions in itertools.product(range(A), repeat=S):
        d = occupancy_by_dense_solve(P, mdp.rho, mdp.gamma, eye[list(actions)])
        out.append(np.einsum("isa,sa->i", problem.rewards, d))
    return np.array(out)  # (k, n)


def random_policy_returns(problem, seed):
    policy = np.random.default_rng(seed).dirichlet(np.ones(problem.mdp.n_actions), size=problem.mdp.n_states)
    mdp = problem.mdp
    d = occupancy_by_dense_solve(mdp.P_dense, mdp.rho, mdp.gamma, policy)
    return policy, np.einsum("isa,sa->i", problem.rewards, d)


def hull_lp(V, cost, A_ub=None, b_ub=None):
    """max cost @ [lambda, extra] over the simplex of vertex weights (columns: lambda, then extra)."""
    k = V.shape[0]
    m = cost.size
    A_eq = np.zeros((1, m))
    A_eq[0, :k] = 1.0
    bounds = [(0, None)] * k + [(None, None)] * (m - k)
    res = linprog(-cost, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0], bounds=bounds, method="highs")
    assert res.status == 0, res.message
    return -res.fun, res.x


def brute_ideal(V, d):
    """Each agent's best return over the hull with everyone at or above d."""
    k, n = V.shape
    return np.array([hull_lp(V, V[:, i], A_ub=-V.T, b_ub=-d)[0] for i in range(n)])


def brute_ks_share(V, d, ideal):
    """max t s.t. V^T lambda - d >= t (ideal - d); returns (t, lambda)."""
    k, n = V.shape
    A_ub = np.hstack([-V.T, (ideal - d)[:, None]])
    cost = np.zeros(k + 1)
    cost[-1] = 1.0
    t, x = hull_lp(V, cost, A_ub=A_ub, b_ub=-d)
    return t, x[:k]


def brute_nash(V, d, w, start):
    """max sum w log(V^T lambda - d) over the simplex by SLSQP, from ``start`` (every gain > 0)."""
    k, n = V.shape

    def objective(lam):
        return -float(w @ np.log(np.maximum(V.T @ lam - d, 1e-300)))

    res = minimize(
        objective,
        start,
        method="SLSQP",
        bounds=[(0, 1)] * k,
        constraints=[
            {"type": "eq", "fun": lambda lam: lam.sum() - 1.0},
            {"type": "ineq", "fun": lambda lam: V.T @ lam - d - 1e-12},
        ],
        options={"ftol": 1e-13, "maxiter": 5000},
    )
    # SLSQP may end with "positive directional derivative" at the optimum (its line search at the
    # limit of precision); the point must still be feasible
    assert res.success or res.status == 8, res.message
    assert abs(res.x.sum() - 1) < 1e-9 and np.all(V.T @ res.x - d > 0)
    return -res.fun


@pytest.mark.parametrize("seed", range(6))
def test_bargaining_rules_match_brute_force_on_the_return_polytope(seed):
    problem = solvers.with_ranges(random_problem(seed, gamma=0.8 if seed % 2 else 1.0))
    V = vertex_returns(problem)
    policy, d = random_policy_returns(problem, seed)  # a status quo strictly inside, given as a policy
    np.testing.assert_allclose(disagreement_point(problem, policy), d, atol=1e-9)
    ideal = brute_ideal(V, d)
    w = problem.weights

    t, ks_point = brute_ks_share(V, d, ideal)
    nash = rule("nash_bargaining")(problem, status_quo=policy, **NASH_TIGHT)
    assert nash.diagnostics["nash_log_product"] == pytest.approx(brute_nash(V, d, w, ks_point), abs=1e-6)
    np.testing.assert_allclose(nash.diagnostics["ideal_point"], ideal, atol=1e-7)

    ks = rule("kalai_smorodinsky")(problem, status_quo=policy)
    assert ks.diagnostics["ks_share"] == pytest.approx(t, abs=1e-7)
    assert np.all(ks.returns >= d + t * (ideal - d) - 1e-7)

    egal = rule("egalitarian_gains")(problem, status_quo=policy)
    k = V.shape[0]
    cost = np.zeros(k + 1)
    cost[-1] = 1.0
    maxmin, _ = hull_lp(V, cost, A_ub=np.hstack([-V.T, np.ones((V.shape[1], 1))]), b_ub=-d)
    assert np.min(egal.returns - d) == pytest.approx(maxmin, abs=1e-7)
    for result in (nash, ks, egal):
        assert np.all(result.returns >= d - 1e-7)
        assert pareto_gap(problem.reward_matrix, problem.mdp.P_dense, problem.mdp.rho, problem.mdp.gamma,
                          result.returns, problem.ranges.width) <= 1e-6  # fmt: skip


# ------------------------------------------------------------------ axioms
def permuted(problem, order):
    return solvers.with_ranges(Problem(problem.mdp, problem.rewards[order], weights=problem.weights[order]))


@pytest.mark.parametrize("name", BARGAINING)
@settings(max_examples=8, deadline=None)
@given(problem=random_problems(max_agents=3, gammas=(0.5, 0.9, 1.0)))
def test_axioms_pareto_and_anonymity(name, problem):
    problem = solvers.with_ranges(problem)
    d = disagreement_point(problem, "uniform")
    options = NASH_TIGHT if name == "nash_bargaining" else {}
    result = rule(name)(problem, status_quo="uniform", **options)
    assert_valid_result(problem, result)  # Pareto optimal, feasible, delivered
    # a flat range (width 0) still allows rounding at the returns' own magnitude
    assert np.all(result.returns >= d - 1e-6 * np.maximum(problem.ranges.width, 1e-9 * np.abs(d) + 1e-12))
    # permute the agents (their status quo values and weights with them): the returns permute alike
    order = np.roll(np.arange(problem.n_agents), 1)
    swapped = rule(name)(permuted(problem, order), status_quo=d[order], **options)
    atol = NASH_ATOL if name == "nash_bargaining" else 1e-6
    np.testing.assert_allclose(swapped.normalized, result.normalized[order], atol=atol)


@pytest.mark.parametrize("name, options", [
    ("nash_bargaining", NASH_TIGHT), ("kalai_smorodinsky", {}), ("egalitarian_gains", {"normalize": True})
])  # fmt: skip
@pytest.mark.parametrize("status_quo", ["worst", "uniform", "values"])
@settings(max_examples=6, deadline=None)
@given(problem=random_problems(max_agents=3, gammas=(0.5, 0.9)))
def test_invariance_to_an_affine_change_of_one_reward(name, options, status_quo, problem):
    problem = solvers.with_ranges(problem)
    a, b = 7.5, -3.0
    rewards = np.array(problem.rewards)
    rewards[0] = a * rewards[0] + b
    scaled = solvers.with_ranges(Problem(problem.mdp, rewards, weights=problem.weights))
    sq, sq_scaled = status_quo, status_quo
    if status_quo == "values":  # a point between the worst and the uniform policy's returns
        sq = 0.5 * (problem.ranges.lower + disagreement_point(problem, "uniform"))
        sq_scaled = np.array(sq)
        sq_scaled[0] = a * sq[0] + b
    before = rule(name)(problem, status_quo=sq, **options)
    after = rule(name)(scaled, status_quo=sq_scaled, **options)
    atol = NASH_ATOL if name == "nash_bargaining" else 1e-6
    np.testing.assert_allclose(after.normalized, before.normalized, atol=atol)


@settings(max_examples=10, deadline=None)
@given(problem=random_problems(max_agents=3, gammas=(0.5, 0.9)))
def test_kalai_smorodinsky_is_restrictedly_monotone(problem):
    # S = T ∩ {c @ x <= b} keeps every agent's ideal occupancy in T (so the ideal point and the
    # status quo are those of T): KS's share on T is at least that on S, and so is every agent's gain
    problem = solvers.with_ranges(problem)
    d = disagreement_point(problem, "uniform")
    on_T = rule("kalai_smorodinsky")(problem, status_quo=d)
    ideal_T = np.asarray(on_T.diagnostics["ideal_point"])
    A_flow = problem.polytope.A_eq.toarray()
    R = problem.reward_matrix
    ideal_points = []
    for i in range(problem.n_agents):  # each agent's ideal occupancy in T, by scipy
        res = linprog(-R[i], A_ub=-R, b_ub=-d, A_eq=A_flow, b_eq=problem.polytope.b_eq, bounds=(0, None))
        assert res.status == 0
        ideal_points.append(res.x)
    c = np.random.default_rng(problem.mdp.n_states).normal(size=R.shape[1])
    cut = LinearConstraints.build(R.shape[1], A_ub=c[None, :], b_ub=[max(c @ x for x in ideal_points) + 1e-9])
    on_S = rule("kalai_smorodinsky")(problem, status_quo=d, constraints=cut)
    np.testing.assert_allclose(on_S.diagnostics["ideal_point"], ideal_T, atol=1e-6 * (1 + np.abs(ideal_T).max()))
    share_S, share_T = on_S.diagnostics["ks_share"], on_T.diagnostics["ks_share"]
    if share_T is None:  # nobody can gain in T, hence in S
        assert share_S is None
        return
    assert share_T >= share_S - 1e-7
    gain = ideal_T - d  # KS gives agent i at least the share w_i t of its ideal gain
    assert np.all(on_T.returns >= d + problem.weights * share_S * gain - 1e-6 * np.maximum(problem.ranges.width, 1e-12))


# ------------------------------------------------------------------ individual rationality for every rule
@pytest.mark.parametrize("name", sorted(solvers.RULES))
@pytest.mark.parametrize("seed", range(3))
def test_every_rule_with_individual_rationality_leaves_no_agent_below_its_status_quo(name, seed):
    problem = solvers.with_ranges(random_problem(seed, S=3, A=3, n=4, gamma=0.9 if seed else 1.0))
    policy, d = random_policy_returns(problem, 100 + seed)
    spec = solvers.get_spec(name)
    samples = sample_policy_returns(problem, 300, rng=0, progress=False) if spec.needs_samples else None
    ir = individual_rationality(problem, policy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GapWarning)
        result = spec.function(problem, samples, constraints=ir, **RULE_OPTIONS.get(name, {}))
    width = problem.ranges.width
    assert np.all(result.returns >= d - 1e-6 * width), (name, result.returns - d)
    assert_valid_result(problem, result, pareto=False)


def test_individual_rationality_rows_are_labelled_by_agent_and_skip_vacuous_agents():
    problem = segment()
    ir = individual_rationality(problem, [0.25, 0.0])  # agent 1's status quo is its minimum
    assert ir.labels_ub == ("individual rationality: agent0",)
    assert individual_rationality(problem, "worst").labels_ub == ()
    # J_0 >= 0.25 with J_0 = p: the row divided by agent 0's range
    assert ir.violation([[0.25, 0.75]]) == pytest.approx(0.0, abs=1e-12)
    assert ir.violation([[0.2, 0.8]]) == pytest.approx(0.05)


def test_jointly_infeasible_status_quo_names_the_agents():
    problem = segment()
    # each value is below the agent's best (1 and 3), but 3 * 0.8 + 1 > 3: no policy gives both
    with pytest.raises(InfeasibleError, match=r"individual rationality: agent0.*individual rationality: agent1"):
        solvers.utilitarian(problem, constraints=individual_rationality(problem, [0.8, 1.0]))
    with pytest.raises(InfeasibleError, match="individual rationality"):
        rule("kalai_smorodinsky")(problem, status_quo=[0.8, 1.0])


# ------------------------------------------------------------------ agents with nothing to gain
def test_agents_with_nothing_to_gain_are_held_at_their_status_quo():
    # agent 2 is indifferent; agent 1's status quo is its best (3), which leaves agent 0 nothing
    problem = segment(rewards=((1.0, 0.0), (0.0, 3.0), (2.0, 2.0)))
    for name in BARGAINING:
        result = rule(name)(problem, status_quo=[0.0, 3.0, 2.0])
        assert result.diagnostics["no_gain_agents"] == ["agent0", "agent1", "agent2"]
        np.testing.assert_allclose(result.returns, [0.0, 3.0, 2.0], atol=1e-7)
        assert result.status == "optimal"
    # the indifferent agent aside, the two others split the surplus 3 - 1.5 as on the segment
    result = rule("nash_bargaining")(problem, status_quo=[0.0, 1.5, 2.0], **NASH_TIGHT)
    assert result.diagnostics["no_gain_agents"] == ["agent2"]
    np.testing.assert_allclose(result.returns, [0.25, 2.25, 2.0], atol=NASH_ATOL)


def test_nobody_can_gain_from_a_point_on_the_frontier():
    problem = segment()
    for name in BARGAINING:
        result = rule(name)(problem, status_quo="uniform")
        np.testing.assert_allclose(result.returns, [0.5, 1.5], atol=1e-9)
        assert result.diagnostics["no_gain_agents"] == ["agent0", "agent1"]


# ------------------------------------------------------------------ certificates and statuses
def test_nash_bargaining_stopped_short_says_gap():
    with pytest.warns(GapWarning, match=r"1 rounds left the Nash product within .* \(status 'gap'\)"):
        result = rule("nash_bargaining")(segment(weights=(3.0, 1.0)), status_quo=[0.1, 0.1], max_rounds=1)
    assert result.status == "gap" and not result.diagnostics["converged"]
    assert result.diagnostics["certified_gap"] > 1e-6


def test_nash_certificate_bounds_the_brute_force_optimum():
    problem = simplex()
    d = np.array([0.1, 0.2, 0.4])
    result = rule("nash_bargaining")(problem, status_quo=d, tolerance=1e-4)
    a = np.array([1.0, 2.0, 4.0])
    optimum = float(np.log(a * (1 - (d / a).sum()) / 3).sum())  # closed form, equal weights
    value, bound = result.diagnostics["nash_log_product"], result.diagnostics["upper_bound"]
    assert value <= optimum + 1e-9 <= bound + 2e-9
    assert optimum - value <= result.diagnostics["certified_gap"] + 1e-9 <= 1e-4 + 1e-9


# ------------------------------------------------------------------ inputs
@pytest.mark.parametrize(
    "status_quo, error, match",
    [
        ("best", InvalidProblemError, r"`status_quo` must be one of '?worst'?, '?uniform"),
        ([0.1, 0.2, 0.3], InvalidProblemError, r"2 values \(one per agent\).*got shape \(3,\)"),
        ([0.1, np.nan], InvalidProblemError, r"`status_quo` must be finite; agent 'agent1' has nan"),
        ([[0.5, 0.6]], InvalidProblemError, r"`status_quo` read as a policy: `policy` row 0 sums to 1.1"),
        ([1.5, 0.0], InfeasibleError, r"`status_quo` of agent 'agent0' is 1.5, above its best return 1"),
        ([["a", "b"]], InvalidProblemError, r"`status_quo` must be an array of numbers"),
    ],
)
def test_a_bad_status_quo_is_a_typed_error(status_quo, error, match):
    problem = segment()
    with pytest.raises(error, match=match):
        disagreement_point(problem, status_quo)
    with pytest.raises(error, match=match):
        rule("nash_bargaining")(problem, status_quo=status_quo)


def test_a_status_quo_needs_the_ranges():
    mdp = TabularMDP(np.ones((1, 2, 1)), gamma=0.9)
    with pytest.raises(InvalidProblemError, match="with_ranges"):
        individual_rationality(Problem(mdp, np.ones((1, 1, 2))), "uniform")


def test_round_off_above_the_best_is_read_as_the_best():
    problem = segment()
    np.testing.assert_allclose(disagreement_point(problem, [1.0 + 1e-12, 0.0]), [1.0, 0.0])


def test_status_quo_options_are_checked_when_a_config_is_read():
    spec = solvers.get_spec("kalai_smorodinsky")
    assert spec.validate({"status_quo": "uniform"}) == {"status_quo": "uniform"}
    assert spec.validate({"status_quo": [0.1, 0.2]}) == {"status_quo": [0.1, 0.2]}
    with pytest.raises(InvalidProblemError, match=r"`status_quo` must be one of worst, uniform or a sequence"):
        spec.validate({"status_quo": "wrost"})
    data = {
        "name": "bargain",
        "environment": {"id": "attention", "kwargs": {"n_sites": 2, "n_phases": 2}},
        "agents": {"population": "one_per_site"},
        "measure": {"samples": 10},
        "rules": [
            {"rule": "nash_bargaining", "options": {"status_quo": "uniform", "tolerance": 1e-8}},
            {"rule": "kalai_smorodinsky", "options": {"status_quo": [0.0, 0.0]}},
            {"rule": "egalitarian_gains", "options": {"normalize": True}},
        ],
    }
    config = parse_config(data)
    assert [r.rule for r in config.rules] == list(BARGAINING)
    data["rules"][0]["options"]["status_quo"] = "status quo"
    with pytest.raises(InvalidConfigError, match=r"rules\[0\]\.options.*`status_quo` must be one of worst, uniform"):
        parse_config(data)


def test_a_policy_status_quo_is_recorded_and_the_result_saves(tmp_path):
    problem = segment()
    result = rule("kalai_smorodinsky")(problem, status_quo=[[0.5, 0.5]])
    assert result.options["status_quo"] == "policy"
    np.testing.assert_allclose(result.diagnostics["disagreement_point"], [0.5, 1.5])
    rule("nash_bargaining")(problem, status_quo=[0.1, 0.2]).save(tmp_path / "nash")


# ------------------------------------------------------------------ [status_quo] in a configuration
def config_data(tmp_path, status_quo):
    return {
        "name": "status-quo",
        "output": str(tmp_path / "out"),
        "seeds": [0],
        "environment": {"id": "attention", "kwargs": {"n_sites": 2, "n_phases": 2}},
        "agents": {"population": "one_per_site"},
        "measure": {"samples": 100},
        "rules": [
            {"label": "utilitarian", "rule": "utilitarian"},
            {"label": "max-quantile", "rule": "max_quantile"},
            {"label": "nash", "rule": "nash_bargaining"},
            {"label": "ks from the worst point", "rule": "kalai_smorodinsky", "options": {"status_quo": "worst"}},
        ],
        "status_quo": status_quo,
    }


def test_a_config_status_quo_applies_to_every_rule(tmp_path):
    from policyagg.experiments.run import build_problem, run_config

    data = config_data(tmp_path, {"point": "uniform"})
    run = run_config(data, progress=False, figures=False)
    problem = build_problem(run.config, 0)
    d = disagreement_point(problem, "uniform")
    results = run.seeds[0].results
    for label, result in results.items():
        assert np.all(result.returns >= d - 1e-6 * problem.ranges.width), label
    # the bargaining rule without its own status quo takes the config's; the one with its own keeps it
    assert results["nash"].options["status_quo"] == "uniform"
    assert results["ks from the worst point"].options["status_quo"] == "worst"
    np.testing.assert_allclose(results["nash"].diagnostics["disagreement_point"], d)
    # without individual rationality the rules are free; a status quo of explicit values above the
    # free utilitarian point for agent 0 moves the utilitarian result up to it
    free = run_config(
        config_data(tmp_path / "free", {"point": "uniform", "individual_rationality": False}),
        progress=False,
        figures=False,
    )
    assert free.seeds[0].results["nash"].options["status_quo"] == "uniform"
    u = free.seeds[0].results["utilitarian"].returns
    point = [(u[0] + problem.ranges.upper[0]) / 2, float(problem.ranges.lower[1])]
    assert point[0] > u[0] + 1e-3
    bound = run_config(config_data(tmp_path / "bound", {"point": point}), progress=False, figures=False)
    assert bound.seeds[0].results["utilitarian"].returns[0] >= point[0] - 1e-6 * problem.ranges.width[0]


@pytest.mark.parametrize(
    "status_quo, match",
    [
        ({"point": "best"}, r"`status_quo.point` must be one of 'worst', 'uniform' or an array of finite numbers"),
        ({"point": [0.0, float("inf")]}, r"`status_quo.point` must be one of"),
        ({"point": "worst", "rational": True}, r"unknown key `status_quo.rational`"),
        ({"point": "worst", "individual_rationality": 1}, r"`status_quo.individual_rationality` must be true or"),
        ("uniform", r"`status_quo` must be a table"),
    ],
)
def test_a_bad_config_status_quo_is_refused_when_read(tmp_path, status_quo, match):
    with pytest.raises(InvalidConfigError, match=match):
        parse_config(config_data(tmp_path, status_quo))
