"""The project's single LP/MILP layer: a validated `LinearProgram`, two backends, typed errors.

    min/max  cost @ x   s.t.   row_lower <= A @ x <= row_upper,   col_lower <= x <= col_upper,
                               x_j integer where integrality[j].

`HighsModel` passes the model to HiGHS in one call and keeps it alive for warm re-solves;
`PulpModel` solves it with PuLP's bundled CBC.  Both implement the `LPModel` protocol (setters,
`solve`, `current_lp`), as does column generation (`policyagg.solvers.decomposition`); `solve`
returns an `LPSolution` or raises a `policyagg.errors.SolverError` subtype naming the model and
the solver status.

Duals (both backends, HiGHS convention): ``row_duals[i] = d objective / d b_i`` with ``b_i`` the
active bound of row i and the objective in the LP's own sense, so ``cost = A.T @ y + reduced``.
A binding ``<=`` row has ``y_i >= 0`` when maximising, ``<= 0`` when minimising; ``>=`` rows the
reverse; slack rows 0.  (CBC via PuLP already reports this; ranged rows, split in two for PuLP,
get the sum of both duals.)
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import highspy
import numpy as np
import pulp
import scipy.sparse as sp

from policyagg.errors import (
    InfeasibleError,
    InvalidProblemError,
    SolverError,
    SolverTimeLimitError,
    UnboundedError,
    check_real,
)

BACKENDS = ("highs", "pulp")
_MS = highspy.HighsModelStatus
_FEASIBLE = 2  # HiGHS primal_solution_status kSolutionStatusFeasible
_DIAG_MAX_FAMILIES = 32  # culprit search: at most this many families ...
_DIAG_TIME = 10.0  # ... and this many seconds per feasibility check


def _bad(field, why):
    return InvalidProblemError(f"LinearProgram.{field}: {why}")


def _vector(value, size, field):
    arr = np.array(value, dtype=float)
    if arr.shape != (size,):
        raise _bad(field, f"expected shape ({size},), got {arr.shape}")
    if np.isnan(arr).any():
        raise _bad(field, f"contains NaN at index {np.flatnonzero(np.isnan(arr))[0]}")
    arr.setflags(write=False)
    return arr


def _check_bounds(lower, upper, lo, up):
    if np.isposinf(lower).any():
        raise _bad(lo, "+inf lower bound; use a finite value or -inf")
    if np.isneginf(upper).any():
        raise _bad(up, "-inf upper bound; use a finite value or +inf")
    if (lower > upper).any():
        i = np.flatnonzero(lower > upper)[0]
        raise _bad(lo, f"{lo}[{i}] = {lower[i]} > {up}[{i}] = {upper[i]}")


@dataclass(frozen=True, eq=False)  # eq=False: == on array fields would be ambiguous
class LinearProgram:
    """min/max  cost @ x  s.t.  row_lower <= A @ x <= row_upper,  col_lower <= x <= col_upper,  x_j integer where integrality[j]."""

    cost: np.ndarray
    A: sp.sparray | sp.spmatrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    integrality: np.ndarray | None = None
    maximize: bool = False
    name: str = "lp"
    row_families: tuple[tuple[str, int, int], ...] = ()

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen dataclass)
        if not isinstance(self.name, str) or not self.name:
            raise _bad("name", f"must be a non-empty str, got {self.name!r}")
        n = np.size(self.cost)
        put("cost", _vector(self.cost, n, "cost"))
        if n == 0 or not np.isfinite(self.cost).all():
            raise _bad("cost", "must be a 1-D, non-empty, finite vector")
        try:
            A = sp.csc_array(self.A, dtype=float, copy=True)
        except Exception as exc:
            raise _bad("A", f"cannot be converted to a sparse CSC matrix ({exc})") from None
        if A.ndim != 2 or A.shape[1] != n:
            raise _bad("A", f"shape {A.shape} does not match cost (n_cols={n})")
        if not np.isfinite(A.data).all():
            raise _bad("A", "contains NaN or inf entries")
        A.sum_duplicates()
        put("A", A)
        m = A.shape[0]
        for field, size in (("row_lower", m), ("row_upper", m), ("col_lower", n), ("col_upper", n)):
            put(field, _vector(getattr(self, field), size, field))
        _check_bounds(self.row_lower, self.row_upper, "row_lower", "row_upper")
        _check_bounds(self.col_lower, self.col_upper, "col_lower", "col_upper")
        if self.integrality is not None:
            integ = np.asarray(self.integrality)
            if integ.shape != (n,) or not np.isin(integ, (0, 1)).all():
                raise _bad("integrality", f"must be None or a bool array of shape ({n},)")
            integ = integ.astype(bool)
            integ.setflags(write=False)
            put("integrality", integ if integ.any() else None)
        put("maximize", bool(self.maximize))
        put("row_families", tuple((str(f), int(a), int(b)) for f, a, b in self.row_families))
        for f, a, b in self.row_families:
            if not 0 <= a <= b <= m:
                raise _bad("row_families", f"family {f!r} rows [{a}, {b}) outside [0, {m})")

    n_rows = property(lambda self: self.A.shape[0])
    n_cols = property(lambda self: self.A.shape[1])
    is_mip = property(lambda self: self.integrality is not None)

    @classmethod
    def build(
        cls,
        cost,
        *,
        A_ub=None,
        b_ub=None,
        A_eq=None,
        b_eq=None,
        bounds=(0, None),
        integrality=None,
        maximize=False,
        name="lp",
        families=(),
    ) -> LinearProgram:
        """Stack ``A_ub @ x <= b_ub`` over ``A_eq @ x == b_eq`` (``scipy.optimize.linprog`` style).

        ``bounds = (lower, upper)``: scalars, arrays or None (= unbounded, also per entry).
        ``families = ((name, n_rows), ...)`` labels consecutive rows of the stacked matrix.
        """
        n = np.size(cost)
        blocks = [
            (sp.csc_array(A, dtype=float), b, eq)
            for A, b, eq in ((A_ub, b_ub, False), (A_eq, b_eq, True))
            if A is not None
        ]
        rhs = [np.broadcast_to(np.asarray(b, dtype=float), A.shape[:1]) for A, b, _ in blocks]
        lo = [b if eq else np.full(b.size, -np.inf) for b, (_, _, eq) in zip(rhs, blocks)]
        A = sp.vstack([a for a, _, _ in blocks], format="csc") if blocks else sp.csc_array((0, n))
        stops = np.cumsum([k for _, k in families], dtype=int)
        if len(families) and stops[-1] != A.shape[0]:
            raise _bad("row_families", f"families cover {stops[-1]} rows, the matrix has {A.shape[0]}")
        fams = tuple((f, int(s - k), int(s)) for (f, k), s in zip(families, stops))
        col_lo, col_up = (
            np.array([d if v is None else v for v in np.broadcast_to(np.asarray(b, dtype=object), (n,))], dtype=float)
            for b, d in zip(bounds, (-np.inf, np.inf))
        )
        return cls(
            cost,
            A,
            np.concatenate([np.zeros(0), *lo]),
            np.concatenate([np.zeros(0), *rhs]),
            col_lo,
            col_up,
            integrality,
            maximize,
            name,
            fams,
        )


@dataclass(frozen=True, eq=False)
class LPSolution:
    """One solve's result; ``objective = cost @ x`` in the LP's own sense (module doc: duals)."""

    x: np.ndarray
    objective: float
    status: str  # "optimal"; "gap" (column generation stopped with its gap open, see
    # details["gap"]); "time-limit" for an incumbent attached to the error
    row_duals: np.ndarray | None  # None for MILP or when the backend gives none
    backend: str
    solve_time: float  # seconds in the solver call (PuLP: includes its MPS file I/O)
    build_time: float  # seconds building / passing / changing the model in Python since the last solve
    iterations: int  # simplex iterations of this solve, 0 if unknown
    mip_gap: float | None
    details: dict | None = None  # backend-specific counters (e.g. column generation's pricing time)


#: Solution statuses from best to worst: a rule's status is the worst of its solves.
STATUSES = ("optimal", "gap", "time-limit")


def worst_status(statuses) -> str:
    """The worst of ``statuses`` in the order of :data:`STATUSES` (unknown ones are worst); "optimal" if empty."""
    rank = {status: k for k, status in enumerate(STATUSES)}
    return max(statuses, key=lambda status: rank.get(status, len(STATUSES)), default="optimal")


@runtime_checkable
class LPModel(Protocol):
    """What a rule needs from a reusable LP model, whatever solves it.

    Implemented by :class:`HighsModel`, :class:`PulpModel` and
    :class:`policyagg.solvers.decomposition.DecomposedModel`. Row and column indices are those
    of the model's full LP; a model may refuse to change some of them (column generation fixes
    the occupancy flow rows) with an :class:`~policyagg.errors.InvalidProblemError`.
    """

    backend: str
    time_limit: float | None

    def current_lp(self) -> LinearProgram:
        """The LP as changed by the setters."""
        ...

    def set_row_bounds(self, rows, lower, upper) -> None:
        """``lower[k] <= A[rows[k]] @ x <= upper[k]``."""
        ...

    def set_col_bounds(self, cols, lower, upper) -> None:
        """``lower[k] <= x[cols[k]] <= upper[k]``."""
        ...

    def set_cost(self, cost) -> None:
        """Replace the whole cost vector (same sense)."""
        ...

    def set_option(self, name: str, value: Any) -> None:
        """Set a solver option; a bad name or value -> InvalidProblemError."""
        ...

    def solve(self) -> LPSolution:
        """Solve (warm where the backend can); LPSolution or a SolverError subtype."""
        ...


def check_time_limit(time_limit: float | None) -> float | None:
    """``time_limit`` as given if ``None`` or a positive finite number of seconds."""
    if time_limit is not None and not (np.isfinite(check_real("time_limit", time_limit)) and time_limit > 0):
        raise InvalidProblemError(f"time_limit must be a positive number of seconds, got {time_limit}")
    return time_limit


class ModelBase:
    """Shared part of the models: the current (modified) data, validated setters, error texts.

    ``self.lp`` is what the model solves (a :class:`LinearProgram`, or anything with its
    ``n_rows``, ``n_cols``, ``name``, ``row_families`` and bound/cost vectors). A subclass
    implements ``_changed(kind, indices, lower_or_cost, upper)`` (push a change to the solver),
    ``solve`` and ``set_option``; it may refuse some indices in ``_check_settable``.
    """

    backend = ""

    def _init_data(self, lp, time_limit: float | None) -> None:
        self.lp, self.time_limit = lp, check_time_limit(time_limit)
        self._cur = {
            k: np.array(getattr(lp, k), dtype=float)
            for k in ("cost", "row_lower", "row_upper", "col_lower", "col_upper")
        }

    def _full_lp(self) -> LinearProgram:
        return self.lp

    def current_lp(self) -> LinearProgram:
        """The LinearProgram as changed by the setters (re-validated: not for hot loops)."""
        cur = self._cur
        return dataclasses.replace(
            self._full_lp(),
            cost=cur["cost"],
            row_lower=cur["row_lower"],
            row_upper=cur["row_upper"],
            col_lower=cur["col_lower"],
            col_upper=cur["col_upper"],
        )

    def _check_settable(self, kind: str, idx: np.ndarray) -> None:
        """Raise InvalidProblemError for indices of ``kind`` ("row"/"col") that may not change."""

    def _set_bounds(self, kind, idx, lower, upper):
        size = self._cur["row_lower"].size if kind == "row" else self.lp.n_cols
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        if idx.ndim != 1 or ((idx < 0) | (idx >= size)).any():
            raise InvalidProblemError(f"{kind} indices must be 1-D and in [0, {size})")
        self._check_settable(kind, idx)
        lower, upper = (np.broadcast_to(np.asarray(v, dtype=float), idx.shape).copy() for v in (lower, upper))
        if np.isnan(lower).any() or np.isnan(upper).any():
            raise InvalidProblemError(f"{kind} bounds contain NaN")
        _check_bounds(lower, upper, f"{kind}_lower", f"{kind}_upper")
        self._cur[f"{kind}_lower"][idx], self._cur[f"{kind}_upper"][idx] = lower, upper
        self._changed(kind, idx.astype(np.int32), lower, upper)

    def set_row_bounds(self, rows, lower, upper) -> None:
        """``lower[k] <= A[rows[k]] @ x <= upper[k]`` (HiGHS keeps its basis for a warm start)."""
        self._set_bounds("row", rows, lower, upper)

    def set_col_bounds(self, cols, lower, upper) -> None:
        """``lower[k] <= x[cols[k]] <= upper[k]``."""
        self._set_bounds("col", cols, lower, upper)

    def set_cost(self, cost) -> None:
        """Replace the whole cost vector (same sense)."""
        cost = np.asarray(cost, dtype=float)
        if cost.shape != (self.lp.n_cols,) or not np.isfinite(cost).all():
            raise InvalidProblemError(f"cost must be finite with shape ({self.lp.n_cols},)")
        self._cur["cost"][:] = cost
        self._changed("cost", np.arange(self.lp.n_cols, dtype=np.int32), cost, None)

    def _changed(self, kind, idx, a, b):
        raise NotImplementedError

    def _fail(self, kind, text, solution=None) -> SolverError:
        fams = [f for f, _, _ in self._full_lp().row_families]
        where = f"LP {self.lp.name!r} ({self.backend}, solver status: {text!r})"
        if kind == "infeasible":
            return InfeasibleError(f"{where} is infeasible; row families: {fams}. " + _diagnose(self.current_lp()))
        if kind == "ambiguous":
            return InfeasibleError(
                f"{where} is infeasible or unbounded; row families: {fams}. "
                "Check the constraints and bound the columns."
            )
        if kind == "unbounded":
            return UnboundedError(f"{where} is unbounded; add column bounds or constraints.")
        if kind == "time-limit":
            return SolverTimeLimitError(
                f"{where} hit time_limit={self.time_limit} s before proving optimality; raise time_limit.",
                solution=solution,
            )
        return SolverError(f"{where} did not solve; check the model data and solver options.", text)


class _Model(ModelBase):
    """A model of one :class:`LinearProgram` with the options every backend takes."""

    def __init__(
        self,
        lp: LinearProgram,
        *,
        time_limit: float | None = None,
        threads: int | None = None,
        mip_rel_gap: float | None = None,
    ):
        if not isinstance(lp, LinearProgram):
            raise InvalidProblemError(f"expected a LinearProgram, got {type(lp).__name__}")
        self._init_data(lp, time_limit)
        self.threads, self.mip_rel_gap = threads, mip_rel_gap
        self._added: list[tuple[str, sp.csr_array, np.ndarray, np.ndarray]] = []
        self._setup()

    def _setup(self) -> None:
        raise NotImplementedError

    def add_rows(self, A, lower, upper, *, name: str = "added rows") -> np.ndarray:
        """Append the rows ``lower <= A @ x <= upper`` (``A``: k x n_cols) as the family ``name``;
        returns their indices. HiGHS keeps its basis (the next solve starts warm), PuLP rebuilds."""
        try:
            A = sp.csr_array(A, dtype=float)
        except Exception as exc:
            raise InvalidProblemError(f"add_rows: `A` cannot be converted to a sparse matrix ({exc})") from None
        if A.ndim != 2 or A.shape[1] != self.lp.n_cols:
            raise InvalidProblemError(f"add_rows: `A` must have {self.lp.n_cols} columns; got shape {A.shape}")
        if not np.isfinite(A.data).all():
            raise InvalidProblemError("add_rows: `A` contains NaN or inf entries")
        A.sum_duplicates()
        k = A.shape[0]
        lower, upper = (_vector(np.broadcast_to(v, (k,)), k, f) for v, f in ((lower, "lower"), (upper, "upper")))
        _check_bounds(lower, upper, "lower", "upper")
        first = self._cur["row_lower"].size
        self._cur["row_lower"] = np.concatenate([self._cur["row_lower"], lower])
        self._cur["row_upper"] = np.concatenate([self._cur["row_upper"], upper])
        self._added.append((str(name), A, lower, upper))
        self._rows_added(A, lower, upper)
        return np.arange(first, first + k)

    def _rows_added(self, A: sp.csr_array, lower: np.ndarray, upper: np.ndarray) -> None:
        raise NotImplementedError

    def _full_lp(self) -> LinearProgram:
        """The model's LP with the rows of :meth:`add_rows` (stacked on first use after an addition)."""
        if self._added:
            lp, added = self.lp, self._added
            families, at = list(lp.row_families), lp.n_rows
            for name, A, _, _ in added:
                families.append((name, at, at + A.shape[0]))
                at += A.shape[0]
            self.lp = dataclasses.replace(
                lp,
                A=sp.vstack([lp.A, *(A for _, A, _, _ in added)], format="csc"),
                row_lower=np.concatenate([lp.row_lower, *(lo for _, _, lo, _ in added)]),
                row_upper=np.concatenate([lp.row_upper, *(up for _, _, _, up in added)]),
                row_families=tuple(families),
            )
            self._added = []
        return self.lp


