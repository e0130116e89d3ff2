"""MDP algorithms that are not rules: graph structure, stationary distributions, steering and
policy iteration.

Graphs are ``scipy.sparse`` adjacency matrices searched with :mod:`scipy.sparse.csgraph`
(compiled; a networkx graph of ``P``'s edges costs seconds at a few thousand states). The
*union graph* of an MDP has the edge ``s -> s'`` iff ``P(s'|s, a) > 0`` for some ``a``.

Policy iteration maximises a linear objective over the occupancy polytope,
``max_{d in O} c @ d``, for the discounted (``gamma < 1``) and the average-reward
(``gamma == 1``) criterion, and returns a certificate: for any potential ``h`` the Bellman
residual ``g = max_{s,a} c(s, a) + gamma (P h)(s, a) - h(s)`` bounds that maximum from above
(average reward: ``g``; discounted: ``(1 - gamma) rho @ h + g``).

Only :mod:`policyagg.errors` and :mod:`policyagg.triangular` are imported at run time, so
:mod:`policyagg.mdp` can use this module.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse import csgraph
from threadpoolctl import threadpool_limits

from policyagg.errors import PolicyEvaluationError
from policyagg.triangular import accepted
from policyagg.triangular import solve as triangular_solve

if TYPE_CHECKING:
    from policyagg.mdp import TabularMDP

#: Builds a preconditioner on demand (``None`` if it cannot be built).
PreconditionerFactory = Callable[[], "spla.LinearOperator | None"]

#: Policy iteration: at most this many improvement steps per call.
PI_MAX_ITER = 200
#: Policy evaluation by sparse LU up to this many states, BiCGSTAB/GMRES (warm started) above.
DIRECT_MAX_STATES = 500
#: Relative residual asked of the iterative solvers; the flow rows of an evaluated
#: occupancy then hold to about 1e-12.
ITERATIVE_RTOL = 1e-13
#: When BiCGSTAB fails (it breaks down on the nearly absorbing chains of extreme policies),
#: GMRES is preconditioned by an incomplete LU of the evaluation matrix with this drop
#: tolerance and fill limit (one factorisation serves the value and the transposed system).
#: Measured on the 8-site attention model (6,561 states), minimising one agent's return:
#: the unpreconditioned fallback took about 2 s per solve, the incomplete LU 1.4 s once and
#: GMRES with it 0.06 s (at 9 sites the unpreconditioned fallback took 18-27 s per run).
ILU_DROP_TOL = 1e-4
ILU_FILL_FACTOR = 10.0
#: A refined evaluation (:func:`refine_solution`) makes at most this many correction solves; it
#: stops earlier once the largest residual entry stops dropping (float64 rounding then dominates).
REFINE_STEPS = 3
#: Relative tolerance and iteration limit of each refinement correction (each step gains about
#: this many digits until float64 rounding of the residual dominates).
REFINE_RTOL = 1e-6
REFINE_MAXITER = 100
#: Refined policy iteration: an action improves only by more than this times ``max |c| + max |h|``
#: (about 16 roundings in float64; below it a comparison of two Q-values is noise).
REFINE_NOISE = 16 * float(np.finfo(float).eps)
#: Average reward, iterative path: a policy's stationary distribution is solved on its closed
#: class alone (sparse LU) when that class has at most this many states. The extreme policies
#: of the return ranges have small classes (an absorbing corner) on which BiCGSTAB breaks down.
CLASS_DIRECT_MAX_STATES = 2000
#: :func:`stationary_distribution` by sparse LU up to this many states, iterative above.
STATIONARY_DIRECT_MAX_STATES = 2000
#: How many times an average-reward policy with several closed classes is steered toward its
#: best class before :class:`PolicyEvaluationError` (the last attempt steers every other state).
UNICHAIN_ATTEMPTS = 6


# ------------------------------------------------------------------------------ graph facts
@dataclass(frozen=True)
class Structure:
    """Graph facts about an MDP, computed on its union graph (see :func:`graph_structure`).

    Whether an MDP is *unichain* (every stationary policy has one recurrent class) is
    NP-hard to decide (Tsitsiklis, 2007), so it is not reported. What the average-reward
    criterion needs is checked instead: one closed class (then every policy that gives all
    actions positive probability has a unique stationary distribution) and, for the
    polytope to describe only behaviour reachable from ``rho``, a communicating MDP.
    """

    unreachable: np.ndarray  # states no policy reaches from supp(rho)
    closed_classes: tuple[np.ndarray, ...]  # attracting components of the union graph
    communicating: bool  # the union graph is strongly connected

    def describe(self) -> str:
        parts = ["communicating" if self.communicating else "not communicating"]
        parts.append(f"{len(self.closed_classes)} closed class(es)")
        if self.unreachable.size:
            shown = ", ".join(map(str, self.unreachable[:10]))
            more = "..." if self.unreachable.size > 10 else ""
            parts.append(f"{self.unreachable.size} state(s) unreachable from `rho`: {shown}{more}")
        return "; ".join(parts)


def union_adjacency(P: sp.sparray, n_actions: int) -> sp.csr_array:
    """Boolean ``(S, S)`` adjacency of the union graph of ``P`` (``(S*A, S)``, row ``s*A + a``):
    ``s -> s'`` iff ``P(s'|s, a) > 0`` for some ``a``."""
    coo = sp.coo_array(P)
    keep = coo.data > 0
    S = P.shape[1]
    counts = sp.csr_array((np.ones(int(keep.sum())), (coo.row[keep] // n_actions, coo.col[keep])), shape=(S, S))
    return sp.csr_array(counts > 0)


def positive_graph(matrix: sp.sparray) -> sp.csr_array:
    """Boolean adjacency of the positive entries of a square matrix (e.g. ``P_pi``)."""
    return sp.csr_array(sp.csr_array(matrix) > 0)


def reachable_from(adjacency: sp.sparray, sources: np.ndarray) -> np.ndarray:
    """Boolean mask of the states reached from any of ``sources`` (included) along the graph."""
    sources = np.asarray(sources, dtype=np.int64)
    if sources.size == 0:
        return np.zeros(adjacency.shape[0], dtype=bool)
    steps = np.asarray(
        csgraph.dijkstra(sp.csr_array(adjacency), directed=True, unweighted=True, indices=sources, min_only=True)
    )
    return np.asarray(np.isfinite(steps), dtype=bool)


def closed_components(adjacency: sp.sparray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, closed)``: the strongly connected component of every state and the labels of
    the *closed* (attracting) ones, which no edge leaves."""
    graph = sp.csr_array(adjacency)
    n_comp, labels = csgraph.connected_components(graph, directed=True, connection="strong")
    coo = graph.tocoo()
    leaves = labels[coo.row] != labels[coo.col]
    open_comp = np.zeros(n_comp, dtype=bool)
    open_comp[labels[coo.row[leaves]]] = True
    return labels, np.flatnonzero(~open_comp)


