"""Exact Pareto fronts of tabular multi-objective models: :func:`pareto_front`.

The achievable return set of a model is the polytope ``V = {R d : d in O}`` (``R`` the
``k x S*A`` reward matrix, ``O`` the occupancy polytope), the projection of ``O`` onto
``R^k``. Two exact descriptions of it:

``mode="ccs"`` (any number of objectives)
    The convex coverage set: the Pareto-optimal vertices of ``V``, i.e. the points that are
    the unique maximiser of ``w @ J`` over ``V`` for some weight ``w >= 0``. Found by
    optimistic linear support (Roijers et al.): keep the points found so far, compute the
    corner weights of their upper envelope ``max_s w @ s`` over the weight simplex, and ask
    the planner for ``max_{d in O} w @ R d`` at each corner until no corner improves. The
    envelope is then the true one at every weight (both are convex and piecewise linear,
    and they agree at every corner), so every Pareto-optimal vertex has been found.
``mode="vertices"`` (2 or 3 objectives)
    All vertices of ``V`` (the whole projection, dominated vertices included), by the
    outer-approximation method over all directions: the convex hull of the points found so
    far (:class:`scipy.spatial.ConvexHull`) is a subset of ``V``; each of its facets is
    checked by maximising along the facet's outward normal, and a point beyond the facet
    is added, until every facet is a facet of ``V``. ``pareto`` marks the CCS among them.

The planner is policy iteration (:class:`policyagg.planning.PolicyIteration`): it returns a
*deterministic* policy and a dual bound that certifies its optimality. It lives in the model
package, so this module needs no LP layer and stays in ``envs`` (which imports only the model
package); the small LPs in return space (which points are vertices, which are Pareto optimal)
are :func:`scipy.optimize.linprog` calls. A maximiser of a linear function over ``O`` can always
be taken at a vertex of ``O``; for ``gamma < 1`` the vertices of ``O`` are exactly the
occupancies of deterministic policies, so every point of the front comes with a
deterministic policy. For ``gamma = 1`` (average reward) a vertex of ``O`` is the stationary
distribution of a deterministic policy on one recurrent class; policy iteration steers the
other states into that class, so the policy is unichain and its gain from ``rho`` is the
point. On an MDP that is not communicating a vertex of ``O`` may be unreachable from
``rho``; steering then fails and :class:`PolicyEvaluationError` says so.

Every point is certified twice: the planner's dual bound meets its value within
``tol / 100``, and the point's policy, evaluated exactly with
:meth:`policyagg.TabularMDP.evaluate`, returns it within ``tol``. ``tol`` is measured in units
of each objective's range ``max_O J_i - min_O J_i`` (the front is invariant to a positive
affine change of any objective); objectives whose range is at most ``tol`` times their
largest reward are *flat* and do not shape the front.

Returns are the library's per-step ``J = R d``; ``values`` are the discounted sums from
``rho``, ``J / (1 - gamma)`` (what MO-Gymnasium's ``pareto_front(gamma)`` reports), or the
gain ``J`` when ``gamma = 1``. :func:`write_front` saves a front as CSV and JSON (atomic
writes), :func:`read_front` loads the JSON back.

Examples
--------
One state, three actions, two objectives; the third action's (0.4, 0.4) is beaten by the
even mixture of the other two, so it is not in the CCS:

>>> import numpy as np
>>> from policyagg import Problem, TabularMDP
>>> mdp = TabularMDP(np.ones((1, 3, 1)), gamma=0.5)
>>> front = pareto_front(Problem(mdp, [[[1.0, 0.0, 0.4]], [[0.0, 1.0, 0.4]]]))
>>> front.values.tolist(), front.policies.tolist()
([[2.0, 0.0], [0.0, 2.0]], [[0], [1]])
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog
from scipy.spatial import ConvexHull, HalfspaceIntersection

from policyagg.envs.tabular.model import EnvModel
from policyagg.errors import (
    CorruptFileError,
    InvalidProblemError,
    PolicyEvaluationError,
    SolverError,
    check_count,
    check_real,
)
from policyagg.io import StrPath, atomic_write_bytes, atomic_write_json
from policyagg.mdp import TabularMDP
from policyagg.planning import PolicyIteration
from policyagg.problem import Problem

#: Default tolerance, in units of each objective's range over ``O``.
DEFAULT_TOL = 1e-9
#: ``mode="vertices"`` computes a convex hull in return space: at most this many objectives.
MAX_VERTEX_OBJECTIVES = 3
#: Default stop for the searches (each planning call adds a point or confirms a facet/corner).
MAX_CALLS = 10_000
MODES = ("ccs", "vertices")
#: Format tag of the JSON written by :func:`write_front`.
FORMAT = "policyagg-pareto-front/1"


@dataclass(frozen=True, eq=False)
class ParetoFront:
    """An exact front: ``m`` points of the achievable return set, each with a deterministic policy.

    ``returns`` (m, k) are per-step returns ``J`` as evaluated by ``TabularMDP.evaluate`` of
    ``policies`` (m, S) (model actions); ``values`` (m, k) the discounted sums ``J / (1 - gamma)``
    (the gain when ``gamma = 1``). ``weights`` (m, k) is a direction at which the point is the
    unique maximiser of ``weights @ J`` among the front's points (in ``J``'s own units, with
    ``sum |w| = 1``; non-negative for every ``pareto`` point). ``pareto`` (m,) marks the
    Pareto-optimal vertices, the convex coverage set (all ``True`` for ``mode="ccs"``).
    ``observations``/``actions`` map model states and actions to the environment's when the
    front came from an :class:`~policyagg.envs.EnvModel`. ``info``: ``oracle_calls``,
    ``certificate_gap`` and ``evaluation_gap`` (largest, in units of the objective ranges),
    ``ranges`` ((k, 2) min and max of each ``J_i`` over ``O``), ``flat`` (objectives that do
    not shape the front), ``dimension`` (of the achievable set).
    """

    returns: NDArray[np.float64]
    values: NDArray[np.float64]
    policies: NDArray[np.int64]
    weights: NDArray[np.float64]
    pareto: NDArray[np.bool_]
    mode: str
    gamma: float
    names: tuple[str, ...]
    tol: float
    info: dict[str, Any] = field(default_factory=dict)
    observations: list[Any] | None = None
    actions: tuple[Any, ...] | None = None

    def __len__(self) -> int:
        return int(self.returns.shape[0])

    @property
    def n_objectives(self) -> int:
        return int(self.returns.shape[1])

    def ccs(self) -> ParetoFront:
        """The convex coverage set: the front restricted to its ``pareto`` points."""
        keep = self.pareto
        return ParetoFront(
            returns=self.returns[keep],
            values=self.values[keep],
            policies=self.policies[keep],
            weights=self.weights[keep],
            pareto=self.pareto[keep],
            mode="ccs",
            gamma=self.gamma,
            names=self.names,
            tol=self.tol,
            info=dict(self.info),
            observations=self.observations,
            actions=self.actions,
        )


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class _Inputs:
    mdp: TabularMDP
    rewards: NDArray[np.float64]  # (k, S, A)
    names: tuple[str, ...]
    observations: list[Any] | None
    actions: tuple[Any, ...] | None


def _inputs(source: object, gamma: float | None, names: Sequence[str] | None) -> _Inputs:
    """Validate the arguments of :func:`pareto_front`; the MDP is rebuilt for another ``gamma``."""
    observations: list[Any] | None = None
    actions: tuple[Any, ...] | None = None
    if isinstance(source, EnvModel):
        mdp, rewards = source.mdp, np.asarray(source.rewards, dtype=float)
        default_names = tuple(f"objective{i}" for i in range(rewards.shape[0]))
        observations, actions = list(source.observations), tuple(source.actions)
    elif isinstance(source, Problem):
        if len(source.constraints):
            raise InvalidProblemError(
                "pareto_front computes the front of the whole occupancy polytope; the problem has "
                f"{len(source.constraints)} extra constraint row(s), which it cannot honour: "
                "pass a Problem without `constraints`"
            )
        mdp, rewards, default_names = source.mdp, np.asarray(source.rewards, dtype=float), source.names
    else:
        raise InvalidProblemError(
            "`model` must be an EnvModel (from `policyagg.envs.from_gymnasium`) or a Problem; "
            f"got {type(source).__name__}"
        )
    if gamma is not None:
        gamma = check_real("gamma", gamma)
        if gamma != mdp.gamma:
            mdp = TabularMDP(
                mdp.P, rho=mdp.rho, gamma=gamma, n_actions=mdp.n_actions, allow_multichain=mdp.allow_multichain
            )
    k = rewards.shape[0]
    if names is None:
        chosen = tuple(default_names)
    elif isinstance(names, str) or not all(isinstance(x, str) for x in names) or len(names) != k:
        raise InvalidProblemError(f"`names` must be {k} strings, one per objective; got {names!r}")
    else:
        chosen = tuple(names)
    if len(set(chosen)) != k:
        raise InvalidProblemError(f"`names` must be distinct; got {chosen}")
    return _Inputs(mdp, rewards, chosen, observations, actions)


# ----------------------------------------------------------------------------- the planner
@dataclass
class _Oracle:
    """``max_{d in O} u @ z(d)`` for a direction ``u`` in normalised return space, by certified
    policy iteration. ``z_i = (J_i - lower_i) / width_i`` over the shaping objectives ``shape``."""

    mdp: TabularMDP
    R: NDArray[np.float64]  # (k, S*A)
    tol: float
    max_calls: int = 10_000
    planner: PolicyIteration = field(init=False)
    calls: int = 0
    certificate_gap: float = 0.0
    lower: NDArray[np.float64] = field(init=False)
    width: NDArray[np.float64] = field(init=False)
    shape: NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self.planner = PolicyIteration(self.mdp)

    def maximise(self, c: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64], float]:
        """The returns ``J`` (k,) and deterministic policy (S,) maximising ``c @ d``, and the dual
        gap (bound minus value, in the units of ``c``); :meth:`certify` checks the gap."""
        self.calls += 1
        if self.calls > self.max_calls:
            raise SolverError(
                f"the front search made {self.max_calls} planning calls (`max_calls`) and is not done: the front "
                "has too many points or corner weights for an exact enumeration; raise `max_calls`, or use "
                "`mode='ccs'` (fewer points than all vertices) or fewer objectives"
            )
        top = float(np.abs(c).max())
        unit = c / top if top > 0 else c
        try:
            result = self.planner.run(unit)
        except PolicyEvaluationError as exc:
            raise PolicyEvaluationError(
                f"policy iteration could not evaluate a policy of the front search ({exc})"
                + (
                    "; with `gamma` = 1 every vertex must be reachable from every state (a communicating "
                    "MDP): use `gamma` < 1, or `on_termination='reset'` for an episodic environment"
                    if self.mdp.average_reward
                    else ""
                )
            ) from None
        self.planner.policy = result.policy  # warm start for the next direction
        S, A = self.planner.S, self.planner.A
        d = np.zeros(S * A)
        d[np.arange(S) * A + result.policy] = result.mu
        return self.R @ d, result.policy.copy(), max(0.0, (result.bound - float(unit @ d)) * top)

    def certify(self, gap: float) -> None:
        """A dual gap in units of the objective ranges must be at most ``tol / 100``."""
        self.certificate_gap = max(self.certificate_gap, gap)
        if not gap <= self.tol / 100:
            raise SolverError(
                f"policy iteration could not certify a maximiser of the front (dual gap {gap:.3g} of the "
                f"objective ranges, tolerance {self.tol / 100:.3g}); raise `tol`"
            )

    def ranges(self) -> list[tuple[NDArray[np.float64], NDArray[np.int64]]]:
        """Maximise and minimise each objective; sets ``lower``, ``width`` and ``shape``.
        Returns the maximising points (used to seed the searches)."""
        k = self.R.shape[0]
        lower, upper, gaps, found = np.zeros(k), np.zeros(k), np.zeros(k), []
        for i in range(k):
            if not np.abs(self.R[i]).max() > 0:
                continue
            J_top, policy_top, gap_top = self.maximise(self.R[i])
            J_bottom, policy_bottom, gap_bottom = self.maximise(-self.R[i])
            upper[i], lower[i], gaps[i] = J_top[i], J_bottom[i], max(gap_top, gap_bottom)
            found += [(J_top, policy_top), (J_bottom, policy_bottom)]
        self.lower, self.width = lower, upper - lower
        sizes = np.abs(self.R).max(axis=1)
        self.shape = np.flatnonzero(self.width > self.tol * sizes)
        for i in self.shape.tolist():
            self.certify(gaps[i] / self.width[i])
        return found

    def z(self, J: NDArray[np.float64]) -> NDArray[np.float64]:
        """Normalised coordinates of returns ``J`` on the shaping objectives."""
        return (J[self.shape] - self.lower[self.shape]) / self.width[self.shape]

    def along(self, u: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Maximise ``u @ z`` (``u`` over the shaping objectives, in normalised units)."""
        c = (u / self.width[self.shape]) @ self.R[self.shape]
        J, policy, gap = self.maximise(c)
        self.certify(gap / max(1.0, float(np.abs(u).sum())))
        return J, policy


