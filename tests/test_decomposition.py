"""Column generation over the occupancy polytope (solvers.decomposition), checked against the
independent dense linprog of tests/reference.py and against the direct (full-LP) path."""

import warnings

import numpy as np
import pytest
from conftest import assert_valid_result, random_problems
from hypothesis import given, settings
from reference import lp_max, max_min

import policyagg.solvers.decomposition as dec
import policyagg.solvers.occupancy as occ
from policyagg import solvers
from policyagg.errors import GapWarning, InfeasibleError, InvalidProblemError, SolverTimeLimitError
from policyagg.mdp import TabularMDP
from policyagg.polytope import return_floor
from policyagg.problem import Problem
from policyagg.sampling import sample_policy_returns
from policyagg.solvers.lp import LPModel


def _dense(problem):
    mdp = problem.mdp
    return mdp.P_dense, mdp.rho, mdp.gamma


def _cycle_or_stay(S=3):
    """gamma = 1; action 0 stays, action 1 moves to s + 1 (mod S): the union graph is one
    communicating class, yet 'stay everywhere' has S closed classes (a multichain policy)."""
    P = np.zeros((S, 2, S))
    P[np.arange(S), 0, np.arange(S)] = 1.0
    P[np.arange(S), 1, (np.arange(S) + 1) % S] = 1.0
    return TabularMDP(P, gamma=1.0)


@pytest.mark.parametrize("direct", [True, False])
@settings(max_examples=25, deadline=None)
@given(problem=random_problems(max_states=6, max_actions=3, gammas=(0.5, 0.9, 1.0)))
def test_pricing_matches_the_dense_lp_and_its_bound_is_valid(problem, direct):
    pricer = dec.Pricer(problem.mdp)
    pricer.direct_max_states = 10**6 if direct else 0  # LU or GMRES evaluation
    for c in (problem.reward_matrix[0], -problem.reward_matrix[0]):
        policy, mu, value, bound, _ = pricer.price(c)
        expected, _ = lp_max(c, *_dense(problem))
        scale = 1.0 + np.abs(c).max()
        assert value == pytest.approx(expected, abs=1e-8 * scale)
        assert bound >= expected - 1e-8 * scale  # an upper bound, whatever the potential
        assert bound == pytest.approx(expected, abs=1e-7 * scale)
        d = np.zeros(problem.mdp.n_state_actions)
        d[np.arange(problem.mdp.n_states) * problem.mdp.n_actions + policy] = mu
        assert problem.polytope.violation(d) < 1e-10
    assert pricer.fallbacks == 0


def test_pricing_repairs_multichain_policies_without_the_lp_fallback():
    mdp = _cycle_or_stay(4)
    pricer = dec.Pricer(mdp)  # starts from "stay everywhere": 4 closed classes
    c = np.zeros((4, 2))
    c[2, 0] = 1.0  # staying in state 2 is best: gain 1
    c[0, 1] = 0.5
    policy, mu, value, bound, _ = pricer.price(c.ravel())
    assert value == pytest.approx(1.0) and bound == pytest.approx(1.0)
    assert pricer.fallbacks == 0
    start = np.zeros(4, int)
    assert pricer.price(-c.ravel(), start)[2] == pytest.approx(0.0)  # worst: stay where c = 0


@settings(max_examples=20, deadline=None)
@given(problem=random_problems(max_states=5, max_actions=3, max_agents=4, gammas=(0.5, 0.9, 1.0)))
def test_decomposed_lps_match_the_dense_reference(problem):
    problem = solvers.with_ranges(Problem(problem.mdp, problem.rewards))
    R, ranges = problem.reward_matrix, problem.ranges
    with occ.decomposition("always"):
        # the return ranges are unconstrained MDP optima
        ranges2 = occ.return_ranges(problem)
        util = solvers.utilitarian(problem, normalize=False)
        egal = solvers.egalitarian(problem, normalize=True)
    scale = 1.0 + np.abs(R).max()
    np.testing.assert_allclose(ranges2.upper, [lp_max(r, *_dense(problem))[0] for r in R], atol=1e-8 * scale)
    np.testing.assert_allclose(ranges2.lower, [-lp_max(-r, *_dense(problem))[0] for r in R], atol=1e-8 * scale)
    assert problem.weights @ util.returns == pytest.approx(
        lp_max(problem.weights @ R, *_dense(problem))[0], abs=1e-7 * scale
    )
    live = ~ranges.flat  # indifferent agents are normalised to 1 by convention
    if live.any():
        first_level = max_min(R[live], *_dense(problem), scale=ranges.width[live], offset=ranges.lower[live])
        assert egal.normalized[live].min() == pytest.approx(first_level, abs=1e-6)
    assert util.diagnostics["pricings"] >= 1
    assert_valid_result(problem, util)
    assert_valid_result(problem, egal)


