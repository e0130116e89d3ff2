"""The heaviest set of agents that one policy can satisfy at once (alpha-approval's core problem).

A set ``S`` of agents is *approving* iff some ``d in O`` (with the problem's constraints) has
``J_i(d) >= t_i`` for every ``i in S``; we want the heaviest one (a maximum feasible subsystem):

.. math:: \\max_{S} \\sum_{i \\in S} w_i \\quad\\text{s.t.}\\quad
          \\mu(S) = \\max_{d \\in O} \\min_{i \\in S} \\frac{J_i(d) - t_i}{\\mathrm{width}_i} \\ge 0

One *margin LP* computes ``mu(S)`` (:func:`margin_program`, one warm model whose threshold
rows are switched on and off). Approving sets are closed under subsets, and an infeasible
``S`` contains an *infeasible core* ``T`` (the rows with non-zero duals: the margin LP over
``T`` alone has the same optimum ``< 0``), so every approving set obeys the cover cut
``sum_{i in T} x_i <= |T| - 1``. The search (combinatorial Benders, Codato and Fischetti 2006):

1. one margin LP over all agents: if everyone can approve, done (no binary anywhere);
2. an incumbent: the heaviest approving set among the sampled policies and the agents'
   optimal occupancies, *repaired* (drop a light member of each core until feasible; every
   core becomes a cut) and *extended* (add agents one by one while the margin LP stays
   feasible; agents that already approve the current point come free);
3. a proof, by one of two methods (:data:`METHODS`), each proposing the heaviest set it
   cannot yet exclude; a proposal no heavier than the incumbent proves it optimal, any
   other is repaired and extended (more cuts, perhaps a better incumbent) and the next
   proposal asked for:

   * ``"cuts"``: a pure-binary master over the agents with every cut (its bound is an
     upper bound on the optimum);
   * ``"milp"``: the big-M MILP over ``(d, x)`` (:func:`big_m_program`: per-agent
     ``M_i = t_i - min J_i`` over ``O`` and the constraints), every known core as a cut,
     started from the incumbent (HiGHS MIP start: the incumbent's margin-LP occupancy and
     indicator), so it never returns less; its set is checked by the margin LP like the
     master's.

With a time limit the search stops with the incumbent and the bound of the last master or
MILP (HiGHS's ``mip_dual_bound``): the gap between them is certified, since every approving
set satisfies every cut (and the MILP is exact).

Measured, wall time of the rule (alpha = 0.9, 2,000 policy samples, a 100 s limit, one
seed, 2 shared cores under varying load; "old" is the plain big-M MILP, which returns
nothing when stopped; "a..b": stopped with weight a, certified bound b):

==========================  ============  ============  ============
instance                    old           milp          cuts
==========================  ============  ============  ============
random, 2 actions, n = 10   0.5 s         0.6 s         0.4 s
random, 2 actions, n = 30   0.4 s         0.6 s         0.3 s
random, 2 actions, n = 50   4.2 s         2.2 s         2.2 s
random, 2 actions, n = 100  50 s          37 s          81 s
(same, heavier load)        > 100 s       34..43        34..39
random, 2 actions, n = 300  > 100 s       101..162      101..127
random, 3 actions, n = 10   0.2 s         0.2 s         0.2 s
random, 3 actions, n = 30   1.1 s         0.7 s         1.5 s
random, 3 actions, n = 50   20 s          27 s          31 s
random, 3 actions, n = 100  > 100 s       44..64        44..51
random, 3 actions, n = 300  > 100 s       108..208      108..177
attention (b), n = 100      13 s          6-9 s, everyone approves: one LP + completion
attention (b), n = 300      43 s          17-18 s
attention (b), n = 1000     80 s          32-36 s
==========================  ============  ============  ============

The MILP's proof time varies with HiGHS's search more than with the start or the cuts
(3 actions, n = 50: 16 s without the start, 20 s without the cuts, 27 s with both); its
value is an approving set and a certified bound whenever it stops. Stopped at 100 s from
n = 100, the cut loop's bound was the tighter in every case. Hence :func:`choose_method`:
the cut loop with a time limit beyond :data:`MILP_MAX_AGENTS` agents and wherever the
margin LP is solved by column generation (the MILP cannot be built), the MILP otherwise.
The incumbent (0.1-6 s) was optimal in every proven case; proving it is the slow part.
Minimal cores matter: without the deletion filter, 3 actions n = 30 took 89 s by cuts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from policyagg.errors import InvalidProblemError, SolverTimeLimitError
from policyagg.problem import Problem
from policyagg.solvers.completion import range_widths
from policyagg.solvers.factored import FactoredModel
from policyagg.solvers.lp import HighsModel, LinearProgram, LPModel, LPSolution
from policyagg.solvers.lp import make_model as make_lp_model
from policyagg.solvers.occupancy import (
    OccupancyProgram,
    Rows,
    SolveLog,
    decomposes,
    make_model,
    occupancy_program,
)

#: A margin ``mu(S) >= -FEASIBILITY_TOL`` (in units of each agent's return range) counts as feasible.
FEASIBILITY_TOL = 1e-9
#: A threshold row with a dual above this belongs to the infeasible core of a candidate set.
CORE_DUAL_TOL = 1e-9
#: A binary at least this large counts as chosen when reading the master's solution.
BINARY_ROUNDING = 0.5
#: Sets of at most this weight above the incumbent (relative to the total weight) are no improvement.
WEIGHT_TOL = 1e-9
#: The master's absolute optimality gap (HiGHS ``mip_abs_gap``): far below any weight difference that matters.
MASTER_ABS_GAP = 1e-7
#: How the incumbent is proven optimal: ``"milp"`` (the big-M MILP over ``(d, x)``, every known
#: core as a cut, the incumbent as its start), ``"cuts"`` (combinatorial Benders: a pure-binary
#: master over the agents) or ``"auto"`` (:func:`choose_method`).
METHODS = ("auto", "milp", "cuts")
#: With a time limit, ``"auto"`` proves by the MILP for at most this many agents, by the cut
#: loop beyond (measured: the MILP as fast or faster up to n = 50; stopped at 100 s from
#: n = 100, the cut loop's certified bound was the tighter; module docstring).
MILP_MAX_AGENTS = 50


@dataclass(frozen=True, eq=False)
class ApprovingSet:
    """The search's answer: ``agents`` (sorted) can all approve one policy; no approving set
    weighs more than ``upper_bound``; ``status`` is ``"optimal"`` (``upper_bound`` within
    tolerance of ``weight``) or ``"time-limit"``."""

    agents: np.ndarray
    weight: float
    upper_bound: float
    status: str
    stats: dict = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """``upper_bound - weight`` (>= 0): how much heavier the best approving set may be."""
        return max(self.upper_bound - self.weight, 0.0)


def margin_program(problem: Problem, thresholds: np.ndarray) -> OccupancyProgram:
    """``max s`` s.t. ``(J_i(d) - t_i) / width_i >= s`` for every agent, ``s <= 1`` (rows switched off with -inf)."""
    n, n_d = problem.n_agents, problem.mdp.n_state_actions
    width = range_widths(problem)
    rows = Rows(
        "approval thresholds",
        sp.hstack([sp.csr_array(problem.reward_matrix / width[:, None]), -np.ones((n, 1))], format="csr"),
        thresholds / width,
        np.full(n, np.inf),
    )
    cost = np.zeros(n_d + 1)
    cost[-1] = 1.0
    return occupancy_program(
        problem,
        cost,
        name="approval (feasibility of an approving set)",
        maximize=True,
        extra_cols=1,
        col_lower=np.concatenate([np.zeros(n_d), [-np.inf]]),
        col_upper=np.concatenate([np.full(n_d, np.inf), [1.0]]),
        rows=[rows],
    )


class _OutOfTime(Exception):
    """The search's time limit ran out (internal: caught by :func:`heaviest_approving_set`)."""