class _Points:
    """The distinct points found so far (max-norm distance > ``tol`` in normalised units)."""

    def __init__(self, oracle: _Oracle) -> None:
        self.oracle = oracle
        self.J: list[NDArray[np.float64]] = []
        self.policies: list[NDArray[np.int64]] = []
        self._Z = np.zeros((0, oracle.shape.size))

    def add(self, point: tuple[NDArray[np.float64], NDArray[np.int64]]) -> NDArray[np.float64]:
        J, policy = point
        z = self.oracle.z(J)
        if not len(self.J) or np.abs(self._Z - z).max(axis=1, initial=0.0).min() > self.oracle.tol:
            self.J.append(J)
            self.policies.append(policy)
            self._Z = np.vstack([self._Z, z])
        return z

    def __len__(self) -> int:
        return len(self.J)

    def matrix(self) -> NDArray[np.float64]:
        return self._Z


# ----------------------------------------------------------------------------- searches
def _affine_hull(points: _Points) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """An origin ``p0`` and an orthonormal basis (m, k') of the affine hull of ``V`` in
    normalised coordinates: extend the basis by any point off it; a direction orthogonal to
    the basis along which both the maximum and the minimum equal the basis's level is flat."""
    oracle, tol = points.oracle, points.oracle.tol
    Z = points.matrix()
    p0, dim = Z[0], Z.shape[1]
    basis = np.zeros((0, dim))

    def extend(z: NDArray[np.float64]) -> bool:
        nonlocal basis
        residual = (z - p0) - basis.T @ (basis @ (z - p0))
        norm = float(np.linalg.norm(residual))
        if norm <= tol:
            return False
        basis = np.vstack([basis, residual / norm])
        return True

    for z in Z[1:]:
        extend(z)
    while basis.shape[0] < dim:
        # an orthonormal basis of the complement of span(basis)
        _, _, vt = np.linalg.svd(np.vstack([basis, np.zeros((1, dim))]))
        complement = vt[basis.shape[0] :]
        grew = False
        for u in complement:
            for sign in (1.0, -1.0):
                z = points.add(oracle.along(sign * u))
                if extend(z):
                    grew = True
                    break
            if grew:
                break
        if not grew:
            break
    return p0, basis


