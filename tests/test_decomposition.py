"""Column generation over the occupancy polytope (solvers.decomposition), checked against the
independent dense linprog of tests/reference.py and against the direct (full-LP) path."""

import numpy as np
import pytest
from hypothesis import given, settings

from policyagg import solvers
import policyagg.solvers.decomposition as dec
import policyagg.solvers.occupancy as occ
from conftest import assert_valid_result, random_problems
from policyagg.errors import InfeasibleError, InvalidProblemError, SolverTimeLimitError
from policyagg.mdp import TabularMDP
from policyagg.polytope import return_floor
from policyagg.problem import Problem
from policyagg.sampling import sample_policy_returns
from reference import lp_max, max_min


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
    assert problem.weights @ util.returns == pytest.approx(lp_max(problem.weights @ R, *_dense(problem))[0],
                                                            abs=1e-7 * scale)
    live = ~ranges.flat  # indifferent agents are normalised to 1 by convention
    if live.any():
        first_level = max_min(R[live], *_dense(problem), scale=ranges.width[live], offset=ranges.lower[live])
        assert egal.normalized[live].min() == pytest.approx(first_level, abs=1e-6)
    assert util.diagnostics["pricings"] >= 1
    assert_valid_result(problem, util)
    assert_valid_result(problem, egal)


@pytest.mark.parametrize("name,options", [("max_quantile", {}), ("pvc", {}), ("approval", {"alpha": 0.8}),
                                          ("egalitarian", {"normalize": True})])
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
    floor = solvers.completion.threshold_rows(problem, [1, 2], problem.ranges.lower[1:] + 0.6 * problem.ranges.width[1:],
                                              "floors")
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
        expected, _ = lp_max(problem.reward_matrix.sum(axis=0), *_dense(problem),
                             A_ub=-problem.reward_matrix, b_ub=-(upper - 0.2 * width))
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
    milp = occ.occupancy_program(problem, np.zeros(7), name="m", extra_cols=1, integrality=np.r_[np.zeros(6), 1].astype(bool))
    assert not occ.decomposes(milp)
    with occ.decomposition("never"):
        assert not occ.decomposes(program)
    with pytest.raises(InvalidProblemError, match="decomposition mode"):
        with occ.decomposition("sometimes"):
            pass


def test_decomposed_model_honours_the_time_limit():
    rng = np.random.default_rng(9)
    mdp = TabularMDP(rng.dirichlet(np.ones(4), size=(4, 3)), gamma=0.9)
    problem = Problem(mdp, rng.normal(size=(1, 4, 3)))
    program = occ.occupancy_program(problem, problem.reward_matrix[0], name="slow")
    with occ.decomposition("always"):
        model = occ.make_model(program, time_limit=1e-9)  # a fresh MDP: no pooled columns yet
        with pytest.raises(SolverTimeLimitError, match="time_limit"):
            model.solve()
