"""The stable-baselines3 oracle: the reward wrapper, training beats random, checkpoints and
resume, seeded reproducibility, the units and standard errors of evaluations.

Needs the extra ``policyagg[rl]`` (CI: ``pip install torch==2.13.0`` then ``pip install '.[rl]'``).
Training is kept tiny (a few thousand PPO steps) so the default run stays short; the full
egalitarian-versus-utilitarian run is marked slow.
"""

import json
import math
import warnings

import gymnasium
import numpy as np
import pytest

SKIP = "the deep-RL oracle needs the `rl` extra: pip install torch==2.13.0 (CPU), then pip install '.[rl]'"
torch = pytest.importorskip("torch", reason=SKIP)
pytest.importorskip("stable_baselines3", reason=SKIP)

import policyagg.envs  # noqa: F401  (registers the environments)
from policyagg.envs.oracles.sb3 import (
    SB3Oracle,
    ScalarizedReward,
    check_options,
    lottery_policies,
    make_oracle,
    rollout_lottery,
    summarize,
)
from policyagg.errors import CheckpointWarning, InvalidProblemError
from policyagg.oracle import Oracle, OraclePolicy

ENV_ID = "policyagg/GoalsOnALine-v0"
GAMMA = 0.9
PPO = {"n_steps": 256, "batch_size": 64, "n_epochs": 4, "learning_rate": 1e-3, "policy_kwargs": {"net_arch": [32, 32]}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same seed, same numbers
    yield
    torch.set_num_threads(threads)


def oracle(folder=None, timesteps=512, seed=0, **options):
    kwargs = {"algorithm": "PPO", "gamma": GAMMA, "eval_episodes": 50, "algorithm_options": PPO} | options
    return SB3Oracle(ENV_ID, timesteps=timesteps, seed=seed, folder=folder, **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An oracle with folder and its best response to e_0 (agent 0's goal is at -0.8)."""
    o = oracle(tmp_path_factory.mktemp("sb3"), timesteps=2048, eval_episodes=100)
    return o, o.best_response([1.0, 0.0, 0.0])


def hand_returns(env_id, act, seeds, gamma):
    """Per-step returns ``(1 - gamma) sum_t gamma^t r_t`` of every agent (E, n), written out step by step."""
    env = gymnasium.make(env_id)
    out = []
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        total, discount, done = 0.0, 1.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total = total + discount * np.asarray(reward, dtype=float)
            discount *= gamma
            done = terminated or truncated
        out.append((1 - gamma) * total)
    return np.array(out)


# ---------------------------------------------------------------------- the wrapper
def test_wrapper_scalarises_a_vector_reward():
    w = np.array([0.5, -2.0, 1.0])
    wrapped = ScalarizedReward(gymnasium.make(ENV_ID), w)
    plain = gymnasium.make(ENV_ID)
    wrapped.reset(seed=5)
    plain.reset(seed=5)
    for action in [0, 2, 2, 1, 0, 2, 2, 2, 2]:
        _, scalar, *_, info = wrapped.step(action)
        _, vector, *_ = plain.step(action)
        assert isinstance(scalar, float)
        assert scalar == pytest.approx(0.5 * vector[0] - 2.0 * vector[1] + vector[2], rel=1e-6, abs=1e-9)
        np.testing.assert_array_equal(info["rewards"], vector)


class InfoRewards(gymnasium.Env):
    """A scalar-reward env that reports its vector reward in ``info["rewards"]``."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)
    reward_dim = 2

    def __init__(self, with_info=True):
        self.with_info = with_info

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        info = {"rewards": np.array([1.0, 3.0]) * (action + 1)} if self.with_info else {}
        return np.zeros(1, np.float32), 0.0, False, False, info


def test_wrapper_reads_info_rewards_and_refuses_a_scalar():
    env = ScalarizedReward(InfoRewards(), [2.0, 1.0])
    env.reset(seed=0)
    assert env.step(1)[1] == pytest.approx(2 * 2.0 + 1 * 6.0)
    bare = ScalarizedReward(InfoRewards(with_info=False), [2.0, 1.0])
    bare.reset(seed=0)
    with pytest.raises(InvalidProblemError, match="info\\['rewards'\\]"):
        bare.step(0)
    with pytest.raises(InvalidProblemError, match="weights"):
        ScalarizedReward(InfoRewards(), [1.0, 2.0, 3.0])


def test_wrapper_on_mo_gymnasium():
    mo_gymnasium = pytest.importorskip("mo_gymnasium")
    w = np.array([0.3, 0.7])
    wrapped = ScalarizedReward(mo_gymnasium.make("deep-sea-treasure-v0"), w)
    plain = mo_gymnasium.make("deep-sea-treasure-v0")
    wrapped.reset(seed=0)
    plain.reset(seed=0)
    for action in [1, 1, 3, 1]:  # down, down, right, down
        _, scalar, *_ = wrapped.step(action)
        _, vector, *_ = plain.step(action)
        assert scalar == pytest.approx(float(w @ np.asarray(vector, float)))


# ---------------------------------------------------------------------- training and evaluation
def test_protocol_and_best_response_beats_random(trained):
    o, policy = trained
    assert isinstance(o, Oracle) and o.tolerance is None  # RL certifies nothing
    assert o.names == ("goal-0.80", "goal+0.20", "goal+0.80") and o.calls == 1 and o.trained == 1
    br = o.evaluate(policy)
    rng = np.random.default_rng(0)
    random_policy = hand_returns(ENV_ID, lambda obs: int(rng.integers(3)), range(100), GAMMA)[:, 0]
    lift = br.returns[0] - random_policy.mean()
    noise = math.hypot(br.standard_errors[0], random_policy.std(ddof=1) / 10)
    assert lift > 0.2 and lift > 4 * noise, (br, random_policy.mean())


def test_evaluation_units_by_hand(trained):
    """evaluate() = (1 - gamma) * discounted return averaged over episodes on seeds eval_seed + e."""
    o, policy = trained
    model = o.model(policy)
    seeds = o.eval_seed + np.arange(20)

    def act(obs):
        return int(model.policy.predict(obs[None], deterministic=True)[0][0])

    evaluation = o.evaluate(policy, episodes=20)
    by_hand = hand_returns(ENV_ID, act, seeds, GAMMA).mean(axis=0)
    # the oracle stops at gamma^H <= 1e-4 (88 steps), the hand loop at the 100-step limit
    np.testing.assert_allclose(evaluation.returns, by_hand, rtol=0, atol=2 * GAMMA**88)
    assert evaluation.episodes == 20


def test_standard_errors_shrink_with_episodes(trained):
    o, policy = trained
    few, many = o.evaluate(policy, episodes=25), o.evaluate(policy, episodes=400)
    agent = int(np.argmax(many.standard_errors))
    assert many.standard_errors[agent] > 0
    assert 2.8 < few.standard_errors[agent] / many.standard_errors[agent] < 5.7  # sqrt(400 / 25) = 4


def test_sampled_actions_are_seeded_too(trained):
    o, policy = trained
    runs = []
    for _ in range(2):  # fresh oracles on the same checkpoint, sampling actions from the policy
        sampler = oracle(o.folder, timesteps=2048, eval_episodes=100, deterministic=False)
        runs.append(sampler.evaluate(sampler.best_response([1.0, 0.0, 0.0]), episodes=20))
        assert sampler.trained == 0
    np.testing.assert_array_equal(runs[0].returns, runs[1].returns)


def test_summarize_by_hand():
    evaluation = summarize([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0]])
    np.testing.assert_allclose(evaluation.returns, [2.0, 0.0])
    np.testing.assert_allclose(evaluation.standard_errors, [1.0 / math.sqrt(3), 0.0])


# ---------------------------------------------------------------------- checkpoints and seeds
def state(o, policy):
    return {k: v.clone() for k, v in o.model(policy).policy.state_dict().items()}


def test_checkpoint_round_trip_and_resume(tmp_path):
    first = oracle(tmp_path)
    policy = first.best_response([0.0, 2.0, 0.0])
    meta = json.loads((tmp_path / f"{policy.key}.json").read_text())
    assert policy.path == f"{policy.key}.pt" and meta["spec"]["weights"] == [0.0, 1.0, 0.0]
    saved = torch.load(tmp_path / policy.path, weights_only=True)  # plain tensors, no pickled objects
    assert all(torch.equal(saved[k], v) for k, v in state(first, policy).items())

    resumed = oracle(tmp_path)  # a new process, as after a kill
    again = resumed.best_response([0.0, 1.0, 0.0])  # the same direction: the same best response
    assert again.key == policy.key and resumed.trained == 0 and resumed.calls == 1
    assert all(torch.equal(state(first, policy)[k], v) for k, v in state(resumed, again).items())
    np.testing.assert_array_equal(first.evaluate(policy).returns, resumed.evaluate(again).returns)

    elsewhere = oracle(tmp_path, seed=1)  # another seed is another best response
    assert elsewhere.best_response([0.0, 1.0, 0.0]).key != policy.key and elsewhere.trained == 1


def test_damaged_checkpoint_is_retrained(tmp_path):
    first = oracle(tmp_path)
    policy = first.best_response([1.0, 1.0, 0.0])
    (tmp_path / policy.path).write_bytes(b"not a checkpoint")
    again = oracle(tmp_path)
    with pytest.warns(CheckpointWarning, match="does not match"):
        again.best_response([1.0, 1.0, 0.0])
    assert again.trained == 1
    fresh = oracle(tmp_path)  # the retrained checkpoint was written back
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.best_response([1.0, 1.0, 0.0])
    assert fresh.trained == 0


def test_seeded_reproducibility():
    a, b, c = oracle(seed=3), oracle(seed=3), oracle(seed=4)
    w = [0.2, 0.0, 0.8]
    pa, pb, pc = a.best_response(w), b.best_response(w), c.best_response(w)
    sa, sb, sc = state(a, pa), state(b, pb), state(c, pc)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    np.testing.assert_array_equal(a.evaluate(pa).returns, b.evaluate(pb).returns)
    np.testing.assert_array_equal(a.evaluate(pa).standard_errors, b.evaluate(pb).standard_errors)


# ---------------------------------------------------------------------- lotteries, factory, errors
def test_rollout_lottery_mixes_its_policies(trained):
    o, policy = trained
    other = o.best_response([1.0, 0.0, 0.0])  # cached: the same policy object
    assert other is policy and o.trained == 1
    lone = rollout_lottery(o, [policy], [1.0], episodes=30, seed=7)
    by_hand = o.episode_returns(policy, 7 + np.arange(30)).mean(axis=0)
    np.testing.assert_allclose(lone.returns, by_hand)

    class Lottery:  # what lottery_policies reads from a policyagg.lottery.Lottery
        size = 1
        diagnostics = {"support_keys": [policy.key], "support_paths": [policy.path]}

    assert lottery_policies(o, Lottery()) == [policy]
    fresh = oracle(o.folder, timesteps=2048, eval_episodes=100)  # a new oracle finds it by its checkpoint
    found = lottery_policies(fresh, Lottery())[0]
    np.testing.assert_allclose(fresh.evaluate(found).returns, o.evaluate(policy).returns)
    assert fresh.trained == 0


def test_make_oracle_by_name():
    o = make_oracle("sb3:DQN", ENV_ID, timesteps=300, algorithm_options={"learning_starts": 50})
    assert isinstance(o, SB3Oracle) and o.algorithm.__name__ == "DQN"
    o.evaluate(o.best_response([0.0, 0.0, 1.0]))
    assert o.episodes >= o.eval_episodes
    made = gymnasium.make(ENV_ID, width=0.3)  # an environment instance: copies come from its spec
    assert make_oracle("PPO", made).make_env().unwrapped.width == 0.3
    with pytest.raises(InvalidProblemError, match="not a stable-baselines3 algorithm.*PPO"):
        make_oracle("sb3:Nope", ENV_ID)
    with pytest.raises(InvalidProblemError, match="needs an environment"):
        make_oracle("sb3:PPO")
    check_options("sb3:PPO", {"timesteps": 10, "algorithm_options": {}})
    with pytest.raises(InvalidProblemError, match="unknown option 'steps'.*timesteps"):
        check_options("sb3:PPO", {"steps": 10})


@pytest.mark.parametrize(
    "options, match",
    [
        ({"env": "NoSuchEnv-v9"}, "registered"),
        ({"env": "CartPole-v1"}, "reward_dim"),
        ({"timesteps": 0}, "timesteps"),
        ({"gamma": 1.5}, "gamma"),
        ({"eval_episodes": 1}, "eval_episodes"),
        ({"names": ("a", "b")}, "names"),
    ],
)
def test_bad_options(options, match):
    kwargs = {"env": ENV_ID} | options
    with pytest.raises(InvalidProblemError, match=match):
        SB3Oracle(**kwargs)


def test_bad_weights(trained):
    o, _ = trained
    with pytest.raises(InvalidProblemError, match="weights"):
        o.best_response([1.0, np.nan, 0.0])
    with pytest.raises(InvalidProblemError, match="no checkpoint"):
        oracle().model(OraclePolicy(key="br-unknown", weights=np.zeros(3)))


# ---------------------------------------------------------------------- end to end (slow)
@pytest.mark.slow
def test_egalitarian_is_fairer_than_utilitarian(tmp_path):
    from policyagg.solvers.oracle_rules import PolicyPool, oracle_egalitarian, oracle_ranges, oracle_utilitarian

    o = oracle(tmp_path, timesteps=5000, eval_episodes=200)
    fair = oracle_egalitarian(o, max_calls=6, gap_tol=0.01)
    utilitarian = oracle_utilitarian(o)
    assert fair.status in ("gap", "time-limit") and utilitarian.status == "gap"  # RL proves nothing
    assert fair.diagnostics["oracle_calls"] >= 6 and fair.diagnostics["evaluation_episodes"] > 0
    executed = {
        name: rollout_lottery(o, lottery_policies(o, lottery), lottery.probabilities, episodes=500, seed=10**7)
        for name, lottery in (("fair", fair), ("utilitarian", utilitarian))
    }
    ranges, _, _ = oracle_ranges(PolicyPool(o))  # the same calls again: loaded, not retrained
    worst = {name: float(ranges.normalize(e.returns).min()) for name, e in executed.items()}
    assert worst["fair"] > worst["utilitarian"] + 0.1


# ---------------------------------------------------------------------- the config route and the example
def test_config_route_trains_on_the_environment(tmp_path):
    from policyagg.experiments.run import run_config
    from policyagg.lottery import Lottery, load_outcome

    config = {
        "name": "goals-sb3",
        "output": str(tmp_path / "out"),
        "seeds": [0],
        "environment": {"id": ENV_ID, "kwargs": {"goals": [-0.6, 0.6]}, "gamma": GAMMA},
        "agents": {"population": "env"},
        "measure": {"name": "optimal-mixture", "samples": 100},
        "rules": [{"label": "utilitarian", "rule": "utilitarian"}],
        "solver": {
            "route": "oracle",
            "oracle": "sb3:PPO",
            "options": {"timesteps": 128, "eval_episodes": 10, "gamma": GAMMA, "algorithm_options": {"n_steps": 64}},
        },
    }
    lottery = run_config(config, progress=False, figures=False).seeds[0].results["utilitarian"]
    assert isinstance(lottery, Lottery) and lottery.names == ("goal-0.60", "goal+0.60")
    assert lottery.status == "gap" and lottery.diagnostics["oracle_calls"] == 5  # 2n ranges + 1
    folder = tmp_path / "out" / "seed0" / "utilitarian.oracle"
    assert len(list(folder.glob("br-*.pt"))) == 5  # +-e_0, +-e_1 and (1, 1): five trained policies
    assert isinstance(load_outcome(tmp_path / "out" / "seed0" / "utilitarian"), Lottery)


def test_example_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "deep_rl_oracle.py"
    args = ["--timesteps", "256", "--max-calls", "1", "--eval-episodes", "10", "--episodes", "20"]
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path / "out"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "egalitarian: lottery over" in proc.stdout and "utilitarian: lottery over" in proc.stdout
    assert (tmp_path / "out" / "egalitarian.json").exists()