def _all_vertices(points: _Points) -> tuple[int, NDArray[np.int64], NDArray[np.float64]]:
    """Outer approximation over all directions. Returns the dimension ``m`` of ``V``, the
    indices of the points that are vertices of the final hull (which is ``V``) and for each a
    direction (normalised coordinates) in the interior of its normal cone: the sum of the unit
    normals of the facets through it."""
    oracle, tol = points.oracle, points.oracle.tol
    p0, basis = _affine_hull(points)
    m = basis.shape[0]
    if m == 0:
        return 0, np.zeros(1, dtype=np.int64), np.zeros((1, basis.shape[1]))
    if m == 1:
        for sign in (1.0, -1.0):
            points.add(oracle.along(sign * basis[0]))
        y = (points.matrix() - p0) @ basis[0]
        return 1, np.array([np.argmax(y), np.argmin(y)]), np.array([basis[0], -basis[0]])
    confirmed: set[tuple[float, ...]] = set()
    while True:
        Y = (points.matrix() - p0) @ basis.T
        hull = ConvexHull(Y)
        grew = False
        for equation in hull.equations:
            normal, offset = equation[:-1], -equation[-1]  # normal @ y <= offset on the hull
            key = tuple(np.round(normal, 9))
            if key in confirmed:
                continue
            if float((((points.matrix() - p0) @ basis.T) @ normal).max()) > offset + tol:
                continue  # a point found in this round already lies beyond: not a facet now
            z = points.add(oracle.along(normal @ basis))
            if normal @ ((z - p0) @ basis.T) > offset + tol:
                grew = True
            else:
                confirmed.add(key)
        if not grew:
            directions = np.zeros((Y.shape[0], m))
            for simplex, equation in zip(hull.simplices, hull.equations):
                directions[simplex] += equation[:-1]
            vertices = np.asarray(hull.vertices, dtype=np.int64)
            cone = directions[vertices] @ basis
            return m, vertices, cone / np.linalg.norm(cone, axis=1, keepdims=True)


