"""The hot loops of the ``policy`` measure's GMRES compiled with numba (the optional ``fast`` extra).

:meth:`policyagg.sampling.PolicySampler.gmres` on a block of ``B`` samples spends its time in
three places per Arnoldi step: the product ``A_pi v`` (one pass over the non-zeros of ``P``),
the preconditioner (one dense product or incomplete-LU solve, already BLAS/SuperLU), and the
Gram-Schmidt and Givens updates (many small numpy calls). The first and the last are here,
with every array laid out ``(..., B)`` so that the innermost loop runs over the samples (SIMD,
no gathers, no Python between the pieces).

The kronecker method's BiCGSTAB runs here whole (:func:`kronecker_bicgstab`), with the
structure's product :func:`kronecker_apply`; every innermost loop writes one row, so that LLVM
can vectorise it (see :func:`_component_flat`).

Each sample's numbers depend on its own data only (a sample that has converged stops changing
while the others go on), and without fastmath every operation runs in source order, so the
results are the same whichever worker solves a batch.

Imported lazily, and every function compiled on its first call, without signatures given up front
(compiling takes seconds the first time; numba caches the machine code): a run that uses BiCGSTAB
alone never compiles the GMRES kernels (2.3 s per process with a cold cache).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numba
import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from policyagg.kronecker import PackedStructure


@numba.njit(cache=True, nogil=True)
def apply_block(
    p_ptr: NDArray[np.integer],
    p_index: NDArray[np.integer],
    p_data: NDArray[np.float64],
    n_actions: int,
    policies: NDArray[np.float64],
    x: NDArray[np.float64],
    gamma: float,
    average: bool,
    out: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """``out = A_pi x`` for a block: ``(A_pi x)[t] = x[t] - gamma sum_{s,a} P(t|s,a) pi(a|s) x[s]``,
    the last row ``sum_s x[s]`` instead when ``average``. ``P`` in CSR (row ``s A + a``);
    ``policies`` (S A, B); ``x``, ``out`` (S, B). Each row of ``P`` is scattered into ``out``:
    ``P`` is read in order and only ``out`` (S x B) is accessed at random (a gather over the
    rows of ``P^T`` would read an (S A) x B block at random: measured 1.7-2.4x slower)."""
    n_states, n_block = x.shape
    for t in range(n_states):
        for b in range(n_block):
            out[t, b] = 0.0
    weight = np.empty(n_block)
    for s in range(n_states):
        for a in range(n_actions):
            row = s * n_actions + a
            for b in range(n_block):
                weight[b] = policies[row, b] * x[s, b]
            for k in range(p_ptr[row], p_ptr[row + 1]):
                p = p_data[k]
                target = out[p_index[k]]
                for b in range(n_block):
                    target[b] += p * weight[b]
    for t in range(n_states):
        for b in range(n_block):
            out[t, b] = x[t, b] - gamma * out[t, b]
    if average:
        last = out[n_states - 1]
        for b in range(n_block):
            last[b] = 0.0
        for s in range(n_states):
            for b in range(n_block):
                last[b] += x[s, b]


@numba.njit(cache=True, nogil=True)
def arnoldi_step(
    k: int,
    basis: NDArray[np.float64],
    w: NDArray[np.float64],
    hess: NDArray[np.float64],
    cos: NDArray[np.float64],
    sin: NDArray[np.float64],
    g: NDArray[np.float64],
    active: NDArray[np.bool_],
    steps: NDArray[np.int64],
    target: float,
) -> None:  # pragma: no cover - compiled
    """Step ``k`` of Arnoldi with Givens rotations, per sample: orthogonalise ``w = A T v_k``
    (S, B) against ``basis[:k+1]`` (classical Gram-Schmidt), store it as ``basis[k+1]``, rotate
    the new Hessenberg column ``hess[k, :k+2]`` (stored by columns, (m, m + 1, B)) into triangular form and update ``g`` (the
    rotated ``beta e_1``). A sample whose residual estimate ``|g[k+1]|`` reaches ``target`` (or
    breaks down) becomes inactive with ``steps[b] = k + 1``."""
    n, n_block = w.shape
    column = hess[k]  # (m + 1, B): column k of the Hessenberg matrix
    for j in range(k + 1):
        coeff = column[j]
        vj = basis[j]
        for b in range(n_block):
            coeff[b] = 0.0
        for i in range(n):
            for b in range(n_block):
                coeff[b] += vj[i, b] * w[i, b]
    for j in range(k + 1):
        coeff = column[j]
        vj = basis[j]
        for i in range(n):
            for b in range(n_block):
                w[i, b] -= coeff[b] * vj[i, b]
    norm = column[k + 1]
    for b in range(n_block):
        norm[b] = 0.0
    for i in range(n):
        for b in range(n_block):
            norm[b] += w[i, b] * w[i, b]
    for b in range(n_block):
        norm[b] = math.sqrt(norm[b])
    scale = np.empty(n_block)
    for b in range(n_block):
        scale[b] = 1.0 / norm[b] if norm[b] > 0.0 else 0.0  # breakdown: a zero vector
    following = basis[k + 1]
    for i in range(n):
        for b in range(n_block):
            following[i, b] = w[i, b] * scale[b]
    for b in range(n_block):
        if not active[b]:
            continue
        for j in range(k):  # the earlier rotations
            top = column[j, b]
            bottom = column[j + 1, b]
            column[j, b] = cos[j, b] * top + sin[j, b] * bottom
            column[j + 1, b] = -sin[j, b] * top + cos[j, b] * bottom
        radius = math.hypot(column[k, b], column[k + 1, b])
        if radius > 0.0:
            cos[k, b] = column[k, b] / radius
            sin[k, b] = column[k + 1, b] / radius
        else:
            cos[k, b] = 1.0
            sin[k, b] = 0.0
        column[k, b] = radius
        column[k + 1, b] = 0.0
        g[k + 1, b] = -sin[k, b] * g[k, b]
        g[k, b] = cos[k, b] * g[k, b]
        steps[b] = k + 1
        if abs(g[k + 1, b]) <= target or radius == 0.0:
            active[b] = False


@numba.njit(cache=True, nogil=True)
def combine(
    basis: NDArray[np.float64],
    hess: NDArray[np.float64],
    g: NDArray[np.float64],
    steps: NDArray[np.int64],
    out: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """``out[:, b] = V_b y_b`` with ``y_b = R_b^{-1} g_b`` over sample ``b``'s own first
    ``steps[b]`` columns (``R`` the rotated, upper-triangular ``hess``, stored by columns)."""
    n, n_block = out.shape
    m = hess.shape[0]
    y = np.zeros((m, n_block))
    for b in range(n_block):
        count = steps[b]
        for j in range(count - 1, -1, -1):
            total = g[j, b]
            for q in range(j + 1, count):
                total -= hess[q, j, b] * y[q, b]
            y[j, b] = total / hess[j, j, b] if hess[j, j, b] != 0.0 else 0.0
    for i in range(n):
        for b in range(n_block):
            out[i, b] = 0.0
    for j in range(min(m, steps.max())):  # columns past every sample's count may be unset
        vj = basis[j]
        for i in range(n):
            for b in range(n_block):
                out[i, b] += y[j, b] * vj[i, b]


@numba.njit(cache=True, nogil=True)
def _assemble_band(
    ptr: NDArray[np.int64],
    index: NDArray[np.int64],
    data: NDArray[np.float64],
    policy: NDArray[np.float64],
    gamma: float,
    start: int,
    stop: int,
    lower: int,
    width: int,
    transpose: bool,
    band: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """The band of ``I - gamma P_pi^T`` (``transpose``: of ``I - gamma P_pi``; ``policy`` by
    position) on positions ``start:stop``: entry ``(i, j)`` (local) at ``band[i * width + j - i + lower]``; transitions
    that leave the component are skipped."""
    n_actions = policy.shape[1]
    for k in range((stop - start) * width):
        band[k] = 0.0
    for i in range(stop - start):
        band[i * width + lower] = 1.0
    for j in range(start, stop):
        for a in range(n_actions):
            weight = gamma * policy[j, a]
            row = j * n_actions + a
            for k in range(ptr[row], ptr[row + 1]):
                t = index[k]
                if t < stop:
                    if transpose:
                        band[(j - start) * width + t - j + lower] -= weight * data[k]
                    else:
                        band[(t - start) * width + j - t + lower] -= weight * data[k]


@numba.njit(cache=True, nogil=True)
def _band_solve(
    band: NDArray[np.float64], n: int, lower: int, upper: int, x: NDArray[np.float64]
) -> None:  # pragma: no cover - compiled
    """Solve the banded system in ``band`` (layout of :func:`_assemble_band`) in place of ``x``
    (``n`` entries): LU without pivoting (stable for diagonally dominant matrices), then the two
    triangular solves."""
    width = lower + upper + 1
    for k in range(n):
        pivot = band[k * width + lower]
        for i in range(k + 1, min(n, k + lower + 1)):
            factor = band[i * width + k - i + lower] / pivot
            band[i * width + k - i + lower] = factor
            if factor != 0.0:
                for j in range(k + 1, min(n, k + upper + 1)):
                    band[i * width + j - i + lower] -= factor * band[k * width + j - k + lower]
    for i in range(n):
        total = x[i]
        for k in range(max(0, i - lower), i):
            total -= band[i * width + k - i + lower] * x[k]
        x[i] = total
    for i in range(n - 1, -1, -1):
        total = x[i]
        for j in range(i + 1, min(n, i + upper + 1)):
            total -= band[i * width + j - i + lower] * x[j]
        x[i] = total / band[i * width + lower]


@numba.njit(cache=True, nogil=True)
def _couple(
    ptr: NDArray[np.int64],
    index: NDArray[np.int64],
    data: NDArray[np.float64],
    policy: NDArray[np.float64],
    gamma: float,
    start: int,
    stop: int,
    transpose: bool,
    x: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """The coupling of positions ``start:stop`` with later components (``t >= stop``) through
    ``gamma pi(a|s) P(t|s, a)``: push ``x[s]`` (solved) into ``x[t]`` (forward), or, with
    ``transpose``, pull the solved ``x[t]`` into ``x[s]`` before the component is solved."""
    n_actions = policy.shape[1]
    for j in range(start, stop):
        for a in range(n_actions):
            weight = gamma * policy[j, a]
            row = j * n_actions + a
            for k in range(ptr[row], ptr[row + 1]):
                t = index[k]
                if t >= stop:
                    if transpose:
                        x[j] += weight * data[k] * x[t]
                    else:
                        x[t] += weight * data[k] * x[j]


@numba.njit(cache=True, nogil=True)
def _residual_norm(
    ptr: NDArray[np.int64],
    index: NDArray[np.int64],
    data: NDArray[np.float64],
    policy: NDArray[np.float64],
    gamma: float,
    transpose: bool,
    rhs: NDArray[np.float64],
    x: NDArray[np.float64],
    work: NDArray[np.float64],
) -> float:  # pragma: no cover - compiled
    """``||rhs - (I - gamma P_pi^T) x||_2`` (``transpose``: ``I - gamma P_pi``) from the
    transitions themselves, not the factors."""
    n_actions = policy.shape[1]
    n = x.size
    for t in range(n):
        work[t] = rhs[t] - x[t]
    for j in range(n):
        for a in range(n_actions):
            weight = gamma * policy[j, a]
            row = j * n_actions + a
            for k in range(ptr[row], ptr[row + 1]):
                if transpose:
                    work[j] += weight * data[k] * x[index[k]]
                else:
                    work[index[k]] += weight * data[k] * x[j]
    total = 0.0
    for t in range(n):
        total += work[t] * work[t]
    return math.sqrt(total)


@numba.njit(cache=True, nogil=True)
def triangular_solve(
    ptr: NDArray[np.int64],
    index: NDArray[np.int64],
    data: NDArray[np.float64],
    order: NDArray[np.int64],
    starts: NDArray[np.int64],
    lower: NDArray[np.int64],
    upper: NDArray[np.int64],
    gamma: float,
    transpose: bool,
    rhs: NDArray[np.float64],
    policies: NDArray[np.float64],
    out: NDArray[np.float64],
    residuals: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """For each policy ``policies[b]`` (S, A): ``out[b]`` (by position) solving
    ``(I - gamma P_pi^T) x = rhs`` by block forward substitution over the components of a
    :class:`~policyagg.triangular.TriangularStructure` (its arrays; ``rhs`` by position), or with
    ``transpose`` ``(I - gamma P_pi) x = rhs`` by backward substitution (the bandwidths swap);
    ``residuals[b]`` is its true residual norm."""
    n_states = order.size
    n_components = starts.size - 1
    size = 0
    for c in range(n_components):
        size = max(size, (starts[c + 1] - starts[c]) * (lower[c] + upper[c] + 1))
    band = np.empty(size)
    work = np.empty(n_states)
    policy = np.empty((n_states, policies.shape[2]))  # by position: the passes below read it in order
    for b in range(policies.shape[0]):
        for i in range(n_states):
            policy[i] = policies[b, order[i]]
        x = out[b]
        for i in range(n_states):
            x[i] = rhs[i]
        for step in range(n_components):
            c = n_components - 1 - step if transpose else step
            start, stop = starts[c], starts[c + 1]
            below, above = (upper[c], lower[c]) if transpose else (lower[c], upper[c])
            if transpose:
                _couple(ptr, index, data, policy, gamma, start, stop, True, x)
            _assemble_band(ptr, index, data, policy, gamma, start, stop, below, below + above + 1, transpose, band)
            _band_solve(band, stop - start, below, above, x[start:stop])
            if not transpose:
                _couple(ptr, index, data, policy, gamma, start, stop, False, x)
        residuals[b] = _residual_norm(ptr, index, data, policy, gamma, transpose, rhs, x, work)


# ------------------------------------------------------------------ Kronecker sum and BiCGSTAB
@numba.njit(cache=True, nogil=True)
def column_dots(a: NDArray[np.float64], b: NDArray[np.float64], out: NDArray[np.float64]) -> None:  # pragma: no cover
    """``out[j] = sum_i a[i, j] b[i, j]`` for (S, B) blocks (in order of ``i``, per sample)."""
    n, n_block = a.shape
    for j in range(n_block):
        out[j] = 0.0
    for i in range(n):
        for j in range(n_block):
            out[j] += a[i, j] * b[i, j]


@numba.njit(cache=True, nogil=True)
def _bicgstab_direction(
    r: NDArray[np.float64],
    p: NDArray[np.float64],
    v: NDArray[np.float64],
    beta: NDArray[np.float64],
    omega: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """``p = r + beta (p - omega v)`` per sample (column)."""
    n, n_block = r.shape
    for i in range(n):
        for j in range(n_block):
            p[i, j] = r[i, j] + beta[j] * (p[i, j] - omega[j] * v[i, j])


@numba.njit(cache=True, nogil=True)
def _bicgstab_half(
    r: NDArray[np.float64], v: NDArray[np.float64], alpha: NDArray[np.float64], s: NDArray[np.float64]
) -> None:  # pragma: no cover - compiled
    """``s = r - alpha v`` per sample."""
    n, n_block = r.shape
    for i in range(n):
        for j in range(n_block):
            s[i, j] = r[i, j] - alpha[j] * v[i, j]


@numba.njit(cache=True, nogil=True)
def _omega_dots(
    t: NDArray[np.float64], s: NDArray[np.float64], ts: NDArray[np.float64], tt: NDArray[np.float64]
) -> None:  # pragma: no cover - compiled
    """``ts = <t, s>`` and ``tt = <t, t>`` per sample, in one pass."""
    n, n_block = t.shape
    for j in range(n_block):
        ts[j] = 0.0
        tt[j] = 0.0
    for i in range(n):
        for j in range(n_block):
            ts[j] += t[i, j] * s[i, j]
            tt[j] += t[i, j] * t[i, j]


@numba.njit(cache=True, nogil=True)
def _bicgstab_update(
    moving: NDArray[np.bool_],
    y: NDArray[np.float64],
    p: NDArray[np.float64],
    s: NDArray[np.float64],
    t: NDArray[np.float64],
    alpha: NDArray[np.float64],
    omega: NDArray[np.float64],
    r: NDArray[np.float64],
    r_hat: NDArray[np.float64],
    rho: NDArray[np.float64],
    norm2: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """``y += alpha p + omega s``, ``r = s - omega t``, ``rho = <r_hat, r>``, ``norm2 = <r, r>`` for the
    ``moving`` samples (the others keep ``y``, ``r``, ``rho`` and ``norm2``: their ``p``, ``s`` and ``t``
    may hold anything, even NaN)."""
    n, n_block = y.shape
    every = True
    for j in range(n_block):
        every = every and moving[j]
        if moving[j]:
            rho[j] = 0.0
            norm2[j] = 0.0
    if every:  # (no branch in the loop: it vectorises)
        for i in range(n):
            for j in range(n_block):
                y[i, j] += alpha[j] * p[i, j] + omega[j] * s[i, j]
                value = s[i, j] - omega[j] * t[i, j]
                r[i, j] = value
                rho[j] += r_hat[i, j] * value
                norm2[j] += value * value
        return
    for i in range(n):
        for j in range(n_block):
            if moving[j]:
                y[i, j] += alpha[j] * p[i, j] + omega[j] * s[i, j]
                value = s[i, j] - omega[j] * t[i, j]
                r[i, j] = value
                rho[j] += r_hat[i, j] * value
                norm2[j] += value * value


@numba.njit(cache=True, nogil=True)
def _component_flat(
    src: NDArray[np.float64], dst: NDArray[np.float64], outer: int, m: int, inner: int, matrix: NDArray[np.float64]
) -> None:  # pragma: no cover - compiled
    """``dst[o, p, r] = sum_q matrix[p, q] src[o, q, r]`` on flat arrays viewed (outer, m, inner).
    Each innermost loop writes one row and reads at most three: LLVM vectorises a loop only when it
    can rule out overlaps at run time with a few pointer comparisons (with three rows written and
    three read in one loop it ran scalar, 3-4x slower)."""
    for o in range(outer):
        base = o * m * inner
        for p in range(m):
            out = dst[base + p * inner : base + (p + 1) * inner]
            if m == 3:
                c0, c1, c2 = matrix[p, 0], matrix[p, 1], matrix[p, 2]
                s0, s1, s2 = (
                    src[base : base + inner],
                    src[base + inner : base + 2 * inner],
                    src[base + 2 * inner : base + 3 * inner],
                )
                for r in range(inner):
                    out[r] = c0 * s0[r] + c1 * s1[r] + c2 * s2[r]
            else:
                for r in range(inner):
                    out[r] = 0.0
                for q in range(m):
                    coefficient = matrix[p, q]
                    column = src[base + q * inner : base + (q + 1) * inner]
                    for r in range(inner):
                        out[r] += coefficient * column[r]


@numba.njit(cache=True, nogil=True)
def _weighted_component_flat(
    w: NDArray[np.float64],
    x: NDArray[np.float64],
    total: NDArray[np.float64],
    outer: int,
    m: int,
    inner: int,
    matrix: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """``total[o, p, r] += sum_q matrix[p, q] w[o, q, r] x[o, q, r]`` on flat arrays viewed (outer, m, inner)
    (one row written per innermost loop, as in :func:`_component_flat`)."""
    for o in range(outer):
        base = o * m * inner
        for p in range(m):
            out = total[base + p * inner : base + (p + 1) * inner]
            if m == 3:
                c0, c1, c2 = matrix[p, 0], matrix[p, 1], matrix[p, 2]
                w0, w1, w2 = (
                    w[base : base + inner],
                    w[base + inner : base + 2 * inner],
                    w[base + 2 * inner : base + 3 * inner],
                )
                x0, x1, x2 = (
                    x[base : base + inner],
                    x[base + inner : base + 2 * inner],
                    x[base + 2 * inner : base + 3 * inner],
                )
                for r in range(inner):
                    out[r] += c0 * (w0[r] * x0[r]) + c1 * (w1[r] * x1[r]) + c2 * (w2[r] * x2[r])
            else:
                for q in range(m):
                    coefficient = matrix[p, q]
                    wq = w[base + q * inner : base + (q + 1) * inner]
                    xq = x[base + q * inner : base + (q + 1) * inner]
                    for r in range(inner):
                        out[r] += coefficient * (wq[r] * xq[r])


@numba.njit(cache=True, nogil=True)
def kronecker_apply(
    weights: NDArray[np.float64],
    x: NDArray[np.float64],
    gamma: float,
    average: bool,
    structure: PackedStructure,
    out: NDArray[np.float64],
    work: NDArray[np.float64],
    scale: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """``out = A_pi x`` for a block by a Kronecker structure (``structure``:
    :attr:`policyagg.kronecker.KroneckerTransitions.packed`): ``A_pi x = x - gamma sum_a P_a^T (w_a x)``
    (the last row ``sum_s x[s]`` when ``average``), with ``sum_a P_a^T z_a = K sum_a (prod G_{a,i}) z_a``.
    ``weights`` (A, S, B), ``x`` and ``out`` (S, B); ``work`` (3, S * B) scratch. With a non-empty ``scale``
    (S, B) (an empty (0, 0) array: none), ``out = A_pi (scale x)`` for ``weights`` already multiplied by ``scale``:
    BiCGSTAB's preconditioned products without a scaled copy of ``x``. (A run-time choice, not a flag
    argument: numba would compile this function once per constant flag its callers pass.)"""
    outer, sizes, inner, base_t, corr_ptr, corr_component, corr_matrix = structure
    n_actions = weights.shape[0]
    n_states, n_block = x.shape
    size = n_states * n_block
    xf = x.reshape(size)
    total, spare, chain = work[0], work[1], work[2]
    top = sizes.size - 1
    for k in range(size):
        total[k] = 0.0
    # Actions that correct the slowest component (or several components) act on whole fibres of the
    # state space: one pass each over the block.
    for a in range(n_actions):
        wf = weights[a].reshape(size)
        count = corr_ptr[a + 1] - corr_ptr[a]
        if count == 1 and corr_component[corr_ptr[a]] == top:
            c = corr_ptr[a]
            m = sizes[top]
            _weighted_component_flat(wf, xf, total, outer[top], m, inner[top] * n_block, corr_matrix[c, :m, :m])
        elif count > 1:
            for k in range(size):
                chain[k] = wf[k] * xf[k]
            for c in range(corr_ptr[a], corr_ptr[a + 1]):
                i = corr_component[c]
                m = sizes[i]
                _component_flat(chain, spare, outer[i], m, inner[i] * n_block, corr_matrix[c, :m, :m])
                for k in range(size):
                    chain[k] = spare[k]
            for k in range(size):
                total[k] += chain[k]
    # The rest, and the base matrices of the faster components, one slice of the slowest component at a
    # time: a slice of the sum stays in cache while every action and component passes over it.
    m_top = sizes[top]
    width = size // m_top
    for d in range(m_top):
        lo, hi = d * width, (d + 1) * width
        part, xs = total[lo:hi], xf[lo:hi]
        for a in range(n_actions):
            count = corr_ptr[a + 1] - corr_ptr[a]
            ws = weights[a].reshape(size)[lo:hi]
            if count == 0:
                for k in range(width):
                    part[k] += ws[k] * xs[k]
            elif count == 1 and corr_component[corr_ptr[a]] != top:
                c = corr_ptr[a]
                i = corr_component[c]
                m = sizes[i]
                _weighted_component_flat(ws, xs, part, outer[i] // m_top, m, inner[i] * n_block, corr_matrix[c, :m, :m])
        source, target = part, spare[lo:hi]
        for i in range(top):
            m = sizes[i]
            _component_flat(source, target, outer[i] // m_top, m, inner[i] * n_block, base_t[i, :m, :m])
            source, target = target, source
    source, target = (total, spare) if top % 2 == 0 else (spare, total)
    _component_flat(source, target, outer[top], m_top, inner[top] * n_block, base_t[top, :m_top, :m_top])
    of = out.reshape(size)
    scaled = scale.size > 0
    if scaled:
        sf = scale.reshape(size)
        for k in range(size):
            of[k] = sf[k] * xf[k] - gamma * target[k]
    else:
        for k in range(size):
            of[k] = xf[k] - gamma * target[k]
    if average:
        last = out[n_states - 1]
        for b in range(n_block):
            last[b] = 0.0
        for s in range(n_states):
            for b in range(n_block):
                last[b] += scale[s, b] * x[s, b] if scaled else x[s, b]


@numba.njit(cache=True, nogil=True, error_model="numpy")  # (a division by zero is a breakdown: inf or NaN, caught)
def kronecker_bicgstab(
    weights: NDArray[np.float64],
    scale: NDArray[np.float64],
    rhs: NDArray[np.float64],
    gamma: float,
    average: bool,
    structure: PackedStructure,
    iterations: int,
    target: float,
    x: NDArray[np.float64],
    steps: NDArray[np.int64],
) -> None:  # pragma: no cover - compiled
    """BiCGSTAB for ``A_pi x = rhs`` per sample (column) of a block, right-preconditioned by ``diag(scale)``:
    ``x = x0 + scale y`` with ``y`` solving ``A_pi diag(scale) y = rhs - A_pi x0``; ``x`` (S, B) holds
    ``x0`` and is updated in place; products by :func:`kronecker_apply`. A sample stops when its
    recursive residual norm reaches ``target``, or the iteration breaks down; ``steps[b]`` counts its
    products (two per iteration). Every operation on a sample reads only that sample's column, in a
    fixed order, so its numbers do not depend on the other samples of the block."""
    n_actions = weights.shape[0]
    n_states, n_block = x.shape
    work = np.empty((3, n_states * n_block))
    r = np.empty((n_states, n_block))
    kronecker_apply(weights, x, gamma, average, structure, r, work, np.empty((0, 0)))
    for s in range(n_states):
        for b in range(n_block):
            r[s, b] = rhs[s] - r[s, b]
    scaled_weights = np.empty_like(weights)
    for a in range(n_actions):
        for s in range(n_states):
            for b in range(n_block):
                scaled_weights[a, s, b] = weights[a, s, b] * scale[s, b]
    r_hat = r.copy()
    y = np.zeros((n_states, n_block))
    p = np.zeros((n_states, n_block))
    v = np.zeros((n_states, n_block))
    t = np.empty((n_states, n_block))
    s_vec = np.empty((n_states, n_block))
    rho = np.zeros(n_block)
    norm2 = np.zeros(n_block)
    column_dots(r_hat, r, rho)
    column_dots(r, r, norm2)
    rho_old = np.ones(n_block)
    alpha = np.ones(n_block)
    omega = np.ones(n_block)
    beta = np.zeros(n_block)
    dots = np.zeros(n_block)
    squares = np.zeros(n_block)
    active = np.empty(n_block, dtype=np.bool_)
    broken = np.zeros(n_block, dtype=np.bool_)
    moving = np.zeros(n_block, dtype=np.bool_)
    for b in range(n_block):
        steps[b] = 0
        active[b] = math.sqrt(norm2[b]) > target
    for k in range(iterations):
        any_active = False
        for b in range(n_block):
            any_active = any_active or active[b]
        if not any_active:
            break
        for b in range(n_block):
            if not active[b]:
                beta[b] = 0.0
                omega[b] = 0.0
            elif k > 0:  # (beta = 0 at the start: p = r)
                beta[b] = rho[b] / rho_old[b] * (alpha[b] / omega[b])
        _bicgstab_direction(r, p, v, beta, omega)
        kronecker_apply(scaled_weights, p, gamma, average, structure, v, work, scale)
        column_dots(r_hat, v, dots)
        for b in range(n_block):
            alpha[b] = rho[b] / dots[b] if active[b] else 0.0
        _bicgstab_half(r, v, alpha, s_vec)
        kronecker_apply(scaled_weights, s_vec, gamma, average, structure, t, work, scale)
        _omega_dots(t, s_vec, dots, squares)
        for b in range(n_block):
            broken[b] = False
            moving[b] = False
            if not active[b]:
                omega[b] = 0.0
                continue
            omega[b] = dots[b] / squares[b]
            if not (math.isfinite(alpha[b]) and math.isfinite(omega[b]) and omega[b] != 0.0):
                broken[b] = True  # stop there, as it is: the true residual decides
                alpha[b] = 0.0
                omega[b] = 0.0
            else:
                moving[b] = True
            rho_old[b] = rho[b]
        _bicgstab_update(moving, y, p, s_vec, t, alpha, omega, r, r_hat, rho, norm2)
        for b in range(n_block):
            if active[b]:
                steps[b] += 2
                if broken[b] or not math.sqrt(norm2[b]) > target:
                    active[b] = False
    for s in range(n_states):
        for b in range(n_block):
            x[s, b] += scale[s, b] * y[s, b]
