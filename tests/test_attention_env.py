import re
import time
import warnings

import gymnasium
import numpy as np
import pytest
import scipy.sparse as sp
from gymnasium.utils.env_checker import check_env
from scipy.stats import binom

from policyagg import envs  # registers the environments
from policyagg.envs import AttentionAllocation, AttentionModel, one_agent_per_site, random_site_subsets
from policyagg.errors import InvalidProblemError
from policyagg.mdp import TabularMDP

ENV_ID = "policyagg/AttentionAllocation-v0"

KWARGS = {
    "paper-a": {"site_weights": one_agent_per_site(5, 0)},
    "paper-b": {"site_weights": random_site_subsets(10, 5, 1), "model_seed": 3},
    "3x4-start": {
        "n_sites": 3,
        "n_phases": 4,
        "escalation": [[0.1, 0.5, 0.9], [0.3, 0.05, 1.0], [0.6, 0.2, 0.4]],
        "site_weights": [[1.0, 0.0, 0.5], [0.0, 0.0, 2.0]],
        "start": [3, 0, 1],
        "attention_cost": 2.0,
        "penalty": 10.0,
    },
}

# Gymnasium's checker only knows scalar rewards and *warns* (does not fail) on a vector one.
# The vector reward is deliberate (one component per agent, the MO-Gymnasium convention), so
# exactly this warning is allowed; any other warning fails the test.
VECTOR_REWARD_WARNING = re.compile(
    r"The reward returned by `step\(\)` must be a float, int, np.integer or np.floating, actual type: <class 'numpy.ndarray'>"
)


def make(name):
    return gymnasium.make(ENV_ID, **KWARGS[name])


@pytest.mark.parametrize("name", KWARGS)
def test_check_env(name):
    env = make(name).unwrapped  # as Gymnasium's own tests: the raw env, spec kept
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    others = [str(w.message) for w in caught if not VECTOR_REWARD_WARNING.search(str(w.message))]
    assert others == []
    assert any(VECTOR_REWARD_WARNING.search(str(w.message)) for w in caught)  # still only a warning
    assert env.spec.id == ENV_ID and gymnasium.spec(ENV_ID).max_episode_steps == 1000


def rollout(env, seed, steps=60):
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    trace = [obs]
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        trace += [obs, reward]
    return trace


@pytest.mark.parametrize("name", KWARGS)
def test_seeded_rollouts(name):
    env = make(name)
    first, again, other = rollout(env, 7), rollout(env, 7), rollout(env, 8)
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(first, other, strict=True))


@pytest.mark.parametrize("name", KWARGS)
def test_spaces_contain_what_step_returns(name):
    env = make(name)
    raw = env.unwrapped
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs.dtype == np.int64
    assert np.array_equal(obs, raw.start)
    assert raw.reward_dim == raw.site_weights.shape[0] == raw.reward_space.shape[0]
    for action in list(range(raw.model.n_actions)) * 20:
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs)
        assert reward.dtype == np.float32 and raw.reward_space.contains(reward)
        assert terminated is False and truncated is False


def test_truncates_after_max_episode_steps():
    env = gymnasium.make(ENV_ID)
    env.reset(seed=0)
    for _ in range(999):
        assert env.step(5)[3] is False
    assert env.step(5)[3] is True


@pytest.mark.parametrize("name", KWARGS)
def test_tabular_model_protocol(name):
    raw = make(name).unwrapped
    mdp, rewards, observations = raw.tabular_model(gamma=0.95)
    model = raw.model
    S, A = model.n_states, model.n_actions
    assert isinstance(mdp, TabularMDP) and (mdp.n_states, mdp.n_actions, mdp.gamma) == (S, A, 0.95)
    assert rewards.shape == (raw.reward_dim, S, A)
    np.testing.assert_array_equal(rewards, model.rewards(raw.site_weights))
    assert len(observations) == S and observations[0] == (0,) * model.n_sites
    assert all(raw.state_index(o) == s for s, o in enumerate(observations))
    obs, _ = raw.reset(seed=0)
    assert mdp.rho[raw.state_index(obs)] == 1.0 and observations[raw.state_index(obs)] == tuple(obs)
    np.testing.assert_array_equal(raw.reward_space.low, rewards.min(axis=(1, 2)).astype(np.float32))
    assert raw.tabular_model()[0].gamma == 1.0


def empirical_vs_model(env, states, n_steps, alpha):
    """Step ``n_steps`` times from each state with each action; every next-state count must lie
    in the exact two-sided binomial interval of level ``alpha`` around the model's probability,
    and every reward must equal the model's reward table."""
    raw = env.unwrapped
    mdp, rewards, observations = raw.tabular_model()
    P = mdp.P.toarray().reshape(mdp.n_states, mdp.n_actions, mdp.n_states)
    raw.reset(seed=20240)
    n_cells = 0
    for s in states:
        for a in range(mdp.n_actions):
            counts = np.zeros(mdp.n_states)
            for _ in range(n_steps):
                raw.reset(options={"start": observations[s]})
                obs, reward, *_ = raw.step(a)
                counts[raw.state_index(obs)] += 1
                np.testing.assert_array_equal(reward, rewards[:, s, a].astype(np.float32))
            p = P[s, a]
            assert np.all(counts[p == 0] == 0), "a next state the model says is impossible"
            lo, hi = binom.ppf(alpha / 2, n_steps, p[p > 0]), binom.isf(alpha / 2, n_steps, p[p > 0])
            assert np.all((lo <= counts[p > 0]) & (counts[p > 0] <= hi)), (s, a, counts[p > 0] / n_steps, p[p > 0])
            n_cells += np.count_nonzero(p)
    return n_cells


