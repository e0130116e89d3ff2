"""Plain hit-and-run on the occupancy polytope ``O``: an independent check of the ``volume``
sampler (:mod:`policyagg.volume`).

From the uniform policy's occupancy, each step draws a direction uniform on the unit sphere
of the null space of ``A_eq`` and moves to a uniform point of the chord through ``d`` in that
direction, ``{d + t N z >= 0}``; the uniform measure on ``O`` is invariant. There is no
rounding of the polytope, so it mixes slowly in high dimension.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import numpy as np
import scipy.linalg as la

from policyagg.chains import MixingWarning, run_chains
from policyagg.errors import InvalidProblemError, check_count
from policyagg.parallel import check_workers
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples


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

    def run_chain(
        self, rng: np.random.Generator, n_keep: int, out: np.ndarray, *, burn_in: int, thin: int, batch: int = 256
    ) -> dict[str, int]:
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
    :func:`policyagg.volume.sample_volume_returns`; no rounding, so it mixes slowly in high dimension).

    ``burn_in`` and ``thin`` count steps (defaults ``10 k^2`` and ``k`` for a polytope of
    dimension ``k``); chain ``k`` uses the ``k``-th child of ``rng.spawn``. ``info`` holds
    per-agent ``rhat`` and ``ess`` and issues a :class:`MixingWarning` like
    :func:`policyagg.volume.sample_volume_returns`.
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

    def run_chain(chain_rng: np.random.Generator, out: np.ndarray) -> Sequence[float]:
        walker.run_chain(chain_rng, out.shape[0], out, burn_in=burn_in, thin=thin)
        return ()

    runs = run_chains(run_chain, rng, n_samples, problem.n_agents, chains=chains, workers=workers)
    per_chain = runs.values.shape[1]
    info = {
        "n_samples": n_samples,
        "chains": chains,
        **runs.diagnostics,
        "dimension": dim,
        "burn_in": burn_in,
        "thin": thin,
        "steps": burn_in + per_chain * thin,
        "seconds": time.perf_counter() - start,
        "gamma": problem.mdp.gamma,
    }
    if runs.message:
        warnings.warn(f"hit-and-run samples: {runs.message}", MixingWarning, stacklevel=2)
    return ReturnSamples(runs.samples(n_samples), measure="hit-and-run", info=info)
