"""Several seeded MCMC chains on workers, their draws collected, their mixing checked.

Shared by the ``volume`` sampler (:func:`policyagg.volume.sample_volume_returns`) and the
hit-and-run baseline (:func:`policyagg.hit_and_run.hit_and_run_returns`): chain ``k`` draws from
the ``k``-th child of ``rng.spawn``, so the numbers depend on the seed and the chain count only,
never on the workers. Chains write into shared arrays (:func:`policyagg.parallel.shared_empty`);
the diagnostics are rank-normalised split R-hat and bulk ESS (:mod:`policyagg.diagnostics`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from policyagg.diagnostics import effective_sample_size, rhat
from policyagg.parallel import Executor, resolve_executor, shared_empty

#: R-hat above this (for any agent) triggers a :class:`MixingWarning`.
RHAT_MAX = 1.01
#: A bulk ESS below this share of ``n_samples`` (for any agent) triggers a :class:`MixingWarning`.
MIN_ESS_FRACTION = 0.1

#: One chain: ``(rng, out) -> statistics``; it writes ``len(out)`` draws into ``out`` (n_keep, n)
#: and returns a fixed number of floats (collected in :attr:`ChainRuns.stats`).
ChainFunction = Callable[[np.random.Generator, np.ndarray], Sequence[float]]


class MixingWarning(UserWarning):
    """An MCMC sample set may not represent its target (R-hat or ESS is poor; see the message)."""


@dataclass(frozen=True)
class ChainRuns:
    """Draws of ``chains`` chains: ``values`` (chains, per_chain, n), ``stats`` (chains, n_stats)
    as returned by each chain, ``diagnostics`` (per-agent ``rhat`` and ``ess``) and the text of
    a :class:`MixingWarning` to issue (``None`` when the chains mix well); ``finished`` is the
    :func:`time.perf_counter` reading when the last chain finished."""

    values: np.ndarray
    stats: np.ndarray
    diagnostics: dict[str, Any]
    message: str | None
    finished: float

    def samples(self, n_samples: int) -> np.ndarray:
        """The first ``n_samples`` draws, chain after chain: (n_samples, n)."""
        return self.values.reshape(-1, self.values.shape[2])[:n_samples]


def run_chains(
    run_chain: ChainFunction,
    rng: np.random.Generator,
    n_samples: int,
    n_agents: int,
    *,
    chains: int,
    workers: int | None = None,
    n_stats: int = 0,
    progress: bool | None = False,
    desc: str = "chains",
    executor: Executor | None = None,
) -> ChainRuns:
    """Run ``chains`` chains of ``ceil(n_samples / chains)`` draws each on ``workers`` processes,
    chain ``k`` with the ``k``-th child of ``rng.spawn``; check their mixing (:func:`mixing_report`).

    ``progress`` shows a tqdm bar (labelled ``desc``) counting finished chains. ``executor``
    runs the chains (default: a local pool of ``workers``; see :class:`~policyagg.parallel.Executor`).
    """
    executor = resolve_executor(executor, workers)
    per_chain = -(-n_samples // chains)
    plan = _ChainPlan(run_chain, tuple(rng.spawn(chains)), per_chain, n_agents)
    out = shared_empty((chains, per_chain, n_agents))
    stats = shared_empty((chains, n_stats))

    def store(k: int, chain: tuple[np.ndarray, np.ndarray]) -> None:
        out[k], stats[k] = chain

    with tqdm(total=chains, disable=not progress, desc=desc, unit="chain") as bar:
        for _ in executor.map(_chain_task, plan, chains, store):
            bar.update(1)
    finished = time.perf_counter()
    values = np.array(out)
    diagnostics, message = mixing_report(values, n_samples)
    return ChainRuns(values, np.array(stats), diagnostics, message, finished)


@dataclass(frozen=True)
class _ChainPlan:
    run_chain: ChainFunction
    children: tuple[np.random.Generator, ...]
    per_chain: int
    n_agents: int


def _chain_task(plan: _ChainPlan, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Chain ``k``: its draws (per_chain, n) and its statistics."""
    out = np.empty((plan.per_chain, plan.n_agents))
    stats = np.asarray(plan.run_chain(plan.children[k], out), dtype=float)
    return out, stats


def mixing_report(chains: np.ndarray, n_samples: int) -> tuple[dict[str, Any], str | None]:
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
        message = "poor mixing: " + "; ".join(problems) + "; increase `burn_in` or `thin`, or use more `chains`"
    return {"rhat": r.tolist(), "ess": ess.tolist()}, message
