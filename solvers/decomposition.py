"""Column generation (Dantzig-Wolfe) over the occupancy polytope, for MDPs too large for one simplex.

Every rule LP touches the occupancy ``d`` only through the flow rows of ``O`` and a few *side*
rows (returns, thresholds, user constraints). ``O`` is a bounded polytope, so every point is a
convex combination of its vertices, the occupancies ``d_j`` of deterministic policies. The
*master* LP replaces ``d`` by ``sum_j lambda_j d_j`` over the columns generated so far:

.. math:: \\max\\ \\sigma (c_d^T D^T \\lambda + c_z^T z) \\quad\\text{s.t.}\\quad
          l \\le A_d D^T \\lambda + A_z z \\le u,\\quad 1^T \\lambda = 1,\\quad \\lambda \\ge 0

(``sigma = -1`` for a minimisation). With the master's duals ``y`` (side rows) and ``y_0``
(convexity row), *pricing* solves the unconstrained MDP problem
``max_{d in O} (sigma c_d - A_d^T y) @ d`` exactly by policy iteration (:class:`Pricer` over
:class:`policyagg.planning.PolicyIteration`). Its
certificate -- a potential ``h`` with ``g = max_{s,a} c(s,a) + (P h)(s,a) - h(s)`` -- bounds the
maximum over ``O`` for *any* ``h``, so ``master objective + max(0, g - y_0)`` is an upper
bound on the full LP (Lagrangian bound): column generation stops when the bound and the
master objective agree to :data:`GAP_TOL`, and the final gap is reported. When pricing finds
no new column while the gap is open, the potential's accuracy may be what keeps it open: small
models then price exactly by an LP over ``O``, large ones once more by policy iteration with
refined evaluations (:func:`policyagg.planning.refine_solution`; the bound holds for any
potential, a more accurate one is only tighter). A solve stopped before the gap closes (time
limit, round limit, or still no new column) returns the master's feasible point with status
``"gap"`` and a :class:`~policyagg.errors.GapWarning`.

Generated columns live in a :class:`ColumnPool` that the caller creates and passes to every
model of the same MDP that should reuse them (a model given none makes its own).

Infeasible masters go through phase I (artificial columns per side row, minimise their sum,
price with the phase-I duals); a phase-I bound below ``-FEAS_TOL`` certifies that the LP is
infeasible.

The master is solved with HiGHS (highspy, columns added with warm starts); pricing uses
``scipy`` (GMRES on the policy-evaluation system for large MDPs, sparse LU for small ones)
and falls back to an exact HiGHS LP over ``O`` when policy iteration cannot certify (e.g. a
multichain policy under the average-reward criterion).
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

import highspy
import numpy as np
import scipy.sparse as sp

from policyagg.errors import (
    GapWarning,
    InfeasibleError,
    InvalidProblemError,
    PolicyEvaluationError,
    SolverError,
    SolverTimeLimitError,
    check_count,
)
from policyagg.planning import DIRECT_MAX_STATES, PI_MAX_ITER, PolicyIteration
from policyagg.polytope import OccupancyPolytope
from policyagg.solvers.lp import (
    HighsModel,
    LinearProgram,
    LPSolution,
    ModelBase,
    change_rows_bounds,
    quiet_highs,
    set_highs_option,
)

if TYPE_CHECKING:
    from policyagg.mdp import TabularMDP
    from policyagg.solvers.occupancy import OccupancyProgram

#: What :meth:`Pricer.price` returns: ``(policy or None, column values, value, bound, flow-row duals)``.
Pricing = tuple[np.ndarray | None, np.ndarray, float, float, np.ndarray]

#: Column generation stops when (bound - objective) <= GAP_TOL * max(1, |objective|).
GAP_TOL = 1e-8
#: The master's dual feasibility tolerance: columns whose reduced cost is below it do not
#: enter, so it must sit well below GAP_TOL (HiGHS's default, 1e-7, stalls the generation).
MASTER_DUAL_TOL = 1e-10
#: Phase I: total artificial mass at most this counts as feasible; a bound below -FEAS_TOL
#: certifies infeasibility.
FEAS_TOL = 1e-9
#: At most this many columns a :class:`ColumnPool` keeps for later models (newer ones are not kept).
POOL_MAX = 1000
#: Up to this many occupancy columns a stalled generation re-prices with an exact LP over O.
EXACT_PRICING_MAX_COLUMNS = 20_000
#: Column generation rounds per solve before stopping (status "gap"; a SolverError without a feasible master).
MAX_ROUNDS = 5000


#: Kept for callers of the old name: policy evaluation failures are
#: :class:`policyagg.errors.PolicyEvaluationError`.
PricingFailed = PolicyEvaluationError


class Pricer:
    """``max_{d in O} c @ d`` for one MDP by policy iteration, with an optimality certificate.

    ``price(c)`` returns ``(policy, mu, value, bound, potential)``: the deterministic policy,
    its state occupancy ``mu`` (the column is ``d[s, policy[s]] = mu[s]``), ``value = c @ d``,
    an upper bound on the maximum over ``O`` and the flow-row duals certifying that bound.
    The bound is valid for any potential (see the module doc), so it never depends on how well
    policy iteration converged. Policy iteration itself is :class:`policyagg.planning.PolicyIteration`;
    when it cannot evaluate a policy, one exact HiGHS LP over ``O`` prices instead.
    """

    def __init__(self, mdp: TabularMDP):
        self.mdp = mdp
        self.S, self.A = mdp.n_states, mdp.n_actions
        self.gamma = float(mdp.gamma)
        self.iteration = PolicyIteration(mdp, direct_max_states=DIRECT_MAX_STATES, max_iter=PI_MAX_ITER)
        self._lp: HighsModel | None = None  # fallback: HiGHS over O
        self.fallbacks = 0

    @property
    def iterations(self) -> int:
        """Policy-improvement steps over all calls."""
        return self.iteration.iterations

    @property
    def direct_max_states(self) -> int:
        """Policy evaluation by sparse LU up to this many states, iterative above."""
        return self.iteration.direct_max_states

    @direct_max_states.setter
    def direct_max_states(self, value: int) -> None:
        self.iteration.direct_max_states = value

    def _column(self, policy: np.ndarray, mu: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, float]:
        mu = np.where(mu > 0.0, mu, 0.0)
        if mu.sum() <= 0:
            raise PolicyEvaluationError("stationary distribution is zero")
        mu = mu / mu.sum()
        # a deterministic column must satisfy the flow rows (a singular system solved "well")
        idx = np.arange(self.S) * self.A + policy
        inflow = (self.iteration.transitions(policy).T @ mu) * self.gamma
        target = mu if self.gamma == 1.0 else mu - (1.0 - self.gamma) * self.mdp.rho
        if np.abs(inflow - target).max() > 1e-9:
            raise PolicyEvaluationError("evaluated column violates the flow rows")
        return mu, float(c[idx] @ mu)

    # ------------------------------------------------------------------ pricing
    def price(self, c: np.ndarray, start: np.ndarray | None = None, *, refine: bool = False) -> Pricing:
        """Price ``c`` (length ``S*A``) by policy iteration from ``start`` (default: the last policy);
        ``refine``: with refined iterative evaluations (a tighter bound, at the cost of more solves)."""
        c = np.asarray(c, dtype=float)
        try:
            found = self.iteration.run(c, start, refine=refine)
            mu_col, value = self._column(found.policy, found.mu, c)
        except PolicyEvaluationError:
            return self.price_lp(c)
        self.iteration.policy = found.policy
        h, bound = found.potential, found.bound
        if self.gamma == 1.0:
            duals = np.concatenate([h, [bound]])
        else:
            duals = h + (bound - (1.0 - self.gamma) * self.mdp.rho @ h) / (1.0 - self.gamma)
        return found.policy.copy(), mu_col, value, bound, duals

    def price_lp(self, c: np.ndarray) -> Pricing:
        """Exact pricing by one HiGHS LP over ``O`` (the fallback; slow for large MDPs)."""
        self.fallbacks += 1
        if self._lp is None:
            poly = OccupancyPolytope.from_mdp(self.mdp)
            n_d = self.S * self.A
            lp = LinearProgram(
                np.zeros(n_d),
                poly.A_eq,
                poly.b_eq,
                poly.b_eq,
                np.zeros(n_d),
                np.full(n_d, np.inf),
                maximize=True,
                name="pricing over O",
                row_families=(("occupancy flow", 0, poly.A_eq.shape[0]),),
            )
            self._lp = HighsModel(lp)
        self._lp.set_cost(c)
        sol = self._lp.solve()
        d = np.clip(sol.x, 0.0, None)
        d /= d.sum()
        return None, d, float(c @ d), float(sol.objective), np.asarray(sol.row_duals)


class ColumnPool:
    """Columns (occupancies of generated policies) of one MDP and the pricer that generated them.

    A caller that solves several occupancy LPs of the same MDP creates one pool and passes it
    to each model (``make_model(program, pool=pool)``): every model starts its master from the
    pool's columns and adds the columns it generates (at most ``max_columns`` are kept). A model
    given no pool makes its own.
    """

    def __init__(self, mdp: TabularMDP, *, max_columns: int = POOL_MAX):
        self.mdp = mdp
        self.max_columns = check_count("max_columns", max_columns, minimum=0)
        self.pricer = Pricer(mdp)
        self.columns: list[sp.csr_array] = []
        self.policies: list[np.ndarray | None] = []

    def __len__(self) -> int:
        return len(self.columns)

    def add(self, column: sp.csr_array, policy: np.ndarray | None) -> None:
        """Keep ``column`` (a ``(1, S*A)`` occupancy) and its deterministic policy (or ``None``)."""
        if len(self.columns) < self.max_columns:
            self.columns.append(column)
            self.policies.append(policy)

    def snapshot(self) -> tuple[list[sp.csr_array], list[np.ndarray | None]]:
        """The columns kept now, for :meth:`restore`."""
        return list(self.columns), list(self.policies)

    def restore(self, snapshot: tuple[list[sp.csr_array], list[np.ndarray | None]]) -> None:
        """Keep exactly the columns of an earlier :meth:`snapshot`."""
        self.columns, self.policies = list(snapshot[0]), list(snapshot[1])

    def clear(self) -> None:
        """Forget every column (the pricer keeps its warm start)."""
        self.restore(([], []))


class DecomposedModel(ModelBase):
    """An :class:`~policyagg.solvers.lp.LPModel` of an occupancy program solved by column generation.

    Row indices are those of the full program (flow rows first); only side rows, the extra
    columns and the cost may change. ``pool``: the :class:`ColumnPool` of the program's MDP
    to start from and add to (a new one if omitted). A solve that reaches ``time_limit``
    (seconds per solve) or ``max_rounds`` with a feasible master, or that stalls with its
    pricing gap still open, returns the master's point with ``status == "gap"``, the certified
    gap in ``details["gap"]`` and a :class:`~policyagg.errors.GapWarning`; before a feasible
    master exists it raises :class:`~policyagg.errors.SolverTimeLimitError` (time) or
    :class:`~policyagg.errors.SolverError` (rounds).
    """

    backend = "highs"

    def __init__(
        self,
        program: OccupancyProgram,
        *,
        time_limit: float | None = None,
        pool: ColumnPool | None = None,
        max_rounds: int | None = None,
    ):
        t0 = time.perf_counter()
        self._init_data(program, time_limit)
        self.program = program
        side = program.side
        self.n_d, self.n = program.n_d, side.n_cols
        self.n_z, self.m_f, self.m_s = self.n - self.n_d, program.n_flow, side.n_rows
        self.sigma = 1.0 if side.maximize else -1.0
        self.max_rounds = check_count("max_rounds", MAX_ROUNDS if max_rounds is None else max_rounds)
        A = sp.csc_array(side.A)
        self.A_d = sp.csr_array(A[:, : self.n_d])
        self.A_z = sp.csc_array(A[:, self.n_d :])
        if (self._cur["col_lower"][: self.n_d] != 0).any() or np.isfinite(self._cur["col_upper"][: self.n_d]).any():
            raise InvalidProblemError("the decomposed model needs d >= 0 with no other bounds on the occupancy columns")
        mdp = program.problem.mdp
        if pool is not None and pool.mdp is not mdp:
            raise InvalidProblemError("`pool` holds columns of another MDP; make one ColumnPool per MDP")
        self.pool = ColumnPool(mdp) if pool is None else pool
        self.columns: list[sp.csr_array] = []
        self.policies: list[np.ndarray | None] = []
        self.phase = 2
        self.stats: dict[str, Any] = {
            "pricings": 0,
            "pricing_time": 0.0,
            "master_time": 0.0,
            "columns_added": 0,
            "gap": None,
            "rounds": 0,
            "refined_pricings": 0,
        }
        self._h = quiet_highs()
        self._h.setOptionValue("time_limit", float(time_limit) if time_limit else np.inf)
        self._h.setOptionValue("dual_feasibility_tolerance", MASTER_DUAL_TOL)
        self._seen: set[bytes] = set()  # policies in the master: re-generating one means the generation stalled
        self._pass_master()
        self._duals_flow: np.ndarray | None = None
        self._solve_rounds = 0
        self._stopped: str | None = None
        self._build_time = time.perf_counter() - t0 + program.build_time
        self._reported_build = 0.0

    # ----------------------------------------------------------------- master
    def _col_data(self, cols: list[sp.csr_array]) -> tuple[np.ndarray, np.ndarray]:
        """Master coefficients (side rows, convexity) and costs of occupancy columns."""
        D = sp.vstack(cols, format="csr")
        coef = (
            np.asarray((self.A_d @ D.T).todense()).reshape(self.m_s, len(cols))
            if self.m_s
            else np.zeros((0, len(cols)))
        )
        cost = D @ self._cur["cost"][: self.n_d]
        return coef, cost

    def _pass_master(self) -> None:
        m_s, n_z = self.m_s, self.n_z
        lp = highspy.HighsLp()
        n_cols = n_z + 2 * m_s
        lp.num_col_, lp.num_row_ = n_cols, m_s + 1
        lp.col_cost_ = np.zeros(n_cols)
        lp.col_lower_ = np.concatenate([self._cur["col_lower"][self.n_d :], np.zeros(2 * m_s)])
        lp.col_upper_ = np.concatenate([self._cur["col_upper"][self.n_d :], np.zeros(2 * m_s)])
        lp.row_lower_ = np.concatenate([self._cur["row_lower"][self.m_f :], [1.0]])
        lp.row_upper_ = np.concatenate([self._cur["row_upper"][self.m_f :], [1.0]])
        eye = sp.eye_array(m_s, format="csc")
        A = sp.vstack([sp.hstack([self.A_z, eye, -eye], format="csc"), sp.csc_array((1, n_cols))], format="csc")
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = (
            A.indptr.astype(np.int32),
            A.indices.astype(np.int32),
            A.data.astype(float),
        )
        lp.sense_ = highspy.ObjSense.kMaximize
        self._check(self._h.passModel(lp), "passModel")
        self._set_master_costs()
        if self.pool.columns:
            self._add_columns(list(self.pool.columns), list(self.pool.policies), to_pool=False)

    def _check(self, status: highspy.HighsStatus, what: str) -> None:
        if status == highspy.HighsStatus.kError:
            raise SolverError(f"LP {self.program.name!r} (highs, column generation master): {what} failed")

    def _set_master_costs(self) -> None:
        n_z, m_s = self.n_z, self.m_s
        if self.phase == 1:
            cost = np.concatenate([np.zeros(n_z), -np.ones(2 * m_s), np.zeros(len(self.columns))])
        else:
            lam = (
                (sp.vstack(self.columns, format="csr") @ self._cur["cost"][: self.n_d]) if self.columns else np.zeros(0)
            )
            cost = self.sigma * np.concatenate([self._cur["cost"][self.n_d :], np.zeros(2 * m_s), lam])
        idx = np.arange(cost.size, dtype=np.int32)
        self._check(self._h.changeColsCost(idx.size, idx, cost), "changeColsCost")
        art = np.arange(n_z, n_z + 2 * m_s, dtype=np.int32)
        upper = np.full(art.size, np.inf if self.phase == 1 else 0.0)
        self._check(self._h.changeColsBounds(art.size, art, np.zeros(art.size), upper), "changeColsBounds")

    def _add_columns(self, cols: list[sp.csr_array], policies: list[np.ndarray | None], to_pool: bool = True) -> None:
        coef, cost = self._col_data(cols)
        k = len(cols)
        A = sp.csc_array(np.vstack([coef, np.ones((1, k))]))
        obj = np.zeros(k) if self.phase == 1 else self.sigma * cost
        self._check(
            self._h.addCols(
                k,
                obj,
                np.zeros(k),
                np.full(k, np.inf),
                A.nnz,
                A.indptr.astype(np.int32),
                A.indices.astype(np.int32),
                A.data,
            ),
            "addCols",
        )
        self.columns.extend(cols)
        self.policies.extend(policies)
        self._seen.update(p.astype(np.int16).tobytes() for p in policies if p is not None)
        if to_pool:
            for col, pol in zip(cols, policies):
                self.pool.add(col, pol)

    def _run_master(self) -> highspy.HighsModelStatus:
        t0 = self._h.getRunTime()
        self._h.run()
        status = self._h.getModelStatus()
        if status not in (
            highspy.HighsModelStatus.kOptimal,
            highspy.HighsModelStatus.kInfeasible,
            highspy.HighsModelStatus.kUnbounded,
            highspy.HighsModelStatus.kTimeLimit,
        ):
            self._h.clearSolver()  # numerical trouble in a warm start: once more from scratch
            self._h.run()
            status = self._h.getModelStatus()
        self.stats["master_time"] += self._h.getRunTime() - t0
        return status

    # ----------------------------------------------------------------- setters
    def _full_lp(self) -> LinearProgram:
        return self.program.full

    def _check_settable(self, kind: str, idx: np.ndarray) -> None:
        if kind == "row" and (idx < self.m_f).any():
            raise InvalidProblemError(
                f"rows must be side rows in [{self.m_f}, {self.m_f + self.m_s}) (flow rows are fixed)"
            )
        if kind == "col" and (idx < self.n_d).any():
            raise InvalidProblemError(
                f"only the extra columns [{self.n_d}, {self.n}) can change bounds in the decomposed model"
            )

    def _changed(self, kind: str, idx: np.ndarray, a: np.ndarray, b: np.ndarray | None) -> None:
        if kind == "cost":
            if self.phase == 2:
                self._set_master_costs()
            return
        assert b is not None  # bounds come in pairs (only a cost change has no upper)
        if kind == "row":
            side = (idx - self.m_f).astype(np.int32)
            self._check(change_rows_bounds(self._h, side.size, side, a, b), "changeRowsBounds")
        else:
            z = (idx - self.n_d).astype(np.int32)
            self._check(self._h.changeColsBounds(z.size, z, a, b), "changeColsBounds")

    def set_option(self, name: str, value: Any) -> None:
        """Set a HiGHS option of the master LP; a bad name or value -> InvalidProblemError."""
        set_highs_option(self._h, name, value)

    # ------------------------------------------------------------------ solve
    def _set_phase(self, phase: int) -> None:
        if phase != self.phase:
            self.phase = phase
            self._set_master_costs()

    def _limit_reached(self, started: float) -> str | None:
        """ "time limit" or "round limit" once this solve has used its allowance, else None."""
        if self.time_limit is not None and time.perf_counter() - started > self.time_limit:
            return "time limit"
        if self._solve_rounds >= self.max_rounds:
            return "round limit"
        return None

    def _stop(self, reason: str, feasible: bool) -> str:
        """Stop the generation for ``reason``: "gap" with a feasible master in phase II, else raise."""
        if feasible and self.phase == 2 and self.columns:
            self._stopped = reason
            return "gap"
        if reason == "time limit":
            raise SolverTimeLimitError(
                f"LP {self.program.name!r} (highs, column generation) hit time_limit="
                f"{self.time_limit} s before finding a feasible point; raise time_limit."
            )
        raise SolverError(
            f"LP {self.program.name!r} (highs, column generation): no feasible point in "
            f"{self.max_rounds} rounds; raise max_rounds."
        )

    def _stalled(self, obj: float) -> str:
        """No new column although the bound is open. Phase I: feasible or (as far as the
        generation can tell) infeasible; phase II: "gap" unless the gap is within tolerance."""
        if self.phase == 1:
            return "optimal" if obj >= -FEAS_TOL else "infeasible"
        return "optimal" if self._gap_closed(obj) else self._stop("stall", feasible=True)

    def _gap_closed(self, obj: float) -> bool:
        gap = self.stats["gap"]
        return gap is not None and gap <= GAP_TOL * max(1.0, abs(obj))

    def _generate(self, started: float) -> str:
        """Column generation in the current phase until the Lagrangian bound meets the master.

        Returns "optimal" (phase I: feasible), "gap" (stopped or stalled with the bound open;
        the master's solution is current), "infeasible" or "unbounded".
        """
        bound = np.inf
        while True:
            self.stats["rounds"] += 1
            self._solve_rounds += 1
            if self.columns:
                status = self._run_master()
                if status == highspy.HighsModelStatus.kInfeasible:
                    return "infeasible"
                if status == highspy.HighsModelStatus.kUnbounded:
                    return "unbounded"
                if status == highspy.HighsModelStatus.kTimeLimit:
                    raise SolverTimeLimitError(
                        f"LP {self.program.name!r} (highs, column generation master) hit "
                        f"time_limit={self.time_limit} s; raise time_limit."
                    )
                if status != highspy.HighsModelStatus.kOptimal:
                    raise SolverError(
                        f"LP {self.program.name!r} (highs, column generation): master status "
                        f"{self._h.modelStatusToString(status)!r}"
                    )
                sol = self._h.getSolution()
                obj = float(self._h.getInfo().objective_function_value)
                y = np.array(sol.row_dual)
            else:  # no column yet: price the cost itself
                obj, y = -np.inf, np.zeros(self.m_s + 1)
            c = self.sigma * self._cur["cost"][: self.n_d] if self.phase == 2 else np.zeros(self.n_d)
            if self.m_s:
                c = c - self.A_d.T @ y[: self.m_s]
            start, refine = self._warm_policy(c), False
            while True:
                policy, mu, value, price_bound, duals = self._price(c, start, refine)
                if not self.columns:
                    break
                bound = min(bound, obj + max(price_bound - y[-1], 0.0))
                self.stats["gap"] = bound - obj
                if self.phase == 1:
                    if obj >= -FEAS_TOL:
                        return "optimal"
                    if bound < -FEAS_TOL:
                        return "infeasible"
                elif self._gap_closed(obj):
                    return "optimal"
                no_gain = value - y[-1] <= GAP_TOL * max(1.0, abs(obj)) * 1e-3
                # re-generating a column of the master: no progress possible
                repeated = policy is not None and policy.astype(np.int16).tobytes() in self._seen
                if not (no_gain or repeated):
                    break
                if self.n_d > EXACT_PRICING_MAX_COLUMNS:
                    # the bound is open but pricing found nothing new: the potential's accuracy may be
                    # what keeps it open, so price once more from this policy with refined evaluations
                    # (a valid bound for any potential; a more accurate one is tighter); then stop
                    if refine:
                        return self._stalled(obj)
                    start, refine = policy, True
                    self.stats["refined_pricings"] += 1
                    continue
                if not no_gain:
                    return self._stalled(obj)
                # numerical noise in the potential: price exactly by an LP over O (cheap here)
                policy, mu, value, price_bound, duals = self.pool.pricer.price_lp(c)
                self._duals_flow = duals
                if value - y[-1] <= GAP_TOL * max(1.0, abs(obj)) * 1e-3:
                    self.stats["gap"] = max(0.0, price_bound - y[-1])
                    return "optimal" if self.phase == 2 and self._gap_closed(obj) else self._stalled(obj)
                break
            reason = self._limit_reached(started)
            if reason is not None:  # checked before adding a column: the master's solution is still current
                return self._stop(reason, feasible=bool(self.columns))
            if policy is None:
                column = sp.csr_array(mu.reshape(1, -1))
            else:
                keep = np.flatnonzero(mu > 0)
                column = sp.csr_array(
                    (mu[keep], (np.zeros(keep.size, int), keep * self.pool.pricer.A + policy[keep])),
                    shape=(1, self.n_d),
                )
            self._add_columns([column], [policy])
            self.stats["columns_added"] += 1

    def _price(self, c: np.ndarray, start: np.ndarray | None, refine: bool) -> Pricing:
        """One timed pricing call (see :meth:`Pricer.price`); keeps its flow-row duals."""
        t0 = time.perf_counter()
        found = self.pool.pricer.price(c, start, refine=refine)
        self.stats["pricing_time"] += time.perf_counter() - t0
        self.stats["pricings"] += 1
        self._duals_flow = found[4]
        return found

    def _warm_policy(self, c: np.ndarray) -> np.ndarray | None:
        """Start policy iteration from the generated column with the best reduced value."""
        usable = [j for j, p in enumerate(self.policies) if p is not None]
        if not usable:
            return None
        D = sp.vstack([self.columns[j] for j in usable[-200:]], format="csr")
        return self.policies[usable[-200:][int(np.argmax(D @ c))]]

    def solve(self) -> LPSolution:
        """Column generation to optimality (``status == "optimal"``) or to a stop with the gap
        open (``status == "gap"``, with a :class:`~policyagg.errors.GapWarning`)."""
        started = time.perf_counter()
        before = dict(self.stats)
        self._solve_rounds, self._stopped = 0, None
        self._set_phase(2)
        outcome = self._generate(started)
        if outcome == "infeasible":
            self._set_phase(1)
            outcome = self._generate(started)
            if outcome == "infeasible":
                raise self._infeasible()
            self._set_phase(2)
            outcome = self._generate(started)
        if outcome == "unbounded":
            raise SolverError(
                f"LP {self.program.name!r} (highs, column generation): the master is unbounded; "
                "bound the extra columns."
            )
        if outcome == "infeasible":  # phase II master infeasible after a feasible phase I: numerical trouble
            raise SolverError(
                f"LP {self.program.name!r} (highs, column generation): the master turned infeasible "
                "after phase I found a feasible point; check the constraints' scaling."
            )
        solution = self._solution(started, before, outcome)
        if outcome == "gap":
            warnings.warn(
                f"LP {self.program.name!r} (highs, column generation) stopped at its {self._stopped} with "
                f"the optimality gap open: the objective is within {self.stats['gap']:.3g} of the "
                "optimum, not proven optimal (status 'gap'). Raise time_limit or max_rounds.",
                GapWarning,
                stacklevel=2,
            )
        return solution

    def _infeasible(self) -> InfeasibleError:
        x = np.array(self._h.getSolution().col_value)
        art = x[self.n_z : self.n_z + self.m_s] + x[self.n_z + self.m_s : self.n_z + 2 * self.m_s]
        fams = [f for f, _, _ in self.program.row_families]
        bad = [f for f, a, b in self.program.side.row_families if art[a:b].sum() > FEAS_TOL]
        return InfeasibleError(
            f"LP {self.program.name!r} (highs, column generation) is infeasible; row families: {fams}. "
            f"Families still violated at the least-violating point of O: {bad}; relax one of them."
        )

    def _solution(self, started: float, before: dict[str, Any], outcome: str) -> LPSolution:
        sol = self._h.getSolution()
        x_m = np.array(sol.col_value)
        lam = np.clip(x_m[self.n_z + 2 * self.m_s :], 0.0, None)
        d = sp.vstack(self.columns, format="csr").T @ lam
        d = d / lam.sum() if lam.sum() > 0 else d
        x = np.concatenate([d, x_m[: self.n_z]])
        y_side = np.array(sol.row_dual)[: self.m_s]
        duals = (
            self.sigma * np.concatenate([np.asarray(self._duals_flow, dtype=float), y_side])
            if self._duals_flow is not None and np.size(self._duals_flow) == self.m_f
            else None
        )
        details = {
            k: self.stats[k] - before[k]
            for k in ("pricings", "refined_pricings", "pricing_time", "master_time", "columns_added", "rounds")
        }
        details |= {
            "gap": self.stats["gap"],
            "columns": len(self.columns),
            "highs_time": details["master_time"],
            "stopped": self._stopped,
        }
        build, self._reported_build = self._build_time - self._reported_build, self._build_time
        return LPSolution(
            x=x,
            objective=float(self._cur["cost"] @ x),
            status=outcome,
            row_duals=duals,
            backend="highs",
            solve_time=time.perf_counter() - started,
            build_time=build,
            iterations=int(self._h.getInfo().simplex_iteration_count),
            mip_gap=None,
            details=details,
        )
