"""Dynamic attention allocation: the exact tabular model (after fairness-gym, as used in
Alamdari, Ebadian & Procaccia, "Policy Aggregation", NeurIPS 2024).

``k`` sites each have an incident phase in ``0..m-1``. Each step the planner attends one
site (action ``j < k``) or none (action ``k``). The attended site's phase drops by one
(floor 0); every unattended site below the top phase rises by one with a site- and
phase-specific escalation probability ``q[j, phase]``; a site at the top phase stays there
until attended. Sites move independently given the action, so ``P_a`` is the Kronecker
product of ``k`` per-site ``m x m`` matrices.

States are encoded in mixed radix: ``s = sum_j phase_j * m**j`` (site 0 least significant).

Agent ``i`` has non-negative weights ``w_i`` over the sites it cares about; its reward is
``r_i(s, a) = -attention_cost * [a < k] - penalty * sum_j w_ij [phase_j(s) = m-1 and a != j]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import scipy.sparse as sp

from policyagg.errors import InvalidProblemError, float_array
from policyagg.mdp import TabularMDP

#: Default range of the escalation probabilities drawn from the seed.
ESCALATION_RANGE = (0.1, 0.6)


@dataclass(frozen=True, eq=False)
class AttentionModel:
    """Parameters of the attention-allocation dynamics.

    ``escalation[j, p]`` is the probability that unattended site ``j`` in phase ``p < m-1``
    moves to ``p + 1`` in one step (shape ``(k, m-1)``).
    """

    n_sites: int = 5
    n_phases: int = 3
    escalation: np.ndarray | None = None
    seed: int | None = 0
    attention_cost: float = 1.0
    penalty: float = 100.0
    _q: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        for name in ("attention_cost", "penalty"):
            value = getattr(self, name)
            try:
                value = float(value)
            except (TypeError, ValueError) as exc:
                raise InvalidProblemError(f"`{name}` must be a non-negative finite number; got {value!r}") from exc
            if not (np.isfinite(value) and value >= 0):
                raise InvalidProblemError(f"`{name}` must be a non-negative finite number; got {value!r}")
            object.__setattr__(self, name, value)
        k, m = self.n_sites, self.n_phases
        if not (isinstance(k, (int, np.integer)) and k >= 1):
            raise InvalidProblemError(f"`n_sites` must be a positive integer; got {k!r}")
        if not (isinstance(m, (int, np.integer)) and m >= 2):
            raise InvalidProblemError(f"`n_phases` must be an integer >= 2; got {m!r}")
        if self.escalation is None:
            q = np.random.default_rng(self.seed).uniform(*ESCALATION_RANGE, size=(k, m - 1))
        else:
            q = float_array("escalation", self.escalation)
            if q.shape != (k, m - 1):
                raise InvalidProblemError(
                    f"`escalation` must have shape (n_sites, n_phases - 1) = ({k}, {m - 1}); got {q.shape}"
                )
            if not np.all((q >= 0) & (q <= 1)):
                raise InvalidProblemError("`escalation` probabilities must lie in [0, 1]")
        q.flags.writeable = False
        object.__setattr__(self, "_q", q)

    @property
    def q(self) -> np.ndarray:
        return self._q

    @property
    def n_states(self) -> int:
        return self.n_phases**self.n_sites

    @property
    def n_actions(self) -> int:
        return self.n_sites + 1

    def phases(self) -> np.ndarray:
        """``(S, k)`` array: the phase of every site in every state."""
        s = np.arange(self.n_states)
        return (s[:, None] // self.n_phases ** np.arange(self.n_sites)) % self.n_phases

    def site_matrix(self, site: int, attended: bool) -> sp.csr_array:
        """``m x m`` phase transition matrix of one site."""
        m = self.n_phases
        if attended:
            return sp.csr_array((np.ones(m), (np.arange(m), np.maximum(np.arange(m) - 1, 0))), shape=(m, m))
        up = np.append(self._q[site], 0.0)  # the top phase stays
        rows = np.concatenate([np.arange(m), np.arange(m - 1)])
        cols = np.concatenate([np.arange(m), np.arange(1, m)])
        return sp.csr_array((np.concatenate([1.0 - up, up[:-1]]), (rows, cols)), shape=(m, m))

    def transition_matrix(self) -> sp.csr_array:
        """``P`` as sparse ``(S*A, S)``: row ``s*A + a``; built from Kronecker products."""
        S, A = self.n_states, self.n_actions
        per_action = []
        for a in range(A):
            # kron(T_{k-1}, ..., T_0): site 0 is the least significant digit.
            factors = [self.site_matrix(j, attended=(a == j)) for j in reversed(range(self.n_sites))]
            per_action.append(reduce(lambda x, y: sp.kron(x, y, format="csr"), factors))
        stacked = sp.vstack(per_action, format="coo")  # row a*S + s
        a, s = np.divmod(stacked.row, S)
        return sp.csr_array((stacked.data, (s * A + a, stacked.col)), shape=(S * A, S))

    def mdp(self, *, gamma: float = 1.0, rho=None) -> TabularMDP:
        """The tabular MDP; by default average reward, starting with every site in phase 0."""
        if rho is None:
            rho = np.zeros(self.n_states)
            rho[0] = 1.0
        return TabularMDP(self.transition_matrix(), rho=rho, gamma=gamma, n_actions=self.n_actions)

    def rewards(self, site_weights) -> np.ndarray:
        """Rewards ``(n, S, A)`` for agents given by their site weights ``(n, k)``."""
        w = np.atleast_2d(float_array("site_weights", site_weights))
        if w.shape[1] != self.n_sites or np.any(w < 0) or not np.all(np.isfinite(w)):
            raise InvalidProblemError(
                f"`site_weights` must be non-negative, finite, of shape (n, {self.n_sites}); got {w.shape}"
            )
        at_top = (self.phases() == self.n_phases - 1).astype(float)  # (S, k)
        # unattended_top[s, a, j] = site j at top in s and a != j
        unattended_top = np.repeat(at_top[:, None, :], self.n_actions, axis=1)
        unattended_top[:, np.arange(self.n_sites), np.arange(self.n_sites)] = 0.0
        cost = np.where(np.arange(self.n_actions) < self.n_sites, self.attention_cost, 0.0)
        return -cost[None, None, :] - self.penalty * np.einsum("saj,nj->nsa", unattended_top, w)


def one_agent_per_site(n_sites: int, rng) -> np.ndarray:
    """Experiment (a): agent ``j`` cares only about site ``j``, with a weight ~ U(0, 1)."""
    rng = np.random.default_rng(rng)
    return np.diag(rng.uniform(0.0, 1.0, size=n_sites))


def random_site_subsets(n_agents: int, n_sites: int, rng) -> np.ndarray:
    """Experiment (b): each agent cares about a random non-empty subset of sites, weights ~ U(0, 1)."""
    rng = np.random.default_rng(rng)
    weights = rng.uniform(0.0, 1.0, size=(n_agents, n_sites))
    mask = rng.random((n_agents, n_sites)) < 0.5
    mask[np.arange(n_agents), rng.integers(n_sites, size=n_agents)] = True  # never empty
    return weights * mask
