"""Column generation (Dantzig-Wolfe) over the occupancy polytope, for MDPs too large for one simplex.

Every rule LP touches the occupancy ``d`` only through the flow rows of ``O`` and a few *side*
rows (returns, thresholds, user constraints). ``O`` is a bounded polytope, so every point is a
convex combination of its vertices, the occupancies ``d_j`` of deterministic policies. The
*master* LP replaces ``d`` by ``sum_j lambda_j d_j`` over the columns generated so far:

.. math:: \\max\\ \\sigma (c_d^T D^T \\lambda + c_z^T z) \\quad\\text{s.t.}\\quad
          l \\le A_d D^T \\lambda + A_z z \\le u,\\quad 1^T \\lambda = 1,\\quad \\lambda \\ge 0

(``sigma = -1`` for a minimisation). With the master's duals ``y`` (side rows) and ``y_0``
(convexity row), *pricing* solves the unconstrained MDP problem
``max_{d in O} (sigma c_d - A_d^T y) @ d`` exactly by policy iteration (:class:`Pricer`). Its
certificate -- a potential ``h`` with ``g = max_{s,a} c(s,a) + (P h)(s,a) - h(s)`` -- bounds the
maximum over ``O`` for *any* ``h``, so ``master objective + max(0, g - y_0)`` is an upper
bound on the full LP (Lagrangian bound): column generation stops when the bound and the
master objective agree to :data:`GAP_TOL`, and the final gap is reported.

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
import weakref

import highspy
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse import csgraph

from policyagg.errors import InfeasibleError, InvalidProblemError, SolverError, SolverTimeLimitError
from policyagg.solvers.lp import LinearProgram, LPSolution, _quiet_highs

#: Column generation stops when (bound - objective) <= GAP_TOL * max(1, |objective|).
GAP_TOL = 1e-8
#: The master's dual feasibility tolerance: columns whose reduced cost is below it do not
#: enter, so it must sit well below GAP_TOL (HiGHS's default, 1e-7, stalls the generation).
MASTER_DUAL_TOL = 1e-10
#: Phase I: total artificial mass at most this counts as feasible; a bound below -FEAS_TOL
#: certifies infeasibility.
FEAS_TOL = 1e-9
#: Policy iteration: at most this many improvement steps per pricing call.
PI_MAX_ITER = 200
#: Policy evaluation by sparse LU up to this many states, GMRES (warm started) above.
DIRECT_MAX_STATES = 500
#: Relative residual asked of GMRES; the flow rows of a generated column then hold to ~1e-12.
ITERATIVE_RTOL = 1e-13
#: At most this many columns are kept per MDP for later models (newest first dropped).
POOL_MAX = 1000
#: Up to this many occupancy columns a stalled generation re-prices with an exact LP over O.
EXACT_PRICING_MAX_COLUMNS = 20_000
#: Column generation rounds per solve before giving up with a SolverError.
MAX_ROUNDS = 5000


def _iterative(op, b, x0):
    """Solve ``op x = b`` to :data:`ITERATIVE_RTOL`: BiCGSTAB (little Python overhead per
    step), then restarted GMRES if it stalls; :class:`PricingFailed` if both fail."""
    target = ITERATIVE_RTOL * np.linalg.norm(b)
    x, info = spla.bicgstab(op, b, x0=x0, rtol=ITERATIVE_RTOL, atol=0.0, maxiter=2000)
    if info != 0 or not np.isfinite(x).all() or np.linalg.norm(op.matvec(x) - b) > 10 * target:
        x, info = spla.gmres(op, b, x0=x0, rtol=ITERATIVE_RTOL, atol=0.0, restart=60, maxiter=50)
        if info != 0:
            raise PricingFailed(f"GMRES did not converge (info {info})")
    return x


class PricingFailed(Exception):
    """Policy iteration could not evaluate a policy (singular system, no convergence)."""


class Pricer:
    """``max_{d in O} c @ d`` for one MDP by policy iteration, with an optimality certificate.

    ``price(c)`` returns ``(policy, mu, value, bound, potential)``: the deterministic policy,
    its state occupancy ``mu`` (the column is ``d[s, policy[s]] = mu[s]``), ``value = c @ d``,
    an upper bound on the maximum over ``O`` and the flow-row duals certifying that bound.
    The bound is valid for any potential (see the module doc), so it never depends on how well
    policy iteration converged.
    """

    def __init__(self, mdp):
        self.mdp = mdp
        self.S, self.A = mdp.n_states, mdp.n_actions
        self.P = sp.csr_array(mdp.P)
        self.gamma = float(mdp.gamma)
        self.policy = np.zeros(self.S, dtype=np.int64)
        self._guess = self._guess_mu = None  # last evaluations, the next iterative starts
        self._lp = None  # fallback: HiGHS over O
        self._reverse = self._coo = None  # reversed union graph, P as COO (built on first use)
        self._last = None  # (policy bytes, P_pi)
        self.iterations = 0
        self.fallbacks = 0
        self.direct_max_states = DIRECT_MAX_STATES

    # -------------------------------------------------------------- evaluation
    def _evaluate(self, policy, c_pi, need_mu=True):
        """Average reward: ``x = (g, h_1..)`` with ``(I - P_pi) h + g 1 = c_pi``, ``h_0 = 0``,
        and the stationary ``mu``; discounted: ``v = (I - gamma P_pi)^{-1} c_pi`` and
        ``mu = (1 - gamma) (I - gamma P_pi^T)^{-1} rho``."""
        S = self.S
        P_pi = self._transitions(policy)
        avg = self.gamma == 1.0
        rhs_mu = np.zeros(S)
        if avg:
            rhs_mu[0] = 1.0
        else:
            rhs_mu = (1.0 - self.gamma) * self.mdp.rho
        if S <= self.direct_max_states:
            M = sp.eye_array(S, format="csc") - self.gamma * sp.csc_array(P_pi)
            if avg:
                keep = np.ones(S)
                keep[0] = 0.0
                M = sp.csc_array(M @ sp.diags_array(keep) + sp.csc_array((np.ones(S), (np.arange(S), np.zeros(S, int))),
                                                                            shape=(S, S)))
            try:
                with np.errstate(all="raise"):
                    lu = spla.splu(sp.csc_array(M))
                    x, mu = lu.solve(c_pi), lu.solve(rhs_mu, trans="T")
            except (RuntimeError, FloatingPointError) as exc:
                raise PricingFailed(str(exc)) from None
        else:
            P_T = P_pi.T  # a CSC view: no conversion
            if avg:
                def mv(x):
                    h = x.copy()
                    g, h[0] = h[0], 0.0
                    return h - P_pi @ h + g

                def rmv(y):
                    out = y - P_T @ y
                    out[0] = y.sum()
                    return out
            else:
                def mv(x):
                    return x - self.gamma * (P_pi @ x)

                def rmv(y):
                    return y - self.gamma * (P_T @ y)
            op = spla.LinearOperator((S, S), matvec=mv, dtype=float)
            x = _iterative(op, c_pi, self._guess)
            self._guess = x
            if need_mu:
                mu = _iterative(spla.LinearOperator((S, S), matvec=rmv, dtype=float), rhs_mu, self._guess_mu)
                self._guess_mu = mu
            else:
                mu = np.zeros(S)
        if not (np.isfinite(x).all() and np.isfinite(mu).all()):
            raise PricingFailed("policy evaluation returned non-finite values")
        if avg:
            h = x.copy()
            g, h[0] = h[0], 0.0
            return g, h, mu
        return None, x, mu

    def _transitions(self, policy):
        """``P_pi`` (S, S) for a deterministic policy, cached for the last policy asked."""
        key = policy.tobytes()
        if self._last is None or self._last[0] != key:
            self._last = (key, self.P[np.arange(self.S) * self.A + policy])
        return self._last[1]

    def _unichain(self, policy, c):
        """Average reward: a policy with several closed classes has no bordered evaluation
        system. Keep its best closed class (by gain on ``c``) and steer the states of the other
        closed classes one step closer to it on the union graph (repeat; finally steer every
        other state). The gain never drops below the best class's gain."""
        S, A = self.S, self.A
        for attempt in range(6):
            P_pi = self._transitions(policy)
            n_comp, labels = csgraph.connected_components(P_pi, directed=True, connection="strong")
            if n_comp == 1:
                return policy
            coo = P_pi.tocoo()
            leaves = labels[coo.row] != labels[coo.col]
            open_comp = np.zeros(n_comp, bool)
            open_comp[labels[coo.row[leaves]]] = True
            closed = np.flatnonzero(~open_comp)
            if closed.size == 1:
                return policy
            gains = []
            for k in closed:
                states = np.flatnonzero(labels == k)
                sub = sp.csr_array(P_pi[states][:, states])
                from policyagg.mdp import _stationary

                gains.append(float(_stationary(sub) @ c[states * A + policy[states]]))
            keep = closed[int(np.argmax(gains))]
            target = labels == keep
            far = self._distance_to(target)
            move = (~target & np.isin(labels, closed)) if attempt < 5 else ~target
            closer = self._closer_probability(far)
            policy = policy.copy()
            states = np.flatnonzero(move & np.isfinite(far))
            policy[states] = closer[states].argmax(axis=1)
        raise PricingFailed("could not make the policy unichain")

    def _distance_to(self, target):
        if self._reverse is None:
            union = sp.csr_array(self.mdp.action_sum @ (self.P > 0).astype(float))
            self._reverse = sp.csr_array((union.T > 0).astype(float))
        dist = csgraph.dijkstra(self._reverse, directed=True, indices=np.flatnonzero(target), unweighted=True,
                                min_only=True)
        return dist

    def _closer_probability(self, far):
        coo = self._coo if self._coo is not None else self.P.tocoo()
        self._coo = coo
        source = coo.row // self.A
        closer = np.bincount(coo.row, weights=coo.data * (far[coo.col] < far[source]), minlength=self.P.shape[0])
        return closer.reshape(self.S, self.A)

    def _column(self, policy, mu, c):
        mu = np.where(mu > 0.0, mu, 0.0)
        if mu.sum() <= 0:
            raise PricingFailed("stationary distribution is zero")
        mu = mu / mu.sum()
        # a deterministic column must satisfy the flow rows (a singular system solved "well")
        idx = np.arange(self.S) * self.A + policy
        inflow = (self._transitions(policy).T @ mu) * self.gamma
        target = mu if self.gamma == 1.0 else mu - (1.0 - self.gamma) * self.mdp.rho
        if np.abs(inflow - target).max() > 1e-9:
            raise PricingFailed("evaluated column violates the flow rows")
        return mu, float(c[idx] @ mu)

    # ------------------------------------------------------------------ pricing
    def price(self, c, start=None):
        c = np.asarray(c, dtype=float)
        S, A = self.S, self.A
        policy = self.policy.copy() if start is None else np.asarray(start, dtype=np.int64).copy()
        scale = max(1.0, float(np.abs(c).max()))
        C = c.reshape(S, A)
        try:
            for _ in range(PI_MAX_ITER):
                self.iterations += 1
                if self.gamma == 1.0:
                    policy = self._unichain(policy, c)
                g, h, _ = self._evaluate(policy, C[np.arange(S), policy], need_mu=False)
                Q = (c + self.gamma * (self.P @ h)).reshape(S, A)
                best = Q.max(axis=1)
                if self.gamma == 1.0:
                    bound = float((best - h).max())
                else:
                    delta = float((best - h).max())
                    bound = float((1.0 - self.gamma) * self.mdp.rho @ h + delta)
                current = Q[np.arange(S), policy]
                improve = current < best - 1e-12 * scale
                # the policy's value: its gain (average reward) or (1 - gamma) rho @ v (discounted)
                value = g if self.gamma == 1.0 else float((1.0 - self.gamma) * self.mdp.rho @ h)
                if not improve.any() or bound - value <= 1e-12 * scale:
                    break
                policy[improve] = Q[improve].argmax(axis=1)
            if self.gamma == 1.0:
                policy = self._unichain(policy, c)
            _, _, mu = self._evaluate(policy, C[np.arange(S), policy])
            mu_col, value = self._column(policy, mu, c)
            self.policy = policy
            if self.gamma == 1.0:
                duals = np.concatenate([h, [bound]])
            else:
                duals = h + (bound - (1.0 - self.gamma) * self.mdp.rho @ h) / (1.0 - self.gamma)
            return policy.copy(), mu_col, value, bound, duals
        except PricingFailed:
            return self.price_lp(c)

    def price_lp(self, c):
        """Exact pricing by one HiGHS LP over ``O`` (the fallback; slow for large MDPs)."""
        from policyagg.solvers.lp import HighsModel

        self.fallbacks += 1
        if self._lp is None:
            from policyagg.polytope import OccupancyPolytope

            poly = OccupancyPolytope.from_mdp(self.mdp)
            n_d = self.S * self.A
            lp = LinearProgram(np.zeros(n_d), poly.A_eq, poly.b_eq, poly.b_eq, np.zeros(n_d), np.full(n_d, np.inf),
                               maximize=True, name="pricing over O", row_families=(("occupancy flow", 0, poly.A_eq.shape[0]),))
            self._lp = HighsModel(lp)
        self._lp.set_cost(c)
        sol = self._lp.solve()
        d = np.clip(sol.x, 0.0, None)
        d /= d.sum()
        return None, d, float(c @ d), float(sol.objective), np.asarray(sol.row_duals)


