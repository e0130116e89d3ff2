"""Gymnasium environments to tabular models: every route, checked by hand and against real steps."""

import random
import re
import threading

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit
from scipy.stats import norm

from policyagg import solvers
from policyagg.envs.rollout import rollout
from policyagg.envs.tabular import EnvModel, ModelWarning, from_gymnasium
from policyagg.errors import InvalidProblemError
from policyagg.mdp import StructureWarning, TabularMDP

LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3  # FrozenLake


# --------------------------------------------------------------------------- custom envs
class Grid(gymnasium.Env):
    """4x4 grid, MultiDiscrete (row, col) observations, no `P`: deterministic moves
    (0 up, 1 down, 2 left, 3 right; walls stop), a wall cell at (1, 1), reward 1 and
    termination on entering (3, 3), reward -1 for bumping into a wall."""

    MOVES = np.array([(-1, 0), (1, 0), (0, -1), (0, 1)])

    def __init__(self):
        self.observation_space = spaces.MultiDiscrete([4, 4])
        self.action_space = spaces.Discrete(4)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = np.array([0, 0])
        return self.pos.copy(), {}

    def step(self, action):
        target = self.pos + self.MOVES[action]
        blocked = np.any(target < 0) or np.any(target > 3) or tuple(target) == (1, 1)
        if not blocked:
            self.pos = target
        done = tuple(self.pos) == (3, 3)
        return self.pos.copy(), float(done) - float(blocked), done, False, {}


class Coin(gymnasium.Env):
    """Discrete(3) states; action 1 moves up a state w.p. `p` drawn as `np_random.random() < p`,
    action 0 stays; state 2 pays 2 per step. Continuing (never terminates)."""

    def __init__(self, p=0.3):
        self.p = p
        self.observation_space = spaces.Discrete(3)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = 0
        return self.s, {}

    def step(self, action):
        reward = 2.0 * (self.s == 2)
        if action == 1 and self.np_random.random() < self.p:
            self.s = (self.s + 1) % 3
        return self.s, reward, False, False, {}


class NoisyChain(gymnasium.Env):
    """5-state chain: action 1 advances iff `np_random.normal() < CUT` (not enumerable exactly);
    reaching state 4 pays 1 and terminates. With `lock` the state holds a lock: no snapshot."""

    CUT = 0.5

    def __init__(self, lock=False):
        self.observation_space = spaces.Discrete(5)
        self.action_space = spaces.Discrete(2)
        if lock:
            self._lock = threading.Lock()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = 0
        return self.s, {}

    def step(self, action):
        if action == 1 and self.np_random.normal() < self.CUT:
            self.s += 1
        done = self.s == 4
        return self.s, float(done), done, False, {}


class ContinuousAction(Coin):
    def __init__(self):
        super().__init__()
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)


class TupleWithBox(Coin):
    def __init__(self):
        super().__init__()
        self.observation_space = spaces.Tuple((spaces.Discrete(2), spaces.Box(0.0, 1.0, (2,))))


class TextObservation(Coin):
    def __init__(self):
        super().__init__()
        self.observation_space = spaces.Text(5)


# --------------------------------------------------------------------------- route "model"
@pytest.mark.parametrize("env_id", ["FrozenLake-v1", "CliffWalking-v1", "Taxi-v4"])
def test_toy_text_takes_the_model_route(env_id):
    env = gymnasium.make(env_id)
    model = from_gymnasium(env, gamma=0.95)
    base = env.unwrapped
    S = base.observation_space.n
    assert model.route == "model" and model.info["exact"]
    assert model.info["skipped"] == {"protocol": "the environment has no `tabular_model(gamma)` method"}
    assert model.mdp.n_states == S + 1 and model.observations[-1] is None and model.info["absorbing"] == S
    np.testing.assert_allclose(model.mdp.P.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.mdp.P_dense[S, :, S], 1.0)  # absorbing self-loop
    assert np.all(model.rewards[:, S] == 0)
    np.testing.assert_array_equal(model.mdp.rho[:S], base.initial_state_distrib)
    # r(s, a) = sum prob * reward and terminating mass -> absorbing, on the env's own lists
    rng = np.random.default_rng(0)
    for s, a in zip(rng.integers(S, size=20), rng.integers(base.action_space.n, size=20)):
        entries = base.P[s][a]
        assert model.rewards[0, s, a] == pytest.approx(sum(p * r for p, _, r, _ in entries))
        assert model.mdp.P_dense[s, a, S] == pytest.approx(sum(p for p, _, _, t in entries if t))


