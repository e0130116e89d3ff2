"""Tabular MDPs: validation, structure, policy evaluation, occupancy <-> policy.

A :class:`TabularMDP` holds ``P`` as a ``scipy.sparse`` CSR matrix of shape ``(S*A, S)``
(row ``s*A + a`` is ``P(. | s, a)``), the initial distribution ``rho`` and ``gamma``.
``gamma < 1`` is the discounted criterion, ``gamma == 1`` the average-reward one.

Occupancies are normalised: ``d(s, a) >= 0`` and ``sum d = 1``. For ``gamma < 1``,
``d = (1 - gamma) * sum_t gamma^t Pr(s_t = s, a_t = a)``; for ``gamma == 1`` it is the
long-run (Cesaro) average of the same probabilities from ``rho``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import InvalidMDPError, check_real, float_array
from policyagg.kronecker import KroneckerTransitions
from policyagg.planning import (
    Structure,
    cesaro_limit,
    closed_components,
    graph_structure,
    positive_graph,
    steering_actions,
    union_adjacency,
)
from policyagg.triangular import TriangularStructure, accepted
from policyagg.triangular import solve as triangular_solve

#: Rows of ``P`` and ``rho`` must sum to 1 within this absolute tolerance; they are
#: then renormalised exactly.
SUM_TOL = 1e-8
#: A state whose occupancy is at most this is treated as unvisited.
ZERO_OCCUPANCY = 1e-12
#: Occupancy entries at or below one of these levels (``d`` sums to 1) may be solver noise:
#: :meth:`TabularMDP.derive_policy` drops them, trying the levels finest first.
NOISE_LEVELS = (ZERO_OCCUPANCY, 1e-10, 1e-8, 1e-6)
#: A policy *delivers* an occupancy ``d`` when its exact occupancy ``d_pi`` has
#: ``||d_pi - d||_1`` at most this: every return ``<r, d>`` is then within ``max|r|`` times it.
DELIVERY_TOL = 1e-5
#: Average reward: a closed class of the derived policy's chain whose ``d``-mass is at most this
#: is solver noise (a loop of off-route states that would trap the chain), never a target.
TRAP_MASS = 1e-6
#: From this many states on, a discounted MDP whose strongly connected components are small enough
#: (:func:`policyagg.triangular.pays`) solves its policies' flow and value systems by block
#: substitution (:attr:`TabularMDP.triangular`) instead of a sparse LU or an iterative solver.
TRIANGULAR_MIN_STATES = 1000

#: What ``P`` may be given as: a dense ``(S, A, S)`` array or a sparse ``(S*A, S)`` matrix.
TransitionLike: TypeAlias = ArrayLike | sp.sparray | sp.spmatrix


class StructureWarning(UserWarning):
    """The MDP's graph structure may make results misleading (see the message)."""


class DeliveryWarning(UserWarning):
    """A result's policy does not deliver the returns of its occupancy (see the message)."""


@dataclass(frozen=True)
class DerivedPolicy:
    """A policy derived from an occupancy ``d`` and the certificate that it delivers ``d``.

    ``occupancy`` is the policy's exact occupancy ``d_pi`` (from ``rho``; shape (S, A)) and
    ``distance = ||d_pi - d||_1``, so ``|<r, d_pi> - <r, d>| <= max|r| * distance`` for every
    reward ``r``. ``noise_level``: entries of ``d`` at or below it were dropped as solver noise.
    ``classes``: closed classes of the policy's chain holding ``d``-mass above :data:`TRAP_MASS`
    (average reward; 1 when discounted). With one, ``d_pi`` is the exact stationary occupancy of
    the policy ``d`` describes, so ``distance`` is the solver's feasibility error (amplified by
    the chain's conditioning); with several, ``d`` mixes classes in proportions that no
    stationary policy started from ``rho`` keeps.
    """

    policy: NDArray[np.float64]
    occupancy: NDArray[np.float64]
    distance: float
    noise_level: float
    classes: int = 1

    @property
    def delivers(self) -> bool:
        """``distance <= DELIVERY_TOL``."""
        return self.distance <= DELIVERY_TOL


