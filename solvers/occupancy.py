"""Linear programs over the occupancy polytope, shared by every rule.

Columns are the flattened occupancy ``d`` (``S*A`` of them, ``d >= 0``) followed by any
rule-specific columns; rows are the polytope's flow equations, the problem's extra
constraints, then the rule's own row families.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from policyagg.errors import InvalidProblemError, PolicyEvaluationError
from policyagg.planning import PolicyIteration
from policyagg.polytope import LinearConstraints
from policyagg.problem import Problem, ReturnRanges
from policyagg.solvers.lp import BACKENDS, HighsModel, LinearProgram, LPModel, LPSolution, worst_status
from policyagg.solvers.lp import make_model as _lp_make_model

if TYPE_CHECKING:
    from policyagg.mdp import TabularMDP
    from policyagg.solvers.decomposition import ColumnPool


@dataclass
class Rows:
    """A family of rows ``lower <= A @ x <= upper`` over all columns of the program."""

    name: str
    A: sp.csr_array
    lower: np.ndarray
    upper: np.ndarray


def _families(labels, start: int):
    """Consecutive equal labels -> (label, start, stop) row families."""
    out, row = [], start
    for label, group in groupby(labels):
        size = len(list(group))
        out.append((label, row, row + size))
        row += size
    return out


class OccupancyProgram:
    """An LP over ``[d, z]``: the flow rows of ``O`` (``n_flow`` of them, first) and *side* rows.

    ``side`` is a :class:`LinearProgram` over all columns holding every row except the flow
    rows (problem constraints, then the rule's families) with the full cost and bounds;
    ``full`` stacks the flow rows on top (built on first use). Row indices and
    ``row_families`` are those of ``full``. :func:`make_model` solves ``full`` directly or,
    for large MDPs, by column generation over ``side`` (:mod:`policyagg.solvers.decomposition`).
    Attributes not defined here (``A``, ``row_lower``, ...) are those of ``full``.
    """

    def __init__(self, problem: Problem, side: LinearProgram, build_time: float = 0.0):
        self.problem, self.side, self.build_time = problem, side, build_time
        self.n_d = problem.mdp.n_state_actions
        self.n_flow = problem.polytope.A_eq.shape[0]
        shifted = tuple((f, a + self.n_flow, b + self.n_flow) for f, a, b in side.row_families)
        self.row_families = (("occupancy flow", 0, self.n_flow),) + shifted
        self._full: LinearProgram | None = None

    name = property(lambda self: self.side.name)
    cost = property(lambda self: self.side.cost)
    maximize = property(lambda self: self.side.maximize)
    integrality = property(lambda self: self.side.integrality)
    is_mip = property(lambda self: self.side.is_mip)
    col_lower = property(lambda self: self.side.col_lower)
    col_upper = property(lambda self: self.side.col_upper)
    n_cols = property(lambda self: self.side.n_cols)
    n_rows = property(lambda self: self.n_flow + self.side.n_rows)

    @property
    def row_lower(self) -> np.ndarray:
        """Lower row bounds of ``full`` (flow rows: ``b_eq``), without building ``full``."""
        return np.concatenate([self.problem.polytope.b_eq, self.side.row_lower])

    @property
    def row_upper(self) -> np.ndarray:
        """Upper row bounds of ``full`` (flow rows: ``b_eq``), without building ``full``."""
        return np.concatenate([self.problem.polytope.b_eq, self.side.row_upper])

    @property
    def full(self) -> LinearProgram:
        """The whole LP, flow rows included."""
        if self._full is None:
            t0 = time.perf_counter()
            poly, side = self.problem.polytope, self.side
            extra = side.n_cols - self.n_d
            flow = (
                sp.hstack([poly.A_eq, sp.csr_array((poly.A_eq.shape[0], extra))], format="csr") if extra else poly.A_eq
            )
            self._full = LinearProgram(
                cost=side.cost,
                A=sp.vstack([flow, side.A], format="csc"),
                row_lower=np.concatenate([poly.b_eq, side.row_lower]),
                row_upper=np.concatenate([poly.b_eq, side.row_upper]),
                col_lower=side.col_lower,
                col_upper=side.col_upper,
                integrality=side.integrality,
                maximize=side.maximize,
                name=side.name,
                row_families=self.row_families,
            )
            self.build_time += time.perf_counter() - t0
        return self._full

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.full, name)


def occupancy_program(
    problem: Problem,
    cost,
    *,
    name: str,
    maximize: bool = True,
    extra_cols: int = 0,
    col_lower=None,
    col_upper=None,
    rows: Sequence[Rows] = (),
    integrality=None,
    with_constraints: bool = True,
) -> OccupancyProgram:
    """The LP ``max/min cost @ [d, z]`` over ``d in O`` (+ problem constraints) and ``rows``.

    ``cost``, ``col_lower``, ``col_upper`` and ``integrality`` cover all ``S*A + extra_cols``
    columns (``d`` has bounds ``[0, inf)`` unless given). ``with_constraints=False`` drops
    the problem's extra constraints (the bare polytope). Solve it with :func:`make_model`.
    """
    t0 = time.perf_counter()
    n_d = problem.mdp.n_state_actions
    n = n_d + extra_cols

    def widen(A):
        return sp.hstack([A, sp.csr_array((A.shape[0], extra_cols))], format="csr") if extra_cols else A

    user = problem.constraints if with_constraints else LinearConstraints.empty(n_d)
    blocks = [widen(sp.csr_array(user.A_eq)), widen(sp.csr_array(user.A_ub))] + [r.A for r in rows]
    lower = [user.b_eq, np.full(user.b_ub.size, -np.inf)] + [r.lower for r in rows]
    upper = [user.b_eq, user.b_ub] + [r.upper for r in rows]
    families, at = [], 0
    for labels in (user.labels_eq, user.labels_ub):
        families += _families(labels, at)
        at += len(labels)
    for r in rows:
        if r.A.shape[1] != n:
            raise InvalidProblemError(f"row family {r.name!r} has {r.A.shape[1]} columns; the program has {n}")
        families.append((r.name, at, at + r.A.shape[0]))
        at += r.A.shape[0]
    lo = np.zeros(n) if col_lower is None else np.asarray(col_lower, dtype=float)
    hi = np.full(n, np.inf) if col_upper is None else np.asarray(col_upper, dtype=float)
    side = LinearProgram(
        cost=np.asarray(cost, dtype=float),
        A=sp.vstack([sp.csr_array(b) for b in blocks], format="csc") if at else sp.csc_array((0, n)),
        row_lower=np.concatenate(lower),
        row_upper=np.concatenate(upper),
        col_lower=lo,
        col_upper=hi,
        integrality=integrality,
        maximize=maximize,
        name=name,
        row_families=tuple(families),
    )
    return OccupancyProgram(problem, side, time.perf_counter() - t0)


#: When :func:`make_model` solves an occupancy program by column generation: ``"auto"``
#: (HiGHS backend, an LP, at least :data:`DECOMPOSE_MIN_COLUMNS` occupancy columns),
#: ``"always"`` (HiGHS LPs of any size; for tests) or ``"never"``.
DECOMPOSE_MODES = ("auto", "always", "never")
#: Occupancy columns from which ``"auto"`` decomposes. Measured (egalitarian, attention model,
#: 10 agents): 1,458 columns direct 0.3 s vs column generation 0.9 s; 4,374 columns direct
#: 11.0 s vs 1.1 s; 59,049 columns: one direct LP > 160 s vs about 10 s for the whole rule.
DECOMPOSE_MIN_COLUMNS = 3_000


def check_decompose(mode: str) -> str:
    """``mode`` if it is one of :data:`DECOMPOSE_MODES`, else InvalidProblemError."""
    if mode not in DECOMPOSE_MODES:
        raise InvalidProblemError(f"decomposition mode must be one of {', '.join(DECOMPOSE_MODES)}; got {mode!r}")
    return mode


@dataclass(frozen=True)
class Decomposition:
    """How :func:`make_model` solves occupancy programs when its caller does not say:
    ``mode`` (one of :data:`DECOMPOSE_MODES`) and the :class:`~policyagg.solvers.decomposition.ColumnPool`
    that decomposed models share (``None``: each model makes its own)."""

    mode: str = "auto"
    pool: ColumnPool | None = None

    def __post_init__(self) -> None:
        check_decompose(self.mode)


#: The defaults of the current context (:func:`decomposition` sets them for a block).
_defaults: contextvars.ContextVar[Decomposition] = contextvars.ContextVar(
    "decomposition",
    default=Decomposition(),  # noqa: B039 - a frozen dataclass
)


@contextlib.contextmanager
def decomposition(mode: str | None = None, pool: ColumnPool | None = None) -> Iterator[Decomposition]:
    """``with decomposition("always", pool=pool): rule(problem, ...)``: the ``decompose`` and
    ``pool`` defaults of every :func:`make_model` call in the block (in this thread or task;
    explicit arguments win; ``None`` keeps the enclosing block's value). For callers that
    cannot pass them, such as the rules, whose signatures do not take them."""
    outer = _defaults.get()
    token = _defaults.set(Decomposition(outer.mode if mode is None else mode, outer.pool if pool is None else pool))
    try:
        yield _defaults.get()
    finally:
        _defaults.reset(token)


def call_pool(mdp: TabularMDP) -> ColumnPool | None:
    """A fresh column pool for one rule call on ``mdp``, so that its LPs (return ranges,
    leximin rounds, completions) reuse each other's columns; ``None`` where the enclosing block
    already shares a pool or no occupancy LP of ``mdp`` is solved by column generation."""
    current = _defaults.get()
    if current.pool is not None or current.mode == "never":
        return None
    if current.mode == "auto" and mdp.n_state_actions < DECOMPOSE_MIN_COLUMNS:
        return None
    from policyagg.solvers.decomposition import ColumnPool

    return ColumnPool(mdp)


def decomposes(program, backend: str = "highs", decompose: str | None = None) -> bool:
    """Whether :func:`make_model` would solve ``program`` by column generation
    (``decompose=None``: the mode of the current :func:`decomposition` block, else "auto")."""
    mode = _defaults.get().mode if decompose is None else check_decompose(decompose)
    if not isinstance(program, OccupancyProgram) or backend != "highs" or program.is_mip or mode == "never":
        return False
    d_bounds_default = (
        not (program.col_lower[: program.n_d] != 0).any() and not np.isfinite(program.col_upper[: program.n_d]).any()
    )
    return d_bounds_default and (mode == "always" or program.n_d >= DECOMPOSE_MIN_COLUMNS)


def make_model(
    program,
    *,
    backend: str = "highs",
    time_limit: float | None = None,
    decompose: str | None = None,
    pool: ColumnPool | None = None,
    **options,
) -> LPModel:
    """A reusable model of ``program`` (an :class:`OccupancyProgram` or a :class:`LinearProgram`).

    Occupancy LPs on HiGHS with many agent rows of a low-rank reward structure are solved in
    factored form (:mod:`policyagg.solvers.factored`, the same LP on ``k`` feature columns).
    Large occupancy LPs on HiGHS are solved by column generation (see :func:`decomposes`;
    ``decompose`` in :data:`DECOMPOSE_MODES`), starting from and adding to ``pool`` (a
    :class:`~policyagg.solvers.decomposition.ColumnPool` of the program's MDP; a new one if
    omitted). Everything else goes to :func:`policyagg.solvers.lp.make_model` on the full LP.
    ``decompose=None``/``pool=None`` take the defaults of the current :func:`decomposition` block.
    """
    if decomposes(program, backend, decompose):
        from policyagg.solvers.decomposition import DecomposedModel

        return DecomposedModel(program, time_limit=time_limit, pool=_defaults.get().pool if pool is None else pool)
    lp = program.full if isinstance(program, OccupancyProgram) else program
    if isinstance(program, OccupancyProgram) and backend == "highs":
        from policyagg.solvers.factored import FactoredModel, factor, feature_basis

        basis = feature_basis(program.problem.reward_matrix)
        factored = factor(lp, program.n_d, basis)
        if factored is not None:
            inner = _lp_make_model(factored, backend=backend, time_limit=time_limit, **options)
            if isinstance(inner, HighsModel):
                inner._build_time += program.build_time
            return FactoredModel(lp, inner, basis)
    model = _lp_make_model(lp, backend=backend, time_limit=time_limit, **options)
    if isinstance(program, OccupancyProgram) and isinstance(model, HighsModel):  # backend "highs"
        model._build_time += program.build_time
    return model


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise InvalidProblemError(f"`backend` must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return backend


@dataclass
class SolveLog:
    """Accumulates solver diagnostics over the LPs a rule solves."""

    backend: str
    n_solves: int = 0
    solve_time: float = 0.0
    build_time: float = 0.0
    iterations: int = 0
    statuses: list = field(default_factory=list)
    highs_time: float = 0.0  # HiGHS's own run time (column generation: the master solves)
    pricing_time: float = 0.0  # column generation: policy iteration (scipy)
    pricings: int = 0
    columns_added: int = 0
    max_gap: float = 0.0  # column generation: largest final optimality gap
    floor_violation: float | None = None  # leximin: the largest slack a fixed agent's floor used
    region_margin: float | None = None  # completion: how far above the rule's floors it stayed

    @property
    def status(self) -> str:
        """The worst status of the solves ("optimal" < "gap" < "time-limit"); "optimal" if none."""
        return worst_status(self.statuses)

    def add(self, solution: LPSolution) -> LPSolution:
        self.n_solves += 1
        self.solve_time += solution.solve_time
        self.build_time += solution.build_time
        self.iterations += int(solution.iterations or 0)
        self.statuses.append(solution.status)
        details = solution.details or {}
        self.highs_time += details.get("highs_time", solution.solve_time)
        self.pricing_time += details.get("pricing_time", 0.0)
        self.pricings += details.get("pricings", 0)
        self.columns_added += details.get("columns_added", 0)
        self.max_gap = max(self.max_gap, details.get("gap") or 0.0)
        return solution

    def as_dict(self) -> dict:
        return (
            {
                "backend": self.backend,
                "n_solves": self.n_solves,
                "solve_time": self.solve_time,
                "build_time": self.build_time,
                "iterations": self.iterations,
                "status": self.status if self.statuses else None,
                "highs_time": self.highs_time,
            }
            | ({"max_floor_violation": self.floor_violation} if self.floor_violation is not None else {})
            | ({"region_margin": self.region_margin} if self.region_margin is not None else {})
            | (
                {
                    "pricing_time": self.pricing_time,
                    "pricings": self.pricings,
                    "columns_added": self.columns_added,
                    "column_generation_gap": self.max_gap,
                }
                if self.pricings
                else {}
            )
        )


def unit_cost(cost) -> np.ndarray:
    """``cost / max |cost|`` (unchanged if all zero): the same maximisers at any reward scale,
    while an objective of order 1e-12 or 1e12 would meet the solver's absolute tolerances."""
    cost = np.asarray(cost, dtype=float)
    top = float(np.abs(cost).max(initial=0.0))
    return cost / top if top > 0 else cost


#: Policy iteration's optimum counts as certified when its bound is within this of its value
#: (objectives divided by their largest entry, so values lie in [-1, 1]).
RANGE_CERTIFICATE_TOL = 1e-9


def return_ranges(problem: Problem, *, backend: str = "highs", time_limit: float | None = None) -> ReturnRanges:
    """``min_O J_i`` and ``max_O J_i`` for every agent, with an occupancy attaining each.

    Each is one planning problem ``max_{d in O} ±r_i @ d``, solved by policy iteration
    (:class:`~policyagg.planning.PolicyIteration`, warm from the previous agent's policy), which
    is exact when its certificate (an upper bound from a potential, the LP dual) meets the
    policy's value; any other is solved by the LP (one warm model). The range is over the
    whole polytope ``O``, without the problem's extra constraints: normalisation describes
    the agent's preferences (like the samples, which are drawn from ``O``), while
    constraints restrict what a rule may choose. ``diagnostics`` of a rule do not include
    this step; ``problem.ranges`` is computed once.
    """
    check_backend(backend)
    R = problem.reward_matrix
    n, n_d = R.shape
    lower, upper = np.empty(n), np.empty(n)
    best, worst = np.empty((n, n_d)), np.empty((n, n_d))
    planners = {1.0: PolicyIteration(problem.mdp), -1.0: PolicyIteration(problem.mdp)}  # each warm across agents
    model = None
    for i in range(n):
        for sign, values, points in ((1.0, upper, best), (-1.0, lower, worst)):
            cost = sign * unit_cost(R[i])  # maximise J_i, then maximise -J_i
            d = _certified_optimum(planners[sign], cost)
            if d is None:
                if model is None:
                    lp = occupancy_program(problem, cost, name="return range", maximize=True, with_constraints=False)
                    model = make_model(lp, backend=backend, time_limit=time_limit)
                model.set_cost(cost)
                d = model.solve().x
            points[i] = np.clip(d, 0.0, None)
            values[i] = R[i] @ points[i]
    return ReturnRanges(lower=lower, upper=np.maximum(upper, lower), best=best, worst=worst)


def _certified_optimum(planner: PolicyIteration, cost: np.ndarray) -> np.ndarray | None:
    """The occupancy of policy iteration's optimum of ``cost @ d``, or ``None`` if uncertified."""
    try:
        result = planner.run(cost)
    except PolicyEvaluationError:
        return None
    planner.policy = result.policy  # the next agent's start
    S, A = planner.S, planner.A
    d = np.zeros(S * A)
    d[np.arange(S) * A + result.policy] = result.mu
    if not result.bound - cost @ d <= RANGE_CERTIFICATE_TOL:
        return None
    return d


def with_ranges(problem: Problem, **options) -> Problem:
    """``problem`` with its per-agent return ranges computed (once) and attached."""
    if not isinstance(problem, Problem):
        raise InvalidProblemError(f"`problem` must be a Problem (Problem(mdp, rewards)); got {type(problem).__name__}")
    return problem if problem.ranges is not None else problem.with_ranges(return_ranges(problem, **options))


def utilities(problem: Problem, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(C, c0)`` with ``u = C @ d + c0``: raw returns or normalised returns.

    Normalised: ``u_i = (J_i - min_O J_i) / (max_O J_i - min_O J_i)`` (flat agents: ``u_i = 1``).
    """
    R = problem.reward_matrix
    if not normalize:
        return R, np.zeros(problem.n_agents)
    ranges = problem.require_ranges()
    width = np.where(ranges.flat, 1.0, ranges.width)
    C = np.where(ranges.flat[:, None], 0.0, R / width[:, None])
    c0 = np.where(ranges.flat, 1.0, -ranges.lower / width)
    return C, c0


def prepare(problem: Problem, constraints: LinearConstraints | None, backend: str) -> Problem:
    """Validate the backend, attach return ranges, and add a rule call's extra constraints."""
    check_backend(backend)
    problem = with_ranges(problem, backend=backend)
    if constraints is not None:
        problem = replace(problem, constraints=problem.constraints & constraints)
    return problem