def quiet_highs() -> highspy.Highs:
    """A silent Highs.  HiGHS prints a banner from C++ on its first construction in a process,
    before options exist, so that one construction runs with fd 1 sent to /dev/null."""
    if getattr(quiet_highs, "muted", False):
        h = highspy.Highs()
    else:
        sys.stdout.flush()
        saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 1)
            h = highspy.Highs()
            try:  # flush C stdio before fd 1 comes back
                ctypes.CDLL(None).fflush(None)
            except (OSError, AttributeError, TypeError):
                pass
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(null)
        quiet_highs.muted = True  # type: ignore[attr-defined]
    h.setOptionValue("output_flag", False)
    return h


_quiet_highs = quiet_highs  # the old private name


def set_highs_option(highs: highspy.Highs, name: str, value: Any) -> None:
    """Set a HiGHS option (e.g. ``mip_max_nodes``); a bad name or value -> InvalidProblemError."""
    try:
        ok = highs.setOptionValue(name, value) != highspy.HighsStatus.kError
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidProblemError(f"HiGHS rejected option {name}={value!r}")


def _stop_highs_scheduler() -> None:
    """Before a fork: stop this thread's HiGHS task scheduler and join its worker threads, so the
    child inherits none (its first solve starts a fresh one; so does this process's next solve).
    Resetting it in the child instead locks a mutex that one of the parent's workers may hold at
    the fork, on its way to sleep: the child then waits forever (seen in about 1 fork in 1,500
    made within 10 ms of a MIP solve; `tests/test_parallel.py` makes such forks)."""
    highspy.Highs.resetGlobalScheduler(True)