@pytest.mark.parametrize(
    "name,options",
    [("max_quantile", {}), ("pvc", {}), ("approval", {"alpha": 0.8}), ("egalitarian", {"normalize": True})],
)
@settings(max_examples=8, deadline=None)
@given(problem=random_problems(max_states=5, max_actions=3, max_agents=4, gammas=(0.5, 1.0)))
def test_decomposed_rules_reach_the_direct_rules_optimum(name, options, problem):
    problem = solvers.with_ranges(Problem(problem.mdp, problem.rewards))
    samples = sample_policy_returns(problem, 200, rng=0, progress=False)
    rule = solvers.get_rule(name)
    with occ.decomposition("never"):
        direct = rule(problem, samples, **options)
    with occ.decomposition("always"):
        decomposed = rule(problem, samples, **options)
    assert decomposed.diagnostics["pricings"] >= 1  # really went through column generation
    assert_valid_result(problem, decomposed)
    if name == "max_quantile":
        assert decomposed.diagnostics["q_star"] == direct.diagnostics["q_star"]
    elif name == "approval":
        assert decomposed.diagnostics["approval_weight"] == pytest.approx(direct.diagnostics["approval_weight"])
    elif name == "pvc":
        assert decomposed.report["pvc_epsilon"] <= decomposed.diagnostics["epsilon_bound"] + 1e-12
    if name != "approval":  # leximin completions are unique in return space
        np.testing.assert_allclose(np.sort(decomposed.normalized), np.sort(direct.normalized), atol=1e-5)


def test_decomposed_duals_are_a_kkt_certificate_of_the_full_lp():
    rng = np.random.default_rng(5)
    S, A = 5, 3
    mdp = TabularMDP(rng.dirichlet(np.ones(S), size=(S, A)), gamma=1.0)
    problem = solvers.with_ranges(Problem(mdp, rng.normal(size=(3, S, A))))
    floor = solvers.completion.threshold_rows(
        problem, [1, 2], problem.ranges.lower[1:] + 0.6 * problem.ranges.width[1:], "floors"
    )
    program = occ.occupancy_program(problem, problem.reward_matrix[0], name="kkt", rows=[floor])
    with occ.decomposition("always"):
        solution = occ.make_model(program).solve()
    full = program.full
    y = solution.row_duals
    reduced = full.cost - full.A.T @ y
    assert reduced.max() <= 1e-7  # dual feasible (max: reduced costs <= 0 at d >= 0)
    assert np.abs(reduced @ solution.x) <= 1e-7  # complementary slackness
    rows = full.A @ solution.x
    assert (rows >= full.row_lower - 1e-7).all() and (rows <= full.row_upper + 1e-7).all()
    b = np.where(y > 0, full.row_upper, full.row_lower)  # active bound by the dual's sign (max)
    assert b @ y == pytest.approx(solution.objective, abs=1e-7)  # strong duality
    A_ub = -floor.A.toarray()
    expected, _ = lp_max(problem.reward_matrix[0], *_dense(problem), A_ub=A_ub, b_ub=-floor.lower)
    assert solution.objective == pytest.approx(expected, abs=1e-8)


