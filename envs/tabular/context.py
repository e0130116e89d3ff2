"""What the routes share: the environment, the validated options, and a lazily verified snapshot.

:func:`make_env` turns an id into an environment; :class:`RouteContext` holds it with the
options of :func:`from_gymnasium` and builds the final :class:`EnvModel` (:meth:`RouteContext.finish`);
:func:`sample_resets` estimates the start distribution from seeded resets;
a route that cannot apply raises :class:`RouteUnavailable`.
"""

from __future__ import annotations

import importlib
import inspect
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import gymnasium
import numpy as np
from gymnasium.envs.registration import load_env_creator

from policyagg.envs.tabular.chain import check_wrappers
from policyagg.envs.tabular.model import EnvModel, ModelWarning, assemble
from policyagg.envs.tabular.snapshot import GlobalGenerators, Snapshot, SnapshotError, seed_all, verify_snapshot
from policyagg.envs.tabular.spaces import ObservationKey, action_list, check_observation_space, observation_key
from policyagg.envs.tabular.states import StateStore
from policyagg.errors import InvalidProblemError, check_count

ON_TERMINATION = ("absorb", "reset")
#: Default number of resets sampled for ``rho`` when neither the environment nor a probed reset gives it.
RESET_SAMPLES = 500
#: A start state first seen in this last share of the reset samples triggers a :class:`ModelWarning`.
LATE_SHARE = 0.1


class RouteUnavailable(Exception):
    """This route cannot build the model (the message says why; ``warn``: tell the user when falling back)."""

    def __init__(self, message: str, *, warn: bool = False) -> None:
        super().__init__(message)
        self.warn = warn


def make_env(env: gymnasium.Env | str, **kwargs: Any) -> gymnasium.Env:
    """``env`` itself, or ``gymnasium.make(env, **kwargs)`` for a registered id.

    Ids of MO-Gymnasium (imported only if needed and installed) are made with
    ``mo_gymnasium.make`` (its env checker knows vector rewards); ``policyagg/...`` ids
    import :mod:`policyagg.envs`, which registers them.
    """
    if isinstance(env, gymnasium.Env):
        return env
    if not isinstance(env, str):
        raise InvalidProblemError(f"`env` must be a gymnasium.Env or a registered id; got {type(env).__name__}")
    spec = env_spec(env)
    if spec is not None and isinstance(spec.entry_point, str) and spec.entry_point.startswith("mo_gymnasium"):
        import mo_gymnasium

        return mo_gymnasium.make(env, **kwargs)  # type: ignore[attr-defined]  # re-exported without __all__
    try:
        return gymnasium.make(env, **kwargs)  # also resolves an id without its version
    except gymnasium.error.Error as exc:
        raise InvalidProblemError(
            f"`env` {env!r} is not a registered Gymnasium id (nor an MO-Gymnasium one): {exc}"
        ) from exc
    except TypeError as exc:  # a keyword the constructor does not take
        allowed = env_options(env)
        raise InvalidProblemError(
            f"{env!r} cannot be made with {sorted(kwargs)}: {exc}"
            + (f"; its options are: {', '.join(allowed)}" if allowed else "")
        ) from exc


def env_spec(env_id: str) -> Any:
    """The registered spec of ``env_id``, or ``None``; MO-Gymnasium's ids (if it is installed)
    and ``policyagg/...`` ids are registered on demand by importing those packages."""
    spec = _find_spec(env_id)
    if spec is None:
        try:
            importlib.import_module("policyagg.envs" if env_id.startswith("policyagg/") else "mo_gymnasium")
        except ImportError:
            pass
        spec = _find_spec(env_id)
    return spec


#: Keyword options of ``gymnasium.make`` itself, accepted besides the environment's own.
MAKE_OPTIONS = ("max_episode_steps", "disable_env_checker")