class _Clock:
    """The search's deadline: ``remaining()`` seconds (``None`` without a limit)."""

    def __init__(self, time_limit: float | None):
        self.deadline = None if time_limit is None else time.perf_counter() + time_limit

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        left = self.deadline - time.perf_counter()
        if left <= 0:
            raise _OutOfTime
        return left


def _set_time_limit(model: LPModel, seconds: float | None) -> None:
    """``model``'s next solve may take ``seconds`` (``None``: no limit)."""
    model.time_limit = seconds
    model.set_option("time_limit", seconds if seconds is not None or model.backend == "pulp" else np.inf)


def _limit(model: LPModel, clock: _Clock) -> None:
    """Give ``model``'s next solve the time the search has left."""
    left = clock.remaining()
    if left is not None:
        _set_time_limit(model, left)


@dataclass(frozen=True, eq=False)
class _Check:
    """One margin LP: ``margin = mu(S)``, the maximiser ``d`` and every agent's margin there."""

    feasible: bool
    margin: float
    margins: np.ndarray  # (J_i(d) - t_i) / width_i for every agent
    core: np.ndarray  # an infeasible core (indices) when not feasible
    d: np.ndarray  # the margin LP's occupancy


class _MarginOracle:
    """``mu(S)`` by one warm margin LP whose threshold rows are switched on for ``S`` only."""

    def __init__(self, problem: Problem, thresholds: np.ndarray, backend: str, log: SolveLog, clock: _Clock):
        program = margin_program(problem, thresholds)
        self.n, self.n_d = problem.n_agents, problem.mdp.n_state_actions
        self.rows = program.row_families[-1][1] + np.arange(self.n)
        width = range_widths(problem)
        self.lower = thresholds / width
        self.scaled = problem.reward_matrix / width[:, None]
        self.log, self.clock, self.checks = log, clock, 0
        self.model = make_model(program, backend=backend)  # each check sets the time left

    def check(self, chosen: np.ndarray, timed: bool = True) -> _Check:
        """``mu(chosen)``; ``timed=False`` lets this one LP run past the search's deadline
        (to check a set found just before it)."""
        self.model.set_row_bounds(self.rows, np.where(chosen, self.lower, -np.inf), np.full(self.n, np.inf))
        if timed:
            _limit(self.model, self.clock)
        elif self.clock.deadline is not None:
            _set_time_limit(self.model, None)
        try:
            solution = self.log.add(self.model.solve())
        except SolverTimeLimitError:
            raise _OutOfTime from None
        self.checks += 1
        d = np.clip(solution.x[: self.n_d], 0.0, None)
        margins = self.scaled @ d - self.lower
        if solution.objective >= -FEASIBILITY_TOL:
            return _Check(True, solution.objective, margins, np.zeros(0, int), d)
        duals = solution.row_duals
        core = chosen & (np.abs(duals[self.rows]) > CORE_DUAL_TOL) if duals is not None else chosen
        return _Check(False, solution.objective, margins, np.flatnonzero(core if core.any() else chosen), d)

    def minimal_core(self, core: np.ndarray) -> np.ndarray:
        """An infeasible subset of the infeasible ``core`` from which no agent can be dropped
        (deletion filter: at most ``2 |core|`` margin LPs). Small cores make strong cuts.
        An agent whose removal makes a set approving is needed in every infeasible subset."""
        core, needed = np.asarray(core, dtype=int), set()
        while (free := [i for i in core.tolist() if i not in needed]) and core.size > 1:
            trial = np.zeros(self.n, bool)
            trial[core] = True
            trial[free[0]] = False
            check = self.check(trial)
            if check.feasible:
                needed.add(free[0])
            else:
                core = check.core
        return core


