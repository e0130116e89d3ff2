"""Transitions that factor over independent components (a Kronecker-structured ``P``).

A state is a tuple of component values ``(s_0, ..., s_{n-1})``, ``s_i < m_i``, numbered
``s = sum_i s_i prod_{j<i} m_j`` (component 0 varies fastest). Given the action, the components
move independently:

    P(s' | s, a) = prod_i F_{a,i}[s_i, s'_i],    i.e.  P_a = F_{a,n-1} (x) ... (x) F_{a,0}.

Each action uses the ``base`` matrix ``F_i`` on every component except the few it
``overrides`` (the attention model: attending site ``j`` replaces site ``j``'s matrix, idling
replaces none). ``P_a^T z`` then costs ``O(S sum_i m_i)`` instead of ``O(nnz(P_a))``, and the
sum over actions needs one pass of the base matrices only:

    sum_a P_a^T z_a = K sum_a (prod_{i in O_a} G_{a,i}) z_a,   K = (x)_i F_i^T,
    G_{a,i} = (F_i^T)^{-1} F_{a,i}^T acting on component i,

which needs the base matrix of every overridden component to be invertible
(:meth:`KroneckerTransitions.transposed_sum`). The sampler of the ``policy`` measure uses it
(:mod:`policyagg.sampling`); every result is still checked against the sparse ``P``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, reduce
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import InvalidMDPError

#: :attr:`KroneckerTransitions.packed`: (outer, sizes, inner, base_t, corr_ptr, corr_component, corr_matrix).
PackedStructure: TypeAlias = tuple[
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.float64],
    NDArray[np.int64],
    NDArray[np.int64],
    NDArray[np.float64],
]

#: Row sums of every factor must be 1 within this absolute tolerance.
ROW_SUM_TOL = 1e-9
#: :meth:`KroneckerTransitions.transposed_sum` needs each overridden component's base matrix to
#: be invertible with at most this condition number (else it refuses; the sparse ``P`` still works).
MAX_CONDITION = 1e8


def _factor(name: str, value: ArrayLike) -> NDArray[np.float64]:
    matrix = np.array(value.toarray() if sp.issparse(value) else value, dtype=float)  # type: ignore[union-attr]
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise InvalidMDPError(f"{name} must be a square matrix; got shape {matrix.shape}")
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise InvalidMDPError(f"{name} must have finite non-negative entries")
    if np.abs(matrix.sum(axis=1) - 1.0).max() > ROW_SUM_TOL:
        raise InvalidMDPError(f"the rows of {name} must sum to 1 (within {ROW_SUM_TOL})")
    matrix.flags.writeable = False
    return matrix


@dataclass(frozen=True, eq=False)
class KroneckerTransitions:
    """``P_a = F_{a,n-1} (x) ... (x) F_{a,0}`` with ``F_{a,i}`` = ``base[i]`` unless action ``a``
    overrides component ``i`` (see the module docstring).

    Parameters
    ----------
    base : sequence of (m_i, m_i) row-stochastic matrices
    overrides : one entry per action: a mapping ``{component: (m_i, m_i) matrix}`` (possibly empty)
    """

    base: tuple[NDArray[np.float64], ...]
    overrides: tuple[tuple[tuple[int, NDArray[np.float64]], ...], ...]

    def __init__(self, base: list[ArrayLike] | tuple[ArrayLike, ...], overrides: list[dict[int, ArrayLike]]):
        factors = tuple(_factor(f"base[{i}]", matrix) for i, matrix in enumerate(base))
        if not factors:
            raise InvalidMDPError("`base` needs at least one component")
        if len(overrides) < 1:
            raise InvalidMDPError("`overrides` needs one entry (a possibly empty mapping) per action")
        actions = []
        for a, replaced in enumerate(overrides):
            entries = []
            for i, matrix in sorted(dict(replaced).items()):
                if not (isinstance(i, (int, np.integer)) and 0 <= i < len(factors)):
                    raise InvalidMDPError(f"action {a} overrides component {i!r}; components are 0..{len(factors) - 1}")
                checked = _factor(f"the override of component {i} by action {a}", matrix)
                if checked.shape != factors[i].shape:
                    raise InvalidMDPError(
                        f"action {a}'s matrix for component {i} has shape {checked.shape}, not {factors[i].shape}"
                    )
                entries.append((int(i), checked))
            actions.append(tuple(entries))
        object.__setattr__(self, "base", factors)
        object.__setattr__(self, "overrides", tuple(actions))

    @property
    def sizes(self) -> tuple[int, ...]:
        """``(m_0, ..., m_{n-1})``."""
        return tuple(f.shape[0] for f in self.base)

    @property
    def n_states(self) -> int:
        return int(np.prod(self.sizes))

    @property
    def n_actions(self) -> int:
        return len(self.overrides)

    def factors(self, action: int) -> list[NDArray[np.float64]]:
        """``[F_{a,0}, ..., F_{a,n-1}]`` of ``action``."""
        factors = list(self.base)
        for i, matrix in self.overrides[action]:
            factors[i] = matrix
        return factors

    def matrix(self) -> sp.csr_array:
        """``P`` as a sparse ``(S*A, S)`` matrix, row ``s*A + a`` (the layout of :class:`~policyagg.mdp.TabularMDP`)."""
        S, A = self.n_states, self.n_actions
        per_action = [
            reduce(lambda x, y: sp.kron(x, y, format="csr"), [sp.csr_array(f) for f in reversed(self.factors(a))])
            for a in range(A)
        ]
        stacked = sp.vstack(per_action, format="coo")  # row a*S + s
        a, s = np.divmod(stacked.row, S)
        return sp.csr_array((stacked.data, (s * A + a, stacked.col)), shape=(S * A, S))

    # ------------------------------------------------------------------ products
    @cached_property
    def _strides(self) -> tuple[tuple[int, int, int], ...]:
        """Per component ``i``: (states of the slower components, ``m_i``, states of the faster ones)."""
        sizes = self.sizes
        return tuple((int(np.prod(sizes[i + 1 :])), m, int(np.prod(sizes[:i]))) for i, m in enumerate(sizes))

    def _component(self, x: NDArray[np.float64], i: int, matrix: NDArray[np.float64]) -> NDArray[np.float64]:
        """``matrix`` applied to component ``i`` of a block ``x`` (S, B): ``y[.., p, ..] = sum_q matrix[p, q] x[.., q, ..]``."""
        outer, m, inner = self._strides[i]
        product: NDArray[np.float64] = np.matmul(matrix, x.reshape(outer, m, inner * x.shape[1])).reshape(x.shape)
        return product

    def product(self, action: int, v: NDArray[np.float64]) -> NDArray[np.float64]:
        """``P_a v`` for a block ``v`` (S, B) (the forward product, used to check ``P``)."""
        for i, factor in enumerate(self.factors(action)):
            v = self._component(v, i, factor)
        return v

    @cached_property
    def _sum_operators(
        self,
    ) -> tuple[tuple[NDArray[np.float64], ...], tuple[tuple[tuple[int, NDArray[np.float64]], ...], ...]]:
        """``(F_i^T per component, per action ((i, G_{a,i}), ...))``, or an :class:`InvalidMDPError`
        when an overridden base matrix is singular or ill-conditioned."""
        transposed = tuple(np.array(f.T, order="C") for f in self.base)  # (writable: a compiled kernel takes them)
        corrections = []
        for a, replaced in enumerate(self.overrides):
            entries = []
            for i, matrix in replaced:
                condition = np.linalg.cond(self.base[i])
                if not condition <= MAX_CONDITION:
                    raise InvalidMDPError(
                        f"action {a} overrides component {i}, whose base matrix has condition number {condition:.3g} "
                        f"(> {MAX_CONDITION:.0e}): the summed transposed product needs it invertible"
                    )
                correction = np.asarray(np.linalg.solve(transposed[i], matrix.T), dtype=np.float64)
                entries.append((i, correction))
            corrections.append(tuple(entries))
        return transposed, tuple(corrections)

    @cached_property
    def packed(self) -> PackedStructure:
        """:meth:`transposed_sum`'s operators as flat arrays for a compiled kernel
        (:func:`policyagg.sampling_kernel.kronecker_apply`): ``(outer, sizes, inner, base_t, corr_ptr,
        corr_component, corr_matrix)``; per component ``i`` its strides in states (:attr:`_strides`)
        and ``F_i^T`` padded to the largest ``m``; per action ``a`` its corrections ``G_{a,i}``
        at ``corr_ptr[a]:corr_ptr[a + 1]``, in the order :meth:`transposed_sum` applies them."""
        transposed, corrections = self._sum_operators
        width = max(self.sizes)
        strides = np.array(self._strides, dtype=np.int64).reshape(-1, 3)
        base_t = np.zeros((len(transposed), width, width))
        for i, matrix in enumerate(transposed):
            base_t[i, : matrix.shape[0], : matrix.shape[0]] = matrix
        flat = [entry for replaced in corrections for entry in replaced]
        corr_ptr = np.cumsum([0] + [len(replaced) for replaced in corrections]).astype(np.int64)
        corr_component = np.array([i for i, _ in flat], dtype=np.int64)
        corr_matrix = np.zeros((max(len(flat), 1), width, width))
        for c, (_, matrix) in enumerate(flat):
            corr_matrix[c, : matrix.shape[0], : matrix.shape[0]] = matrix
        return (
            np.ascontiguousarray(strides[:, 0]),
            np.ascontiguousarray(strides[:, 1]),
            np.ascontiguousarray(strides[:, 2]),
            base_t,
            corr_ptr,
            corr_component,
            corr_matrix,
        )

    def check_transposed_sum(self) -> None:
        """An :class:`InvalidMDPError` if :meth:`transposed_sum` is unavailable (see :data:`MAX_CONDITION`)."""
        self._sum_operators  # noqa: B018 - computed for its check

    def transposed_sum(self, weights: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
        """``sum_a P_a^T (w_a * x)`` for a block: ``weights`` (A, S, B) (e.g. policies, action first),
        ``x`` (S, B); i.e. ``y[t] = sum_{s,a} P(t|s,a) w[s,a] x[s]``, by one pass of the base
        matrices (see the module docstring), with numpy. The compiled twin is
        :func:`policyagg.sampling_kernel.kronecker_apply` on :attr:`packed`."""
        transposed, corrections = self._sum_operators
        total = np.zeros(x.shape)
        for a, replaced in enumerate(corrections):
            product = weights[a] * x
            for i, matrix in replaced:
                product = self._component(product, i, matrix)
            total += product
        for i, matrix in enumerate(transposed):
            total = self._component(total, i, matrix)
        return total

    def agrees_with(self, P: sp.sparray, *, seed: int = 0, tol: float = 1e-8) -> bool:
        """Whether the sparse ``P`` (S*A, S) equals this structure, by products with two random
        blocks (a wrong ``P`` passes with probability zero); ``tol`` absolute, per entry of ``P v``."""
        S, A = self.n_states, self.n_actions
        if P.shape != (S * A, S):
            return False
        v = np.random.default_rng(seed).random((S, 2))
        expected = np.asarray(P @ v).reshape(S, A, 2)
        return all(np.abs(self.product(a, v) - expected[:, a, :]).max() <= tol for a in range(A))
