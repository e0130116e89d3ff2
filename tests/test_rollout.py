"""Rollouts of LP policies in the real environments agree with the LP's prediction."""

import dataclasses

import gymnasium
import numpy as np
import pytest

from policyagg import (
    envs,  # noqa: F401 - registers policyagg/AttentionAllocation-v0
    solvers,
)
from policyagg.envs.rollout import RolloutReport, chain_period, rollout
from policyagg.envs.tabular import EnvModel, from_gymnasium
from policyagg.errors import InvalidMDPError, InvalidProblemError
from policyagg.mdp import StructureWarning, TabularMDP
from policyagg.problem import Problem

GAMMA = 0.95
#: Tests that check several agents (or reward modes) at once use 99.9% per comparison, so
#: that a family of 95% checks does not fail by chance (each is its own 5% risk).
Z_MANY = 3.29


@pytest.fixture(scope="module")
def frozen():
    env = gymnasium.make("FrozenLake-v1")
    model = from_gymnasium(env, gamma=GAMMA)
    return env, model, solvers.utilitarian(model.problem())


def test_frozen_lake_discounted(frozen):
    env, model, result = frozen
    report = rollout(env, model, result, episodes=1000, seed=0)
    assert isinstance(report, RolloutReport) and report.agrees(), report.table()
    np.testing.assert_allclose(report.predicted, result.returns, atol=1e-9)
    assert report.horizon == 180 and GAMMA**180 <= 1e-4  # default: gamma^H <= 1e-4
    assert 0 < report.tolerance <= 1.01e-4 and report.steps > 1000 and report.steps_per_second > 0
    # a prediction ten half-widths off is caught
    shifted = dataclasses.replace(report, predicted=report.predicted + 5 * (report.ci_high - report.ci_low))
    assert not shifted.agrees() and not shifted.agrees(z=Z_MANY) and not shifted.agreement().any()
    # scoring with the environment's own reward agrees too
    assert rollout(env, model, result, episodes=1000, seed=1, reward="env").agrees()


def test_frozen_lake_average_reward_with_resets():
    env = gymnasium.make("FrozenLake-v1")
    with pytest.warns(StructureWarning, match="not communicating"):
        model = from_gymnasium(env, gamma=1.0, on_termination="reset")
    result = solvers.utilitarian(model.problem())
    report = rollout(env, model, result, episodes=50, horizon=1500, seed=0)
    assert report.agrees(), report.table()
    assert report.burn_in == 150 and report.gamma == 1.0 and report.predicted[0] > 0.01


def test_any_agents_on_the_same_model(frozen):
    env, model, _ = frozen
    left = np.zeros((model.mdp.n_states, model.mdp.n_actions))
    left[[0, 4, 8, 12], :] = 1.0  # agent 1 likes the left column
    rewards = np.stack([model.rewards[0], left])
    result = solvers.egalitarian(Problem(model.mdp, rewards, names=("goal", "left")))
    report = rollout(env, model, result, episodes=600, rewards=rewards)
    assert report.agrees(z=Z_MANY), report.table(result.names)
    np.testing.assert_allclose(report.predicted, result.returns, atol=1e-7)
    table = report.table(result.names)
    assert "goal" in table and "left" in table and "NO" not in table


WEIGHTS = [[1, 0, 0], [0, 0.5, 0], [0, 0, 0.2]]


# Discounted returns over ~10 effective steps with penalty 100 are very skewed (g1 ~ -12:
# Cochran wants ~4000 episodes), so the discounted case uses penalty 10 (g1 ~ -2).
@pytest.mark.parametrize("gamma, penalty, episodes, horizon", [(1.0, 100.0, 40, 1500), (0.9, 10.0, 400, None)])
def test_attention_env_through_its_protocol(gamma, penalty, episodes, horizon):
    env = gymnasium.make("policyagg/AttentionAllocation-v0", n_sites=3, site_weights=WEIGHTS, penalty=penalty)
    model = from_gymnasium(env, gamma=gamma)
    assert model.route == "protocol" and model.mdp.n_states == 27 and model.n_agents == 3
    result = solvers.egalitarian(model.problem())
    for reward in ("model", "env"):
        report = rollout(env, model, result, episodes=episodes, horizon=horizon, reward=reward, seed=3)
        assert report.reliable().all() and report.agrees(z=Z_MANY), report.table()
        np.testing.assert_allclose(report.predicted, result.returns, atol=1e-6)


def test_skewed_returns_are_flagged():
    env = gymnasium.make("policyagg/AttentionAllocation-v0", n_sites=3, site_weights=WEIGHTS)
    model = from_gymnasium(env, gamma=0.9)
    report = rollout(env, model, solvers.egalitarian(model.problem()), episodes=100, seed=0)
    # penalties are rare: agents whose sample shows them are flagged (one that saw too few
    # of them cannot be: that is the limit of any diagnostic computed from the sample)
    assert report.skewness.min() < -3 and not report.reliable().all()
    assert "* skewed returns: the normal CI wants more than" in report.table()


