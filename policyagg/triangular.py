"""Block-triangular structure of an MDP, for exact solves of many policies' discounted flow systems.

Order the states component by component, the strongly connected components (SCCs) of the
union graph (``s -> s'`` iff some action can move ``s`` to ``s'``) in a topological order of
the graph of components. No transition then leads back to an earlier component, so for every
policy the discounted flow system

.. math:: (I - \\gamma P_\\pi^T) \\mu = (1 - \\gamma) \\rho

is block lower triangular: ``mu`` on a component depends only on ``mu`` on the components
before it. It is solved exactly by block forward substitution, one small system per
component. Environments whose state records something that never comes back (items collected,
e.g. MO-Gymnasium's four-room: 593,921 states in 4,097 components of at most 151) have many
small components.

Inside a component the states are in reverse Cuthill-McKee order (of the component's
symmetrised graph), so its system is banded with small bandwidths ``p`` (below the diagonal)
and ``q`` (above). Gaussian elimination without pivoting is exact up to rounding and stable
here: for ``gamma < 1`` every diagonal block ``I - gamma Q^T`` (``Q`` the policy's transitions
inside the component, substochastic) is strictly diagonally dominant by columns, a property
elimination keeps, and it creates no entry outside the band. One component of ``n`` states
costs about ``n (p + 1) (q + 1)`` multiply-adds (:attr:`TriangularStructure.work` sums them).

Two solvers use the structure: the compiled banded one
(:func:`policyagg.sampling_kernel.triangular_solve`, numba) and :func:`solve_numpy`, one dense
LAPACK solve per component for a batch of policies (sparse LU for a component above
:data:`DENSE_COMPONENT_MAX_STATES` states).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import NDArray
from scipy.sparse import csgraph

from policyagg.errors import InvalidMDPError

#: :func:`solve_numpy` solves a component of more states than this by sparse LU instead of dense LAPACK.
DENSE_COMPONENT_MAX_STATES = 1500
#: A policy's occupancy or values from :func:`solve` count (in :mod:`policyagg.mdp` and
#: :mod:`policyagg.planning`) when their normwise backward error is at most this
#: (:func:`accepted`); otherwise they are solved again as without the structure.
RESIDUAL_RTOL = 1e-12
#: :func:`pays`: the eliminations may cost what this many steps of an iterative solve do
#: (each a product with ``P`` and a Gram-Schmidt step over as many earlier vectors).
ITERATIVE_STEPS = 40

IntArray = NDArray[np.int64]


def topological_order(n_nodes: int, source: IntArray, target: IntArray) -> IntArray:
    """The nodes ``0..n_nodes-1`` of a directed acyclic graph (edges ``source[k] -> target[k]``)
    in an order in which every edge goes forward (Kahn's algorithm, one level of nodes whose
    predecessors are all placed at a time). A cycle -> :class:`InvalidMDPError`."""
    keep = source != target
    source, target = np.asarray(source[keep], np.int64), np.asarray(target[keep], np.int64)
    successors = sp.csr_array((np.ones(source.size), (source, target)), shape=(n_nodes, n_nodes))
    successors.sum_duplicates()
    indegree = np.bincount(successors.indices, minlength=n_nodes).astype(np.int64)
    level = np.flatnonzero(indegree == 0)
    placed: list[IntArray] = []
    while level.size:
        placed.append(level)
        starts, stops = successors.indptr[level], successors.indptr[level + 1]
        lengths = stops - starts
        if not lengths.sum():
            break
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        reached = successors.indices[offsets]
        np.subtract.at(indegree, reached, 1)
        candidates = np.unique(reached)
        level = candidates[indegree[candidates] == 0]
    order = np.concatenate(placed) if placed else np.zeros(0, np.int64)
    if order.size != n_nodes:
        raise InvalidMDPError(f"the graph of components has a cycle ({n_nodes - order.size} nodes unplaced)")
    return order.astype(np.int64)


def component_order(n_components: int, labels: IntArray, source: IntArray, target: IntArray) -> IntArray:
    """The rank of every component in a topological order of the components (edges
    ``source[k] -> target[k]`` between states, ``labels`` their components). SciPy numbers strong
    components in the order its search completes them; when every edge between components
    already goes up (or down) in that numbering, the numbering (or its reverse) is used,
    otherwise :func:`topological_order`."""
    upper, lower = labels[source], labels[target]
    between = upper != lower
    upper, lower = upper[between], lower[between]
    if (upper < lower).all():
        return np.arange(n_components, dtype=np.int64)
    if (upper > lower).all():
        return np.arange(n_components - 1, -1, -1, dtype=np.int64)
    rank = np.empty(n_components, np.int64)
    rank[topological_order(n_components, upper, lower)] = np.arange(n_components)
    return rank


@dataclass(frozen=True)
class TriangularStructure:
    """States ordered component by component (see the module docstring), for ``P`` with
    ``n_actions`` actions.

    ``order[i]`` is the state at position ``i`` and ``position`` its inverse; component ``c``
    holds positions ``starts[c]:starts[c + 1]``, with ``lower[c]``/``upper[c]`` the bandwidths of
    its system below/above the diagonal. ``ptr``, ``index``, ``data`` are ``P`` in CSR with row
    ``i * A + a`` the transitions of position ``i`` under action ``a`` and columns the positions
    of the next states (every one at or after its component's start).
    """

    order: IntArray
    position: IntArray
    starts: IntArray
    lower: IntArray
    upper: IntArray
    ptr: IntArray
    index: IntArray
    data: NDArray[np.float64]
    n_actions: int

    @property
    def n_states(self) -> int:
        return int(self.order.size)

    @property
    def n_components(self) -> int:
        return int(self.starts.size - 1)

    @property
    def sizes(self) -> IntArray:
        """States per component."""
        return np.diff(self.starts)

    @property
    def work(self) -> int:
        """Multiply-adds of the banded eliminations for one policy: ``sum n (p + 1) (q + 1)``."""
        return _work(self.starts, self.lower, self.upper)

    @property
    def band_size(self) -> int:
        """Entries of the largest component's band, ``n (p + q + 1)`` (the compiled solver's work array)."""
        return int((self.sizes * (self.lower + self.upper + 1)).max(initial=0))

    @cached_property
    def entries(self) -> tuple[IntArray, IntArray]:
        """``(position, action)`` of the state-action of every entry of ``ptr``/``index``/``data``."""
        counts = np.diff(self.ptr)
        rows = np.repeat(np.arange(self.n_states * self.n_actions), counts)
        return rows // self.n_actions, rows % self.n_actions

    @classmethod
    def from_transitions(cls, P: sp.sparray, n_actions: int) -> TriangularStructure:
        """The structure of ``P`` (``(S * A, S)``, row ``s * A + a``); stored zeros are dropped (no edges)."""
        return cls._build(*_ordering(P, n_actions), n_actions)

    @classmethod
    def if_it_pays(cls, P: sp.sparray, n_actions: int) -> TriangularStructure | None:
        """:meth:`from_transitions` where :func:`pays`, else ``None``; decided from the components and
        their bandwidths, before ``P`` is permuted (a large MDP of one component costs no copy of ``P``)."""
        ordering = _ordering(P, n_actions)
        P, _, _, starts, lower, upper = ordering
        if _work(starts, lower, upper) > work_limit(P.nnz, P.shape[1]):
            return None
        return cls._build(*ordering, n_actions)

    @classmethod
    def _build(
        cls,
        P: sp.csr_array,
        order: IntArray,
        position: IntArray,
        starts: IntArray,
        lower: IntArray,
        upper: IntArray,
        n_actions: int,
    ) -> TriangularStructure:
        rows = (order[:, None] * n_actions + np.arange(n_actions)).ravel()
        permuted = P[rows]
        return cls(
            order=order,
            position=position,
            starts=starts,
            lower=lower,
            upper=upper,
            ptr=permuted.indptr.astype(np.int64),
            index=position[permuted.indices].astype(np.int64),
            data=permuted.data.astype(float),
            n_actions=n_actions,
        )


def _ordering(P: sp.sparray, n_actions: int) -> tuple[sp.csr_array, IntArray, IntArray, IntArray, IntArray, IntArray]:
    """``(P without stored zeros, order, position, starts, lower, upper)`` of :class:`TriangularStructure`."""
    P = sp.csr_array(P, copy=True)
    P.eliminate_zeros()  # a stored zero may point anywhere, even back to an earlier component
    S = P.shape[1]
    coo = P.tocoo()
    source, target = coo.row // n_actions, coo.col
    graph = sp.csr_array((np.ones(source.size), (source, target)), shape=(S, S))
    n_components, labels = csgraph.connected_components(graph, directed=True, connection="strong")
    labels = labels.astype(np.int64)
    rank = component_order(n_components, labels, source, target)
    inside = labels[source] == labels[target]
    symmetric = sp.csr_array(
        (
            np.ones(2 * int(inside.sum())),
            (np.r_[source[inside], target[inside]], np.r_[target[inside], source[inside]]),
        ),
        shape=(S, S),
    )
    bandwise = np.empty(S, np.int64)
    bandwise[csgraph.reverse_cuthill_mckee(symmetric, symmetric_mode=True)] = np.arange(S)
    order = np.lexsort((bandwise, rank[labels])).astype(np.int64)
    position = np.empty(S, np.int64)
    position[order] = np.arange(S)
    component = rank[labels[order]]  # of each position, non-decreasing
    starts = np.searchsorted(component, np.arange(n_components + 1)).astype(np.int64)
    offset = position[target] - position[source]  # position of the next state minus the state's
    same = component[position[source]] == component[position[target]]
    if (offset[~same] < 0).any():
        raise InvalidMDPError("internal: a transition leads back to an earlier component")
    lower = np.zeros(n_components, np.int64)
    upper = np.zeros(n_components, np.int64)
    np.maximum.at(lower, component[position[source[same]]], offset[same])  # row (next) below column (state)
    np.maximum.at(upper, component[position[source[same]]], -offset[same])
    return P, order, position, starts, lower, upper


def _work(starts: IntArray, lower: IntArray, upper: IntArray) -> int:
    """``sum n (p + 1) (q + 1)`` over the components (:attr:`TriangularStructure.work`)."""
    return int((np.diff(starts) * (lower + 1) * (upper + 1)).sum())


def work_limit(nnz: int, n_states: int) -> int:
    """What :data:`ITERATIVE_STEPS` ``= m`` steps of an iterative solve cost, ``m (2 nnz(P) + m S)``
    (products with ``P``, Gram-Schmidt)."""
    m = ITERATIVE_STEPS
    return m * (2 * nnz + m * n_states)


def pays(structure: TriangularStructure, nnz: int) -> bool:
    """Whether the eliminations (``structure.work`` multiply-adds per policy) cost at most
    :func:`work_limit`: then the exact block solve is used where an iterative one would be."""
    return structure.work <= work_limit(nnz, structure.n_states)


def accepted(residual: float, rhs: NDArray[np.float64], x: NDArray[np.float64]) -> bool:
    """Whether a solution ``x`` of ``(I - gamma M) x = rhs`` with true residual norm ``residual``
    counts: ``residual <= RESIDUAL_RTOL (||rhs|| + 2 ||x||)``, a normwise backward error bound
    (``2`` stands for ``||I - gamma M||``, which can be larger: the test is then only stricter).
    Relative to ``||rhs||`` alone it would refuse exact-to-rounding solutions once ``||x||``
    grows like ``||rhs|| / (1 - gamma)`` for discounts near 1."""
    return bool(residual <= RESIDUAL_RTOL * (np.linalg.norm(rhs) + 2.0 * np.linalg.norm(x)))


def solve(
    structure: TriangularStructure,
    policies: NDArray[np.float64],
    rhs: NDArray[np.float64],
    gamma: float,
    *,
    transpose: bool = False,
    kernel: str = "auto",
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``x`` (B, S) with ``(I - gamma P_pi^T) x = rhs`` (``transpose``: ``(I - gamma P_pi) x =
    rhs``, a policy's values) for policies (B, S, A) and ``gamma < 1``, and each true residual
    norm ``||rhs - (I - ...) x||_2`` (B,), computed from ``P``. ``kernel``: ``"numba"``
    (:func:`policyagg.sampling_kernel.triangular_solve`, banded eliminations), ``"numpy"``
    (:func:`solve_numpy`) or ``"auto"`` (numba when installed)."""
    t = structure
    policies = np.ascontiguousarray(policies, dtype=float)
    if kernel == "auto":
        kernel = "numba" if importlib.util.find_spec("numba") is not None else "numpy"
    if kernel == "numba":
        from policyagg.sampling_kernel import triangular_solve

        by_position, residuals = np.empty((len(policies), t.n_states)), np.empty(len(policies))
        triangular_solve(
            t.ptr, t.index, t.data, t.order, t.starts, t.lower, t.upper,
            gamma, transpose, np.ascontiguousarray(rhs[t.order], dtype=float), policies, by_position, residuals,
        )  # fmt: skip
    else:
        by_position = solve_numpy(t, policies, rhs, gamma, transpose=transpose)
        residuals = residual_norms(t, policies, rhs, gamma, by_position, transpose=transpose)
    x = np.empty_like(by_position)
    x[:, t.order] = by_position
    return x, residuals


