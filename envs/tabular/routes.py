"""The exact routes: ``"protocol"``, ``"model"`` and ``"enumerate"`` (``"sampled"`` is in :mod:`.sampled`).

Each route is ``route(ctx) -> EnvModel`` and raises :class:`RouteUnavailable` when it does
not apply. ``"protocol"`` asks ``env.unwrapped.tabular_model(gamma)`` (only when no wrapper
changes what the user sees); ``"model"`` reads the toy-text
``P[s][a] = [(prob, next_s, reward, terminated), ...]`` with ``r(s, a) = sum prob * f(reward)``,
observations and actions mapped through the value-map wrappers (:class:`ValueMaps`);
``"enumerate"`` searches the states breadth-first from ``reset`` on restored snapshots
(stepped through the wrappers) and finds each step's exact distribution with :func:`probe`.
"""

from __future__ import annotations

import functools
import gc
import math
from array import array
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from gymnasium import spaces
from tqdm.auto import tqdm

from policyagg.envs.tabular.chain import ValueMaps, wrappers
from policyagg.envs.tabular.context import RouteContext, RouteUnavailable, sample_resets
from policyagg.envs.tabular.model import EnvModel
from policyagg.envs.tabular.probe import (
    PROBE_GRID,
    HiddenRandomness,
    ProbeFailed,
    ProbeSession,
    StoreRunner,
    _same,
    probe,
    probe_states,
)
from policyagg.envs.tabular.snapshot import (
    RNG_TYPES,
    GlobalGenerators,
    Snapshot,
    find_generator,
    fingerprint,
    generator_type,
    same_state,
)
from policyagg.envs.tabular.spaces import (
    ObservationKey,
    StepOutcome,
    action_list,
    observation_key,
    reset_outcome,
    step_outcome,
)
from policyagg.envs.tabular.states import SharedMutated, State, StateStore, Unfreezable
from policyagg.errors import InvalidProblemError
from policyagg.mdp import TabularMDP


# --------------------------------------------------------------------------- route: protocol
def route_protocol(ctx: RouteContext) -> EnvModel:
    """The environment's own exact model, ``env.unwrapped.tabular_model(gamma)``."""
    method = getattr(ctx.base, "tabular_model", None)
    if not callable(method):
        raise RouteUnavailable("the environment has no `tabular_model(gamma)` method")
    maps = ValueMaps(ctx.env)
    if maps.general or maps.kinds:
        names = ", ".join(maps.general) or ", ".join(sorted(maps.kinds))
        raise RouteUnavailable(
            f"its wrappers change what `step` returns ({names}); `tabular_model` describes the unwrapped environment"
        )
    out = method(ctx.gamma)
    if not (isinstance(out, tuple) and len(out) == 3 and isinstance(out[0], TabularMDP)):
        raise InvalidProblemError(
            f"{ctx.label}.tabular_model(gamma) must return (TabularMDP, rewards (n, S, A), observations); got {type(out).__name__}"
        )
    mdp, rewards, observations = out
    if mdp.gamma != float(ctx.gamma):
        raise InvalidProblemError(f"{ctx.label}.tabular_model({ctx.gamma}) returned an MDP with gamma = {mdp.gamma}")
    actions = action_list(ctx.base.action_space, ctx.label)
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