def test_frozen_lake_by_hand():
    model = from_gymnasium(gymnasium.make("FrozenLake-v1"), gamma=0.9)
    P, absorbing = model.mdp.P_dense, 16
    # slippery: intended direction and both perpendicular ones, 1/3 each; duplicates summed
    assert P[0, LEFT, 0] == pytest.approx(2 / 3) and P[0, LEFT, 4] == pytest.approx(1 / 3)
    # from 14 going right: goal 15 (reward 1, terminates) or up to 10 or down (wall) staying at 14
    np.testing.assert_allclose(P[14, RIGHT, [absorbing, 10, 14]], [1 / 3, 1 / 3, 1 / 3])
    assert model.rewards[0, 14, RIGHT] == pytest.approx(1 / 3)
    # holes and the goal are only entered by terminating transitions; their own rows absorb
    np.testing.assert_allclose(P[5, :, absorbing], 1.0)
    np.testing.assert_array_equal(model.mdp.rho, np.eye(17)[0])


def test_cliff_walking_and_taxi_by_hand():
    cliff = from_gymnasium(gymnasium.make("CliffWalking-v1"), gamma=0.9)
    start = 36
    assert (
        cliff.mdp.P_dense[start, 1, start] == 1.0 and cliff.rewards[0, start, 1] == -100
    )  # into the cliff: back to start
    assert cliff.mdp.P_dense[start, 0, 24] == 1.0 and cliff.rewards[0, start, 0] == -1
    assert cliff.mdp.P_dense[35, 2, 48] == 1.0 and cliff.rewards[0, 35, 2] == -1  # step onto the goal terminates
    env = gymnasium.make("Taxi-v4")
    taxi = from_gymnasium(env, gamma=0.9)
    s = env.unwrapped.encode(0, 0, 4, 0)  # at R with the passenger aboard, destination R
    assert taxi.mdp.P_dense[s, 5, 500] == 1.0 and taxi.rewards[0, s, 5] == 20  # drop-off: +20, episode ends
    s = env.unwrapped.encode(1, 1, 0, 2)
    assert taxi.mdp.P_dense[s, 4, s] == 1.0 and taxi.rewards[0, s, 4] == -10  # illegal pick-up


