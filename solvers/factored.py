"""Occupancy LPs with many agent rows that share a low-rank reward structure.

A rule's agent rows (leximin floors, thresholds, Pareto floors) are combinations of the
agents' reward rows ``R`` (n x S*A) and of the all-ones row. When those rows span a space of
small dimension ``k`` (the attention model: ``k = 6`` for any number of agents), every such
row ``a @ d`` equals ``(a @ V.T) @ f`` with ``k`` feature columns ``f = V d`` (``V`` with
orthonormal rows spanning ``R`` and ``1``). :class:`FactoredModel` solves that equivalent LP
and answers in the original columns and rows: the same optimum, and the same duals for the
original rows (the features' rows only carry ``V.T y`` over). Agent rows shrink from ``S*A``
non-zeros to ``k``, which is what makes hundreds of agents cheap.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from policyagg.errors import InvalidProblemError, SolverTimeLimitError
from policyagg.solvers.lp import LinearProgram, LPModel, LPSolution

#: A row is rewritten when its occupancy part lies in the feature space to this relative
#: accuracy (largest entry of the residual over the row's largest entry).
SPAN_TOL = 1e-10
#: Factor only when the rewritten rows save at least this many times the features' own
#: non-zeros (``k * S*A``): small problems keep exactly the LP they had.
MIN_SAVING = 4.0


#: Directions of the reward rows below this share of the largest (in squared singular
#: value) do not become features; rows that need them are left as they are.
RANK_TOL = 1e-12


@functools.lru_cache(maxsize=4)
def _basis(shape: tuple[int, int], digest: str, data: bytes) -> np.ndarray:
    R = np.frombuffer(data, dtype=float).reshape(shape)
    M = np.vstack([R, np.ones((1, shape[1]))])
    # the row space from the Gram matrix (an eigh of (n+1) x (n+1) is far cheaper than an SVD);
    # one BLAS thread: these matrices are small, and threads busy-waiting on a loaded machine
    # made this 100x slower (measured: 0.03 s -> 3 s)
    with threadpool_limits(limits=1, user_api="blas"):
        values, vectors = np.linalg.eigh(M @ M.T)
        keep = values > values[-1] * RANK_TOL
        basis, _ = np.linalg.qr((vectors[:, keep].T @ M).T)  # orthonormal columns spanning those rows
    result: np.ndarray = basis.T
    return result


def feature_basis(R: np.ndarray) -> np.ndarray:
    """Orthonormal rows ``V`` (k x S*A) spanning the rows of ``R`` and the all-ones row."""
    R = np.ascontiguousarray(R, dtype=float)
    data = R.tobytes()
    return _basis(R.shape, hashlib.sha1(data).hexdigest(), data)


def factor(lp: LinearProgram, n_d: int, basis: np.ndarray) -> LinearProgram | None:
    """``lp`` with its agent rows over ``d`` rewritten on ``k`` feature columns ``f = V d``
    (appended after ``lp``'s columns; ``k`` rows ``V d - f = 0`` appended after its rows), or
    ``None`` when that would not save at least :data:`MIN_SAVING` times the features' size."""
    k = basis.shape[0]
    A = sp.csr_array(lp.A)
    A_d = A[:, :n_d]
    counts = np.diff(A_d.indptr)
    candidates = np.flatnonzero(counts > 2 * k)
    if k == 0 or counts[candidates].sum() < MIN_SAVING * k * n_d:
        return None
    dense = A_d[candidates].toarray()
    coefficients = dense @ basis.T
    residual = np.abs(dense - coefficients @ basis).max(axis=1)
    in_span = residual <= SPAN_TOL * np.abs(dense).max(axis=1)
    rows, coefficients = candidates[in_span], coefficients[in_span]
    if counts[rows].sum() - rows.size * k < MIN_SAVING * k * n_d:
        return None
    keep = np.ones(A.shape[0])
    keep[rows] = 0.0
    features = sp.csr_array(
        (coefficients.ravel(), (np.repeat(rows, k), np.tile(np.arange(k), rows.size))), shape=(A.shape[0], k)
    )
    top = sp.hstack([sp.diags_array(keep) @ A_d, A[:, n_d:], features], format="csr")
    link = sp.hstack([sp.csr_array(basis), sp.csr_array((k, A.shape[1] - n_d)), -sp.eye_array(k)], format="csr")
    zeros = np.zeros(k)
    return LinearProgram(
        cost=np.concatenate([lp.cost, zeros]),
        A=sp.vstack([top, link], format="csc"),
        row_lower=np.concatenate([lp.row_lower, zeros]),
        row_upper=np.concatenate([lp.row_upper, zeros]),
        col_lower=np.concatenate([lp.col_lower, np.full(k, -np.inf)]),
        col_upper=np.concatenate([lp.col_upper, np.full(k, np.inf)]),
        integrality=None if lp.integrality is None else np.concatenate([lp.integrality, np.zeros(k, bool)]),
        maximize=lp.maximize,
        name=lp.name,
        row_families=lp.row_families,
    )


class FactoredModel:
    """An :class:`~policyagg.solvers.lp.LPModel` of ``lp`` that solves its factored form with
    ``inner`` (a model of ``factor(lp, ...)``). Row and column indices, solutions and duals are
    ``lp``'s: the feature columns come after ``lp``'s columns, and the feature rows sit between
    ``lp``'s rows and any row added later (:meth:`add_rows`), so those indices shift by ``k``."""

    def __init__(self, lp: LinearProgram, inner: LPModel, basis: np.ndarray) -> None:
        self.lp, self.inner, self.basis = lp, inner, basis
        self.backend, self.time_limit = inner.backend, inner.time_limit
        self._k = inner.current_lp().n_cols - lp.n_cols
        self._added: list[tuple[str, sp.csr_array]] = []

    def _inner_rows(self, rows) -> np.ndarray:
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        return np.where(rows >= self.lp.n_rows, rows + self._k, rows)

    def set_row_bounds(self, rows, lower, upper) -> None:
        self.inner.set_row_bounds(self._inner_rows(rows), lower, upper)

    def set_col_bounds(self, cols, lower, upper) -> None:
        cols = np.atleast_1d(np.asarray(cols, dtype=np.int64))
        if ((cols < 0) | (cols >= self.lp.n_cols)).any():
            raise InvalidProblemError(f"col indices must be 1-D and in [0, {self.lp.n_cols})")
        self.inner.set_col_bounds(cols, lower, upper)

    def set_cost(self, cost) -> None:
        cost = np.asarray(cost, dtype=float)
        if cost.shape != (self.lp.n_cols,):
            raise InvalidProblemError(f"cost must be finite with shape ({self.lp.n_cols},)")
        self.inner.set_cost(np.concatenate([cost, np.zeros(self._k)]))

    def set_option(self, name: str, value: Any) -> None:
        self.inner.set_option(name, value)

    def set_start(self, x) -> None:
        """A MIP start in ``lp``'s columns (the features are computed from its ``d``)."""
        x = np.asarray(x, dtype=float)
        if x.shape != (self.lp.n_cols,):
            raise InvalidProblemError(f"a MIP start must have shape ({self.lp.n_cols},); got shape {x.shape}")
        self.inner.set_start(np.concatenate([x, self.basis @ x[: self.basis.shape[1]]]))  # type: ignore[attr-defined]

    def add_rows(self, A, lower, upper, *, name: str = "added rows") -> np.ndarray:
        """Append rows over ``lp``'s columns (see :meth:`~policyagg.solvers.lp.HighsModel.add_rows`)."""
        A = sp.csr_array(A, dtype=float)
        if A.ndim != 2 or A.shape[1] != self.lp.n_cols:
            raise InvalidProblemError(f"add_rows: `A` must have {self.lp.n_cols} columns; got shape {A.shape}")
        padded = sp.hstack([A, sp.csr_array((A.shape[0], self._k))], format="csr")
        rows: np.ndarray = self.inner.add_rows(padded, lower, upper, name=name) - self._k  # type: ignore[attr-defined]
        self._added.append((name, A))
        return rows

    def current_lp(self) -> LinearProgram:
        """``lp`` (with the added rows) under the current bounds and cost."""
        inner, m, k = self.inner.current_lp(), self.lp.n_rows, self._k
        keep = np.r_[np.arange(m), np.arange(m + k, inner.n_rows)]
        families, at = list(self.lp.row_families), m
        for name, A in self._added:
            families.append((name, at, at + A.shape[0]))
            at += A.shape[0]
        return dataclasses.replace(
            self.lp,
            A=sp.vstack([self.lp.A, *(A for _, A in self._added)], format="csc"),
            cost=inner.cost[: self.lp.n_cols],
            row_lower=inner.row_lower[keep],
            row_upper=inner.row_upper[keep],
            col_lower=inner.col_lower[: self.lp.n_cols],
            col_upper=inner.col_upper[: self.lp.n_cols],
            row_families=tuple(families),
        )

    def _original(self, solution: LPSolution) -> LPSolution:
        m, k = self.lp.n_rows, self._k
        duals = None if solution.row_duals is None else np.r_[solution.row_duals[:m], solution.row_duals[m + k :]]
        return dataclasses.replace(solution, x=solution.x[: self.lp.n_cols], row_duals=duals)

    def solve(self) -> LPSolution:
        try:
            return self._original(self.inner.solve())
        except SolverTimeLimitError as exc:
            if isinstance(exc.solution, LPSolution):
                exc.solution = self._original(exc.solution)
            raise