def route_model(ctx: RouteContext) -> EnvModel:
    """The toy-text model ``env.unwrapped.P`` (FrozenLake, CliffWalking, Taxi); duplicate next states are summed."""
    base = ctx.base
    P = getattr(base, "P", None)
    if P is None:
        raise RouteUnavailable("the environment has no toy-text model `env.unwrapped.P`")
    for flag, why in _MODEL_INCOMPLETE.items():
        if getattr(base, flag, False):
            raise RouteUnavailable(f"`P` is incomplete: {why}")
    if not (isinstance(base.observation_space, spaces.Discrete) and isinstance(base.action_space, spaces.Discrete)):
        raise RouteUnavailable("`P` needs Discrete observation and action spaces")
    maps = ValueMaps(ctx.env)
    if maps.general:
        raise RouteUnavailable(f"the wrapper {maps.general[0]} changes `step`; `P` describes the unwrapped environment")
    S, A = int(base.observation_space.n), int(base.action_space.n)
    first_obs, first_action = int(base.observation_space.start), int(base.action_space.start)
    try:  # flattening the nested lists needs one pass over the entries; the matrix is built from arrays
        entries = [
            (s * A + a, *entry[:4]) for s in range(S) for a in range(A) for entry in P[s + first_obs][a + first_action]
        ]
        table = np.array(entries, dtype=float).reshape(-1, 5)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise RouteUnavailable(
            f"`P` is not in the toy-text format P[s][a] = [(prob, next_s, reward, terminated), ...] ({exc})"
        ) from exc
    nxt = table[:, 2].astype(np.int64) - first_obs
    if nxt.size and (nxt.min() < 0 or nxt.max() >= S):
        raise RouteUnavailable("`P` has a next state outside the observation space")
    watch = _MapWatch(ctx.env)
    observations = _mapped_observations(ctx, maps, first_obs, S)
    actions = ctx.check_spaces()
    table, nxt = _mapped_actions(ctx, maps, actions, table, nxt, A, first_action)
    rows = table[:, 0].astype(np.int64)
    cols = np.where(table[:, 4] != 0, -1, nxt)
    rewards = maps.rewards(table[:, 3])  # (entries, n)
    watch.check()
    weights = table[:, 1]
    n_rows = S * len(actions)
    reward_sa = np.stack([np.bincount(rows, weights=weights * r, minlength=n_rows) for r in rewards.T])
    rho, how = _initial_distribution(ctx, {o: s for s, o in enumerate(observations)})
    return ctx.finish(
        rows,
        cols,
        weights,
        reward_sa,
        rho,
        observations,
        actions,
        "model",
        {"rho": how, "exact": not how.startswith("sampled"), "wrappers": sorted(maps.kinds), **ctx.reset_report},
    )


class _MapWatch:
    """Generators the value-map wrappers could draw from while mapping the table (a random map is not a fixed function).

    The wrappers' own generators (attributes, one level deep), ``env.unwrapped``'s
    ``np_random`` (which ``wrapper.np_random`` reaches) and the process-wide ones.
    """

    def __init__(self, env: Any) -> None:
        self.env, self.base = env, env.unwrapped
        held = {}
        for wrapper in wrappers(env):
            for value in vars(wrapper).values():
                for item in value.values() if isinstance(value, dict) else [value]:
                    if isinstance(item, RNG_TYPES):
                        held[id(item)] = item
        self.held = list(held.values())
        self.before = [fingerprint(g) for g in self.held]
        self.np_random = vars(self.base).get("_np_random")
        self.np_before = None if self.np_random is None else fingerprint(self.np_random)
        self.globals = GlobalGenerators([type(w) for w in wrappers(env)])
        self.saved = self.globals.save()

    def check(self) -> None:
        """:class:`RouteUnavailable` naming the generator if mapping drew from one (process-wide ones are restored)."""
        drawn = self.globals.drawn(self.saved)
        self.globals.restore(self.saved)
        for gen, before in zip(self.held, self.before):
            if not same_state(fingerprint(gen), before):
                drawn = f"`{find_generator(self.env, gen)}` ({generator_type(gen)})"
        now = vars(self.base).get("_np_random")
        if now is not self.np_random or (now is not None and not same_state(fingerprint(now), self.np_before)):
            drawn = "`env.np_random`"
        if drawn is not None:
            raise RouteUnavailable(
                f"its value-map wrappers draw from {drawn} while mapping values: they are not fixed functions, "
                "so the table cannot be mapped; the environment is stepped instead"
            )


