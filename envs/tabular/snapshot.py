"""Snapshots of an environment's state: take, restore, verify, reseed.

A :class:`Snapshot` is a deep copy of ``env.unwrapped.__dict__``; every :meth:`Snapshot.restore`
gives an independent environment in that state. :func:`verify_snapshot` checks that restored
copies step exactly like the original (same seeds, same outcomes); routes that need snapshots
fall back when it fails (:class:`SnapshotError`). :func:`seed_all` gives a restored copy its
``np_random`` and reseeds every other generator it holds, so one seed fixes a step.
"""

from __future__ import annotations

import copy
import random as _pyrandom
from collections.abc import Sequence
from typing import Any

import numpy as np

from policyagg.envs.tabular.spaces import step_outcome

_RNG_TYPES = (np.random.Generator, np.random.RandomState, _pyrandom.Random)


class SnapshotError(Exception):
    """The environment cannot be snapshotted and restored (the message says why)."""


class Snapshot:
    """The ``__dict__`` of an environment, frozen once; :meth:`restore` gives an independent copy.

    The dict is copied rather than the object so that ``__getstate__`` hooks (``EzPickle``
    rebuilds a *fresh* environment from its constructor arguments) are bypassed.
    """

    def __init__(self, cls: type, payload: dict[str, Any]) -> None:
        self.cls, self.payload = cls, payload

    @classmethod
    def take(cls, env: Any) -> Snapshot:
        state = getattr(env, "__dict__", None)
        if state is None:
            raise SnapshotError(f"{type(env).__name__} has no __dict__ to copy")
        try:
            return cls(type(env), copy.deepcopy(state))
        except Exception as exc:
            raise SnapshotError(f"its state cannot be copied ({type(exc).__name__}: {exc})") from exc

    def restore(self) -> Any:
        env: Any = object.__new__(self.cls)
        env.__dict__.update(copy.deepcopy(self.payload))
        return env


def verify_snapshot(snapshot: Snapshot, actions: Sequence[Any]) -> None:
    """A snapshot taken mid-episode must step exactly like the environment it was taken from."""
    try:
        env = snapshot.restore()
        seed_all(env, 0)
        env.reset(seed=0)
        for t in range(2):
            _, _, terminated, _, _ = env.step(actions[t % len(actions)])
            if terminated:
                seed_all(env, 1)
                env.reset()
        copy_ = Snapshot.take(env).restore()
        for t in range(3):
            seed_all(env, 10 + t)
            seed_all(copy_, 10 + t)
            action = actions[(t + 1) % len(actions)]
            a, b = step_outcome(env.step(action)), step_outcome(copy_.step(action))
            if a != b:
                raise SnapshotError(f"a restored copy steps differently from the original ({a} vs {b})")
            if a[2]:
                break
    except SnapshotError:
        raise
    except Exception as exc:
        raise SnapshotError(f"a restored copy fails ({type(exc).__name__}: {exc})") from exc


def _other_rngs(env: Any) -> list[str]:
    """Attributes of ``env`` holding a random generator other than ``np_random``."""
    return [name for name, value in vars(env).items() if name != "_np_random" and isinstance(value, _RNG_TYPES)]


def seed_all(env: Any, seed: int, np_random: Any = None) -> None:
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