@pytest.mark.parametrize("env_id", ["FrozenLake-v1", "CliffWalkingSlippery-v1"])
def test_model_matches_real_steps(env_id):
    """Empirical next-state frequencies from restored states (`env.unwrapped.s = s`) within 5 s.e."""
    env = gymnasium.make(env_id)
    model = from_gymnasium(env, gamma=0.9)
    base, absorbing = env.unwrapped, model.info["absorbing"]
    base.reset(seed=0)
    n = 400
    for s in (0, 6, 10, 24, 35):
        if s >= base.observation_space.n or not np.any(model.mdp.P_dense[s, :, :absorbing]):
            continue
        for a in range(base.action_space.n):
            counts = np.zeros(model.mdp.n_states)
            for _ in range(n):
                base.s = s
                obs, reward, terminated, _, _ = base.step(a)
                counts[absorbing if terminated else obs] += 1
            p = model.mdp.P_dense[s, a]
            assert np.all(np.abs(counts / n - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12), (s, a)


def test_reset_on_termination_sends_terminating_mass_to_rho():
    with pytest.warns(StructureWarning, match="not communicating"):  # holes and goal unreachable
        model = from_gymnasium(gymnasium.make("FrozenLake-v1"), gamma=1.0, on_termination="reset")
    assert model.info["absorbing"] is None and model.mdp.n_states == 16
    P = model.mdp.P_dense
    np.testing.assert_allclose(P[14, RIGHT, [0, 10, 14]], [1 / 3, 1 / 3, 1 / 3])  # the goal restarts at 0
    assert model.rewards[0, 14, RIGHT] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- route "enumerate"
def test_enumerate_deterministic_grid_by_hand():
    model = from_gymnasium(Grid(), gamma=0.9)
    assert model.route == "enumerate" and model.info["exact"] and model.info["stochastic_pairs"] == 0
    assert "no toy-text model" in model.info["skipped"]["model"]
    # 16 cells - the wall - the goal (entered only by terminating) + the absorbing state
    assert model.mdp.n_states == 15 and model.observations[0] == (0, 0) and model.observations[-1] is None
    assert set(model.observations[:-1]) == {(r, c) for r in range(4) for c in range(4)} - {(1, 1), (3, 3)}
    P, R, i = model.mdp.P_dense, model.rewards[0], model.state_index
    absorbing = model.info["absorbing"]
    np.testing.assert_array_equal(model.mdp.rho, np.eye(15)[0])
    assert P[i((0, 0)), 3, i((0, 1))] == 1 and R[i((0, 0)), 3] == 0  # right
    assert P[i((0, 0)), 0, i((0, 0))] == 1 and R[i((0, 0)), 0] == -1  # up: the edge
    assert P[i((0, 1)), 1, i((0, 1))] == 1 and R[i((0, 1)), 1] == -1  # down: the wall cell
    assert P[i((3, 2)), 3, absorbing] == 1 and R[i((3, 2)), 3] == 1  # onto the goal
    assert P[i(np.array([2, 3])), 1, absorbing] == 1
    # best return: 6 steps to the goal, reward on the last one
    ranges = solvers.return_ranges(model.problem())
    assert ranges.upper[0] / (1 - 0.9) == pytest.approx(0.9**5)


def test_enumerate_probes_random_draws_exactly():
    model = from_gymnasium(Coin(p=0.3), gamma=1.0)
    assert model.route == "enumerate" and model.info["stochastic_pairs"] == 3 and model.info["absorbing"] is None
    P = model.mdp.P_dense
    for s in range(3):
        t = model.state_index((s + 1) % 3)
        assert P[s, 1, t] == 0.3 and P[s, 1, s] == 1 - 0.3  # the env's own threshold, to the last bit
    assert model.rewards[0, model.state_index(2)].tolist() == [2.0, 2.0]


def test_enumerate_reproduces_the_toy_text_model_exactly():
    """Probing FrozenLake's categorical draws gives its `P` to rounding (1e-15)."""
    env = gymnasium.make("FrozenLake-v1")
    exact = from_gymnasium(env, gamma=0.95)
    probed = from_gymnasium(env, gamma=0.95, route="enumerate")
    assert probed.route == "enumerate" and probed.info["stochastic_pairs"] > 0
    idx = [exact.info["absorbing"] if o is None else exact.state_index(o) for o in probed.observations]
    np.testing.assert_allclose(exact.mdp.P_dense[np.ix_(idx, range(4), idx)], probed.mdp.P_dense, rtol=0, atol=1e-15)
    np.testing.assert_allclose(exact.rewards[:, idx], probed.rewards, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(exact.mdp.rho[idx], probed.mdp.rho)
    # BFS finds exactly the states reachable from rho (holes and the goal are entered only by terminating)
    assert set(range(17)) - set(idx) == set(exact.mdp.structure.unreachable.tolist())


# --------------------------------------------------------------------------- route "sampled"
@pytest.mark.parametrize(
    "lock, how, why",
    [
        (False, "restored snapshots", "draws with Generator.normal, which cannot be enumerated exactly"),
        (True, "exploring the live environment", "cannot be snapshotted and restored: .* cannot pickle"),
    ],
)
def test_sampled_route_estimates_within_five_standard_errors(lock, how, why):
    model = from_gymnasium(NoisyChain(lock=lock), gamma=0.9, n_samples=300, rng=1)
    info = model.info
    assert model.route == "sampled" and not info["exact"] and info["how"].startswith(how)
    assert re.search(why, info["skipped"]["enumerate"])
    assert info["min_count"] >= 300 and 0 < info["max_std_error"] < 0.05 and info["max_reward_std_error"] > 0
    p = norm.cdf(NoisyChain.CUT)
    P, counts, i = model.mdp.P_dense, info["counts"], model.state_index
    for s in range(3):
        se = np.sqrt(p * (1 - p) / counts[i(s), 1])
        assert abs(P[i(s), 1, i(s + 1)] - p) <= 5 * se
        assert P[i(s), 0, i(s)] == 1.0
    se = np.sqrt(p * (1 - p) / counts[i(3), 1])
    assert abs(P[i(3), 1, info["absorbing"]] - p) <= 5 * se
    assert abs(model.rewards[0, i(3), 1] - p) <= 5 * se


# --------------------------------------------------------------------------- errors and API
@pytest.mark.parametrize(
    "env, match",
    [
        ("CartPole-v1", "continuous observation space .* discretise it first"),
        (ContinuousAction(), "continuous action space"),
        (TupleWithBox(), r"continuous component \[1\] of its observation space"),
        (TextObservation(), "only Discrete, MultiDiscrete, MultiBinary, integer Box observations and Tuple/Dict"),
    ],
)
def test_unsupported_spaces(env, match):
    with pytest.raises(InvalidProblemError, match=match):
        from_gymnasium(env, gamma=0.9)


def test_option_errors():
    with pytest.raises(InvalidProblemError, match="route 'model' is not available for Grid: .*no toy-text model"):
        from_gymnasium(Grid(), gamma=0.9, route="model")
    with pytest.raises(InvalidProblemError, match="route 'protocol' is not available"):
        from_gymnasium("FrozenLake-v1", gamma=0.9, route="protocol")
    with pytest.raises(InvalidProblemError, match="`on_termination` must be one of"):
        from_gymnasium(Grid(), gamma=0.9, on_termination="restart")
    with pytest.raises(InvalidProblemError, match="`route` must be"):
        from_gymnasium(Grid(), gamma=0.9, route="exact")
    with pytest.raises(InvalidProblemError, match="`n_samples` must be an integer >= 2"):
        from_gymnasium(Grid(), gamma=0.9, n_samples=1)
    with pytest.raises(InvalidProblemError, match="more than `max_states`=5"):
        from_gymnasium(Grid(), gamma=0.9, max_states=5)
    with pytest.raises(InvalidProblemError, match="not a registered"):
        from_gymnasium("NoSuchEnv-v0", gamma=0.9)


def test_state_index_and_problem():
    model = from_gymnasium(Grid(), gamma=0.9)
    assert model.state_index(np.array([0, 1], dtype=np.int32)) == model.state_index((0, 1))
    with pytest.raises(InvalidProblemError, match=r"observation \(1, 1\) is not a state of this model"):
        model.state_index((1, 1))
    problem = model.problem(names=["goal"])
    assert problem.names == ("goal",) and problem.rewards.shape == (1, 15, 4)
    assert isinstance(model, EnvModel) and model.actions == (0, 1, 2, 3)


def test_multidiscrete_actions_are_enumerated():
    class Pair(Coin):
        def __init__(self):
            super().__init__()
            self.action_space = spaces.MultiDiscrete([2, 3])

        def step(self, action):
            return super().step(int(action[0]))

    model = from_gymnasium(Pair(), gamma=0.9)
    assert model.mdp.n_actions == 6 and [a.tolist() for a in model.actions[:3]] == [[0, 0], [0, 1], [0, 2]]


# --------------------------------------------------------------------------- multi-objective
GAMMA = 0.95


@pytest.fixture(scope="module")
def mo_gym():
    return pytest.importorskip("mo_gymnasium")


def _real_transitions(env, model, episodes, seed):
    """(s, a, s', reward vector) from random-action episodes of the real environment."""
    rng = np.random.default_rng(seed)
    out = []
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        for _ in range(60):
            s, a = model.state_index(obs), int(rng.integers(model.mdp.n_actions))
            obs, reward, terminated, _, _ = env.step(model.actions[a])
            out.append(
                (s, a, model.info["absorbing"] if terminated else model.state_index(obs), np.asarray(reward, float))
            )
            if terminated:
                break
    return out


def _optimal_rollouts_agree(env, model, episodes):
    ranges = solvers.return_ranges(model.problem())
    for i in range(model.n_agents):
        policy = model.mdp.policy_from_occupancy(ranges.best[i])
        report = rollout(env, model, policy, episodes=episodes, seed=i)
        assert report.predicted[i] == pytest.approx(ranges.upper[i], abs=1e-7)
        assert report.agrees(z=3.29), report.table()  # 99.9% per agent: several agents and policies per test
    return ranges


def test_deep_sea_treasure(mo_gym):
    env = mo_gym.make("deep-sea-treasure-v0")
    model = from_gymnasium(env, gamma=GAMMA)
    assert model.route == "enumerate" and model.info["exact"] and model.info["stochastic_pairs"] == 0
    assert model.n_agents == env.unwrapped.reward_dim == 2
    # the model against real steps: deterministic, so every step must match exactly
    for s, a, t, reward in _real_transitions(env, model, episodes=40, seed=0):
        assert model.mdp.P_dense[s, a, t] == 1.0
        np.testing.assert_array_equal(model.rewards[:, s, a], reward)
    ranges = _optimal_rollouts_agree(env, model, episodes=5)
    # per-component optima against the environment's own discounted Pareto front
    front = np.array(env.unwrapped.pareto_front(GAMMA))
    np.testing.assert_allclose(ranges.upper / (1 - GAMMA), front.max(axis=0), rtol=1e-6)


def test_resource_gathering(mo_gym):
    env = mo_gym.make("resource-gathering-v0")
    model = from_gymnasium(env, gamma=GAMMA)
    assert model.route == "enumerate" and model.info["exact"] and model.info["stochastic_pairs"] > 0
    assert model.n_agents == 3
    P = model.mdp.P_dense
    # exact: the only randomness is the enemy's attack, `np_random.random() < 0.1` in `step`
    assert set(np.unique(P[P > 0]).tolist()) == {0.1, 0.9, 1.0}
    # the model against real steps: frequencies and mean rewards of well-visited pairs within 5 s.e.
    transitions = _real_transitions(env, model, episodes=1500, seed=1)
    S, A = model.mdp.n_states, model.mdp.n_actions
    counts = np.zeros((S, A, S))
    reward_sum = np.zeros((model.n_agents, S, A))
    for s, a, t, reward in transitions:
        counts[s, a, t] += 1
        reward_sum[:, s, a] += reward
    visits = counts.sum(axis=2)
    assert (counts[P == 0] == 0).all()  # nothing the model rules out ever happens
    checked = 0
    for s, a in zip(*np.nonzero(visits >= 30)):
        n, p = visits[s, a], P[s, a]
        assert np.all(np.abs(counts[s, a] / n - p) <= 5 * np.sqrt(p * (1 - p) / n) + 1e-12)
        # every reward component lies in [-1, 1], so its standard deviation is at most 1
        assert np.all(np.abs(reward_sum[:, s, a] / n - model.rewards[:, s, a]) <= 5 / np.sqrt(n))
        checked += P[s, a].max() < 1
    assert checked >= 3  # some stochastic pairs were compared
    ranges = _optimal_rollouts_agree(env, model, episodes=400)
    # hand check: the diamond is 5 steps away, so 10 steps there and back: gamma^9 per-step-scaled
    assert ranges.upper[2] / (1 - GAMMA) == pytest.approx(GAMMA**9)


# --------------------------------------------------------------------------- hidden randomness
SLIP = 0.3
_MODULE_RNG = np.random.default_rng(5)  # a generator at the top level of the environment's module


class Slip(gymnasium.Env):
    """Discrete(3) chain: action 1 moves right unless it slips (probability SLIP, drawn by `slips`),
    action 0 stays; reward 1 per step in state 2. Continuing. This one draws from `np_random`."""

    def __init__(self):
        self.observation_space = spaces.Discrete(3)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = 0
        return self.s, {}

    def slips(self):
        return self.np_random.random() < SLIP

    def step(self, action):
        if action == 1 and not self.slips():
            self.s = min(self.s + 1, 2)
        return self.s, float(self.s == 2), False, False, {}


class OwnRandom(Slip):
    def __init__(self):
        super().__init__()
        self.rng = random.Random(0)

    def slips(self):
        return self.rng.random() < SLIP


class RandomModule(Slip):
    def slips(self):
        return random.random() < SLIP


class GlobalNumpy(Slip):
    def slips(self):
        return np.random.random() < SLIP


class RandomStateAttribute(Slip):
    def __init__(self):
        super().__init__()
        self.legacy = np.random.RandomState(0)

    def slips(self):
        return self.legacy.rand() < SLIP


class SecondGenerator(Slip):
    """Draws from `np_random` (a decoy, never mattering) and slips by a second generator kept in a dict."""

    def __init__(self):
        super().__init__()
        self.noise = {"slip": np.random.default_rng(1)}

    def slips(self):
        self.np_random.random()
        return self.noise["slip"].random() < SLIP


class ModuleGenerator(Slip):
    def slips(self):
        return _MODULE_RNG.random() < SLIP


class NewGenerator(Slip):
    """Creates an unseeded generator in every step."""

    def slips(self):
        self.rng = random.Random()
        return self.rng.random() < SLIP


class Firm(Slip):
    def slips(self):
        return False


class SlipWrapper(gymnasium.ActionWrapper):
    """Turns action 1 into 0 with probability SLIP, drawn from the wrapper's own generator."""

    def __init__(self, env):
        super().__init__(env)
        self.rng = np.random.default_rng(7)

    def action(self, action):
        return 0 if action == 1 and self.rng.random() < SLIP else action


HIDDEN = {
    "own random.Random": (OwnRandom, r"`OwnRandom\.rng` \(random\.Random\)"),
    "global numpy.random": (GlobalNumpy, r"the global `numpy\.random`"),
    "RandomState attribute": (
        RandomStateAttribute,
        r"`RandomStateAttribute\.legacy` \(numpy\.random\.RandomState\)",
    ),
    "second Generator": (SecondGenerator, r"`SecondGenerator\.noise\['slip'\]` \(numpy\.random\.Generator\)"),
    "module-level Generator": (ModuleGenerator, r"`test_tabular\._MODULE_RNG`"),
    # fresh entropy: caught as a new generator, or (if the snapshot check's copies happen to differ first)
    # as copies that step differently, and the environment is then explored live within its TimeLimit
    "fresh entropy": (
        lambda: TimeLimit(NewGenerator(), 20),
        "(`NewGenerator.rng` .random.Random., a generator created during the run"
        "|a restored copy steps differently from the original under the same seeds)",
    ),
    "Generator on a wrapper": (lambda: SlipWrapper(Firm()), r"`SlipWrapper\.rng` \(numpy\.random\.Generator\)"),
}


@pytest.mark.parametrize("make, source", HIDDEN.values(), ids=HIDDEN.keys())
def test_hidden_randomness_falls_back_to_sampled_with_a_warning(make, source):
    """Each way of drawing outside `np_random` is caught (never a silent exact model that drops the slip)."""
    n = 150
    before = random.getstate(), np.random.get_state()[1].copy()
    with pytest.warns(ModelWarning, match=f"not modelled exactly: .*{source}"):
        model = from_gymnasium(make(), gamma=0.9, n_samples=n, rng=3)
    assert model.route == "sampled" and not model.info["exact"]
    assert re.search(source, model.info["skipped"]["enumerate"])
    # the process-wide generators are left as they were
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    # the slip is in the estimated model: P(stay | s, 1) within 5 standard errors of 0.3 in states 0 and 1
    P, counts, i = model.mdp.P_dense, model.info["counts"], model.state_index
    for s in (0, 1):
        se = np.sqrt(SLIP * (1 - SLIP) / counts[i(s), 1])
        assert abs(P[i(s), 1, i(s)] - SLIP) <= 5 * se, (s, P[i(s), 1, i(s)])
        assert P[i(s), 0, i(s)] == 1.0


def test_random_module_functions_are_scripted_exactly():
    """`random.random()` (looked up on the module at call time) is answered from the probe's script:
    the slip is modelled exactly, and the module's generator is left as it was."""
    import warnings

    before = random.getstate()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelWarning)
        model = from_gymnasium(RandomModule(), gamma=0.9)
    assert model.route == "enumerate" and model.info["exact"]
    assert model.mdp.P_dense[0, 1, 0] == pytest.approx(SLIP, abs=1e-12)
    assert random.getstate() == before


def test_np_random_alone_stays_exact_without_warning():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelWarning)
        model = from_gymnasium(Slip(), gamma=0.9)
        firm = from_gymnasium(Firm(), gamma=0.9)
    assert model.route == "enumerate" and model.info["exact"]
    assert model.mdp.P_dense[0, 1, 0] == SLIP and model.mdp.P_dense[0, 1, 1] == 1 - SLIP
    assert firm.route == "enumerate" and firm.mdp.P_dense[0, 1, 1] == 1.0


