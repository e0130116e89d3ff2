"""The tabular model of an environment (:class:`EnvModel`) and its assembly from transitions.

Every route ends in :func:`assemble`: transition entries ``(row = s*A + a, next state,
probability)``, with next state ``-1`` for a terminating transition, become the sparse
``P`` of a :class:`TabularMDP`. Terminating transitions go to one absorbing zero-reward
state (``"absorb"``) or back to ``rho`` (``"reset"``: ``P += t rho^T`` with ``t`` the
terminating mass of each row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from policyagg.envs.tabular.spaces import ObservationKey, observation_key
from policyagg.errors import InvalidProblemError
from policyagg.mdp import TabularMDP
from policyagg.problem import Problem


class ModelWarning(UserWarning):
    """The tabular model is weaker than it could be: estimated instead of exact, or likely missing states.

    Issued by :func:`~policyagg.envs.tabular.from_gymnasium` when an environment draws its
    randomness from a generator other than ``env.np_random`` (the model is then sampled;
    the message names the generator) and when sampled resets keep finding new start states.
    """


@dataclass(frozen=True, eq=False)
class EnvModel:
    """A tabular model of a Gymnasium environment, built by :func:`from_gymnasium`.

    ``observations[s]`` is the observation of state ``s`` as an int or a tuple of ints; the
    absorbing state (if any) is the last state and has observation ``None``. ``actions[a]``
    is the environment action of model action ``a``. ``info`` holds ``absorbing`` (index
    or ``None``), ``on_termination``, ``rho`` (where the initial distribution came from),
    ``exact``, ``skipped`` (route -> why it was not used) and the route's own figures.
    """

    mdp: TabularMDP
    rewards: np.ndarray  # (n, S, A)
    observations: list
    route: str
    info: dict
    actions: tuple = ()
    _index: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rewards = np.array(self.rewards, dtype=float)
        if rewards.ndim == 2:
            rewards = rewards[None]
        S, A = self.mdp.n_states, self.mdp.n_actions
        if rewards.ndim != 3 or rewards.shape[1:] != (S, A):
            raise InvalidProblemError(
                f"`rewards` must have shape (n, S, A) = (n, {S}, {A}); got {np.shape(self.rewards)}"
            )
        if len(self.observations) != S:
            raise InvalidProblemError(
                f"`observations` must have one entry per state ({S}); got {len(self.observations)}"
            )
        rewards.flags.writeable = False
        observations = [None if o is None else observation_key(o) for o in self.observations]
        index = {o: s for s, o in enumerate(observations) if o is not None}
        if len(index) != sum(o is not None for o in observations):
            raise InvalidProblemError("`observations` must be distinct: two states share an observation")
        actions = tuple(self.actions) if len(self.actions) else tuple(range(A))
        if len(actions) != A:
            raise InvalidProblemError(f"`actions` must have one entry per action ({A}); got {len(actions)}")
        for name, value in (
            ("rewards", rewards),
            ("observations", observations),
            ("actions", actions),
            ("_index", index),
        ):
            object.__setattr__(self, name, value)

    @property
    def n_agents(self) -> int:
        return self.rewards.shape[0]

    def state_index(self, observation: Any) -> int:
        """The state of an observation; :class:`InvalidProblemError` naming it if the model has none."""
        key = observation_key(observation)
        try:
            return self._index[key]
        except KeyError:
            raise InvalidProblemError(
                f"observation {key!r} is not a state of this model ({len(self._index)} states, route "
                f"{self.route!r}); the environment reached a state the model never saw"
            ) from None

    def problem(self, *, names: Any = None, rewards: Any = None, **options: Any) -> Problem:
        """``Problem(mdp, rewards or self.rewards, names=names, **options)``."""
        return Problem(self.mdp, self.rewards if rewards is None else rewards, names=names, **options)


def assemble(
    rows: Any,
    cols: Any,
    probs: Any,
    reward_sa: Any,
    rho: Any,
    observations: Sequence[ObservationKey],
    A: int,
    *,
    gamma: float,
    on_termination: str,
    allow_multichain: bool,
) -> tuple[TabularMDP, np.ndarray, list[ObservationKey | None], int | None]:
    """The MDP from transition entries: ``cols == -1`` marks a terminating transition.

    Returns ``(mdp, rewards (n, S, A), observations, absorbing state or None)``.
    """
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    probs = np.asarray(probs, dtype=float)
    reward_sa = np.atleast_2d(np.asarray(reward_sa, dtype=float))
    S = len(observations)
    terminal = cols < 0
    states: list[ObservationKey | None] = list(observations)
    rho = np.asarray(rho, dtype=float)
    absorbing = None
    if on_termination == "absorb":
        if terminal.any():
            absorbing = S
            cols = np.where(terminal, absorbing, cols)
            rows = np.concatenate([rows, absorbing * A + np.arange(A)])
            cols = np.concatenate([cols, np.full(A, absorbing)])
            probs = np.concatenate([probs, np.ones(A)])
            reward_sa = np.hstack([reward_sa, np.zeros((reward_sa.shape[0], A))])
            rho = np.append(rho, 0.0)
            states.append(None)
        n_states = len(states)
        P = sp.csr_array((probs, (rows, cols)), shape=(n_states * A, n_states))  # duplicates are summed
    else:
        n_states = S
        stay = ~terminal
        P = sp.csr_array((probs[stay], (rows[stay], cols[stay])), shape=(S * A, S))
        restart = np.bincount(rows[terminal], weights=probs[terminal], minlength=S * A)
        if restart.any():
            P = sp.csr_array(P + sp.csr_array(restart[:, None]) @ sp.csr_array(rho[None, :]))
    mdp = TabularMDP(P, rho=rho, gamma=gamma, n_actions=A, allow_multichain=allow_multichain)
    return mdp, reward_sa.reshape(-1, n_states, A), states, absorbing
