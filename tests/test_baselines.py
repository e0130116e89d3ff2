import numpy as np
import pytest
from conftest import assert_valid_result, bandit, leaky_average, random_problems
from hypothesis import given, settings
from reference import dense_polytope, lp_max, max_min, occupancy_by_dense_solve, owa_max
from scipy.optimize import minimize

from policyagg import solvers
from policyagg.errors import InfeasibleError, InvalidProblemError
from policyagg.mdp import TabularMDP
from policyagg.metrics import gini
from policyagg.polytope import budget, forbid, return_floor
from policyagg.problem import Problem
from policyagg.sampling import sample_policy_returns
from policyagg.solvers.baselines import NASH_FLOOR, generalized_gini, gini_owa_weights, nash_welfare, random_dictator
from policyagg.solvers.occupancy import decomposition

BASELINES = (random_dictator, nash_welfare, generalized_gini)


def simplex_bandit(rewards, weights=None):
    """One state, one action per column of ``rewards`` (n, A): d is a point of the simplex."""
    rewards = np.asarray(rewards, float)
    mdp = TabularMDP(np.ones((1, rewards.shape[1], 1)), gamma=0.9)
    return Problem(mdp, rewards[:, None, :], weights=weights)


def reference_ranges(problem):
    """min_O J_i and max_O J_i by dense linprog (independent of the package)."""
    mdp = problem.mdp
    R = problem.rewards.reshape(problem.n_agents, -1)
    lo = np.array([-lp_max(-r, mdp.P_dense, mdp.rho, mdp.gamma)[0] for r in R])
    hi = np.array([lp_max(r, mdp.P_dense, mdp.rho, mdp.gamma)[0] for r in R])
    return lo, hi


def simplex_grid(A, steps):
    """All points of the A-simplex (A = 3) with coordinates in {0, 1/steps, ..., 1}."""
    i, j = np.meshgrid(np.arange(steps + 1), np.arange(steps + 1), indexing="ij")
    keep = i + j <= steps
    x, y = i[keep] / steps, j[keep] / steps
    return np.column_stack([x, y, 1 - x - y])


# ------------------------------------------------------------------ random dictator
@pytest.mark.parametrize("weights, expected", [([1.0, 1.0], [0.5, 1.5]), ([3.0, 1.0], [0.75, 0.75])])
def test_random_dictator_by_hand(weights, expected):
    # bandit: agent 0's best is p = 1, agent 1's p = 0; the mixture is p = w_0 / (w_0 + w_1)
    result = random_dictator(bandit(weights=weights))
    np.testing.assert_allclose(result.returns, expected, atol=1e-9)
    assert result.rule == "random_dictator" and result.report["pareto_optimal"]


def test_random_dictator_mixture_is_lifted_to_the_pareto_frontier():
    # the dictators' favourites (1, 0) and (0, 1) average to (.5, .5); action 2 gives (.6, .6) to both
    problem = simplex_bandit([[1.0, 0.0, 0.6], [0.0, 1.0, 0.6]])
    plain = random_dictator(problem, pareto=False)
    np.testing.assert_allclose(plain.returns, [0.5, 0.5], atol=1e-9)
    assert not plain.report["pareto_optimal"] and plain.report["pareto_gap"] == pytest.approx(0.2, abs=1e-7)
    lifted = random_dictator(problem)
    np.testing.assert_allclose(lifted.returns, [0.6, 0.6], atol=1e-7)
    assert lifted.report["pareto_optimal"]
    assert lifted.diagnostics["mixture_pareto_gap"] == pytest.approx(0.2, abs=1e-7)
    np.testing.assert_allclose(lifted.diagnostics["mixture_returns"], [0.5, 0.5], atol=1e-9)
    assert lifted.options["pareto"] is True and plain.options["pareto"] is False


def test_random_dictator_recomputes_the_dictators_inside_the_constraints():
    # leaky: J_0 = time in state 0, J_1 = time in state 1 <= 2/3. With a budget time-in-1 <= 0.3
    # agent 1's best is (0.7, 0.3) (its unconstrained best (1/3, 2/3) is cut off); agent 0's is (1, 0).
    problem = leaky_average()
    cost = np.zeros((2, 2))
    cost[1, :] = 1.0
    for pareto in (True, False):  # J_0 + J_1 = 1 everywhere: every point is Pareto optimal
        result = random_dictator(problem, constraints=budget(problem.mdp, cost, 0.3), pareto=pareto)
        np.testing.assert_allclose(result.returns, [0.85, 0.15], atol=1e-7)
    np.testing.assert_allclose(random_dictator(problem).returns, [2 / 3, 1 / 3], atol=1e-7)