class _Cuts:
    """Infeasible cores as rows of a sparse 0/1 matrix (agents in columns)."""

    def __init__(self, n: int):
        self.n = n
        self.cores: list[np.ndarray] = []
        self._matrix: sp.csr_array | None = None

    def add(self, core: np.ndarray) -> None:
        self.cores.append(np.asarray(core, dtype=int))
        self._matrix = None

    @property
    def matrix(self) -> sp.csr_array:
        if self._matrix is None:
            rows = np.repeat(np.arange(len(self.cores)), [c.size for c in self.cores])
            cols = np.concatenate(self.cores) if self.cores else np.zeros(0, int)
            self._matrix = sp.csr_array((np.ones(cols.size), (rows, cols)), shape=(len(self.cores), self.n))
        return self._matrix

    def blocked(self, chosen: np.ndarray) -> np.ndarray:
        """Agents ``j`` outside ``chosen`` such that ``chosen + {j}`` contains a known core."""
        if not self.cores:
            return np.zeros(self.n, bool)
        C = self.matrix
        outside = C @ (~chosen).astype(float)
        return (C[outside == 1].T @ np.ones(int((outside == 1).sum())) > 0) & ~chosen


class _Search:
    """The state of one search: oracle, cuts, incumbent (with a witness ``d``) and bound (module docstring)."""

    def __init__(self, problem: Problem, thresholds: np.ndarray, backend: str, log: SolveLog, clock: _Clock):
        self.problem, self.thresholds, self.backend, self.log, self.clock = problem, thresholds, backend, log, clock
        self.w = problem.weights
        self.tol = WEIGHT_TOL * float(self.w.sum())
        self.oracle = _MarginOracle(problem, thresholds, backend, log, clock)
        self.cuts = _Cuts(problem.n_agents)
        self.best = np.zeros(problem.n_agents, bool)
        self.best_d: np.ndarray | None = None
        self.upper = float(self.w.sum())
        self.masters = self.milps = 0
        self.lowest: np.ndarray | None = None  # min J_i over O and the constraints, once needed

    def weight(self, chosen: np.ndarray) -> float:
        return float(self.w[chosen].sum())

    def offer(self, chosen: np.ndarray, witness: _Check) -> None:
        """Keep ``chosen`` (an approving set, ``witness.d`` approved by all of it) if it is
        heavier than the incumbent."""
        if self.weight(chosen) > self.weight(self.best) + self.tol or self.best_d is None:
            self.best, self.best_d = chosen.copy(), witness.d

    def repair(self, chosen: np.ndarray) -> tuple[np.ndarray, _Check]:
        """Drop agents from ``chosen`` until it is approving: from each infeasible core, its
        lightest member (ties: the one furthest below its threshold). Every core is cut."""
        chosen = chosen.copy()
        while True:
            check = self.oracle.check(chosen)
            if check.feasible:
                return chosen, check
            core = self.oracle.minimal_core(check.core)
            self.cuts.add(core)
            drop = core[np.lexsort((check.margins[core], self.w[core]))[0]]
            chosen[drop] = False

    def extend(self, chosen: np.ndarray, check: _Check) -> tuple[np.ndarray, _Check]:
        """Add agents to the approving set ``chosen`` (witnessed by ``check``) one at a time,
        heaviest first (ties: closest to their threshold), while it stays approving."""
        chosen = chosen | (check.margins >= -FEASIBILITY_TOL)
        blocked = self.cuts.blocked(chosen)
        for j in np.lexsort((-check.margins, -self.w)):
            if chosen[j] or blocked[j]:
                continue
            trial = chosen.copy()
            trial[j] = True
            attempt = self.oracle.check(trial)
            if attempt.feasible:
                chosen, check = trial | (attempt.margins >= -FEASIBILITY_TOL), attempt
                blocked = self.cuts.blocked(chosen)
            else:
                self.cuts.add(self.oracle.minimal_core(attempt.core))  # it has j: blocks no other agent yet
        return chosen, check

    def improve(self, chosen: np.ndarray) -> None:
        """Repair, extend and offer ``chosen``."""
        approving, check = self.repair(chosen)
        self.offer(approving, check)
        self.offer(*self.extend(approving, check))

    def master(self) -> np.ndarray | None:
        """The heaviest set avoiding every known core (``None`` once none beats the incumbent);
        lowers ``self.upper`` to the master's bound."""
        C = self.cuts.matrix
        lp = LinearProgram.build(
            self.w,
            A_ub=C,
            b_ub=C.sum(axis=1) - 1.0,
            bounds=(0, 1),
            integrality=np.ones(self.w.size, bool),
            maximize=True,
            name="approval (approving set)",
        )
        options = {"mip_rel_gap": 0.0}
        model = make_lp_model(lp, backend=self.backend, time_limit=self.clock.remaining(), **options)
        if self.backend == "highs":
            model.set_option("mip_abs_gap", MASTER_ABS_GAP)
        self.masters += 1
        try:
            solution = model.solve()
        except SolverTimeLimitError as exc:
            stopped = exc.solution
            if isinstance(stopped, LPSolution) and stopped.details:
                self.upper = min(self.upper, stopped.details["mip_dual_bound"])
            raise _OutOfTime from None
        bound = (solution.details or {}).get("mip_dual_bound", solution.objective)
        self.upper = min(self.upper, max(bound, solution.objective))
        chosen = solution.x >= BINARY_ROUNDING
        return None if self.weight(chosen) <= self.weight(self.best) + self.tol else chosen

    def milp(self) -> np.ndarray | None:
        """The heaviest approving set by the big-M MILP (:func:`big_m_program`, every known
        core as a cut), started from the incumbent (HiGHS); ``None`` once it is no heavier
        than the incumbent. Lowers ``self.upper`` to the MILP's bound, also when the time
        runs out (then HiGHS's own incumbent, if heavier and approving, is kept)."""
        if self.lowest is None:
            self.lowest = lowest_returns(self.problem, self.backend, self.log, self.clock)
        program = big_m_program(self.problem, self.thresholds, self.lowest, self.cuts.matrix)
        model = make_model(program, backend=self.backend, time_limit=self.clock.remaining(), mip_rel_gap=0.0)
        if isinstance(model, (HighsModel, FactoredModel)):
            model.set_option("mip_abs_gap", MASTER_ABS_GAP)
            if self.best_d is not None:
                model.set_start(np.concatenate([self.best_d, self.best.astype(float)]))
        self.milps += 1
        n_d = self.problem.mdp.n_state_actions
        try:
            solution = self.log.add(model.solve())
        except SolverTimeLimitError as exc:
            stopped = exc.solution
            if isinstance(stopped, LPSolution):
                if stopped.details:
                    self.upper = min(self.upper, stopped.details["mip_dual_bound"])
                found = stopped.x[n_d:] >= BINARY_ROUNDING
                if self.weight(found) > self.weight(self.best) + self.tol:
                    check = self.oracle.check(found, timed=False)
                    if check.feasible:
                        self.offer(found, check)
            raise _OutOfTime from None
        bound = (solution.details or {}).get("mip_dual_bound", solution.objective)
        self.upper = min(self.upper, max(bound, solution.objective))
        chosen = solution.x[n_d:] >= BINARY_ROUNDING
        return None if self.weight(chosen) <= self.weight(self.best) + self.tol else chosen

    def seeds(self, samples: np.ndarray | None, thresholds: np.ndarray) -> np.ndarray:
        """The heaviest approving set among the sampled policies and the agents' optima
        (approving in ``O``; the problem's constraints may still cut it, hence a repair)."""
        points = [self.problem.require_ranges().best @ self.problem.reward_matrix.T]
        if samples is not None:
            points.append(samples)
        approves = np.vstack(points) >= thresholds
        return approves[int(np.argmax(approves @ self.w))]


