"""Lottery rules (solvers/lotteries.py) and RuleCall.finish_lottery: each rule's guarantee on random
small MDPs, and brute-force twins that enumerate deterministic policies or solve independent LPs
with scipy (tests/reference.py)."""

import itertools
import json

import numpy as np
import pytest
from conftest import assert_valid_result, chain_discounted, leaky_average
from reference import dense_polytope, lp_max, occupancy_by_dense_solve
from scipy.optimize import minimize

from policyagg import solvers
from policyagg.errors import InvalidProblemError
from policyagg.lottery import Lottery, load_outcome
from policyagg.mdp import TabularMDP
from policyagg.metrics import gini
from policyagg.polytope import LinearConstraints
from policyagg.problem import Problem
from policyagg.sampling import sample_policy_returns
from policyagg.solvers.lotteries import FACE_TOL

TOL = 1e-6


def random_problem(seed, S=3, A=2, n=3, gamma=0.8, weights=True):
    """A small discounted problem with dense transitions (every policy reaches every state)."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    rewards = rng.normal(size=(n, S, A)) * rng.uniform(0.5, 5.0, size=(n, 1, 1))
    w = rng.uniform(0.5, 2.0, size=n) if weights else None
    return Problem(TabularMDP(P, rho=rng.dirichlet(np.ones(S)), gamma=gamma), rewards, weights=w)


def brute_force(problem):
    """Every deterministic policy's normalised returns ``(A^S, n)``, and the ranges, by loops and
    dense solves (min/max of a linear function over O is attained at a deterministic policy)."""
    mdp = problem.mdp
    P, rho, gamma = mdp.P_dense, mdp.rho, mdp.gamma
    S, A = mdp.n_states, mdp.n_actions
    R = np.asarray(problem.rewards).reshape(problem.n_agents, -1)
    J = []
    for actions in itertools.product(range(A), repeat=S):
        pi = np.zeros((S, A))
        pi[np.arange(S), actions] = 1.0
        J.append(R @ occupancy_by_dense_solve(P, rho, gamma, pi).ravel())
    J = np.array(J)
    low, high = J.min(axis=0), J.max(axis=0)
    return (J - low) / (high - low), low, high


def welfare(problem, u):
    return u @ problem.weights


# ------------------------------------------------------------------ proportional
@pytest.mark.parametrize("seed", range(4))
def test_proportional_gives_each_agent_its_share_on_its_own_optimum(seed):
    problem = random_problem(seed)
    lottery = solvers.proportional(problem)
    U, _, _ = brute_force(problem)
    share = problem.weights / problem.weights.sum()
    optimal_for = lottery.support_normalized >= 1 - TOL  # (k, n): drawn policy k is optimal for agent i
    np.testing.assert_array_less(share - 1e-12, lottery.probabilities @ optimal_for)
    # twin: each agent's support policy has the welfare of the best deterministic policy among its optima
    for i in range(problem.n_agents):
        face = U[:, i] >= 1 - 1e-9
        best = welfare(problem, U[face]).max()
        mine = welfare(problem, lottery.support_normalized[optimal_for[:, i]]).max()
        # the face is kept to FACE_TOL: leaving it by that much may buy a little welfare
        assert best - 1e-9 <= mine <= best + 1e-5
    assert_valid_result(problem, lottery)
    assert lottery.report["ex_post"]["pareto_optimal_probability"] == 1.0


def test_proportional_clusters_get_exactly_their_share():
    problem = random_problem(7, n=4)
    clusters = ["a", "b", "a", "c"]
    lottery = solvers.proportional(problem, clusters=clusters)
    U, _, _ = brute_force(problem)
    w = problem.weights
    for label in "abc":
        members = np.array([c == label for c in clusters])
        gains = U @ (w * members)
        best = gains.max()  # twin: the cluster's utilitarian optimum over deterministic policies
        achieved = lottery.support_normalized @ (w * members)
        on_optimum = achieved >= best - 10 * FACE_TOL * w[members].sum()
        assert lottery.probabilities[on_optimum].sum() >= w[members].sum() / w.sum() - 1e-12
    if lottery.size == 3:  # distinct optima: exactly the share
        assert sorted(lottery.probabilities.round(12)) == sorted(
            (np.array([w[[0, 2]].sum(), w[1], w[3]]) / w.sum()).round(12)
        )
    assert lottery.diagnostics["clusters"] == ["a", "b", "c"]


def test_proportional_refuses_clusters_of_the_wrong_length():
    with pytest.raises(InvalidProblemError, match=r"`clusters` must give one cluster label per agent \(2\)"):
        solvers.proportional(chain_discounted(), clusters=[0])


def test_random_dictator_lottery_is_the_weighted_lottery_over_the_dictators():
    problem = chain_discounted()
    lottery = solvers.random_dictator(problem, form="lottery")
    plain = solvers.random_dictator(problem, pareto=False)
    assert isinstance(lottery, Lottery) and lottery.size == 2
    np.testing.assert_allclose(lottery.probabilities, [0.5, 0.5])
    np.testing.assert_allclose(lottery.returns, plain.returns, atol=1e-9)  # ex ante: the plain mixture
    assert lottery.ex_post_gini == pytest.approx(1 / 2)  # each draw favours one agent fully
    assert not isinstance(solvers.random_dictator(problem), Lottery)  # the default form is unchanged


# ------------------------------------------------------------------ conditional utilitarian
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("approval", [1.0, 0.6])
def test_conditional_utilitarian_guarantees(seed, approval):
    problem = random_problem(seed)
    lottery = solvers.conditional_utilitarian(problem, approval=approval)
    share = problem.weights / problem.weights.sum()
    U, _, _ = brute_force(problem)
    best = U.max(axis=0)  # 1: ranges over O, no extra constraints
    approved = lottery.support_normalized >= np.minimum(approval, best) - 10 * FACE_TOL
    np.testing.assert_array_less(share - 1e-12, lottery.probabilities @ approved)
    # ex-ante welfare at least the proportional lottery's and the random dictator's
    cu = welfare(problem, lottery.normalized)
    assert cu >= welfare(problem, solvers.proportional(problem).normalized) - TOL
    assert cu >= welfare(problem, solvers.random_dictator(problem, form="lottery").normalized) - TOL
    # twin: agent i's policy maximises welfare over A_i = {u_i >= approval}, an independent scipy LP
    mdp = problem.mdp
    R = np.asarray(problem.rewards).reshape(problem.n_agents, -1)
    low, high = U.min(axis=0), U.max(axis=0)
    _, J_low, J_high = brute_force(problem)
    width = J_high - J_low
    for i in range(problem.n_agents):
        C = R / width[:, None]
        value, _ = lp_max(
            problem.weights @ C,
            mdp.P_dense,
            mdp.rho,
            mdp.gamma,
            A_ub=-C[i][None, :],
            b_ub=[-(approval * high[i] + (1 - approval) * low[i] + J_low[i] / width[i]) + 1e-9],
        )
        twin = value - problem.weights @ (J_low / width)
        assert welfare(problem, lottery.support_normalized[approved[:, i]]).max() == pytest.approx(twin, abs=1e-5)


# ------------------------------------------------------------------ maximum Nash welfare lottery
def nash_by_brute_force(problem):
    """max sum_i w_i log u_i over conv{u(deterministic policies)}, by SLSQP over mixture weights."""
    U, _, _ = brute_force(problem)
    w = problem.weights
    k = U.shape[0]

    def negative(lam):
        return -w @ np.log(np.maximum(lam @ U, 1e-12))

    res = minimize(
        negative,
        np.full(k, 1.0 / k),
        method="SLSQP",
        bounds=[(0, 1)] * k,
        constraints=[{"type": "eq", "fun": lambda lam: lam.sum() - 1}],
        options={"ftol": 1e-12, "maxiter": 1000},
    )
    return -res.fun


@pytest.mark.parametrize("seed", range(3))
def test_max_nash_welfare_lottery_decomposes_the_nash_point_into_deterministic_policies(seed):
    problem = random_problem(seed)
    lottery = solvers.max_nash_welfare_lottery(problem)
    nash = solvers.nash_welfare(problem)
    np.testing.assert_allclose(lottery.returns, nash.returns, atol=1e-6 * np.ptp(lottery.support_returns) + 1e-9)
    assert lottery.size <= problem.n_agents + 1  # Caratheodory
    assert lottery.diagnostics["decomposition_residual"] <= 1e-7
    visited = lottery.support_occupancies.sum(axis=2) > 1e-12
    for k in range(lottery.size):  # deterministic wherever the policy goes
        assert set(np.unique(lottery.support_policies[k][visited[k]])) <= {0.0, 1.0}
    # twin: the Nash welfare value by SLSQP over mixtures of enumerated deterministic policies
    achieved = problem.weights @ np.log(lottery.normalized)
    assert achieved == pytest.approx(nash_by_brute_force(problem), abs=1e-4)
    assert lottery.report["pareto_optimal"]
    assert lottery.report["ex_post"]["pareto_optimal_probability"] == 1.0


# ------------------------------------------------------------------ constraints, average reward, reports
def test_every_support_policy_keeps_the_constraints():
    problem = random_problem(3)
    mdp = problem.mdp
    cost = np.zeros(mdp.n_state_actions)
    cost[::2] = 1.0  # action 0 in any state: at most 40% of the time
    constraints = LinearConstraints.build(mdp.n_state_actions, A_ub=cost[None, :], b_ub=[0.4])
    for name in ("proportional", "conditional_utilitarian", "max_nash_welfare_lottery"):
        lottery = solvers.get_rule(name)(problem, constraints=constraints)
        assert np.all(lottery.support_occupancies.reshape(lottery.size, -1) @ cost <= 0.4 + 1e-7), name
        # the constraint binds for some agent, so the lottery is not the unconstrained one
        A_eq, b_eq = dense_polytope(mdp.P_dense, mdp.rho, mdp.gamma)
        for d in lottery.support_occupancies.reshape(lottery.size, -1):
            assert np.abs(A_eq @ d - b_eq).max() < 1e-7


@pytest.mark.parametrize("name", ["proportional", "conditional_utilitarian", "max_nash_welfare_lottery"])
def test_lottery_rules_under_average_reward(name):
    problem = leaky_average()
    lottery = solvers.get_rule(name)(problem)
    assert_valid_result(problem, lottery)


def test_finish_lottery_reports_ex_ante_and_ex_post(tmp_path):
    problem = chain_discounted()
    samples = sample_policy_returns(problem, 400, rng=0)
    lottery = solvers.proportional(problem, samples)
    report = lottery.report
    # ex ante: the ranks of the mixture's returns; ex post: the expected per-outcome entries
    ranks = samples.cdf(lottery.returns)
    assert report["min_rank"] == pytest.approx(ranks.min())
    per_outcome = samples.cdf(lottery.support_returns).min(axis=1)
    assert report["ex_post"]["min_rank"] == pytest.approx(lottery.probabilities @ per_outcome)
    u = lottery.support_normalized
    assert report["ex_post"]["gini"] == pytest.approx(lottery.probabilities @ [gini(x) for x in u])
    assert report["ex_post"]["min_normalized"] == pytest.approx(lottery.probabilities @ u.min(axis=1))
    assert lottery.gini == pytest.approx(0.0, abs=1e-9) and report["ex_post"]["gini"] == pytest.approx(0.5)
    lottery.save(tmp_path / "out")
    again = load_outcome(tmp_path / "out")
    assert isinstance(again, Lottery) and again.report == json.loads(json.dumps(report))


# ------------------------------------------------------------------ rollout of a lottery
def test_rollout_draws_one_support_policy_per_episode():
    import gymnasium

    from policyagg.envs.rollout import rollout
    from policyagg.envs.tabular import from_gymnasium

    env = gymnasium.make("FrozenLake-v1")
    model = from_gymnasium(env, gamma=0.8)
    left = np.zeros((model.mdp.n_states, model.mdp.n_actions))
    left[[0, 4, 8, 12], :] = 1.0  # agent "left" likes the left column
    problem = Problem(model.mdp, np.stack([model.rewards[0], left]), names=("goal", "left"))
    lottery = solvers.proportional(problem)
    assert lottery.size == 2
    report = rollout(env, model, lottery, episodes=800, seed=3, rewards=problem.rewards)
    np.testing.assert_allclose(report.predicted, lottery.returns, atol=1e-7)  # ex ante
    assert report.agrees(z=3.29), report.table(problem.names)
    # about p_k of the episodes ran policy k, and each policy's mean is near its own returns
    assert report.support_counts.sum() == 800
    assert abs(report.support_counts[0] / 800 - lottery.probabilities[0]) < 4 * np.sqrt(0.25 / 800)
    assert np.all(np.abs(report.support_means - lottery.support_returns) < 0.08)
    np.testing.assert_allclose(report.ex_post_spread(), np.ptp(lottery.support_returns, axis=0), atol=0.03)
    assert "ex post" in report.table(problem.names)
    once, twice = (rollout(env, model, lottery, episodes=50, seed=5, rewards=problem.rewards) for _ in range(2))
    np.testing.assert_array_equal(once.mean, twice.mean)  # seeded: the same draws and episodes


# ------------------------------------------------------------------ experiments
def test_experiment_configs_run_lottery_rules_and_tables_add_ex_post_columns(tmp_path):
    from policyagg.experiments.compare import fairness_table
    from policyagg.experiments.run import run_config

    config = {
        "name": "tiny-lotteries",
        "output": str(tmp_path / "out"),
        "seeds": [0],
        "environment": {"id": "attention", "kwargs": {"n_sites": 2, "n_phases": 2}, "gamma": 0.9},
        "agents": {"population": "random_subsets", "n_agents": 3},
        "measure": {"name": "policy", "samples": 200},
        "rules": [
            {"label": "utilitarian", "rule": "utilitarian", "options": {"normalize": True}},
            {"label": "proportional", "rule": "proportional"},
            {"label": "Nash lottery", "rule": "max_nash_welfare_lottery"},
        ],
    }
    run = run_config(config, progress=False, figures=False)
    results = run.seeds[0].results
    assert isinstance(results["proportional"], Lottery) and not isinstance(results["utilitarian"], Lottery)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "ex-post Gini" in summary and "ex-post min normalised" in summary
    lottery = results["proportional"]
    line = next(row for row in summary.splitlines() if row.startswith("| proportional"))
    assert f"{lottery.ex_post_gini:.4f}" in line
    assert f"{lottery.probabilities @ lottery.support_normalized.min(axis=1):.4f}" in line
    utilitarian = next(row for row in summary.splitlines() if row.startswith("| utilitarian"))
    assert utilitarian.count(f"{results['utilitarian'].gini:.4f}") == 2  # ex post = ex ante for one policy
    # a second run loads the saved lotteries (resume) and gives the same table
    again = run_config(config, progress=False, figures=False)
    assert isinstance(again.seeds[0].results["proportional"], Lottery)
    assert (tmp_path / "out" / "summary.md").read_text() == summary
    assert "ex-post Gini" in fairness_table(results)


@pytest.mark.parametrize("exponent", [-9, 6])
def test_lottery_rules_are_invariant_to_the_reward_scale(exponent):
    base = random_problem(11)
    scaled = Problem(base.mdp, np.asarray(base.rewards) * 10.0**exponent, weights=base.weights)
    for name in ("proportional", "conditional_utilitarian", "max_nash_welfare_lottery"):
        expected, got = solvers.get_rule(name)(base), solvers.get_rule(name)(scaled)
        np.testing.assert_allclose(got.normalized, expected.normalized, atol=1e-6, err_msg=name)
        assert got.ex_post_gini == pytest.approx(expected.ex_post_gini, abs=1e-6), name


def test_cli_show_prints_a_saved_lottery(tmp_path, capsys):
    from policyagg.experiments.cli import main

    solvers.proportional(chain_discounted()).save(tmp_path / "lottery")
    assert main(["show", str(tmp_path / "lottery")]) == 0
    out = capsys.readouterr().out
    assert "lottery over 2 policies" in out and "ex post (expected over the draw)" in out


@pytest.mark.filterwarnings("ignore::UserWarning")  # the multichain structure and the Nash rule's delivery warning
def test_nash_lottery_delivers_a_point_no_stationary_policy_can():
    """Average reward, two absorbing states reached from the start by actions 0 and 1; agent 0
    is rewarded in one, agent 1 in the other. The Nash point (1/2, 1/2) mixes the two closed
    classes: no stationary policy started at state 0 delivers it (``nash_welfare`` says
    "policy-gap"), but the lottery over "go left" and "go right" does, ex ante."""
    P = np.zeros((3, 2, 3))
    P[0, 0, 1] = P[0, 1, 2] = 1.0
    P[1, :, 1] = P[2, :, 2] = 1.0
    rewards = np.zeros((2, 3, 2))
    rewards[0, 1, :] = rewards[1, 2, :] = 1.0
    mdp = TabularMDP(P, rho=[1.0, 0.0, 0.0], gamma=1.0, allow_multichain=True)
    problem = solvers.with_ranges(Problem(mdp, rewards))
    assert solvers.nash_welfare(problem).status == "policy-gap"
    lottery = solvers.max_nash_welfare_lottery(problem)
    assert lottery.status == "optimal"
    # Nash welfare is flat at its optimum: returns are accurate to about sqrt(2 * tolerance) (nash_welfare)
    np.testing.assert_allclose(lottery.returns, [0.5, 0.5], atol=2e-3)
    for policy, returns in zip(lottery.support_policies, lottery.support_returns, strict=True):
        np.testing.assert_allclose(mdp.evaluate(policy, rewards), returns, atol=1e-9)  # each one delivers