def _mapped_observations(ctx: RouteContext, maps: ValueMaps, first_obs: int, S: int) -> list[ObservationKey]:
    """The observation the user sees in each state of ``P``; they must tell the states apart."""
    observations = [observation_key(maps.observation(first_obs + s)) for s in range(S)]
    if len(set(observations)) < S:
        seen: dict[ObservationKey, int] = {}
        for s, o in enumerate(observations):
            if o in seen:
                raise InvalidProblemError(
                    f"{ctx.label}: its observation wrappers show states {seen[o] + first_obs} and {s + first_obs} "
                    f"as the same observation {o!r}; a tabular model over observations needs them distinct"
                )
            seen[o] = s
    return observations


def _mapped_actions(
    ctx: RouteContext,
    maps: ValueMaps,
    actions: Sequence[Any],
    table: np.ndarray,
    nxt: np.ndarray,
    A: int,
    first_action: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The entries of ``table`` (rows ``s * A + b``) re-indexed by the user's actions ``a`` (rows ``s * len(actions) + a``).

    User action ``a`` is the unwrapped action ``b = maps.action(actions[a])``.
    """
    if "action" not in maps.kinds and len(actions) == A:
        return table, nxt
    base_of = []
    for action in actions:
        try:
            b = int(np.asarray(maps.action(action)).item()) - first_action
        except (TypeError, ValueError) as exc:
            raise RouteUnavailable(f"the action wrappers map {action!r} to a non-integer action ({exc})") from exc
        if not 0 <= b < A:
            raise RouteUnavailable(f"the action wrappers map {action!r} outside the unwrapped action space")
        base_of.append(b)
    s_of, b_of = np.divmod(table[:, 0].astype(np.int64), A)
    parts, nexts = [], []
    for a, b in enumerate(base_of):
        pick = b_of == b
        part = table[pick].copy()
        part[:, 0] = s_of[pick] * len(actions) + a
        parts.append(part)
        nexts.append(nxt[pick])
    return np.concatenate(parts), np.concatenate(nexts)


def _initial_distribution(ctx: RouteContext, index: dict[ObservationKey, int]) -> tuple[np.ndarray, str]:
    """``rho`` over the states of ``index`` (observation -> state): from the env, a probed reset, or sampled."""
    S = len(index)
    for name in ("initial_state_distrib", "isd"):
        rho = getattr(ctx.base, name, None)
        if rho is not None and np.shape(rho) == (S,):
            return np.asarray(rho, dtype=float), f"env.unwrapped.{name}"
    snapshot = ctx.snapshot()
    if snapshot is not None:
        try:
            dist, _ = probe(snapshot, reset_outcome, ctx.rng)
            rho = np.zeros(S)
            for key, p in dist.items():
                if key not in index:
                    raise RouteUnavailable(f"`reset` returned observation {key!r}, which `P` does not have")
                rho[index[key]] += p
            return rho, "reset, probed exactly"
        except ProbeFailed:
            pass
    counts, _, how = sample_resets(ctx)
    rho = np.zeros(S)
    for key, c in counts.items():
        if key not in index:
            raise RouteUnavailable(f"`reset` returned observation {key!r}, which `P` does not have")
        rho[index[key]] += c
    return rho / rho.sum(), how


# --------------------------------------------------------------------------- route: enumerate
#: Internal states expanded between two checks of the process-wide generators and progress updates.
BATCH = 2048
#: The enumeration is refused early when the estimated state count exceeds this multiple of ``max_states``.
EARLY_REFUSAL = 2.0


def route_enumerate(ctx: RouteContext) -> EnvModel:
    """Breadth-first search over the environment's internal states; each ``(state, action)`` probed exactly.

    The states are :class:`~.states.State` deltas of one working copy (:mod:`.states`); when
    a step changes a shared object in place, the search starts over owning every attribute.
    """
    actions = ctx.check_spaces()
    snapshot = ctx.snapshot()
    if snapshot is None:
        raise RouteUnavailable(
            f"the environment cannot be snapshotted and restored: {ctx.snapshot_reason}", warn=ctx.snapshot_mismatch
        )
    try:
        try:
            with rare_full_collections():
                return _enumerate(ctx, actions, StateStore(snapshot, share=True))
        except SharedMutated as exc:
            with rare_full_collections():
                model = _enumerate(ctx, actions, StateStore(snapshot, share=False))
            model.info["shared"] = f"no: a step {exc} (every attribute copied per state)"
            return model
    except Unfreezable as exc:
        raise RouteUnavailable(f"a state holds a {exc} that cannot be compared with other states") from None


#: The cyclic garbage collector's third threshold during a search (its default is 10).
FULL_COLLECTION_THRESHOLD = 1000


@contextmanager
def rare_full_collections(threshold: int = FULL_COLLECTION_THRESHOLD) -> Iterator[None]:
    """Full garbage collections made rare while the search runs (the thresholds are put back after).

    A full collection visits every tracked object, and a search keeps hundreds of thousands of
    states alive: with the default thresholds they took about 13% of the CPU time of the first
    150,000 four-room states. Young collections, which free the short-lived cycles, are unchanged.
    """
    old = gc.get_threshold()
    gc.set_threshold(old[0], old[1], max(old[2], threshold))
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _probe_state(
    ctx: RouteContext, runner: StoreRunner, state: State, call: Any, session: ProbeSession, where: Any
) -> tuple[dict[Any, float], dict[Any, State]]:
    """Exact distribution of ``call`` from ``state``; ``where`` (a string, or a function giving it) names the step."""
    runner.at(state)
    try:
        dist = probe_states(runner, call, session)
    except ProbeFailed as exc:
        raise RouteUnavailable(
            f"{where if isinstance(where, str) else where()}: {exc}", warn=isinstance(exc, HiddenRandomness)
        ) from None
    return dist, runner.states


def _observed(dist: dict[Any, float]) -> dict[Any, float]:
    """The distribution of what the user sees, ``(observation, reward, terminated)``, summed over next states."""
    out: dict[Any, float] = {}
    for (outcome, _), p in dist.items():
        out[outcome] = out.get(outcome, 0.0) + p
    return out


class _Search:
    """The breadth-first search's tables: internal states, observations, transitions, progress."""

    def __init__(self, ctx: RouteContext, n_actions: int) -> None:
        self.ctx, self.A = ctx, n_actions
        self.internal: dict[Any, int] = {}  # state key -> internal id
        self.states: list[State] = []
        self.obs_of: list[ObservationKey] = []
        self.index: dict[ObservationKey, int] = {}  # observation -> model state
        self.rep: list[int] = []  # model state -> its first internal id
        self.queue: deque[int] = deque()
        self.rows, self.cols = array("q"), array("q")
        self.probs, self.rewards = array("d"), array("d")
        self.width: int | None = None
        self.estimate = StateEstimate()

    def add(self, key: ObservationKey, state: State) -> int:
        """Internal id of ``state`` (with observation ``key``), registering both if new."""
        i = self.internal.get(state.key)
        if i is not None:
            return i
        if key not in self.index:
            if len(self.index) >= self.ctx.max_states:
                raise InvalidProblemError(
                    f"{self.ctx.label} has more than `max_states`={self.ctx.max_states} reachable states; raise "
                    "`max_states` or use a smaller environment"
                )
            self.index[key] = len(self.index)
            self.rep.append(len(self.states))
            self.estimate.add(key)
        elif len(self.states) >= 10 * self.ctx.max_states:
            raise InvalidProblemError(
                f"{self.ctx.label} has more than {10 * self.ctx.max_states} internal states (10 x `max_states`) behind "
                f"{len(self.index)} observations; raise `max_states`"
            )
        i = self.internal[state.key] = len(self.states)
        self.states.append(state)
        self.obs_of.append(key)
        self.queue.append(i)
        return i

    def record(self, s: int, a: int, col: int, p: float, reward: tuple[float, ...]) -> None:
        if self.width is None:
            self.width = len(reward)
        elif len(reward) != self.width:
            raise InvalidProblemError(
                f"the environment's rewards change length between steps: {sorted({self.width, len(reward)})}"
            )
        self.rows.append(s * self.A + a)
        self.cols.append(col)
        self.probs.append(p)
        self.rewards.extend(reward)


def _enumerate(ctx: RouteContext, actions: Sequence[Any], store: StateStore) -> EnvModel:
    session = ProbeSession(store.snapshot.classes)
    search = _Search(ctx, len(actions))
    bar = tqdm(total=None, unit=" states", desc=f"enumerating {ctx.label}", disable=None, leave=False)
    runner = StoreRunner(store)
    try:
        try:
            start, start_states = _probe_state(ctx, runner, store.root, reset_outcome, session, "`reset`")
        except RouteUnavailable as exc:
            ctx.reset_unprobeable = str(exc)
            raise
        for full in start:
            search.add(full[0], start_states[full])
        steps = [functools.partial(_step, action=action) for action in actions]
        rep_cache: OrderedDict[int, list[dict[Any, float]]] = OrderedDict()
        done = 0
        while search.queue:
            i = search.queue.popleft()
            key, state = search.obs_of[i], search.states[i]
            s = search.index[key]
            observed = []
            for a, step in enumerate(steps):
                where = functools.partial(_where, key, actions[a])
                dist, after = _probe_state(ctx, runner, state, step, session, where)
                observed.append(_observed(dist))
                for full in dist:
                    (nkey, _, terminated), _ = full
                    if not terminated:
                        search.add(nkey, after[full])
                if search.rep[s] == i:
                    for (nkey, reward, terminated), p in observed[a].items():
                        search.record(s, a, -1 if terminated else search.index[nkey], p, reward)
            if search.rep[s] != i:
                _check_same(ctx, runner, search, i, observed, rep_cache, steps, actions, session)
            else:  # what the observation's first internal state does, for the others behind it
                _remember(rep_cache, i, observed)
            done += 1
            if done % BATCH == 0:
                _checkpoint(ctx, search, session, bar, done)
        session.check()
    except HiddenRandomness as exc:
        raise RouteUnavailable(f"while enumerating: {exc}", warn=True) from None
    finally:
        session.close()
        bar.close()
    A = len(actions)
    n_obs = len(search.index)
    reward_sa = _reward_table(search.rows, search.probs, search.rewards, search.width or 1, n_obs * A)
    rho = np.zeros(n_obs)
    for full, p in start.items():
        rho[search.index[full[0]]] += p
    info = {
        "rho": "reset, probed exactly",
        "exact": True,
        "stochastic_pairs": int(np.count_nonzero(np.bincount(search.rows, minlength=n_obs * A) > 1)),
        "probe_grid": PROBE_GRID,
        "internal_states": len(search.states),
        "shared": "yes" if store.share else "no: the environment holds objects whose changes cannot be checked",
        **rendering_info(store.snapshot),
    }
    return ctx.finish(
        np.frombuffer(search.rows, dtype=np.int64),
        np.frombuffer(search.cols, dtype=np.int64),
        np.frombuffer(search.probs, dtype=float),
        reward_sa,
        rho,
        list(search.index),
        actions,
        "enumerate",
        info,
    )


def rendering_info(snapshot: Snapshot) -> dict[str, list[str]]:
    """``{"rendering": [...]}`` naming the rendering resources taken as constants, or ``{}`` when there are none."""
    return {"rendering": list(snapshot.rendering)} if snapshot.rendering else {}


def _where(key: ObservationKey, action: Any) -> str:
    return f"state {key!r}, action {action!r}"


#: The observed distributions of this many recently expanded first internal states are kept for :func:`_check_same`.
REP_CACHE = 4096


def _remember(cache: OrderedDict[int, list[dict[Any, float]]], r: int, observed: list[dict[Any, float]]) -> None:
    """Keep ``observed`` for state ``r``, forgetting the oldest entry beyond :data:`REP_CACHE`."""
    cache[r] = observed
    if len(cache) > REP_CACHE:
        cache.popitem(last=False)  # O(1), where a dict's first key is found past every deleted slot


def _check_same(
    ctx: RouteContext,
    runner: StoreRunner,
    search: _Search,
    i: int,
    observed: list[dict[Any, float]],
    cache: OrderedDict[int, list[dict[Any, float]]],
    steps: Sequence[Any],
    actions: Sequence[Any],
    session: ProbeSession,
) -> None:
    """The model over observations is exact only if every internal state behind an observation steps
    like its first one (same distribution of observation, reward and termination under every action)."""
    key = search.obs_of[i]
    r = search.rep[search.index[key]]
    if r not in cache:  # forgotten since it was expanded: probed again
        _remember(
            cache,
            r,
            [
                _observed(_probe_state(ctx, runner, search.states[r], step, session, f"state {key!r}")[0])
                for step in steps
            ],
        )
    for a, (mine, theirs) in enumerate(zip(observed, cache[r])):
        if not _same(mine, theirs):
            raise RouteUnavailable(
                f"observation {key!r} does not identify the environment's state: two internal states with it "
                f"(made of {runner.store.describe(search.states[i])}) step differently under action {actions[a]!r}, so no "
                "model over observations is exact",
                warn=True,
            )


def _checkpoint(ctx: RouteContext, search: _Search, session: ProbeSession, bar: Any, done: int) -> None:
    """Between batches: the process-wide generators checked, the progress shown, an early refusal."""
    session.check()
    estimate = search.estimate.value(len(search.index))
    if estimate > EARLY_REFUSAL * ctx.max_states:
        raise InvalidProblemError(
            f"{ctx.label} has about {estimate:,} reachable states ({search.estimate.describe()}, after "
            f"{len(search.index):,} found), more than {EARLY_REFUSAL:g} x `max_states`={ctx.max_states}; raise "
            "`max_states` above it (the estimate can be too high when observation components are correlated) "
            "or use a smaller environment"
        )
    bar.total = max(estimate, len(search.index))
    bar.n = len(search.index)
    bar.set_postfix_str(f"{done:,} expanded, {len(search.states):,} internal", refresh=False)
    bar.refresh()


class StateEstimate:
    """An early estimate of the number of observations: the product of the number of values each
    component of the (flattened) observation took so far; the count found when the observation has
    one component or a varying length."""

    def __init__(self) -> None:
        self.values: list[set[int]] | None = None
        self.ragged = False

    def add(self, key: ObservationKey) -> None:
        if self.ragged:
            return
        flat = _flatten(key)
        if self.values is None:
            self.values = [set() for _ in flat]
        if len(flat) != len(self.values):
            self.ragged = True
            return
        for seen, v in zip(self.values, flat):
            seen.add(v)

    def value(self, found: int) -> int:
        if self.ragged or self.values is None or len(self.values) < 2:
            return found
        return max(found, math.prod(len(v) for v in self.values))

    def describe(self) -> str:
        if self.ragged or self.values is None or len(self.values) < 2:
            return "the count found"
        return "the product of the values each observation component took: " + " x ".join(
            str(len(v)) for v in self.values
        )


def _flatten(key: Any) -> tuple[Any, ...]:
    if type(key) is tuple and all(type(v) is int for v in key):
        return key
    if isinstance(key, tuple):
        return tuple(v for part in key for v in _flatten(part))
    return (key,)


def _step(env: Any, action: Any) -> StepOutcome:
    return step_outcome(env.step(action))


def _reward_table(rows: Any, weights: Any, rewards: Any, width: int, n_rows: int) -> np.ndarray:
    """``(width, n_rows)`` sums of ``weight * reward`` per row; ``rewards`` is flat, ``width`` values per entry."""
    R = np.asarray(rewards, dtype=float).reshape(-1, width)
    row_of = np.asarray(rows, dtype=np.int64)
    weight = np.asarray(weights, dtype=float)
    return np.stack([np.bincount(row_of, weights=weight * R[:, i], minlength=n_rows) for i in range(width)])
