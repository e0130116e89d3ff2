"""A policy-aggregation problem: one MDP, ``n`` agents' rewards, optional constraints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import InvalidProblemError, float_array
from policyagg.mdp import TabularMDP
from policyagg.polytope import LinearConstraints, OccupancyPolytope

#: Agents whose return range ``max_O J_i - min_O J_i`` is at most this (relative to the
#: reward scale) are indifferent: their normalised return is defined as 1.
FLAT_RANGE = 1e-9


@dataclass(frozen=True, eq=False)
class ReturnRanges:
    """Per-agent ``min_O J_i`` and ``max_O J_i`` with optimal occupancies (computed by ``solvers``)."""

    lower: NDArray[np.float64]  # (n,)
    upper: NDArray[np.float64]  # (n,)
    best: NDArray[np.float64]  # (n, S*A): an occupancy attaining upper[i]
    worst: NDArray[np.float64]  # (n, S*A): an occupancy attaining lower[i]

    @property
    def width(self) -> NDArray[np.float64]:
        return self.upper - self.lower

    @property
    def flat(self) -> NDArray[np.bool_]:
        """Agents whose return is (numerically) the same on the whole polytope: a range of at
        most ``FLAT_RANGE`` of the return's magnitude (relative, so any reward scale agrees)."""
        return self.width <= FLAT_RANGE * np.maximum(np.abs(self.lower), np.abs(self.upper))

    def normalize(self, returns: ArrayLike) -> NDArray[np.float64]:
        """``(J_i - min_O J_i) / (max_O J_i - min_O J_i)``; 1 for indifferent agents. Shape (..., n)."""
        returns = np.asarray(returns, dtype=float)
        width = np.where(self.flat, 1.0, self.width)
        return np.where(self.flat, 1.0, (returns - self.lower) / width)


@dataclass(frozen=True, eq=False, init=False)
class Problem:
    """``n`` agents with rewards ``r_i(s, a)`` sharing ``mdp``.

    Parameters
    ----------
    mdp : TabularMDP
    rewards : array (n, S, A)
    names : sequence of str, optional (default ``agent0``, ``agent1``, ...)
    weights : array (n,), optional, positive (default all 1)
    constraints : LinearConstraints, optional
        Extra linear constraints on the occupancy, honoured by every rule.
    ranges : ReturnRanges, optional
        Cached per-agent return ranges; see ``solvers.with_ranges``.
    """

    # The attributes hold the validated values (``names``, ``weights`` and ``constraints`` are
    # always set); the constructor, written out below, takes the optional arguments above.
    mdp: TabularMDP
    rewards: NDArray[np.float64]
    names: tuple[str, ...]
    weights: NDArray[np.float64]
    constraints: LinearConstraints
    ranges: ReturnRanges | None = field(repr=False)

    def __init__(
        self,
        mdp: TabularMDP,
        rewards: ArrayLike,
        names: Sequence[str] | None = None,
        weights: ArrayLike | None = None,
        constraints: LinearConstraints | None = None,
        ranges: ReturnRanges | None = None,
    ) -> None:
        if not isinstance(mdp, TabularMDP):
            raise InvalidProblemError(
                f"`mdp` must be a TabularMDP (build one with TabularMDP(P, rho=..., gamma=...)); got {type(mdp).__name__}"
            )
        object.__setattr__(self, "mdp", mdp)
        S, A, SA = mdp.n_states, mdp.n_actions, mdp.n_state_actions
        reward_array = float_array("rewards", rewards)  # a private copy (made read-only below)
        if reward_array.ndim == 2:
            reward_array = reward_array[None]
        if reward_array.ndim != 3 or reward_array.shape[1:] != (S, A) or reward_array.shape[0] == 0:
            raise InvalidProblemError(
                f"`rewards` must have shape (n, S, A) = (n, {S}, {A}) with n >= 1; got {np.shape(rewards)}"
            )
        if not np.all(np.isfinite(reward_array)):
            i, s, a = np.argwhere(~np.isfinite(reward_array))[0]
            raise InvalidProblemError(f"`rewards` has a non-finite entry for agent {i} at (state, action) = ({s}, {a})")
        n = reward_array.shape[0]
        if names is not None and (isinstance(names, str) or not all(isinstance(x, str) for x in names)):
            raise InvalidProblemError(f"`names` must be a sequence of strings, one per agent; got {names!r}")
        agent_names = tuple(f"agent{i}" for i in range(n)) if names is None else tuple(names)
        if len(agent_names) != n:
            raise InvalidProblemError(f"`names` must have one name per agent ({n}); got {len(agent_names)}")
        if len(set(agent_names)) != n:
            raise InvalidProblemError(f"`names` must be distinct; got {agent_names}")
        weight_array = np.ones(n) if weights is None else float_array("weights", weights)
        if weight_array.shape != (n,):
            raise InvalidProblemError(f"`weights` must have shape (n,) = ({n},); got {weight_array.shape}")
        bad = np.flatnonzero(~(np.isfinite(weight_array) & (weight_array > 0)))
        if bad.size:
            raise InvalidProblemError(
                f"`weights` must be finite and > 0; agent {int(bad[0])} has {weight_array[bad[0]]}"
            )
        linear = constraints or LinearConstraints.empty(SA)
        if linear.n_vars != SA:
            raise InvalidProblemError(f"`constraints` act on {linear.n_vars} variables; the MDP has S*A = {SA}")
        if ranges is not None and ranges.lower.shape != (n,):
            raise InvalidProblemError(f"`ranges` must cover the {n} agents")
        reward_array.flags.writeable = False
        weight_array.flags.writeable = False
        for name, value in (
            ("rewards", reward_array),
            ("names", agent_names),
            ("weights", weight_array),
            ("constraints", linear),
            ("ranges", ranges),
        ):
            object.__setattr__(self, name, value)

    @property
    def n_agents(self) -> int:
        return int(self.rewards.shape[0])

    @cached_property
    def reward_matrix(self) -> NDArray[np.float64]:
        """Rewards as ``(n, S*A)`` so that ``J = reward_matrix @ d``."""
        return self.rewards.reshape(self.n_agents, -1)

    @cached_property
    def polytope(self) -> OccupancyPolytope:
        return OccupancyPolytope.from_mdp(self.mdp)

    def returns(self, d: ArrayLike) -> NDArray[np.float64]:
        """``J_i(d) = <r_i, d>`` for an occupancy of shape (S, A) or (S*A,)."""
        returns: NDArray[np.float64] = self.reward_matrix @ np.asarray(d, dtype=float).ravel()  # numpy: @ is Any
        return returns

    def with_ranges(self, ranges: ReturnRanges) -> Problem:
        return replace(self, ranges=ranges)

    def require_ranges(self) -> ReturnRanges:
        if self.ranges is None:
            raise InvalidProblemError(
                "this needs per-agent return ranges; compute them with `solvers.with_ranges(problem)`"
            )
        return self.ranges