def test_seeded_rollouts_are_reproducible(frozen):
    env, model, result = frozen
    a, b = (rollout(env, model, result, episodes=100, seed=7) for _ in range(2))
    c = rollout(gymnasium.make("FrozenLake-v1"), model, result, episodes=100, seed=7)
    for field in ("mean", "ci_low", "ci_high"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        np.testing.assert_array_equal(getattr(a, field), getattr(c, field))
    assert a.steps == b.steps == c.steps
    assert not np.array_equal(a.mean, rollout(env, model, result, episodes=100, seed=8).mean)


def test_a_result_of_other_rewards_is_flagged(frozen):
    env, model, _ = frozen
    other = solvers.utilitarian(model.problem(rewards=2 * model.rewards))
    with pytest.warns(UserWarning, match="differ from the model's evaluation"):
        report = rollout(env, model, other, episodes=20)
    np.testing.assert_allclose(report.lp_returns, 2 * report.predicted)


def test_errors(frozen):
    env, model, result = frozen
    with pytest.raises(InvalidProblemError, match="`episodes` must be an integer >= 2"):
        rollout(env, model, result, episodes=1)
    with pytest.raises(InvalidProblemError, match="`reward` must be 'model' or 'env'"):
        rollout(env, model, result, reward="both")
    with pytest.raises(InvalidProblemError, match="`rewards` only applies with reward='model'"):
        rollout(env, model, result, reward="env", rewards=model.rewards)
    with pytest.raises(InvalidProblemError, match="`burn_in` only applies to average reward"):
        rollout(env, model, result, burn_in=10)
    with pytest.raises(InvalidProblemError, match=r"`rewards` must have shape \(n, S, A\)"):
        rollout(env, model, result, rewards=np.zeros((2, 3)))
    with pytest.raises(InvalidMDPError, match="`policy` must have shape"):
        rollout(env, model, np.ones((4, 4)) / 4)


# ------------------------------------------------------------------ issue 15, item 4
class CycleEnv(gymnasium.Env):
    """A deterministic walk around ``period`` states (one action); rewards ``(s == 0, s / period)``."""

    def __init__(self, period, reward_scale=(1.0, 1.0)):
        self.period, self.scale = period, np.asarray(reward_scale, dtype=float)
        self.observation_space = gymnasium.spaces.Discrete(period)
        self.action_space = gymnasium.spaces.Discrete(1)
        self.state = 0

    def true_rewards(self):
        s = np.arange(self.period)
        return self.scale[:, None, None] * np.stack([(s == 0) * 1.0, s / self.period])[:, :, None]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = 0
        return 0, {}

    def step(self, action):
        reward = self.true_rewards()[:, self.state, 0]
        self.state = (self.state + 1) % self.period
        return self.state, reward, False, False, {}


def cycle_model(env, gamma, rewards=None):
    P = np.zeros((env.period, 1, env.period))
    P[np.arange(env.period), 0, (np.arange(env.period) + 1) % env.period] = 1.0
    mdp = TabularMDP(P, rho=np.eye(env.period)[0], gamma=gamma)
    rewards = env.true_rewards() if rewards is None else rewards
    info = {"absorbing": None, "on_termination": None, "exact": True}
    return EnvModel(mdp, rewards, list(range(env.period)), "test", info)


@pytest.mark.parametrize("period", [3, 6])
def test_a_periodic_deterministic_chain_agrees(period):
    # every episode repeats the same cycle: zero-width intervals, so a horizon that is not a
    # multiple of the period (2000 = 3 * 666 + 2) gave a 1/H bias and a false disagreement
    env = CycleEnv(period)
    model = cycle_model(env, gamma=1.0)
    report = rollout(env, model, np.ones((period, 1)), episodes=5, seed=0)
    assert chain_period(model.mdp, np.ones((period, 1))) == period == report.period
    assert report.horizon % period == 0 and report.horizon >= 2000
    np.testing.assert_allclose(report.ci_high - report.ci_low, 0.0, atol=1e-12)  # deterministic
    assert report.agrees(), report.table()
    assert report.verdict().startswith("agrees") and "z" in report.table()
    # the same run cut at 2000 steps is biased by O(period / H) and, with zero width, rejected
    cut = rollout(env, model, np.ones((period, 1)), episodes=5, horizon=2000, seed=0)
    assert not cut.agrees() and cut.verdict().startswith("DISAGREES")


def test_chain_period_of_several_classes_is_their_lcm():
    P = np.zeros((5, 1, 5))
    P[0, 0, 1] = P[1, 0, 0] = 1.0  # period 2
    P[2, 0, 3] = P[3, 0, 4] = P[4, 0, 2] = 1.0  # period 3
    with pytest.warns(StructureWarning):
        mdp = TabularMDP(P, gamma=1.0, allow_multichain=True)
    assert chain_period(mdp, np.ones((5, 1))) == 6
    P = np.zeros((3, 1, 3))
    P[0, 0, 1] = P[1, 0, 2] = 1.0
    P[2, 0, [0, 1]] = 0.5  # cycles of length 3 and 2: aperiodic
    assert chain_period(TabularMDP(P, gamma=1.0), np.ones((3, 1))) == 1


def test_an_agent_with_a_small_reward_scale_is_judged_on_its_own_scale():
    # agent 0 earns up to 100, agent 1 up to 0.01, and agent 1's model rewards are 20% off; the
    # tolerance used to be the largest agent's truncation bound (gamma^H * 100 = 0.01), which
    # hid any error of agent 1
    env = CycleEnv(4, reward_scale=(100.0, 0.01))
    wrong = env.true_rewards().copy()
    wrong[1] *= 1.2
    model = cycle_model(env, gamma=GAMMA, rewards=wrong)
    report = rollout(env, model, np.ones((4, 1)), episodes=5, reward="env", seed=0)
    assert report.agreement().tolist() == [True, False], report.table()
    assert report.tolerance[1] < 1e-4 * report.tolerance[0]
    verdict = report.verdict(["big", "small"])
    assert verdict.startswith("DISAGREES for 1 of 2") and "small" in verdict and "big:" not in verdict
    assert np.isinf(report.z_scores()[1]) or abs(report.z_scores()[1]) > 10
    # the right model agrees for both
    right = rollout(env, cycle_model(env, gamma=GAMMA), np.ones((4, 1)), episodes=5, reward="env", seed=0)
    assert right.agrees(), right.table()
