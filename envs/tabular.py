"""From a Gymnasium environment to a tabular model: :func:`from_gymnasium`.

One function, four routes, tried in this order with ``route="auto"`` (the route taken is
``EnvModel.route``; why each earlier route was skipped is ``EnvModel.info["skipped"]``):

``"protocol"``
    ``env.unwrapped.tabular_model(gamma)`` exists and returns
    ``(TabularMDP, rewards (n, S, A), observations)`` with ``observations[s]`` the
    observation of state ``s`` (an int or a tuple of ints). Any environment can implement
    this to hand over its exact model; ``envs.attention_env.AttentionAllocation`` does.
``"model"``
    ``env.unwrapped.P`` in the toy-text format ``P[s][a] = [(prob, next_s, reward,
    terminated), ...]`` (FrozenLake, CliffWalking, Taxi). Exact. Duplicate next states are
    summed; ``r(s, a) = sum prob * reward``; ``rho`` is ``env.unwrapped.initial_state_distrib``.
``"enumerate"``
    The environment's state can be snapshotted and restored (a deep copy of
    ``env.unwrapped.__dict__`` that steps identically to the original) and the observation
    is Markov. States are found by breadth-first search from ``reset`` over
    ``(observation, action)``, restoring the snapshot of the state before every step.
    Exact: randomness is accepted only through ``env.unwrapped.np_random``, which is
    replaced by a scripted generator whose ``random``/``uniform``/``integers``/``choice``
    draws are fixed numbers ``u`` in ``[0, 1)``; the outcome is mapped on a grid of ``u``
    and every change point is located to the last bit by bisection over doubles, so each
    outcome's probability is the exact length of its interval of ``u`` (the
    environment's own comparisons, e.g. ``np_random.random() < p``, give ``p``).
    Caveat: a piece of ``u`` narrower than ``1 / PROBE_GRID`` that sits between two grid
    points with the *same* outcome is not seen; code of the form ``u < p`` or a
    categorical draw never does that. A step whose randomness comes from elsewhere (another
    generator, the global ``numpy.random``, ``random``), or that needs more than
    ``PROBE_BUDGET`` probe runs, makes this route fall back to ``"sampled"`` (the reason is
    in ``info["skipped"]``).
``"sampled"``
    ``n_samples`` sampled transitions per ``(state, action)``: from restored snapshots when
    possible, otherwise by exploring the live environment (least-tried action first,
    resetting at the end of each episode). ``info`` reports ``min_count`` (the fewest
    samples of any pair), ``max_std_error`` (largest standard error of an estimated
    probability, ``sqrt(p (1 - p) / count)``) and ``max_reward_std_error``. States reached
    with a probability too small to show up in the samples are missing from the model.

Spaces: observations must be ``Discrete``, ``MultiDiscrete`` or an integer ``Box`` with
finite bounds (they become ints or tuples of ints); actions ``Discrete``,
``MultiDiscrete`` or a small integer ``Box`` (model action ``a`` is the environment action
``EnvModel.actions[a]``). Anything else raises :class:`InvalidProblemError` naming the space.

Rewards: a scalar reward gives one agent; a vector reward (MO-Gymnasium environments, with
``reward_dim``) gives one agent per component.

Termination and truncation. Truncation (``TimeLimit``) is ignored: the model is the
stationary dynamics, and discounting plays the role of a horizon. With
``on_termination="absorb"`` (default) every terminating transition goes to ONE extra
absorbing state (the last state, observation ``None``) that loops on itself with reward 0
under every action; the terminating step's own reward is kept in ``r(s, a)``. With
``gamma < 1`` this is the usual episodic discounted return. With ``gamma = 1`` (average
reward) it is rarely what you want: the long-run average of any policy that terminates is
0, and every such policy looks the same. For average reward on an episodic task use
``on_termination="reset"``: terminating transitions then go straight back to ``rho`` (no
absorbing state), so the average is taken over a never-ending sequence of episodes (the
renewal-reward rate: expected episode reward / expected episode length).
:func:`policyagg.envs.rollout.rollout` follows the same convention.

Examples
--------
>>> import gymnasium
>>> model = from_gymnasium(gymnasium.make("FrozenLake-v1"), gamma=0.95)
>>> model.route, model.mdp.n_states, model.info["absorbing"]
('model', 17, 16)
"""

from __future__ import annotations

import copy
import importlib
import itertools
import random as _pyrandom
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

import gymnasium
import numpy as np
import scipy.sparse as sp
from gymnasium import spaces

from policyagg.errors import InvalidProblemError, check_count
from policyagg.mdp import TabularMDP
from policyagg.problem import Problem

ROUTES = ("protocol", "model", "enumerate", "sampled")
ON_TERMINATION = ("absorb", "reset")
#: Grid of draws ``u = k / PROBE_GRID`` on which a stochastic step is mapped before bisection.
PROBE_GRID = 32
#: Most restored steps spent on the exact distribution of one ``(state, action)``.
PROBE_BUDGET = 20_000
#: Resets sampled for ``rho`` when neither the environment nor a probed reset gives it.
RESET_SAMPLES = 500
#: Most actions of a ``MultiDiscrete`` or integer ``Box`` action space.
MAX_ACTIONS = 10_000
#: Probabilities of two outcome distributions closer than this are the same.
_SAME_PROB = 1e-12


