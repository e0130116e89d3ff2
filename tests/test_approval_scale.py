"""alpha-approval with many agents (issue 13): the heaviest approving set against brute force,
the all-approve short-cut, and a time limit that returns a valid result with a certified gap."""

import itertools
import warnings

import numpy as np
import pytest
from conftest import assert_valid_result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import dense_polytope, pareto_gap
from scipy.optimize import linprog

from policyagg import ApprovalGapWarning, Problem, TabularMDP, sample_returns, solvers
from policyagg.errors import InvalidProblemError
from policyagg.polytope import return_floor
from policyagg.solvers.approving_sets import heaviest_approving_set


def random_problem(n_agents: int, n_actions: int, seed: int, n_states: int = 4, gamma: float = 0.9) -> Problem:
    """A random MDP (each ``P(.|s, a)`` ~ Dirichlet(1), uniform start), ``N(0, 1)`` rewards and
    weights drawn from {1, 2, 3}."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(n_states), size=(n_states, n_actions))
    mdp = TabularMDP(P, rho=np.full(n_states, 1.0 / n_states), gamma=gamma)
    rewards = rng.normal(size=(n_agents, n_states, n_actions))
    return solvers.with_ranges(Problem(mdp, rewards, weights=rng.integers(1, 4, size=n_agents).astype(float)))


def approving(problem: Problem, agents, thresholds) -> bool:
    """Whether some ``d in O`` has ``J_i(d) >= t_i`` for every ``i in agents`` (dense scipy linprog)."""
    mdp, agents = problem.mdp, list(agents)
    A_eq, b_eq = dense_polytope(mdp.P_dense, mdp.rho, mdp.gamma)
    R = problem.rewards.reshape(problem.n_agents, -1)[agents]
    res = linprog(np.zeros(R.shape[1]), A_ub=-R, b_ub=-np.asarray(thresholds)[agents], A_eq=A_eq, b_eq=b_eq)
    return res.status == 0


def brute_force_weight(problem: Problem, thresholds, floor=None) -> float:
    """The heaviest set ``S`` with ``{d in O : R_S d >= t_S}`` (and ``r0 d >= floor``) non-empty:
    every subset, heaviest first, each checked by a dense scipy linprog."""
    mdp, n = problem.mdp, problem.n_agents
    A_eq, b_eq = dense_polytope(mdp.P_dense, mdp.rho, mdp.gamma)
    R = problem.rewards.reshape(n, -1)
    subsets = [S for r in range(n + 1) for S in itertools.combinations(range(n), r)]
    for S in sorted(subsets, key=lambda S: -problem.weights[list(S)].sum()):
        rows, rhs = [-R[list(S)]], [-np.asarray(thresholds)[list(S)]]
        if floor is not None:
            rows.append(-R[:1])
            rhs.append([-floor])
        A_ub, b_ub = np.vstack(rows), np.concatenate(rhs)
        res = linprog(np.zeros(R.shape[1]), A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=(0, None))
        if res.status == 0:
            return float(problem.weights[list(S)].sum())
    raise AssertionError("not even the empty set is feasible")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n_agents=st.integers(1, 8),
    n_actions=st.integers(2, 3),
    seed=st.integers(0, 2**32 - 1),
    alpha=st.sampled_from([0.5, 0.8, 0.9, 0.95]),
    with_floor=st.booleans(),
    search=st.sampled_from(["milp", "cuts"]),
)
def test_heaviest_approving_set_matches_brute_force(n_agents, n_actions, seed, alpha, with_floor, search):
    problem = random_problem(n_agents, n_actions, seed)
    samples = sample_returns(problem, 300, measure="policy", rng=seed % 1000)
    floor = None
    if with_floor:  # agent 0 guaranteed 30% of its range: the constraint cuts O
        ranges = problem.require_ranges()
        floor = float(ranges.lower[0] + 0.3 * ranges.width[0])
        constraints = return_floor(problem.mdp, problem.rewards[0], floor)
        result = solvers.approval(problem, samples, alpha=alpha, search=search, constraints=constraints)
    else:
        result = solvers.approval(problem, samples, alpha=alpha, search=search)
    thresholds = np.asarray(result.diagnostics["thresholds"])
    assert result.status == "optimal"
    assert result.diagnostics["approval_weight"] == pytest.approx(brute_force_weight(problem, thresholds, floor))
    assert result.diagnostics["approval_gap"] == 0.0
    approvers = result.diagnostics["approvers"]
    assert (result.ranks[approvers] >= alpha - 1e-12).all()  # the approvers really approve
    if floor is not None:
        assert result.returns[0] >= floor - 1e-7 * problem.require_ranges().width[0]


def test_everyone_approves_with_one_lp():
    """Identical agents all approve their common optimum: one margin LP, no master."""
    problem = random_problem(1, 3, seed=5)
    problem = solvers.with_ranges(Problem(problem.mdp, np.repeat(problem.rewards, 6, axis=0)))
    samples = sample_returns(problem, 500, measure="policy", rng=0)
    result = solvers.approval(problem, samples, alpha=0.9)
    d = result.diagnostics
    assert d["approval_search"] == "all approve"
    assert (d["approval_sets_checked"], d["approval_master_solves"], d["approval_cuts"]) == (1, 0, 0)
    assert d["approvers"] == list(range(6)) and d["approval_gap"] == 0.0
    assert result.status == "optimal"


def test_alpha_zero_takes_the_short_cut():
    problem = random_problem(30, 2, seed=1)
    samples = sample_returns(problem, 300, measure="policy", rng=1)
    result = solvers.approval(problem, samples, alpha=0.0)
    assert result.diagnostics["approval_search"] == "all approve"
    assert result.diagnostics["approval_weight"] == problem.weights.sum()


def test_time_limit_returns_the_incumbent_with_a_certified_gap():
    """100 agents at alpha = 0.9 take far longer than 1 s to prove: the rule stops, says so,
    and still returns a feasible, Pareto-optimal policy that its approvers approve."""
    problem = random_problem(100, 3, seed=0)
    samples = sample_returns(problem, 2000, measure="policy", rng=0)
    with pytest.warns(ApprovalGapWarning, match="time_limit=1.0 s.*status 'time-limit'"):
        result = solvers.approval(problem, samples, alpha=0.9, time_limit=1.0)
    d = result.diagnostics
    assert result.status == "time-limit"
    assert 0.0 < d["approval_gap"] < np.inf
    assert d["approval_upper_bound"] == pytest.approx(d["approval_weight"] + d["approval_gap"])
    assert d["approval_weight"] >= problem.weights.max()  # at least the seeded incumbent
    assert d["approval_upper_bound"] <= problem.weights.sum()
    assert (result.ranks[d["approvers"]] >= 0.9 - 1e-12).all()
    assert_valid_result(problem, result)
    mdp, ranges = problem.mdp, problem.require_ranges()
    assert pareto_gap(problem.reward_matrix, mdp.P_dense, mdp.rho, mdp.gamma, result.returns, ranges.width) < 1e-5
    assert d["approval_search_time"] < 1.5


@pytest.mark.parametrize("method", ["milp", "cuts"])
def test_upper_bound_is_certified_against_the_optimum(method):
    """The bound after a time limit is never below the exact optimum found without one."""
    problem = random_problem(20, 3, seed=2)
    samples = sample_returns(problem, 1000, measure="policy", rng=2)
    thresholds = np.maximum(samples.threshold(0.9), problem.require_ranges().lower)
    exact = heaviest_approving_set(problem, thresholds, samples=samples.values, method=method)
    assert exact.status == "optimal"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for limit in (0.05, 0.2):
            early = heaviest_approving_set(problem, thresholds, samples=samples.values, method=method, time_limit=limit)
            assert early.weight <= exact.weight + 1e-9 <= early.upper_bound + 2e-9


@pytest.mark.parametrize("seed", range(6))
def test_milp_bound_is_at_least_the_brute_force_optimum(seed):
    """The MILP path on 8 agents, exact or stopped early: its set approves one policy (scipy
    linprog), it weighs at least the greedy incumbent (the MIP start), and its certified upper
    bound is never below the optimum over all 2^8 subsets."""
    problem = random_problem(8, 3, seed)
    samples = sample_returns(problem, 300, measure="policy", rng=seed)
    thresholds = np.maximum(samples.threshold(0.9), problem.require_ranges().lower)
    optimum = brute_force_weight(problem, thresholds)
    for limit in (None, 0.01, 0.05):
        found = heaviest_approving_set(problem, thresholds, samples=samples.values, method="milp", time_limit=limit)
        assert approving(problem, found.agents, thresholds)
        assert found.weight <= optimum + 1e-9 <= found.upper_bound + 2e-9
        assert found.weight >= found.stats.get("approval_incumbent_weight", 0.0)
        if limit is None:
            assert found.status == "optimal" and found.weight == pytest.approx(optimum)


def test_milp_stopped_early_is_never_worse_than_its_start():
    """60 agents: the MILP started from the greedy incumbent (about 1 s) and stopped after 4 s in all
    returns an approving set at least as heavy as that incumbent, below its certified bound."""
    problem = random_problem(60, 3, seed=0)
    samples = sample_returns(problem, 2000, measure="policy", rng=0)
    thresholds = np.maximum(samples.threshold(0.9), problem.require_ranges().lower)
    found = heaviest_approving_set(problem, thresholds, samples=samples.values, method="milp", time_limit=4.0)
    assert found.status == "time-limit" and found.stats["approval_milp_solves"] == 1
    assert found.stats["approval_incumbent_weight"] <= found.weight < found.upper_bound <= problem.weights.sum()
    assert approving(problem, found.agents, thresholds)


def test_auto_chooses_the_milp_unless_many_agents_have_a_time_limit_or_the_mdp_is_large():
    from policyagg.solvers.approving_sets import MILP_MAX_AGENTS, choose_method
    from policyagg.solvers.occupancy import decomposition

    few, many = random_problem(MILP_MAX_AGENTS, 2, seed=0), random_problem(MILP_MAX_AGENTS + 1, 2, seed=0)
    for problem, time_limit, method in [(few, 10.0, "milp"), (many, 10.0, "cuts"), (many, None, "milp")]:
        assert choose_method(problem, problem.require_ranges().lower, "highs", time_limit) == method
    with decomposition("always"):  # column generation: the MILP over (d, x) is not built
        assert choose_method(few, few.require_ranges().lower, "highs") == "cuts"


def test_unknown_search_method_is_named():
    problem = random_problem(3, 2, seed=0)
    samples = sample_returns(problem, 100, measure="policy", rng=0)
    with pytest.raises(InvalidProblemError, match="`search` must be one of auto, milp, cuts"):
        solvers.approval(problem, samples, search="simplex")
    with pytest.raises(InvalidProblemError, match="`method` must be one of auto, milp, cuts"):
        heaviest_approving_set(problem, samples.threshold(0.9), method="simplex")