def residual_norms(
    structure: TriangularStructure,
    policies: NDArray[np.float64],
    rhs: NDArray[np.float64],
    gamma: float,
    by_position: NDArray[np.float64],
    *,
    transpose: bool = False,
) -> NDArray[np.float64]:
    """``||rhs - (I - gamma P_pi^T) x||_2`` per policy (``transpose``: ``I - gamma P_pi``), ``x``
    given by position, from the transitions."""
    t = structure
    state, action = t.entries
    out = np.empty(len(policies))
    for b, policy in enumerate(policies):
        weight = gamma * policy[t.order[state], action] * t.data
        if transpose:
            flow = np.bincount(state, weights=weight * by_position[b, t.index], minlength=t.n_states)
        else:
            flow = np.bincount(t.index, weights=weight * by_position[b, state], minlength=t.n_states)
        out[b] = np.linalg.norm(rhs[t.order] - by_position[b] + flow)
    return out


def solve_numpy(
    structure: TriangularStructure,
    policies: NDArray[np.float64],
    rhs: NDArray[np.float64],
    gamma: float,
    *,
    transpose: bool = False,
) -> NDArray[np.float64]:
    """``x`` by position (B, S), as :func:`solve` computes it, by block substitution with one
    batched dense LAPACK solve per component (a sparse LU per policy above
    :data:`DENSE_COMPONENT_MAX_STATES` states) and the coupling to later components added to
    (forward) or gathered from (``transpose``) their solved values."""
    t = structure
    B, A = policies.shape[0], t.n_actions
    flat = policies.reshape(B, -1)
    x = np.repeat(rhs[t.order][None], B, axis=0)
    state, action = t.entries
    components = range(t.n_components - 1, -1, -1) if transpose else range(t.n_components)
    for c in components:
        a, b = int(t.starts[c]), int(t.starts[c + 1])
        entries = slice(int(t.ptr[a * A]), int(t.ptr[b * A]))
        source, target = state[entries], t.index[entries]
        weight = gamma * flat[:, t.order[source] * A + action[entries]] * t.data[entries]  # (B, entries)
        inside = target < b
        if transpose and not inside.all():  # pull the later components' values
            outside = ~inside
            _scatter_add(x, source[outside], weight[:, outside] * x[:, target[outside]])
        rows, cols = (source[inside] - a, target[inside] - a) if transpose else (target[inside] - a, source[inside] - a)
        x[:, a:b] = _component_solve(b - a, rows, cols, weight[:, inside], x[:, a:b])
        if not transpose and not inside.all():  # push this component's flow to later ones
            outside = ~inside
            _scatter_add(x, target[outside], weight[:, outside] * x[:, source[outside]])
    return x


