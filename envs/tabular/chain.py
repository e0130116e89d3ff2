"""The wrappers between the user and ``env.unwrapped``: which are modelled, and how.

The model describes the environment *as the user steps it*, through its wrappers. Each
wrapper is one of:

* **transparent** (:data:`TRANSPARENT`): it changes neither observations, rewards,
  actions nor termination (``TimeLimit``, ``OrderEnforcing``, the env checker, episode
  statistics, rendering). It is left out of the stepped copies; truncation is ignored anyway.
* **a value map**: an ``ObservationWrapper``, ``RewardWrapper`` or ``ActionWrapper`` that
  overrides only ``observation``/``reward``/``action`` (``TransformReward``,
  ``FlattenObservation``, a user's ``Box -> Discrete`` map, ...). It is assumed to be a
  fixed function of its argument, so the routes that read a table (``"model"``) apply it
  to the table's entries: ``r'(s, a) = sum p f(reward)``, the observation of state ``s``
  is ``g(s)``, model action ``a`` is ``h(a)`` in the unwrapped environment.
* **general**: anything else that overrides ``step`` or ``reset``. Only the routes that
  step the environment (``"enumerate"``, ``"sampled"``) model it, by stepping it.
* **refused** (:data:`HISTORY`): its output depends on the history, which the observation
  does not show (sticky actions, delayed observations, running normalisation); no
  tabular model over observations describes it, so :func:`check_wrappers` raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium
import numpy as np

from policyagg.errors import InvalidProblemError

#: Wrappers that change nothing the model describes (matched by class name, so MO-Gymnasium's count too).
TRANSPARENT = frozenset(
    {
        "TimeLimit",
        "OrderEnforcing",
        "PassiveEnvChecker",
        "RecordEpisodeStatistics",
        "MORecordEpisodeStatistics",
        "Autoreset",
        "RenderCollection",
        "HumanRendering",
        "RecordVideo",
    }
)

#: Wrappers whose output depends on the history (class name -> why), refused by name.
HISTORY = {
    "StickyAction": "it repeats the previous action with some probability, and the observation does not show it",
    "DelayObservation": "its observation is one from earlier steps, which does not identify the current state",
    "NormalizeObservation": "it rescales observations by running statistics that change with every step",
    "NormalizeReward": "it rescales rewards by running statistics that change with every step",
    "MONormalizeReward": "it rescales rewards by running statistics that change with every step",
}

_MAP_BASES = (
    (gymnasium.ObservationWrapper, "observation"),
    (gymnasium.RewardWrapper, "reward"),
    (gymnasium.ActionWrapper, "action"),
)


def wrappers(env: Any) -> list[gymnasium.Wrapper]:
    """The wrapper layers of ``env``, outermost first (empty for an unwrapped environment)."""
    out = []
    while isinstance(env, gymnasium.Wrapper):
        out.append(env)
        env = env.env
    return out


def is_transparent(wrapper: Any) -> bool:
    """Whether ``wrapper`` changes nothing the model describes (:data:`TRANSPARENT`)."""
    return type(wrapper).__name__ in TRANSPARENT and isinstance(wrapper, gymnasium.Wrapper)


def map_kind(wrapper: Any) -> str | None:
    """``"observation"``, ``"reward"`` or ``"action"`` for a value-map wrapper, else ``None``.

    A value map subclasses the matching Gymnasium base and keeps its ``step`` and ``reset``.
    """
    cls = type(wrapper)
    for base, kind in _MAP_BASES:
        if isinstance(wrapper, base) and cls.step is base.step and cls.reset is base.reset:
            return kind
    return None


def check_wrappers(env: Any, label: str) -> None:
    """:class:`InvalidProblemError` naming the first wrapper of ``env`` that cannot be modelled."""
    for wrapper in wrappers(env):
        why = HISTORY.get(type(wrapper).__name__)
        if why is not None:
            raise InvalidProblemError(
                f"{label}: the wrapper {type(wrapper).__name__} cannot be modelled as a tabular MDP over "
                f"observations: {why}. Convert the environment without it"
            )


def modelled_layers(env: Any) -> list[Any]:
    """The layers a stepped copy keeps: the non-transparent wrappers (outermost first), then ``env.unwrapped``."""
    return [w for w in wrappers(env) if not is_transparent(w)] + [env.unwrapped]


class ValueMaps:
    """The value-map wrappers of ``env`` composed: what the user sees of the unwrapped values.

    ``observation(x)`` and ``reward(r)`` apply the innermost wrapper first; ``action(a)``
    takes a user action to the unwrapped environment's action (outermost first).
    :attr:`general` names the wrappers that are neither transparent nor value maps.
    """

    def __init__(self, env: Any) -> None:
        layers = [w for w in wrappers(env) if not is_transparent(w)]
        self.general = [type(w).__name__ for w in layers if map_kind(w) is None]
        self._layers = [(w, map_kind(w)) for w in layers]
        self.kinds = {kind for _, kind in self._layers if kind is not None}

    def _apply(self, kind: str, value: Any, outer_first: bool) -> Any:
        layers = self._layers if outer_first else self._layers[::-1]
        for wrapper, k in layers:
            if k == kind:
                method: Callable[[Any], Any] = getattr(wrapper, kind)
                value = method(value)
        return value

    def observation(self, obs: Any) -> Any:
        return self._apply("observation", obs, outer_first=False)

    def reward(self, reward: Any) -> Any:
        return self._apply("reward", reward, outer_first=False)

    def action(self, action: Any) -> Any:
        return self._apply("action", action, outer_first=True)

    def rewards(self, values: np.ndarray) -> np.ndarray:
        """``(len(values), n)`` mapped rewards of scalar rewards ``values``, each distinct value mapped once."""
        values = np.asarray(values, dtype=float)
        if "reward" not in self.kinds:
            return values[:, None]
        unique, inverse = np.unique(values, return_inverse=True)
        mapped = [np.asarray(self.reward(float(u)), dtype=float).ravel() for u in unique]
        if len({m.size for m in mapped}) > 1:
            raise InvalidProblemError("the reward wrappers return rewards of different lengths")
        table = np.array(mapped, dtype=float).reshape(len(unique), -1)
        return table[inverse.ravel()]
