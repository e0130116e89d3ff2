"""The ``volume`` measure: occupancies uniform on the occupancy polytope ``O``, by MCMC.

:func:`sample_volume_returns` checks its inputs, runs independent chains of the
policy-coordinate Metropolis sampler (:mod:`policyagg.volume_chain`: the density
``p(pi) ~ prod_s mu_pi(s)^(A-1) / |det A_pi|`` on the action simplices and the chain's
proposals and updates; :mod:`policyagg.volume_kernel`: its state visits compiled with numba)
in parallel (:func:`policyagg.chains.run_chains`), and checks them with rank-normalised split
R-hat and bulk ESS (:mod:`policyagg.diagnostics`). Chains start from independent Dirichlet(1)
policies.

:func:`hit_and_run_returns` (:mod:`policyagg.hit_and_run`) is an independent baseline: plain
hit-and-run in the null space of the equality constraints, from the uniform policy's occupancy.
The names of those modules are re-exported here.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np

from policyagg.chains import MIN_ESS_FRACTION, RHAT_MAX, MixingWarning, mixing_report, run_chains
from policyagg.errors import check_count
from policyagg.hit_and_run import HitAndRun, hit_and_run_returns
from policyagg.parallel import Executor, check_workers
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples
from policyagg.volume_chain import (
    ALPHA_FLOOR,
    BURN_IN_SWEEPS,
    KERNELS,
    LIGHT_MIN_STATES,
    LIGHT_PERIOD,
    LIGHT_SHARE,
    LOCAL_CONCENTRATION,
    LOCAL_FLOOR,
    PROPOSAL_WIDENING,
    REFRESH_SWEEPS,
    THIN_SWEEPS,
    TRIES,
    UNIFORM_SHARE,
    ChainSettings,
    ChainState,
    ChainStats,
    VolumeSampler,
    check_kernel,
    check_volume_problem,
    compiled_kernel_available,
    fit_dirichlet,
    gamma_variates,
    mixture_log_density,
    run_chain,
    visit_kernel,
    visit_states,
)

__all__ = [
    "ALPHA_FLOOR",
    "BURN_IN_SWEEPS",
    "KERNELS",
    "LIGHT_MIN_STATES",
    "LIGHT_PERIOD",
    "LIGHT_SHARE",
    "LOCAL_CONCENTRATION",
    "LOCAL_FLOOR",
    "MIN_ESS_FRACTION",
    "PROPOSAL_WIDENING",
    "REFRESH_SWEEPS",
    "RHAT_MAX",
    "THIN_SWEEPS",
    "TRIES",
    "UNIFORM_SHARE",
    "ChainSettings",
    "ChainState",
    "ChainStats",
    "HitAndRun",
    "MixingWarning",
    "VolumeSampler",
    "check_kernel",
    "check_volume_problem",
    "compiled_kernel_available",
    "fit_dirichlet",
    "gamma_variates",
    "hit_and_run_returns",
    "mixing_report",
    "mixture_log_density",
    "run_chain",
    "sample_volume_returns",
    "visit_kernel",
    "visit_states",
]


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
    executor: Executor | None = None,
    kernel: str = "auto",
) -> ReturnSamples:
    """Returns of ``n_samples`` occupancies uniform on ``O`` (the ``volume`` measure), by MCMC.

    Parameters
    ----------
    problem : Problem
        Without extra constraints; every state must have positive occupancy under every
        policy with full support (see :mod:`policyagg.volume_chain`).
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
        sweeps after the burn-in; see :mod:`policyagg.volume_chain`): discarded at the start of each chain
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
    settings = ChainSettings(burn_in=burn_in, thin=thin, refresh=refresh)
    if problem.mdp.n_actions == 1:
        return _single_point(problem, n_samples, chains, settings, start)
    sampler = VolumeSampler(problem, kernel)

    def chain(chain_rng: np.random.Generator, out: np.ndarray) -> Sequence[float]:
        stats = run_chain(sampler, chain_rng, out, settings)
        return (stats.moved, stats.visits, stats.refreshes, stats.drift)

    runs = run_chains(
        chain,
        rng,
        n_samples,
        problem.n_agents,
        chains=chains,
        workers=workers,
        n_stats=4,
        executor=executor,
        progress=bool(progress),
        desc=progress if isinstance(progress, str) else "volume chains",
    )
    moved, visits, refreshes, drift = runs.stats.T
    info = {
        "n_samples": n_samples,
        "chains": chains,
        **runs.diagnostics,
        "acceptance": float(moved.sum() / visits.sum()),
        "sweeps": burn_in + runs.values.shape[1] * thin,
        "burn_in": burn_in,
        "thin": thin,
        "refresh": refresh,
        "refreshes": int(refreshes.sum()),
        "max_drift": float(drift.max()),
        "kernel": sampler.kernel,
        "seconds": runs.finished - start,
        "gamma": problem.mdp.gamma,
    }
    if runs.message:
        warnings.warn(f"`volume` samples: {runs.message}", MixingWarning, stacklevel=2)
    return ReturnSamples(runs.samples(n_samples), measure="volume", info=info)


def _single_point(
    problem: Problem, n_samples: int, chains: int, settings: ChainSettings, start: float
) -> ReturnSamples:
    """With one action ``O`` is the single occupancy of the only policy: ``n_samples`` copies of its returns."""
    check_volume_problem(problem)
    n = problem.n_agents
    point = problem.mdp.evaluate(np.ones((problem.mdp.n_states, 1)), problem.rewards)
    values = np.broadcast_to(point, (n_samples, n))
    info = {
        "n_samples": n_samples,
        "chains": chains,
        "degenerate": "O is a single point (one action)",
        "rhat": [1.0] * n,
        "ess": [float(n_samples)] * n,
        "acceptance": 1.0,
        "sweeps": 0,
        "burn_in": settings.burn_in,
        "thin": settings.thin,
        "refresh": settings.refresh,
        "refreshes": 0,
        "max_drift": 0.0,
        "seconds": time.perf_counter() - start,
        "gamma": problem.mdp.gamma,
    }
    return ReturnSamples(values, measure="volume", info=info)
