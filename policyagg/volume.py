"""The ``volume`` measure: occupancies uniform on the occupancy polytope ``O``.

**Density in policy coordinates.** Write ``d(s, a) = mu(s) pi(a|s)``. Per state the map
``(mu(s), pi(.|s)) -> d(s, .)`` has Jacobian ``mu(s)^(A-1)``, so ``dd = prod_s mu(s)^(A-1)
dmu dpi``. In these coordinates the (full-rank) equality constraints of ``O`` read
``C d - b = A_pi mu - c`` with the matrices of :meth:`PolicySampler.dense_systems`
(discounted: ``A_pi = I - gamma P_pi^T``, ``c = (1 - gamma) rho``; average reward:
``I - P_pi^T`` with its redundant last flow row replaced by ``sum mu = 1``, ``c = e_last``).
The uniform measure on ``O`` is proportional to ``delta(C d - b) dd``; integrating ``mu``
out at ``mu_pi = A_pi^{-1} c`` leaves, on the product of action simplices,

.. math:: p(\\pi) \\propto \\prod_s \\mu_\\pi(s)^{A-1} / |\\det A_\\pi|

relative to independent Dirichlet(1) rows. This needs ``mu_pi(s) > 0`` for every state and
every policy with full support (else the map misses part of ``O`` or ``O`` has lower
dimension): discounted MDPs must reach every state from ``rho``, average-reward MDPs must be
communicating. Problems that violate it, or that carry extra linear constraints (the
policy map covers ``O`` only), are refused.

**Sampler.** Metropolis-within-Gibbs: a *sweep* visits the states in a random order; a visit
of state ``s`` makes one random-walk step (a Dirichlet proposal around the current row, with
its Hastings correction) and then :data:`TRIES` independence steps with fresh rows
``pi' ~ q_s`` (accepted with probability ``min(1, w(pi') / w(pi))``, ``w = p / q_s``); all
candidates are scored in one batch. ``q_s`` is Dirichlet(1) during the first half of the
burn-in, then a Dirichlet fitted to the rows state ``s`` took in the second half (widened, and
mixed with 10% Dirichlet(1)), frozen before any sample is kept, so the kept chain is a fixed
Markov kernel that leaves the target invariant. On large problems the half of the states
with the smallest occupancy in the burn-in (whose rows move the returns by ``O(mu(s))``) is
then visited only every second sweep (a fixed schedule of invariant kernels; on the
243-state attention model this keeps the ESS per sweep and saves ~30% of the CPU time).
Changing row ``s``
changes only column ``s`` of ``A_pi``: ``A' = A + u e_s^T`` with ``u`` supported on
``P(.|s, .)``, hence ``det A' = det A (1 + x_s)`` and ``mu' = mu - x mu(s) / (1 + x_s)``
with ``x = A^{-1} u`` (cost ``S nnz(u)``); on acceptance ``A^{-1}`` gets the Sherman-Morrison
update (``O(S^2)``). ``A^{-1}``, ``mu`` and ``log|det A|`` are recomputed from scratch every
``refresh`` sweeps; the largest relative drift seen is reported. Chains start from
independent Dirichlet(1) policies, run in parallel (:func:`policyagg.parallel.run_tasks`)
and are checked with rank-normalised split R-hat and bulk ESS
(:mod:`policyagg.diagnostics`). The proposals of a sweep are drawn with numpy; the visits
themselves (:func:`visit_states`) run compiled with numba when it is installed
(:mod:`policyagg.volume_kernel`), the same chain to rounding.

:func:`hit_and_run_returns` is an independent baseline: plain hit-and-run in the null space
of the equality constraints, from the uniform policy's occupancy.
"""

from __future__ import annotations

import importlib.util
import math
import time
import warnings

import numpy as np
import scipy.linalg as la
from scipy import special
from scipy.linalg.blas import dger
from tqdm.auto import tqdm

from policyagg.diagnostics import effective_sample_size, rhat
from policyagg.errors import InvalidProblemError, check_count
from policyagg.parallel import check_workers, run_tasks, shared_empty
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples
from policyagg.sampling import PolicySampler