# --------------------------------------------------------------------------- the model
@dataclass(frozen=True, eq=False)
class EnvModel:
    """A tabular model of a Gymnasium environment, built by :func:`from_gymnasium`.

    ``observations[s]`` is the observation of state ``s`` as an int or a tuple of ints; the
    absorbing state (if any) is the last state and has observation ``None``. ``actions[a]``
    is the environment action of model action ``a``. ``info`` holds ``absorbing`` (index
    or ``None``), ``on_termination``, ``rho`` (where the initial distribution came from),
    ``exact``, ``skipped`` (route -> why it was not used) and the route's own figures.
    """

    mdp: TabularMDP
    rewards: np.ndarray  # (n, S, A)
    observations: list
    route: str
    info: dict
    actions: tuple = ()
    _index: dict = field(init=False, repr=False)

    def __post_init__(self):
        rewards = np.array(self.rewards, dtype=float)
        if rewards.ndim == 2:
            rewards = rewards[None]
        S, A = self.mdp.n_states, self.mdp.n_actions
        if rewards.ndim != 3 or rewards.shape[1:] != (S, A):
            raise InvalidProblemError(f"`rewards` must have shape (n, S, A) = (n, {S}, {A}); got {np.shape(self.rewards)}")
        if len(self.observations) != S:
            raise InvalidProblemError(f"`observations` must have one entry per state ({S}); got {len(self.observations)}")
        rewards.flags.writeable = False
        observations = [None if o is None else _key(o) for o in self.observations]
        index = {o: s for s, o in enumerate(observations) if o is not None}
        if len(index) != sum(o is not None for o in observations):
            raise InvalidProblemError("`observations` must be distinct: two states share an observation")
        actions = tuple(self.actions) if len(self.actions) else tuple(range(A))
        if len(actions) != A:
            raise InvalidProblemError(f"`actions` must have one entry per action ({A}); got {len(actions)}")
        for name, value in (("rewards", rewards), ("observations", observations), ("actions", actions), ("_index", index)):
            object.__setattr__(self, name, value)

    @property
    def n_agents(self) -> int:
        return self.rewards.shape[0]

    def state_index(self, observation) -> int:
        """The state of an observation; :class:`InvalidProblemError` naming it if the model has none."""
        key = _key(observation)
        try:
            return self._index[key]
        except KeyError:
            raise InvalidProblemError(
                f"observation {key!r} is not a state of this model ({len(self._index)} states, route "
                f"{self.route!r}); the environment reached a state the model never saw"
            ) from None

    def problem(self, *, names=None, rewards=None, **options) -> Problem:
        """``Problem(mdp, rewards or self.rewards, names=names, **options)``."""
        return Problem(self.mdp, self.rewards if rewards is None else rewards, names=names, **options)


def make_env(env, **kwargs) -> gymnasium.Env:
    """``env`` itself, or ``gymnasium.make(env, **kwargs)`` for a registered id.

    Ids of MO-Gymnasium (imported only if needed and installed) are made with
    ``mo_gymnasium.make`` (its env checker knows vector rewards); ``policyagg/...`` ids
    import :mod:`envs`, which registers them.
    """
    if isinstance(env, gymnasium.Env):
        return env
    if not isinstance(env, str):
        raise InvalidProblemError(f"`env` must be a gymnasium.Env or a registered id; got {type(env).__name__}")
    spec = _find_spec(env)
    if spec is None:
        try:
            importlib.import_module("envs" if env.startswith("policyagg/") else "mo_gymnasium")
        except ImportError:
            pass
        spec = _find_spec(env)
    if spec is not None and isinstance(spec.entry_point, str) and spec.entry_point.startswith("mo_gymnasium"):
        import mo_gymnasium

        return mo_gymnasium.make(env, **kwargs)
    try:
        return gymnasium.make(env, **kwargs)  # also resolves an id without its version
    except gymnasium.error.Error as exc:
        raise InvalidProblemError(f"`env` {env!r} is not a registered Gymnasium id (nor an MO-Gymnasium one): {exc}") from exc


def _find_spec(env_id: str):
    try:
        return gymnasium.spec(env_id)
    except gymnasium.error.Error:
        return None


# --------------------------------------------------------------------------- entry point
def from_gymnasium(
    env,
    *,
    gamma: float,
    route: str = "auto",
    on_termination: str = "absorb",
    n_samples: int = 200,
    max_states: int = 100_000,
    allow_multichain: bool = False,
    rng=None,
) -> EnvModel:
    """A tabular model of ``env`` (an instance or a registered id); see the module docstring.

    Parameters
    ----------
    env : gymnasium.Env or str
    gamma : float in (0, 1]
        Discount of the model's MDP; 1 = average reward (read the module docstring on
        termination first).
    route : "auto", "protocol", "model", "enumerate" or "sampled"
        ``"auto"`` takes the first available in that order; a named route that is not
        available raises :class:`InvalidProblemError` saying why.
    on_termination : "absorb" or "reset"
        Where terminating transitions go: one absorbing zero-reward state, or back to ``rho``.
    n_samples : int
        Sampled transitions per ``(state, action)`` (route ``"sampled"`` only).
    max_states : int
        Refuse (with an error) environments with more reachable states.
    allow_multichain : bool
        Passed to :class:`TabularMDP` (only matters with ``gamma = 1``).
    rng : seed or numpy Generator
        Seeds of sampled transitions and resets.

    Only route ``"sampled"`` without snapshots (and ``rho`` sampled from resets when the
    environment can be neither asked nor copied) steps ``env`` itself; otherwise the routes
    work on copies of ``env.unwrapped`` or read its attributes.
    """
    ctx = _Context(env, gamma, on_termination, n_samples, max_states, allow_multichain, rng, route)
    order = ROUTES if route == "auto" else (route,)
    skipped = {}
    for name in order:
        try:
            model = _BUILDERS[name](ctx)
        except _Unavailable as exc:
            if route != "auto":
                raise InvalidProblemError(f"route {name!r} is not available for {ctx.label}: {exc}") from None
            skipped[name] = str(exc)
            continue
        model.info["skipped"] = skipped
        return model
    raise AssertionError("route 'sampled' never reports itself unavailable in auto mode")  # pragma: no cover