def _corner_weights(Z: NDArray[np.float64]) -> NDArray[np.float64]:
    """The corner weights of ``f(w) = max_s w @ s`` over the simplex: the vertices of
    ``{(w, y) : w in simplex, y >= w @ s for all s}`` below the cap ``y = 2`` (``Z`` lies in
    ``[0, 1]^k``, so ``f <= 1``). Coordinates ``w' = w[:-1]``, ``w_k = 1 - sum w'``."""
    n, k = Z.shape
    if k == 1:
        return np.ones((1, 1))
    # halfspaces A x + b <= 0 with x = (w', y)
    rows = []
    for s in Z:  # s[:-1] @ w' + s[-1] (1 - sum w') - y <= 0
        rows.append(np.concatenate([s[:-1] - s[-1], [-1.0, s[-1]]]))
    for i in range(k - 1):  # -w'_i <= 0
        row = np.zeros(k + 1)
        row[i] = -1.0
        rows.append(row)
    rows.append(np.concatenate([np.ones(k - 1), [0.0, -1.0]]))  # sum w' <= 1
    cap = np.zeros(k + 1)
    cap[k - 1], cap[k] = 1.0, -2.0  # y <= 2
    rows.append(cap)
    centre = np.full(k - 1, 1.0 / k)
    w = np.append(centre, 1.0 - centre.sum())
    inside = np.append(centre, (float((Z @ w).max()) + 2.0) / 2.0)
    corners = HalfspaceIntersection(np.array(rows), inside).intersections
    corners = corners[corners[:, -1] < 1.5]
    weights = np.column_stack([corners[:, :-1], 1.0 - corners[:, :-1].sum(axis=1)])
    return np.clip(weights, 0.0, None) / np.clip(weights, 0.0, None).sum(axis=1, keepdims=True)


