"""Rules over oracles (issue 16): validated against the exact LP rules and independent LPs."""

import numpy as np
import pytest
from conftest import bandit, random_problems
from hypothesis import HealthCheck, given, settings
from reference import dense_polytope, lp_max, max_min

from policyagg import Problem
from policyagg.envs.attention import AttentionModel, one_agent_per_site
from policyagg.envs.oracles import QLearningOracle, TabularSimulator
from policyagg.errors import InvalidProblemError
from policyagg.lottery import Lottery, load_outcome
from policyagg.measures import sample_returns
from policyagg.oracle import Evaluation, ExactOracle, Oracle
from policyagg.polytope import forbid
from policyagg.solvers import egalitarian, max_quantile, with_ranges
from policyagg.solvers.oracle_rules import (
    ORACLE_RULES,
    PolicyPool,
    oracle_egalitarian,
    oracle_max_quantile,
    oracle_utilitarian,
)

EXACT = 0.01  # issue 16: the exact oracle's answers within 0.01 of the LP rules'
SAMPLED = 0.05  # and the sample-based oracle's within 0.05


def attention(gamma=1.0):
    model = AttentionModel(n_sites=5)
    rewards = model.rewards(one_agent_per_site(5, np.random.default_rng(0)))
    return Problem(model.mdp(gamma=gamma), rewards)


@pytest.fixture(scope="module")
def deep_sea():
    mo_gym = pytest.importorskip("mo_gymnasium")
    from policyagg.envs import from_gymnasium

    return from_gymnasium(mo_gym.make("deep-sea-treasure-v0"), gamma=0.95).problem()


def true_min_normalized(problem, lottery, pool=None):
    """The lottery's least normalised return, its support evaluated exactly on ``problem``
    (ranges of the LP route); the support's tables from the lottery or the ``pool``."""
    if pool is None:
        tables = lottery.support_policies
    else:
        by_key = {policy.key: policy.table for policy in pool.policies}
        tables = [by_key[key] for key in lottery.diagnostics["support_keys"]]
    J = np.stack([problem.mdp.evaluate(pi, problem.rewards) for pi in tables])
    return float(problem.ranges.normalize(lottery.probabilities @ J).min())


# ---------------------------------------------------------------------- exact oracle vs LP rules
@pytest.mark.parametrize("instance", ["attention", "deep-sea"])
def test_exact_oracle_matches_lp_rules(instance, request):
    problem = attention() if instance == "attention" else request.getfixturevalue("deep_sea")
    ranged = with_ranges(problem)
    lp = egalitarian(ranged, normalize=True)
    lottery = oracle_egalitarian(ExactOracle(problem))
    assert lottery.status == "optimal"
    assert abs(lottery.normalized.min() - lp.normalized.min()) <= EXACT
    assert abs(true_min_normalized(ranged, lottery) - lp.normalized.min()) <= EXACT
    assert lottery.report["certified_gap"] <= 1e-6
    assert lottery.diagnostics["oracle_calls"] >= 2 * problem.n_agents
    assert lottery.diagnostics["evaluation_episodes"] == 0

    samples = sample_returns(ranged, 200, measure="optimal-mixture", rng=1)
    lp_q = max_quantile(ranged, samples)
    quantile = oracle_max_quantile(ExactOracle(problem), samples)
    assert abs(quantile.report["q_star"] - lp_q.min_rank) <= EXACT
    assert abs(quantile.min_rank - lp_q.min_rank) <= EXACT
    assert abs(quantile.normalized.min() - lp_q.normalized.min()) <= EXACT
    assert quantile.status == "optimal" and quantile.report["undecided_levels"] == []


def test_exact_oracle_optimal_mixture_reference_is_the_lp_measure():
    """Without samples, max-quantile draws the optimal-mixture measure from the oracle's optima:
    the same thresholds as the LP route's measure with the same Dirichlet draws."""
    problem = bandit()
    ranged = with_ranges(problem)
    lottery = oracle_max_quantile(ExactOracle(problem), n_samples=100, seed=3)
    samples = sample_returns(ranged, 100, measure="optimal-mixture", rng=3)
    assert abs(lottery.report["q_star"] - max_quantile(ranged, samples).min_rank) <= EXACT