class _Unavailable(Exception):
    """This route cannot build the model (the message says why)."""


class _Context:
    """Validated arguments and what the routes learn about the environment, shared between them."""

    def __init__(self, env, gamma, on_termination, n_samples, max_states, allow_multichain, rng, route):
        if route not in ("auto",) + ROUTES:
            raise InvalidProblemError(f"`route` must be 'auto' or one of {ROUTES}; got {route!r}")
        if on_termination not in ON_TERMINATION:
            raise InvalidProblemError(f"`on_termination` must be one of {ON_TERMINATION}; got {on_termination!r}")
        check_count("n_samples", n_samples, 2)
        check_count("max_states", max_states, 1)
        self.env = make_env(env)
        self.base = self.env.unwrapped
        spec = getattr(self.env, "spec", None)
        self.label = spec.id if spec is not None else type(self.base).__name__
        self.gamma = gamma
        self.on_termination = on_termination
        self.n_samples = int(n_samples)
        self.max_states = int(max_states)
        self.allow_multichain = allow_multichain
        self.rng = np.random.default_rng(rng)
        self._snapshot = None
        self._snapshot_reason = None

    # ------------------------------------------------------------- spaces (lazily checked)
    def check_spaces(self) -> list:
        """The environment's actions; InvalidProblemError for unsupported spaces."""
        _check_observation_space(self.base.observation_space, self.label)
        return _action_list(self.base.action_space, self.label)

    def snapshot(self):
        """A verified snapshot of a fresh copy of ``env.unwrapped`` (before any reset), or ``None``."""
        if self._snapshot is None and self._snapshot_reason is None:
            try:
                self._snapshot = _Snapshot.take(self.base)
                _verify_snapshots(self._snapshot, self.check_spaces())
            except _SnapshotError as exc:
                self._snapshot, self._snapshot_reason = None, str(exc)
        return self._snapshot

    def finish(self, P_rows, P_cols, P_probs, reward_sa, rho, observations, actions, route, info) -> EnvModel:
        mdp, rewards, observations, absorbing = _assemble(
            P_rows, P_cols, P_probs, reward_sa, rho, observations, len(actions),
            gamma=self.gamma, on_termination=self.on_termination, allow_multichain=self.allow_multichain,
        )
        info = {"absorbing": absorbing, "on_termination": self.on_termination, **info}
        return EnvModel(mdp, rewards, observations, route, info, tuple(actions))


# --------------------------------------------------------------------------- route: protocol
def _route_protocol(ctx: _Context) -> EnvModel:
    method = getattr(ctx.base, "tabular_model", None)
    if not callable(method):
        raise _Unavailable("the environment has no `tabular_model(gamma)` method")
    out = method(ctx.gamma)
    if not (isinstance(out, tuple) and len(out) == 3 and isinstance(out[0], TabularMDP)):
        raise InvalidProblemError(
            f"{ctx.label}.tabular_model(gamma) must return (TabularMDP, rewards (n, S, A), observations); got {type(out).__name__}"
        )
    mdp, rewards, observations = out
    if mdp.gamma != float(ctx.gamma):
        raise InvalidProblemError(f"{ctx.label}.tabular_model({ctx.gamma}) returned an MDP with gamma = {mdp.gamma}")
    actions = _action_list(ctx.base.action_space, ctx.label)
    if len(actions) != mdp.n_actions:
        raise InvalidProblemError(
            f"{ctx.label}.tabular_model returned an MDP with {mdp.n_actions} actions; the action space "
            f"{ctx.base.action_space} has {len(actions)}"
        )
    absorbing = next((s for s, o in enumerate(observations) if o is None), None)
    info = {"absorbing": absorbing, "on_termination": None, "rho": "tabular_model", "exact": True}
    return EnvModel(mdp, rewards, list(observations), "protocol", info, tuple(actions))


# --------------------------------------------------------------------------- route: model
#: Flags under which a toy-text ``P`` does not describe ``step`` (attribute -> why).
_MODEL_INCOMPLETE = {"fickle_passenger": "Taxi's fickle passenger changes destination in `step`, outside `P`"}


