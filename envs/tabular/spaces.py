"""Which Gymnasium spaces can be tabulated, and their values as hashable keys.

Observations must be ``Discrete``, ``MultiDiscrete``, ``MultiBinary``, an integer ``Box``
with finite bounds, or a ``Tuple``/``Dict`` of these (nested as deep as needed); an
observation becomes an int, a tuple of ints, or for ``Tuple``/``Dict`` a tuple of its
components' keys (``Dict`` components in sorted key order) (:func:`observation_key`).
Actions must be ``Discrete``, ``MultiDiscrete`` or a small integer ``Box``; model action
``a`` is ``action_list(space)[a]``, the joint actions in ``itertools.product`` order.
"""

from __future__ import annotations

import itertools
from typing import Any, TypeAlias

import numpy as np
from gymnasium import spaces

from policyagg.errors import InvalidProblemError

#: Most actions of a ``MultiDiscrete`` or integer ``Box`` action space.
MAX_ACTIONS = 10_000

#: Hashable form of an observation: an int, or a tuple of keys.
ObservationKey: TypeAlias = int | tuple[Any, ...]
#: ``(next observation key, reward tuple, terminated)`` of one step.
StepOutcome: TypeAlias = tuple[ObservationKey, tuple[float, ...], bool]


def observation_key(obs: Any) -> ObservationKey:
    """Hashable form of an observation: an int, a tuple of ints, or (``Tuple``/``Dict``) a tuple of keys."""
    if type(obs) is np.ndarray and obs.dtype.kind == "i":  # the usual array: its values are ints already
        return int(obs) if obs.ndim == 0 else tuple(obs.ravel().tolist())
    if isinstance(obs, (int, np.integer)) and not isinstance(obs, bool):
        return int(obs)
    if isinstance(obs, tuple):
        if all(type(v) is int for v in obs):
            return obs
        return tuple(observation_key(v) for v in obs)
    if isinstance(obs, dict):
        return tuple(observation_key(obs[k]) for k in sorted(obs))
    try:
        arr = np.asarray(obs)
    except Exception as exc:
        raise InvalidProblemError(f"observation {obs!r} is not an integer or an array of integers") from exc
    if arr.dtype.kind in "iub" or arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        values = arr.astype(np.int64)
    else:
        raise InvalidProblemError(f"observation {obs!r} is not an integer or an array of integers")
    return int(values) if values.ndim == 0 else tuple(values.ravel().tolist())


def step_outcome(step_result: tuple[Any, Any, Any, Any, Any]) -> StepOutcome:
    """``(observation key, reward tuple, terminated)`` of a ``step`` return."""
    obs, reward, terminated, _truncated, _info = step_result
    if type(reward) is float or type(reward) is int:
        return observation_key(obs), (float(reward),), bool(terminated)
    if type(reward) is np.ndarray and reward.dtype.kind == "f" and reward.dtype.itemsize <= 8:  # exact as doubles
        return observation_key(obs), tuple(reward.ravel().tolist()), bool(terminated)
    return observation_key(obs), tuple(np.asarray(reward, dtype=float).ravel().tolist()), bool(terminated)


def reset_outcome(env: Any) -> ObservationKey:
    """The observation key of ``env.reset()`` (the environment's own generator decides)."""
    obs, _ = env.reset()
    return observation_key(obs)


def check_observation_space(space: spaces.Space[Any], label: str, where: str = "") -> None:
    """:class:`InvalidProblemError` naming ``space`` (or its component) unless its observations can be tabulated."""
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        return
    if isinstance(space, spaces.Tuple):
        for i, component in enumerate(space.spaces):
            check_observation_space(component, label, f"{where}[{i}]")
        return
    if isinstance(space, spaces.Dict):
        for key, component in space.spaces.items():
            check_observation_space(component, label, f"{where}[{key!r}]")
        return
    part = f"component {where} of its observation space" if where else "observation space"
    if isinstance(space, spaces.Box):
        if not np.issubdtype(space.dtype, np.integer):
            raise InvalidProblemError(
                f"{label} has a continuous {part} {space}: a tabular model needs discrete "
                "observations; discretise it first (e.g. an ObservationWrapper onto Discrete or MultiDiscrete)"
            )
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise InvalidProblemError(f"{label} has an unbounded integer Box {part} {space}; give it finite bounds")
        return
    raise InvalidProblemError(
        f"{label} has {part} {space}: only Discrete, MultiDiscrete, MultiBinary, integer Box observations and "
        "Tuple/Dict of them can be tabulated; wrap the environment in an ObservationWrapper that maps its "
        "observations onto one of these"
    )


def action_list(space: spaces.Space[Any], label: str) -> list[Any]:
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
        raise InvalidProblemError(
            f"{label} has {total} joint actions in {space}; at most {MAX_ACTIONS} can be tabulated"
        )
    return [np.array(combo, dtype=space.dtype).reshape(shape) for combo in itertools.product(*ranges)]