class _Pool:
    """Columns (occupancies of generated policies) kept per MDP for later models."""

    def __init__(self, mdp):
        self.pricer = Pricer(mdp)
        self.columns: list[sp.csr_array] = []
        self.policies: list[np.ndarray | None] = []

    def add(self, column, policy):
        if len(self.columns) < POOL_MAX:
            self.columns.append(column)
            self.policies.append(policy)


_POOLS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def pool_for(mdp) -> _Pool:
    """The column pool (and pricer) shared by every decomposed model of ``mdp``."""
    pool = _POOLS.get(mdp)
    if pool is None:
        pool = _POOLS[mdp] = _Pool(mdp)
    return pool


def clear_pools() -> None:
    """Forget every generated column (for benchmarks that time cold starts)."""
    _POOLS.clear()


class DecomposedModel:
    """The model interface of :mod:`policyagg.solvers.lp` (setters, ``solve``) for an occupancy program,
    solved by column generation. Row indices are those of the full program (flow rows first);
    only side rows, the extra columns and the cost may change."""

    backend = "highs"

    def __init__(self, program, *, time_limit: float | None = None):
        t0 = time.perf_counter()
        if time_limit is not None and not (np.isfinite(time_limit) and time_limit > 0):
            raise InvalidProblemError(f"time_limit must be a positive number of seconds, got {time_limit}")
        self.program, self.time_limit = program, time_limit
        self.lp = program  # the model layer's name for "the program this model solves"
        side = program.side
        self.n_d, self.n = program.n_d, side.n_cols
        self.n_z, self.m_f, self.m_s = self.n - self.n_d, program.n_flow, side.n_rows
        self.sigma = 1.0 if side.maximize else -1.0
        A = sp.csc_array(side.A)
        self.A_d = sp.csr_array(A[:, : self.n_d])
        self.A_z = sp.csc_array(A[:, self.n_d:])
        self._cur = {k: np.array(getattr(side, k)) for k in ("cost", "row_lower", "row_upper", "col_lower", "col_upper")}
        if (self._cur["col_lower"][: self.n_d] != 0).any() or np.isfinite(self._cur["col_upper"][: self.n_d]).any():
            raise InvalidProblemError("the decomposed model needs d >= 0 with no other bounds on the occupancy columns")
        self.pool = pool_for(program.problem.mdp)
        self.columns: list[sp.csr_array] = []
        self.policies: list = []
        self.phase = 2
        self.stats = {"pricings": 0, "pricing_time": 0.0, "master_time": 0.0, "columns_added": 0, "gap": None,
                      "rounds": 0}
        self._h = _quiet_highs()
        self._h.setOptionValue("time_limit", float(time_limit) if time_limit else np.inf)
        self._h.setOptionValue("dual_feasibility_tolerance", MASTER_DUAL_TOL)
        self._seen = set()  # policies already in the master: re-generating one means the generation stalled
        self._pass_master()
        self._duals_flow = None
        self._build_time = time.perf_counter() - t0 + getattr(program, "build_time", 0.0)
        self._reported_build = 0.0

    # ----------------------------------------------------------------- master
    def _col_data(self, cols: list[sp.csr_array]):
        """Master coefficients (side rows, convexity) and costs of occupancy columns."""
        D = sp.vstack(cols, format="csr")
        coef = np.asarray((self.A_d @ D.T).todense()).reshape(self.m_s, len(cols)) if self.m_s else np.zeros((0, len(cols)))
        cost = D @ self._cur["cost"][: self.n_d]
        return coef, cost

    def _pass_master(self):
        m_s, n_z = self.m_s, self.n_z
        lp = highspy.HighsLp()
        n_cols = n_z + 2 * m_s
        lp.num_col_, lp.num_row_ = n_cols, m_s + 1
        lp.col_cost_ = np.zeros(n_cols)
        lp.col_lower_ = np.concatenate([self._cur["col_lower"][self.n_d:], np.zeros(2 * m_s)])
        lp.col_upper_ = np.concatenate([self._cur["col_upper"][self.n_d:], np.zeros(2 * m_s)])
        lp.row_lower_ = np.concatenate([self._cur["row_lower"], [1.0]])
        lp.row_upper_ = np.concatenate([self._cur["row_upper"], [1.0]])
        eye = sp.eye_array(m_s, format="csc")
        A = sp.vstack([sp.hstack([self.A_z, eye, -eye], format="csc"), sp.csc_array((1, n_cols))], format="csc")
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = (
            A.indptr.astype(np.int32), A.indices.astype(np.int32), A.data.astype(float))
        lp.sense_ = highspy.ObjSense.kMaximize
        self._check(self._h.passModel(lp), "passModel")
        self._set_master_costs()
        if self.pool.columns:
            self._add_columns(list(self.pool.columns), list(self.pool.policies), to_pool=False)

    def _check(self, status, what):
        if status == highspy.HighsStatus.kError:
            raise SolverError(f"LP {self.program.name!r} (highs, column generation master): {what} failed")

    def _set_master_costs(self):
        n_z, m_s = self.n_z, self.m_s
        if self.phase == 1:
            cost = np.concatenate([np.zeros(n_z), -np.ones(2 * m_s), np.zeros(len(self.columns))])
        else:
            lam = (sp.vstack(self.columns, format="csr") @ self._cur["cost"][: self.n_d]) if self.columns else np.zeros(0)
            cost = self.sigma * np.concatenate([self._cur["cost"][self.n_d:], np.zeros(2 * m_s), lam])
        idx = np.arange(cost.size, dtype=np.int32)
        self._check(self._h.changeColsCost(idx.size, idx, cost), "changeColsCost")
        art = np.arange(n_z, n_z + 2 * m_s, dtype=np.int32)
        upper = np.full(art.size, np.inf if self.phase == 1 else 0.0)
        self._check(self._h.changeColsBounds(art.size, art, np.zeros(art.size), upper), "changeColsBounds")

    def _add_columns(self, cols, policies, to_pool=True):
        coef, cost = self._col_data(cols)
        k = len(cols)
        A = sp.csc_array(np.vstack([coef, np.ones((1, k))]))
        obj = np.zeros(k) if self.phase == 1 else self.sigma * cost
        self._check(self._h.addCols(k, obj, np.zeros(k), np.full(k, np.inf), A.nnz, A.indptr.astype(np.int32),
                                    A.indices.astype(np.int32), A.data), "addCols")
        self.columns.extend(cols)
        self.policies.extend(policies)
        self._seen.update(p.astype(np.int16).tobytes() for p in policies if p is not None)
        if to_pool:
            for col, pol in zip(cols, policies):
                self.pool.add(col, pol)

    def _run_master(self):
        t0 = self._h.getRunTime()
        self._h.run()
        status = self._h.getModelStatus()
        if status not in (highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kInfeasible,
                          highspy.HighsModelStatus.kUnbounded, highspy.HighsModelStatus.kTimeLimit):
            self._h.clearSolver()  # numerical trouble in a warm start: once more from scratch
            self._h.run()
            status = self._h.getModelStatus()
        self.stats["master_time"] += self._h.getRunTime() - t0
        return status

    # ----------------------------------------------------------------- setters
    def current_lp(self) -> LinearProgram:
        full = self.program.full
        rows = {k: np.concatenate([getattr(full, k)[: self.m_f], self._cur[k]]) for k in ("row_lower", "row_upper")}
        import dataclasses

        return dataclasses.replace(full, cost=self._cur["cost"], col_lower=self._cur["col_lower"],
                                   col_upper=self._cur["col_upper"], **rows)

    def set_row_bounds(self, rows, lower, upper) -> None:
        rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        if ((rows < self.m_f) | (rows >= self.m_f + self.m_s)).any():
            raise InvalidProblemError(f"rows must be side rows in [{self.m_f}, {self.m_f + self.m_s}) (flow rows are fixed)")
        lower, upper = (np.broadcast_to(np.asarray(v, dtype=float), rows.shape).copy() for v in (lower, upper))
        if np.isnan(lower).any() or np.isnan(upper).any() or (lower > upper).any():
            raise InvalidProblemError("row bounds must be ordered numbers")
        side = rows - self.m_f
        self._cur["row_lower"][side], self._cur["row_upper"][side] = lower, upper
        self._check(self._h.changeRowsBounds(side.size, side.astype(np.int32), lower, upper), "changeRowsBounds")

    def set_col_bounds(self, cols, lower, upper) -> None:
        cols = np.atleast_1d(np.asarray(cols, dtype=np.int64))
        if ((cols < self.n_d) | (cols >= self.n)).any():
            raise InvalidProblemError(f"only the extra columns [{self.n_d}, {self.n}) can change bounds in the decomposed model")
        lower, upper = (np.broadcast_to(np.asarray(v, dtype=float), cols.shape).copy() for v in (lower, upper))
        if np.isnan(lower).any() or np.isnan(upper).any() or (lower > upper).any():
            raise InvalidProblemError("column bounds must be ordered numbers")
        self._cur["col_lower"][cols], self._cur["col_upper"][cols] = lower, upper
        z = (cols - self.n_d).astype(np.int32)
        self._check(self._h.changeColsBounds(z.size, z, lower, upper), "changeColsBounds")

    def set_cost(self, cost) -> None:
        cost = np.asarray(cost, dtype=float)
        if cost.shape != (self.n,) or not np.isfinite(cost).all():
            raise InvalidProblemError(f"cost must be finite with shape ({self.n},)")
        self._cur["cost"][:] = cost
        if self.phase == 2:
            self._set_master_costs()

    def set_option(self, name, value) -> None:
        if self._h.setOptionValue(name, value) == highspy.HighsStatus.kError:
            raise InvalidProblemError(f"HiGHS rejected option {name}={value!r}")

    # ------------------------------------------------------------------ solve
    def _set_phase(self, phase):
        if phase != self.phase:
            self.phase = phase
            self._set_master_costs()

    def _elapsed_check(self, started):
        if self.time_limit is not None and time.perf_counter() - started > self.time_limit:
            raise SolverTimeLimitError(f"LP {self.program.name!r} (highs, column generation) hit time_limit="
                                       f"{self.time_limit} s before proving optimality; raise time_limit.")

    def _generate(self, started):
        """Column generation in the current phase until the Lagrangian bound meets the master."""
        bound = np.inf
        while True:
            self.stats["rounds"] += 1
            if self.stats["rounds"] > MAX_ROUNDS:
                raise SolverError(f"LP {self.program.name!r} (highs, column generation): no convergence in {MAX_ROUNDS} rounds")
            if self.columns:
                status = self._run_master()
                if status != highspy.HighsModelStatus.kOptimal:
                    return status
                sol = self._h.getSolution()
                obj = float(self._h.getInfo().objective_function_value)
                y = np.array(sol.row_dual)
            else:  # no column yet: price the cost itself
                obj, y = -np.inf, np.zeros(self.m_s + 1)
            c = (self.sigma * self._cur["cost"][: self.n_d] if self.phase == 2 else np.zeros(self.n_d))
            if self.m_s:
                c = c - self.A_d.T @ y[: self.m_s]
            t0 = time.perf_counter()
            start = self._warm_policy(c)
            policy, mu, value, price_bound, duals = self.pool.pricer.price(c, start)
            self.stats["pricing_time"] += time.perf_counter() - t0
            self.stats["pricings"] += 1
            self._duals_flow = duals
            gap = price_bound - y[-1]
            if self.columns:
                bound = min(bound, obj + max(gap, 0.0))
                self.stats["gap"] = bound - obj
                if self.phase == 1:
                    if obj >= -FEAS_TOL:
                        return highspy.HighsModelStatus.kOptimal
                    if bound < -FEAS_TOL:
                        return highspy.HighsModelStatus.kInfeasible
                elif bound - obj <= GAP_TOL * max(1.0, abs(obj)):
                    return highspy.HighsModelStatus.kOptimal
                if value - y[-1] <= GAP_TOL * max(1.0, abs(obj)) * 1e-3:
                    # pricing found no improving column although the bound is open (numerical
                    # noise in the potential): price exactly where an LP over O is cheap,
                    # otherwise stop and report the open gap
                    if self.n_d > EXACT_PRICING_MAX_COLUMNS:
                        return highspy.HighsModelStatus.kOptimal
                    policy, mu, value, price_bound, duals = self.pool.pricer.price_lp(c)
                    self._duals_flow = duals
                    if value - y[-1] <= GAP_TOL * max(1.0, abs(obj)) * 1e-3:
                        self.stats["gap"] = max(0.0, price_bound - y[-1])
                        return highspy.HighsModelStatus.kOptimal
            if policy is not None and self.columns:
                key = policy.astype(np.int16).tobytes()
                if key in self._seen:  # no progress possible: the master already has this column
                    return highspy.HighsModelStatus.kOptimal if self.phase == 2 else (
                        highspy.HighsModelStatus.kOptimal if obj >= -FEAS_TOL else highspy.HighsModelStatus.kInfeasible)
            if policy is None:
                column = sp.csr_array(mu.reshape(1, -1))
            else:
                keep = np.flatnonzero(mu > 0)
                column = sp.csr_array((mu[keep], (np.zeros(keep.size, int), keep * self.pool.pricer.A + policy[keep])),
                                      shape=(1, self.n_d))
            self._add_columns([column], [policy])
            self.stats["columns_added"] += 1
            self._elapsed_check(started)

    def _warm_policy(self, c):
        """Start policy iteration from the generated column with the best reduced value."""
        usable = [j for j, p in enumerate(self.policies) if p is not None]
        if not usable:
            return None
        D = sp.vstack([self.columns[j] for j in usable[-200:]], format="csr")
        return self.policies[usable[-200:][int(np.argmax(D @ c))]]

    def solve(self) -> LPSolution:
        started = time.perf_counter()
        before = dict(self.stats)
        self._set_phase(2)
        status = self._generate(started)
        if status == highspy.HighsModelStatus.kInfeasible:
            self._set_phase(1)
            status = self._generate(started)
            if status == highspy.HighsModelStatus.kInfeasible:
                raise self._infeasible()
            self._set_phase(2)
            status = self._generate(started)
        if status == highspy.HighsModelStatus.kUnbounded:
            raise SolverError(f"LP {self.program.name!r} (highs, column generation): the master is unbounded; "
                              "bound the extra columns.")
        if status != highspy.HighsModelStatus.kOptimal:
            raise SolverError(f"LP {self.program.name!r} (highs, column generation): master status "
                              f"{self._h.modelStatusToString(status)!r}")
        return self._solution(started, before)

    def _infeasible(self):
        x = np.array(self._h.getSolution().col_value)
        art = x[self.n_z: self.n_z + self.m_s] + x[self.n_z + self.m_s: self.n_z + 2 * self.m_s]
        fams = [f for f, _, _ in self.program.row_families]
        bad = [f for f, a, b in self.program.side.row_families if art[a:b].sum() > FEAS_TOL]
        return InfeasibleError(
            f"LP {self.program.name!r} (highs, column generation) is infeasible; row families: {fams}. "
            f"Families still violated at the least-violating point of O: {bad}; relax one of them.")

    def _solution(self, started, before) -> LPSolution:
        sol = self._h.getSolution()
        x_m = np.array(sol.col_value)
        lam = np.clip(x_m[self.n_z + 2 * self.m_s:], 0.0, None)
        d = sp.vstack(self.columns, format="csr").T @ lam
        d = d / lam.sum() if lam.sum() > 0 else d
        x = np.concatenate([d, x_m[: self.n_z]])
        y_side = np.array(sol.row_dual)[: self.m_s]
        duals = self.sigma * np.concatenate([np.asarray(self._duals_flow, dtype=float), y_side]) \
            if self._duals_flow is not None and np.size(self._duals_flow) == self.m_f else None
        details = {k: self.stats[k] - before[k] for k in ("pricings", "pricing_time", "master_time", "columns_added", "rounds")}
        details |= {"gap": self.stats["gap"], "columns": len(self.columns), "highs_time": details["master_time"]}
        build, self._reported_build = self._build_time - self._reported_build, self._build_time
        return LPSolution(x=x, objective=float(self._cur["cost"] @ x), status="optimal", row_duals=duals,
                          backend="highs", solve_time=time.perf_counter() - started, build_time=build,
                          iterations=int(self._h.getInfo().simplex_iteration_count), mip_gap=None, details=details)