def _route_model(ctx: _Context) -> EnvModel:
    base = ctx.base
    P = getattr(base, "P", None)
    if P is None:
        raise _Unavailable("the environment has no toy-text model `env.unwrapped.P`")
    for flag, why in _MODEL_INCOMPLETE.items():
        if getattr(base, flag, False):
            raise _Unavailable(f"`P` is incomplete: {why}")
    if not (isinstance(base.observation_space, spaces.Discrete) and isinstance(base.action_space, spaces.Discrete)):
        raise _Unavailable("`P` needs Discrete observation and action spaces")
    S, A = int(base.observation_space.n), int(base.action_space.n)
    first_obs, first_action = int(base.observation_space.start), int(base.action_space.start)
    try:  # flattening the nested lists needs one pass over the entries; the matrix is built from arrays
        entries = [
            (s * A + a, *entry[:4])
            for s in range(S)
            for a in range(A)
            for entry in P[s + first_obs][a + first_action]
        ]
        table = np.array(entries, dtype=float).reshape(-1, 5)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise _Unavailable(f"`P` is not in the toy-text format P[s][a] = [(prob, next_s, reward, terminated), ...] ({exc})") from exc
    rows = table[:, 0].astype(np.int64)
    nxt = table[:, 2].astype(np.int64) - first_obs
    if nxt.size and (nxt.min() < 0 or nxt.max() >= S):
        raise _Unavailable("`P` has a next state outside the observation space")
    cols = np.where(table[:, 4] != 0, -1, nxt)
    reward_sa = np.bincount(rows, weights=table[:, 1] * table[:, 3], minlength=S * A)[None]
    rho, how = _initial_distribution(ctx, {first_obs + s: s for s in range(S)})
    observations = [first_obs + s for s in range(S)]
    return ctx.finish(rows, cols, table[:, 1], reward_sa, rho, observations, list(range(first_action, first_action + A)),
                      "model", {"rho": how, "exact": True})


def _initial_distribution(ctx: _Context, index: dict) -> tuple[np.ndarray, str]:
    """``rho`` over the states of ``index`` (observation -> state): from the env, a probed reset, or sampled."""
    S = len(index)
    for name in ("initial_state_distrib", "isd"):
        rho = getattr(ctx.base, name, None)
        if rho is not None and np.shape(rho) == (S,):
            return np.asarray(rho, dtype=float), f"env.unwrapped.{name}"
    snapshot = ctx.snapshot()
    if snapshot is not None:
        try:
            dist, _ = _probe(snapshot, _reset_outcome, ctx.rng)
            rho = np.zeros(S)
            for key, p in dist.items():
                if key not in index:
                    raise _Unavailable(f"`reset` returned observation {key!r}, which `P` does not have")
                rho[index[key]] += p
            return rho, "reset, probed exactly"
        except _ProbeFailed:
            pass
    counts = _sample_resets(ctx)
    rho = np.zeros(S)
    for key, c in counts.items():
        if key not in index:
            raise _Unavailable(f"`reset` returned observation {key!r}, which `P` does not have")
        rho[index[key]] += c
    return rho / rho.sum(), f"sampled from {RESET_SAMPLES} resets"


def _sample_resets(ctx: _Context) -> Counter:
    """Observation counts of :data:`RESET_SAMPLES` seeded resets (of copies when possible)."""
    seeds = ctx.rng.integers(2**62, size=RESET_SAMPLES)
    snapshot = ctx.snapshot()
    counts = Counter()
    for seed in seeds:
        env = ctx.env if snapshot is None else snapshot.restore()
        obs, _ = env.reset(seed=int(seed))
        counts[_key(obs)] += 1
    return counts


# --------------------------------------------------------------------------- snapshots
class _SnapshotError(Exception):
    pass


class _Snapshot:
    """The ``__dict__`` of an environment, frozen once; :meth:`restore` gives an independent copy.

    The dict is copied rather than the object so that ``__getstate__`` hooks (``EzPickle``
    rebuilds a *fresh* environment from its constructor arguments) are bypassed.
    """

    def __init__(self, cls, payload):
        self.cls, self.payload = cls, payload

    @classmethod
    def take(cls, env) -> "_Snapshot":
        state = getattr(env, "__dict__", None)
        if state is None:
            raise _SnapshotError(f"{type(env).__name__} has no __dict__ to copy")
        try:
            return cls(type(env), copy.deepcopy(state))
        except Exception as exc:  # noqa: BLE001 - any copying failure means: no snapshots
            raise _SnapshotError(f"its state cannot be copied ({type(exc).__name__}: {exc})") from exc

    def restore(self):
        env = object.__new__(self.cls)
        env.__dict__.update(copy.deepcopy(self.payload))
        return env


def _verify_snapshots(snapshot: _Snapshot, actions) -> None:
    """A snapshot taken mid-episode must step exactly like the environment it was taken from."""
    try:
        env = snapshot.restore()
        _seed_all(env, 0)
        env.reset(seed=0)
        for t in range(2):
            _, _, terminated, _, _ = env.step(actions[t % len(actions)])
            if terminated:
                _seed_all(env, 1)
                env.reset()
        copy_ = _Snapshot.take(env).restore()
        for t in range(3):
            _seed_all(env, 10 + t)
            _seed_all(copy_, 10 + t)
            action = actions[(t + 1) % len(actions)]
            a, b = _outcome(env.step(action)), _outcome(copy_.step(action))
            if a != b:
                raise _SnapshotError(f"a restored copy steps differently from the original ({a} vs {b})")
            if a[2]:
                break
    except _SnapshotError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a restored copy means: not restorable
        raise _SnapshotError(f"a restored copy fails ({type(exc).__name__}: {exc})") from exc


_RNG_TYPES = (np.random.Generator, np.random.RandomState, _pyrandom.Random)


def _other_rngs(env) -> list[str]:
    """Attributes of ``env`` holding a random generator other than ``np_random``."""
    return [name for name, value in vars(env).items() if name != "_np_random" and isinstance(value, _RNG_TYPES)]