def test_named_enumerate_route_refuses_hidden_randomness():
    with pytest.raises(InvalidProblemError, match=r"route 'enumerate' is not available .*`OwnRandom\.rng`"):
        from_gymnasium(OwnRandom(), gamma=0.9, route="enumerate")


# --------------------------------------------------------------------------- wrappers
class FlipNegate(gymnasium.Wrapper):
    """Swaps actions 0 and 1 and negates the reward (overrides `step`: a general wrapper)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(1 - action)
        return obs, -reward, terminated, truncated, info


def test_frozen_lake_under_transform_reward_is_modelled_scaled():
    from gymnasium.wrappers import TransformReward

    env = TransformReward(gymnasium.make("FrozenLake-v1"), lambda r: 10.0 * r)
    model = from_gymnasium(env, gamma=0.9)
    assert model.route == "model" and model.info["exact"] and model.info["wrappers"] == ["reward"]
    assert model.rewards[0, 14, RIGHT] == pytest.approx(10 / 3)  # the goal w.p. 1/3, reward 10
    plain = env.unwrapped.P
    for s, a in [(0, LEFT), (10, DOWN), (14, DOWN)]:
        assert model.rewards[0, s, a] == pytest.approx(sum(p * 10 * r for p, _, r, _ in plain[s][a]))
    assert model.mdp.P_dense[14, RIGHT, 16] == pytest.approx(1 / 3)


def test_frozen_lake_with_mapped_actions_and_rewards():
    """TransformAction (a -> 3 - a) and TransformReward (-r) are applied to the table of `P`."""
    from gymnasium.wrappers import TransformAction, TransformReward

    env = TransformReward(TransformAction(gymnasium.make("FrozenLake-v1"), lambda a: 3 - a, None), lambda r: -r)
    model = from_gymnasium(env, gamma=0.9)
    assert model.route == "model" and sorted(model.info["wrappers"]) == ["action", "reward"]
    P, R = model.mdp.P_dense, model.rewards[0]
    # user LEFT is the lake's UP: from 14 it slips right onto the goal w.p. 1/3 (reward -1 there)
    assert P[14, LEFT, 16] == pytest.approx(1 / 3) and R[14, LEFT] == pytest.approx(-1 / 3)
    assert P[14, UP, 16] == 0.0 and R[14, UP] == 0.0  # user UP is the lake's LEFT: never the goal from 14
    np.testing.assert_allclose(P[14, UP, [13, 10, 14]], [1 / 3, 1 / 3, 1 / 3])  # left, or slips up / down (a wall)


def test_general_wrapper_is_modelled_by_stepping_it():
    """FlipNegate around Slip: exact model of the wrapped env; exact evaluation agrees with a rollout."""
    env = FlipNegate(Slip())
    model = from_gymnasium(env, gamma=0.9)
    assert model.route == "enumerate" and model.info["exact"]
    P, R = model.mdp.P_dense, model.rewards[0]
    assert P[0, 0, 1] == 1 - SLIP and P[0, 1, 0] == 1.0  # user action 0 is the env's "move"
    assert R[model.state_index(2)].tolist() == [-1.0, -1.0]
    # the policy best for the (negated) reward: stay away from state 2
    ranges = solvers.return_ranges(model.problem())
    policy = model.mdp.policy_from_occupancy(ranges.best[0])
    predicted = model.mdp.evaluate(policy, model.rewards)
    report = rollout(env, model, policy, episodes=300, seed=0, reward="env")
    assert report.predicted[0] == pytest.approx(predicted[0]) and report.agrees(z=3.29), report.table()
    # and the worst policy (rushing to 2), whose return is far from 0
    policy = model.mdp.policy_from_occupancy(ranges.worst[0])
    report = rollout(env, model, policy, episodes=300, seed=1, reward="env")
    assert report.predicted[0] < -0.5 and report.agrees(z=3.29), report.table()


def test_refused_wrapper_is_named():
    from gymnasium.wrappers import StickyAction

    with pytest.raises(InvalidProblemError, match="the wrapper StickyAction cannot be modelled"):
        from_gymnasium(StickyAction(gymnasium.make("FrozenLake-v1"), 0.25), gamma=0.9)


class SlipProtocol(Slip):
    """Slip handing over its exact model: states 0, 1, 2, actions stay / move."""

    def tabular_model(self, gamma):
        P = np.zeros((3, 2, 3))
        for s in range(3):
            P[s, 0, s] = 1.0
            P[s, 1, min(s + 1, 2)] += 1 - SLIP
            P[s, 1, s] += SLIP
        R = np.zeros((1, 3, 2))
        R[0, 2] = 1.0
        R[0, 1, 1] = 1 - SLIP  # reward 1 in state 2 after the step
        return TabularMDP(P, rho=np.eye(3)[0], gamma=gamma), R, [0, 1, 2]


def test_protocol_route_is_skipped_under_a_value_wrapper():
    from gymnasium.wrappers import TransformReward

    env = TransformReward(SlipProtocol(), lambda r: -r)
    plain = from_gymnasium(env.env, gamma=0.9)
    model = from_gymnasium(env, gamma=0.9)
    assert plain.route == "protocol" and model.route == "enumerate" and model.info["exact"]
    assert "describes the unwrapped environment" in model.info["skipped"]["protocol"]
    np.testing.assert_allclose(model.rewards, -plain.rewards, atol=1e-12)
    np.testing.assert_allclose(model.mdp.P_dense, plain.mdp.P_dense, atol=1e-15)


def test_env_checker_still_wraps_the_users_env():
    """Conversion copies the modelled layers and leaves the user's chain (and its env checker) as it was."""
    from gymnasium.utils.env_checker import check_env
    from gymnasium.wrappers import OrderEnforcing, PassiveEnvChecker, TransformReward

    env = gymnasium.make("FrozenLake-v1")
    chain = [type(w) for w in _layers(env)]
    assert PassiveEnvChecker in chain
    from_gymnasium(env, gamma=0.9)
    assert [type(w) for w in _layers(env)] == chain
    env = TransformReward(PassiveEnvChecker(OrderEnforcing(Slip())), lambda r: 2 * r)
    model = from_gymnasium(env, gamma=0.9)  # copies step through TransformReward, skipping the transparent layers
    assert model.route == "enumerate" and model.rewards[0, 2].tolist() == [2.0, 2.0]
    assert [type(w) for w in _layers(env)] == [TransformReward, PassiveEnvChecker, OrderEnforcing]
    assert not env.env.checked_step  # the user's own checker has not been used up by the conversion
    for raw in (Slip(), Structured("dict"), BoxGrid()):
        check_env(raw, skip_render_check=True)


