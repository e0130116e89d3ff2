"""GoalsOnALine: Gymnasium's checker, seeded rollouts, the reward formula by hand, bad arguments."""

import re
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import policyagg.envs  # noqa: F401  (registers the environments)
from policyagg.envs import GoalsOnALine
from policyagg.errors import InvalidProblemError

ENV_ID = "policyagg/GoalsOnALine-v0"
VECTOR_REWARD_WARNING = re.compile(r"The reward returned by `step\(\)` must be a float")


def test_check_env():
    env = gymnasium.make(ENV_ID).unwrapped
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    others = [str(w.message) for w in caught if not VECTOR_REWARD_WARNING.search(str(w.message))]
    assert others == []  # only the (deliberate) vector reward is warned about
    assert gymnasium.spec(ENV_ID).max_episode_steps == 100


def trace(env, seed, steps=40):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [obs]
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated and not truncated
        out += [obs, reward]
    return out


def test_seeded_rollouts():
    env = gymnasium.make(ENV_ID)
    first, again, other = trace(env, 3), trace(env, 3), trace(env, 4)
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other))


def test_rewards_and_spaces_by_hand():
    env = GoalsOnALine(goals=(-0.5, 0.5), width=0.25, step_size=0.5, noise=0.0, start=0.0, start_spread=0.0)
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [0.0] and env.reward_dim == 2
    obs, reward, *_ = env.step(0)  # left by 0.5: exactly at the first goal
    assert obs.tolist() == [-0.5]
    np.testing.assert_allclose(reward, [1.0, np.exp(-1.0 / (2 * 0.0625))], rtol=1e-6)
    assert env.reward_space.contains(reward) and env.observation_space.contains(obs)
    for _ in range(3):  # walls clip at -1
        obs, reward, *_ = env.step(0)
    assert obs.tolist() == [-1.0]
    np.testing.assert_allclose(reward, np.exp(-np.array([0.25, 2.25]) / 0.125), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"goals": [2.0]}, "goals"),
        ({"goals": []}, "goals"),
        ({"width": 0.0}, "width"),
        ({"noise": -1.0}, "noise"),
        ({"start": 1.5}, "start"),
        ({"step_size": "big"}, "step_size"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(InvalidProblemError, match=match):
        GoalsOnALine(**kwargs)


def test_bad_action_and_step_before_reset():
    env = GoalsOnALine()
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step(1)
    env.reset(seed=0)
    with pytest.raises(InvalidProblemError, match="action"):
        env.step(3)