def _seed_all(env, seed: int, np_random=None) -> None:
    """Give ``env`` the generator ``np_random`` (or one seeded with ``seed``) and reseed its other generators."""
    env.np_random = np.random.default_rng(seed) if np_random is None else np_random
    for i, name in enumerate(_other_rngs(env)):
        value = getattr(env, name)
        child = int(np.random.default_rng([seed, i]).integers(2**32))
        if isinstance(value, np.random.Generator):
            setattr(env, name, np.random.default_rng(child))
        elif isinstance(value, np.random.RandomState):
            setattr(env, name, np.random.RandomState(child))
        else:
            setattr(env, name, _pyrandom.Random(child))


def _outcome(step_result) -> tuple:
    """``(observation key, reward tuple, terminated)`` of a ``step`` return."""
    obs, reward, terminated, _truncated, _info = step_result
    reward = np.asarray(reward, dtype=float).ravel()
    return _key(obs), tuple(reward.tolist()), bool(terminated)


def _reset_outcome(env):
    obs, _ = env.reset()
    return _key(obs)


# --------------------------------------------------------------------------- exact probing
class _ProbeSignal(BaseException):
    """Raised through the environment's code (BaseException: a broad ``except Exception`` in it cannot swallow it)."""


class _NeedDraw(_ProbeSignal):
    pass


class _Unprobeable(_ProbeSignal):
    pass


class _ProbeFailed(Exception):
    pass


class _ProbeRNG:
    """Stands in for ``env.np_random``: every draw consumes one scripted ``u`` in ``[0, 1)``.

    ``random``/``uniform`` return ``u`` (scaled); ``integers`` and ``choice`` map ``u`` to
    the same distribution numpy samples from (uniform, or the ``p`` CDF as numpy inverts it).
    Any other use of the generator raises :class:`_Unprobeable`.
    """

    def __init__(self, draws, filler=None):
        self._draws = draws
        self._filler = filler  # the value of draws past the script (None: ask for more)
        self.used = 0

    def _take(self, count: int) -> np.ndarray:
        if self.used + count > len(self._draws):
            if self._filler is None:
                raise _NeedDraw()
            self._draws = list(self._draws) + [self._filler] * (self.used + count - len(self._draws))
        out = np.asarray(self._draws[self.used : self.used + count], dtype=float)
        self.used += count
        return out

    def random(self, size=None, dtype=np.float64, out=None):
        if out is not None:
            raise _Unprobeable("Generator.random(out=...)")
        if size is None:
            return float(self._take(1)[0])
        shape = (size,) if np.isscalar(size) else tuple(size)
        return self._take(int(np.prod(shape))).reshape(shape).astype(dtype)

    def uniform(self, low=0.0, high=1.0, size=None):
        if not (np.isscalar(low) and np.isscalar(high)):
            raise _Unprobeable("Generator.uniform with array bounds")
        return low + (high - low) * self.random(size)

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        if size is not None or not (np.isscalar(low) and (high is None or np.isscalar(high))):
            raise _Unprobeable("Generator.integers with a size or array bounds")
        low, high = (0, low) if high is None else (low, high)
        n = int(high) - int(low) + (1 if endpoint else 0)
        return dtype(int(low) + min(int(self.random() * n), n - 1))

    def choice(self, a, size=None, replace=True, p=None, axis=0, shuffle=True):
        if size is not None:
            raise _Unprobeable("Generator.choice with a size")
        pool = np.arange(a) if np.isscalar(a) else np.asarray(a)
        n = len(pool)
        u = self.random()
        if p is None:
            return pool[min(int(u * n), n - 1)]
        cdf = np.cumsum(np.asarray(p, dtype=float))
        cdf /= cdf[-1]
        return pool[int(cdf.searchsorted(u, side="right"))]

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise _Unprobeable(f"Generator.{name}")


_ONE_MINUS = float(np.nextafter(1.0, 0.0))


def _bits(u: float) -> int:
    return int(np.float64(u).view(np.int64))


def _from_bits(i: int) -> float:
    return float(np.int64(i).view(np.float64))


def _same(d1: dict, d2: dict) -> bool:
    return d1.keys() == d2.keys() and all(abs(d1[k] - d2[k]) <= _SAME_PROB for k in d1)