def _layers(env):
    out = []
    while isinstance(env, gymnasium.Wrapper):
        out.append(env)
        env = env.env
    return out


# --------------------------------------------------------------------------- structured observation spaces
class Structured(gymnasium.Env):
    """State (x in 0..2, y in 0..1): action 1 moves x up (mod 3) w.p. 0.3, action 0 toggles y.
    Reward x. Observed as a Dict, a Tuple or a MultiDiscrete."""

    SPACES = {
        "dict": spaces.Dict({"x": spaces.Discrete(3), "y": spaces.MultiDiscrete([2])}),
        "tuple": spaces.Tuple((spaces.Discrete(3), spaces.Discrete(2))),
        "multidiscrete": spaces.MultiDiscrete([3, 2]),
    }

    def __init__(self, kind):
        self.kind = kind
        self.observation_space = self.SPACES[kind]
        self.action_space = spaces.Discrete(2)

    def _obs(self):
        if self.kind == "dict":
            return {"x": self.x, "y": np.array([self.y])}
        if self.kind == "tuple":
            return (self.x, self.y)
        return np.array([self.x, self.y])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.y = 0, 0
        return self._obs(), {}

    def step(self, action):
        if action == 0:
            self.y = 1 - self.y
        elif self.np_random.random() < 0.3:
            self.x = (self.x + 1) % 3
        return self._obs(), float(self.x), False, False, {}