#: R-hat above this (for any agent) triggers a :class:`MixingWarning`.
RHAT_MAX = 1.01
#: A bulk ESS below this share of ``n_samples`` (for any agent) triggers a :class:`MixingWarning`.
MIN_ESS_FRACTION = 0.1
#: Default sweeps discarded at the start of each chain; the proposals are fitted to its second
#: half. On the 243-state attention model ESS per kept sweep rose from 0.36 (20) to 0.39 (40),
#: 0.43 (60) and 0.41 (100): longer fits give better proposals, up to about 30 sweeps of data.
BURN_IN_SWEEPS = 60
#: Default sweeps between kept samples.
THIN_SWEEPS = 1
#: Default sweeps between recomputations of ``A_pi^{-1}``, ``mu`` and ``log|det A_pi|``.
REFRESH_SWEEPS = 25
#: Independence proposals per state visit.
TRIES = 16
#: The random-walk proposal of a row is Dirichlet(LOCAL_FLOOR + LOCAL_CONCENTRATION * row).
LOCAL_CONCENTRATION = 20.0
LOCAL_FLOOR = 0.5
#: Share of Dirichlet(1) in the adapted independence proposals (bounds ``p / q`` by ``p / share``).
UNIFORM_SHARE = 0.1
#: The adapted proposals have ``1 / PROPOSAL_WIDENING`` of the fitted Dirichlet precision.
PROPOSAL_WIDENING = 2.0
#: Share of the states (smallest mean occupancy in the burn-in) visited only every LIGHT_PERIOD sweeps.
LIGHT_SHARE = 0.5
LIGHT_PERIOD = 2
#: ... on problems with at least this many states (where a visit's O(S^2) update dominates).
LIGHT_MIN_STATES = 50
#: Smallest Dirichlet parameter of an adapted proposal.
ALPHA_FLOOR = 0.2
#: Implementations of the state visits: "numba" (compiled, the ``fast`` extra), "numpy", or
#: "auto" (numba when installed).
KERNELS = ("auto", "numba", "numpy")


class MixingWarning(UserWarning):
    """An MCMC sample set may not represent its target (R-hat or ESS is poor; see the message)."""


def check_volume_problem(problem: Problem) -> None:
    """Refuse problems the policy-coordinate sampler cannot represent (see the module docstring)."""
    if len(problem.constraints):
        raise InvalidProblemError(
            f"the `volume` measure does not support extra linear constraints (the problem has "
            f"{len(problem.constraints)}): its sampler works in policy coordinates, which cover the "
            "whole occupancy polytope only; sample the unconstrained problem or use the `policy` measure"
        )
    mdp = problem.mdp
    structure = mdp.structure
    if not mdp.average_reward and structure.unreachable.size:
        shown = ", ".join(map(str, structure.unreachable[:10]))
        raise InvalidProblemError(
            f"the `volume` measure needs every state to have positive occupancy mu_pi(s) > 0, but "
            f"{structure.unreachable.size} state(s) are unreachable from `rho` ({shown}): the polytope "
            "then has lower dimension than the policy space. Give those states positive `rho`, "
            "or remove them from the MDP"
        )
    if mdp.average_reward and not structure.communicating:
        raise InvalidProblemError(
            "the `volume` measure needs every state to have positive occupancy mu_pi(s) > 0 under "
            f"every policy with full support; with `gamma` = 1 that means a communicating MDP, but this "
            f"one is not ({structure.describe()}): states outside its closed class are transient. "
            "Use `gamma` < 1 with `rho` > 0, or remove the transient states"
        )


