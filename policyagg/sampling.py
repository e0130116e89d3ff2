"""The ``policy`` measure: random policies with Dirichlet action distributions per state.

Each sample draws ``pi(.|s) ~ Dirichlet(concentration)`` independently for every state,
solves for its exact occupancy and keeps only the returns ``J_i = <r_i, d_pi>``:

* discounted: ``(I - gamma P_pi^T) mu = (1 - gamma) rho``;
* average reward: ``(I - P_pi^T) mu = 0`` with one equation replaced by ``sum mu = 1``
  (unique because the MDP has one closed class, checked by ``TabularMDP``, and a random
  policy gives every action positive probability);

then ``J_i = sum_{s,a} mu(s) pi(a|s) r_i(s, a)``. Samples are processed in batches: the
``B`` matrices ``P_pi`` come from one sparse-dense product with ``P`` and the systems are
solved with one batched LAPACK call, so memory stays at ``O(B S^2)`` whatever ``N`` is.
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

#: Bytes a batch of dense ``S x S`` systems may take (sets the default batch size).
BATCH_BYTES = 32 * 2**20


def default_batch_size(n_states: int) -> int:
    """Samples per batch so that ``B`` dense ``S x S`` float64 systems fit in :data:`BATCH_BYTES`."""
    return int(np.clip(BATCH_BYTES // (8 * n_states * n_states), 1, 1024))


class PolicySampler:
    """Returns of random policies for one problem; reusable across calls.

    The transition model is rearranged once so that the non-zeros of the transposed
    transition matrices ``P_pi^T`` of a batch of policies (B, S*A) are one sparse product.
    """

    def __init__(self, problem: Problem, *, concentration: float = 1.0):
        if not (np.isfinite(concentration) and concentration > 0):
            raise InvalidProblemError(f"`concentration` must be a positive number; got {concentration}")
        mdp = problem.mdp
        self.S, self.A = mdp.n_states, mdp.n_actions
        self.gamma = mdp.gamma
        self.rho = mdp.rho
        self.concentration = float(concentration)
        self.reward_matrix = problem.reward_matrix  # (n, S*A)
        # P_pi^T[s', s] = sum_a pi(a|s) P(s'|s, a): a fixed sparsity pattern, so a batch of
        # policies (B, S*A) maps to its non-zeros by one sparse product with `gather`.
        coo = mdp.P.tocoo()
        position = coo.col * self.S + coo.row // self.A  # flat index of (s', s)
        self.positions, slot = np.unique(position, return_inverse=True)
        self.gather = sp.csr_array((coo.data, (coo.row, slot)), shape=(self.S * self.A, self.positions.size))

    def draw_policies(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` policies of shape (S, A), each row ~ Dirichlet(concentration)."""
        if self.concentration == 1.0:
            g = rng.standard_exponential((size, self.S, self.A))
        else:
            g = rng.standard_gamma(self.concentration, (size, self.S, self.A))
        g /= g.sum(axis=2, keepdims=True)
        return g

    def state_occupancies(self, policies: np.ndarray) -> np.ndarray:
        """Exact normalised state occupancies ``mu_pi`` (B, S) of a batch of policies (B, S, A)."""
        B, S = policies.shape[0], self.S
        flat = policies.reshape(B, S * self.A)
        systems = np.zeros((B, S * S))
        systems[:, self.positions] = flat @ self.gather  # P_pi^T, one per sample
        systems = systems.reshape(B, S, S)
        if self.gamma < 1.0:
            systems *= -self.gamma
            rhs = np.broadcast_to((1.0 - self.gamma) * self.rho, (B, S))
        else:
            systems *= -1.0
            rhs = np.zeros((B, S))
            rhs[:, -1] = 1.0
        systems[:, np.arange(S), np.arange(S)] += 1.0
        if self.gamma == 1.0:
            systems[:, -1, :] = 1.0
        return np.linalg.solve(systems, rhs[..., None])[..., 0]

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
    sampler = PolicySampler(problem, concentration=concentration)
    batch_size = default_batch_size(sampler.S) if batch_size is None else int(batch_size)
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
        "seconds": elapsed,
        "gamma": problem.mdp.gamma,
    }
    return ReturnSamples(out, measure="policy", info=info)
