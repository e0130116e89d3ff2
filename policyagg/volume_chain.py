"""One chain of the ``volume`` sampler: occupancies uniform on the occupancy polytope ``O``.

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
policy map covers ``O`` only), are refused (:func:`check_volume_problem`).

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
Changing row ``s`` changes only column ``s`` of ``A_pi``: ``A' = A + u e_s^T`` with ``u``
supported on ``P(.|s, .)``, hence ``det A' = det A (1 + x_s)`` and
``mu' = mu - x mu(s) / (1 + x_s)`` with ``x = A^{-1} u`` (cost ``S nnz(u)``); on acceptance
``A^{-1}`` gets the Sherman-Morrison update (``O(S^2)``). ``A^{-1}``, ``mu`` and
``log|det A|`` are recomputed from scratch every ``refresh`` sweeps; the largest relative
drift seen is reported. The proposals of a sweep are drawn with numpy; the visits themselves
(:func:`visit_states`) run compiled with numba when it is installed
(:mod:`policyagg.volume_kernel`), the same chain to rounding.

:func:`policyagg.volume.sample_volume_returns` runs several of these chains on workers and
checks their mixing.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg as la
from scipy import special
from scipy.linalg.blas import dger

from policyagg.errors import InvalidProblemError
from policyagg.problem import Problem
from policyagg.sampling import PolicySampler

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

#: The signature shared by :func:`visit_states` and its compiled twin: ``(order, candidates,
#: log_q_shift, thresholds, policy, G, mu, inv_mu, logdet, support_ptr, support_index, blocks,
#: am1) -> (moves, logdet)``.
VisitFunction = Callable[..., tuple[int, float]]


# --------------------------------------------------------------------------- the problem
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
        self.rewards: np.ndarray = problem.reward_matrix.T.copy()  # (S*A, n)
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
        self.layout = (
            support_ptr,
            np.concatenate(supports).astype(np.int64),
            np.ascontiguousarray(np.concatenate(blocks)),
        )
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
        """Per-agent returns ``R d`` of the occupancy ``d(s, a) = mu(s) pi(a|s)``."""
        returns: np.ndarray = (mu[:, None] * policy).ravel() @ self.rewards
        return returns


# --------------------------------------------------------------------------- one chain
@dataclass(frozen=True)
class ChainSettings:
    """How one chain runs. ``burn_in``, ``thin`` and ``refresh`` count sweeps (see
    :func:`policyagg.volume.sample_volume_returns`); ``tries`` independence proposals per visit;
    the random-walk proposal is ``Dirichlet(LOCAL_FLOOR + concentration * pi(.|s))``; ``adapt``
    fits the independence proposals in the burn-in; after it the ``light_share`` of the states
    with the smallest occupancy are visited only every ``light_period``-th sweep."""

    burn_in: int = BURN_IN_SWEEPS
    thin: int = THIN_SWEEPS
    refresh: int = REFRESH_SWEEPS
    tries: int = TRIES
    concentration: float = LOCAL_CONCENTRATION
    adapt: bool = True
    light_share: float = LIGHT_SHARE
    light_period: int = LIGHT_PERIOD


@dataclass(frozen=True)
class ChainStats:
    """What one chain did: rows ``moved`` in ``visits`` state visits, ``refreshes`` from scratch
    and the largest relative ``drift`` they found, over ``sweeps`` sweeps."""

    moved: int
    visits: int
    refreshes: int
    drift: float
    sweeps: int


@dataclass
class ChainState:
    """The point of a chain: ``policy`` (S, A), ``G = (A_pi^{-1})^T``, ``mu = A_pi^{-1} c``,
    ``inv_mu = 1 / mu`` and ``logdet = log|det A_pi|`` (the visits update them in place)."""

    policy: np.ndarray
    G: np.ndarray
    mu: np.ndarray
    inv_mu: np.ndarray
    logdet: float

    @classmethod
    def start(cls, sampler: VolumeSampler, rng: np.random.Generator) -> ChainState:
        """A Dirichlet(1) policy (rows of normalised exponentials) and its factors."""
        policy = rng.standard_exponential((sampler.S, sampler.A))
        policy /= policy.sum(axis=1, keepdims=True)
        G, mu, logdet = sampler.factor(policy)
        return cls(policy, G, mu, 1.0 / mu, logdet)

    def refresh(self, sampler: VolumeSampler) -> tuple[float, float]:
        """Recompute ``G``, ``mu`` and ``logdet`` from scratch; return how far the updated ones
        had drifted: ``(max |mu_new / mu - 1|, |logdet_new - logdet|)``."""
        G, mu, logdet = sampler.factor(self.policy)
        drift = (float(np.abs(mu / self.mu - 1.0).max()), abs(logdet - self.logdet))
        self.G, self.mu, self.logdet = G, mu, logdet
        self.inv_mu = 1.0 / mu
        return drift


@dataclass(frozen=True)
class Proposals:
    """The candidate rows of one sweep's visits (row ``i`` for the ``i``-th state visited):
    ``candidates`` (m, tries + 1, A), the random-walk step first; ``log_q_shift`` (m, tries + 1)
    ``log q_s(candidate) - log q_s(row at the visit)``; ``thresholds`` (m, tries + 1) the log
    uniforms of the acceptance tests, the Hastings term subtracted from column 0's."""

    candidates: np.ndarray
    log_q_shift: np.ndarray
    thresholds: np.ndarray