def _linear_support(points: _Points) -> None:
    """Optimistic linear support over the weight simplex (module docstring)."""
    oracle, tol = points.oracle, points.oracle.tol
    confirmed: set[tuple[float, ...]] = set()
    while True:
        Z = points.matrix()
        grew = False
        for w in _corner_weights(Z):
            key = tuple(np.round(w, 9))
            if key in confirmed:
                continue
            if float((points.matrix() @ w).max()) > float((Z @ w).max()) + tol:
                continue  # a point found in this round already lifts the envelope here: not a corner now
            z = points.add(oracle.along(w))
            if w @ z > float((Z @ w).max()) + tol:
                grew = True
            else:
                confirmed.add(key)
        if not grew:
            return


def _unique_maximiser(Z: NDArray[np.float64], j: int, nonnegative: bool) -> tuple[float, NDArray[np.float64]]:
    """``max t`` s.t. ``w @ (Z_i - Z_j) + t <= 0`` for every other point ``i``: with ``w >= 0``,
    ``sum w = 1`` (``nonnegative``) or ``-1 <= w <= 1`` otherwise, and ``t <= 1``. ``t > 0`` iff
    ``Z_j`` is a vertex of the hull of ``Z`` (that is Pareto optimal, with ``w >= 0``); ``w`` certifies it."""
    n, k = Z.shape
    others = np.delete(Z, j, axis=0) - Z[j]
    if others.shape[0] == 0:
        return 1.0, np.full(k, 1.0 / k)
    A_ub = np.hstack([others, np.ones((others.shape[0], 1))])
    cost = np.zeros(k + 1)
    cost[-1] = -1.0
    bounds: list[tuple[float | None, float | None]]
    if nonnegative:
        bounds = [(0.0, None)] * k + [(None, 1.0)]
        A_eq, b_eq = np.append(np.ones(k), 0.0)[None], [1.0]
    else:
        bounds = [(-1.0, 1.0)] * k + [(None, 1.0)]
        A_eq, b_eq = None, None
    res = linprog(cost, A_ub=A_ub, b_ub=np.zeros(others.shape[0]), A_eq=A_eq, b_eq=b_eq, bounds=bounds, method="highs")
    if res.status != 0:
        raise SolverError(f"the vertex check of a front point failed: {res.message}")
    return float(-res.fun), np.asarray(res.x[:k])