def closed_classes(adjacency: sp.sparray) -> tuple[np.ndarray, ...]:
    """The closed classes of a graph (sorted states), ordered by their first state."""
    labels, closed = closed_components(adjacency)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], closed)
    stops = np.searchsorted(labels[order], closed, side="right")
    classes = [np.sort(order[a:b]) for a, b in zip(starts, stops)]
    return tuple(sorted(classes, key=lambda c: int(c[0])))


def is_strongly_connected(adjacency: sp.sparray) -> bool:
    """Whether every state reaches every other one."""
    n_comp, _ = csgraph.connected_components(sp.csr_array(adjacency), directed=True, connection="strong")
    return bool(n_comp == 1)


def graph_structure(adjacency: sp.sparray, rho: np.ndarray) -> Structure:
    """:class:`Structure` of the union graph ``adjacency`` with initial distribution ``rho``."""
    reached = reachable_from(adjacency, np.flatnonzero(np.asarray(rho) > 0))
    return Structure(np.flatnonzero(~reached), closed_classes(adjacency), is_strongly_connected(adjacency))


# ------------------------------------------------------------------- stationary behaviour
def one_blas_thread() -> threadpool_limits:
    """A context in which BLAS runs on one thread. The iterative solvers here call BLAS on
    vectors of ``S`` entries thousands of times; with several BLAS threads on a machine shared
    with other jobs each such call waits for busy threads (measured on the 9-site attention
    model, 19,683 states, load 6 on 2 cores: a ``dot`` of 10 ms instead of 10 us; six policy
    iterations 53 s with the default threads, 11 s with one)."""
    return threadpool_limits(limits=1, user_api="blas")