def test_decomposed_model_warm_resolves_and_reports_infeasibility_by_family():
    rng = np.random.default_rng(2)
    mdp = TabularMDP(rng.dirichlet(np.ones(4), size=(4, 2)), gamma=0.9)
    problem = solvers.with_ranges(Problem(mdp, rng.normal(size=(2, 4, 2))))
    upper = problem.ranges.upper
    floor = solvers.completion.threshold_rows(problem, [0, 1], problem.ranges.lower, "floors")
    program = occ.occupancy_program(problem, problem.reward_matrix.sum(axis=0), name="warm", rows=[floor])
    rows = program.row_families[-1][1] + np.arange(2)
    width = problem.ranges.width
    with occ.decomposition("always"):
        model = occ.make_model(program)
        model.solve()
        model.set_row_bounds(rows, (upper - 0.2 * width) / width, np.inf)  # feasible: phase II only
        value = model.solve().objective
        expected, _ = lp_max(
            problem.reward_matrix.sum(axis=0),
            *_dense(problem),
            A_ub=-problem.reward_matrix,
            b_ub=-(upper - 0.2 * width),
        )
        assert value == pytest.approx(expected, abs=1e-8)
        model.set_row_bounds(rows, (upper + 0.1 * width) / width, np.inf)  # nobody beats its own optimum
        with pytest.raises(InfeasibleError, match="'warm'.*floors"):
            model.solve()
        with pytest.raises(InvalidProblemError, match="side rows"):
            model.set_row_bounds([0], 0.0, 1.0)  # flow rows are fixed
        with pytest.raises(InvalidProblemError, match="extra columns"):
            model.set_col_bounds([0], 0.0, 1.0)


def test_rules_name_the_culprit_when_constraints_empty_the_decomposed_polytope():
    rng = np.random.default_rng(4)
    mdp = TabularMDP(rng.dirichlet(np.ones(3), size=(3, 2)), gamma=0.8)
    problem = solvers.with_ranges(Problem(mdp, rng.normal(size=(2, 3, 2))))
    impossible = return_floor(mdp, problem.rewards[0], problem.ranges.upper[0] + 1.0)
    with occ.decomposition("always"), pytest.raises(InfeasibleError, match="utilitarian"):
        solvers.utilitarian(problem, constraints=impossible)


def test_auto_mode_decomposes_only_large_highs_lps(monkeypatch):
    problem = solvers.with_ranges(Problem(_cycle_or_stay(3), np.ones((1, 3, 2))))
    program = occ.occupancy_program(problem, np.zeros(6), name="p")
    assert not occ.decomposes(program)
    monkeypatch.setattr(occ, "DECOMPOSE_MIN_COLUMNS", 6)
    assert occ.decomposes(program) and not occ.decomposes(program, "pulp")
    milp = occ.occupancy_program(
        problem, np.zeros(7), name="m", extra_cols=1, integrality=np.r_[np.zeros(6), 1].astype(bool)
    )
    assert not occ.decomposes(milp)
    assert not occ.decomposes(program, decompose="never")  # the explicit parameter
    assert occ.decomposes(occ.occupancy_program(problem, np.zeros(6), name="q"), decompose="always")
    with occ.decomposition("never"):
        assert not occ.decomposes(program)
        assert occ.decomposes(program, decompose="auto")  # explicit arguments win over the block
        with occ.decomposition(pool=dec.ColumnPool(problem.mdp)):
            assert not occ.decomposes(program)  # an inner block that sets only the pool keeps the mode
    assert occ.decomposes(program)  # the block's defaults end with it
    with pytest.raises(InvalidProblemError, match="decomposition mode"):
        with occ.decomposition("sometimes"):
            pass
    with pytest.raises(InvalidProblemError, match="decomposition mode"):
        occ.make_model(program, decompose="sometimes")


def test_decomposed_model_honours_the_time_limit():
    rng = np.random.default_rng(9)
    mdp = TabularMDP(rng.dirichlet(np.ones(4), size=(4, 3)), gamma=0.9)
    problem = Problem(mdp, rng.normal(size=(1, 4, 3)))
    program = occ.occupancy_program(problem, problem.reward_matrix[0], name="slow")
    with occ.decomposition("always"):
        model = occ.make_model(program, time_limit=1e-9)  # a fresh MDP: no pooled columns yet
        with pytest.raises(SolverTimeLimitError, match="time_limit"):
            model.solve()