def _dominated(Z: NDArray[np.float64], tol: float) -> NDArray[np.bool_]:
    """``Z_j`` is dominated: some point is ``>= Z_j - tol`` everywhere and ``> Z_j + tol`` somewhere."""
    at_least = (Z[:, None, :] >= Z[None, :, :] - tol).all(axis=2)  # [i, j]: Z_i >= Z_j - tol
    better = (Z[:, None, :] > Z[None, :, :] + tol).any(axis=2)
    return np.asarray((at_least & better).any(axis=0))


def _classify(
    Z: NDArray[np.float64], candidates: NDArray[np.int64], directions: NDArray[np.float64] | None, tol: float
) -> tuple[list[int], list[NDArray[np.float64]], list[bool]]:
    """Which candidates are kept (vertices; with ``directions=None`` only the CCS is kept), a
    weight at which each is the unique maximiser by more than ``tol``, and which are in the CCS.

    A candidate is in the CCS iff it is the unique maximiser among the candidates for some
    ``w >= 0`` (an LP, run only on the undominated ones). With ``directions`` (all vertices
    mode, the candidates are the vertices of ``V``), a vertex outside the CCS keeps its
    direction if that makes it the unique maximiser, else the box LP decides."""
    if Z.shape[1] == 0:
        return [0], [np.zeros(0)], [True]
    sub = Z[candidates]
    dominated = _dominated(sub, tol)
    kept, weights, pareto = [], [], []
    for position, j in enumerate(candidates.tolist()):
        margin, w = (0.0, np.zeros(Z.shape[1])) if dominated[position] else _unique_maximiser(sub, position, True)
        on_front = margin > tol
        if not on_front and directions is not None:
            w = directions[position]
            scores = sub @ w
            margin = float(scores[position] - np.delete(scores, position).max(initial=-np.inf))
            if not margin > tol:
                margin, w = _unique_maximiser(sub, position, nonnegative=False)
        if margin > tol:
            kept.append(j)
            weights.append(w)
            pareto.append(on_front)
    return kept, weights, pareto


