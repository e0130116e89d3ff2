"""Benchmark of the ``volume`` measure on the attention polytope, against plain hit-and-run
given the same wall time in the same run.

Effective samples per second = (smallest per-agent bulk ESS) / (wall time of the whole call,
set-up and burn-in included). On a loaded machine the wall time overstates the cost, so the
CPU seconds (this process and its worker processes) are reported too, with
``ess_per_cpu_s_per_core`` = ESS / (CPU seconds / cores used): the rate an otherwise idle
machine with that many cores would reach, if the chains keep the cores busy.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from tqdm.auto import tqdm

from policyagg.envs.attention import AttentionModel, one_agent_per_site
from policyagg.experiments.bench import cpu_seconds, peak_rss_mb
from policyagg.parallel import check_workers
from policyagg.problem import Problem
from policyagg.volume import (
    HitAndRun,
    MixingWarning,
    compiled_kernel_available,
    hit_and_run_returns,
    sample_volume_returns,
)


def _label(progress: bool | None, label: str) -> bool | str:
    return False if progress is False else label


def _summary(samples, seconds: float, cpu: float, cores: int) -> dict:
    ess = np.array(samples.info["ess"])
    return {
        "samples": samples.n_samples,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "ess_min": float(ess.min()),
        "ess_per_s": float(ess.min() / seconds),
        "ess_per_cpu_s_per_core": float(ess.min() / (cpu / cores)),
        "rhat_max": float(max(samples.info["rhat"])),
    }


def bench_volume(
    *,
    n_sites=5,
    n_phases=3,
    n_samples=4000,
    chains=4,
    workers=None,
    seed=0,
    kernels=None,
    progress: bool | None = False,
) -> dict:
    """Effective samples per second of :func:`sample_volume_returns` with each of ``kernels``
    (default: numba, when installed, and numpy; the same chain, so only the time differs) and
    of plain hit-and-run (same chains and workers, the wall time of the first kernel) on
    ``AttentionModel(n_sites, n_phases)``. ``progress``: ``None`` or ``True`` shows a bar over
    the runs (each kernel, then hit-and-run) and each run's chains."""
    workers = check_workers(workers)
    cores = min(workers, chains)
    if kernels is None:
        kernels = ["numba", "numpy"] if compiled_kernel_available() else ["numpy"]
    model = AttentionModel(n_sites, n_phases, seed=seed)
    problem = Problem(model.mdp(), model.rewards(one_agent_per_site(n_sites, seed)))
    runs = {}
    bar = tqdm(
        total=len(kernels) + 1,
        desc=f"bench volume ({n_sites} sites, {n_samples} samples)",
        unit="run",
        disable=progress is False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MixingWarning)  # the figures below report mixing
        for kernel in kernels:
            bar.set_postfix_str(f"volume, {kernel} kernel")
            cpu, start = cpu_seconds(), time.perf_counter()
            samples = sample_volume_returns(
                problem,
                n_samples,
                rng=seed,
                chains=chains,
                workers=workers,
                kernel=kernel,
                progress=_label(progress, f"volume ({kernel}) chains"),
            )
            runs[kernel] = (samples, time.perf_counter() - start, cpu_seconds() - cpu)
            bar.update()
        volume_seconds = runs[kernels[0]][1]

        # hit-and-run: measure its step rate, then give it the same wall time
        start = time.perf_counter()
        walker = HitAndRun(problem)
        setup = time.perf_counter() - start
        pilot_steps = 2000
        start = time.perf_counter()
        walker.run_chain(
            np.random.default_rng(seed), pilot_steps, np.empty((pilot_steps, problem.n_agents)), burn_in=0, thin=1
        )
        steps_per_s = pilot_steps / (time.perf_counter() - start)
        budget = max(volume_seconds - setup, 1.0)
        steps_per_chain = int(steps_per_s * budget * min(workers, chains) / chains)
        per_chain = max(n_samples // chains, 4)
        thin = max(steps_per_chain // per_chain, 1)
        bar.set_postfix_str("plain hit-and-run")
        cpu, start = cpu_seconds(), time.perf_counter()
        walk = hit_and_run_returns(
            problem, per_chain * chains, rng=seed, chains=chains, burn_in=0, thin=thin, workers=workers
        )
        walk_seconds, walk_cpu = time.perf_counter() - start, cpu_seconds() - cpu
        bar.update()
    bar.close()
    result = {
        "model": f"attention {n_sites} sites x {n_phases} phases (S={problem.mdp.n_states}, "
        f"A={problem.mdp.n_actions}, dim O = {walker.basis.shape[1]})",
        "chains": chains,
        "workers": workers,
        "volume": {
            kernel: _summary(samples, seconds, cpu, cores)
            | {
                "acceptance": samples.info["acceptance"],
                "sweeps_per_chain": samples.info["sweeps"],
                "max_drift": samples.info["max_drift"],
            }
            for kernel, (samples, seconds, cpu) in runs.items()
        },
        "hit_and_run": _summary(walk, walk_seconds, walk_cpu, cores)
        | {"steps_per_chain": thin * per_chain, "thin": thin},
        "peak_rss_mb": peak_rss_mb(),
    }
    first = result["volume"][kernels[0]]
    result["ratio"] = first["ess_per_s"] / result["hit_and_run"]["ess_per_s"]
    result["ratio_cpu"] = first["ess_per_cpu_s_per_core"] / result["hit_and_run"]["ess_per_cpu_s_per_core"]
    return result


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(bench_volume(n_samples=int(sys.argv[1]) if len(sys.argv) > 1 else 4000), indent=2))
