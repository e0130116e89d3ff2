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

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from policyagg.errors import SolverTimeLimitError
from policyagg.solvers.lp import LinearProgram, LPModel, LPSolution, ModelBase

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


class FactoredModel(ModelBase):
    """An :class:`~policyagg.solvers.lp.LPModel` of ``lp`` that solves its factored form with
    ``inner`` (a model of ``factor(lp, ...)``); indices, solutions and duals are ``lp``'s."""

    def __init__(self, lp: LinearProgram, inner: LPModel) -> None:
        self._init_data(lp, inner.time_limit)
        self.backend = inner.backend
        self.inner = inner
        self._extra = inner.current_lp().n_cols - lp.n_cols

    def _changed(self, kind, idx, a, b):
        if kind == "cost":
            self.inner.set_cost(np.concatenate([self._cur["cost"], np.zeros(self._extra)]))
        elif kind == "row":
            self.inner.set_row_bounds(idx, a, b)
        else:
            self.inner.set_col_bounds(idx, a, b)

    def set_option(self, name, value) -> None:
        self.inner.set_option(name, value)

    def _original(self, solution: LPSolution) -> LPSolution:
        duals = None if solution.row_duals is None else solution.row_duals[: self.lp.n_rows]
        return dataclasses.replace(solution, x=solution.x[: self.lp.n_cols], row_duals=duals)

    def solve(self) -> LPSolution:
        try:
            return self._original(self.inner.solve())
        except SolverTimeLimitError as exc:
            if isinstance(exc.solution, LPSolution):
                exc.solution = self._original(exc.solution)
            raise
