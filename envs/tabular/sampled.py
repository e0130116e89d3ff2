"""The ``"sampled"`` route: ``n_samples`` sampled transitions per ``(state, action)``.

Transitions come from seeded steps of restored snapshots when the environment can be
restored, otherwise from exploring the live environment (least-tried action first). Each
sampled step reseeds every generator of the restored copy, and the process-wide ones (the
``random`` module, the global ``numpy.random``) are seeded once from ``rng`` and restored
afterwards, so randomness drawn from them is sampled too and the model depends on ``rng`` only. The
estimates are ``P(s' | s, a) = count / n`` and ``r(s, a)`` = mean reward, with standard
errors ``sqrt(p (1 - p) / n)`` and ``sqrt(var / n)`` reported in ``info``.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from typing import Any

import numpy as np

from policyagg.envs.tabular.context import RouteContext, discover, sample_resets
from policyagg.envs.tabular.model import EnvModel, ModelWarning
from policyagg.envs.tabular.probe import ProbeFailed, probe
from policyagg.envs.tabular.snapshot import GlobalGenerators, Snapshot, seed_all
from policyagg.envs.tabular.spaces import ObservationKey, StepOutcome, observation_key, reset_outcome, step_outcome
from policyagg.errors import InvalidProblemError


class _Tally:
    """Sampled transitions: next-(observation, terminated) counts and reward moments per row ``s*A + a``."""

    def __init__(self) -> None:
        self.counts: defaultdict[int, Counter[tuple[ObservationKey, bool]]] = defaultdict(Counter)
        self.sums: dict[int, Any] = {}
        self.squares: dict[int, Any] = {}

    def add(self, row: int, outcome: StepOutcome) -> None:
        nkey, reward, terminated = outcome
        self.counts[row][nkey, terminated] += 1
        r = np.asarray(reward, dtype=float)
        self.sums[row] = self.sums.get(row, 0.0) + r
        self.squares[row] = self.squares.get(row, 0.0) + r**2

    def n(self, row: int) -> int:
        return sum(self.counts[row].values()) if row in self.counts else 0


#: ``(tally, observation -> state, initial observations -> weight, where rho came from)``.
_Samples = tuple[_Tally, dict[ObservationKey, int], dict[Any, Any], str]


def route_sampled(ctx: RouteContext) -> EnvModel:
    """The estimated model; :class:`InvalidProblemError` if a reached ``(state, action)`` was never sampled."""
    actions = ctx.check_spaces()
    snapshot = ctx.snapshot()
    if snapshot is not None:
        tally, index, start, rho_how = _sample_with_snapshots(ctx, snapshot, actions)
        how = "restored snapshots"
    else:
        tally, index, start, rho_how = _sample_by_exploring(ctx, actions)
        how = f"exploring the live environment (it cannot be restored: {ctx.snapshot_reason})"
    A, S = len(actions), len(index)
    n = np.array([tally.n(row) for row in range(S * A)], dtype=float)
    missing = np.flatnonzero(n == 0)
    if missing.size:
        s, a = divmod(int(missing[0]), A)
        raise InvalidProblemError(
            f"{ctx.label}: no sample of (state {list(index)[s]!r}, action {actions[a]!r}) ({missing.size} pairs "
            "unsampled); raise `n_samples` or make the environment restorable"
        )
    if n.min() < ctx.n_samples:
        s, a = divmod(int(n.argmin()), A)
        warnings.warn(
            f"{ctx.label}: (state {list(index)[s]!r}, action {actions[a]!r}) has only {int(n.min())} of the "
            f"{ctx.n_samples} samples asked for ({int((n < ctx.n_samples).sum())} pairs short): exploring never "
            "returned to it; give the environment a TimeLimit or make it restorable",
            ModelWarning,
            stacklevel=3,
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
        **ctx.reset_report,
    }
    return ctx.finish(
        np.array(rows), np.array(cols), np.array(probs), mean, rho / rho.sum(), list(index), actions, "sampled", info
    )


def _sample_with_snapshots(ctx: RouteContext, snapshot: Snapshot, actions: Sequence[Any]) -> _Samples:
    """BFS over observations; ``n_samples`` seeded steps of a restored copy per ``(state, action)``."""
    start: dict[Any, Any]  # observation -> probability (probed) or count (sampled)
    try:
        start, start_envs = probe(snapshot, reset_outcome, ctx.rng)
        rho_how = "reset, probed exactly"
    except ProbeFailed:
        start, start_envs, rho_how = sample_resets(ctx)
    index: dict[ObservationKey, int] = {}
    snaps: dict[ObservationKey, Snapshot] = {}
    queue: deque[ObservationKey] = deque()
    for key in start:
        discover(ctx, key, start_envs[key], index, snaps, queue)
    A = len(actions)
    tally = _Tally()
    globals_ = GlobalGenerators(snapshot.classes)
    saved = globals_.save()
    globals_.seed(int(ctx.rng.integers(2**62)))  # one stream through all samples: reproducible, never repeated
    try:
        while queue:
            key = queue.popleft()
            s = index[key]
            for a, action in enumerate(actions):
                for seed in ctx.rng.integers(2**62, size=ctx.n_samples):
                    env, generators = snaps[key].restore_with_generators()
                    seed_all(env, int(seed), generators)
                    outcome = step_outcome(env.step(action))
                    tally.add(s * A + a, outcome)
                    if not outcome[2]:
                        discover(ctx, outcome[0], env, index, snaps, queue)
    finally:
        globals_.restore(saved)
    return tally, index, start, rho_how


def _sample_by_exploring(ctx: RouteContext, actions: Sequence[Any]) -> _Samples:
    """Step the live environment (least-tried action first, reset when an episode ends) until
    every state seen has ``n_samples`` of each action, or after ``50 * n_samples * A * S`` steps."""
    env = ctx.env
    A = len(actions)
    start, _, rho_how = sample_resets(ctx)
    obs, _ = env.reset(seed=int(ctx.rng.integers(2**62)))
    index: dict[ObservationKey, int] = {}
    tried: list[np.ndarray] = []  # tried[s]: samples of each action
    tally = _Tally()

    def state(key: ObservationKey) -> int:
        if key not in index:
            if len(index) >= ctx.max_states:
                raise InvalidProblemError(f"{ctx.label} has more than `max_states`={ctx.max_states} reachable states")
            index[key] = len(index)
            tried.append(np.zeros(A, dtype=np.int64))
        return index[key]

    for key in start:
        state(key)
    globals_ = GlobalGenerators([type(ctx.base)])
    saved = globals_.save()
    globals_.seed(int(ctx.rng.integers(2**62)))
    try:
        key, steps = observation_key(obs), 0
        while True:
            s = state(key)
            least = np.flatnonzero(tried[s] == tried[s].min())
            a = int(least[ctx.rng.integers(least.size)])
            nobs, reward, terminated, truncated, _ = env.step(actions[a])
            outcome = step_outcome((nobs, reward, terminated, truncated, None))
            tally.add(s * A + a, outcome)
            tried[s][a] += 1
            if not terminated:
                state(outcome[0])
            key = outcome[0]
            if terminated or truncated:
                key = observation_key(env.reset()[0])
            steps += 1
            if steps % 256 == 0:
                fewest = min(int(t.min()) for t in tried)
                if fewest >= ctx.n_samples or steps > 50 * ctx.n_samples * A * len(index):
                    break
    finally:
        globals_.restore(saved)
    return tally, index, start, rho_how