@pytest.mark.parametrize(
    "name, states",
    [
        ("paper-a", [0, 242, 2 + 3 * 1 + 9 * 0 + 27 * 1 + 81 * 2, 1 + 3 * 2 + 9 * 2 + 27 * 1 + 81 * 0]),
        ("3x4-start", [0, 63, 1 + 4 * 2 + 16 * 3, 3 + 4 * 0 + 16 * 1]),
    ],
)
def test_model_matches_real_steps(name, states):
    # Exact binomial acceptance intervals with alpha = 1e-9 per (state, action, next state)
    # cell; the union bound over at most 4 * 6 * 32 = 768 cells gives a false-failure rate
    # below 1e-6 (and the seed is fixed, so the test is deterministic).
    n_cells = empirical_vs_model(make(name), states, n_steps=2500, alpha=1e-9)
    assert n_cells * 1e-9 < 1e-6


def test_large_model_builds_fast_and_sparse():
    start = time.perf_counter()
    env = AttentionAllocation(n_sites=8, n_phases=3, site_weights=random_site_subsets(10, 8, 0))
    mdp, rewards, observations = env.tabular_model()
    elapsed = time.perf_counter() - start
    print(f"8-site, 3-phase model (6561 states, 9 actions, 10 agents): built in {elapsed:.2f} s")
    assert elapsed < 30  # generous: measured ~4 s on 2 cores (most of it the gamma = 1 structure check)
    assert sp.issparse(mdp.P) and mdp.P.shape == (6561 * 9, 6561)
    assert mdp.P.nnz <= 6561 * 9 * 2**8  # at most 2 next phases per unattended site
    assert rewards.shape == (10, 6561, 9) and len(observations) == 6561


def test_mo_gymnasium_linear_reward_wrapper():
    mo_wrappers = pytest.importorskip("mo_gymnasium.wrappers")
    env = mo_wrappers.LinearReward(gymnasium.make(ENV_ID), weight=np.ones(5, dtype=np.float32))
    env.reset(seed=0)
    _, scalar, _, _, info = env.step(0)
    assert scalar == pytest.approx(info["vector_reward"].sum()) and scalar == pytest.approx(-5.0)  # 5 agents pay 1 each


def test_default_agents_and_exports():
    raw = gymnasium.make(ENV_ID).unwrapped
    np.testing.assert_array_equal(raw.site_weights, np.eye(5))
    assert isinstance(raw.model, AttentionModel) and (raw.model.n_sites, raw.model.n_phases) == (5, 3)
    np.testing.assert_array_equal(raw.model.q, AttentionModel(5, 3, seed=0).q)
    assert set(envs.__all__) == {
        "AttentionAllocation",
        "AttentionModel",
        "EnvModel",
        "GoalsOnALine",
        "from_gymnasium",
        "one_agent_per_site",
        "random_site_subsets",
        "rollout",
    }


def test_reimport_does_not_reregister():
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(envs)
    assert ENV_ID in gymnasium.registry


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"site_weights": np.ones(5)}, r"`site_weights` must have shape \(n_agents, n_sites\) = \(n, 5\)"),
        ({"site_weights": np.ones((2, 4))}, r"`site_weights` must have shape \(n_agents, n_sites\) = \(n, 5\)"),
        ({"site_weights": np.zeros((0, 5))}, r"`site_weights` must have shape .* with n >= 1"),
        ({"site_weights": [[1, -1, 0, 0, 0]]}, r"`site_weights` must be non-negative and finite"),
        ({"site_weights": [[1, np.nan, 0, 0, 0]]}, r"`site_weights` must be non-negative and finite"),
        ({"start": "random"}, r"`start` must be 'zeros' or a vector of 5 phases in 0..2; got 'random'"),
        ({"start": [0, 0, 3, 0, 0]}, r"`start` must be 'zeros' or a vector of 5 phases in 0..2"),
        ({"start": [0, 0, 0]}, r"`start` must be .* got shape \(3,\)"),
        ({"start": [0, 0.5, 0, 0, 0]}, r"`start` must be 'zeros'"),
        ({"penalty": -1.0}, r"`penalty` must be a non-negative finite number"),
        ({"attention_cost": np.inf}, r"`attention_cost` must be a non-negative finite number"),
        ({"n_sites": 0}, r"`n_sites` must be a positive integer"),
        ({"escalation": np.ones((5, 1))}, r"`escalation` must have shape"),
    ],
)
def test_invalid_kwargs(kwargs, match):
    with pytest.raises(InvalidProblemError, match=match):
        gymnasium.make(ENV_ID, **kwargs)


def test_invalid_calls():
    raw = AttentionAllocation()
    with pytest.raises(gymnasium.error.ResetNeeded):
        raw.step(0)
    raw.reset(seed=0)
    with pytest.raises(InvalidProblemError, match=r"`action` must be an integer in 0..5"):
        raw.step(6)
    with pytest.raises(InvalidProblemError, match=r"`options\['start'\]` must be"):
        raw.reset(options={"start": [9, 0, 0, 0, 0]})
    with pytest.raises(InvalidProblemError, match=r"`observation` must be"):
        raw.state_index([0, 0])