def _probe(snapshot: _Snapshot, call, rng, *, budget: int = PROBE_BUDGET) -> tuple[dict, dict]:
    """Exact distribution ``{outcome: probability}`` of ``call(env)`` on restored copies, and one
    resulting environment per outcome (with a real generator again).

    Raises :class:`_ProbeFailed` when the randomness does not all come from
    ``env.np_random`` (two complete runs, with the other generators of the environment and
    the global ``numpy.random`` and ``random`` states reseeded differently, differ), when the
    generator is used in an unsupported way, or past ``budget`` runs.
    """
    runs = 0
    envs = {}

    def run(prefix, seed=0, filler=None):
        """``(outcome or None if more draws are needed, number of draws used)``."""
        nonlocal runs
        runs += 1
        if runs > budget:
            raise _ProbeFailed(f"more than {budget} restored steps for one exact distribution")
        env = snapshot.restore()
        probe = _ProbeRNG(prefix, filler)
        _seed_all(env, seed, np_random=probe)
        try:
            outcome = call(env)
        except _NeedDraw:
            return None, probe.used
        except _Unprobeable as exc:
            raise _ProbeFailed(f"the step draws with {exc}, which cannot be enumerated exactly") from None
        if outcome not in envs:
            env.np_random = np.random.default_rng(int(rng.integers(2**62)))
            envs[outcome] = env
        return outcome, probe.used

    def hidden_check():
        """Two complete runs (every draw 1/2) with all other sources of randomness reseeded differently."""
        results = []
        np_state, py_state = np.random.get_state(), _pyrandom.getstate()
        try:
            for seed in (1, 2):
                np.random.seed(seed)
                _pyrandom.seed(seed)
                results.append(run([], seed, filler=0.5))
        finally:
            np.random.set_state(np_state)
            _pyrandom.setstate(py_state)
        if results[0] != results[1]:
            raise _ProbeFailed("the step is random beyond `env.unwrapped.np_random` (two restored steps differ)")
        return results[0]

    def distribution(prefix) -> dict:
        outcome, _ = run(prefix)
        if outcome is not None:
            return {outcome: 1.0}
        memo = {}

        def at(i):
            if i not in memo:
                memo[i] = distribution(prefix + [_from_bits(i)])
            return memo[i]

        def refine(lo, hi):  # at(lo) != at(hi): the change points in (lo, hi], in order
            if hi - lo == 1:
                return [hi]
            mid = (lo + hi) // 2
            out = []
            if not _same(at(lo), at(mid)):
                out += refine(lo, mid)
            if not _same(at(mid), at(hi)):
                out += refine(mid, hi)
            return out

        grid = [_bits(k / PROBE_GRID) for k in range(PROBE_GRID)] + [_bits(_ONE_MINUS)]
        starts = [grid[0]]
        for lo, hi in zip(grid, grid[1:]):
            if not _same(at(lo), at(hi)):
                starts += refine(lo, hi)
        ends = [_from_bits(i) for i in starts[1:]] + [1.0]
        total = defaultdict(float)
        for start, end in zip(starts, ends):
            width = end - _from_bits(start)
            for outcome, p in at(start).items():
                total[outcome] += width * p
        return dict(total)

    outcome, used = hidden_check()
    if used == 0:  # deterministic: the check's run was the whole story
        return {outcome: 1.0}, envs
    return distribution([]), envs


# --------------------------------------------------------------------------- route: enumerate
def _route_enumerate(ctx: _Context) -> EnvModel:
    actions = ctx.check_spaces()
    snapshot = ctx.snapshot()
    if snapshot is None:
        raise _Unavailable(f"the environment cannot be snapshotted and restored: {ctx._snapshot_reason}")
    try:
        start, start_envs = _probe(snapshot, _reset_outcome, ctx.rng)
    except _ProbeFailed as exc:
        raise _Unavailable(f"`reset`: {exc}") from None
    index, snaps, queue = {}, {}, deque()
    for key in start:
        _discover(ctx, key, start_envs[key], index, snaps, queue)
    rows, cols, probs, rewards = [], [], [], []
    stochastic = 0
    while queue:
        key = queue.popleft()
        s = index[key]
        for a, action in enumerate(actions):
            try:
                dist, envs = _probe(snaps[key], lambda env, act=action: _outcome(env.step(act)), ctx.rng)
            except _ProbeFailed as exc:
                raise _Unavailable(f"state {key!r}, action {action!r}: {exc}") from None
            stochastic += len(dist) > 1
            for outcome, p in dist.items():
                nkey, reward, terminated = outcome
                if terminated:
                    col = -1
                else:
                    col = _discover(ctx, nkey, envs[outcome], index, snaps, queue)
                rows.append(s * len(actions) + a)
                cols.append(col)
                probs.append(p)
                rewards.append(reward)
    reward_sa = _reward_table(rows, probs, rewards, len(index) * len(actions))
    rho = np.zeros(len(index))
    for key, p in start.items():
        rho[index[key]] += p
    info = {"rho": "reset, probed exactly", "exact": True, "stochastic_pairs": stochastic, "probe_grid": PROBE_GRID}
    return ctx.finish(np.array(rows), np.array(cols), np.array(probs), reward_sa, rho, list(index), actions, "enumerate", info)


def _discover(ctx, key, env, index, snaps, queue) -> int:
    """Index of observation ``key``, registering it (with a snapshot of ``env``) if new."""
    if key not in index:
        if len(index) >= ctx.max_states:
            raise InvalidProblemError(
                f"{ctx.label} has more than `max_states`={ctx.max_states} reachable states; raise `max_states` "
                "or use a smaller environment"
            )
        index[key] = len(index)
        snaps[key] = _Snapshot.take(env)
        queue.append(key)
    return index[key]


def _reward_table(rows, weights, rewards, n_rows) -> np.ndarray:
    """``(n, n_rows)`` sums of ``weight * reward`` per row; every reward must have the same length."""
    lengths = {len(r) for r in rewards}
    if len(lengths) > 1:
        raise InvalidProblemError(f"the environment's rewards change length between steps: {sorted(lengths)}")
    R = np.array(rewards, dtype=float).reshape(len(rewards), -1)
    rows = np.asarray(rows, dtype=np.int64)
    weights = np.asarray(weights, dtype=float)
    return np.stack([np.bincount(rows, weights=weights * R[:, i], minlength=n_rows) for i in range(R.shape[1])])


