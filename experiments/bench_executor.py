"""``policyagg bench executor``: the local pool against Ray on this machine, in the same run.

Three measurements, each a median over ``repeats`` with the local executor as the baseline:

* **overhead per task**: ``map`` over ``tasks`` empty tasks whose payload is the experiment's
  MDP and samples-sized array, seconds per task;
* **end to end**: ``reproduce`` (experiments (a) and (b), ``seeds`` seeds of ``samples``
  samples; the default is the command's default size) into fresh folders, local with
  ``workers`` processes vs a private Ray of ``workers`` CPUs (started once, before the clock:
  its start-up is reported apart);
* **two nodes**: the same ``reproduce`` on a simulated cluster of two nodes of
  ``workers // 2`` CPUs each (``ray.cluster_utils.Cluster``), if ``cluster``.

The machine's load average is recorded before and after, since other processes share the cores.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from policyagg.parallel import Executor, LocalExecutor, check_workers


def _empty_task(payload: Any, j: int) -> int:
    return j


def task_overhead(executor: Executor, payload: Any, tasks: int) -> float:
    """Seconds per task of ``tasks`` empty tasks (outputs stored nowhere)."""
    start = time.perf_counter()
    for _ in executor.map(_empty_task, payload, tasks, lambda j, value: None):
        pass
    return (time.perf_counter() - start) / tasks


def reproduce_seconds(executor: Executor, *, seeds: int, samples: int, variant: str = "paper") -> float:
    """Wall seconds of ``policyagg reproduce`` (both experiments) into a fresh folder."""
    from policyagg.experiments.cli import paper_configs
    from policyagg.experiments.config import CONFIGS, load_config
    from policyagg.experiments.run import run_configs

    folder = Path(tempfile.mkdtemp(prefix="policyagg-bench-executor-"))
    try:
        configs = [
            load_config(CONFIGS / f"{name}.toml").with_overrides(
                output=folder / name, seeds=list(range(seeds)), samples=samples
            )
            for name in paper_configs(variant)
        ]
        start = time.perf_counter()
        run_configs(configs, progress=False, figures=False, executor=executor)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def bench_executor(
    *,
    seeds: int = 5,
    samples: int = 10_000,
    repeats: int = 3,
    workers: int | None = None,
    tasks: int = 200,
    cluster: bool = True,
) -> dict[str, Any]:
    """Local against Ray (see the module docstring); returns every timing and the ratios."""
    import ray

    from policyagg.experiments.executors import RayExecutor, ray_init

    workers = check_workers(workers)
    payload = np.zeros((samples, 10))  # the size of a seed's samples of experiment (b)
    report: dict[str, Any] = {"workers": workers, "seeds": seeds, "samples": samples, "repeats": repeats}
    report["load_before"] = os.getloadavg()
    local = LocalExecutor(workers)

    start = time.perf_counter()
    ray_init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING)
    report["ray_start_seconds"] = time.perf_counter() - start
    try:
        remote = RayExecutor()
        task_overhead(remote, payload, workers * 2)  # start the workers before the clock
        report["overhead_local"] = float(np.median([task_overhead(local, payload, tasks) for _ in range(repeats)]))
        report["overhead_ray"] = float(np.median([task_overhead(remote, payload, tasks) for _ in range(repeats)]))
        local_times, ray_times = [], []
        for _ in range(repeats):  # interleaved, so a change of the machine's load hits both alike
            local_times.append(reproduce_seconds(local, seeds=seeds, samples=samples))
            ray_times.append(reproduce_seconds(remote, seeds=seeds, samples=samples))
        report["reproduce_local"], report["reproduce_ray"] = local_times, ray_times
    finally:
        ray.shutdown()
    report["ratio_ray"] = float(np.median(ray_times) / np.median(local_times))

    if cluster:
        from ray.cluster_utils import Cluster

        per_node = max(1, workers // 2)
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": per_node, "include_dashboard": False})
        nodes.add_node(num_cpus=per_node)
        try:
            ray_init(address=nodes.address, logging_level=logging.WARNING)
            nodes.wait_for_nodes()
            remote = RayExecutor()
            task_overhead(remote, payload, workers * 2)
            report["overhead_two_nodes"] = task_overhead(remote, payload, tasks)
            report["reproduce_two_nodes"] = [
                reproduce_seconds(remote, seeds=seeds, samples=samples) for _ in range(repeats)
            ]
        finally:
            ray.shutdown()
            nodes.shutdown()
        report["ratio_two_nodes"] = float(np.median(report["reproduce_two_nodes"]) / np.median(local_times))
    report["load_after"] = os.getloadavg()
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as lines of text (seconds, medians, ratios against local)."""

    def median(key: str) -> float:
        return float(np.median(report[key]))

    lines = [
        f"reproduce: 2 experiments x {report['seeds']} seed(s) x {report['samples']} samples; {report['workers']} CPUs; "
        f"median of {report['repeats']}",
        f"load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f} "
        f"(on {os.cpu_count()} cores)",
        f"  Ray start-up (once, not in the times below): {report['ray_start_seconds']:.1f} s",
        f"  {'executor':<28} {'s/task':>9} {'reproduce s':>12} {'x local':>8}",
        f"  {'local (forked workers)':<28} {report['overhead_local']:>9.4f} {median('reproduce_local'):>12.1f} {1.0:>8.3f}",
        f"  {'ray (one node)':<28} {report['overhead_ray']:>9.4f} {median('reproduce_ray'):>12.1f} "
        f"{report['ratio_ray']:>8.3f}",
    ]
    if "reproduce_two_nodes" in report:
        lines.append(
            f"  {'ray (two simulated nodes)':<28} {report['overhead_two_nodes']:>9.4f} "
            f"{median('reproduce_two_nodes'):>12.1f} {report['ratio_two_nodes']:>8.3f}"
        )
    lines.append(f"  Ray's overhead on reproduce: {100 * (report['ratio_ray'] - 1):+.1f}% of the local wall time")
    return "\n".join(lines)