@pytest.mark.parametrize("kind", ["dict", "tuple", "multidiscrete"])
def test_structured_observations_are_indexed_directly(kind):
    env = Structured(kind)
    model = from_gymnasium(env, gamma=0.9)
    assert model.route == "enumerate" and model.info["exact"] and model.mdp.n_states == 6
    env.reset(seed=0)
    s0 = model.state_index(env._obs())
    env.x, env.y = 1, 1
    s11 = model.state_index(env._obs())
    env.x = 2
    s21 = model.state_index(env._obs())
    assert model.mdp.P_dense[s11, 1, s21] == 0.3 and model.mdp.P_dense[s11, 1, s11] == 0.7
    # reward x after the step: toggling keeps x = 2; moving wraps to 0 w.p. 0.3
    assert model.rewards[0, s21].tolist() == pytest.approx([2.0, 0.7 * 2]) and model.mdp.rho[s0] == 1.0


def test_flatten_observation_is_accepted():
    from gymnasium.wrappers import FlattenObservation

    model = from_gymnasium(FlattenObservation(Structured("dict")), gamma=0.9)
    assert model.route == "enumerate" and model.mdp.n_states == 6
    assert model.observations[0] == (1, 0, 0, 1, 0)  # one-hot x = 0, then y's one-hot