# --------------------------------------------------------------------------- route: sampled
class _Tally:
    """Sampled transitions: next-(observation, terminated) counts and reward moments per row ``s*A + a``."""

    def __init__(self):
        self.counts = defaultdict(Counter)
        self.sums = {}
        self.squares = {}

    def add(self, row: int, outcome: tuple) -> None:
        nkey, reward, terminated = outcome
        self.counts[row][nkey, terminated] += 1
        r = np.asarray(reward, dtype=float)
        self.sums[row] = self.sums.get(row, 0.0) + r
        self.squares[row] = self.squares.get(row, 0.0) + r**2

    def n(self, row: int) -> int:
        return sum(self.counts[row].values()) if row in self.counts else 0


def _route_sampled(ctx: _Context) -> EnvModel:
    actions = ctx.check_spaces()
    snapshot = ctx.snapshot()
    if snapshot is not None:
        tally, index, start, rho_how = _sample_with_snapshots(ctx, snapshot, actions)
        how = "restored snapshots"
    else:
        tally, index, start, rho_how = _sample_by_exploring(ctx, actions)
        how = f"exploring the live environment (it cannot be restored: {ctx._snapshot_reason})"
    A, S = len(actions), len(index)
    n = np.array([tally.n(row) for row in range(S * A)], dtype=float)
    missing = np.flatnonzero(n == 0)
    if missing.size:
        s, a = divmod(int(missing[0]), A)
        raise InvalidProblemError(
            f"{ctx.label}: no sample of (state {list(index)[s]!r}, action {actions[a]!r}) ({missing.size} pairs "
            "unsampled); raise `n_samples` or make the environment restorable"
        )
    rows, cols, probs, errors = [], [], [], []
    for row, counter in tally.counts.items():
        for (nkey, terminated), c in counter.items():
            p = c / n[row]
            rows.append(row)
            cols.append(-1 if terminated else index[nkey])
            probs.append(p)
            errors.append(np.sqrt(p * (1 - p) / n[row]))
    width = len(next(iter(tally.sums.values())).reshape(-1))
    sums, squares = np.zeros((width, S * A)), np.zeros((width, S * A))
    for row in tally.sums:
        sums[:, row], squares[:, row] = tally.sums[row], tally.squares[row]
    mean = sums / n
    var = np.clip(squares - n * mean**2, 0.0, None) / np.maximum(n - 1, 1)
    rho = np.zeros(S)
    for key, weight in start.items():
        rho[index[key]] += weight
    info = {
        "rho": rho_how,
        "exact": False,
        "how": how,
        "n_samples": ctx.n_samples,
        "min_count": int(n.min()),
        "max_std_error": float(max(errors)),
        "max_reward_std_error": float(np.sqrt(var / n).max()),
        "counts": n.reshape(S, A).astype(np.int64),
    }
    return ctx.finish(np.array(rows), np.array(cols), np.array(probs), mean, rho / rho.sum(),
                      list(index), actions, "sampled", info)


def _sample_with_snapshots(ctx: _Context, snapshot: _Snapshot, actions):
    """BFS over observations; ``n_samples`` seeded steps of a restored copy per ``(state, action)``."""
    try:
        start, start_envs = _probe(snapshot, _reset_outcome, ctx.rng)
        rho_how = "reset, probed exactly"
    except _ProbeFailed:
        start, start_envs = Counter(), {}
        for seed in ctx.rng.integers(2**62, size=RESET_SAMPLES):
            env = snapshot.restore()
            obs, _ = env.reset(seed=int(seed))
            start[_key(obs)] += 1
            start_envs.setdefault(_key(obs), env)
        rho_how = f"sampled from {RESET_SAMPLES} resets"
    index, snaps, queue = {}, {}, deque()
    for key in start:
        _discover(ctx, key, start_envs[key], index, snaps, queue)
    A = len(actions)
    tally = _Tally()
    while queue:
        key = queue.popleft()
        s = index[key]
        for a, action in enumerate(actions):
            for seed in ctx.rng.integers(2**62, size=ctx.n_samples):
                env = snaps[key].restore()
                _seed_all(env, int(seed))
                outcome = _outcome(env.step(action))
                tally.add(s * A + a, outcome)
                if not outcome[2]:
                    _discover(ctx, outcome[0], env, index, snaps, queue)
    return tally, index, start, rho_how


def _sample_by_exploring(ctx: _Context, actions):
    """Step the live environment (least-tried action first, reset when an episode ends) until
    every state seen has ``n_samples`` of each action, or after ``50 * n_samples * A * S`` steps."""
    env = ctx.env
    A = len(actions)
    start = Counter()
    for seed in ctx.rng.integers(2**62, size=RESET_SAMPLES):
        obs, _ = env.reset(seed=int(seed))
        start[_key(obs)] += 1
    index = {}
    tried = []  # tried[s]: samples of each action
    tally = _Tally()

    def state(key):
        if key not in index:
            if len(index) >= ctx.max_states:
                raise InvalidProblemError(f"{ctx.label} has more than `max_states`={ctx.max_states} reachable states")
            index[key] = len(index)
            tried.append(np.zeros(A, dtype=np.int64))
        return index[key]

    for key in start:
        state(key)
    key, steps = _key(obs), 0
    while True:
        s = state(key)
        least = np.flatnonzero(tried[s] == tried[s].min())
        a = int(least[ctx.rng.integers(least.size)])
        nobs, reward, terminated, truncated, _ = env.step(actions[a])
        outcome = _outcome((nobs, reward, terminated, truncated, None))
        tally.add(s * A + a, outcome)
        tried[s][a] += 1
        if not terminated:
            state(outcome[0])
        key = outcome[0]
        if terminated or truncated:
            key = _key(env.reset()[0])
        steps += 1
        if steps % 256 == 0:
            fewest = min(int(t.min()) for t in tried)
            if fewest >= ctx.n_samples or steps > 50 * ctx.n_samples * A * len(index):
                break
    return tally, index, start, f"sampled from {RESET_SAMPLES} resets"


