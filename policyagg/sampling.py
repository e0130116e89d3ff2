"""The ``policy`` measure: random policies with Dirichlet action distributions per state.

Each sample draws ``pi(.|s) ~ Dirichlet(concentration)`` independently for every state,
solves for its exact occupancy and keeps only the returns ``J_i = <r_i, d_pi>``:

* discounted: ``(I - gamma P_pi^T) mu = (1 - gamma) rho``;
* average reward: ``(I - P_pi^T) mu = 0`` with the last equation replaced by ``sum mu = 1``
  (unique because the MDP has one closed class, checked by ``TabularMDP``, and a random
  policy gives every action positive probability);

then ``J_i = sum_{s,a} mu(s) pi(a|s) r_i(s, a)``. Samples are processed in batches whose
work arrays fit in :data:`BATCH_BYTES`, so memory is bounded whatever ``N`` is. Methods:

* ``"dense"``: the ``B`` systems are assembled densely and solved by one batched LAPACK call
  (``O(S^3)`` per sample);
* ``"krylov"``: GMRES on a block of ``B`` samples at once, right-preconditioned by the
  exact dense inverse of the uniform policy's system ``M`` (the Dirichlet mean) followed by
  a per-sample diagonal that corrects each state's escape rate (:meth:`PolicySampler.column_scale`),
  so a step costs one sparse product with ``P`` (all samples together) and one ``S x S``
  GEMM;
* ``"sparse"``: the same GMRES with an incomplete LU factorisation of the sparse ``M``
  (``scipy.sparse.linalg.spilu``) as the preconditioner, so an iteration costs
  ``O(nnz(P) + nnz(L + U))`` per sample and nothing ``S x S`` is ever formed;
* ``"kronecker"`` (MDPs with a :class:`~policyagg.kronecker.KroneckerTransitions` structure): the
  same GMRES with the diagonal correction only (``M = I``) and every product by the structure's
  component matrices, ``O(S sum_i m_i)`` per sample instead of ``O(nnz(P))``. With the numba
  kernel its first cycle is BiCGSTAB (:data:`SOLVERS`, :meth:`PolicySampler.bicgstab_compiled`):
  two products per iteration and no Krylov basis, whose Gram-Schmidt is most of GMRES's cost once
  the basis outgrows the cache.
* ``"triangular"`` (``gamma < 1``): no iterations. Ordered by the strongly connected components of
  the MDP's graph, every policy's system is block lower triangular
  (:mod:`policyagg.triangular`) and is solved exactly by block forward substitution, each
  component's banded system by elimination (compiled; with ``kernel="numpy"``, a dense LAPACK
  solve per component). It pays off where the components are small: MDPs whose state records
  something that never comes back (MO-Gymnasium's four-room: 4,097 components of at most 151
  of its 593,921 states, where GMRES does not converge in ``KRYLOV_CYCLES`` cycles).

The sparse product, Gram-Schmidt and the Givens updates run compiled with numba when it is
installed (:mod:`policyagg.sampling_kernel`, ``kernel="auto"``), else as numpy calls.

GMRES runs ``KRYLOV_ITERATIONS`` Arnoldi steps per cycle (classical Gram-Schmidt; the
residual estimate by Givens rotations kept as one orthogonal matrix per sample). Every
sample's *true* residual ``||c - A_pi mu|| / ||c||`` is then checked against
:data:`RESIDUAL_TOL`; samples above it get up to ``KRYLOV_CYCLES - 1`` restarted cycles and
are finally solved directly (dense LAPACK up to :data:`DENSE_DIRECT_MAX_STATES` states, a
sparse LU of their own system above), so every method returns the exact occupancies up to
rounding (the triangular method's residuals are checked the same way). ``"auto"`` picks dense
below :data:`KRYLOV_MIN_STATES` states; above, triangular where ``gamma < 1`` and its
eliminations cost at most what one GMRES cycle does (:func:`policyagg.triangular.pays`), then kronecker
from :data:`KRONECKER_MIN_STATES` on where the MDP has the structure, else krylov below
:data:`SPARSE_MIN_STATES` and sparse from there on.

Batches run on forked worker processes (:func:`policyagg.parallel.run_tasks`); batch ``j``
draws from the ``j``-th child of ``rng.spawn`` and is solved by the same operations (one
BLAS thread) whichever worker runs it, so the numbers depend on the seed and
``batch_size`` only, never on ``workers`` (bitwise).
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import NDArray
from tqdm.auto import tqdm

from policyagg import triangular
from policyagg.errors import InvalidMDPError, InvalidProblemError, check_count, check_real
from policyagg.parallel import Executor, resolve_executor, shared_empty
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples
from policyagg.triangular import TriangularStructure

if TYPE_CHECKING:
    from policyagg.mdp import TabularMDP

#: Bytes the per-batch work arrays may take (sets the default batch size).
BATCH_BYTES = 32 * 2**20
#: Most samples per GMRES batch (larger blocks stop paying off once the Python overhead
#: per step is amortised and the Krylov basis falls out of cache).
MAX_BATCH = 128
#: Samples x states of work per parallel task (sets how many batches one task runs).
TASK_WORK = 2**19
#: Arnoldi steps per GMRES cycle.
KRYLOV_ITERATIONS = 40
#: GMRES cycles (the first plus restarts) before a sample is solved directly.
KRYLOV_CYCLES = 3
#: Relative residual ``||c - A_pi mu|| / ||c||`` every GMRES solution must reach.
RESIDUAL_TOL = 1e-12
#: Below this many states the dense solver is used: LAPACK is cheap there and a Krylov
#: space of dimension close to ``S`` would break down.
KRYLOV_MIN_STATES = 4 * KRYLOV_ITERATIONS
#: From this many states on the sparse (ILU) preconditioner replaces the dense inverse,
#: which costs ``2 S^2`` flops per sample and step and ``8 S^2`` bytes (measured at 729
#: states: dense inverse 1.3 ms, ILU 1.7 ms of CPU per sample).
SPARSE_MIN_STATES = 1000
#: Incomplete LU of the uniform policy's system: drop tolerance and fill limit. Measured on
#: the attention model (3..8 sites) GMRES needs about as many steps as with the exact
#: inverse, with ``nnz(L + U)`` about ``nnz(P)``.
ILU_DROP_TOL = 1e-2
ILU_FILL_FACTOR = 2.0
#: Direct fallback: dense LAPACK up to this many states, a sparse LU per sample above.
DENSE_DIRECT_MAX_STATES = 1500
#: The ``kronecker`` method (MDPs with :attr:`~policyagg.mdp.TabularMDP.kronecker` structure):
#: Arnoldi steps per cycle (it has no preconditioner but the diagonal, so it takes more steps),
#: and the fewest states at which ``"auto"`` picks it.
KRONECKER_ITERATIONS = 60
#: Bytes a kronecker batch's work arrays may take: more than :data:`BATCH_BYTES`, since its blocks
#: need enough samples for the products to run at speed and it keeps no preconditioner
#: (nor the dense method's pattern): its peak memory stays below the sparse method's.
KRONECKER_BATCH_BYTES = 4 * BATCH_BYTES
#: The kronecker method takes its final residuals with the structure instead of the sparse ``P``
#: when ``gamma * gap``, with ``gap`` the largest L1 norm of a row of their difference (measured
#: once, exactly), is at most this share of the residual tolerance ``RESIDUAL_TOL ||rhs||``: the
#: residual with ``P`` is within ``gamma * gap * ||x||_1`` of it, which is added to it.
STRUCTURE_GAP_SHARE = 1e-2
#: (GMRES, numpy or numba: at 243 states 1.2x slower than krylov, at 729 states 1.4x faster.) With the
#: numba kernel, ``"auto"`` picks it from :data:`KRYLOV_MIN_STATES` on: its BiCGSTAB measured 1.9x
#: krylov's policies per second at 243 states (1 and 2 workers), and 1.9x Kronecker GMRES at 8 sites.
KRONECKER_MIN_STATES = 500
METHODS = ("auto", "dense", "krylov", "sparse", "kronecker", "triangular")
#: The Krylov solver of the GMRES methods' first cycle: ``"gmres"``, or ``"bicgstab"`` (the kronecker
#: method with the numba kernel only: it has no preconditioner but the diagonal, so GMRES's
#: Gram-Schmidt against a basis that outgrows the cache is most of its cost; ``bench growth`` at 8
#: sites: 9.8 ms per sample with GMRES, 5.2 ms with BiCGSTAB); ``"auto"`` picks BiCGSTAB where it can.
#: Restarted cycles always run GMRES, then a direct solve, as before.
SOLVERS = ("auto", "gmres", "bicgstab")
#: BiCGSTAB solves a batch in blocks of about this many states x samples (at least 8 samples, at most
#: :data:`MAX_BATCH`), whose work arrays stay in cache; CPU per sample by block size (measured before
#: the product's loops vectorised), best in bold:
#: 243 states: 64 119 us, **128 109**; 729: 16 519, **32 391**, 64 392, 128 464; 2,187: 8 1,982,
#: **16 1,709**, 32 1,884; 6,561: 4 5,315, **8 4,570-4,880**, 16 5,722. The split is fixed by the
#: batch, so results still depend on the seed and the batch size only.
BICGSTAB_BLOCK_ENTRIES = 2**15
#: How the GMRES of the krylov and sparse methods runs: ``"numba"`` compiles its sparse
#: product, Gram-Schmidt and Givens updates (:mod:`policyagg.sampling_kernel`, the ``fast``
#: extra), ``"numpy"`` runs them as numpy calls; ``"auto"`` uses numba when it is installed.
#: The triangular method: ``"numba"`` eliminates each component's band compiled, ``"numpy"`` solves
#: it densely by LAPACK. Both give the exact occupancies (the same residual check); they agree to rounding.
KERNELS = ("auto", "numba", "numpy")


def resolve_method(
    method: str, n_states: int, factored: bool = False, triangular: bool = False, compiled: bool = False
) -> str:
    """The concrete method ``"auto"`` stands for at ``n_states`` states (``factored``: the MDP
    has a Kronecker structure; ``triangular``: the triangular method pays, :func:`policyagg.triangular.pays`;
    ``compiled``: the numba kernel will run, so the kronecker method's BiCGSTAB is compiled and pays
    from :data:`KRYLOV_MIN_STATES` states, not only from :data:`KRONECKER_MIN_STATES`)."""
    if method not in METHODS:
        raise InvalidProblemError(f"`method` must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "kronecker" and not factored:
        raise InvalidProblemError(
            "method='kronecker' needs an MDP with a Kronecker structure (TabularMDP(..., kronecker=...), "
            "e.g. the attention model's); use another method"
        )
    if method != "auto":
        return method
    if n_states < KRYLOV_MIN_STATES:
        return "dense"
    if triangular:
        return "triangular"
    if factored and (compiled or n_states >= KRONECKER_MIN_STATES):
        return "kronecker"
    return "krylov" if n_states < SPARSE_MIN_STATES else "sparse"


def resolve_kernel(kernel: str, method: str) -> str:
    """The concrete kernel ``"auto"`` stands for (numpy for the dense method, which has no GMRES)."""
    if kernel not in KERNELS:
        raise InvalidProblemError(f"`kernel` must be one of {', '.join(KERNELS)}; got {kernel!r}")
    if method == "dense":
        return "numpy"
    if kernel == "auto":
        return "numba" if importlib.util.find_spec("numba") is not None else "numpy"
    if kernel == "numba" and importlib.util.find_spec("numba") is None:
        raise InvalidProblemError(
            "kernel='numba' needs numba; install it with `pip install 'policyagg[fast]'`, or use kernel='numpy'"
        )
    return kernel


def resolve_solver(solver: str, method: str, kernel: str) -> str:
    """The concrete first-cycle solver ``"auto"`` stands for (:data:`SOLVERS`) with ``method`` and ``kernel``
    (both concrete): BiCGSTAB for the kronecker method with the numba kernel, GMRES otherwise."""
    if solver not in SOLVERS:
        raise InvalidProblemError(f"`solver` must be one of {', '.join(SOLVERS)}; got {solver!r}")
    available = method == "kronecker" and kernel == "numba"
    if solver == "bicgstab" and not available:
        raise InvalidProblemError(
            "solver='bicgstab' needs method='kronecker' (an MDP with a Kronecker structure) and the numba "
            "kernel (`pip install 'policyagg[fast]'`); "
            f"got method={method!r}, kernel={kernel!r}: use solver='gmres' or 'auto'"
        )
    if solver == "auto":
        return "bicgstab" if available else "gmres"
    return solver


def escape_ratio(numerator: NDArray[np.float64], escape: NDArray[np.float64]) -> NDArray[np.float64]:
    """``numerator / escape`` (broadcast) where both exceed 1e-8, else 1: :meth:`PolicySampler.column_scale`
    from escape rates already computed."""
    ratio: NDArray[np.float64] = np.divide(
        numerator, escape, out=np.ones(np.broadcast_shapes(np.shape(numerator), escape.shape)),
        where=(escape > 1e-8) & (numerator > 1e-8),
    )  # fmt: skip  # (numpy types ufuncs with `out` as Any)
    return ratio


def default_batch_size(n_states: int, method: str = "dense", n_actions: int = 1) -> int:
    """Samples per batch so that a batch's work arrays fit in :data:`BATCH_BYTES`."""
    if method == "dense":  # (unchanged since the first release, so small problems keep their samples)
        return int(np.clip(BATCH_BYTES // (8 * n_states * n_states), 1, 1024))
    if method == "triangular":  # policies as drawn, their occupancies d, and mu
        return int(np.clip(BATCH_BYTES // (8 * n_states * (2 * n_actions + 2)), 1, MAX_BATCH))
    iterations = KRONECKER_ITERATIONS if method == "kronecker" else KRYLOV_ITERATIONS
    per_sample = 8 * n_states * (iterations + 6 + 3 * n_actions)  # Krylov basis, policies, weighted copy
    budget = KRONECKER_BATCH_BYTES if method == "kronecker" else BATCH_BYTES
    return int(np.clip(budget // per_sample, 1, MAX_BATCH))


class PolicySampler:
    """Returns of random policies for one problem; reusable across calls.

    ``method`` is one of :data:`METHODS` (see the module docstring), ``kernel`` one of :data:`KERNELS`.
    """

    def __init__(
        self,
        problem: Problem,
        *,
        concentration: float = 1.0,
        method: str = "auto",
        kernel: str = "auto",
        solver: str = "auto",
    ):
        if not (np.isfinite(check_real("concentration", concentration)) and concentration > 0):
            raise InvalidProblemError(f"`concentration` must be a positive number; got {concentration}")
        mdp = problem.mdp
        if mdp.gamma == 1.0 and len(mdp.structure.closed_classes) > 1:
            raise InvalidProblemError(
                f"the policy measure needs each random policy's stationary distribution, but with `gamma` = 1 "
                f"this MDP has {len(mdp.structure.closed_classes)} closed classes of states, so no policy has a "
                "unique one; use `gamma` < 1, keep one closed class, or use the `optimal-mixture` measure"
            )
        self.S, self.A = mdp.n_states, mdp.n_actions
        self.blocks = self._triangular_structure(mdp, method)
        compiled = kernel != "numpy" and solver != "gmres" and importlib.util.find_spec("numba") is not None
        factored, triangular = mdp.kronecker is not None, self.blocks is not None
        self.method = resolve_method(method, self.S, factored, triangular, compiled)
        #: The method whose default batch size sets the draws: the one ``"auto"`` picks without numba, so
        #: a seed draws the same policies whether or not numba is installed (it only moves ``"auto"``
        #: to the kronecker method below :data:`KRONECKER_MIN_STATES`).
        self.draw_method = resolve_method(method, self.S, factored, triangular) if method == "auto" else self.method
        self.iterations = KRONECKER_ITERATIONS if self.method == "kronecker" else KRYLOV_ITERATIONS
        self.kronecker = mdp.kronecker if self.method == "kronecker" else None
        if self.kronecker is not None:
            try:
                self.kronecker.check_transposed_sum()
            except InvalidMDPError as error:
                raise InvalidProblemError(f"method='kronecker' is not available here: {error}") from None
        self.kernel = resolve_kernel(kernel, self.method)
        self.solver = resolve_solver(solver, self.method, self.kernel)
        self.gamma = mdp.gamma
        self.concentration = float(concentration)
        self.reward_matrix = problem.reward_matrix  # (n, S*A)
        if self.gamma < 1.0:
            self.rhs = (1.0 - self.gamma) * mdp.rho
        else:
            self.rhs = np.zeros(self.S)
            self.rhs[-1] = 1.0
        P = sp.csr_array(mdp.P)  # (S*A, S)
        # P^T in CSC form (the same arrays as P in CSR): its product with an (S*A, B) block
        # scatters into the small (S, B) result instead of gathering rows of the large block.
        self.P_T = sp.csc_array((P.data, P.indices, P.indptr), shape=(self.S, self.S * self.A))
        coo = P.tocoo()
        self._inverse_T: NDArray[np.float64] | None = None  # method "krylov": M^{-T}
        self._ilu: spla.SuperLU | None = None  # method "sparse": incomplete LU of M
        if self.method in ("krylov", "sparse", "kronecker"):
            uniform = np.full((self.S, self.A), 1.0 / self.A)
            if self.method == "krylov":
                self._inverse_T = np.ascontiguousarray(np.linalg.inv(self.dense_systems(uniform[None])[0]).T)
            elif self.method == "sparse":
                self._ilu = self._uniform_ilu()
            self._self_loops = np.zeros((self.S, self.A))  # P(s|s, a)
            loop = coo.col == coo.row // self.A
            np.add.at(self._self_loops.reshape(-1), coo.row[loop], coo.data[loop])
            # the start x0 = x_u * u / e_pi (u, e_pi: the uniform policy's and pi's escape rates) ...
            self._start_escape = 1.0 - self.gamma * self._self_loops.mean(axis=1)
            # ... and the right preconditioner diag(u / e_pi) M^{-1} (kronecker: M = I, u = 1)
            self._uniform_escape = np.ones(self.S) if self.kronecker is not None else self._start_escape
            if self.kronecker is None:
                self._x_uniform = self.precondition(self.rhs[None])[0]  # ~ the uniform policy's solution
            else:
                self._structure_gap = mdp.kronecker_gap
                tolerance = RESIDUAL_TOL * float(np.linalg.norm(self.rhs))
                self._structure_residuals = self.gamma * self._structure_gap <= STRUCTURE_GAP_SHARE * tolerance
                self._x_uniform = self._uniform_solution()

    def _triangular_structure(self, mdp: TabularMDP, method: str) -> TriangularStructure | None:
        """The block-triangular structure for ``method="triangular"``, or for ``"auto"`` where it
        pays (``gamma < 1``, at least :data:`KRYLOV_MIN_STATES` states, :func:`policyagg.triangular.pays`)."""
        if method == "triangular" and mdp.gamma == 1.0:
            raise InvalidProblemError(
                "method='triangular' needs `gamma` < 1 (with average reward the flow system is not block "
                "triangular); use another method"
            )
        if method == "triangular":
            return mdp.triangular_structure
        if not (method == "auto" and mdp.gamma < 1.0 and self.S >= KRYLOV_MIN_STATES):
            return None
        from policyagg.mdp import TRIANGULAR_MIN_STATES

        if self.S >= TRIANGULAR_MIN_STATES:  # the MDP's own decision, kept with it
            return mdp.triangular
        return TriangularStructure.if_it_pays(mdp.P, mdp.n_actions)

    @cached_property
    def _dense_pattern(self) -> tuple[NDArray[np.int64], sp.csr_array]:
        """For :meth:`dense_systems`: ``P_pi^T[s', s] = sum_a pi(a|s) P(s'|s, a)`` has a fixed
        sparsity pattern, so a batch of policies (B, S*A) maps to its non-zeros (flat positions)
        by one product with the second matrix."""
        coo = sp.csr_array(self.P_T.T).tocoo()  # P
        position = coo.col * self.S + coo.row // self.A  # flat index of (s', s)
        positions, slot = np.unique(position, return_inverse=True)
        return positions, sp.csr_array((coo.data, (coo.row, slot)), shape=(self.S * self.A, positions.size))

    @cached_property
    def _p_csr(self) -> tuple[NDArray[np.integer], NDArray[np.integer], NDArray[np.float64]]:
        """For the compiled kernel: ``P`` in CSR (row ``s A + a``; its own arrays, 32-bit indices where they fit)."""
        P = sp.csr_array(self.P_T.T)  # (the arrays of the MDP's P)
        index = np.int32 if P.nnz < 2**31 else np.int64
        return P.indptr.astype(index, copy=False), P.indices.astype(index, copy=False), P.data.astype(float, copy=False)

    def _uniform_solution(self) -> NDArray[np.float64]:
        """The uniform policy's exact occupancy ``M^{-1} rhs`` (the kronecker method's start): by a
        dense solve up to :data:`DENSE_DIRECT_MAX_STATES` states (which keeps numba, and its hundred
        megabytes, out of the process that makes the sampler: reproduce --full peaked 510 MB with it,
        not 404), else by restarted GMRES from ``rhs``, or directly if that fails."""
        block = np.full((self.S, self.A, 1), 1.0 / self.A)
        if self.S <= DENSE_DIRECT_MAX_STATES:
            return np.asarray(self.solve_dense(np.moveaxis(block, 2, 0))[0])
        x = self.rhs[None].copy()
        for _ in range(4 * KRYLOV_CYCLES):
            x, converged, _ = self.gmres_cycle(block, x)
            if converged.all():
                return np.asarray(x[0])
        return np.asarray(self.solve_direct(np.moveaxis(block, 2, 0))[0])

    def _uniform_ilu(self) -> spla.SuperLU:
        """Incomplete LU of the uniform policy's system ``M`` (deterministic: the same factors each time)."""
        uniform = np.full((self.S, self.A), 1.0 / self.A)
        ilu: spla.SuperLU = spla.spilu(self.sparse_system(uniform), drop_tol=ILU_DROP_TOL, fill_factor=ILU_FILL_FACTOR)
        return ilu

    def __getstate__(self) -> dict[str, object]:
        """For other processes (a Ray executor): SciPy's ``SuperLU`` cannot be pickled, so the
        incomplete LU is left out and rebuilt by :meth:`__setstate__`."""
        state = self.__dict__.copy()
        state["_ilu"] = None
        state["_rebuild_ilu"] = self._ilu is not None
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        rebuild = bool(state.pop("_rebuild_ilu", False))
        self.__dict__.update(state)
        if rebuild:
            self._ilu = self._uniform_ilu()

    def draw_policies(self, rng: np.random.Generator, size: int) -> NDArray[np.float64]:
        """``size`` policies of shape (S, A), each row ~ Dirichlet(concentration)."""
        if self.concentration == 1.0:
            g = rng.standard_exponential((size, self.S, self.A))
        else:
            g = rng.standard_gamma(self.concentration, (size, self.S, self.A))
        if self.A < 8:  # numpy sums fewer than 8 contiguous terms in order: the same bits, 3x faster
            total = g[:, :, 0].copy()
            for a in range(1, self.A):
                total += g[:, :, a]
        else:
            total = g.sum(axis=2)
        g /= total[:, :, None]
        return g

    # ------------------------------------------------------------------- systems
    def dense_systems(self, policies: NDArray[np.float64]) -> NDArray[np.float64]:
        """The matrices ``A_pi`` (B, S, S) with ``A_pi mu = rhs`` (see the module docstring)."""
        B, S = policies.shape[0], self.S
        flat = np.zeros((B, S * S))
        positions, gather = self._dense_pattern
        flat[:, positions] = policies.reshape(B, -1) @ gather  # P_pi^T
        systems = flat.reshape(B, S, S)
        systems *= -self.gamma
        systems[:, np.arange(S), np.arange(S)] += 1.0
        if self.gamma == 1.0:
            systems[:, -1, :] = 1.0
        return systems

    def sparse_system(self, policy: NDArray[np.float64]) -> sp.csc_array:
        """``A_pi`` of one policy (S, A) as a sparse matrix."""
        S, A = self.S, self.A
        spread = sp.csr_array((np.ravel(policy), (np.arange(S * A), np.repeat(np.arange(S), A))), shape=(S * A, S))
        system = sp.csr_array(sp.eye_array(S) - self.gamma * (self.P_T @ spread))
        if self.gamma == 1.0:
            system = sp.vstack([system[: S - 1], np.ones((1, S))])
        return sp.csc_array(system)

    def apply(self, policies: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
        """``A_pi x`` for a block of samples: policies (S, A, B), ``x`` (B, S); one sparse
        product ``P^T (pi(a|s) x(s))`` without forming any ``A_pi``."""
        S, A, B = policies.shape
        y = self.P_T @ (policies * x.T[:, None, :]).reshape(S * A, B)  # (S, B)
        out: NDArray[np.float64] = x - self.gamma * y.T  # scipy is untyped: Any
        if self.gamma == 1.0:
            out[:, -1] = x.sum(axis=1)
        return out

    def apply_columns(self, by_action: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
        """``A_pi x`` for a block laid out by columns, ``x`` (S, B), policies ``by_action`` (A, S, B),
        by the Kronecker structure (the kronecker method's Arnoldi steps; the final residuals, which
        decide convergence, are taken with the sparse ``P``, or with the structure plus a bound on
        its difference from ``P``: :data:`STRUCTURE_GAP_SHARE`)."""
        if self.kronecker is None:
            raise RuntimeError("apply_columns needs the kronecker method")
        if self.kernel == "numba":
            from policyagg.sampling_kernel import kronecker_apply

            S, B = x.shape
            compiled = np.empty((S, B))
            kronecker_apply(
                np.ascontiguousarray(by_action), np.ascontiguousarray(x), self.gamma, self.gamma == 1.0,
                self.kronecker.packed, compiled, np.empty((3, S * B)), np.empty((0, 0)),
            )  # fmt: skip
            return compiled
        product = self.kronecker.transposed_sum(by_action, x)
        out: NDArray[np.float64] = x - self.gamma * product
        if self.gamma == 1.0:
            out[-1] = x.sum(axis=0)
        return out

    def column_scale(
        self, policies: NDArray[np.float64], reference: NDArray[np.float64] | None = None
    ) -> NDArray[np.float64]:
        """``(1 - gamma P_u(s|s)) / (1 - gamma P_pi(s|s))`` (B, S): ``A_pi ~ M D_pi`` with ``D_pi``
        the inverse of this scale, since column ``s`` of ``A_pi`` depends on ``pi(.|s)`` only
        and its diagonal entry is the escape rate from ``s``. ``reference`` replaces the uniform
        policy's escape rates (default: the preconditioner's, all ones for the kronecker method)."""
        numerator = self._uniform_escape if reference is None else reference
        escape: NDArray[np.float64] = 1.0 - self.gamma * np.einsum("sab,sa->bs", policies, self._self_loops)
        return escape_ratio(numerator, escape)

    def precondition(self, v: NDArray[np.float64]) -> NDArray[np.float64]:
        """``M^{-1} v`` for a block ``v`` (B, S): the exact inverse or the incomplete LU (the
        kronecker method: none, ``M = I``)."""
        if self.kronecker is not None:
            return v
        if self._inverse_T is not None:
            return v @ self._inverse_T
        if self._ilu is None:
            raise RuntimeError(f"PolicySampler with method {self.method!r} has no preconditioner")
        preconditioned: NDArray[np.float64] = self._ilu.solve(v.T).T  # scipy is untyped: Any
        return preconditioned

    def precondition_columns(self, v: NDArray[np.float64]) -> NDArray[np.float64]:
        """``M^{-1} v`` for a block laid out by columns, ``v`` (S, B)."""
        if self.kronecker is not None:
            return v
        if self._inverse_T is not None:
            return np.ascontiguousarray(self._inverse_T.T @ v)
        if self._ilu is None:
            raise RuntimeError(f"PolicySampler with method {self.method!r} has no preconditioner")
        return np.ascontiguousarray(self._ilu.solve(v))

    # ------------------------------------------------------------------- solvers
    def solve_dense(self, policies: NDArray[np.float64]) -> NDArray[np.float64]:
        """Occupancies (B, S) of policies (B, S, A) by one batched LAPACK solve."""
        rhs = np.broadcast_to(self.rhs, (len(policies), self.S))
        solution = np.linalg.solve(self.dense_systems(policies), rhs[..., None])
        mu: NDArray[np.float64] = solution[..., 0]  # type: ignore[assignment]  # numpy stubs: solve gives floating[Any]
        return mu

    def solve_direct(self, policies: NDArray[np.float64]) -> NDArray[np.float64]:
        """Occupancies (B, S) by a direct solve: dense LAPACK or, above
        :data:`DENSE_DIRECT_MAX_STATES` states, a sparse LU per policy."""
        if self.S <= DENSE_DIRECT_MAX_STATES:
            return self.solve_dense(policies)
        mu: NDArray[np.float64] = np.array(
            [spla.spsolve(self.sparse_system(policy), self.rhs) for policy in policies]
        ).reshape(-1, self.S)  # scipy is untyped: Any
        return mu

    def gmres(
        self, policies: NDArray[np.float64], x0: NDArray[np.float64], iterations: int | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64]]:
        """One cycle of right-preconditioned GMRES for a block: policies (S, A, B), start
        ``x0`` (B, S). Returns ``(x (B, S), converged (B,), steps (B,))``; ``converged`` is the
        TRUE relative residual ``||c - A_pi x|| / ||c|| <= RESIDUAL_TOL``.

        Preconditioner ``T = D_pi^{-1} M^{-1}`` (:meth:`precondition`, :meth:`column_scale`);
        ``x = x0 + T V y`` with ``V`` the Arnoldi basis of ``A_pi T`` (classical Gram-Schmidt)
        and ``y`` the least-squares solution of ``H y ~ beta e_1``. ``H`` is reduced to
        triangular ``R`` by Givens rotations whose product ``Q^T`` is kept per sample, so
        rotating a new column is one batched product and the residual estimate is
        ``beta |Q^T[k+1, 0]|``.
        """
        S, A, B = policies.shape
        m = iterations or self.iterations
        by_action = None if self.kronecker is None else np.ascontiguousarray(np.moveaxis(policies, 1, 0))
        scale = self.column_scale(policies)
        c_norm = np.linalg.norm(self.rhs)
        target = 0.1 * RESIDUAL_TOL * c_norm  # on the estimate; the true residual is checked below
        r = self.rhs - self.apply(policies, x0)
        beta = np.sqrt(np.einsum("bs,bs->b", r, r))
        V = np.empty((B, m + 1, S))  # one contiguous basis per sample: Gram-Schmidt by batched matmul
        V[:, 0] = r / np.where(beta > 0, beta, np.inf)[:, None]
        Qt = np.zeros((B, m + 1, m + 1))
        Qt[:, np.arange(m + 1), np.arange(m + 1)] = 1.0
        R = np.zeros((B, m, m))
        steps = np.where(beta <= target, 0, m)  # Arnoldi steps each sample needs
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in range(m):
                u = self.precondition(V[:, k]) * scale
                w = self.apply(policies, u) if by_action is None else self.apply_columns(by_action, u.T).T
                coeff = np.matmul(V[:, : k + 1], w[:, :, None])  # (B, k+1, 1)
                w -= np.matmul(coeff.transpose(0, 2, 1), V[:, : k + 1])[:, 0]
                norm = np.sqrt(np.einsum("bs,bs->b", w, w))
                np.divide(w, np.where(norm > 0, norm, np.inf)[:, None], out=V[:, k + 1])  # breakdown: zero
                t = np.matmul(Qt[:, : k + 1, : k + 1], coeff)[:, :, 0]  # the previous rotations applied
                radius = np.hypot(t[:, k], norm)
                ok = radius > 0
                cos = np.where(ok, t[:, k] / radius, 1.0)
                sin = np.where(ok, norm / radius, 0.0)
                R[:, :k, k] = t[:, :k]
                R[:, k, k] = radius
                row = Qt[:, k, : k + 1].copy()
                Qt[:, k, : k + 1] = cos[:, None] * row
                Qt[:, k, k + 1] = sin
                Qt[:, k + 1, : k + 1] = -sin[:, None] * row
                Qt[:, k + 1, k + 1] = cos
                reached = (beta * np.abs(Qt[:, k + 1, 0]) <= target) & (steps == m)
                steps[reached] = k + 1
                if (steps <= k + 1).all():
                    break
        n = int(steps.max())
        if n == 0:
            return x0.copy(), np.ones(B, dtype=bool), steps
        # Each sample uses its own first steps[b] columns: pad the rest with the identity.
        unused = np.arange(n)[None, :] >= steps[:, None]  # (B, n)
        Rn = R[:, :n, :n].copy()
        Rn[unused[:, :, None] | unused[:, None, :]] = 0.0
        Rn[:, np.arange(n), np.arange(n)] += unused
        g = np.where(unused, 0.0, beta[:, None] * Qt[:, :n, 0])
        y = np.linalg.solve(Rn, g[:, :, None])  # (B, n, 1)
        x = x0 + self.precondition(np.matmul(y.transpose(0, 2, 1), V[:, :n])[:, 0]) * scale
        r = self.rhs - self.apply(policies, x)
        converged = np.sqrt(np.einsum("bs,bs->b", r, r)) <= RESIDUAL_TOL * c_norm
        return x, converged, steps

    def gmres_compiled(
        self, policies: NDArray[np.float64], x0: NDArray[np.float64], iterations: int | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64]]:
        """:meth:`gmres` with its sparse product, Gram-Schmidt and Givens updates compiled
        (:mod:`policyagg.sampling_kernel`); the same method, arguments and results, the arrays
        laid out (S, B) inside so the samples are the innermost (SIMD) dimension."""
        from policyagg import sampling_kernel as kernel

        S, A, B = policies.shape
        m = iterations or self.iterations
        by_action = None if self.kronecker is None else np.ascontiguousarray(np.moveaxis(policies, 1, 0))
        flat = np.ascontiguousarray(policies.reshape(S * A, B))
        average = self.gamma == 1.0
        scale = np.ascontiguousarray(self.column_scale(policies).T)  # (S, B)
        c_norm = float(np.linalg.norm(self.rhs))
        x = np.array(x0.T, order="C")  # (a copy: x0 is the caller's)
        w = np.empty((S, B))
        if by_action is None:
            kernel.apply_block(*self._p_csr, A, flat, x, self.gamma, average, w)
        else:
            w = self.apply_columns(by_action, x)
        basis = np.empty((m + 1, S, B))
        np.subtract(self.rhs[:, None], w, out=basis[0])
        beta = np.sqrt(np.einsum("sb,sb->b", basis[0], basis[0]))
        basis[0] *= np.divide(1.0, beta, out=np.zeros(B), where=beta > 0)
        hess = np.zeros((m, m + 1, B))  # by columns
        cos, sin, g = np.zeros((m, B)), np.zeros((m, B)), np.zeros((m + 1, B))
        g[0] = beta
        target = 0.1 * RESIDUAL_TOL * c_norm  # on the estimate; the true residual is checked below
        active = beta > target
        steps = np.zeros(B, dtype=np.int64)
        for k in range(m):
            if not active.any():
                break
            u = self.precondition_columns(basis[k]) * scale  # (a new array: M^{-1} may be the identity)
            if by_action is None:
                kernel.apply_block(*self._p_csr, A, flat, u, self.gamma, average, w)
            else:
                w = self.apply_columns(by_action, u)
            kernel.arnoldi_step(k, basis, w, hess, cos, sin, g, active, steps, target)
        if steps.max() > 0:
            kernel.combine(basis, hess, g, steps, w)
            x += self.precondition_columns(w) * scale
        if by_action is not None and self._structure_residuals:
            w = self.apply_columns(by_action, x)
            bound = self.gamma * self._structure_gap * np.abs(x).sum(axis=0)  # to the residual with P
        else:
            kernel.apply_block(*self._p_csr, A, flat, x, self.gamma, average, w)
            bound = np.zeros(B)
        residual = self.rhs[:, None] - w
        converged = np.sqrt(np.einsum("sb,sb->b", residual, residual)) + bound <= RESIDUAL_TOL * c_norm
        return np.ascontiguousarray(x.T), converged, steps

    def bicgstab_compiled(
        self, policies: NDArray[np.float64], x0: NDArray[np.float64], iterations: int | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64]]:
        """BiCGSTAB, right-preconditioned by the diagonal ``T = D_pi^{-1}`` (:meth:`column_scale`), for a
        block: policies (S, A, B), start ``x0`` (B, S); the results of :meth:`gmres_compiled`, with
        ``steps`` the products with ``A_pi`` each sample took (two per iteration). It keeps no Krylov
        basis, so a step costs two products and a few passes over the block instead of Gram-Schmidt
        against every earlier vector, and it runs whole in one compiled call
        (:func:`policyagg.sampling_kernel.kronecker_bicgstab`). A sample stops when its recursive
        residual reaches the target or the iteration breaks down; ``converged`` is its TRUE residual,
        as for GMRES."""
        by_action = np.ascontiguousarray(np.moveaxis(policies, 1, 0))
        scale = np.ascontiguousarray(self.column_scale(policies).T)  # (S, B)
        x, converged, steps = self._bicgstab_columns(by_action, scale, np.array(x0.T, order="C"), iterations)
        return np.ascontiguousarray(x.T), converged, steps

    def _bicgstab_columns(
        self,
        by_action: NDArray[np.float64],
        scale: NDArray[np.float64],
        x: NDArray[np.float64],
        iterations: int | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64]]:
        """:meth:`bicgstab_compiled` on column layouts: policies ``by_action`` (A, S, B), the diagonal
        ``scale`` (S, B) and the start ``x`` (S, B), which is overwritten by the solution and returned."""
        from policyagg import sampling_kernel as kernel

        if self.kronecker is None:
            raise RuntimeError("BiCGSTAB needs the kronecker method")
        A, S, B = by_action.shape
        c_norm = float(np.linalg.norm(self.rhs))
        steps = np.zeros(B, dtype=np.int64)
        average = self.gamma == 1.0
        structure = self.kronecker.packed
        kernel.kronecker_bicgstab(
            by_action, scale, self.rhs, self.gamma, average, structure,
            iterations or self.iterations, 0.1 * RESIDUAL_TOL * c_norm, x, steps,
        )  # fmt: skip
        if self._structure_residuals:
            w = self.apply_columns(by_action, x)
            bound = self.gamma * self._structure_gap * np.abs(x).sum(axis=0)  # to the residual with P
        else:
            w = np.empty((S, B))
            flat = np.ascontiguousarray(by_action.transpose(1, 0, 2).reshape(S * A, B))
            kernel.apply_block(*self._p_csr, A, flat, x, self.gamma, average, w)
            bound = np.zeros(B)
        residual = self.rhs[:, None] - w
        converged = np.sqrt(np.einsum("sb,sb->b", residual, residual)) + bound <= RESIDUAL_TOL * c_norm
        return x, converged, steps

    def _solve_bicgstab(self, policies: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """:meth:`solve_block` for the BiCGSTAB solver, from policies (B, S, A) as drawn with one transposed
        copy (A, S, B) and the column scales computed on it; samples BiCGSTAB leaves above the tolerance
        continue with :meth:`solve_block`'s later GMRES cycles and direct solves, from where it stopped."""
        by_action = np.ascontiguousarray(policies.transpose(2, 1, 0))  # (A, S, B)
        escape = 1.0 - self.gamma * np.einsum("asb,sa->sb", by_action, self._self_loops)  # (S, B)
        scale = escape_ratio(self._uniform_escape[:, None], escape)  # column_scale's, by columns
        start = self._x_uniform[:, None] * escape_ratio(self._start_escape[:, None], escape)
        x, converged, steps = self._bicgstab_columns(by_action, scale, start)
        mu = np.ascontiguousarray(x.T)
        counts = np.array([steps.sum(), 0, 0], dtype=np.int64)
        failed = np.flatnonzero(~converged)
        if failed.size:
            block = np.ascontiguousarray(np.moveaxis(policies[failed], 0, 2))
            mu[failed], more = self.solve_block(block, start=mu[failed], first_cycle=1)
            counts += more
            counts[1] += failed.size if KRYLOV_CYCLES > 1 else 0
        return mu, counts

    def gmres_cycle(
        self, policies: NDArray[np.float64], x0: NDArray[np.float64], first: bool = False
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.int64]]:
        """One GMRES cycle by this sampler's kernel: :meth:`gmres_compiled` or :meth:`gmres`; with
        ``first`` and :attr:`solver` ``"bicgstab"``, :meth:`bicgstab_compiled` instead."""
        if first and self.solver == "bicgstab":
            return self.bicgstab_compiled(policies, x0)
        return (self.gmres_compiled if self.kernel == "numba" else self.gmres)(policies, x0)

    def solve_triangular(self, policies: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Exact occupancies (B, S) of policies (B, S, A) by block forward substitution
        (:mod:`policyagg.triangular`; compiled or, ``kernel="numpy"``, by dense solves per
        component), and the counts of :meth:`solve_block` (no GMRES steps; a sample whose true
        residual exceeds :data:`RESIDUAL_TOL` is solved again directly)."""
        structure = self.blocks
        if structure is None:
            raise RuntimeError("solve_triangular needs the triangular method")
        policies = np.ascontiguousarray(policies, dtype=float)
        mu, residuals = triangular.solve(structure, policies, self.rhs, self.gamma, kernel=self.kernel)
        failed = np.flatnonzero(~(residuals <= RESIDUAL_TOL * np.linalg.norm(self.rhs)))
        if failed.size:
            mu[failed] = self.solve_direct(policies[failed])
        return mu, np.array([0, 0, failed.size], dtype=np.int64)

    def solve_block(
        self, policies: NDArray[np.float64], start: NDArray[np.float64] | None = None, first_cycle: int = 0
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Exact occupancies (B, S) of a block of policies (S, A, B), and the counts
        ``[GMRES steps summed over samples, samples restarted, samples solved directly]``; ``start``
        (B, S) and ``first_cycle`` continue samples an earlier cycle left (default: from the scaled
        uniform solution, cycle 0)."""
        B = policies.shape[2]
        if self.method == "triangular":
            return self.solve_triangular(np.moveaxis(policies, 2, 0))
        if self.method == "dense":
            return self.solve_dense(np.moveaxis(policies, 2, 0)), np.zeros(3, dtype=np.int64)
        x = self._x_uniform * self.column_scale(policies, self._start_escape) if start is None else start.copy()
        todo = np.arange(B)
        counts = np.zeros(3, dtype=np.int64)
        for cycle in range(first_cycle, KRYLOV_CYCLES):
            block = policies if cycle == 0 else np.ascontiguousarray(policies[:, :, todo])
            x[todo], converged, steps = self.gmres_cycle(block, x[todo], first=cycle == 0)
            counts[0] += steps.sum()
            todo = todo[~converged]
            if todo.size == 0:
                break
            counts[1] += todo.size if cycle + 1 < KRYLOV_CYCLES else 0
        if todo.size:
            x[todo] = self.solve_direct(np.moveaxis(policies[:, :, todo], 2, 0))
            counts[2] = todo.size
        return x, counts

    def solve_batch(self, policies: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """:meth:`solve_block` of a batch of policies laid out (B, S, A), as drawn (the triangular
        method takes them so, without a transposed copy)."""
        if self.method == "triangular":
            return self.solve_triangular(policies)
        if self.solver == "bicgstab":
            block = int(np.clip(BICGSTAB_BLOCK_ENTRIES // self.S, 8, MAX_BATCH))
            parts = [self._solve_bicgstab(policies[i : i + block]) for i in range(0, len(policies), block)]
            return np.concatenate([mu for mu, _ in parts]), np.sum([counts for _, counts in parts], axis=0)
        return self.solve_block(np.ascontiguousarray(np.moveaxis(policies, 0, 2)))

    def state_occupancies(self, policies: NDArray[np.float64]) -> NDArray[np.float64]:
        """Exact normalised state occupancies ``mu_pi`` (B, S) of a batch of policies (B, S, A)."""
        return self.solve_batch(policies)[0]

    def block_returns(self, policies: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """Returns ``J`` (B, n) of a batch of policies (B, S, A), and the counts of :meth:`solve_block`."""
        mu, counts = self.solve_batch(policies)
        d = (policies * mu[:, :, None]).reshape(len(policies), -1)  # d(s, a) = mu(s) pi(a|s)
        if self.method == "triangular":
            # one matrix-vector product per sample: on four-room (S A = 2.4M, n = 3) the (B, S A) x (S A, n)
            # product took 51 ms per sample, the products 5 ms
            return np.array([self.reward_matrix @ row for row in d]).reshape(len(d), -1), counts
        return d @ self.reward_matrix.T, counts

    def returns(self, policies: NDArray[np.float64]) -> NDArray[np.float64]:
        """Returns ``J`` (B, n) of a batch of policies (B, S, A)."""
        return self.block_returns(policies)[0]


@dataclass(frozen=True)
class BatchPlan:
    """What every sampling task needs: the sampler, batch ``j``'s generator ``children[j]``,
    and the grouping of ``group`` consecutive batches of ``batch_size`` samples per task."""

    sampler: PolicySampler
    children: tuple[np.random.Generator, ...]
    n_samples: int
    batch_size: int
    group: int

    def batches(self, t: int) -> range:
        """The batches of task ``t``."""
        return range(t * self.group, min((t + 1) * self.group, len(self.children)))

    def task_size(self, t: int) -> int:
        """Samples drawn by task ``t``."""
        batches = self.batches(t)
        return min(batches.stop * self.batch_size, self.n_samples) - batches.start * self.batch_size


def _sample_task(plan: BatchPlan, t: int) -> list[tuple[NDArray[np.float64], NDArray[np.int64]]]:
    """Task ``t``: the returns (size, n) and solver counts of each of its batches."""
    blocks = []
    for j in plan.batches(t):
        size = min(plan.batch_size, plan.n_samples - j * plan.batch_size)
        blocks.append(plan.sampler.block_returns(plan.sampler.draw_policies(plan.children[j], size)))
    return blocks


def sample_policy_returns(
    problem: Problem,
    n_samples: int,
    *,
    rng: np.random.Generator | int | None = None,
    concentration: float = 1.0,
    method: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    progress: bool | str | None = None,
    executor: Executor | None = None,
    kernel: str = "auto",
    solver: str = "auto",
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
    method : {"auto", "dense", "krylov", "sparse", "kronecker"}
        How the occupancy systems are solved (see the module docstring); all are exact.
    kernel : {"auto", "numba", "numpy"}
        How the GMRES of the GMRES methods runs (:data:`KERNELS`); both are exact, and agree
        to rounding.
    solver : {"auto", "gmres", "bicgstab"}
        The Krylov solver of the first cycle (:data:`SOLVERS`): BiCGSTAB needs the kronecker
        method and the numba kernel (``"auto"`` picks it there); every solution's true residual
        is checked, whichever solves it.
    batch_size : int, optional
        Samples per batch (default: :func:`default_batch_size`, which depends on the method:
        pass it to draw the same policies whichever method solves them).
    workers : int, optional
        Worker processes (forked; threads where ``fork`` is missing) solving batches in
        parallel (default: usable CPUs, at most 4).
    progress : bool or str, optional
        Show a tqdm bar (default: when more than 20 batches); a string shows it with that
        label (e.g. the experiment, seed and measure).
    executor : Executor, optional
        Runs the batches (default: a :class:`~policyagg.parallel.LocalExecutor` with
        ``workers``; e.g. :class:`policyagg.experiments.executors.RayExecutor` for a cluster).
        The numbers do not depend on it.

    ``info`` records the method, kernel and solver, the batch size, the seconds taken and the solver
    counts: mean Krylov steps per sample (``gmres_steps_per_sample``: GMRES's Arnoldi steps, or with
    BiCGSTAB its products with ``A_pi``, two per iteration), samples restarted and samples solved directly.
    """
    check_count("n_samples", n_samples)
    executor = resolve_executor(executor, workers)
    rng = np.random.default_rng(rng)
    sampler = PolicySampler(problem, concentration=concentration, method=method, kernel=kernel, solver=solver)
    if batch_size is None:
        batch_size = default_batch_size(sampler.S, sampler.draw_method, sampler.A)
    batch_size = check_count("batch_size", batch_size)
    n_batches = -(-n_samples // batch_size)
    children = rng.spawn(n_batches)
    out = shared_empty((n_samples, problem.n_agents))
    counts = shared_empty((n_batches, 3), dtype=np.int64)

    # Consecutive batches are grouped into one parallel task, so the pool's cost per task
    # (about a millisecond) stays small next to the work, with enough tasks to balance.
    slots = executor.slots
    group = int(np.clip(TASK_WORK // (batch_size * sampler.S), 1, max(1, n_batches // (4 * slots))))
    n_tasks = -(-n_batches // group)
    plan = BatchPlan(sampler, tuple(children), n_samples, batch_size, group)

    def store(t: int, blocks: list[tuple[NDArray[np.float64], NDArray[np.int64]]]) -> None:
        for j, (values, count) in zip(plan.batches(t), blocks):
            start = j * batch_size
            out[start : start + len(values)], counts[j] = values, count

    show = n_batches > 20 if progress is None else bool(progress)
    desc = progress if isinstance(progress, str) else "sampling policies"
    start = time.perf_counter()
    with tqdm(total=n_samples, disable=not show, desc=desc, unit="policy") as bar:
        for t in executor.map(_sample_task, plan, n_tasks, store):
            bar.update(plan.task_size(t))
    elapsed = time.perf_counter() - start
    total = counts.sum(axis=0)
    info = {
        "n_samples": int(n_samples),
        "concentration": float(concentration),
        "batch_size": batch_size,
        "method": sampler.method,
        "kernel": sampler.kernel,
        "solver": sampler.solver,
        "workers": executor.slots,
        "seconds": elapsed,
        "gamma": problem.mdp.gamma,
        "gmres_steps_per_sample": float(total[0] / n_samples),
        "restarted": int(total[1]),
        "direct_solves": int(total[2]),
    }
    return ReturnSamples(np.array(out), measure="policy", info=info)