def _scatter_add(x: NDArray[np.float64], columns: IntArray, values: NDArray[np.float64]) -> None:
    """``x[b, columns[k]] += values[b, k]`` for every row ``b`` (repeated columns add up)."""
    for b in range(len(x)):
        x[b] += np.bincount(columns, weights=values[b], minlength=x.shape[1])


def _component_solve(
    n: int, rows: IntArray, cols: IntArray, weight: NDArray[np.float64], rhs: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Solve ``(I - W_b) x_b = rhs_b`` for each ``b``, ``W_b`` the ``n x n`` matrix with entries
    ``weight[b]`` at ``(rows, cols)`` (duplicates summed): dense LAPACK, or sparse LU above
    :data:`DENSE_COMPONENT_MAX_STATES` states."""
    B = len(rhs)
    if n <= DENSE_COMPONENT_MAX_STATES:
        flat = np.zeros((B, n * n))
        _scatter_add(flat, rows * n + cols, -weight)
        system = flat.reshape(B, n, n)
        system[:, np.arange(n), np.arange(n)] += 1.0
        solved: NDArray[np.float64] = np.linalg.solve(system, rhs[..., None])[..., 0]  # type: ignore[assignment]  # numpy stubs: solve gives floating[Any]
        return solved
    out = np.empty_like(rhs)
    for b in range(B):
        matrix = sp.csc_array((-weight[b], (rows, cols)), shape=(n, n)) + sp.eye_array(n, format="csc")
        out[b] = spla.spsolve(sp.csc_array(matrix), rhs[b])
    return out