# ---------------------------------------------------------------------- Q-learning oracle vs LP rules
def test_q_learning_oracle_within_tolerance_of_lp_rules():
    problem = attention(gamma=0.9)
    ranged = with_ranges(problem)
    lp = egalitarian(ranged, normalize=True)
    oracle = QLearningOracle(TabularSimulator(problem), steps=150_000, eval_episodes=1000, seed=0)
    pool = PolicyPool(oracle)
    lottery = oracle_egalitarian(oracle, gap_tol=0.01, pool=pool)
    assert lottery.status == "gap"  # Q-learning states no accuracy: nothing is certified
    assert lottery.report["certified"] is False
    assert abs(true_min_normalized(ranged, lottery, pool) - lp.normalized.min()) <= SAMPLED
    assert abs(lottery.normalized.min() - lp.normalized.min()) <= SAMPLED
    assert lottery.diagnostics["evaluation_episodes"] == 1000 * lottery.diagnostics["pool_size"]

    samples = sample_returns(ranged, 50, measure="optimal-mixture", rng=1)
    lp_q = max_quantile(ranged, samples)
    oracle = QLearningOracle(TabularSimulator(problem), steps=150_000, eval_episodes=1000, seed=0)
    pool = PolicyPool(oracle)
    quantile = oracle_max_quantile(oracle, samples, gap_tol=0.01, max_calls=20, pool=pool)
    assert abs(quantile.report["q_star"] - lp_q.min_rank) <= SAMPLED
    assert abs(true_min_normalized(ranged, quantile, pool) - lp_q.normalized.min()) <= SAMPLED


def test_q_learning_is_reproducible():
    problem = bandit(gamma=0.5)
    runs = []
    for _ in range(2):
        oracle = QLearningOracle(TabularSimulator(problem), steps=2000, eval_episodes=50, seed=7)
        policy = oracle.best_response([1.0, 0.5])
        runs.append((policy.table, oracle.evaluate(policy)))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert np.array_equal(runs[0][1].returns, runs[1][1].returns)
    assert runs[0][1].episodes == 50 and np.all(runs[0][1].standard_errors >= 0)


def test_online_q_learning_learns_a_bandit():
    """Online epsilon-greedy episodes (the mode of Gymnasium environments) find the better arm."""
    problem = bandit(gamma=0.5)
    oracle = QLearningOracle(TabularSimulator(problem), steps=4000, batch=16, eval_episodes=20, generative=False)
    assert oracle.best_response([1.0, 0.0]).table.argmax(axis=1)[0] == 0
    assert oracle.best_response([0.0, 1.0]).table.argmax(axis=1)[0] == 1
    assert oracle.episodes > 0


# ---------------------------------------------------------------------- properties on random MDPs
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=random_problems(gammas=(0.5, 0.9)))
def test_exact_oracle_properties(problem):
    mdp = problem.mdp
    P, rho, gamma = mdp.P_dense, np.asarray(mdp.rho), mdp.gamma
    R = problem.reward_matrix
    oracle = ExactOracle(problem)
    assert isinstance(oracle, Oracle)
    w = np.linspace(-1.0, 1.0, problem.n_agents)
    policy = oracle.best_response(w)
    value, _ = lp_max(w @ R, P, rho, gamma)
    scale = max(1.0, np.abs(R).max())
    assert w @ oracle.evaluate(policy).returns >= value - 1e-7 * scale  # the best response is optimal

    lottery = oracle_egalitarian(ExactOracle(problem))
    A_eq, b_eq = dense_polytope(P, rho, gamma)
    assert np.abs(A_eq @ lottery.occupancy.ravel() - b_eq).max() <= 1e-8  # the ex-ante point is in O
    assert np.all(lottery.occupancy >= -1e-12)
    ranges = with_ranges(problem).ranges
    width = np.where(ranges.flat, 1.0, ranges.width)
    offset = np.where(ranges.flat, ranges.lower - 1.0, ranges.lower)
    optimum = max_min(R, P, rho, gamma, scale=width, offset=offset)
    achieved = float(((lottery.returns - offset) / width).min())
    assert achieved <= optimum + 1e-7
    assert lottery.report["certified_gap"] >= optimum - achieved - 1e-7  # certificate >= true gap
    assert lottery.report["upper_bound"] >= optimum - 1e-7


def test_exact_oracle_properties_average_reward():
    """The same on one average-reward instance (policy iteration's gain criterion)."""
    problem = bandit(gamma=1.0)
    lottery = oracle_egalitarian(ExactOracle(problem))
    # agent 0 gets p, agent 1 gets 3 (1 - p): normalised p and 1 - p, max-min 1/2
    assert lottery.normalized.min() == pytest.approx(0.5, abs=1e-9)
    assert lottery.status == "optimal"


# ---------------------------------------------------------------------- utilitarian, storage, errors
def test_oracle_utilitarian_is_one_best_response():
    problem = bandit()
    lottery = oracle_utilitarian(ExactOracle(problem))
    assert lottery.size == 1 and lottery.returns == pytest.approx([0.0, 3.0])
    assert lottery.diagnostics["oracle_calls"] == 2 * problem.n_agents + 1
    assert lottery.report["certified_gap"] <= 1e-8


