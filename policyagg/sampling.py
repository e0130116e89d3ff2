"""The ``policy`` measure: random policies with Dirichlet action distributions per state.

Each sample draws ``pi(.|s) ~ Dirichlet(concentration)`` independently for every state,
solves for its exact occupancy and keeps only the returns ``J_i = <r_i, d_pi>``:

* discounted: ``(I - gamma P_pi^T) mu = (1 - gamma) rho``;
* average reward: ``(I - P_pi^T) mu = 0`` with one equation replaced by ``sum mu = 1``
  (unique because the MDP has one closed class, checked by ``TabularMDP``, and a random
  policy gives every action positive probability);

then ``J_i = sum_{s,a} mu(s) pi(a|s) r_i(s, a)``. Samples are processed in batches, so
memory is bounded whatever ``N`` is. Two exact solvers:

* ``"dense"``: the ``B`` systems are assembled densely from one sparse product and solved by
  one batched LAPACK call (``O(S^3)`` per sample);
* ``"krylov"``: batched GMRES, right-preconditioned by the exact inverse of the uniform
  policy's system (the mean of the Dirichlet), which needs only products with the sparse
  ``P`` and one matrix product with the preconditioner per iteration. Every sample's true
  residual is checked at the end; the rare ones above :data:`RESIDUAL_TOL` are re-solved
  densely, so both methods give the same numbers up to rounding.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from policyagg.errors import InvalidProblemError
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples

#: Bytes the per-batch work arrays may take (sets the default batch size).
BATCH_BYTES = 32 * 2**20
#: GMRES iterations before giving up on a sample (it is then solved densely).
KRYLOV_ITERATIONS = 40
#: Relative residual ``||c - A mu|| / ||c||`` a GMRES solution must reach.
RESIDUAL_TOL = 1e-12
#: Below this many states the dense solver is used: LAPACK is cheap there and a Krylov
#: space of dimension close to ``S`` would break down.
KRYLOV_MIN_STATES = 4 * KRYLOV_ITERATIONS
METHODS = ("auto", "dense", "krylov")


def default_batch_size(n_states: int, method: str = "dense") -> int:
    """Samples per batch so that a batch's work arrays fit in :data:`BATCH_BYTES`."""
    per_sample = 8 * n_states * (n_states if method == "dense" else 2 * KRYLOV_ITERATIONS + 4)
    return int(np.clip(BATCH_BYTES // per_sample, 1, 1024))


class PolicySampler:
    """Returns of random policies for one problem; reusable across calls.

    ``method`` is ``"dense"``, ``"krylov"`` or ``"auto"`` (Krylov from
    :data:`KRYLOV_MIN_STATES` states on, dense below).
    """

    def __init__(self, problem: Problem, *, concentration: float = 1.0, method: str = "auto"):
        if not (np.isfinite(concentration) and concentration > 0):
            raise InvalidProblemError(f"`concentration` must be a positive number; got {concentration}")
        if method not in METHODS:
            raise InvalidProblemError(f"`method` must be one of {', '.join(METHODS)}; got {method!r}")
        mdp = problem.mdp
        self.S, self.A = mdp.n_states, mdp.n_actions
        self.gamma = mdp.gamma
        self.concentration = float(concentration)
        self.reward_matrix = problem.reward_matrix  # (n, S*A)
        if self.gamma < 1.0:
            self.rhs = (1.0 - self.gamma) * mdp.rho
        else:
            self.rhs = np.zeros(self.S)
            self.rhs[-1] = 1.0
        if method == "auto":
            method = "krylov" if self.S >= KRYLOV_MIN_STATES else "dense"
        self.method = method
        # P_pi^T[s', s] = sum_a pi(a|s) P(s'|s, a): a fixed sparsity pattern, so a batch of
        # policies (B, S*A) maps to its non-zeros by one sparse product with `gather`.
        coo = mdp.P.tocoo()
        position = coo.col * self.S + coo.row // self.A  # flat index of (s', s)
        self.positions, slot = np.unique(position, return_inverse=True)
        self.gather = sp.csr_array((coo.data, (coo.row, slot)), shape=(self.S * self.A, self.positions.size))
        self.P_T = sp.csr_array(mdp.P.T)  # (S, S*A)
        if method == "krylov":
            uniform = np.full((1, self.S, self.A), 1.0 / self.A)
            self.preconditioner_T = np.linalg.inv(self.dense_systems(uniform)[0]).T.copy()

    def draw_policies(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` policies of shape (S, A), each row ~ Dirichlet(concentration)."""
        if self.concentration == 1.0:
            g = rng.standard_exponential((size, self.S, self.A))
        else:
            g = rng.standard_gamma(self.concentration, (size, self.S, self.A))
        g /= g.sum(axis=2, keepdims=True)
        return g

    # ------------------------------------------------------------------- systems
    def dense_systems(self, policies: np.ndarray) -> np.ndarray:
        """The matrices ``A_pi`` (B, S, S) with ``A_pi mu = rhs`` (see the module docstring)."""
        B, S = policies.shape[0], self.S
        systems = np.zeros((B, S * S))
        systems[:, self.positions] = policies.reshape(B, -1) @ self.gather  # P_pi^T
        systems = systems.reshape(B, S, S)
        systems *= -self.gamma
        systems[:, np.arange(S), np.arange(S)] += 1.0
        if self.gamma == 1.0:
            systems[:, -1, :] = 1.0
        return systems

    def apply(self, policies: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``A_pi x`` for a batch (B, S) without forming ``A_pi``: one sparse product with ``P^T``."""
        weighted = (policies * x[:, :, None]).reshape(len(x), -1)  # pi(a|s) x(s)
        y = x - self.gamma * (self.P_T @ weighted.T).T
        if self.gamma == 1.0:
            y[:, -1] = x.sum(axis=1)
        return y

    # ------------------------------------------------------------------- solvers
    def solve_dense(self, policies: np.ndarray) -> np.ndarray:
        rhs = np.broadcast_to(self.rhs, (len(policies), self.S))
        return np.linalg.solve(self.dense_systems(policies), rhs[..., None])[..., 0]

    def solve_krylov(self, policies: np.ndarray, iterations: int = KRYLOV_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
        """Batched right-preconditioned GMRES (Arnoldi with classical Gram-Schmidt done twice,
        Givens rotations); returns ``(mu, converged)``."""
        B, S, m = len(policies), self.S, iterations
        c = self.rhs
        c_norm = np.linalg.norm(c)
        x0 = np.broadcast_to(c @ self.preconditioner_T, (B, S))  # the uniform policy's solution
        r = c - self.apply(policies, x0)
        beta = np.linalg.norm(r, axis=1)
        V = np.empty((m + 1, B, S))
        Z = np.empty((m, B, S))
        R = np.zeros((B, m, m))  # the Hessenberg matrix, rotated to upper triangular
        rotations = np.empty((2, m, B))
        g = np.zeros((B, m + 1))
        g[:, 0] = beta
        with np.errstate(divide="ignore", invalid="ignore"):
            V[0] = r / beta[:, None]
            k = 0
            while k < m:
                Z[k] = V[k] @ self.preconditioner_T
                w = self.apply(policies, Z[k])
                h = np.zeros((B, k + 2))
                for _ in range(2):
                    coeff = np.einsum("jbs,bs->bj", V[: k + 1], w)
                    w -= np.einsum("bj,jbs->bs", coeff, V[: k + 1])
                    h[:, : k + 1] += coeff
                h[:, k + 1] = np.linalg.norm(w, axis=1)
                V[k + 1] = w / h[:, k + 1, None]
                for i in range(k):
                    cos, sin = rotations[:, i]
                    h[:, i], h[:, i + 1] = cos * h[:, i] + sin * h[:, i + 1], cos * h[:, i + 1] - sin * h[:, i]
                radius = np.hypot(h[:, k], h[:, k + 1])
                cos, sin = h[:, k] / radius, h[:, k + 1] / radius
                rotations[:, k] = cos, sin
                R[:, : k + 1, k] = h[:, : k + 1]
                R[:, k, k] = radius
                g[:, k + 1] = -sin * g[:, k]
                g[:, k] = cos * g[:, k]
                k += 1
                if np.all(np.abs(g[:, k]) <= 0.1 * RESIDUAL_TOL * c_norm):
                    break
            y = np.linalg.solve(R[:, :k, :k], g[:, :k, None])[..., 0]
            x = x0 + np.einsum("bj,jbs->bs", y, Z[:k])
            residual = np.linalg.norm(c - self.apply(policies, x), axis=1)
        return x, residual <= RESIDUAL_TOL * c_norm

    def state_occupancies(self, policies: np.ndarray) -> np.ndarray:
        """Exact normalised state occupancies ``mu_pi`` (B, S) of a batch of policies (B, S, A)."""
        if self.method == "dense":
            return self.solve_dense(policies)
        mu, converged = self.solve_krylov(policies)
        if not converged.all():
            mu[~converged] = self.solve_dense(policies[~converged])
        return mu

    def returns(self, policies: np.ndarray) -> np.ndarray:
        """Returns ``J`` (B, n) of a batch of policies (B, S, A)."""
        mu = self.state_occupancies(policies)
        d = (mu[:, :, None] * policies).reshape(len(policies), -1)
        return d @ self.reward_matrix.T


def sample_policy_returns(
    problem: Problem,
    n_samples: int,
    *,
    rng: np.random.Generator | int | None = None,
    concentration: float = 1.0,
    method: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> ReturnSamples:
    """Sample ``n_samples`` random policies (the ``policy`` measure) and return their returns.

    Parameters
    ----------
    problem : Problem
    n_samples : int
    rng : numpy Generator or seed
        Batch ``j`` draws from the ``j``-th child of ``rng.spawn``, so the numbers depend on
        the seed and ``batch_size`` only, never on ``workers``.
    concentration : float
        Dirichlet parameter of every state's action distribution (1 = uniform on the simplex).
    method : {"auto", "dense", "krylov"}
        How the occupancy systems are solved (see the module docstring); all are exact.
    batch_size : int, optional
        Samples per batch (default: :func:`default_batch_size`).
    workers : int, optional
        Threads solving batches in parallel (default: CPU count, at most 4).
    progress : bool, optional
        Show a tqdm bar (default: when more than 20 batches).
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise InvalidProblemError(f"`n_samples` must be a positive integer; got {n_samples!r}")
    rng = np.random.default_rng(rng)
    sampler = PolicySampler(problem, concentration=concentration, method=method)
    batch_size = default_batch_size(sampler.S, sampler.method) if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise InvalidProblemError(f"`batch_size` must be >= 1; got {batch_size}")
    workers = min(os.cpu_count() or 1, 4) if workers is None else int(workers)
    if workers < 1:
        raise InvalidProblemError(f"`workers` must be >= 1; got {workers}")
    n_batches = -(-n_samples // batch_size)
    children = rng.spawn(n_batches)
    out = np.empty((n_samples, problem.n_agents))

    def run(j: int) -> int:
        size = min(batch_size, n_samples - j * batch_size)
        policies = sampler.draw_policies(children[j], size)
        out[j * batch_size : j * batch_size + size] = sampler.returns(policies)
        return size

    show = n_batches > 20 if progress is None else progress
    start = time.perf_counter()
    # One BLAS thread per worker: the batched solves are parallel across batches instead.
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        with tqdm(total=n_samples, disable=not show, desc="sampling policies", unit="policy") as bar:
            for size in pool.map(run, range(n_batches)):
                bar.update(size)
    elapsed = time.perf_counter() - start
    info = {
        "n_samples": int(n_samples),
        "concentration": float(concentration),
        "batch_size": batch_size,
        "method": sampler.method,
        "seconds": elapsed,
        "gamma": problem.mdp.gamma,
    }
    return ReturnSamples(out, measure="policy", info=info)