# ----------------------------------------------------------------------------- the front
def pareto_front(
    model: EnvModel | Problem,
    gamma: float | None = None,
    *,
    mode: str = "ccs",
    tol: float = DEFAULT_TOL,
    names: Sequence[str] | None = None,
    max_calls: int = MAX_CALLS,
) -> ParetoFront:
    """The exact front of a tabular multi-objective model (see the module docstring).

    .. math::

        V = \\{ R d : d \\in O \\},\\qquad
        \\text{CCS} = \\{ v \\text{ vertex of } V : v = \\arg\\max_{x \\in V} w^\\top x
        \\text{ uniquely, for some } w \\ge 0 \\}

    Parameters
    ----------
    model : EnvModel or Problem
        Each reward component (agent) is an objective. A Problem must have no extra constraints.
    gamma : float in (0, 1], optional
        Discount (1: average reward); default the model's own.
    mode : ``"ccs"`` (any number of objectives) or ``"vertices"`` (2-3 objectives: every
        vertex of ``V``, with ``pareto`` marking the CCS).
    tol : float
        In units of each objective's range over ``O``: points closer than this are one point,
        a facet or corner weight improved by at most this is confirmed.
    names : sequence of str, optional
        Objective names (default the Problem's agent names, or ``objective0``, ...).
    max_calls : int
        At most this many planning calls (:class:`SolverError` beyond: the front is too large).

    Raises
    ------
    InvalidProblemError
        A bad argument, or ``mode="vertices"`` with more than 3 objectives.
    SolverError
        Policy iteration could not certify a maximiser within ``tol / 100``, or the search
        needed more than ``max_calls`` planning calls.
    PolicyEvaluationError
        A point's policy, evaluated exactly from ``rho``, does not return the point (only
        possible for ``gamma = 1`` on an MDP that is not communicating).
    """
    inputs = _inputs(model, gamma, names)
    if mode not in MODES:
        raise InvalidProblemError(f"`mode` must be one of {MODES}; got {mode!r}")
    tol = check_real("tol", tol)
    if not (0.0 < tol < 1e-2):
        raise InvalidProblemError(f"`tol` must be in (0, 0.01) (a fraction of each objective's range); got {tol}")
    k = inputs.rewards.shape[0]
    if mode == "vertices" and k > MAX_VERTEX_OBJECTIVES:
        raise InvalidProblemError(
            f"`mode='vertices'` enumerates every vertex of the return set with a convex hull, for at most "
            f"{MAX_VERTEX_OBJECTIVES} objectives; this model has {k}. Use `mode='ccs'` (the Pareto-optimal "
            "vertices, for any number of objectives)"
        )
    mdp = inputs.mdp
    oracle = _Oracle(mdp, inputs.rewards.reshape(k, -1), tol, check_count("max_calls", max_calls))
    seeds = oracle.ranges()
    points = _Points(oracle)
    directions: NDArray[np.float64] | None
    if oracle.shape.size == 0:  # every objective is flat: V is one point
        points.add(seeds[0] if seeds else oracle.maximise(np.zeros(mdp.n_state_actions))[:2])
        dimension: int | None = 0
        candidates, directions = np.zeros(1, dtype=np.int64), np.zeros((1, 0))
    elif mode == "vertices":
        for seed in seeds:
            points.add(seed)
        dimension, candidates, directions = _all_vertices(points)
    else:
        for i, seed in enumerate(seeds):
            if i % 2 == 0:  # the maximisers only: the simplex's corners e_i
                points.add(seed)
        dimension = None  # the CCS search does not explore the whole return set
        _linear_support(points)
        candidates, directions = np.arange(len(points)), None
    kept, weights, pareto = _classify(points.matrix(), candidates, directions, tol)
    front = _certify(inputs, oracle, points, kept, np.array(weights).reshape(len(kept), -1))
    return ParetoFront(
        returns=front[0],
        values=front[1],
        policies=front[2],
        weights=front[3],
        pareto=np.array(pareto, dtype=bool)[front[5]],
        mode=mode,
        gamma=float(mdp.gamma),
        names=inputs.names,
        tol=tol,
        info={
            "oracle_calls": oracle.calls,
            "certificate_gap": oracle.certificate_gap,
            "evaluation_gap": front[4],
            "ranges": np.column_stack([oracle.lower, oracle.lower + oracle.width]).tolist(),
            "flat": [inputs.names[i] for i in range(k) if i not in set(oracle.shape.tolist())],
            "dimension": dimension,
        },
        observations=inputs.observations,
        actions=inputs.actions,
    )


def _certify(
    inputs: _Inputs, oracle: _Oracle, points: _Points, kept: list[int], weights_z: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64], NDArray[np.float64], float, NDArray[np.int64]]:
    """Evaluate each kept point's policy exactly; order the points by their first objective
    (descending, then the next); weights from normalised to the objectives' own units
    (``sum |w| = 1``). Returns returns, values, policies, weights, the largest evaluation gap
    and the order applied (indices into ``kept``)."""
    mdp, rewards = inputs.mdp, inputs.rewards
    S, A = mdp.n_states, mdp.n_actions
    k = rewards.shape[0]
    returns, policies, gap = [], [], 0.0
    for j in kept:
        policy = points.policies[j]
        one_hot = np.zeros((S, A))
        one_hot[np.arange(S), policy] = 1.0
        evaluated = mdp.evaluate(one_hot, rewards)
        error = float(np.abs(oracle.z(evaluated) - oracle.z(points.J[j])).max(initial=0.0))
        gap = max(gap, error)
        if not error <= oracle.tol:
            raise PolicyEvaluationError(
                f"the policy of front point {points.J[j].tolist()} returns {evaluated.tolist()} when evaluated "
                f"from `rho` (off by {error:.3g} of the objective ranges)"
                + (
                    "; with `gamma` = 1 this happens on an MDP that is not communicating: use `gamma` < 1"
                    if mdp.average_reward
                    else ""
                )
            )
        returns.append(evaluated)
        policies.append(policy)
    J = np.array(returns).reshape(len(kept), k)
    weights = np.zeros((len(kept), k))
    weights[:, oracle.shape] = weights_z / oracle.width[oracle.shape]
    weights /= np.abs(weights).sum(axis=1, keepdims=True).clip(min=1e-300)
    order = np.lexsort(tuple(-J[:, i] for i in reversed(range(k)))) if len(kept) else np.zeros(0, int)
    values = J if mdp.average_reward else J / (1.0 - mdp.gamma)
    policy_array = np.array(policies, dtype=np.int64).reshape(len(kept), S)
    return J[order], values[order], policy_array[order], weights[order], gap, order