def test_oracle_lottery_saves_like_a_result(tmp_path):
    problem = attention(gamma=0.9)
    oracle = QLearningOracle(TabularSimulator(problem), steps=3000, eval_episodes=20, seed=0)
    lottery = oracle_egalitarian(oracle, max_calls=3)
    assert lottery.support_errors is not None and lottery.status == "gap"
    lottery.save(tmp_path / "out")
    again = load_outcome(tmp_path / "out")
    assert isinstance(again, Lottery)
    assert np.array_equal(again.support_returns, lottery.support_returns)
    assert again.report == lottery.report


def test_oracle_rules_registry_and_errors():
    assert set(ORACLE_RULES) == {"oracle_utilitarian", "oracle_egalitarian", "oracle_max_quantile"}
    problem = bandit()
    with pytest.raises(InvalidProblemError, match="weights"):
        ExactOracle(problem).best_response([1.0])
    constrained = Problem(problem.mdp, problem.rewards, constraints=forbid(problem.mdp, 0, 0))
    with pytest.raises(InvalidProblemError, match="constraints"):
        ExactOracle(constrained)
    with pytest.raises(InvalidProblemError, match="confidence"):
        oracle_egalitarian(ExactOracle(problem), confidence=1.5)
    with pytest.raises(InvalidProblemError, match="max_calls"):
        oracle_egalitarian(ExactOracle(problem), max_calls=0)
    pool = PolicyPool(ExactOracle(problem))
    pool.respond([1.0, 0.0])
    pool.respond([1.0, 0.0])
    assert len(pool.policies) == 1  # an exactly evaluated duplicate is not kept twice


def test_gym_simulator_rollouts_agree_with_the_exact_model(deep_sea):
    """Online Q-learning on the real deep-sea-treasure environment: the rollout estimate of its
    greedy policy matches that policy's exact return on the converted model (within 4 standard
    errors and the horizon's truncation)."""
    mo_gym = pytest.importorskip("mo_gymnasium")
    from policyagg.envs import from_gymnasium
    from policyagg.envs.oracles import GymSimulator

    model = from_gymnasium(mo_gym.make("deep-sea-treasure-v0"), gamma=0.95)
    simulator = GymSimulator(mo_gym.make("deep-sea-treasure-v0"), gamma=0.95, max_states=200)
    oracle = QLearningOracle(simulator, steps=1500, eval_episodes=30, seed=0, horizon=200)
    policy = oracle.best_response([1.0, 0.2])
    evaluation = oracle.evaluate(policy)
    assert oracle.episodes > 30 and evaluation.episodes == 30
    mdp = model.mdp
    table = np.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)  # states never met: uniform, as in rollouts
    for row, observation in enumerate(simulator.observations):
        try:
            table[model.state_index(observation)] = policy.table[row]
        except InvalidProblemError:  # a terminal observation: the model's absorbing state has no observation
            continue
    exact = mdp.evaluate(table, model.rewards)
    truncation = 0.95**200 * np.abs(model.rewards).max()
    assert np.all(np.abs(evaluation.returns - exact) <= 4 * evaluation.standard_errors + truncation + 1e-6)


class NoisyOracle:
    """The exact oracle with seeded Gaussian noise on every evaluation and no stated accuracy."""

    tolerance = None

    def __init__(self, problem, scale, seed=0):
        self.exact, self.scale = ExactOracle(problem), scale
        self.names, self.calls, self.episodes = problem.names, 0, 0
        self.rng = np.random.default_rng(seed)

    def best_response(self, weights):
        self.calls += 1
        return self.exact.best_response(weights)

    def evaluate(self, policy):
        exact = self.exact.evaluate(policy).returns
        self.episodes += 10
        se = np.full(exact.shape, self.scale)
        return Evaluation(exact + self.rng.normal(scale=self.scale, size=exact.shape), se, 10)


def test_noisy_oracle_is_never_reported_optimal():
    problem = attention(gamma=0.9)
    oracle = NoisyOracle(problem, scale=0.05)
    lottery = oracle_max_quantile(oracle, n_samples=50, max_calls=10)
    assert lottery.status == "gap" and lottery.report["certified"] is False
    assert lottery.support_errors is not None and np.all(lottery.support_errors == 0.05)
    assert lottery.report["q_upper"] >= lottery.report["q_star"]
    assert lottery.diagnostics["evaluation_episodes"] == 10 * lottery.diagnostics["pool_size"]
    # the lower bound is the lottery's least margin minus 1.645 standard errors, so below its estimate
    assert lottery.report["lower_bound"] < lottery.report["min_normalized"]