class BurnInFit:
    """Running sums over the second half of the burn-in, for the adapted proposals
    (:func:`fit_dirichlet`) and the light schedule (the states of smallest mean occupancy)."""

    def __init__(self, S: int, A: int):
        self.row_sum, self.row_squares = np.zeros((S, A)), np.zeros((S, A))
        self.mu_sum, self.counted = np.zeros(S), 0

    def add(self, state: ChainState) -> None:
        self.row_sum += state.policy
        self.row_squares += state.policy * state.policy
        self.mu_sum += state.mu
        self.counted += 1

    def alpha(self) -> np.ndarray:
        """Dirichlet parameters (S, A) of the adapted independence proposals."""
        return fit_dirichlet(self.row_sum / self.counted, self.row_squares / self.counted)

    def light_states(self, settings: ChainSettings) -> np.ndarray:
        """Mask (S,) of the states visited only every ``light_period``-th sweep (none on small
        problems, below :data:`LIGHT_MIN_STATES` states)."""
        S = self.mu_sum.size
        light = np.zeros(S, bool)
        if settings.light_period > 1 and S >= LIGHT_MIN_STATES:
            light[np.argsort(self.mu_sum)[: int(settings.light_share * S)]] = True
        return light


def run_chain(
    sampler: VolumeSampler, rng: np.random.Generator, out: np.ndarray, settings: ChainSettings = ChainSettings()
) -> ChainStats:
    """Run one chain; write ``len(out)`` kept returns into ``out`` (n_keep, n); return its statistics.

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
    ``light_share`` of the states with the smallest mean occupancy over its second half (their
    rows move the returns by ``O(mu(s))``) are set to be visited only in every
    ``light_period``-th sweep after it; the others in every sweep. Each visit leaves the
    target invariant, so this fixed schedule does too.
    """
    burn_in, thin = settings.burn_in, settings.thin
    total_sweeps = burn_in + out.shape[0] * thin
    state = ChainState.start(sampler, rng)
    states, light = np.arange(sampler.S), np.zeros(sampler.S, bool)
    fit = BurnInFit(sampler.S, sampler.A)
    fitted = None  # alpha (S, A) of the adapted proposals, once frozen
    adapt_from = burn_in // 2 if settings.adapt and burn_in >= 4 else None
    moved = visits = refreshes = 0
    drift = 0.0
    for sweep in range(total_sweeps):
        if adapt_from is not None and sweep >= adapt_from and fitted is None:
            if sweep < burn_in:
                fit.add(state)
            else:
                fitted, light = fit.alpha(), fit.light_states(settings)
        due = states if (sweep - burn_in) % settings.light_period == 0 else states[~light]
        order = rng.permutation(due)
        proposals = draw_proposals(rng, state.policy[order], None if fitted is None else fitted[order], settings)
        moved += visit(sampler, state, order, proposals)
        visits += due.size
        if (sweep + 1) % settings.refresh == 0:
            drift = max(drift, *state.refresh(sampler))
            refreshes += 1
        kept = sweep + 1 - burn_in
        if kept > 0 and kept % thin == 0:
            out[kept // thin - 1] = sampler.returns(state.policy, state.mu)
    return ChainStats(moved=moved, visits=visits, refreshes=refreshes, drift=drift, sweeps=total_sweeps)


def draw_proposals(
    rng: np.random.Generator, rows: np.ndarray, alpha: np.ndarray | None, settings: ChainSettings
) -> Proposals:
    """The proposals of one sweep for the states whose current rows are ``rows`` (m, A), in
    visiting order: a random-walk step and ``tries`` independence rows from ``q_s``
    (Dirichlet(1), or the adapted mixture with parameters ``alpha`` (m, A)).

    Every state is visited at most once per sweep, so its row at the visit is its row now:
    everything is drawn at once before the visits.
    """
    local, hastings = random_walk_step(rng, rows, settings.concentration)
    fresh = independence_rows(rng, alpha, rows.shape[0], settings.tries, rows.shape[1])
    candidates = np.concatenate([local[:, None], fresh], axis=1)
    candidates[:, 1:] /= candidates[:, 1:].sum(axis=2, keepdims=True)
    # log q_s of the current row and of every candidate (0 for Dirichlet(1): only
    # differences of log(p / q) between rows of the same state are used)
    log_q = np.zeros((rows.shape[0], settings.tries + 2))
    if alpha is not None:
        log_q = mixture_log_density(alpha, np.concatenate([rows[:, None], candidates], axis=1))
    log_q_shift = log_q[:, 1:] - log_q[:, :1]  # log q(candidate) - log q(row at the visit)
    thresholds = np.log(rng.random((rows.shape[0], settings.tries + 1)))
    thresholds[:, 0] -= hastings
    return Proposals(candidates, log_q_shift, thresholds)


def random_walk_step(rng: np.random.Generator, rows: np.ndarray, concentration: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row, a draw ``pi' ~ Dirichlet(LOCAL_FLOOR + concentration * pi)`` and its Hastings
    term ``log q(pi | pi') - log q(pi' | pi)`` (``-inf`` where it is not finite)."""
    alpha = LOCAL_FLOOR + concentration * rows
    local = rng.standard_gamma(alpha)
    local /= local.sum(axis=1, keepdims=True)
    back = LOCAL_FLOOR + concentration * local
    with np.errstate(divide="ignore", invalid="ignore"):  # a row with an entry 0 is refused
        hastings = (
            special.gammaln(alpha).sum(axis=1)
            - special.gammaln(back).sum(axis=1)
            + ((back - 1.0) * np.log(rows)).sum(axis=1)
            - ((alpha - 1.0) * np.log(local)).sum(axis=1)
        )
    return local, np.where(np.isfinite(hastings), hastings, -np.inf)


def independence_rows(rng: np.random.Generator, alpha: np.ndarray | None, m: int, tries: int, A: int) -> np.ndarray:
    """Unnormalised draws (m, tries, A) of ``q_s``: exponentials (Dirichlet(1)) without ``alpha``,
    else gamma variates of the mixture with share :data:`UNIFORM_SHARE` of exponentials."""
    if alpha is None:
        return rng.standard_exponential((m, tries, A))
    uniform = rng.random((m, tries)) < UNIFORM_SHARE
    fresh = rng.standard_exponential((m, tries, A))
    fresh[~uniform] = gamma_variates(rng, np.broadcast_to(alpha[:, None], (m, tries, A))[~uniform])
    return fresh


def visit(sampler: VolumeSampler, state: ChainState, order: np.ndarray, proposals: Proposals) -> int:
    """Visit the states ``order`` with ``sampler``'s kernel, updating ``state``; return the rows moved."""
    moved, state.logdet = sampler.visit(
        order,
        proposals.candidates,
        proposals.log_q_shift,
        proposals.thresholds,
        state.policy,
        state.G,
        state.mu,
        state.inv_mu,
        state.logdet,
        *sampler.layout,
        float(sampler.A - 1),
    )
    return moved


# --------------------------------------------------------------------------- the state visits
def visit_states(
    order: np.ndarray,
    candidates: np.ndarray,
    log_q_shift: np.ndarray,
    thresholds: np.ndarray,
    policy: np.ndarray,
    G: np.ndarray,
    mu: np.ndarray,
    inv_mu: np.ndarray,
    logdet: float,
    support_ptr: np.ndarray,
    support_index: np.ndarray,
    blocks: np.ndarray,
    am1: float,
) -> tuple[int, float]:
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


def check_kernel(kernel: object) -> str:
    """``kernel`` if it is one of :data:`KERNELS`, else an :class:`InvalidProblemError`."""
    if kernel not in KERNELS:
        raise InvalidProblemError(f"unknown volume kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    return str(kernel)


def visit_kernel(kernel: str) -> VisitFunction:
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


# --------------------------------------------------------------------------- adapted proposals
def gamma_variates(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """Gamma(alpha) variates as ``Gamma(alpha + 1) U^(1 / alpha)`` (Marsaglia and Tsang 2000):
    numpy's sampler is about twice as fast for shapes >= 1, and most fitted shapes are < 1."""
    variates: np.ndarray = rng.standard_gamma(alpha + 1.0) * rng.random(alpha.shape) ** (1.0 / alpha)
    return variates


def fit_dirichlet(mean: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Per row, the Dirichlet with the given mean whose precision ``alpha_0`` matches the total
    variance (``sum_a Var = (1 - sum_a m_a^2) / (alpha_0 + 1)``), widened by
    :data:`PROPOSAL_WIDENING` and floored at :data:`ALPHA_FLOOR` per entry."""
    variance = np.maximum(squares - mean * mean, 0.0).sum(axis=1)
    spread = np.maximum(1.0 - (mean * mean).sum(axis=1), 1e-12)
    precision = np.clip(spread / np.maximum(variance, 1e-12) - 1.0, 1.0, 1e6) / PROPOSAL_WIDENING
    alpha: np.ndarray = np.maximum(mean * precision[:, None], ALPHA_FLOOR)
    return alpha


def mixture_log_density(alpha: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``log q_s(rows[s, j])`` for ``q_s = (1 - UNIFORM_SHARE) Dirichlet(alpha_s) + UNIFORM_SHARE
    Dirichlet(1)``; ``alpha`` (S, A), ``rows`` (S, m, A) on the simplex."""
    A = alpha.shape[1]
    norm = special.gammaln(alpha.sum(axis=1)) - special.gammaln(alpha).sum(axis=1)
    with np.errstate(divide="ignore"):
        fitted = norm[:, None] + ((alpha[:, None] - 1.0) * np.log(rows)).sum(axis=2)
    density: np.ndarray = np.logaddexp(np.log1p(-UNIFORM_SHARE) + fitted, np.log(UNIFORM_SHARE) + special.gammaln(A))
    return density
