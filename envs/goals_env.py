"""Goals on a line: a small continuous-observation environment with one reward per agent.

A walker moves on ``[-1, 1]``; each agent has a goal point and is rewarded by a bump around
it. No single place serves every agent, so the fair answer is a lottery over policies (or a
compromise position), while a utilitarian planner parks at one goal. It learns in well under a
minute with PPO on one core, which makes it the test bed of the deep-RL oracle
(:mod:`policyagg.envs.oracles.sb3`); it has no tabular model.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from policyagg.errors import InvalidProblemError, check_real

#: Actions: move left, stay, move right.
MOVES = np.array([-1.0, 0.0, 1.0])


def _validate(
    goals, width, step_size, noise, start, start_spread
) -> tuple[np.ndarray, float, float, float, float, float]:
    """Check the constructor arguments; return them standardised (goals as a float vector)."""
    try:
        g = np.array(goals, dtype=float).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InvalidProblemError(f"`goals` must be a vector of positions in [-1, 1]; got {goals!r}") from exc
    if g.size < 1 or not np.all(np.isfinite(g)) or np.any(np.abs(g) > 1):
        raise InvalidProblemError(f"`goals` must be a non-empty vector of positions in [-1, 1]; got {g.tolist()}")
    positive = {"width": width, "step_size": step_size}
    for name, value in positive.items():
        if not check_real(name, value) > 0:
            raise InvalidProblemError(f"`{name}` must be > 0; got {value}")
    for name, value in {"noise": noise, "start_spread": start_spread}.items():
        if not check_real(name, value) >= 0:
            raise InvalidProblemError(f"`{name}` must be >= 0; got {value}")
    if not -1 <= check_real("start", start) <= 1:
        raise InvalidProblemError(f"`start` must be a position in [-1, 1]; got {start}")
    return g, float(width), float(step_size), float(noise), float(start), float(start_spread)


class GoalsOnALine(gym.Env[np.ndarray, np.int64]):
    """A walker on ``[-1, 1]`` and ``n`` agents who each want it near their own goal.

    ## Description
    The position ``x`` starts near ``start`` and moves by ``step_size`` per step left or
    right (or stays), plus Gaussian noise of standard deviation ``noise``, clipped to
    ``[-1, 1]``.

    ## Action Space
    ``Discrete(3)``: 0 moves left, 1 stays, 2 moves right.

    ## Observation Space
    ``Box(-1, 1, (1,), float32)``: the position ``x``.

    ## Rewards
    A float32 vector with one entry per agent (MO-Gymnasium convention: see ``reward_space``
    and ``reward_dim``), ``r_i = exp(-(x - g_i)^2 / (2 width^2))`` at the position reached
    after the step, in ``[0, 1]``.

    ## Starting State
    ``x_0 = start + U(-start_spread, start_spread)``, clipped to ``[-1, 1]``.

    ## Episode End
    Never terminates; the registered id ``policyagg/GoalsOnALine-v0`` truncates after 100 steps.

    ## Arguments
    ``goals=(-0.8, 0.2, 0.8)`` (one agent per goal), ``width=0.2``, ``step_size=0.2``,
    ``noise=0.05``, ``start=0.0``, ``start_spread=0.05``.

    ## Version History
    * v0: Initial version.

    Examples
    --------
    >>> import gymnasium
    >>> import policyagg.envs  # registers the environment
    >>> env = gymnasium.make("policyagg/GoalsOnALine-v0")
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, env.unwrapped.reward_dim
    ((1,), 3)
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        goals=(-0.8, 0.2, 0.8),
        width: float = 0.2,
        step_size: float = 0.2,
        noise: float = 0.05,
        start: float = 0.0,
        start_spread: float = 0.05,
    ):
        self.goals, self.width, self.step_size, self.noise, self.start, self.start_spread = _validate(
            goals, width, step_size, noise, start, start_spread
        )
        self.goals.flags.writeable = False
        self.action_space = spaces.Discrete(3)
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self.reward_dim = self.goals.size
        self.reward_space = spaces.Box(0.0, 1.0, shape=(self.reward_dim,), dtype=np.float32)
        self.names = tuple(f"goal{g:+.2f}" for g in self.goals)
        self._x: float | None = None

    def rewards_at(self, x) -> np.ndarray:
        """Every agent's reward at positions ``x`` (any shape), shape ``x.shape + (n,)``."""
        x = np.asarray(x, dtype=float)[..., None]
        return np.exp(-((x - self.goals) ** 2) / (2 * self.width**2))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        spread = self.start_spread
        self._x = float(np.clip(self.start + self.np_random.uniform(-spread, spread), -1.0, 1.0))
        return np.array([self._x], dtype=np.float32), {}

    def step(self, action):
        if self._x is None:
            raise ResetNeeded("Call `reset` before `step`.")
        if not self.action_space.contains(action):
            raise InvalidProblemError(f"`action` must be 0 (left), 1 (stay) or 2 (right); got {action!r}")
        move = MOVES[int(action)] * self.step_size + self.noise * self.np_random.standard_normal()
        self._x = float(np.clip(self._x + move, -1.0, 1.0))
        reward = self.rewards_at(self._x).astype(np.float32)
        return np.array([self._x], dtype=np.float32), reward, False, False, {}