def _larger_problem(S=40, A=4, gamma=0.95, seed=11):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(S, 0.3), size=(S, A))
    return Problem(TabularMDP(P, gamma=gamma), rng.normal(size=(2, S, A)))


def test_a_stop_with_the_gap_open_is_status_gap_with_a_valid_gap():
    problem = solvers.with_ranges(_larger_problem())
    c = problem.reward_matrix[0]
    level = problem.ranges.lower[1] + 0.7 * problem.ranges.width[1]
    floor = solvers.completion.threshold_rows(problem, [1], [level], "floor")  # the optimum mixes policies
    program = occ.occupancy_program(problem, c, name="stopped early", rows=[floor])
    model = dec.DecomposedModel(program, max_rounds=4)  # phase I takes 3 rounds; the optimum needs about 11
    with pytest.warns(GapWarning, match="'stopped early'.*round limit.*gap"):
        solution = model.solve()
    assert solution.status == "gap" and solution.details["stopped"] == "round limit"
    optimum, _ = lp_max(c, *_dense(problem), A_ub=-problem.reward_matrix[1:], b_ub=[-level])  # independent linprog
    assert optimum - solution.objective > 1e-3  # the gap really is open ...
    assert optimum - solution.objective <= solution.details["gap"] + 1e-9  # ... and the reported gap bounds it
    d = solution.x[: problem.mdp.n_state_actions]
    assert problem.polytope.violation(d) < 1e-9 and problem.reward_matrix[1] @ d >= level - 1e-9  # still feasible
    model.max_rounds = dec.MAX_ROUNDS  # the same model, allowed to finish, proves optimality
    with warnings.catch_warnings():
        warnings.simplefilter("error", GapWarning)
        finished = model.solve()
    assert finished.status == "optimal" and finished.objective == pytest.approx(optimum, abs=1e-8)


def test_a_rule_whose_generation_stops_early_reports_status_gap(monkeypatch, tmp_path):
    problem = solvers.with_ranges(_larger_problem())  # exact ranges (direct LPs: 160 columns)
    monkeypatch.setattr(dec, "MAX_ROUNDS", 3)  # read when each model is made
    with occ.decomposition("always"), pytest.warns(GapWarning):
        result = solvers.egalitarian(problem, normalize=True)
    assert result.status == "gap" and result.diagnostics["status"] == "gap"
    assert result.diagnostics["column_generation_gap"] > 1e-6
    assert problem.polytope.violation(result.occupancy) < 1e-9  # a feasible answer, flagged as not optimal
    assert "status: gap" in result.table()
    result.save(tmp_path / "r")
    assert type(result).load(tmp_path / "r").status == "gap"
    with occ.decomposition("never"):
        assert solvers.egalitarian(problem, normalize=True).status == "optimal"


def test_models_given_one_pool_share_its_columns():
    problem = _larger_problem()
    c0, c1 = problem.reward_matrix
    pool = dec.ColumnPool(problem.mdp)
    first = occ.make_model(occ.occupancy_program(problem, c0, name="a"), decompose="always", pool=pool).solve()
    assert len(pool) == first.details["columns"] > 0
    again = occ.make_model(occ.occupancy_program(problem, c0, name="b"), decompose="always", pool=pool).solve()
    cold = occ.make_model(occ.occupancy_program(problem, c0, name="c"), decompose="always").solve()
    assert again.details["pricings"] == 1 < cold.details["pricings"]  # one pricing proves the pooled optimum
    assert again.objective == pytest.approx(cold.objective, abs=1e-9)
    with occ.decomposition("always", pool=pool):  # the defaults of a block reach make_model calls in it
        model = occ.make_model(occ.occupancy_program(problem, c1, name="d"))
    assert model.pool is pool
    snapshot = pool.snapshot()
    pool.clear()
    assert len(pool) == 0
    pool.restore(snapshot)
    assert len(pool) == len(snapshot[0])
    other = _larger_problem(seed=12)
    with pytest.raises(InvalidProblemError, match="another MDP"):
        occ.make_model(occ.occupancy_program(other, other.reward_matrix[0], name="e"), decompose="always", pool=pool)