def _as_transition_matrix(P: TransitionLike, n_actions: int | None) -> sp.csr_array:
    """Return ``P`` as a CSR ``(S*A, S)`` float array; accepts dense ``(S, A, S)`` or sparse."""
    if sp.issparse(P):
        if n_actions is None:
            raise InvalidMDPError("`n_actions` is required when `P` is sparse of shape (S*A, S)")
        sparse = sp.csr_array(P)
        if np.iscomplexobj(sparse.data):
            raise InvalidMDPError("`P` must be real; got a complex sparse matrix")
        P = sparse.astype(float)
        if P.ndim != 2 or P.shape[0] != P.shape[1] * n_actions:
            raise InvalidMDPError(f"sparse `P` must have shape (S*A, S) = (S*{n_actions}, S); got {P.shape}")
        return P
    dense = float_array("P", P, InvalidMDPError)
    if dense.ndim != 3 or dense.shape[0] != dense.shape[2]:
        raise InvalidMDPError(f"dense `P` must have shape (S, A, S) with P[s, a, s'] = P(s'|s, a); got {dense.shape}")
    if n_actions is not None and n_actions != dense.shape[1]:
        raise InvalidMDPError(f"`n_actions`={n_actions} does not match dense `P` shape {dense.shape}")
    S, A, _ = dense.shape
    return sp.csr_array(dense.reshape(S * A, S))


def _validate(
    P: sp.csr_array, S: int, A: int, rho: ArrayLike | None, gamma: float
) -> tuple[sp.csr_array, NDArray[np.float64], float]:
    """One validation entry point; returns standardised ``(P, rho, gamma)``."""
    if S == 0 or A == 0:
        raise InvalidMDPError(f"`P` must have at least one state and one action; got S={S}, A={A}")
    data = P.data
    if not np.all(np.isfinite(data)):
        row = int(np.searchsorted(P.indptr, np.flatnonzero(~np.isfinite(data))[0], side="right") - 1)
        raise InvalidMDPError(f"`P` has a non-finite probability at (state, action) = {divmod(row, A)}")
    if np.any(data < 0):
        row = int(np.searchsorted(P.indptr, np.flatnonzero(data < 0)[0], side="right") - 1)
        raise InvalidMDPError(f"`P` has a negative probability at (state, action) = {divmod(row, A)}")
    sums = np.asarray(P.sum(axis=1)).ravel()
    bad = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOL)
    if bad.size:
        s, a = divmod(int(bad[0]), A)
        raise InvalidMDPError(
            f"`P` row for (state, action) = ({s}, {a}) sums to {sums[bad[0]]:.12g}; every row of "
            f"P(.|s, a) must sum to 1 within {SUM_TOL:g} ({bad.size} row(s) fail)"
        )
    P = sp.csr_array(sp.diags_array(1.0 / sums) @ P)
    P.eliminate_zeros()
    P.sort_indices()

    gamma = check_real("gamma", gamma, InvalidMDPError)  # a bool would silently be 1 (average reward)
    if not (0.0 < gamma <= 1.0):
        raise InvalidMDPError(f"`gamma` must be in (0, 1] (1 = average reward); got {gamma}")

    initial = np.full(S, 1.0 / S) if rho is None else float_array("rho", rho, InvalidMDPError)
    if initial.shape != (S,):
        raise InvalidMDPError(f"`rho` must have shape (S,) = ({S},); got {initial.shape}")
    if not np.all(np.isfinite(initial)):
        raise InvalidMDPError(f"`rho` has a non-finite entry at state {int(np.flatnonzero(~np.isfinite(initial))[0])}")
    if np.any(initial < 0):
        raise InvalidMDPError(f"`rho` has a negative entry at state {int(np.flatnonzero(initial < 0)[0])}")
    if abs(initial.sum() - 1.0) > SUM_TOL:
        raise InvalidMDPError(f"`rho` must sum to 1 within {SUM_TOL:g}; it sums to {initial.sum():.12g}")
    return P, initial / initial.sum(), gamma


