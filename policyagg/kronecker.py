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

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, reduce
from typing import TypeAlias

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import InvalidMDPError

#: ``kernel(x (outer, m, inner), matrix (m, m), out (outer, m, inner))``: writes the component product into ``out``.
ComponentKernel: TypeAlias = Callable[[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]], None]
#: ``kernel(w, x, matrix, total)`` on (outer, m, inner) views: adds ``sum_q matrix[p, q] w[.., q, ..] x[.., q, ..]`` to ``total``.
WeightedKernel: TypeAlias = Callable[
    [NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]], None
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

    def _component(
        self,
        x: NDArray[np.float64],
        i: int,
        matrix: NDArray[np.float64],
        kernel: ComponentKernel | None = None,
        out: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]:
        """``matrix`` applied to component ``i`` of a block ``x`` (S, B): ``y[.., p, ..] = sum_q matrix[p, q] x[.., q, ..]``,
        by numpy's matmul or by ``kernel(x3, matrix, out3)`` on C-contiguous (outer, m, inner) views (into ``out``
        when given: a C-contiguous array of ``x``'s shape, not ``x``)."""
        outer, m, inner = self._strides[i]
        if kernel is None:
            product: NDArray[np.float64] = np.matmul(matrix, x.reshape(outer, m, inner * x.shape[1])).reshape(x.shape)
            return product
        out = np.empty(x.shape) if out is None else out
        kernel(self._view(np.ascontiguousarray(x), i), matrix, self._view(out, i))
        return out

    def _view(self, x: NDArray[np.float64], i: int) -> NDArray[np.float64]:
        """A C-contiguous block ``x`` (S, B) viewed (outer, m_i, inner * B) for component ``i``."""
        outer, m, inner = self._strides[i]
        return x.reshape(outer, m, inner * x.shape[1])

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

    def check_transposed_sum(self) -> None:
        """An :class:`InvalidMDPError` if :meth:`transposed_sum` is unavailable (see :data:`MAX_CONDITION`)."""
        self._sum_operators  # noqa: B018 - computed for its check

    def transposed_sum(
        self,
        weights: NDArray[np.float64],
        x: NDArray[np.float64],
        kernel: ComponentKernel | None = None,
        weighted: WeightedKernel | None = None,
    ) -> NDArray[np.float64]:
        """``sum_a P_a^T (w_a * x)`` for a block: ``weights`` (A, S, B) (e.g. policies, action first),
        ``x`` (S, B); i.e. ``y[t] = sum_{s,a} P(t|s,a) w[s,a] x[s]``, by one pass of the base
        matrices (see the module docstring). ``kernel``: a compiled component product
        (:func:`policyagg.sampling_kernel.component_product`); numpy's matmul without one.
        ``weighted`` (with ``kernel``; :func:`policyagg.sampling_kernel.weighted_component_add`): an
        action that overrides one component adds its weighted, corrected block to the sum in one pass."""
        transposed, corrections = self._sum_operators
        total = np.zeros(x.shape)
        spare = np.empty(x.shape)
        if weighted is not None:
            x = np.ascontiguousarray(x)
        for a, replaced in enumerate(corrections):
            if weighted is not None and kernel is not None and len(replaced) == 1:
                i, matrix = replaced[0]
                weighted(
                    self._view(np.ascontiguousarray(weights[a]), i), self._view(x, i), matrix, self._view(total, i)
                )
                continue
            product = np.multiply(weights[a], x, out=spare)
            for i, matrix in replaced:
                product = self._component(product, i, matrix, kernel)
            total += product
        for i, matrix in enumerate(transposed):  # ping-pong between two buffers with a kernel
            result = self._component(total, i, matrix, kernel, spare if kernel is not None else None)
            total, spare = result, total
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