def stationary_distribution(P_class: sp.sparray) -> np.ndarray:
    """Stationary distribution ``pi = pi P`` of an irreducible stochastic matrix: the system
    ``(I - P^T) pi = 0`` with one equation replaced by ``sum(pi) = 1``. Up to
    :data:`STATIONARY_DIRECT_MAX_STATES` states by sparse LU; above, iteratively (BiCGSTAB,
    then GMRES preconditioned by an incomplete LU) to a relative residual of
    :data:`ITERATIVE_RTOL`, and by sparse LU if that fails (the LU of a large class can fill in
    badly: measured 7 s for a class of 4,356 states of the 8-site attention model)."""
    n = P_class.shape[0]
    if n == 1:
        return np.ones(1)
    if n > STATIONARY_DIRECT_MAX_STATES:
        M = evaluation_matrix(P_class, 1.0)  # M^T pi = e_0: row 0 of M^T is sum(pi) = 1
        e0 = np.zeros(n)
        e0[0] = 1.0
        try:
            with one_blas_thread():
                pi = _solve_iteratively(
                    spla.aslinearoperator(sp.csr_array(M.T)), e0, None, lambda: _maybe_operator(incomplete_lu(M), True)
                )
        except PolicyEvaluationError:
            pi = None
        if pi is not None and np.isfinite(pi).all() and pi.sum() > 0:
            pi = np.clip(pi, 0.0, None)
            return np.asarray(pi / pi.sum())
    balance = sp.csr_array(sp.eye_array(n) - sp.csr_array(P_class).T)
    system = sp.vstack([balance[: n - 1], sp.csr_array(np.ones((1, n)))], format="csc")
    rhs = np.zeros(n)
    rhs[-1] = 1.0
    pi = np.clip(np.asarray(spla.spsolve(system, rhs)), 0.0, None)
    return np.asarray(pi / pi.sum())


def _maybe_operator(lu: spla.SuperLU | None, transpose: bool = False) -> spla.LinearOperator | None:
    return None if lu is None else lu_operator(lu, transpose)


def cesaro_limit(P_pi: sp.sparray, rho: np.ndarray) -> np.ndarray:
    """``lim_T (1/T) sum_t rho^T P^t`` for a (possibly multichain) stochastic matrix ``P``.

    Each closed class ``C`` of ``P`` gets its stationary distribution times the probability
    of entering it from ``rho``: ``rho_C + x^T P[T, C] 1`` with ``x^T (I - Q) = rho_T^T`` the
    expected visits to the transient states ``T`` (``Q = P[T, T]``).
    """
    P_pi = sp.csr_array(P_pi)
    S = P_pi.shape[0]
    labels, closed = closed_components(positive_graph(P_pi))
    recurrent = np.isin(labels, closed)
    transient = np.flatnonzero(~recurrent)
    if closed.size == 1:  # one closed class: the chain enters it with probability 1
        mu = np.zeros(S)
        states = np.flatnonzero(recurrent)
        mu[states] = stationary_distribution(P_pi[states][:, states])
        return mu
    if transient.size:
        from_transient = P_pi[transient]
        Q = from_transient[:, transient]
        x = np.atleast_1d(spla.spsolve(sp.csc_array(sp.eye_array(transient.size) - Q.T), rho[transient]))
    mu = np.zeros(S)
    for k in closed:
        c = np.flatnonzero(labels == k)
        enter = rho[c].sum()
        if transient.size:
            enter += x @ np.asarray(from_transient[:, c].sum(axis=1)).ravel()
        if enter > 0:
            mu[c] = enter * stationary_distribution(P_pi[c][:, c])
    return np.asarray(mu / mu.sum())


# ------------------------------------------------------------------------------- steering
def distances_to(adjacency: sp.sparray, target: np.ndarray) -> np.ndarray:
    """Steps from every state to the nearest state of the boolean mask ``target`` along the
    graph (``inf`` where none is reachable): one breadth-first search on the reversed graph."""
    reversed_graph = sp.csr_array(sp.csr_array(adjacency).T)
    return np.asarray(
        csgraph.dijkstra(reversed_graph, directed=True, unweighted=True, indices=np.flatnonzero(target), min_only=True)
    )