def env_options(env_id: str) -> tuple[str, ...] | None:
    """The keyword options :func:`make_env` accepts for the registered ``env_id``: the
    environment constructor's named parameters and :data:`MAKE_OPTIONS`; ``None`` when the
    constructor takes any keyword (``**kwargs``) or has no readable signature. The
    constructor's module is imported (it is registered, so installed code); nothing is built."""
    spec = env_spec(env_id)
    if spec is None:
        raise InvalidProblemError(f"{env_id!r} is not a registered Gymnasium id (nor an MO-Gymnasium one)")
    try:
        creator = spec.entry_point if callable(spec.entry_point) else load_env_creator(spec.entry_point)
        params = inspect.signature(creator).parameters.values()
    except (TypeError, ValueError):
        return None
    except (ImportError, AttributeError) as exc:
        raise InvalidProblemError(f"{env_id!r} is registered, but its entry point cannot be loaded: {exc}") from exc
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    named = (p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return (*named, *MAKE_OPTIONS)


def _find_spec(env_id: str) -> Any:
    try:
        return gymnasium.spec(env_id)
    except gymnasium.error.Error:
        return None


class RouteContext:
    """Validated arguments and what the routes learn about the environment, shared between them."""

    def __init__(
        self,
        env: gymnasium.Env | str,
        gamma: float,
        on_termination: str,
        n_samples: int,
        max_states: int,
        allow_multichain: bool,
        rng: Any,
        reset_samples: int = RESET_SAMPLES,
    ) -> None:
        if on_termination not in ON_TERMINATION:
            raise InvalidProblemError(f"`on_termination` must be one of {ON_TERMINATION}; got {on_termination!r}")
        check_count("n_samples", n_samples, 2)
        check_count("max_states", max_states, 1)
        check_count("reset_samples", reset_samples, 1)
        self.env = make_env(env)
        self.base = self.env.unwrapped
        spec = getattr(self.env, "spec", None)
        self.label = spec.id if spec is not None else type(self.base).__name__
        check_wrappers(self.env, self.label)
        self.reset_samples = int(reset_samples)
        self.gamma = gamma
        self.on_termination = on_termination
        self.n_samples = int(n_samples)
        self.max_states = int(max_states)
        self.allow_multichain = allow_multichain
        self.rng = np.random.default_rng(rng)
        self.reset_report: dict[str, Any] = {}  # filled by sample_resets
        self._snapshot: Snapshot | None = None
        self.snapshot_reason: str | None = None  # why the environment cannot be snapshotted, once known
        self.snapshot_mismatch = False  # ... because a copy stepped differently (randomness the copy lacks)
        self.reset_unprobeable: str | None = None  # why `reset` has no exact distribution, once a route found out

    # ------------------------------------------------------------- spaces (lazily checked)
    def check_spaces(self) -> list[Any]:
        """The actions of the environment as the user steps it; InvalidProblemError for unsupported spaces."""
        check_observation_space(self.env.observation_space, self.label)
        return action_list(self.env.action_space, self.label)

    def snapshot(self) -> Snapshot | None:
        """A verified snapshot of the environment's modelled layers as given (before any reset), or ``None``."""
        if self._snapshot is None and self.snapshot_reason is None:
            try:
                self._snapshot = Snapshot.take(self.env)
                verify_snapshot(self._snapshot, self.check_spaces())
            except SnapshotError as exc:
                self._snapshot, self.snapshot_reason = None, str(exc)
                self.snapshot_mismatch = exc.mismatch
        return self._snapshot

    def finish(
        self,
        P_rows: Any,
        P_cols: Any,
        P_probs: Any,
        reward_sa: Any,
        rho: Any,
        observations: Sequence[ObservationKey],
        actions: Sequence[Any],
        route: str,
        info: dict[str, Any],
    ) -> EnvModel:
        """The :class:`EnvModel` of transition entries (see :func:`assemble`), with ``info`` completed."""
        mdp, rewards, states, absorbing = assemble(
            P_rows,
            P_cols,
            P_probs,
            reward_sa,
            rho,
            observations,
            len(actions),
            gamma=self.gamma,
            on_termination=self.on_termination,
            allow_multichain=self.allow_multichain,
        )
        info = {"absorbing": absorbing, "on_termination": self.on_termination, **info}
        return EnvModel(mdp, rewards, states, route, info, tuple(actions))


def sample_resets(
    ctx: RouteContext, store: StateStore | None = None
) -> tuple[Counter[ObservationKey], dict[ObservationKey, Any], str]:
    """Observation counts of ``ctx.reset_samples`` seeded resets, one reset environment per observation
    (with ``store``: one :class:`State` of its working copy), and how.

    Resets the working copy of ``store``, else restored copies when the environment can be
    restored, else the environment itself. The
    process-wide generators are seeded once too (restored afterwards), so the counts depend
    on ``ctx.rng`` only. A :class:`ModelWarning` says when a start state was first
    seen in the last :data:`LATE_SHARE` of the samples (more are likely unseen), with the
    Good--Turing estimate of the unseen start mass, ``n_1 / N`` (``n_1`` states seen once).
    """
    snapshot = ctx.snapshot()
    classes = snapshot.classes if snapshot is not None else [type(ctx.base)]
    globals_ = GlobalGenerators(classes)
    saved = globals_.save()
    counts: Counter[ObservationKey] = Counter()
    envs: dict[ObservationKey, Any] = {}
    last_new = 0
    globals_.seed(int(ctx.rng.integers(2**62)))
    try:
        for i, seed in enumerate(ctx.rng.integers(2**62, size=ctx.reset_samples)):
            if store is not None:
                env, generators = store.restore(store.root)
            elif snapshot is not None:
                env, generators = snapshot.restore_with_generators()
            else:
                env, generators = ctx.env, []
            if env is not ctx.env:
                seed_all(env, int(seed), generators)
            obs, _ = env.reset(seed=int(seed))
            key = observation_key(obs)
            if store is not None:
                store.check()
            if key not in counts:
                last_new = i
                envs[key] = env if store is None else store.capture()
            counts[key] += 1
    finally:
        globals_.restore(saved)
    n = ctx.reset_samples
    late = last_new >= n - math.ceil(LATE_SHARE * n) and n > 1
    unseen = sum(c == 1 for c in counts.values()) / n
    ctx.reset_report = {"reset_samples": n, "start_states": len(counts), "unseen_start_mass": unseen}
    if late:
        warnings.warn(
            f"{ctx.label}: {len(counts)} start states in {n} resets, and new ones still appeared in the last "
            f"{LATE_SHARE:.0%} of them (estimated unseen start probability {unseen:.3g}); the model may lack "
            "states that rollouts reach: raise `reset_samples`",
            ModelWarning,
            stacklevel=5,
        )
    return counts, envs, f"sampled from {n} resets"
