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
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium import spaces

from policyagg.envs.tabular.chain import ValueMaps, wrappers
from policyagg.envs.tabular.context import RouteContext, RouteUnavailable, discover, sample_resets
from policyagg.envs.tabular.model import EnvModel
from policyagg.envs.tabular.probe import PROBE_GRID, HiddenRandomness, ProbeFailed, probe
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
def route_enumerate(ctx: RouteContext) -> EnvModel:
    """Breadth-first search over restored snapshots; each ``(state, action)`` probed exactly."""
    actions = ctx.check_spaces()
    snapshot = ctx.snapshot()
    if snapshot is None:
        raise RouteUnavailable(
            f"the environment cannot be snapshotted and restored: {ctx.snapshot_reason}", warn=ctx.snapshot_mismatch
        )
    try:
        start, start_envs = probe(snapshot, reset_outcome, ctx.rng)
    except ProbeFailed as exc:
        raise RouteUnavailable(f"`reset`: {exc}", warn=isinstance(exc, HiddenRandomness)) from None
    index: dict[ObservationKey, int] = {}
    snaps: dict[ObservationKey, Snapshot] = {}
    queue: deque[ObservationKey] = deque()
    for key in start:
        discover(ctx, key, start_envs[key], index, snaps, queue)
    rows, cols, probs, rewards = [], [], [], []
    stochastic = 0
    while queue:
        key = queue.popleft()
        s = index[key]
        for a, action in enumerate(actions):
            try:
                dist, envs = probe(snaps[key], functools.partial(_step, action=action), ctx.rng)
            except ProbeFailed as exc:
                raise RouteUnavailable(
                    f"state {key!r}, action {action!r}: {exc}", warn=isinstance(exc, HiddenRandomness)
                ) from None
            stochastic += len(dist) > 1
            for outcome, p in dist.items():
                nkey, reward, terminated = outcome
                if terminated:
                    col = -1
                else:
                    col = discover(ctx, nkey, envs[outcome], index, snaps, queue)
                rows.append(s * len(actions) + a)
                cols.append(col)
                probs.append(p)
                rewards.append(reward)
    reward_sa = _reward_table(rows, probs, rewards, len(index) * len(actions))
    rho = np.zeros(len(index))
    for key, p in start.items():
        rho[index[key]] += p
    info = {"rho": "reset, probed exactly", "exact": True, "stochastic_pairs": stochastic, "probe_grid": PROBE_GRID}
    return ctx.finish(
        np.array(rows), np.array(cols), np.array(probs), reward_sa, rho, list(index), actions, "enumerate", info
    )


def _step(env: Any, action: Any) -> StepOutcome:
    return step_outcome(env.step(action))


def _reward_table(rows: Sequence[int], weights: Sequence[float], rewards: Sequence[Any], n_rows: int) -> np.ndarray:
    """``(n, n_rows)`` sums of ``weight * reward`` per row; every reward must have the same length."""
    lengths = {len(r) for r in rewards}
    if len(lengths) > 1:
        raise InvalidProblemError(f"the environment's rewards change length between steps: {sorted(lengths)}")
    R = np.array(rewards, dtype=float).reshape(len(rewards), -1)
    row_of = np.asarray(rows, dtype=np.int64)
    weight = np.asarray(weights, dtype=float)
    return np.stack([np.bincount(row_of, weights=weight * R[:, i], minlength=n_rows) for i in range(R.shape[1])])
