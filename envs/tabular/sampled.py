"""The ``"sampled"`` route: ``n_samples`` sampled transitions per ``(state, action)``.

Transitions come from steps of one working copy of the environment (a
:class:`~.states.StateStore`, as in ``"enumerate"``) set to each observation's first internal
state when the environment can be restored, otherwise from exploring the live environment
(least-tried action first). Restoring sets only what a step changed; objects shared between
states are proved unchanged after every sample (a step that changes one in place makes the
route start over owning, and copying, every attribute). The environment's ``np_random``, the
generators it holds and the process-wide ones (the ``random`` module, the global
``numpy.random``) are seeded once from ``rng`` and drawn from as one stream each (the
process-wide ones restored afterwards), so the model depends on ``rng`` only. The
estimates are ``P(s' | s, a) = count / n`` and ``r(s, a)`` = mean reward, with standard
errors ``sqrt(p (1 - p) / n)`` and ``sqrt(var / n)`` reported in ``info``.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict, deque
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from policyagg.envs.tabular.context import RouteContext, sample_resets
from policyagg.envs.tabular.model import EnvModel, ModelWarning
from policyagg.envs.tabular.probe import ProbeFailed, ProbeSession, StoreRunner, probe_states
from policyagg.envs.tabular.routes import rendering_info
from policyagg.envs.tabular.snapshot import GlobalGenerators, Snapshot, seed_all
from policyagg.envs.tabular.spaces import ObservationKey, StepOutcome, observation_key, reset_outcome, step_outcome
from policyagg.envs.tabular.states import SharedMutated, State, StateStore
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
    shared: dict[str, Any] = {}
    if snapshot is not None:
        (tally, index, start, rho_how), shared["shared"] = _sample_with_store(ctx, snapshot, actions)
        shared.update(rendering_info(snapshot))
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
        **shared,
        **ctx.reset_report,
    }
    return ctx.finish(
        np.array(rows), np.array(cols), np.array(probs), mean, rho / rho.sum(), list(index), actions, "sampled", info
    )


def _sample_with_store(ctx: RouteContext, snapshot: Snapshot, actions: Sequence[Any]) -> tuple[_Samples, str]:
    """Sampled on one working copy (:class:`StateStore`), sharing what steps never reassign; when a
    step changes a shared object in place, sampling starts over owning every attribute. Also says
    whether objects were shared (``info["shared"]``)."""
    try:
        return _sample_states(ctx, StateStore(snapshot, share=True, keyed=False), actions), "yes"
    except SharedMutated as exc:
        samples = _sample_states(ctx, StateStore(snapshot, share=False, keyed=False), actions)
        return samples, f"no: a step {exc} (every attribute copied per sample)"


def _sample_states(ctx: RouteContext, store: StateStore, actions: Sequence[Any]) -> _Samples:
    """BFS over observations, each represented by the first internal state seen with it;
    ``n_samples`` steps of the working copy set to that state per ``(state, action)``.

    The environment's ``np_random``, the generators it holds and the process-wide ones are
    seeded once from ``ctx.rng`` and then drawn from as one stream each: restoring a state
    leaves them alone, so successive samples get fresh draws.
    """
    start, start_states, rho_how = _start_states(ctx, store)
    index: dict[ObservationKey, int] = {}
    reps: list[State] = []
    queue: deque[int] = deque()

    def register(key: ObservationKey, state: State) -> None:
        if len(index) >= ctx.max_states:
            raise InvalidProblemError(
                f"{ctx.label} has more than `max_states`={ctx.max_states} reachable states; raise `max_states` "
                "or use a smaller environment"
            )
        index[key] = len(index)
        reps.append(state)
        queue.append(index[key])

    for key in start:
        register(key, start_states[key])
    A = len(actions)
    tally = _Tally()
    globals_ = GlobalGenerators(store.snapshot.classes)
    saved = globals_.save()
    seed = int(ctx.rng.integers(2**62))
    globals_.seed(seed)
    env, generators = store.restore(store.root)
    seed_all(env, seed, generators)
    bar = tqdm(total=None, unit=" states", desc=f"sampling {ctx.label}", disable=None, leave=False)
    try:
        while queue:
            s = queue.popleft()
            state = reps[s]
            for a, action in enumerate(actions):
                row = s * A + a
                for _ in range(ctx.n_samples):
                    env, _ = store.restore(state)
                    outcome = step_outcome(env.step(action))
                    store.check()
                    tally.add(row, outcome)
                    if not outcome[2] and outcome[0] not in index:
                        register(outcome[0], store.capture())
            bar.total = len(index)
            bar.update(1)  # redrawn at most every `mininterval` (a forced refresh per state costs on big models)
    finally:
        globals_.restore(saved)
        bar.close()
    return tally, index, start, rho_how


def _start_states(ctx: RouteContext, store: StateStore) -> tuple[dict[Any, Any], dict[Any, State], str]:
    """``(observation -> probability or count, observation -> State, how)`` of ``reset``: probed exactly
    on the working copy when possible (not tried again when an earlier route found it impossible),
    else sampled from ``ctx.reset_samples`` seeded resets."""
    if ctx.reset_unprobeable is None:
        session = ProbeSession(store.snapshot.classes)
        runner = StoreRunner(store)
        try:
            dist: dict[Any, float] = probe_states(runner, reset_outcome, session)  # (observation, None) -> p
            session.check()
            start: dict[Any, Any] = {}
            for full, p in dist.items():
                start[full[0]] = start.get(full[0], 0.0) + p
            return start, {full[0]: runner.states[full] for full in dist}, "reset, probed exactly"
        except ProbeFailed as exc:
            ctx.reset_unprobeable = str(exc)
        finally:
            session.close()
    counts, states, how = sample_resets(ctx, store)
    return dict(counts), states, how


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