def closer_probability(P: sp.sparray, n_actions: int, far: np.ndarray) -> np.ndarray:
    """``(S, A)``: the probability that action ``a`` at ``s`` moves strictly closer to the target
    (``far[s'] < far[s]``, with ``far`` from :func:`distances_to`). ``P`` may be CSR or COO."""
    coo = P.tocoo(copy=False) if isinstance(P, (sp.sparray, sp.spmatrix)) else sp.coo_array(P)
    source = coo.row // n_actions
    closer = np.bincount(coo.row, weights=coo.data * (far[coo.col] < far[source]), minlength=P.shape[0])
    return closer.reshape(P.shape[1], n_actions)


def steering_actions(
    P: sp.sparray, n_actions: int, adjacency: sp.sparray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(far, action)``: steps from every state to the boolean mask ``target`` on the graph
    ``adjacency``, and the action with the largest probability of moving strictly closer.
    Following ``action`` wherever ``far`` is finite reaches ``target`` with probability 1."""
    far = distances_to(adjacency, target)
    return far, closer_probability(P, n_actions, far).argmax(axis=1)


# -------------------------------------------------------------------------- evaluation
@dataclass(frozen=True)
class PolicyEvaluation:
    """The value of one policy on per-state rewards ``c_pi``.

    Average reward: ``gain`` ``g`` and potential ``h`` (``h[0] = 0``) with
    ``(I - P_pi) h + g 1 = c_pi``, and ``mu`` the stationary distribution.
    Discounted: ``gain`` is ``None``, ``potential`` is ``v = (I - gamma P_pi)^{-1} c_pi`` and
    ``mu = (1 - gamma) (I - gamma P_pi^T)^{-1} rho``. ``mu`` is zero when not asked for on the
    iterative path. ``solution``/``solution_mu`` are the raw solutions, to warm-start the next
    iterative evaluation.
    """

    gain: float | None
    potential: np.ndarray
    mu: np.ndarray
    solution: np.ndarray
    solution_mu: np.ndarray | None


def scaled_start(op: spla.LinearOperator, b: np.ndarray, x0: np.ndarray | None) -> np.ndarray | None:
    """The warm start ``alpha x0`` for ``op x = b`` with ``alpha = <b, op x0> / <op x0, op x0>``
    (the multiple of ``x0`` with the smallest residual), or ``None`` (start from zero) when even
    that residual is no smaller than ``|b|``. Pricing rewards change scale from round to round
    (the master's duals): an unscaled previous solution can start far worse than zero."""
    if x0 is None:
        return None
    image = op.matvec(x0)
    norm2 = float(image @ image)
    if not (np.isfinite(norm2) and norm2 > 0.0):
        return None
    alpha = float(b @ image) / norm2
    if not np.linalg.norm(b - alpha * image) < np.linalg.norm(b):
        return None
    return np.asarray(alpha * x0)


def _solve_iteratively(
    op: spla.LinearOperator, b: np.ndarray, x0: np.ndarray | None, preconditioner: PreconditionerFactory | None = None
) -> np.ndarray:
    """Solve ``op x = b`` to :data:`ITERATIVE_RTOL`: BiCGSTAB (little Python overhead per
    step); if it stalls or breaks down, restarted GMRES preconditioned by the incomplete LU
    that ``preconditioner()`` returns (unpreconditioned without one; the true relative residual
    of a preconditioned solve must be at most ``1e3 * ITERATIVE_RTOL``);
    :class:`PolicyEvaluationError` if both fail."""
    target = ITERATIVE_RTOL * np.linalg.norm(b)
    x0 = scaled_start(op, b, x0)
    x, info = spla.bicgstab(op, b, x0=x0, rtol=ITERATIVE_RTOL, atol=0.0, maxiter=2000)
    if info != 0 or not np.isfinite(x).all() or np.linalg.norm(op.matvec(x) - b) > 10 * target:
        M = preconditioner() if preconditioner is not None else None
        x, info = spla.gmres(op, b, x0=x0, rtol=ITERATIVE_RTOL, atol=0.0, restart=60, maxiter=50, M=M)
        if info != 0:
            raise PolicyEvaluationError(f"GMRES did not converge (info {info})")
        # a preconditioned GMRES may stop on its preconditioned residual: check the true one
        if M is not None and not np.linalg.norm(op.matvec(x) - b) <= 1e3 * target:
            raise PolicyEvaluationError("preconditioned GMRES stopped above the residual tolerance")
    return np.asarray(x)


def refine_solution(op: spla.LinearOperator, b: np.ndarray, x: np.ndarray, steps: int = REFINE_STEPS) -> np.ndarray:
    """Iterative refinement of an approximate solution of ``op x = b``: ``x <- x + dx`` with
    ``op dx = r = b - op x`` solved by BiCGSTAB to :data:`REFINE_RTOL` of ``|r|``, at most
    ``steps`` times, each kept only if ``max |r|`` drops (``x`` is never made worse; a correction
    that fails to converge is kept if it still helps). No preconditioner is built: refinement is
    an extra, not a fallback."""
    residual = b - op.matvec(x)
    error = float(np.abs(residual).max())
    for _ in range(steps):
        if error == 0.0:
            break
        correction, _info = spla.bicgstab(op, residual, rtol=REFINE_RTOL, atol=0.0, maxiter=REFINE_MAXITER)
        if not np.isfinite(correction).all():
            break
        candidate = x + correction
        new_residual = b - op.matvec(candidate)
        new_error = float(np.abs(new_residual).max())
        if not new_error < error:
            break
        x, residual, error = candidate, new_residual, new_error
    return x


def evaluation_matrix(P_pi: sp.sparray, gamma: float) -> sp.csc_array:
    """The matrix ``M`` of :func:`evaluate_policy`: ``I - gamma P_pi``, and for the average
    reward (``gamma == 1``) with column 0 replaced by ones (the bordered system)."""
    S = P_pi.shape[0]
    M = sp.eye_array(S, format="csc") - gamma * sp.csc_array(P_pi)
    if gamma == 1.0:
        keep = np.ones(S)
        keep[0] = 0.0
        M = M @ sp.diags_array(keep) + sp.csc_array((np.ones(S), (np.arange(S), np.zeros(S, int))), shape=(S, S))
    return sp.csc_array(M)


def incomplete_lu(M: sp.csc_array) -> spla.SuperLU | None:
    """An incomplete LU of ``M`` (drop tolerance :data:`ILU_DROP_TOL`, fill limit
    :data:`ILU_FILL_FACTOR`) for preconditioning; ``None`` when the factorisation fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return spla.spilu(M, drop_tol=ILU_DROP_TOL, fill_factor=ILU_FILL_FACTOR)
    except RuntimeError:  # an exactly singular pivot after dropping
        return None


def lu_operator(lu: spla.SuperLU, transpose: bool = False) -> spla.LinearOperator:
    """``v -> M^{-1} v`` (``M^{-T} v`` with ``transpose``) for a (possibly incomplete) LU of ``M``."""
    n = lu.shape[0]
    trans = "T" if transpose else "N"
    return spla.LinearOperator((n, n), matvec=lambda v: lu.solve(np.asarray(v, dtype=float), trans=trans), dtype=float)


def stationary_on_closed_class(
    P_pi: sp.sparray, max_states: int, classes: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray | None:
    """The stationary distribution of a unichain ``P_pi``: zero off its one closed class ``C``,
    and on ``C`` the stationary distribution of ``P_pi[C, C]`` (irreducible), by sparse LU.
    ``None`` when ``P_pi`` has several closed classes or ``|C| > max_states``. ``classes``:
    :func:`closed_components` of ``P_pi``'s positive entries, if already known."""
    labels, closed = closed_components(positive_graph(P_pi)) if classes is None else classes
    if closed.size != 1:
        return None
    states = np.flatnonzero(labels == closed[0])
    if states.size > max_states:
        return None
    P_pi = sp.csr_array(P_pi)
    mu = np.zeros(P_pi.shape[0])
    mu[states] = stationary_distribution(P_pi[states][:, states])
    return mu


def evaluate_policy(
    P_pi: sp.sparray,
    c_pi: np.ndarray,
    *,
    gamma: float,
    rho: np.ndarray,
    need_mu: bool = True,
    direct: bool = True,
    start: np.ndarray | None = None,
    start_mu: np.ndarray | None = None,
    classes: tuple[np.ndarray, np.ndarray] | None = None,
    refine: bool = False,
) -> PolicyEvaluation:
    """Evaluate a policy with transition matrix ``P_pi`` (S, S) on rewards ``c_pi`` (S,).

    Average reward (``gamma == 1``, the policy must be unichain): the bordered system
    ``M x = c_pi`` with ``M = I - P_pi`` whose column 0 is replaced by ones gives
    ``x = (g, h_1, ..)``, and ``M^T mu = e_0`` the stationary ``mu``. Discounted:
    ``(I - gamma P_pi) v = c_pi`` and ``(I - gamma P_pi^T) mu = (1 - gamma) rho``.
    ``direct``: sparse LU (``mu`` always computed); else BiCGSTAB/GMRES warm-started from
    ``start``/``start_mu``; with ``refine``, the value system's solution is then improved by
    :func:`refine_solution` (a more accurate potential, hence a tighter certificate).
    A singular or unsolved system raises :class:`PolicyEvaluationError`.
    """
    S = P_pi.shape[0]
    avg = gamma == 1.0
    rhs_mu = np.zeros(S)
    if avg:
        rhs_mu[0] = 1.0
    else:
        rhs_mu = (1.0 - gamma) * rho
    mu_solution = None
    if direct:
        M = evaluation_matrix(P_pi, gamma)
        try:
            with np.errstate(all="raise"):
                lu = spla.splu(sp.csc_array(M))
                x, mu = lu.solve(c_pi), lu.solve(rhs_mu, trans="T")
        except (RuntimeError, FloatingPointError) as exc:
            raise PolicyEvaluationError(str(exc)) from None
    else:
        P_T = P_pi.T  # a CSC view: no conversion
        if avg:

            def mv(x: np.ndarray) -> np.ndarray:
                h = x.copy()
                g, h[0] = h[0], 0.0
                return np.asarray(h - P_pi @ h + g)

            def rmv(y: np.ndarray) -> np.ndarray:
                out = np.asarray(y - P_T @ y)
                out[0] = y.sum()
                return out
        else:

            def mv(x: np.ndarray) -> np.ndarray:
                return np.asarray(x - gamma * (P_pi @ x))

            def rmv(y: np.ndarray) -> np.ndarray:
                return np.asarray(y - gamma * (P_T @ y))

        factors: list[spla.SuperLU | None] = []

        def preconditioner(transpose: bool) -> PreconditionerFactory:
            def make() -> spla.LinearOperator | None:
                if not factors:  # one incomplete LU per evaluation, built only if needed
                    factors.append(incomplete_lu(evaluation_matrix(P_pi, gamma)))
                return _maybe_operator(factors[0], transpose)

            return make

        value_op = spla.LinearOperator((S, S), matvec=mv, dtype=float)
        x = _solve_iteratively(value_op, c_pi, start, preconditioner(False))
        if refine:
            x = refine_solution(value_op, c_pi, x)
        closed_mu = stationary_on_closed_class(P_pi, CLASS_DIRECT_MAX_STATES, classes) if need_mu and avg else None
        if closed_mu is not None:
            mu = closed_mu
        elif need_mu:
            mu = _solve_iteratively(
                spla.LinearOperator((S, S), matvec=rmv, dtype=float), rhs_mu, start_mu, preconditioner(True)
            )
            mu_solution = mu
        else:
            mu = np.zeros(S)
    if not (np.isfinite(x).all() and np.isfinite(mu).all()):
        raise PolicyEvaluationError("policy evaluation returned non-finite values")
    if avg:
        h = x.copy()
        g, h[0] = h[0], 0.0
        return PolicyEvaluation(float(g), h, mu, x, mu_solution)
    return PolicyEvaluation(None, x, mu, x, mu_solution)


# ---------------------------------------------------------------------- policy iteration
@dataclass(frozen=True)
class PolicyIterationResult:
    """A deterministic ``policy`` (S,) with its state occupancy ``mu`` (the occupancy is
    ``d[s, policy[s]] = mu[s]``), an upper ``bound`` on ``max_{d in O} c @ d`` and the
    ``potential`` ``h`` certifying it (module doc), ``gain`` ``g`` of the last evaluated policy
    (average reward; ``None`` if discounted)."""

    policy: np.ndarray
    mu: np.ndarray
    bound: float
    potential: np.ndarray
    gain: float | None


class PolicyIteration:
    """Howard's policy iteration for ``max_{d in O} c @ d`` on one MDP, called many times.

    It keeps what makes the next call cheaper: the last policy (the default start), the last
    iterative solutions (warm starts) and ``P_pi`` of the last policy. Average reward:
    a policy with several closed classes is first made unichain (:meth:`make_unichain`).
    """

    def __init__(self, mdp: TabularMDP, *, direct_max_states: int = DIRECT_MAX_STATES, max_iter: int = PI_MAX_ITER):
        self.mdp = mdp
        self.S, self.A = int(mdp.n_states), int(mdp.n_actions or 0)  # n_actions is set by TabularMDP
        self.P = sp.csr_array(mdp.P)
        self.gamma = float(mdp.gamma)
        self.rho = np.asarray(mdp.rho, dtype=float)
        self.direct_max_states = direct_max_states
        self.max_iter = max_iter
        self.policy = np.zeros(self.S, dtype=np.int64)  # the start when none is given
        self.iterations = 0  # improvement steps over all calls
        self._start: np.ndarray | None = None
        self._start_mu: np.ndarray | None = None
        self._graph: sp.csr_array | None = None
        self._coo: sp.coo_array | None = None
        self._last: tuple[bytes, sp.csr_array] | None = None
        self._last_classes: tuple[bytes, tuple[np.ndarray, np.ndarray]] | None = None

    def transitions(self, policy: np.ndarray) -> sp.csr_array:
        """``P_pi`` (S, S) of a deterministic policy, cached for the last policy asked."""
        key = policy.tobytes()
        if self._last is None or self._last[0] != key:
            self._last = (key, self.P[np.arange(self.S) * self.A + policy])
        return self._last[1]

    def classes(self, policy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:func:`closed_components` of the positive entries of ``P_pi``, cached for the last policy asked."""
        key = policy.tobytes()
        if self._last_classes is None or self._last_classes[0] != key:
            P_pi = self.transitions(policy)
            graph = P_pi if P_pi.nnz == 0 or P_pi.data.min() > 0 else positive_graph(P_pi)
            self._last_classes = (key, closed_components(graph))
        return self._last_classes[1]

    def evaluate(
        self, policy: np.ndarray, c_pi: np.ndarray, need_mu: bool = True, refine: bool = False
    ) -> PolicyEvaluation:
        """:func:`evaluate_policy` of a deterministic policy (LU up to ``direct_max_states``;
        ``refine``: refine the iterative value solution, see :func:`refine_solution`); by block
        substitution where the MDP has a :attr:`~policyagg.mdp.TabularMDP.triangular` structure
        (above ``direct_max_states`` states: exact, no warm start, nothing to refine)."""
        direct = self.direct_max_states >= self.S
        if not direct and self.mdp.triangular is not None:
            exact = self._evaluate_triangular(policy, c_pi, need_mu)
            if exact is not None:
                return exact
        result = evaluate_policy(
            self.transitions(policy),
            c_pi,
            gamma=self.gamma,
            rho=self.rho,
            need_mu=need_mu,
            direct=direct,
            start=self._start,
            start_mu=self._start_mu,
            classes=self.classes(policy) if need_mu and self.gamma == 1.0 and not direct else None,
            refine=refine and not direct,
        )
        if self.direct_max_states < self.S:
            self._start = result.solution
            if result.solution_mu is not None:
                self._start_mu = result.solution_mu
        return result

    def _evaluate_triangular(self, policy: np.ndarray, c_pi: np.ndarray, need_mu: bool) -> PolicyEvaluation | None:
        """Values ``(I - gamma P_pi) v = c_pi`` and (``need_mu``) ``(I - gamma P_pi^T) mu = (1 - gamma) rho``
        by block substitution over the MDP's components; ``None`` when a solution is not
        :func:`~policyagg.triangular.accepted` (its true residual too large)."""
        structure = self.mdp.triangular
        assert structure is not None  # (checked by the caller)
        one_hot = np.zeros((1, self.S, self.A))
        one_hot[0, np.arange(self.S), policy] = 1.0
        systems = [(c_pi, True)] + ([((1.0 - self.gamma) * self.rho, False)] if need_mu else [])
        solutions = []
        for rhs, transpose in systems:
            x, residual = triangular_solve(structure, one_hot, rhs, self.gamma, transpose=transpose)
            if not accepted(residual[0], rhs, x[0]):
                return None
            solutions.append(x[0])
        v = solutions[0]
        return PolicyEvaluation(None, v, solutions[1] if need_mu else np.zeros(self.S), v, None)

    def make_unichain(self, policy: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Average reward: a policy with several closed classes has no bordered evaluation
        system. Keep its best closed class (by gain on ``c``) and steer the states of the other
        closed classes one step closer to it on the union graph (repeat; finally steer every
        other state). The gain never drops below the best class's gain."""
        if self._graph is None:
            self._graph = union_adjacency(self.P, self.A)
            self._coo = self.P.tocoo()
        for attempt in range(UNICHAIN_ATTEMPTS):
            P_pi = self.transitions(policy)
            labels, closed = self.classes(policy)
            if closed.size == 1:
                return policy
            gains = []
            for k in closed:
                states = np.flatnonzero(labels == k)
                sub = sp.csr_array(P_pi[states][:, states])
                gains.append(float(stationary_distribution(sub) @ c[states * self.A + policy[states]]))
            keep = closed[int(np.argmax(gains))]
            target = labels == keep
            far, best = steering_actions(self._coo, self.A, self._graph, target)
            move = (~target & np.isin(labels, closed)) if attempt < UNICHAIN_ATTEMPTS - 1 else ~target
            policy = policy.copy()
            states = np.flatnonzero(move & np.isfinite(far))
            policy[states] = best[states]
        if closed_components(self.transitions(policy))[1].size == 1:  # the last attempt's steering
            return policy
        raise PolicyEvaluationError("could not make the policy unichain")

    def run(self, c: np.ndarray, start: np.ndarray | None = None, *, refine: bool = False) -> PolicyIterationResult:
        """``max_{d in O} c @ d`` from ``start`` (default: the last policy kept in ``self.policy``).
        ``refine``: every iterative evaluation is refined (:func:`refine_solution`), for a potential,
        and hence a bound, as accurate as float64 allows (used when a coarser bound left a gap open).

        Stops when no action improves by more than ``1e-12 * max(1, |c|)`` (refined:
        :data:`REFINE_NOISE` ``* (max(1, |c|) + |h|)``) or the certified bound meets the
        policy's value, or after ``max_iter`` steps (the bound stays valid).
        :class:`PolicyEvaluationError` when a policy cannot be evaluated. Above
        ``direct_max_states`` states it runs with one BLAS thread (see :func:`one_blas_thread`).
        """
        if self.direct_max_states >= self.S:
            return self._run(c, start, refine)
        with one_blas_thread():
            return self._run(c, start, refine)

    def _run(self, c: np.ndarray, start: np.ndarray | None, refine: bool) -> PolicyIterationResult:
        c = np.asarray(c, dtype=float)
        S, avg = self.S, self.gamma == 1.0
        policy = self.policy.copy() if start is None else np.asarray(start, dtype=np.int64).copy()
        scale = max(1.0, float(np.abs(c).max()))
        C = c.reshape(S, self.A)
        rows = np.arange(S)
        h, g, bound = np.zeros(S), None, np.inf
        for _ in range(self.max_iter):
            self.iterations += 1
            if avg:
                policy = self.make_unichain(policy, c)
            evaluation = self.evaluate(policy, C[rows, policy], need_mu=False, refine=refine)
            g, h = evaluation.gain, evaluation.potential
            Q = (c + self.gamma * (self.P @ h)).reshape(S, self.A)
            best = Q.max(axis=1)
            if avg:
                bound = float((best - h).max())
            else:
                delta = float((best - h).max())
                bound = float((1.0 - self.gamma) * self.rho @ h + delta)
            # an improvement must exceed this; refined: a few roundings of c + P h - h, not 1e-12 of max |c|
            # (the master's duals can make max |c| 1e4 times the gap that pricing must resolve)
            tol = REFINE_NOISE * (scale + float(np.abs(h).max())) if refine else 1e-12 * scale
            improve = Q[rows, policy] < best - tol
            # the policy's value: its gain (average reward) or (1 - gamma) rho @ v (discounted)
            value = float(g) if g is not None else float((1.0 - self.gamma) * self.rho @ h)
            if not improve.any() or bound - value <= tol:
                break
            policy[improve] = Q[improve].argmax(axis=1)
        if avg:
            policy = self.make_unichain(policy, c)
        mu = self.evaluate(policy, C[rows, policy]).mu
        return PolicyIterationResult(policy=policy, mu=mu, bound=bound, potential=h, gain=g)


def policy_iteration(mdp: TabularMDP, c: np.ndarray, start: np.ndarray | None = None) -> PolicyIterationResult:
    """``max_{d in O} c @ d`` for a reward vector ``c`` of length ``S*A`` by policy iteration
    (one call; keep a :class:`PolicyIteration` to warm-start many)."""
    return PolicyIteration(mdp).run(c, start)