def lowest_returns(problem: Problem, backend: str, log: SolveLog, clock: _Clock) -> np.ndarray:
    """``min J_i(d)`` over ``d in O`` and the problem's constraints, for every agent (the big-M's
    floor): the return ranges' ``lower`` without constraints, else one LP per agent (lowered
    by ``FEASIBILITY_TOL`` of the range, so that LP tolerances cannot cut off a policy)."""
    lower = problem.require_ranges().lower
    constraints = problem.constraints
    if constraints.A_ub.shape[0] + constraints.A_eq.shape[0] == 0:
        return lower
    R = problem.reward_matrix
    program = occupancy_program(problem, R[0], name="approval (lowest return)", maximize=False)
    model = make_model(program, backend=backend, time_limit=clock.remaining())
    lowest = np.empty(problem.n_agents)
    for i in range(problem.n_agents):
        model.set_cost(R[i])
        _limit(model, clock)
        try:
            lowest[i] = log.add(model.solve()).objective
        except SolverTimeLimitError:
            raise _OutOfTime from None
    return np.maximum(lowest - FEASIBILITY_TOL * range_widths(problem), lower)


def big_m_program(problem: Problem, thresholds: np.ndarray, lowest: np.ndarray, cuts: sp.csr_array) -> OccupancyProgram:
    """The approval MILP over ``(d, x)``, rows in units of each agent's return range:

    .. math:: \\max \\sum_i w_i x_i \\quad\\text{s.t.}\\quad J_i(d) \\ge t_i - M_i (1 - x_i),\\
              M_i = t_i - \\min J_i, \\qquad \\sum_{i \\in T} x_i \\le |T| - 1 \\ \\text{for each cut } T

    (``lowest = min J_i`` over ``O`` and the constraints, so ``x_i = 0`` leaves ``d`` free)."""
    n, n_d = problem.n_agents, problem.mdp.n_state_actions
    big_m = np.maximum(thresholds - lowest, 0.0)
    scale = 1.0 / range_widths(problem)
    A = sp.diags_array(scale) @ sp.hstack([sp.csr_array(problem.reward_matrix), -sp.diags_array(big_m)], format="csr")
    rows = [Rows("approval thresholds", sp.csr_array(A), (thresholds - big_m) * scale, np.full(n, np.inf))]
    if cuts.shape[0]:
        widened = sp.hstack([sp.csr_array((cuts.shape[0], n_d)), cuts], format="csr")
        rows.append(Rows("approval cuts", widened, np.full(cuts.shape[0], -np.inf), cuts.sum(axis=1) - 1.0))
    return occupancy_program(
        problem,
        np.concatenate([np.zeros(n_d), problem.weights]),
        name="approval (big-M MILP)",
        maximize=True,
        extra_cols=n,
        col_upper=np.concatenate([np.full(n_d, np.inf), np.ones(n)]),
        rows=rows,
        integrality=np.concatenate([np.zeros(n_d, bool), np.ones(n, bool)]),
    )