def test_decomposed_model_is_an_lp_model_and_its_current_lp_is_the_full_program():
    problem = _larger_problem(S=6, A=2)
    program = occ.occupancy_program(problem, problem.reward_matrix[0], name="full")
    model = occ.make_model(program, decompose="always")
    assert isinstance(model, dec.DecomposedModel) and isinstance(model, LPModel)
    model.set_cost(-problem.reward_matrix[0])
    current = model.current_lp()
    np.testing.assert_array_equal(current.cost, -problem.reward_matrix[0])
    assert current.n_rows == program.full.n_rows and current.row_families == program.row_families
    model.set_option("dual_feasibility_tolerance", 1e-10)
    with pytest.raises(InvalidProblemError, match="HiGHS rejected"):
        model.set_option("no_such_option", 1)


def _floor_program(problem):
    c = problem.reward_matrix[0]
    level = problem.ranges.lower[1] + 0.7 * problem.ranges.width[1]
    floor = solvers.completion.threshold_rows(problem, [1], [level], "floor")  # the optimum mixes policies
    optimum, _ = lp_max(c, *_dense(problem), A_ub=-problem.reward_matrix[1:], b_ub=[-level])  # independent linprog
    return occ.occupancy_program(problem, c, name="floor", rows=[floor]), optimum


def _loose_unless_refined(monkeypatch, excess):
    """Pricing whose bound is ``excess`` too high (an inaccurate potential) unless refined; the
    refined calls are counted."""
    price, refined = dec.Pricer.price, []

    def loose(self, c, start=None, *, refine=False):
        policy, mu, value, bound, duals = price(self, c, start, refine=refine)
        refined.append(refine)
        return policy, mu, value, bound + (0.0 if refine else excess), duals

    monkeypatch.setattr(dec.Pricer, "price", loose)
    return refined


def test_a_large_model_reprices_refined_before_calling_the_gap_open(monkeypatch):
    problem = solvers.with_ranges(_larger_problem())
    program, optimum = _floor_program(problem)
    monkeypatch.setattr(dec, "EXACT_PRICING_MAX_COLUMNS", 0)  # "large": no exact LP pricing
    refined = _loose_unless_refined(monkeypatch, 1e-6)  # a bound 100x the tolerance too high
    with warnings.catch_warnings():
        warnings.simplefilter("error", GapWarning)
        solution = dec.DecomposedModel(program).solve()
    assert solution.status == "optimal" and solution.objective == pytest.approx(optimum, abs=1e-8)
    assert solution.details["refined_pricings"] == 1 == sum(refined)  # once, at the stall
    assert solution.details["gap"] <= dec.GAP_TOL * max(1.0, abs(solution.objective))


def test_a_refined_pricing_that_cannot_close_the_gap_leaves_status_gap(monkeypatch):
    problem = solvers.with_ranges(_larger_problem())
    program, optimum = _floor_program(problem)
    monkeypatch.setattr(dec, "EXACT_PRICING_MAX_COLUMNS", 0)
    price = dec.Pricer.price

    def loose(self, c, start=None, *, refine=False):  # even refined, the bound stays 1e-6 too high
        policy, mu, value, bound, duals = price(self, c, start, refine=refine)
        return policy, mu, value, bound + 1e-6, duals

    monkeypatch.setattr(dec.Pricer, "price", loose)
    with pytest.warns(GapWarning, match="stall"):
        solution = dec.DecomposedModel(program).solve()
    assert solution.status == "gap" and solution.details["refined_pricings"] == 1
    assert solution.objective == pytest.approx(optimum, abs=1e-8)  # the master did reach the optimum ...
    assert 1e-6 - 1e-9 <= solution.details["gap"] <= 1e-6 + 1e-9  # ... but only the loose bound was proven


def test_a_small_model_still_prices_exactly_by_lp_at_a_stall(monkeypatch):
    problem = solvers.with_ranges(_larger_problem())
    program, optimum = _floor_program(problem)
    refined = _loose_unless_refined(monkeypatch, 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GapWarning)
        solution = dec.DecomposedModel(program).solve()  # 160 columns: the LP over O is cheap
    assert solution.status == "optimal" and solution.objective == pytest.approx(optimum, abs=1e-8)
    assert solution.details["refined_pricings"] == 0 and not any(refined)
