"""The hot loops of the ``policy`` measure's GMRES compiled with numba (the optional ``fast`` extra).

:meth:`policyagg.sampling.PolicySampler.gmres` on a block of ``B`` samples spends its time in
three places per Arnoldi step: the product ``A_pi v`` (one pass over the non-zeros of ``P``),
the preconditioner (one dense product or incomplete-LU solve, already BLAS/SuperLU), and the
Gram-Schmidt and Givens updates (many small numpy calls). The first and the last are here,
with every array laid out ``(..., B)`` so that the innermost loop runs over the samples (SIMD,
no gathers, no Python between the pieces).

Each sample's numbers depend on its own data only (a sample that has converged stops changing
while the others go on), and without fastmath every operation runs in source order, so the
results are the same whichever worker solves a batch.

Imported lazily (compiling takes seconds the first time; numba caches the machine code).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import NDArray

_APPLY = [
    f"void({index}[::1], {index}[::1], float64[::1], int64, float64[:, ::1], float64[:, ::1], float64, boolean, "
    "float64[:, ::1])"
    for index in ("int32", "int64")
]


@numba.njit(_APPLY, cache=True, nogil=True)
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


_STEP = "void(int64, float64[:, :, ::1], float64[:, ::1], float64[:, :, ::1], float64[:, ::1], float64[:, ::1], float64[:, ::1], boolean[::1], int64[::1], float64)"


@numba.njit(_STEP, cache=True, nogil=True)
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


@numba.njit(
    "void(float64[:, :, ::1], float64[:, :, ::1], float64[:, ::1], int64[::1], float64[:, ::1])", cache=True, nogil=True
)
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


@numba.njit("void(float64[:, :, ::1], float64[:, ::1], float64[:, :, ::1])", cache=True, nogil=True)
def component_product(
    x: NDArray[np.float64], matrix: NDArray[np.float64], out: NDArray[np.float64]
) -> None:  # pragma: no cover - compiled
    """``out[o, p, r] = sum_q matrix[p, q] x[o, q, r]``: a small ``m x m`` matrix applied to
    the middle axis of ``x`` (outer, m, inner) (one component of a Kronecker-structured
    product, :meth:`policyagg.kronecker.KroneckerTransitions.transposed_sum`). Each output row
    is written in one pass for ``m <= 3`` (numpy's matmul makes ``m`` passes over short rows)."""
    outer, m, inner = x.shape
    for o in range(outer):
        for p in range(m):
            row = out[o, p]
            if m == 2:
                a, b = x[o, 0], x[o, 1]
                ca, cb = matrix[p, 0], matrix[p, 1]
                for r in range(inner):
                    row[r] = ca * a[r] + cb * b[r]
            elif m == 3:
                a, b, c = x[o, 0], x[o, 1], x[o, 2]
                ca, cb, cc = matrix[p, 0], matrix[p, 1], matrix[p, 2]
                for r in range(inner):
                    row[r] = ca * a[r] + cb * b[r] + cc * c[r]
            else:
                first = matrix[p, 0]
                source = x[o, 0]
                for r in range(inner):
                    row[r] = first * source[r]
                for q in range(1, m):
                    coefficient = matrix[p, q]
                    source = x[o, q]
                    for r in range(inner):
                        row[r] += coefficient * source[r]


# ------------------------------------------------------------------ block-triangular solve
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
def weighted_component_add(
    w: NDArray[np.float64], x: NDArray[np.float64], matrix: NDArray[np.float64], total: NDArray[np.float64]
) -> None:  # pragma: no cover - compiled
    """``total[o, p, r] += sum_q matrix[p, q] w[o, q, r] x[o, q, r]`` on (outer, m, inner) views: one
    action's weighted block with its one overridden component applied, added to the sum in one pass
    (:meth:`policyagg.kronecker.KroneckerTransitions.transposed_sum`)."""
    outer, m, inner = x.shape
    if m == 3:  # (one pass per block row: the attention model's sites)
        m00, m01, m02 = matrix[0, 0], matrix[0, 1], matrix[0, 2]
        m10, m11, m12 = matrix[1, 0], matrix[1, 1], matrix[1, 2]
        m20, m21, m22 = matrix[2, 0], matrix[2, 1], matrix[2, 2]
        for o in range(outer):
            w0, w1, w2, x0, x1, x2 = w[o, 0], w[o, 1], w[o, 2], x[o, 0], x[o, 1], x[o, 2]
            t0, t1, t2 = total[o, 0], total[o, 1], total[o, 2]
            for r in range(inner):
                a, b, c = w0[r] * x0[r], w1[r] * x1[r], w2[r] * x2[r]
                t0[r] += m00 * a + m01 * b + m02 * c
                t1[r] += m10 * a + m11 * b + m12 * c
                t2[r] += m20 * a + m21 * b + m22 * c
        return
    z = np.empty((m, inner))
    for o in range(outer):
        for q in range(m):
            wq, xq, zq = w[o, q], x[o, q], z[q]
            for r in range(inner):
                zq[r] = wq[r] * xq[r]
        for p in range(m):
            row = total[o, p]
            for q in range(m):
                coefficient = matrix[p, q]
                zq = z[q]
                for r in range(inner):
                    row[r] += coefficient * zq[r]


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
def bicgstab_direction(
    r: NDArray[np.float64],
    p: NDArray[np.float64],
    v: NDArray[np.float64],
    beta: NDArray[np.float64],
    omega: NDArray[np.float64],
    scale: NDArray[np.float64],
    p_hat: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """``p = r + beta (p - omega v)`` and ``p_hat = scale p`` per sample (columns)."""
    n, n_block = r.shape
    for i in range(n):
        for j in range(n_block):
            value = r[i, j] + beta[j] * (p[i, j] - omega[j] * v[i, j])
            p[i, j] = value
            p_hat[i, j] = scale[i, j] * value


@numba.njit(cache=True, nogil=True)
def bicgstab_half(
    r: NDArray[np.float64],
    v: NDArray[np.float64],
    alpha: NDArray[np.float64],
    scale: NDArray[np.float64],
    s: NDArray[np.float64],
    s_hat: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """``s = r - alpha v`` and ``s_hat = scale s`` per sample."""
    n, n_block = r.shape
    for i in range(n):
        for j in range(n_block):
            value = r[i, j] - alpha[j] * v[i, j]
            s[i, j] = value
            s_hat[i, j] = scale[i, j] * value


@numba.njit(cache=True, nogil=True)
def bicgstab_update(
    x: NDArray[np.float64],
    p_hat: NDArray[np.float64],
    s_hat: NDArray[np.float64],
    s: NDArray[np.float64],
    t: NDArray[np.float64],
    alpha: NDArray[np.float64],
    omega: NDArray[np.float64],
    r: NDArray[np.float64],
    r_hat: NDArray[np.float64],
    rho: NDArray[np.float64],
    norm2: NDArray[np.float64],
) -> None:  # pragma: no cover - compiled
    """``x += alpha p_hat + omega s_hat``, ``r = s - omega t``, ``rho = <r_hat, r>``, ``norm2 = <r, r>``
    per sample; a sample with ``alpha = omega = 0`` keeps its ``x`` and ``r`` (``r = s = r``)."""
    n, n_block = x.shape
    for j in range(n_block):
        rho[j] = 0.0
        norm2[j] = 0.0
    for i in range(n):
        for j in range(n_block):
            x[i, j] += alpha[j] * p_hat[i, j] + omega[j] * s_hat[i, j]
            value = s[i, j] - omega[j] * t[i, j]
            r[i, j] = value
            rho[j] += r_hat[i, j] * value
            norm2[j] += value * value
