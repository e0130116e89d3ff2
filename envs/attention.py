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

Two *variants* fix how a seed draws the escalation probabilities and the agents' weights
(:data:`VARIANTS`); both use ``attention_cost = 1``, a free no-op and ``penalty = 100``:

* ``"classic"`` (this package's first parameterisation): ``q ~ U(0.1, 0.6)``; experiment (a)
  weights ``~ U(0, 1)``; experiment (b) weights ``~ U(0, 1)`` on a random subset of sites
  (each site kept with probability 1/2, at least one);
* ``"paper"`` (the paper's public code, praal/policy-aggregation, read from its outputs and
  source): ``q`` uniform on ``{0.50, 0.51, ..., 0.79}``; experiment (a) weight of agent ``j``
  on site ``j`` uniform on :data:`PAPER_AGENT_MULTIPLES` ``= {0.25, 0.5, ..., 5.75}``;
  experiment (b) site weights ``w_f`` uniform on :data:`PAPER_SITE_WEIGHTS` ``= {1, 1.5, 2, 2.5}``
  (drawn once, shared by every agent) times a per-agent multiple from
  :data:`PAPER_AGENT_MULTIPLES`, over a non-empty subset of sites drawn uniformly from the
  ``2^k - 1`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from policyagg.errors import InvalidProblemError, float_array
from policyagg.kronecker import KroneckerTransitions
from policyagg.mdp import TabularMDP

#: Range of the escalation probabilities the ``classic`` variant draws from the seed.
ESCALATION_RANGE = (0.1, 0.6)
#: The ``paper`` variant's escalation probabilities: uniform on {0.50, 0.51, ..., 0.79}.
PAPER_ESCALATIONS = np.arange(50, 80) / 100
#: The ``paper`` variant's per-agent weight multiples: {0.25, 0.5, ..., 5.75} (the paper's code
#: draws ``randint(1, 4 (k + 1)) / 4`` with ``k = 5`` sites; kept fixed here for any ``k``).
PAPER_AGENT_MULTIPLES = np.arange(1, 24) / 4
#: The ``paper`` variant's site weights in experiment (b): {1, 1.5, 2, 2.5} (the paper's code:
#: ``randint(2, k + 1) / 2`` with ``k = 5``).
PAPER_SITE_WEIGHTS = np.array([1.0, 1.5, 2.0, 2.5])
#: The named parameterisations of the model and its populations (module docstring).
VARIANTS = ("classic", "paper")


def check_variant(variant: str) -> str:
    """``variant`` if it is one of :data:`VARIANTS`, else an :class:`InvalidProblemError`."""
    if variant not in VARIANTS:
        raise InvalidProblemError(f"`variant` must be one of {', '.join(map(repr, VARIANTS))}; got {variant!r}")
    return variant


def draw_escalation(n_sites: int, n_phases: int, rng, variant: str = "classic") -> np.ndarray:
    """Escalation probabilities ``(n_sites, n_phases - 1)`` of ``variant``: ``U(0.1, 0.6)``
    (classic) or uniform on {0.50, ..., 0.79} (paper)."""
    rng = np.random.default_rng(rng)
    if check_variant(variant) == "paper":
        return rng.choice(PAPER_ESCALATIONS, size=(n_sites, n_phases - 1))
    return rng.uniform(*ESCALATION_RANGE, size=(n_sites, n_phases - 1))


@dataclass(frozen=True, eq=False)
class AttentionModel:
    """Parameters of the attention-allocation dynamics.

    ``escalation[j, p]`` is the probability that unattended site ``j`` in phase ``p < m-1``
    moves to ``p + 1`` in one step (shape ``(k, m-1)``); if ``None`` it is drawn from ``seed``
    as ``variant`` says (:func:`draw_escalation`).
    """

    n_sites: int = 5
    n_phases: int = 3
    escalation: np.ndarray | None = None
    seed: int | None = 0
    attention_cost: float = 1.0
    penalty: float = 100.0
    variant: str = "classic"
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
        check_variant(self.variant)
        if self.escalation is None:
            q = draw_escalation(k, m, self.seed, self.variant)
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

    def kronecker(self) -> KroneckerTransitions:
        """The factored dynamics: every site moves independently; action ``j < k`` attends site
        ``j`` (its matrix is replaced), action ``k`` attends none."""
        base = [self.site_matrix(j, attended=False) for j in range(self.n_sites)]
        overrides: list[dict[int, Any]] = [{j: self.site_matrix(j, attended=True)} for j in range(self.n_sites)]
        return KroneckerTransitions(base, [*overrides, {}])

    def transition_matrix(self) -> sp.csr_array:
        """``P`` as sparse ``(S*A, S)``: row ``s*A + a``; built from Kronecker products."""
        return self.kronecker().matrix()

    def mdp(self, *, gamma: float = 1.0, rho=None) -> TabularMDP:
        """The tabular MDP; by default average reward, starting with every site in phase 0.
        It carries its :meth:`kronecker` structure (the sampler's fast products)."""
        if rho is None:
            rho = np.zeros(self.n_states)
            rho[0] = 1.0
        structure = self.kronecker()
        return TabularMDP(structure.matrix(), rho=rho, gamma=gamma, n_actions=self.n_actions, kronecker=structure)

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


def paper_one_agent_per_site(n_sites: int, rng) -> np.ndarray:
    """Experiment (a), ``paper`` variant: agent ``j`` cares only about site ``j``, with a weight
    uniform on :data:`PAPER_AGENT_MULTIPLES` (``{0.25, 0.5, ..., 5.75}``)."""
    rng = np.random.default_rng(rng)
    return np.diag(rng.choice(PAPER_AGENT_MULTIPLES, size=n_sites))


def paper_random_site_subsets(n_agents: int, n_sites: int, rng) -> np.ndarray:
    """Experiment (b), ``paper`` variant: ``w_ij = m_i w_j`` on a uniformly random non-empty
    subset of sites, with site weights ``w_j`` uniform on :data:`PAPER_SITE_WEIGHTS` (shared by
    all agents) and per-agent multiples ``m_i`` uniform on :data:`PAPER_AGENT_MULTIPLES`."""
    rng = np.random.default_rng(rng)
    site = rng.choice(PAPER_SITE_WEIGHTS, size=n_sites)
    multiple = rng.choice(PAPER_AGENT_MULTIPLES, size=n_agents)
    subsets = rng.integers(1, 2**n_sites, size=n_agents)  # bit j set: the agent cares about site j
    mask = (subsets[:, None] >> np.arange(n_sites)) & 1
    return multiple[:, None] * site[None, :] * mask


def site_weights(experiment: str, n_sites: int, rng, *, n_agents: int = 10, variant: str = "classic") -> np.ndarray:
    """The agents' site weights ``(n, n_sites)`` of experiment ``"a"`` (one agent per site) or
    ``"b"`` (``n_agents`` agents on random subsets of sites) in ``variant``."""
    paper = check_variant(variant) == "paper"
    if experiment == "a":
        return (paper_one_agent_per_site if paper else one_agent_per_site)(n_sites, rng)
    if experiment == "b":
        return (paper_random_site_subsets if paper else random_site_subsets)(n_agents, n_sites, rng)
    raise InvalidProblemError(
        f"`experiment` must be 'a' (one agent per site) or 'b' (random subsets); got {experiment!r}"
    )
