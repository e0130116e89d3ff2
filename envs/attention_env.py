"""Dynamic attention allocation as a Gymnasium environment with one reward per agent.

The dynamics and rewards come from :class:`policyagg.envs.attention.AttentionModel`: the step samples
each site's next phase from the model's escalation probabilities ``q``, and the reward is
read from the model's own reward table, so the environment and its exact tabular model
(:meth:`AttentionAllocation.tabular_model`) cannot disagree.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded

from policyagg.envs.attention import AttentionModel
from policyagg.errors import InvalidProblemError
from policyagg.mdp import TabularMDP


def _validate_args(n_sites, n_phases, escalation, model_seed, site_weights, attention_cost, penalty, start):
    """Check the constructor arguments; return ``(model, site_weights (n, k), start phases (k,))``."""
    model = AttentionModel(
        n_sites,
        n_phases,
        escalation=escalation,
        seed=model_seed,
        attention_cost=attention_cost,
        penalty=penalty,
    )
    k, m = model.n_sites, model.n_phases

    if site_weights is None:
        weights = np.eye(k)
    else:
        try:
            weights = np.array(site_weights, dtype=float)
        except (TypeError, ValueError) as exc:
            raise InvalidProblemError(f"`site_weights` must be a numeric array of shape (n_agents, {k})") from exc
        if weights.ndim != 2 or weights.shape[0] < 1 or weights.shape[1] != k:
            raise InvalidProblemError(
                f"`site_weights` must have shape (n_agents, n_sites) = (n, {k}) with n >= 1; got {weights.shape}"
            )
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise InvalidProblemError("`site_weights` must be non-negative and finite")
    weights.flags.writeable = False
    return model, weights, _validate_phases(start, k, m, "start")


def _validate_phases(phases, k: int, m: int, name: str) -> np.ndarray:
    """``"zeros"`` or a length-``k`` integer vector with entries in ``0..m-1``, as int64."""
    if isinstance(phases, str):
        if phases != "zeros":
            raise InvalidProblemError(
                f"`{name}` must be 'zeros' or a vector of {k} phases in 0..{m - 1}; got {phases!r}"
            )
        return np.zeros(k, dtype=np.int64)
    try:
        raw = np.asarray(phases)
    except (TypeError, ValueError) as exc:
        raise InvalidProblemError(f"`{name}` must be 'zeros' or a vector of {k} phases in 0..{m - 1}") from exc
    if raw.shape != (k,) or not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise InvalidProblemError(
            f"`{name}` must be 'zeros' or a vector of {k} phases in 0..{m - 1}; got shape {raw.shape}"
        )
    if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)) or np.any((raw < 0) | (raw > m - 1)):
        raise InvalidProblemError(
            f"`{name}` must be 'zeros' or a vector of {k} phases in 0..{m - 1}; got {raw.tolist()}"
        )
    return raw.astype(np.int64)


class AttentionAllocation(gym.Env[np.ndarray, np.int64]):
    """Dynamic attention allocation (after fairness-gym, as used in Alamdari, Ebadian &
    Procaccia, "Policy Aggregation", NeurIPS 2024), with one reward component per agent.

    ## Description
    ``k`` sites each have an incident phase in ``0..m-1``. Each step the planner attends one
    site or none. The attended site's phase drops by one (floor 0); every unattended site
    below the top phase rises by one with probability ``q[j, phase]`` (site- and
    phase-specific, drawn from ``model_seed`` unless ``escalation`` is given); a site at the
    top phase stays there until attended. Sites move independently.

    ## Action Space
    ``Discrete(k + 1)``: action ``j < k`` attends site ``j``; action ``k`` attends none.

    ## Observation Space
    ``MultiDiscrete([m] * k)`` (int64): the phase of every site. The tabular state index is
    ``s = sum_j phase_j * m**j`` (:meth:`state_index`).

    ## Rewards
    A float32 vector with one entry per agent (MO-Gymnasium convention: see ``reward_space``
    and ``reward_dim``). Agent ``i`` with site weights ``w_i`` receives, for state ``s`` and
    action ``a``,
    ``r_i(s, a) = -attention_cost * [a < k] - penalty * sum_j w_ij [phase_j(s) = m-1, a != j]``,
    read from :meth:`policyagg.envs.attention.AttentionModel.rewards`.

    ## Starting State
    ``start``: every site in phase 0 (``"zeros"``) or a given phase vector; deterministic.
    ``reset(options={"start": phases})`` starts one episode elsewhere.

    ## Episode End
    The task is continuing: ``terminated`` is always ``False``. The registered id
    ``policyagg/AttentionAllocation-v0`` truncates after 1000 steps.

    ## Arguments
    ``n_sites=5, n_phases=3, escalation=None (array (k, m-1)), model_seed=0,
    site_weights=None (array (n, k); default one agent per site with weight 1),
    attention_cost=1.0, penalty=100.0, start="zeros"``. The reward table costs
    ``n * m**k * (k + 1)`` floats, built once at construction.

    ## Version History
    * v0: Initial version.

    Examples
    --------
    >>> import gymnasium
    >>> import policyagg.envs  # registers the environment
    >>> env = gymnasium.make("policyagg/AttentionAllocation-v0", disable_env_checker=True)
    >>> obs, info = env.reset(seed=0)
    >>> obs.tolist(), env.unwrapped.reward_dim
    ([0, 0, 0, 0, 0], 5)
    >>> mdp, rewards, observations = env.unwrapped.tabular_model()
    >>> mdp.n_states, rewards.shape, observations[env.unwrapped.state_index(obs)]
    (243, (5, 243, 6), (0, 0, 0, 0, 0))
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        n_sites: int = 5,
        n_phases: int = 3,
        escalation=None,
        model_seed: int | None = 0,
        site_weights=None,
        attention_cost: float = 1.0,
        penalty: float = 100.0,
        start="zeros",
    ):
        self.model, self.site_weights, self.start = _validate_args(
            n_sites, n_phases, escalation, model_seed, site_weights, attention_cost, penalty, start
        )
        k, m = self.model.n_sites, self.model.n_phases
        self._radix = m ** np.arange(k, dtype=np.int64)
        # The top phase never rises: pad q with a zero column so q_pad[j, phase] is always defined.
        self._rise = np.concatenate([self.model.q, np.zeros((k, 1))], axis=1)
        self._rewards = self.model.rewards(self.site_weights)  # (n, S, A), the LP model's table
        self._rewards.flags.writeable = False

        self.action_space = spaces.Discrete(k + 1)
        self.observation_space = spaces.MultiDiscrete(np.full(k, m), dtype=np.int64)
        self.reward_dim = self.site_weights.shape[0]
        # Exact bounds of the table; float32 rounding is monotone, so every step's reward lies inside.
        self.reward_space = spaces.Box(
            low=self._rewards.min(axis=(1, 2)).astype(np.float32),
            high=self._rewards.max(axis=(1, 2)).astype(np.float32),
            dtype=np.float32,
        )
        self._phases: np.ndarray | None = None

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        start = self.start
        if options and "start" in options:
            start = _validate_phases(options["start"], self.model.n_sites, self.model.n_phases, "options['start']")
        self._phases = start.copy()
        return self._phases.copy(), {}

    def step(self, action):
        if self._phases is None:
            raise ResetNeeded("Call `reset` before `step`.")
        if not self.action_space.contains(action):
            raise InvalidProblemError(f"`action` must be an integer in 0..{self.model.n_sites}; got {action!r}")
        a = int(action)
        phases = self._phases
        reward = self._rewards[:, int(phases @ self._radix), a].astype(np.float32)

        k = self.model.n_sites
        rises = self.np_random.random(k) < self._rise[np.arange(k), phases]
        new = phases + rises
        if a < k:
            new[a] = max(phases[a] - 1, 0)
        self._phases = new
        return new.copy(), reward, False, False, {}

    # ------------------------------------------------------------------ tabular model
    def state_index(self, observation) -> int:
        """Tabular state index ``sum_j phase_j * m**j`` of an observation."""
        phases = _validate_phases(observation, self.model.n_sites, self.model.n_phases, "observation")
        return int(phases @ self._radix)

    def tabular_model(self, gamma: float = 1.0) -> tuple[TabularMDP, np.ndarray, list[tuple[int, ...]]]:
        """The exact model: ``(mdp, rewards (n, S, A), observations)``.

        ``mdp`` starts at the start state (point mass ``rho``); ``rewards`` are the
        environment's agents' rewards; ``observations[s]`` is the phase tuple of state ``s``,
        so ``observations[env.state_index(obs)] == tuple(obs)``.
        """
        rho = np.zeros(self.model.n_states)
        rho[self.state_index(self.start)] = 1.0
        mdp = self.model.mdp(gamma=gamma, rho=rho)
        observations = list(map(tuple, self.model.phases().tolist()))
        return mdp, self._rewards, observations