def choose_method(problem: Problem, thresholds: np.ndarray, backend: str, time_limit: float | None = None) -> str:
    """``"cuts"`` where column generation solves the margin LP (a large MDP: the MILP over
    ``(d, x)`` cannot be built) and, with a ``time_limit``, for more than
    :data:`MILP_MAX_AGENTS` agents (a tighter certified gap when stopped); else ``"milp"``
    (without a limit the proof is what counts, and the MILP proved faster)."""
    if decomposes(margin_program(problem, thresholds), backend):
        return "cuts"
    return "cuts" if time_limit is not None and problem.n_agents > MILP_MAX_AGENTS else "milp"


def heaviest_approving_set(
    problem: Problem,
    thresholds: np.ndarray,
    *,
    samples: np.ndarray | None = None,
    method: str = "auto",
    backend: str = "highs",
    time_limit: float | None = None,
    log: SolveLog | None = None,
) -> ApprovingSet:
    """The heaviest set of agents ``i`` that one ``d in O`` (and the problem's constraints)
    gives ``J_i(d) >= t_i`` (module docstring: the method).

    ``samples`` (``N x n`` sampled returns, optional) seed the incumbent. ``method`` (one of
    :data:`METHODS`) proves it optimal. ``time_limit`` bounds the whole search: when it runs
    out, the incumbent comes back with status ``"time-limit"`` and a certified
    ``upper_bound``. The LPs are recorded in ``log``.
    """
    if method not in METHODS:
        raise InvalidProblemError(f"`method` must be one of {', '.join(METHODS)}; got {method!r}")
    started = time.perf_counter()
    log = log if log is not None else SolveLog(backend)
    clock = _Clock(time_limit)
    thresholds = np.asarray(thresholds, dtype=float)
    n = problem.n_agents
    if method == "auto":
        method = choose_method(problem, thresholds, backend, time_limit)
    search = _Search(problem, thresholds, backend, log, clock)
    propose = search.milp if method == "milp" else search.master
    everyone = np.ones(n, bool)
    path, status, incumbent_time, incumbent_weight = method, "time-limit", None, 0.0
    try:
        first = search.oracle.check(everyone)
        if first.feasible:
            search.best, path, status = everyone, "all approve", "optimal"
        else:
            search.cuts.add(search.oracle.minimal_core(first.core))
            search.improve(search.seeds(samples, thresholds))
            incumbent_time, incumbent_weight = time.perf_counter() - started, search.weight(search.best)
            while search.upper > search.weight(search.best) + search.tol and (proposal := propose()) is not None:
                search.improve(proposal)
            status = "optimal"
    except _OutOfTime:
        pass
    weight = search.weight(search.best)
    if status == "optimal":  # the master's bound is within its tolerance of the incumbent
        search.upper = weight
    stats = {
        "approval_search": path,
        "approval_sets_checked": search.oracle.checks,
        "approval_cuts": len(search.cuts.cores),
        "approval_master_solves": search.masters,
        "approval_milp_solves": search.milps,
        "approval_search_time": time.perf_counter() - started,
    }
    if incumbent_time is not None:
        stats["approval_incumbent_time"] = incumbent_time
        stats["approval_incumbent_weight"] = incumbent_weight
    return ApprovingSet(np.flatnonzero(search.best), weight, max(search.upper, weight), status, stats)