# ------------------------------------------------------------------ Nash welfare
@pytest.mark.parametrize("weights", [[1.0, 1.0], [3.0, 1.0], [1.0, 4.0], [0.7, 1.9]])
def test_nash_closed_form_on_the_bandit(weights):
    # normalised returns p and 1 - p: max w_0 log p + w_1 log(1 - p) at p* = w_0 / (w_0 + w_1)
    p_star = weights[0] / sum(weights)
    result = nash_welfare(bandit(weights=weights), tolerance=1e-10)
    # the LP's own optimality tolerance (~1e-7 on a flat objective) limits the accuracy from here on
    np.testing.assert_allclose(result.normalized, [p_star, 1 - p_star], atol=3e-4)
    assert result.diagnostics["gap"] <= 1e-10 and result.diagnostics["converged"]
    expected = weights[0] * np.log(p_star) + weights[1] * np.log(1 - p_star)
    assert result.diagnostics["nash_welfare"] == pytest.approx(expected, abs=1e-7)
    coarse = nash_welfare(bandit(weights=weights))  # default tolerance 1e-6: u within ~sqrt(1e-6)
    np.testing.assert_allclose(coarse.normalized, [p_star, 1 - p_star], atol=3e-3)
    assert coarse.diagnostics["nash_welfare"] == pytest.approx(expected, abs=1e-6 * sum(weights))
    assert coarse.diagnostics["rounds"] >= 1 and coarse.diagnostics["n_cuts"] >= 10


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nash_matches_scipy_on_the_dense_formulation(seed):
    rng = np.random.default_rng(seed)
    S, A, n = 3, 2, 3
    mdp = TabularMDP(rng.dirichlet(np.ones(S), size=(S, A)), rho=rng.dirichlet(np.ones(S)), gamma=0.8)
    w = rng.uniform(0.5, 2.0, size=n)
    problem = Problem(mdp, rng.normal(size=(n, S, A)), weights=w)
    lo, hi = reference_ranges(problem)
    R = problem.rewards.reshape(n, -1)
    A_eq, b_eq = dense_polytope(mdp.P_dense, mdp.rho, mdp.gamma)
    A_eq, b_eq = A_eq[:-1], b_eq[:-1]  # discounted: sum d = 1 is implied by the flow rows

    def welfare(d):
        return w @ np.log(np.maximum((R @ d - lo) / (hi - lo), 1e-12))

    best = -np.inf
    policies = [np.full((S, A), 1.0 / A)] + [rng.dirichlet(np.ones(A), size=S) for _ in range(4)]
    for policy in policies:  # start from interior points of O: occupancies of stochastic policies
        start = occupancy_by_dense_solve(mdp.P_dense, mdp.rho, mdp.gamma, policy).ravel()
        res = minimize(
            lambda d: -welfare(d),
            start,
            method="SLSQP",
            bounds=[(0, None)] * (S * A),
            constraints=[{"type": "eq", "fun": lambda d: A_eq @ d - b_eq}],
            options={"ftol": 1e-12, "maxiter": 500},
        )
        if res.success and np.abs(A_eq @ res.x - b_eq).max() < 1e-8 and res.x.min() > -1e-9:
            best = max(best, welfare(np.clip(res.x, 0, None)))
    assert np.isfinite(best)
    result = nash_welfare(problem)
    got = w @ np.log(result.normalized)
    assert got == pytest.approx(result.diagnostics["nash_welfare"], abs=1e-9)
    assert got >= best - 1e-6 * w.sum()  # within tolerance of the optimum ...
    assert got <= best + 1e-6  # ... and SLSQP finds it too


def test_nash_stops_after_max_rounds_with_a_warning():
    with pytest.warns(RuntimeWarning, match=r"1 rounds left a log-gap"):
        result = nash_welfare(bandit(weights=[3.0, 1.0]), max_rounds=1)
    assert result.diagnostics["rounds"] == 1 and not result.diagnostics["converged"]
    assert result.diagnostics["gap"] > 1e-6