# --------------------------------------------------------------------------- assembly
def _assemble(rows, cols, probs, reward_sa, rho, observations, A, *, gamma, on_termination, allow_multichain):
    """The MDP from transition entries: ``cols == -1`` marks a terminating transition."""
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    probs = np.asarray(probs, dtype=float)
    reward_sa = np.atleast_2d(np.asarray(reward_sa, dtype=float))
    S = len(observations)
    terminal = cols < 0
    observations = list(observations)
    rho = np.asarray(rho, dtype=float)
    absorbing = None
    if on_termination == "absorb":
        if terminal.any():
            absorbing = S
            cols = np.where(terminal, absorbing, cols)
            rows = np.concatenate([rows, absorbing * A + np.arange(A)])
            cols = np.concatenate([cols, np.full(A, absorbing)])
            probs = np.concatenate([probs, np.ones(A)])
            reward_sa = np.hstack([reward_sa, np.zeros((reward_sa.shape[0], A))])
            rho = np.append(rho, 0.0)
            observations.append(None)
        n_states = len(observations)
        P = sp.csr_array((probs, (rows, cols)), shape=(n_states * A, n_states))  # duplicates are summed
    else:
        n_states = S
        stay = ~terminal
        P = sp.csr_array((probs[stay], (rows[stay], cols[stay])), shape=(S * A, S))
        restart = np.bincount(rows[terminal], weights=probs[terminal], minlength=S * A)
        if restart.any():
            P = sp.csr_array(P + sp.csr_array(restart[:, None]) @ sp.csr_array(rho[None, :]))
    mdp = TabularMDP(P, rho=rho, gamma=gamma, n_actions=A, allow_multichain=allow_multichain)
    return mdp, reward_sa.reshape(-1, n_states, A), observations, absorbing


# --------------------------------------------------------------------------- spaces
def _key(obs):
    """Hashable form of an observation: an int, or a tuple of ints."""
    if isinstance(obs, (int, np.integer)) and not isinstance(obs, bool):
        return int(obs)
    if isinstance(obs, tuple) and all(isinstance(v, int) for v in obs):
        return obs
    try:
        arr = np.asarray(obs)
    except Exception as exc:  # noqa: BLE001
        raise InvalidProblemError(f"observation {obs!r} is not an integer or an array of integers") from exc
    if arr.dtype.kind in "iub":
        values = arr.astype(np.int64)
    elif arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        values = arr.astype(np.int64)
    else:
        raise InvalidProblemError(f"observation {obs!r} is not an integer or an array of integers")
    return int(values) if values.ndim == 0 else tuple(values.ravel().tolist())


def _check_observation_space(space, label) -> None:
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return
    if isinstance(space, spaces.Box):
        if not np.issubdtype(space.dtype, np.integer):
            raise InvalidProblemError(
                f"{label} has a continuous observation space {space}: a tabular model needs discrete "
                "observations; discretise it first (e.g. an ObservationWrapper onto Discrete or MultiDiscrete)"
            )
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise InvalidProblemError(f"{label} has an unbounded integer Box observation space {space}; give it finite bounds")
        return
    raise InvalidProblemError(
        f"{label} has observation space {space}: only Discrete, MultiDiscrete and integer Box observations "
        "can be tabulated; wrap the environment to map its observations onto one of these"
    )


def _action_list(space, label) -> list:
    """Every environment action, in model order."""
    if isinstance(space, spaces.Discrete):
        return list(range(int(space.start), int(space.start) + int(space.n)))
    if isinstance(space, spaces.MultiDiscrete):
        ranges = [range(int(lo), int(lo) + int(n)) for lo, n in zip(space.start.ravel(), space.nvec.ravel())]
        shape = space.nvec.shape
    elif isinstance(space, spaces.Box) and np.issubdtype(space.dtype, np.integer):
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise InvalidProblemError(f"{label} has an unbounded integer Box action space {space}")
        ranges = [range(int(lo), int(hi) + 1) for lo, hi in zip(space.low.ravel(), space.high.ravel())]
        shape = space.shape
    elif isinstance(space, spaces.Box):
        raise InvalidProblemError(
            f"{label} has a continuous action space {space}: a tabular model needs finitely many actions; "
            "discretise it first (e.g. an ActionWrapper from Discrete)"
        )
    else:
        raise InvalidProblemError(
            f"{label} has action space {space}: only Discrete, MultiDiscrete and small integer Box actions can be tabulated"
        )
    total = int(np.prod([len(r) for r in ranges], dtype=float))
    if total > MAX_ACTIONS:
        raise InvalidProblemError(f"{label} has {total} joint actions in {space}; at most {MAX_ACTIONS} can be tabulated")
    return [np.array(combo, dtype=space.dtype).reshape(shape) for combo in itertools.product(*ranges)]


_BUILDERS = {"protocol": _route_protocol, "model": _route_model, "enumerate": _route_enumerate, "sampled": _route_sampled}