# ----------------------------------------------------------------------------- files
def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    return value


def write_front(
    front: ParetoFront, folder: StrPath, *, stem: str = "front", meta: dict | None = None
) -> tuple[Path, Path]:
    """Write ``folder/stem.csv`` (one row per point: ``pareto``, then ``value_``, ``return_`` and
    ``weight_`` columns per objective) and ``folder/stem.json`` (the same plus each point's
    policy, the state observations and actions, ``gamma``, ``mode``, ``tol``, ``info`` and
    ``meta``). Both are written atomically; a failed write is an :class:`OutputError`."""
    folder = Path(folder)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["point", "pareto"]
        + [f"value_{n}" for n in front.names]
        + [f"return_{n}" for n in front.names]
        + [f"weight_{n}" for n in front.names]
    )
    for j in range(len(front)):
        writer.writerow(
            [j, int(front.pareto[j])]
            + [repr(float(x)) for x in front.values[j]]
            + [repr(float(x)) for x in front.returns[j]]
            + [repr(float(x)) for x in front.weights[j]]
        )
    csv_path = atomic_write_bytes(folder / f"{stem}.csv", buffer.getvalue().encode())
    document = {
        "format": FORMAT,
        "mode": front.mode,
        "gamma": front.gamma,
        "tol": front.tol,
        "names": list(front.names),
        "values_are": "gain (average reward)" if front.gamma == 1.0 else "discounted sum from rho: J / (1 - gamma)",
        "points": [
            {
                "pareto": bool(front.pareto[j]),
                "value": front.values[j].tolist(),
                "return": front.returns[j].tolist(),
                "weight": front.weights[j].tolist(),
                "policy": front.policies[j].tolist(),
            }
            for j in range(len(front))
        ],
        "observations": None if front.observations is None else [_jsonable(o) for o in front.observations],
        "actions": None if front.actions is None else [_jsonable(a) for a in front.actions],
        "info": front.info,
        "meta": meta or {},
    }
    json_path = atomic_write_json(folder / f"{stem}.json", document)
    return csv_path, json_path


def read_front(path: StrPath) -> ParetoFront:
    """Load a front written by :func:`write_front` from its JSON file; :class:`CorruptFileError`
    if it is not one."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
        if document.get("format") != FORMAT:
            raise KeyError("format")
        points = document["points"]
        k = len(document["names"])

        def column(key: str, dtype: type) -> np.ndarray:
            return np.array([p[key] for p in points], dtype=dtype).reshape(len(points), -1 if points else k)

        policies = np.array([p["policy"] for p in points], dtype=np.int64).reshape(len(points), -1)
        observations = document["observations"]
        return ParetoFront(
            returns=column("return", float),
            values=column("value", float),
            policies=policies,
            weights=column("weight", float),
            pareto=np.array([p["pareto"] for p in points], dtype=bool),
            mode=str(document["mode"]),
            gamma=float(document["gamma"]),
            names=tuple(document["names"]),
            tol=float(document["tol"]),
            info=dict(document["info"]),
            observations=None
            if observations is None
            else [tuple(o) if isinstance(o, list) else o for o in observations],
            actions=None if document["actions"] is None else tuple(document["actions"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptFileError(
            f"{path} is not a Pareto front written by policyagg's write_front ({type(exc).__name__}: {exc}); "
            "write it again with `write_front` or `policyagg front`"
        ) from None