class BoxGrid(Slip):
    """Slip observed as a float Box (the position as a float)."""

    def __init__(self):
        super().__init__()
        self.observation_space = spaces.Box(0.0, 2.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        s, info = super().reset(seed=seed)
        return np.array([s], np.float32), info

    def step(self, action):
        s, *rest = super().step(action)
        return np.array([s], np.float32), *rest


class ToDiscrete(gymnasium.ObservationWrapper):
    def __init__(self, env):
        super().__init__(env)
        self.observation_space = spaces.Discrete(3)

    def observation(self, observation):
        return int(round(float(observation[0])))


def test_box_to_discrete_wrapper_is_accepted():
    with pytest.raises(InvalidProblemError, match="continuous observation space"):
        from_gymnasium(BoxGrid(), gamma=0.9)
    model = from_gymnasium(ToDiscrete(BoxGrid()), gamma=0.9)
    assert model.route == "enumerate" and model.observations == [0, 1, 2]
    assert model.mdp.P_dense[1, 1, 2] == 1 - SLIP


# --------------------------------------------------------------------------- reset samples
class ManyStarts(gymnasium.Env):
    """`n` start states drawn uniformly with `random.sample` (not scripted, so rho can only be sampled); every step stays."""

    def __init__(self, n):
        self.observation_space = spaces.Discrete(n)
        self.action_space = spaces.Discrete(1)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.s = random.sample(range(self.observation_space.n), 1)[0]
        return self.s, {}

    def step(self, action):
        return self.s, 0.0, False, False, {}


def test_reset_samples_is_a_parameter_with_a_warning_for_late_new_starts():
    with pytest.warns(ModelWarning, match=r"new ones still appeared .*raise `reset_samples`"):
        model = from_gymnasium(ManyStarts(200), gamma=0.9, n_samples=2, reset_samples=100, rng=0)
    assert model.info["rho"] == "sampled from 100 resets" and model.info["reset_samples"] == 100
    assert model.info["start_states"] == model.mdp.n_states < 100 and model.info["unseen_start_mass"] > 0.3
    with pytest.warns(ModelWarning) as record:
        model = from_gymnasium(ManyStarts(3), gamma=0.9, n_samples=2, reset_samples=300, rng=0)
    assert not any("reset_samples" in str(w.message) for w in record)  # only the hidden-randomness warning
    assert model.mdp.n_states == 3 and np.all(np.abs(model.mdp.rho - 1 / 3) < 5 * np.sqrt(2 / 9 / 300))
    with pytest.raises(InvalidProblemError, match="`reset_samples` must be a positive integer; got 0"):
        from_gymnasium(Slip(), gamma=0.9, reset_samples=0)