if hasattr(os, "register_at_fork"):  # POSIX: every fork of a process that imported this layer
    os.register_at_fork(before=_stop_highs_scheduler)


def change_rows_bounds(
    highs: highspy.Highs, num: int, rows: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> highspy.HighsStatus:
    """``highs.changeRowsBounds(num, rows, lower, upper)``: ``lower[k] <= A[rows[k]] @ x <= upper[k]``."""
    # highspy's type stubs (1.16) omit Highs.changeRowsBounds, which the extension module has
    return highs.changeRowsBounds(num, rows, lower, upper)  # type: ignore[attr-defined]


def _highs_lp(lp: LinearProgram, cost=None) -> highspy.HighsLp:
    out = highspy.HighsLp()
    out.num_col_, out.num_row_ = lp.n_cols, lp.n_rows
    out.col_cost_ = lp.cost if cost is None else cost
    out.col_lower_, out.col_upper_, out.row_lower_, out.row_upper_ = (
        lp.col_lower,
        lp.col_upper,
        lp.row_lower,
        lp.row_upper,
    )
    out.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    out.a_matrix_.start_, out.a_matrix_.index_, out.a_matrix_.value_ = (
        lp.A.indptr.astype(np.int32),
        lp.A.indices.astype(np.int32),
        lp.A.data,
    )
    out.sense_ = highspy.ObjSense.kMaximize if lp.maximize else highspy.ObjSense.kMinimize
    if lp.integrality is not None:  # lp.is_mip
        kinds = np.array([highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger], dtype=object)
        out.integrality_ = kinds[lp.integrality.astype(int)].tolist()
    return out


def _feasibility_checker(lp: LinearProgram):
    """Zero-cost copy of ``lp`` in HiGHS: ``check(rows_to_drop) -> True | False | None (unknown)``."""
    h = quiet_highs()
    h.setOptionValue("time_limit", _DIAG_TIME)
    if h.passModel(_highs_lp(lp, np.zeros(lp.n_cols))) == highspy.HighsStatus.kError:
        return lambda rows=(): None

    def check(rows=np.zeros(0, np.int32)):  # noqa: B008 - read-only empty default
        change_rows_bounds(h, len(rows), rows, np.full(len(rows), -np.inf), np.full(len(rows), np.inf))
        h.clearSolver()
        h.run()
        status = h.getModelStatus()
        change_rows_bounds(h, len(rows), rows, lp.row_lower[rows], lp.row_upper[rows])
        return {_MS.kOptimal: True, _MS.kInfeasible: False}.get(status)

    return check


def _diagnose(lp: LinearProgram) -> str:
    """Name the families whose removal alone makes ``lp`` feasible (run only after 'infeasible')."""
    if not lp.row_families or len(lp.row_families) > _DIAG_MAX_FAMILIES:
        return "Relax the constraints or the column bounds."
    check = _feasibility_checker(lp)
    culprits = [f for f, a, b in lp.row_families if check(np.arange(a, b, dtype=np.int32)) is True]
    if culprits:
        return f"Dropping any one of these families makes it feasible: {culprits}; relax one of them."
    return "No single family is responsible; the conflict spans several families or the column bounds."


class HighsModel(_Model):
    """One HiGHS model, passed in one call (HighsLp + passModel with the CSC matrix), kept alive so right-hand sides / bounds / cost can change and the next solve starts warm from the previous basis."""

    backend = "highs"

    def _setup(self):
        t0 = time.perf_counter()
        self._h = quiet_highs()
        for key in ("time_limit", "threads", "mip_rel_gap"):
            if getattr(self, key) is not None:
                self.set_option(key, getattr(self, key))
        self._call("passModel", self._h.passModel(_highs_lp(self.lp)))
        self._build_time = time.perf_counter() - t0

    def _call(self, what, status):
        if status == highspy.HighsStatus.kError:
            raise SolverError(f"LP {self.lp.name!r} (highs): {what} returned HighsStatus.kError; check the model data.")

    def set_option(self, name: str, value: Any) -> None:
        """Set any HiGHS option (e.g. ``mip_max_nodes``); a bad name or value -> InvalidProblemError."""
        set_highs_option(self._h, name, value)

    def _rows_added(self, A, lower, upper):
        t0 = time.perf_counter()
        indptr, indices = A.indptr.astype(np.int32), A.indices.astype(np.int32)
        self._call("addRows", self._h.addRows(A.shape[0], lower, upper, A.nnz, indptr, indices, A.data))
        self._build_time += time.perf_counter() - t0

    def set_start(self, x) -> None:
        """A MIP start: the full primal vector ``x`` (one value per column), a point HiGHS's
        branch and bound may begin from if it is feasible (HiGHS ignores it otherwise)."""
        x = np.asarray(x, dtype=float)
        if x.shape != (self.lp.n_cols,) or not np.isfinite(x).all():
            raise InvalidProblemError(f"a MIP start must be finite with shape ({self.lp.n_cols},); got shape {x.shape}")
        start = highspy.HighsSolution()
        start.col_value = x.tolist()
        start.value_valid = True
        self._call("setSolution", self._h.setSolution(start))

    def _changed(self, kind, idx, a, b):
        t0 = time.perf_counter()
        if kind == "cost":
            self._call("changeColsCost", self._h.changeColsCost(idx.size, idx, a))
        elif kind == "row":
            self._call("changeRowsBounds", change_rows_bounds(self._h, idx.size, idx, a, b))
        else:
            self._call("changeColsBounds", self._h.changeColsBounds(idx.size, idx, a, b))
        self._build_time += time.perf_counter() - t0

    def _run(self):
        t0 = time.perf_counter()
        failed = self._h.run() == highspy.HighsStatus.kError
        status = self._h.getModelStatus()
        return (_MS.kSolveError if failed and status == _MS.kOptimal else status), time.perf_counter() - t0

    def solve(self) -> LPSolution:
        """Solve (warm from the previous basis if any); LPSolution or a SolverError subtype."""
        status, seconds = self._run()
        if status == _MS.kUnboundedOrInfeasible:  # presolve could not tell: retry without it
            presolve = self._h.getOptionValue("presolve")[1]  # getOptionValue -> (status, value)
            self._h.setOptionValue("presolve", "off")
            try:
                status, more = self._run()
                seconds += more
            finally:
                self._h.setOptionValue("presolve", presolve)
            if status == _MS.kUnboundedOrInfeasible:  # still unclear: is the feasible set empty?
                feasible = _feasibility_checker(self.current_lp())()
                status = {True: _MS.kUnbounded, False: _MS.kInfeasible}.get(feasible, status)
        if status == _MS.kOptimal:
            return self._solution("optimal", seconds)
        incumbent = None
        if status == _MS.kTimeLimit and self._h.getInfo().primal_solution_status == _FEASIBLE:
            incumbent = self._solution("time-limit", seconds)
        raise self.error_for(status, incumbent)

    def error_for(self, status, incumbent=None) -> SolverError:
        """The typed error for any non-optimal ``highspy.HighsModelStatus`` (unlisted -> SolverError)."""
        kind = {
            _MS.kInfeasible: "infeasible",
            _MS.kUnbounded: "unbounded",
            _MS.kUnboundedOrInfeasible: "ambiguous",
            _MS.kTimeLimit: "time-limit",
        }.get(status, "error")
        return self._fail(kind, self._h.modelStatusToString(status), incumbent)

    def _solution(self, status, seconds):
        sol, info = self._h.getSolution(), self._h.getInfo()
        build, self._reported_build = self._build_time - getattr(self, "_reported_build", 0.0), self._build_time
        return LPSolution(
            x=np.array(sol.col_value),
            objective=float(info.objective_function_value),
            status=status,
            row_duals=np.array(sol.row_dual) if sol.dual_valid and not self.lp.is_mip else None,
            backend=self.backend,
            solve_time=seconds,
            build_time=build,
            iterations=max(int(info.simplex_iteration_count), 0),
            mip_gap=float(info.mip_gap) if self.lp.is_mip else None,
            # a MIP's bound on the optimum, valid also when it stops early (time limit, gap)
            details={"mip_dual_bound": float(info.mip_dual_bound)} if self.lp.is_mip else None,
        )


class PulpModel(_Model):
    """The same model for PuLP + bundled CBC; a setter marks the model stale, the next solve rebuilds."""

    backend = "pulp"

    #: The options :meth:`set_option` takes (CBC's own options are not exposed by PuLP's command).
    OPTIONS = ("time_limit", "threads", "mip_rel_gap")

    def _setup(self):
        self._prob: pulp.LpProblem | None = None

    def _changed(self, *_):
        self._prob = None

    def _rows_added(self, *_):
        self._prob = None

    def set_option(self, name: str, value: Any) -> None:
        """Set ``time_limit``, ``threads`` or ``mip_rel_gap`` for the next solve."""
        if name not in self.OPTIONS:
            raise InvalidProblemError(f"the pulp backend takes the options {', '.join(self.OPTIONS)}; got {name!r}")
        if name == "time_limit":
            value = check_time_limit(value)
        elif value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
            raise InvalidProblemError(f"option {name} must be a non-negative number or None; got {value!r}")
        setattr(self, name, value)

    def _build(self) -> pulp.LpProblem:
        lp, cur = self._full_lp(), self._cur
        prob = pulp.LpProblem(re.sub(r"\W", "_", lp.name), pulp.LpMaximize if lp.maximize else pulp.LpMinimize)
        lo, up = ([None if not np.isfinite(v) else v for v in cur[k].tolist()] for k in ("col_lower", "col_upper"))
        integer = lp.integrality if lp.integrality is not None else np.zeros(lp.n_cols, bool)
        cats = np.where(integer, pulp.LpInteger, pulp.LpContinuous)
        xs = np.empty(lp.n_cols, dtype=object)
        xs[:] = [
            prob.add_variable(f"x{j}", a, b, c)
            for j, (a, b, c) in enumerate(zip(lo, up, np.broadcast_to(cats, (lp.n_cols,)).tolist()))
        ]
        prob.setObjective(pulp.LpAffineExpression(zip(xs, cur["cost"].tolist())))
        csr = lp.A.tocsr()
        self._cons = []  # (row, constraint): duals are read back per row
        for i, (a, b, l, u) in enumerate(
            zip(csr.indptr[:-1].tolist(), csr.indptr[1:].tolist(), cur["row_lower"].tolist(), cur["row_upper"].tolist())
        ):
            terms = list(zip(xs[csr.indices[a:b]], csr.data[a:b].tolist()))
            senses = (
                [(pulp.LpConstraintEQ, l)]
                if l == u
                # ranged rows: two constraints
                else [(pulp.LpConstraintGE, l)] * (l > -np.inf) + [(pulp.LpConstraintLE, u)] * (u < np.inf)
            )
            for k, (sense, rhs) in enumerate(senses):
                con = pulp.LpConstraint(pulp.LpAffineExpression(terms), sense, f"r{i}_{k}", rhs)
                prob.addConstraint(con)
                self._cons.append((i, con))
        self._prob, self._xs = prob, xs
        return prob

    def solve(self) -> LPSolution:
        """Build (if stale) and solve with CBC; LPSolution or a SolverError subtype."""
        t0 = time.perf_counter()
        prob = self._build() if self._prob is None else self._prob
        t1 = time.perf_counter()
        with warnings.catch_warnings():  # PULP_CBC_CMD is deprecated for PuLP 4.0
            warnings.simplefilter("ignore", DeprecationWarning)
            cmd = pulp.PULP_CBC_CMD(msg=False, timeLimit=self.time_limit, threads=self.threads, gapRel=self.mip_rel_gap)
        try:
            status = prob.solve(cmd)
        except pulp.PulpSolverError as exc:
            raise SolverError(f"LP {self.lp.name!r} (pulp): CBC failed ({exc}); check the model data.") from exc
        seconds = time.perf_counter() - t1
        if status == pulp.LpStatusOptimal:  # CBC "Stopped on time" with an incumbent also lands here
            stopped = prob.sol_status == pulp.LpSolutionIntegerFeasible
            sol = self._solution("time-limit" if stopped else "optimal", seconds, t1 - t0)
            if not stopped:
                return sol
            raise self._fail("time-limit", "Stopped on time (feasible solution found)", sol)
        kind = {pulp.LpStatusInfeasible: "infeasible", pulp.LpStatusUnbounded: "unbounded"}.get(status, "error")
        # CBC answers "infeasible" when the time limit cuts its preprocessing short: distrust it then
        if self.time_limit is not None and (
            status == pulp.LpStatusNotSolved or (kind == "infeasible" and seconds >= self.time_limit)
        ):
            kind = "time-limit"
        raise self._fail(kind, pulp.LpStatus[status])

    def _solution(self, status, seconds, build):
        x = np.array([np.nan if v.varValue is None else v.varValue for v in self._xs], dtype=float)
        x = np.where(np.isnan(x), np.clip(0.0, self._cur["col_lower"], self._cur["col_upper"]), x)
        pis = [c.pi for _, c in self._cons]
        duals = None
        if not self.lp.is_mip and None not in pis:
            duals = np.zeros(self._cur["row_lower"].size)
            np.add.at(duals, np.array([i for i, _ in self._cons], dtype=int), np.array(pis, dtype=float))
        return LPSolution(
            x=x,
            objective=float(self._cur["cost"] @ x),
            status=status,
            row_duals=duals,
            backend=self.backend,
            solve_time=seconds,
            build_time=build,
            iterations=0,
            mip_gap=None,
        )


def make_model(lp: LinearProgram, *, backend: str = "highs", time_limit: float | None = None, **options) -> LPModel:
    """A reusable model for ``backend`` in ("highs", "pulp"); options: threads, mip_rel_gap."""
    classes: dict[str, type[HighsModel] | type[PulpModel]] = {"highs": HighsModel, "pulp": PulpModel}
    if backend not in classes:
        raise InvalidProblemError(f"unknown LP backend {backend!r}; valid backends: {', '.join(BACKENDS)}")
    return classes[backend](lp, time_limit=time_limit, **options)


def solve(lp: LinearProgram, *, backend: str = "highs", time_limit: float | None = None, **options) -> LPSolution:
    """Solve ``lp`` once: ``make_model(lp, ...).solve()``."""
    return make_model(lp, backend=backend, time_limit=time_limit, **options).solve()