@dataclass(frozen=True, eq=False, init=False)
class TabularMDP:
    """A finite MDP ``(S, A, P, rho, gamma)``; ``gamma == 1`` means average reward.

    Parameters
    ----------
    P : array (S, A, S) or sparse (S*A, S)
        ``P[s, a, s'] = P(s' | s, a)``; rows must sum to 1 within :data:`SUM_TOL`.
    rho : array (S,), optional
        Initial distribution (uniform if omitted).
    gamma : float in (0, 1]
        Discount factor; 1 selects the average-reward criterion.
    n_actions : int
        Required when ``P`` is sparse.
    allow_multichain : bool
        With ``gamma == 1`` an MDP whose union graph has several closed classes is
        refused (the average-reward polytope ignores ``rho``, so its points mix classes
        the system may never reach); set this to only warn.
    kronecker : KroneckerTransitions, optional
        The same ``P`` in factored form (:mod:`policyagg.kronecker`), which the ``policy``
        measure's sampler uses for its fast products; checked against ``P``.

    Examples
    --------
    >>> P = np.array([[[1.0], [1.0]]])          # one state, two actions
    >>> TabularMDP(P, gamma=0.9).n_states
    1
    """

    # The attributes hold the validated values (``rho`` and ``n_actions`` are always set); the
    # constructor, written out below, takes the optional arguments documented above.
    P: sp.csr_array
    rho: NDArray[np.float64]
    gamma: float
    n_actions: int
    allow_multichain: bool
    kronecker: KroneckerTransitions | None
    n_states: int = field(init=False)

    def __init__(
        self,
        P: TransitionLike,
        rho: ArrayLike | None = None,
        gamma: float = 0.99,
        n_actions: int | None = None,
        allow_multichain: bool = False,
        kronecker: KroneckerTransitions | None = None,
    ) -> None:
        matrix = _as_transition_matrix(P, n_actions)
        S = matrix.shape[1]
        A = matrix.shape[0] // S if S else 0
        matrix, initial, discount = _validate(matrix, S, A, rho, gamma)
        if kronecker is not None:
            if not isinstance(kronecker, KroneckerTransitions):
                raise InvalidMDPError(f"`kronecker` must be a KroneckerTransitions; got {type(kronecker).__name__}")
            if not kronecker.agrees_with(matrix, tol=10 * SUM_TOL):
                raise InvalidMDPError(
                    f"`kronecker` ({kronecker.n_states} states, {kronecker.n_actions} actions) does not describe `P` "
                    f"({S} states, {A} actions); pass the structure `P` was built from, or none"
                )
        for name, value in (
            ("P", matrix),
            ("rho", initial),
            ("gamma", discount),
            ("n_actions", A),
            ("allow_multichain", allow_multichain),
            ("kronecker", kronecker),
            ("n_states", S),
        ):
            object.__setattr__(self, name, value)
        initial.flags.writeable = False
        if discount == 1.0:
            self._check_average_reward_structure()

    # ----------------------------------------------------------------- structure
    @property
    def n_state_actions(self) -> int:
        return self.n_states * self.n_actions

    @property
    def average_reward(self) -> bool:
        return self.gamma == 1.0

    @cached_property
    def P_dense(self) -> NDArray[np.float64]:
        """``P`` as a dense ``(S, A, S)`` array (only for small MDPs)."""
        dense: NDArray[np.float64] = self.P.toarray().reshape(self.n_states, self.n_actions, self.n_states)
        return dense

    @cached_property
    def kronecker_gap(self) -> float:
        """``max_row sum_t |P - K|`` (exactly), with ``K`` the matrix of the :attr:`kronecker`
        structure, which the constructor checked to ``10 SUM_TOL`` by random products only. Computed
        on first use and kept (the ``policy`` sampler's kronecker method bounds its residuals with it;
        at 9 attention sites building ``K`` takes seconds and hundreds of megabytes)."""
        if self.kronecker is None:
            raise InvalidMDPError("this MDP has no Kronecker structure (TabularMDP(..., kronecker=...))")
        difference = sp.csr_array(self.P - self.kronecker.matrix())
        if difference.nnz == 0:
            return 0.0
        return float(np.abs(difference).sum(axis=1).max())

    @cached_property
    def action_sum(self) -> sp.csr_array:
        """``(S, S*A)`` 0/1 matrix summing over actions: ``(action_sum @ x)[s] = sum_a x[s*A + a]``."""
        return sp.csr_array(sp.kron(sp.eye_array(self.n_states), np.ones((1, self.n_actions)), format="csr"))

    @cached_property
    def union_graph(self) -> sp.csr_array:
        """Boolean ``(S, S)`` adjacency of the union graph: ``s -> s'`` iff ``P(s'|s, a) > 0`` for some ``a``."""
        return union_adjacency(self.P, self.n_actions)

    @cached_property
    def triangular_structure(self) -> TriangularStructure | None:
        """The states ordered by strongly connected components (:mod:`policyagg.triangular`),
        under which every policy's discounted flow system is block triangular; ``None`` for
        ``gamma == 1``."""
        if self.average_reward:
            return None
        paying = self.triangular  # already built where it pays
        return paying if paying is not None else TriangularStructure.from_transitions(self.P, self.n_actions)

    @cached_property
    def triangular(self) -> TriangularStructure | None:
        """:attr:`triangular_structure` where policies are evaluated with it: ``gamma < 1``, at least
        :data:`TRIANGULAR_MIN_STATES` states and small components (:func:`policyagg.triangular.pays`);
        else ``None`` (decided before the structure's copy of ``P`` is made)."""
        if self.average_reward or self.n_states < TRIANGULAR_MIN_STATES:
            return None
        return TriangularStructure.if_it_pays(self.P, self.n_actions)

    @cached_property
    def structure(self) -> Structure:
        """Unreachable states, closed classes and whether the MDP is communicating
        (:func:`policyagg.planning.graph_structure` on :attr:`union_graph`)."""
        return graph_structure(self.union_graph, self.rho)

    def _check_average_reward_structure(self) -> None:
        info = self.structure
        if len(info.closed_classes) > 1:
            message = (
                f"with `gamma` = 1 the MDP has {len(info.closed_classes)} closed classes of states "
                f"(first states: {[int(c[0]) for c in info.closed_classes]}); the average-reward "
                "polytope ignores `rho` and mixes stationary distributions of classes the system "
                "may never reach, and random policies have no unique stationary distribution. "
                "Use `gamma` < 1, keep only one closed class, or pass `allow_multichain=True`."
            )
            if not self.allow_multichain:
                raise InvalidMDPError(message)
            warnings.warn(message, StructureWarning, stacklevel=3)
        elif not info.communicating:
            warnings.warn(
                f"with `gamma` = 1 the MDP is not communicating ({info.describe()}): the "
                "average-reward polytope contains long-run behaviour on states that may be "
                "transient for every policy started from `rho`; check results against "
                "`evaluate` or use `gamma` < 1.",
                StructureWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------- policies and occupancy
    def check_policy(self, policy: ArrayLike) -> NDArray[np.float64]:
        """Validate a stochastic policy ``(S, A)`` (rows sum to 1) and return it as floats."""
        pi = float_array("policy", policy, InvalidMDPError)
        if pi.shape != (self.n_states, self.n_actions):
            raise InvalidMDPError(
                f"`policy` must have shape (S, A) = ({self.n_states}, {self.n_actions}); got {pi.shape}"
            )
        if not np.all(np.isfinite(pi)) or np.any(pi < 0):
            s = int(np.flatnonzero(~(np.isfinite(pi) & (pi >= 0)).all(axis=1))[0])
            raise InvalidMDPError(f"`policy` row {s} has a negative or non-finite entry")
        sums: NDArray[np.float64] = pi.sum(axis=1)  # numpy types axis reductions as Any
        bad = np.flatnonzero(np.abs(sums - 1.0) > SUM_TOL)
        if bad.size:
            raise InvalidMDPError(f"`policy` row {int(bad[0])} sums to {sums[bad[0]]:.12g}, not 1")
        return pi / sums[:, None]

    def transition_under(self, policy: ArrayLike) -> sp.csr_array:
        """``P_pi[s, s'] = sum_a pi(a|s) P(s'|s, a)`` as a sparse ``(S, S)`` matrix."""
        weights = sp.diags_array(np.asarray(policy, dtype=float).ravel())
        return sp.csr_array(self.action_sum @ (weights @ self.P))

    def state_occupancy(self, policy: ArrayLike) -> NDArray[np.float64]:
        """Normalised state occupancy ``mu_pi`` (S,) of ``policy`` started from ``rho``.

        Discounted: ``mu = (1 - gamma) (I - gamma P_pi^T)^{-1} rho``.
        Average reward: the Cesaro limit ``lim_T (1/T) sum_t rho^T P_pi^t``, computed exactly
        from the closed classes of ``P_pi`` and the absorption probabilities into them.
        """
        pi = self.check_policy(policy)
        if not self.average_reward:
            mu = self._triangular_occupancy(pi)
            if mu is None:
                system = sp.csc_array(sp.eye_array(self.n_states) - self.gamma * self.transition_under(pi).T)
                mu = spla.spsolve(system, (1.0 - self.gamma) * self.rho)  # scipy is untyped: Any
            positive = np.clip(mu, 0.0, None)
            total: float = positive.sum()  # numpy types reductions as Any
            return positive / total
        P_pi = self.transition_under(pi)
        return cesaro_limit(P_pi, self.rho)

    def _triangular_occupancy(self, policy: NDArray[np.float64]) -> NDArray[np.float64] | None:
        """``mu_pi`` by block forward substitution where :attr:`triangular` applies and the true
        residual is accepted (:func:`policyagg.triangular.accepted`); else ``None``."""
        if self.triangular is None:
            return None
        rhs = (1.0 - self.gamma) * self.rho
        mu, residual = triangular_solve(self.triangular, policy[None], rhs, self.gamma)
        return mu[0] if accepted(residual[0], rhs, mu[0]) else None

    def occupancy(self, policy: ArrayLike) -> NDArray[np.float64]:
        """Normalised state-action occupancy ``d(s, a) = mu_pi(s) pi(a|s)``, shape (S, A)."""
        pi = self.check_policy(policy)
        return self.state_occupancy(pi)[:, None] * pi

    def evaluate(self, policy: ArrayLike, rewards: ArrayLike) -> NDArray[np.float64]:
        """Per-step returns ``J_i = <r_i, d_pi>`` for rewards of shape (S, A) or (n, S, A).

        The discounted value from ``rho`` is ``J / (1 - gamma)``; with ``gamma == 1`` ``J``
        is the gain (long-run average reward).
        """
        d = self.occupancy(policy)
        returns: NDArray[np.float64] = np.tensordot(np.asarray(rewards, dtype=float), d, axes=([-2, -1], [0, 1]))
        return returns

    def policy_from_occupancy(self, d: ArrayLike) -> NDArray[np.float64]:
        """A policy whose exact occupancy is ``d`` or as close as :meth:`derive_policy` finds."""
        return self.derive_policy(d).policy

    def derive_policy(self, d: ArrayLike, allowed: ArrayLike | None = None) -> DerivedPolicy:
        """The policy of an occupancy ``d``, checked by evaluating it exactly.

        For each noise level ``tau`` in :data:`NOISE_LEVELS` (finest first) entries
        ``d(s, a) <= tau`` are dropped and ``pi(a|s) = d(s, a) / sum_a d(s, a)`` on the states
        left (:meth:`_policy_at_level`); the first policy whose exact occupancy ``d_pi`` has
        ``||d_pi - d||_1 <= DELIVERY_TOL`` is returned, else the closest one. An exact ``d``
        is met at the finest level; a solver's ``d`` (entries off by ~1e-9 to 1e-7) at the
        level that removes its noise.

        ``allowed`` (boolean ``(S, A)``, default all) restricts the actions that the filler of
        the states ``d`` does not visit may take (e.g. a norm's prohibitions, which ``d``
        respects but which would bind nowhere else): uniform over the allowed actions, and
        steering along allowed actions only. A state with no allowed action takes any.
        """
        S, A = self.n_states, self.n_actions
        mask = np.ones((S, A), dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool).reshape(S, A)
        mask = mask | ~mask.any(axis=1, keepdims=True)
        occupancy = np.clip(np.asarray(d, dtype=float).reshape(S, A), 0.0, None)
        total = occupancy.sum()
        if not np.isfinite(total) or total <= 0:
            raise InvalidMDPError("an occupancy `d` must be finite, non-negative and not all zero")
        occupancy = occupancy / total
        best: DerivedPolicy | None = None
        for level in NOISE_LEVELS:
            if not (occupancy > level).any():
                break
            policy = self._policy_at_level(occupancy, level, mask)
            exact = self.occupancy(policy)
            found = DerivedPolicy(policy, exact, float(np.abs(exact - occupancy).sum()), level)
            if best is None or found.distance < best.distance:
                best = found
            if found.delivers:
                break
        if best is None:  # only with more than 1e12 state-action pairs
            raise InvalidMDPError(f"every entry of the occupancy `d` is at most {NOISE_LEVELS[0]:g}")
        if self.average_reward:
            labels, closed = closed_components(positive_graph(self.transition_under(best.policy)))
            class_mass = np.bincount(labels, weights=occupancy.sum(axis=1), minlength=labels.max() + 1)
            best = replace(best, classes=int((class_mass[closed] > TRAP_MASS).sum()))
        return best

    def _policy_at_level(
        self, occupancy: NDArray[np.float64], level: float, allowed: NDArray[np.bool_]
    ) -> NDArray[np.float64]:
        """``pi(a|s) proportional to d(s, a)`` over the entries above ``level``; a filler elsewhere.

        Discounted: the filler is uniform (the states are not visited from ``rho`` up to noise).
        Average reward: every state outside the *target* steers along a shortest path of the
        union graph toward it (:func:`~policyagg.planning.steering_actions`), so the chain
        falls into the target from every state that can reach it. The target starts as the
        states left; any closed class of the resulting chain with ``d``-mass at most
        :data:`TRAP_MASS` (a loop of noise that would trap the chain forever, which no
        amount of noise in ``d`` justifies) leaves the target, and the steering is redone.
        """
        S, A = self.n_states, self.n_actions
        kept = np.where(occupancy > level, occupancy, 0.0)
        mass = kept.sum(axis=1)
        visited = mass > 0
        policy = np.asarray(allowed / allowed.sum(axis=1, keepdims=True), dtype=float)
        policy[visited] = kept[visited] / mass[visited, None]
        if not self.average_reward:
            return policy
        if allowed.all():
            P, graph = self.P, self.union_graph
        else:  # only the allowed actions' transitions
            P = sp.csr_array(sp.diags_array(allowed.ravel().astype(float)) @ self.P)
            graph = union_adjacency(P, A)
        state_mass = occupancy.sum(axis=1)
        target = visited.copy()
        steered = policy
        for _ in range(S):  # each round takes at least one state out of the target
            far, best = steering_actions(P, A, graph, target)
            steered = policy.copy()
            steer = np.flatnonzero(~target & np.isfinite(far))
            steered[steer] = 0.0
            steered[steer, best[steer]] = 1.0
            labels, closed = closed_components(positive_graph(self.transition_under(steered)))
            class_mass = np.bincount(labels, weights=state_mass, minlength=labels.max() + 1)
            traps = closed[class_mass[closed] <= TRAP_MASS]
            leaving = np.isin(labels, traps) & target
            if not leaving.any() or leaving.sum() == target.sum():
                break
            target &= ~leaving
        return steered
