"""Many agents with low-rank rewards are solved on feature columns (solvers/factored.py):
the same answers as the plain LP, and the LP really is the factored one."""

import numpy as np
import pytest

from policyagg import Problem, TabularMDP, sample_returns, solvers
from policyagg.solvers import factored
from policyagg.solvers.completion import threshold_rows
from policyagg.solvers.factored import FactoredModel, factor, feature_basis
from policyagg.solvers.occupancy import make_model, occupancy_program, utilities


def low_rank_problem(n_agents=80, rank=3, seed=0, n_states=6, n_actions=3, conflict=False) -> Problem:
    """Each agent's reward is a random positive (``conflict``: any) combination of ``rank`` base rewards."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
    base = rng.normal(size=(rank, n_states * n_actions))
    coefficients = rng.normal(size=(n_agents, rank)) if conflict else rng.uniform(0.1, 1.0, size=(n_agents, rank))
    rewards = coefficients @ base
    mdp = TabularMDP(P, rho=np.full(n_states, 1 / n_states), gamma=0.9)
    return solvers.with_ranges(Problem(mdp, rewards.reshape(n_agents, n_states, n_actions)))


def test_basis_spans_the_rewards_and_the_ones():
    problem = low_rank_problem()
    V = feature_basis(problem.reward_matrix)
    assert V.shape == (4, problem.mdp.n_state_actions)  # 3 base rewards + the all-ones row
    np.testing.assert_allclose(V @ V.T, np.eye(4), atol=1e-12)
    for row in np.vstack([problem.reward_matrix, np.ones(problem.mdp.n_state_actions)]):
        np.testing.assert_allclose(row @ V.T @ V, row, atol=1e-10 * np.abs(row).max())


def test_agent_rows_are_factored_and_solve_the_same(monkeypatch):
    problem = low_rank_problem()
    C, _ = utilities(problem, normalize=True)
    lp = occupancy_program(problem, problem.weights @ C, name="test", maximize=True)
    assert factor(lp.full, problem.mdp.n_state_actions, feature_basis(problem.reward_matrix)) is None  # no agent rows
    samples = sample_returns(problem, 500, measure="policy", rng=0)
    rules = {
        "egalitarian": {"normalize": True},
        "max_quantile": {},
        "proportional_veto_core": {},
        "approval": {"alpha": 0.6},
        "borda": {"solver": "milp"},
    }
    factored_results = {rule: getattr(solvers, rule)(problem, samples, **o) for rule, o in rules.items()}
    monkeypatch.setattr(factored, "MIN_SAVING", np.inf)  # the plain LP
    for rule, options in rules.items():
        plain = getattr(solvers, rule)(problem, samples, **options)
        np.testing.assert_allclose(factored_results[rule].normalized, plain.normalized, atol=1e-6, err_msg=rule)
        assert factored_results[rule].report["pareto_optimal"]


def floors_model(problem: Problem, share: float):
    """The LP ``max sum d`` with every agent at least ``share`` of its range above its minimum."""
    n_d, ranges = problem.mdp.n_state_actions, problem.require_ranges()
    rows = threshold_rows(problem, np.arange(problem.n_agents), ranges.lower + share * ranges.width, "floors")
    lp = occupancy_program(problem, np.ones(n_d), name="floors", maximize=True, rows=[rows])
    model = make_model(lp)
    assert isinstance(model, FactoredModel)
    return lp, model


def test_the_model_is_factored_and_answers_in_the_original_indices():
    problem = low_rank_problem()
    n_d, ranges = problem.mdp.n_state_actions, problem.require_ranges()
    lp, model = floors_model(problem, 0.3)
    solution = model.solve()
    assert solution.x.shape == (n_d,) and solution.row_duals.shape == (lp.full.n_rows,)
    returns = problem.reward_matrix @ solution.x
    assert (returns >= ranges.lower + 0.3 * ranges.width - 1e-7 * ranges.width).all()
    plain = make_model(lp.full)  # a LinearProgram: never factored
    assert solution.objective == pytest.approx(plain.solve().objective, abs=1e-8)


def test_nash_and_generalised_gini_add_cuts_to_the_factored_model(monkeypatch):
    problem = low_rank_problem(n_agents=60)
    factored_results = [solvers.nash_welfare(problem), solvers.generalized_gini(problem)]
    monkeypatch.setattr(factored, "MIN_SAVING", np.inf)  # the plain LP
    for result, plain in zip(factored_results, [solvers.nash_welfare(problem), solvers.generalized_gini(problem)]):
        assert result.status == "optimal"
        np.testing.assert_allclose(result.normalized, plain.normalized, atol=1e-5)


def test_added_rows_keep_the_original_indices():
    problem = low_rank_problem()
    n_d = problem.mdp.n_state_actions
    lp, model = floors_model(problem, 0.2)
    m = lp.full.n_rows
    cap = np.zeros((1, n_d))
    cap[0, 0] = 1.0
    assert model.add_rows(cap, [-np.inf], [0.0], name="no first pair").tolist() == [m]
    solution = model.solve()
    assert solution.x[0] <= 1e-9 and solution.row_duals.shape == (m + 1,)
    model.set_row_bounds([m], [-np.inf], [np.inf])  # the added row, by its original index
    assert model.current_lp().n_rows == m + 1
    assert model.current_lp().row_families[-1] == ("no first pair", m, m + 1)


def test_approval_milp_with_a_start_on_the_factored_model(monkeypatch):
    problem = low_rank_problem(n_agents=60, rank=4, seed=3, conflict=True)
    samples = sample_returns(problem, 500, measure="policy", rng=3)
    result = solvers.approval(problem, samples, alpha=0.97, search="milp")
    assert result.diagnostics["approval_search"] != "all approve"
    monkeypatch.setattr(factored, "MIN_SAVING", np.inf)  # the plain LP
    plain = solvers.approval(problem, samples, alpha=0.97, search="milp")
    assert result.diagnostics["approval_weight"] == pytest.approx(plain.diagnostics["approval_weight"])
