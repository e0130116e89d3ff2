"""The state-action occupancy polytope and extra linear constraints on it.

Variables are the flattened occupancy ``d`` of length ``S*A`` (index ``s*A + a``).

Discounted (``gamma < 1``):
    ``sum_a d(s', a) - gamma * sum_{s,a} P(s'|s,a) d(s,a) = (1 - gamma) rho(s')``,  ``d >= 0``.
Average reward (``gamma = 1``):
    ``sum_a d(s', a) - sum_{s,a} P(s'|s,a) d(s,a) = 0``,  ``sum d = 1``,  ``d >= 0``.

The discounted rows imply ``sum d = 1`` (add them up), but only through the factor
``1 - gamma``: for ``gamma`` near 1 a solver's tolerance would let ``d`` grow without bound
(an "unbounded" LP at ``gamma = 1 - 1e-12``). Below :data:`EXPLICIT_TOTAL_BELOW` of
``1 - gamma`` the row ``sum d = 1`` is therefore added explicitly (it changes no point of ``O``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import InvalidMDPError, InvalidProblemError
from policyagg.mdp import TabularMDP

#: Discounted polytopes with ``1 - gamma`` below this get the (implied) row ``sum d = 1``.
EXPLICIT_TOTAL_BELOW = 1e-3

#: A constraint matrix as users give it: dense (anything ``np.atleast_2d`` takes) or scipy sparse.
MatrixLike: TypeAlias = ArrayLike | sp.sparray | sp.spmatrix


@dataclass(frozen=True, eq=False)
class OccupancyPolytope:
    """``O = {d >= 0 : A_eq d = b_eq}`` built from ``P`` with sparse matrix algebra."""

    A_eq: sp.csr_array  # (S or S+1, S*A)
    b_eq: NDArray[np.float64]

    @classmethod
    def from_mdp(cls, mdp: TabularMDP) -> OccupancyPolytope:
        S, SA = mdp.n_states, mdp.n_state_actions
        outflow = mdp.action_sum  # sum_a d(s', a)
        inflow = mdp.P.T  # (S, S*A): sum_{s,a} P(s'|s,a) d(s,a)
        b_eq: NDArray[np.float64]
        if mdp.average_reward:
            A_eq = sp.vstack([outflow - inflow, np.ones((1, SA))], format="csr")
            b_eq = np.zeros(S + 1)
            b_eq[-1] = 1.0
        else:
            if mdp.rho is None:  # typed optional as a constructor argument; TabularMDP always sets it
                raise InvalidMDPError("`mdp.rho` is unset; build the MDP with `TabularMDP(...)`")
            A_eq = sp.csr_array(outflow - mdp.gamma * inflow)
            b_eq = (1.0 - mdp.gamma) * mdp.rho
            if 1.0 - mdp.gamma < EXPLICIT_TOTAL_BELOW:
                A_eq = sp.vstack([A_eq, np.ones((1, SA))], format="csr")
                b_eq = np.append(b_eq, 1.0)
        A_eq.eliminate_zeros()
        return cls(sp.csr_array(A_eq), b_eq)

    def violation(self, d: ArrayLike) -> float:
        """Largest violation of ``A_eq d = b_eq`` and ``d >= 0`` (0 for a member)."""
        d = np.asarray(d, dtype=float).ravel()
        return float(max(np.abs(self.A_eq @ d - self.b_eq).max(initial=0.0), (-d).max(initial=0.0)))


@dataclass(frozen=True, eq=False)
class LinearConstraints:
    """Extra constraints ``A_ub d <= b_ub`` and ``A_eq d = b_eq`` on the flattened occupancy.

    Build them with :func:`forbid`, :func:`budget`, :func:`return_floor` or by hand, and
    combine with ``&``. Each row has a label used in error messages.
    """

    A_ub: sp.csr_array
    b_ub: NDArray[np.float64]
    A_eq: sp.csr_array
    b_eq: NDArray[np.float64]
    labels_ub: tuple[str, ...] = ()
    labels_eq: tuple[str, ...] = ()

    @classmethod
    def empty(cls, n_vars: int) -> LinearConstraints:
        zero = sp.csr_array((0, n_vars))
        return cls(zero, np.zeros(0), zero, np.zeros(0))

    @classmethod
    def build(
        cls,
        n_vars: int,
        *,
        A_ub: MatrixLike | None = None,
        b_ub: ArrayLike | None = None,
        A_eq: MatrixLike | None = None,
        b_eq: ArrayLike | None = None,
        label: str = "user",
    ) -> LinearConstraints:
        """Validate user matrices (dense or sparse, ``(m, S*A)``) into a constraint set."""
        blocks: dict[str, tuple[sp.csr_array, NDArray[np.float64]]] = {}
        for kind, A_in, b_in in (("ub", A_ub, b_ub), ("eq", A_eq, b_eq)):
            if A_in is None and b_in is None:
                blocks[kind] = (sp.csr_array((0, n_vars)), np.zeros(0))
                continue
            if A_in is None or b_in is None:
                raise InvalidProblemError(f"`A_{kind}` and `b_{kind}` must be given together")
            A = sp.csr_array(np.atleast_2d(A_in) if not sp.issparse(A_in) else A_in, dtype=float)
            b = np.atleast_1d(np.asarray(b_in, dtype=float))
            if A.shape[1] != n_vars:
                raise InvalidProblemError(
                    f"`A_{kind}` must have S*A = {n_vars} columns (flattened occupancy d[s*A + a]); got {A.shape[1]}"
                )
            if b.shape != (A.shape[0],):
                raise InvalidProblemError(f"`b_{kind}` must have shape ({A.shape[0]},); got {b.shape}")
            if not (np.all(np.isfinite(A.data)) and np.all(np.isfinite(b))):
                raise InvalidProblemError(f"`A_{kind}` and `b_{kind}` must be finite")
            blocks[kind] = (A, b)
        (Au, bu), (Ae, be) = blocks["ub"], blocks["eq"]
        return cls(Au, bu, Ae, be, (label,) * Au.shape[0], (label,) * Ae.shape[0])

    @property
    def n_vars(self) -> int:
        return int(self.A_ub.shape[1])

    def __len__(self) -> int:
        return int(self.A_ub.shape[0] + self.A_eq.shape[0])

    def __and__(self, other: LinearConstraints) -> LinearConstraints:
        if self.n_vars != other.n_vars:
            raise InvalidProblemError(f"cannot combine constraints on {self.n_vars} and {other.n_vars} variables")
        return LinearConstraints(
            sp.vstack([self.A_ub, other.A_ub], format="csr"),
            np.concatenate([self.b_ub, other.b_ub]),
            sp.vstack([self.A_eq, other.A_eq], format="csr"),
            np.concatenate([self.b_eq, other.b_eq]),
            self.labels_ub + other.labels_ub,
            self.labels_eq + other.labels_eq,
        )

    def violation(self, d: ArrayLike) -> float:
        """Largest violation of these constraints at ``d`` (0 when satisfied)."""
        d = np.asarray(d, dtype=float).ravel()
        over = (self.A_ub @ d - self.b_ub).max(initial=0.0)
        off = np.abs(self.A_eq @ d - self.b_eq).max(initial=0.0)
        return float(max(over, off, 0.0))


def forced_zero(constraints: LinearConstraints) -> NDArray[np.bool_]:
    """The state-actions (flattened) that ``constraints`` force to zero occupancy, read off single
    rows: ``sum_j c_j d_j <= b`` with every ``c_j >= 0`` and ``b <= 0``, or ``= 0`` with one sign,
    zero every ``d_j`` with ``c_j != 0`` (as ``d >= 0``). Prohibitions and :func:`forbid` are such rows."""
    zero = np.zeros(constraints.n_vars, dtype=bool)
    for A, b, equality in ((constraints.A_ub, constraints.b_ub, False), (constraints.A_eq, constraints.b_eq, True)):
        A = sp.csr_array(A)
        for row in range(A.shape[0]):
            values = A.data[A.indptr[row] : A.indptr[row + 1]]
            columns = A.indices[A.indptr[row] : A.indptr[row + 1]]
            one_sign = bool(np.all(values >= 0) or (equality and np.all(values <= 0)))
            if one_sign and (b[row] == 0 if equality else b[row] <= 0):
                zero[columns[values != 0]] = True
    return zero


def forbid(mdp: TabularMDP, state: int, action: int) -> LinearConstraints:
    """Never take ``action`` in ``state``: ``d(state, action) = 0``."""
    S, A = mdp.n_states, mdp.n_actions
    if A is None:  # typed optional as a constructor argument; TabularMDP always sets it
        raise InvalidMDPError("`mdp.n_actions` is unset; build the MDP with `TabularMDP(...)`")
    if not (0 <= state < S and 0 <= action < A):
        raise InvalidProblemError(f"`state`, `action` must be in [0, {S}) x [0, {A}); got ({state}, {action})")
    row = sp.csr_array(([1.0], ([0], [state * A + action])), shape=(1, S * A))
    return LinearConstraints.build(S * A, A_eq=row, b_eq=[0.0], label=f"forbid(s={state}, a={action})")


def budget(mdp: TabularMDP, cost: ArrayLike, limit: float) -> LinearConstraints:
    """Expected per-step cost at most ``limit``: ``<c, d> <= limit`` with ``cost`` of shape (S, A)."""
    cost = np.asarray(cost, dtype=float)
    if cost.shape != (mdp.n_states, mdp.n_actions):
        raise InvalidProblemError(
            f"`cost` must have shape (S, A) = ({mdp.n_states}, {mdp.n_actions}); got {cost.shape}"
        )
    return LinearConstraints.build(
        mdp.n_state_actions, A_ub=cost.reshape(1, -1), b_ub=[limit], label=f"budget(<= {limit:g})"
    )


def return_floor(mdp: TabularMDP, reward: ArrayLike, value: float) -> LinearConstraints:
    """A guaranteed return: ``<r, d> >= value`` with ``reward`` of shape (S, A)."""
    reward = np.asarray(reward, dtype=float)
    if reward.shape != (mdp.n_states, mdp.n_actions):
        raise InvalidProblemError(
            f"`reward` must have shape (S, A) = ({mdp.n_states}, {mdp.n_actions}); got {reward.shape}"
        )
    return LinearConstraints.build(
        mdp.n_state_actions, A_ub=-reward.reshape(1, -1), b_ub=[-value], label=f"return floor(>= {value:g})"
    )