class VolumeSampler:
    """Per-problem data of the policy-coordinate Metropolis sampler (shared by all chains)."""

    def __init__(self, problem: Problem, kernel: str = "auto"):
        check_volume_problem(problem)
        mdp = problem.mdp
        self.S, self.A = mdp.n_states, mdp.n_actions
        self.systems = PolicySampler(problem, method="dense")
        self.rhs = self.systems.rhs
        self.rewards = problem.reward_matrix.T.copy()  # (S*A, n)
        # Column s of A_pi changes by u = -gamma sum_a (pi'(a|s) - pi(a|s)) P(.|s, a) on the
        # support of P(.|s, .); the normalisation row of the average-reward system does not change.
        # Stored flat: rows support_ptr[s]:support_ptr[s + 1] of support_index (states) and of
        # blocks (k, A) belong to state s.
        P = mdp.P
        supports, blocks = [], []
        for s in range(self.S):
            rows = P[s * self.A : (s + 1) * self.A]
            support = np.unique(rows.indices)
            block = -mdp.gamma * rows[:, support].toarray()  # (A, k)
            if mdp.average_reward:
                block[:, support == self.S - 1] = 0.0
            supports.append(support)
            blocks.append(block.T)
        support_ptr = np.zeros(self.S + 1, np.int64)
        support_ptr[1:] = np.cumsum([support.size for support in supports])
        self.layout = (support_ptr, np.concatenate(supports).astype(np.int64),
                       np.ascontiguousarray(np.concatenate(blocks)))
        self.visit = visit_kernel(kernel)  # compiled here, before chains are forked
        self.kernel = "numpy" if self.visit is visit_states else "numba"
        uniform = np.full((self.S, self.A), 1.0 / self.A)
        mu = self.systems.solve_dense(uniform[None])[0]
        if not np.all(mu > 0):
            s = int(np.argmin(mu))
            raise InvalidProblemError(
                f"the `volume` measure needs mu_pi(s) > 0 for every state; the uniform policy gives "
                f"state {s} occupancy {mu[s]:.3g}"
            )

    def factor(self, policy: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """From scratch: ``(G, mu, log|det A_pi|)`` with ``G = (A_pi^{-1})^T`` (C order)."""
        lu, piv = la.lu_factor(self.systems.dense_systems(policy[None])[0])
        G = la.lu_solve((lu, piv), np.eye(self.S), trans=1)  # solves A^T G = I
        mu = la.lu_solve((lu, piv), self.rhs)
        return np.ascontiguousarray(G), mu, float(np.log(np.abs(np.diag(lu))).sum())

    def returns(self, policy: np.ndarray, mu: np.ndarray) -> np.ndarray:
        return (mu[:, None] * policy).ravel() @ self.rewards

    def run_chain(self, rng: np.random.Generator, n_keep: int, out: np.ndarray, *, burn_in: int,
                  thin: int, refresh: int, tries: int = TRIES, concentration: float = LOCAL_CONCENTRATION,
                  adapt: bool = True, light_share: float = LIGHT_SHARE, light_period: int = LIGHT_PERIOD) -> dict:
        """Run one chain; write ``n_keep`` returns into ``out`` (n_keep, n); return its statistics.

        Each visit of state ``s`` makes one random-walk Metropolis-Hastings step with proposal
        ``Dirichlet(LOCAL_FLOOR + concentration * pi(.|s))`` (for conditionals too peaked for
        an independence proposal), then ``tries`` independence steps with proposals from
        ``q_s``, all evaluated in one batch against the state at the start of the visit, and
        applies one rank-one update for the row reached. An independence step from ``pi`` to
        ``pi'`` is accepted with probability ``min(1, w(pi') / w(pi))``, ``w = p / q_s``.
        ``q_s`` is Dirichlet(1) until half of the burn-in; with ``adapt`` it is then the mixture
        ``(1 - UNIFORM_SHARE) Dirichlet(alpha_s) + UNIFORM_SHARE Dirichlet(1)`` with ``alpha_s``
        fitted to the rows the chain visited in the second half of the burn-in
        (:func:`fit_dirichlet`), frozen before any sample is kept.

        Also at the end of the burn-in (with at least :data:`LIGHT_MIN_STATES` states), the
        ``light_share`` of the states with the smallest
        mean occupancy over its second half (their rows move the returns by ``O(mu(s))``) are
        set to be visited only in every ``light_period``-th sweep after it; the others in every
        sweep. Each visit leaves the target invariant, so this fixed schedule does too.
        """
        S, A = self.S, self.A
        am1 = float(A - 1)
        policy = rng.standard_exponential((S, A))
        policy /= policy.sum(axis=1, keepdims=True)
        G, mu, logdet = self.factor(policy)
        inv_mu = 1.0 / mu
        moved = visits = refreshes = 0
        drift = 0.0
        visit = self.visit
        total_sweeps = burn_in + n_keep * thin
        states, light = np.arange(S), np.zeros(S, bool)
        fitted = None  # alpha (S, A) of the adapted proposals, once frozen
        adapt_from = burn_in // 2 if adapt and burn_in >= 4 else None
        row_sum, row_squares, mu_sum, counted = np.zeros((S, A)), np.zeros((S, A)), np.zeros(S), 0
        for sweep in range(total_sweeps):
            if adapt_from is not None and sweep >= adapt_from and fitted is None:
                if sweep < burn_in:
                    row_sum += policy
                    row_squares += policy * policy
                    mu_sum += mu
                    counted += 1
                else:
                    fitted = fit_dirichlet(row_sum / counted, row_squares / counted)
                    if light_period > 1 and S >= LIGHT_MIN_STATES:
                        light[np.argsort(mu_sum)[: int(light_share * S)]] = True
            due = states if (sweep - burn_in) % light_period == 0 else states[~light]
            order = rng.permutation(due)
            # Every state is visited at most once per sweep, so its row at the visit is its row
            # now: proposals and their Hastings terms are drawn at once for the states in
            # ``order`` (row i of the arrays below belongs to state order[i]).
            rows, m = policy[order], order.size
            alpha = LOCAL_FLOOR + concentration * rows
            local = rng.standard_gamma(alpha)
            local /= local.sum(axis=1, keepdims=True)
            back = LOCAL_FLOOR + concentration * local
            with np.errstate(divide="ignore", invalid="ignore"):  # a row with an entry 0 is refused
                hastings = (special.gammaln(alpha).sum(axis=1) - special.gammaln(back).sum(axis=1)
                            + ((back - 1.0) * np.log(rows)).sum(axis=1) - ((alpha - 1.0) * np.log(local)).sum(axis=1))
            hastings = np.where(np.isfinite(hastings), hastings, -np.inf)
            if fitted is None:
                fresh = rng.standard_exponential((m, tries, A))
            else:
                uniform = rng.random((m, tries)) < UNIFORM_SHARE
                fresh = rng.standard_exponential((m, tries, A))
                fresh[~uniform] = gamma_variates(rng, np.broadcast_to(fitted[order, None], (m, tries, A))[~uniform])
            candidates = np.concatenate([local[:, None], fresh], axis=1)
            candidates[:, 1:] /= candidates[:, 1:].sum(axis=2, keepdims=True)
            # log q_s of the current row and of every candidate (0 for Dirichlet(1): only
            # differences of log(p / q) between rows of the same state are used)
            log_q = np.zeros((m, tries + 2))
            if fitted is not None:
                log_q = mixture_log_density(fitted[order], np.concatenate([rows[:, None], candidates], axis=1))
            log_q_shift = log_q[:, 1:] - log_q[:, :1]  # log q(candidate) - log q(row at the visit)
            thresholds = np.log(rng.random((m, tries + 1)))
            thresholds[:, 0] -= hastings
            moved_now, logdet = visit(order, candidates, log_q_shift, thresholds, policy, G, mu, inv_mu, logdet,
                                      *self.layout, am1)
            moved += moved_now
            visits += due.size
            if (sweep + 1) % refresh == 0:
                G, fresh_mu, fresh_logdet = self.factor(policy)
                drift = max(drift, float(np.abs(fresh_mu / mu - 1.0).max()), abs(fresh_logdet - logdet))
                mu, logdet = fresh_mu, fresh_logdet
                inv_mu = 1.0 / mu
                refreshes += 1
            kept = sweep + 1 - burn_in
            if kept > 0 and kept % thin == 0:
                out[kept // thin - 1] = self.returns(policy, mu)
        return {"moved": moved, "visits": visits, "refreshes": refreshes, "drift": drift, "sweeps": total_sweeps}


def visit_states(order, candidates, log_q_shift, thresholds, policy, G, mu, inv_mu, logdet,
                 support_ptr, support_index, blocks, am1) -> tuple[int, float]:
    """Visit the states ``order`` in turn (numpy kernel); update ``policy``, ``G``, ``mu`` and
    ``inv_mu`` in place; return ``(moves, logdet)``.

    Visit ``i`` scores the candidate rows ``candidates[i]`` of state ``s = order[i]`` at once:
    ``x = A^{-1} u`` (``u`` the change of column ``s`` of ``A_pi``, supported on
    ``support_index[support_ptr[s]:support_ptr[s + 1]]`` with per-action coefficients ``blocks``
    on those rows), ``det A'/det A = 1 + x_s`` and ``mu'/mu = 1 - x mu(s) / ((1 + x_s) mu)``.
    Candidate 0 is the random-walk step (its Hastings term is in ``thresholds[i, 0]``), the
    others independence steps accepted on ``log p - log_q_shift``. The row reached gets one
    Sherman-Morrison update of ``G = (A^{-1})^T``. :mod:`policyagg.volume_kernel` is the same
    loop compiled.
    """
    moves = 0
    with np.errstate(divide="ignore", invalid="ignore"):  # log 0 = -inf marks refused rows
        for i, s in enumerate(order.tolist()):
            lo, hi = support_ptr[s], support_ptr[s + 1]
            # rows of G are columns of A^{-1}; Y = x / mu for every candidate row
            Y = (candidates[i] - policy[s]) @ ((blocks[lo:hi].T @ G[support_index[lo:hi]]) * inv_mu)
            denom = 1.0 + Y[:, s] * mu[s]
            denom[denom == 0.0] = np.inf  # singular (only through rounding): never accepted
            # mu'/mu for every candidate; one log of each product instead of S logs (the ratios
            # are O(1), so the product stays far from under/overflow). mu' > 0 for rows with full
            # support, so a ratio <= 0 can come from rounding only: it is checked on the row chosen.
            ratio = Y * (-mu[s] / denom)[:, None]
            ratio += 1.0
            product = np.multiply.reduce(ratio, axis=1)
            product[~(product > 0.0)] = 0.0  # log 0 = -inf: refused
            log_target = am1 * np.log(product) - np.log(np.abs(denom))
            log_w = (log_target - log_q_shift[i]).tolist()
            threshold = thresholds[i].tolist()
            current, current_w = -1, 0.0
            if threshold[0] < float(log_target[0]):
                current, current_w = 0, log_w[0]
            for j in range(1, len(log_w)):
                if threshold[j] < log_w[j] - current_w:
                    current, current_w = j, log_w[j]
            if current >= 0 and ratio[current].min() <= 0.0:
                current = -1  # rounding only (see above); never seen in practice
            if current >= 0:
                x = Y[current] * mu
                dger(-1.0 / denom[current], x, G[:, s].copy(), a=G.T, overwrite_a=1)  # Sherman-Morrison
                mu *= ratio[current]
                np.divide(1.0, mu, out=inv_mu)
                logdet += math.log(abs(float(denom[current])))
                policy[s] = candidates[i, current]
                moves += 1
    return moves, logdet


def compiled_kernel_available() -> bool:
    """Whether numba (the ``fast`` extra) is installed, so ``kernel="numba"`` works."""
    return importlib.util.find_spec("numba") is not None


def check_kernel(kernel) -> str:
    """``kernel`` if it is one of :data:`KERNELS`, else an :class:`InvalidProblemError`."""
    if kernel not in KERNELS:
        raise InvalidProblemError(f"unknown volume kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    return kernel


def visit_kernel(kernel: str):
    """The state-visit function for ``kernel`` in :data:`KERNELS` (``"auto"``: numba when installed)."""
    check_kernel(kernel)
    if kernel == "numpy" or (kernel == "auto" and not compiled_kernel_available()):
        return visit_states
    try:
        from policyagg.volume_kernel import visit_states as compiled
    except ImportError as error:
        raise InvalidProblemError(
            f"kernel='numba' needs numba ({error}); install it with `pip install 'policyagg[fast]'`, "
            "or use kernel='numpy'"
        ) from None
    return compiled


def gamma_variates(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """Gamma(alpha) variates as ``Gamma(alpha + 1) U^(1 / alpha)`` (Marsaglia and Tsang 2000):
    numpy's sampler is about twice as fast for shapes >= 1, and most fitted shapes are < 1."""
    return rng.standard_gamma(alpha + 1.0) * rng.random(alpha.shape) ** (1.0 / alpha)


def fit_dirichlet(mean: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Per row, the Dirichlet with the given mean whose precision ``alpha_0`` matches the total
    variance (``sum_a Var = (1 - sum_a m_a^2) / (alpha_0 + 1)``), widened by
    :data:`PROPOSAL_WIDENING` and floored at :data:`ALPHA_FLOOR` per entry."""
    variance = np.maximum(squares - mean * mean, 0.0).sum(axis=1)
    spread = np.maximum(1.0 - (mean * mean).sum(axis=1), 1e-12)
    precision = np.clip(spread / np.maximum(variance, 1e-12) - 1.0, 1.0, 1e6) / PROPOSAL_WIDENING
    return np.maximum(mean * precision[:, None], ALPHA_FLOOR)


def mixture_log_density(alpha: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``log q_s(rows[s, j])`` for ``q_s = (1 - UNIFORM_SHARE) Dirichlet(alpha_s) + UNIFORM_SHARE
    Dirichlet(1)``; ``alpha`` (S, A), ``rows`` (S, m, A) on the simplex."""
    A = alpha.shape[1]
    norm = special.gammaln(alpha.sum(axis=1)) - special.gammaln(alpha).sum(axis=1)
    with np.errstate(divide="ignore"):
        fitted = norm[:, None] + ((alpha[:, None] - 1.0) * np.log(rows)).sum(axis=2)
    return np.logaddexp(np.log1p(-UNIFORM_SHARE) + fitted, np.log(UNIFORM_SHARE) + special.gammaln(A))


def mixing_report(chains: np.ndarray, n_samples: int) -> tuple[dict, str | None]:
    """Per-agent R-hat and bulk ESS of ``chains`` (m, n_per_chain, agents), and a warning text
    when any R-hat exceeds :data:`RHAT_MAX` or any ESS is below :data:`MIN_ESS_FRACTION` of
    ``n_samples``."""
    if chains.shape[1] < 4:
        return {"rhat": None, "ess": None}, (
            f"too few draws per chain ({chains.shape[1]}) to compute R-hat and ESS; draw more samples"
        )
    r = np.atleast_1d(rhat(chains))
    ess = np.atleast_1d(effective_sample_size(chains))
    problems = []
    if r.max() > RHAT_MAX:
        problems.append(f"R-hat up to {r.max():.3f} (agent {int(r.argmax())}) > {RHAT_MAX}")
    if ess.min() < MIN_ESS_FRACTION * n_samples:
        problems.append(f"bulk ESS down to {ess.min():.0f} (agent {int(ess.argmin())}) for {n_samples} samples")
    message = None
    if problems:
        message = ("poor mixing: " + "; ".join(problems)
                   + "; increase `burn_in` or `thin`, or use more `chains`")
    return {"rhat": r.tolist(), "ess": ess.tolist()}, message


def sample_volume_returns(
    problem: Problem,
    n_samples: int,
    *,
    rng: np.random.Generator | int | None = None,
    chains: int = 4,
    burn_in: int | None = None,
    thin: int | None = None,
    refresh: int | None = None,
    workers: int | None = None,
    progress: bool | str | None = None,
    kernel: str = "auto",
) -> ReturnSamples:
    """Returns of ``n_samples`` occupancies uniform on ``O`` (the ``volume`` measure), by MCMC.

    Parameters
    ----------
    problem : Problem
        Without extra constraints; every state must have positive occupancy under every
        policy with full support (see the module docstring).
    n_samples : int
        Rows returned: ``ceil(n_samples / chains)`` per chain, concatenated chain by chain,
        the last chain cut short.
    rng : numpy Generator or seed
        Chain ``k`` draws from the ``k``-th child of ``rng.spawn``, so the numbers depend on
        the seed and the chain count only, never on ``workers``.
    chains : int
        Independent chains (>= 2 for R-hat to compare chains).
    burn_in, thin, refresh : int, optional
        In sweeps (one visit of every state, or of the heavier states only in alternate
        sweeps after the burn-in; see the module docstring): discarded at the start of each chain
        (default :data:`BURN_IN_SWEEPS`), between kept samples (default :data:`THIN_SWEEPS`),
        between recomputations from scratch (default :data:`REFRESH_SWEEPS`).
    workers : int, optional
        Processes running chains in parallel (default: CPU count, at most 4).
    progress : bool or str, optional
        Show a tqdm bar counting finished chains (default: off); a string shows it with that label.
    kernel : {"auto", "numba", "numpy"}
        Implementation of the state visits: the same Markov chain (same proposals and
        thresholds; the numbers agree to rounding), about 2x faster compiled with numba (the
        ``fast`` extra). ``"auto"`` uses numba when it is installed.

    ``info`` holds per-agent ``rhat`` and ``ess`` (bulk, all chains), ``acceptance`` (share of
    state visits that changed the row),
    ``chains``, ``sweeps`` per chain, ``burn_in``, ``thin``, ``refreshes``, ``max_drift``
    (largest relative change of ``mu`` or ``log|det A_pi|`` at a refresh), ``kernel`` and ``seconds``.
    A :class:`MixingWarning` is issued when R-hat > :data:`RHAT_MAX` or ESS is small.
    """
    n_samples = check_count("n_samples", n_samples, 1)
    chains = check_count("chains", chains, 1)
    burn_in = check_count("burn_in", BURN_IN_SWEEPS if burn_in is None else burn_in, 0)
    thin = check_count("thin", THIN_SWEEPS if thin is None else thin, 1)
    refresh = check_count("refresh", REFRESH_SWEEPS if refresh is None else refresh, 1)
    workers = check_workers(workers)
    check_kernel(kernel)
    rng = np.random.default_rng(rng)
    start = time.perf_counter()
    n = problem.n_agents
    per_chain = -(-n_samples // chains)
    if problem.mdp.n_actions == 1:  # O is the single occupancy of the only policy
        check_volume_problem(problem)
        point = problem.mdp.evaluate(np.ones((problem.mdp.n_states, 1)), problem.rewards)
        values = np.broadcast_to(point, (n_samples, n))
        info = {"n_samples": n_samples, "chains": chains, "degenerate": "O is a single point (one action)",
                "rhat": [1.0] * n, "ess": [float(n_samples)] * n, "acceptance": 1.0, "sweeps": 0,
                "burn_in": burn_in, "thin": thin, "refresh": refresh, "refreshes": 0, "max_drift": 0.0,
                "seconds": time.perf_counter() - start, "gamma": problem.mdp.gamma}
        return ReturnSamples(values, measure="volume", info=info)
    sampler = VolumeSampler(problem, kernel)
    children = rng.spawn(chains)
    out = shared_empty((chains, per_chain, n))
    stats = shared_empty((chains, 4))

    def task(k: int) -> int:
        result = sampler.run_chain(children[k], per_chain, out[k], burn_in=burn_in, thin=thin, refresh=refresh)
        stats[k] = [result["moved"], result["visits"], result["refreshes"], result["drift"]]
        return k

    desc = progress if isinstance(progress, str) else "volume chains"
    with tqdm(total=chains, disable=not progress, desc=desc, unit="chain") as bar:
        for _ in run_tasks(task, chains, workers=workers):
            bar.update(1)
    elapsed = time.perf_counter() - start
    chain_values = np.array(out)
    diagnostics, message = mixing_report(chain_values, n_samples)
    info = {
        "n_samples": n_samples,
        "chains": chains,
        **diagnostics,
        "acceptance": float(stats[:, 0].sum() / stats[:, 1].sum()),
        "sweeps": burn_in + per_chain * thin,
        "burn_in": burn_in,
        "thin": thin,
        "refresh": refresh,
        "refreshes": int(stats[:, 2].sum()),
        "max_drift": float(stats[:, 3].max()),
        "kernel": sampler.kernel,
        "seconds": elapsed,
        "gamma": problem.mdp.gamma,
    }
    if message:
        warnings.warn(f"`volume` samples: {message}", MixingWarning, stacklevel=2)
    return ReturnSamples(chain_values.reshape(-1, n)[:n_samples], measure="volume", info=info)


# --------------------------------------------------------------------------- baseline
class HitAndRun:
    """Plain hit-and-run on ``O``: directions uniform on the unit sphere of the null space of
    ``A_eq`` (an orthonormal basis ``N``), a uniform point on the chord ``{d + t N z >= 0}``."""

    def __init__(self, problem: Problem):
        if len(problem.constraints):
            raise InvalidProblemError("`hit_and_run_returns` does not support extra linear constraints")
        polytope = problem.polytope
        self.basis = la.null_space(polytope.A_eq.toarray())  # (S*A, k)
        if self.basis.shape[1] == 0:
            raise InvalidProblemError("the occupancy polytope is a single point; there is nothing to sample")
        mdp = problem.mdp
        self.start = mdp.occupancy(np.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions)).ravel()
        if self.start.min() <= 0.0:
            raise InvalidProblemError(
                "the uniform policy's occupancy is on the boundary of `O` (some state has zero occupancy); "
                "hit-and-run needs an interior starting point"
            )
        self.rewards = problem.reward_matrix  # (n, S*A)

    def run_chain(self, rng: np.random.Generator, n_keep: int, out: np.ndarray, *, burn_in: int, thin: int,
                  batch: int = 256) -> dict:
        """``burn_in`` and ``thin`` in steps; writes ``n_keep`` returns into ``out``."""
        d = self.start.copy()
        k = self.basis.shape[1]
        total = burn_in + n_keep * thin
        step = 0
        while step < total:
            directions = self.basis @ rng.standard_normal((k, min(batch, total - step)))
            lengths = rng.random(directions.shape[1])
            for j in range(directions.shape[1]):
                direction = directions[:, j]
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio = -d / direction
                low = ratio[direction > 0].max(initial=-np.inf)
                high = ratio[direction < 0].min(initial=np.inf)
                d += (low + lengths[j] * (high - low)) * direction
                np.maximum(d, 0.0, out=d)  # rounding can leave -1e-17 at the chord's end
                step += 1
                kept = step - burn_in
                if kept > 0 and kept % thin == 0:
                    out[kept // thin - 1] = self.rewards @ d
        return {"steps": total}


def hit_and_run_returns(
    problem: Problem,
    n_samples: int,
    *,
    rng: np.random.Generator | int | None = None,
    chains: int = 4,
    burn_in: int | None = None,
    thin: int | None = None,
    workers: int | None = None,
) -> ReturnSamples:
    """Returns of ``n_samples`` points of plain hit-and-run on ``O`` (an independent check of
    :func:`sample_volume_returns`; no rounding, so it mixes slowly in high dimension).

    ``burn_in`` and ``thin`` count steps (defaults ``10 k^2`` and ``k`` for a polytope of
    dimension ``k``); chain ``k`` uses the ``k``-th child of ``rng.spawn``. ``info`` holds
    per-agent ``rhat`` and ``ess`` and issues a :class:`MixingWarning` like
    :func:`sample_volume_returns`.
    """
    n_samples = check_count("n_samples", n_samples, 1)
    chains = check_count("chains", chains, 1)
    workers = check_workers(workers)
    rng = np.random.default_rng(rng)
    start = time.perf_counter()
    walker = HitAndRun(problem)
    dim = walker.basis.shape[1]
    burn_in = check_count("burn_in", 10 * dim * dim if burn_in is None else burn_in, 0)
    thin = check_count("thin", dim if thin is None else thin, 1)
    per_chain = -(-n_samples // chains)
    children = rng.spawn(chains)
    out = shared_empty((chains, per_chain, problem.n_agents))

    def task(k: int) -> int:
        walker.run_chain(children[k], per_chain, out[k], burn_in=burn_in, thin=thin)
        return k

    for _ in run_tasks(task, chains, workers=workers):
        pass
    chain_values = np.array(out)
    diagnostics, message = mixing_report(chain_values, n_samples)
    info = {"n_samples": n_samples, "chains": chains, **diagnostics, "dimension": dim, "burn_in": burn_in,
            "thin": thin, "steps": burn_in + per_chain * thin, "seconds": time.perf_counter() - start,
            "gamma": problem.mdp.gamma}
    if message:
        warnings.warn(f"hit-and-run samples: {message}", MixingWarning, stacklevel=2)
    return ReturnSamples(chain_values.reshape(-1, problem.n_agents)[:n_samples], measure="hit-and-run", info=info)