def test_nash_ignores_indifferent_agents():
    # agent 2 gets 1 everywhere: the optimum is the two-agent one, p = 1/2
    problem = simplex_bandit([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    result = nash_welfare(problem, tolerance=1e-10)
    np.testing.assert_allclose(result.normalized, [0.5, 0.5, 1.0], atol=1e-4)
    everyone_indifferent = nash_welfare(simplex_bandit([[1.0, 1.0]]))
    assert everyone_indifferent.diagnostics["nash_welfare"] == 0.0


def test_constraints_that_zero_an_agent():
    # leaky, 'move' forbidden in state 0: the chain stays in state 0, agent 1 gets u = 0 whatever
    # happens; Nash floors its log at NASH_FLOOR and still converges
    problem = leaky_average()
    for rule in BASELINES:
        result = rule(problem, constraints=forbid(problem.mdp, 0, 1))
        np.testing.assert_allclose(result.returns, [1.0, 0.0], atol=1e-7)
        assert result.report["pareto_optimal"]
    result = nash_welfare(problem, constraints=forbid(problem.mdp, 0, 1))
    assert result.diagnostics["converged"]
    assert result.diagnostics["nash_welfare"] == pytest.approx(np.log(NASH_FLOOR), rel=1e-6)


# ------------------------------------------------------------------ generalised Gini welfare
def owa(a, u):
    return np.sort(u, axis=-1) @ a


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gini_matches_brute_force_on_a_simplex_grid(seed):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(3, 3))
    problem = simplex_bandit(rewards)
    lo, hi = rewards.min(axis=1), rewards.max(axis=1)  # the vertices of the simplex
    steps = 200
    grid = simplex_grid(3, steps)
    u = (grid @ rewards.T - lo) / (hi - lo)
    for a in (gini_owa_weights(3), np.array([0.5, 0.3, 0.2]), np.array([1.0, 1.0, 1.0])):
        grid_best = owa(a, u).max()
        result = generalized_gini(problem, owa_weights=a)
        value = owa(a, result.normalized)
        assert value == pytest.approx(result.diagnostics["owa_value"], abs=1e-9)
        lipschitz = a.sum() * np.max(np.abs(rewards[:, :, None] - rewards[:, None, :]).max(axis=(1, 2)) / (hi - lo))
        assert grid_best - 1e-9 <= value <= grid_best + lipschitz / steps


def test_default_owa_is_mean_times_one_minus_gini():
    rng = np.random.default_rng(3)
    problem = simplex_bandit(rng.normal(size=(4, 3)))
    np.testing.assert_allclose(gini_owa_weights(4), [7 / 16, 5 / 16, 3 / 16, 1 / 16])
    result = generalized_gini(problem)
    u = result.normalized
    assert result.diagnostics["owa_value"] == pytest.approx(u.mean() * (1 - gini(u)), abs=1e-9)
    assert result.options["owa_weights"] == pytest.approx(gini_owa_weights(4).tolist())


@settings(max_examples=10, deadline=None)
@given(random_problems(gammas=(0.5, 0.9, 1.0)))
def test_gini_limits_are_max_min_and_utilitarian(problem):
    problem = solvers.with_ranges(Problem(problem.mdp, problem.rewards))  # equal weights
    n = problem.n_agents
    mdp = problem.mdp
    lo, hi = problem.ranges.lower, problem.ranges.upper
    keep = ~problem.ranges.flat
    if not keep.any():
        return
    R = problem.reward_matrix
    expected = max_min(R[keep], mdp.P_dense, mdp.rho, mdp.gamma, scale=(hi - lo)[keep], offset=lo[keep])
    delta = 1e-4
    result = generalized_gini(problem, owa_weights=[1.0] + [delta] * (n - 1))
    # OWA(u*) >= OWA(u_maxmin) gives min u* >= max-min - delta (n - 1)
    assert expected - delta * (n - 1) - 1e-7 <= result.normalized[keep].min() <= expected + 1e-7
    flat = generalized_gini(problem, owa_weights=np.ones(n))
    utilitarian = solvers.utilitarian(problem, normalize=True)
    assert flat.normalized.sum() == pytest.approx(utilitarian.normalized.sum(), abs=1e-6)


def random_owa_weights(rng, n):
    """Positive, non-increasing weights with some ties (steps of zero)."""
    steps = rng.uniform(0.0, 1.0, n) * (rng.random(n) < 0.7)
    steps[-1] += 0.05
    return np.cumsum(steps[::-1])[::-1]


@settings(max_examples=15, deadline=None)
@given(problem=random_problems(max_agents=6, gammas=(0.5, 0.9, 1.0)))
def test_gini_matches_ogryczaks_lp(problem):
    # an independent formulation (scipy linprog, n^2 rows) against the library's cutting planes
    problem = solvers.with_ranges(problem)
    n, mdp = problem.n_agents, problem.mdp
    lo, hi = reference_ranges(problem)
    keep = ~problem.ranges.flat
    rng = np.random.default_rng(n)
    for a in (gini_owa_weights(n), random_owa_weights(rng, n)):
        result = generalized_gini(problem, owa_weights=a)
        assert result.status == "optimal" and result.diagnostics["converged"]
        # flat agents have u = 1 everywhere: they enter the reference as constant rewards of 1
        R = np.where(keep[:, None], problem.reward_matrix, 1.0)
        width = np.where(keep, hi - lo, 1.0)
        expected, _ = owa_max(R, mdp.P_dense, mdp.rho, mdp.gamma, a, scale=width, offset=np.where(keep, lo, 0.0))
        assert result.diagnostics["owa_value"] == pytest.approx(expected, abs=1e-7 * a.sum())
        assert owa(a, result.normalized) == pytest.approx(expected, abs=1e-7 * a.sum())


def many_agents_problem(n, seed=0):
    rng = np.random.default_rng(seed)
    S, A = 3, 2
    mdp = TabularMDP(rng.dirichlet(np.ones(S), size=(S, A)), rho=rng.dirichlet(np.ones(S)), gamma=0.9)
    return Problem(mdp, rng.normal(size=(n, S, A)), weights=rng.uniform(0.5, 2.0, size=n))


@pytest.mark.parametrize("n", [10, 100])
def test_many_agents_gini_matches_ogryczaks_lp(n):
    problem = many_agents_problem(n)
    mdp = problem.mdp
    lo, hi = reference_ranges(problem)
    a = gini_owa_weights(n)
    R = problem.reward_matrix  # interior point: 3x faster than simplex on the 10^4 rows at n = 100
    expected, _ = owa_max(R, mdp.P_dense, mdp.rho, mdp.gamma, a, scale=hi - lo, offset=lo, method="highs-ipm")
    result = generalized_gini(problem)
    assert result.status == "optimal" and result.diagnostics["converged"]
    assert owa(a, result.normalized) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("n", [10, 100])
def test_many_agents_nash_matches_scipy(n):
    problem = many_agents_problem(n, seed=1)
    mdp = problem.mdp
    lo, hi = reference_ranges(problem)
    R, w = problem.reward_matrix, problem.weights
    A_eq, b_eq = dense_polytope(mdp.P_dense, mdp.rho, mdp.gamma)
    A_eq, b_eq = A_eq[:-1], b_eq[:-1]

    def welfare(d):
        return w @ np.log(np.maximum((R @ d - lo) / (hi - lo), 1e-12))

    start = occupancy_by_dense_solve(mdp.P_dense, mdp.rho, mdp.gamma, np.full((3, 2), 0.5)).ravel()
    res = minimize(
        lambda d: -welfare(d),
        start,
        method="SLSQP",
        bounds=[(0, None)] * 6,
        constraints=[{"type": "eq", "fun": lambda d: A_eq @ d - b_eq}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    assert res.success and np.abs(A_eq @ res.x - b_eq).max() < 1e-8
    best = welfare(np.clip(res.x, 0, None))
    result = nash_welfare(problem)
    assert result.status == "optimal" and result.diagnostics["converged"]
    got = w @ np.log(result.normalized)
    assert best - 1e-6 * w.sum() <= got <= best + 1e-7 * w.sum()


@pytest.mark.parametrize("rule", [nash_welfare, generalized_gini])
def test_cut_rules_stopped_early_report_a_gap(rule):
    problem = many_agents_problem(10)
    with pytest.warns(RuntimeWarning, match=r"1 rounds left a (log-)?gap .* \(status 'gap'\)"):
        result = rule(problem, max_rounds=1)
    assert result.status == "gap" and not result.diagnostics["converged"]


@pytest.mark.parametrize("rule", [nash_welfare, generalized_gini])
def test_cut_rules_by_column_generation_match_the_direct_lp(rule):
    # column generation cannot add rows to its master: the rules rebuild it with every cut
    problem = solvers.with_ranges(many_agents_problem(8, seed=2))
    direct = rule(problem)
    with decomposition("always"):
        generated = rule(problem)
    assert generated.diagnostics.get("pricings", 0) > 0
    key = "nash_welfare" if rule is nash_welfare else "owa_value"
    assert generated.diagnostics[key] == pytest.approx(direct.diagnostics[key], abs=1e-6)


# ------------------------------------------------------------------ all three
@pytest.mark.parametrize("rule", BASELINES)
@settings(max_examples=15, deadline=None)
@given(problem=random_problems(gammas=(0.5, 0.9, 1.0)))
def test_feasible_and_pareto_optimal(rule, problem):
    assert_valid_result(problem, rule(problem))  # weighted problems (test_rules covers unweighted)


@pytest.mark.parametrize("rule", BASELINES)
def test_backends_agree(rule):
    rng = np.random.default_rng(7)
    mdp = TabularMDP(rng.dirichlet(np.ones(3), size=(3, 2)), gamma=0.8)
    problem = solvers.with_ranges(Problem(mdp, rng.normal(size=(3, 3, 2)), weights=[1.0, 2.0, 0.5]))
    a = rule(problem, backend="highs")
    b = rule(problem, backend="pulp")
    np.testing.assert_allclose(a.normalized, b.normalized, atol=2e-3 if rule is nash_welfare else 1e-6)
    assert b.diagnostics["backend"] == "pulp" and a.report["pareto_optimal"] and b.report["pareto_optimal"]


@pytest.mark.parametrize("rule", BASELINES)
def test_samples_give_the_volumetric_report(rule):
    problem = solvers.with_ranges(leaky_average())
    samples = sample_policy_returns(problem, 300, rng=0, progress=False)
    result = rule(problem, samples)
    assert result.ranks is not None and "pvc_epsilon" in result.report and "borda" in result.report


@pytest.mark.parametrize("rule", BASELINES)
def test_infeasible_constraints_are_named(rule):
    problem = leaky_average()
    cost = np.zeros((2, 2))
    cost[1, :] = 1.0
    impossible = return_floor(problem.mdp, problem.rewards[1], 0.5) & budget(problem.mdp, cost, 0.3)
    with pytest.raises(InfeasibleError, match=r"return floor\(>= 0.5\).*budget\(<= 0.3\)"):
        rule(problem, constraints=impossible)


@pytest.mark.parametrize(
    "rule, options, match",
    [
        (random_dictator, {"pareto": "yes"}, r"`pareto` must be True or False"),
        (random_dictator, {"pareto": None}, r"`pareto` must be True or False"),
        (nash_welfare, {"tolerance": 0.0}, r"`tolerance` must be a positive number"),
        (nash_welfare, {"tolerance": -1e-6}, r"`tolerance` must be a positive number"),
        (nash_welfare, {"tolerance": float("nan")}, r"`tolerance` must be a positive number"),
        (nash_welfare, {"tolerance": True}, r"`tolerance` must be a positive number"),
        (nash_welfare, {"max_rounds": 0}, r"`max_rounds` must be a positive integer"),
        (nash_welfare, {"max_rounds": 2.5}, r"`max_rounds` must be a positive integer"),
        (nash_welfare, {"max_rounds": True}, r"`max_rounds` must be a positive integer"),
        (
            generalized_gini,
            {"owa_weights": [0.2, 0.8]},
            r"`owa_weights` must be non-increasing .* a\[0\] = 0.2 < a\[1\] = 0.8",
        ),
        (generalized_gini, {"owa_weights": [1.0, 0.0]}, r"`owa_weights` must be finite and > 0"),
        (generalized_gini, {"owa_weights": [1.0, -1.0]}, r"`owa_weights` must be finite and > 0"),
        (generalized_gini, {"owa_weights": [1.0, np.inf]}, r"`owa_weights` must be finite and > 0"),
        (
            generalized_gini,
            {"owa_weights": [1.0, 0.5, 0.2]},
            r"`owa_weights` must have one weight per agent, shape \(2,\)",
        ),
        (generalized_gini, {"owa_weights": ["a", "b"]}, r"`owa_weights` must be 2 numbers"),
        (random_dictator, {"backend": "gurobi"}, r"`backend` must be one of highs, pulp"),
    ],
)
def test_bad_options(rule, options, match):
    with pytest.raises(InvalidProblemError, match=match):
        rule(bandit(), **options)
