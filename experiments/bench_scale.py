"""Scale benchmark (issue 6): LP-based rules on the large attention instance, or on a converted
Gymnasium environment (``env=``, e.g. MO-Gymnasium's four-room: issue 15).

Every figure is wall time measured in this run; each rule is also given as a multiple of one
utilitarian solve measured in the same run (the baseline). Each phase (model build or conversion,
return ranges, samples) also has its CPU seconds (this process and its finished workers), peak RSS
and the load average. No timing is asserted anywhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from policyagg import solvers
from policyagg.errors import InvalidProblemError, InvalidSamplesError
from policyagg.experiments.bench import cpu_seconds, peak_rss_mb
from policyagg.lottery import Lottery
from policyagg.result import Result
from policyagg.samples import ReturnSamples
from policyagg.sampling import sample_policy_returns
from policyagg.solvers.decomposition import ColumnPool
from policyagg.solvers.occupancy import decomposes, decomposition, occupancy_program

#: (label, rule, options) timed by :func:`bench_scale`: every LP-based rule (the first is the baseline).
SCALE_CASES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("utilitarian", "utilitarian", {"normalize": True}),
    ("egalitarian", "egalitarian", {"normalize": True}),
    ("max-quantile", "max_quantile", {}),
    ("PVC", "pvc", {}),
    ("0.9-approval", "approval", {"alpha": 0.9}),
    ("Borda (LP)", "borda", {"solver": "lp"}),
    ("Nash welfare", "nash_welfare", {}),
    ("generalized Gini", "generalized_gini", {}),
    ("random dictator", "random_dictator", {}),
)


def scale_cases(names: tuple[str, ...] | None) -> tuple[tuple[str, str, dict[str, Any]], ...]:
    """The :data:`SCALE_CASES` named by label (``max-quantile``) or rule (``max_quantile``), in
    :data:`SCALE_CASES` order and always with the utilitarian baseline first; every case for ``None``.
    An unknown name -> :class:`~policyagg.errors.InvalidProblemError` listing the known ones."""
    if names is None:
        return SCALE_CASES
    known = {key: case for case in SCALE_CASES for key in (case[0], case[1])}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidProblemError(
            f"bench scale: unknown rule(s) {unknown}; choose from {[case[0] for case in SCALE_CASES]}"
        )
    chosen = {known[name][0] for name in names} | {SCALE_CASES[0][0]}
    return tuple(case for case in SCALE_CASES if case[0] in chosen)


def load_average() -> float:
    """The machine's 1-minute load average (other jobs share the cores: read timings with it)."""
    return float(os.getloadavg()[0]) if hasattr(os, "getloadavg") else float("nan")


MIXTURE_SOURCE = "a mixture of the agents' extreme occupancies (timing only: not one of the package's measures)"


def gymnasium_problem(env_id: str, *, env_options: Mapping[str, Any] | None = None, seed: int = 0):
    """``(problem, model)`` of a Gymnasium environment converted as ``policyagg bench convert`` does
    (:func:`policyagg.experiments.bench_convert.convert`; one agent per reward component). ``env_options`` go to :func:`~policyagg.envs.tabular.make_env`."""
    from policyagg.envs.tabular import make_env
    from policyagg.experiments.bench_convert import convert

    model = convert(make_env(env_id, **dict(env_options or {})), seed=seed)
    return model.problem(), model


def mixture_samples(problem, n_samples: int, seed: int = 0) -> ReturnSamples:
    """Returns of random convex combinations (Dirichlet(1) weights) of the agents' best and
    worst occupancies: points of ``O`` (``J`` of a mixture is the mixture of the ``J``'s),
    cheap to draw, for timing only (``bench_scale(mixture=True)``). Not a measure of the package."""
    ranges = problem.require_ranges()
    points = problem.reward_matrix @ np.vstack([ranges.best, ranges.worst]).T  # (n, 2n)
    weights = np.random.default_rng(seed).dirichlet(np.ones(points.shape[1]), size=n_samples)
    return ReturnSamples(weights @ points.T, measure="extreme-occupancy mixture (timing only)")


def bench_scale(
    *,
    n_sites: int = 8,
    n_phases: int = 3,
    n_agents: int = 10,
    n_samples: int = 2_000,
    samples_path=None,
    mixture: bool = False,
    seed: int = 0,
    rules=SCALE_CASES,
    backend: str = "highs",
    share_columns: bool = False,
    workers: int | None = None,
    progress: bool | None = False,
    env: str | None = None,
    env_options: Mapping[str, Any] | None = None,
) -> dict:
    """Model build, return ranges and each LP-based rule on the attention instance (experiment b),
    or, with ``env`` (a Gymnasium id, ``env_options`` for its ``make_env``), on that environment
    converted by :func:`gymnasium_problem` (the phase "conversion"; ``n_sites``, ``n_phases``,
    ``n_agents`` do not apply).

    Per rule: wall seconds, LP solves, Python model-building seconds, HiGHS's own seconds
    (for column generation: the master LPs), CPU seconds of this process, pricing seconds (policy iteration, scipy),
    whether column generation was used, the ratio to the baseline (one utilitarian solve,
    the first case run) and the process's peak RSS after the rule.

    The rules' samples are ``n_samples`` real samples of the ``policy`` measure
    (``sample_policy_returns(problem, n_samples, rng=seed)``, the samples ``policyagg compare
    --experiment b`` draws on this instance; sampled with ``workers`` processes, timed
    separately as ``sampling_seconds``); or read from ``samples_path`` (a ``ReturnSamples``
    file of this instance); or, with ``mixture=True``, :func:`mixture_samples` (cheap, timing
    only). The report's ``samples`` line says which. ``progress``: ``None`` or ``True`` shows
    bars for the sampling and over the rules (updated between timings).
    Column generation keeps the columns it generates in one :class:`ColumnPool` made here (a cold
    start); by default every rule starts
    from the columns left by the return ranges only (times independent of the rule order);
    ``share_columns=True`` lets each rule reuse the columns of the rules before it, as in
    one ``compare`` run.
    """
    from policyagg.experiments.compare import attention_problem

    phases: dict[str, dict[str, float]] = {}
    cpu_start = 0.0

    def phase(name: str, started: float) -> float:
        seconds = time.perf_counter() - started
        phases[name] = {
            "seconds": seconds,
            "cpu_seconds": cpu_seconds() - cpu_start,
            "load": load_average(),
            "peak_rss_mb": peak_rss_mb(),
        }
        return seconds

    start, cpu_start = time.perf_counter(), cpu_seconds()
    if env is None:
        problem = attention_problem("b", n_sites=n_sites, n_phases=n_phases, n_agents=n_agents, seed=seed)
        described = f"attention {n_sites} sites x {n_phases} phases"
    else:
        problem, model = gymnasium_problem(env, env_options=env_options, seed=seed)
        described = f"{env} (route {model.route}, gamma {problem.mdp.gamma:g})"
    _ = problem.polytope
    build_seconds = phase("model build" if env is None else "conversion", start)
    pool = ColumnPool(problem.mdp)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    with decomposition(pool=pool):
        problem = solvers.with_ranges(problem, backend=backend)
    ranges_seconds = phase("return ranges", start)
    start, cpu_start = time.perf_counter(), cpu_seconds()
    if samples_path is not None:
        samples = ReturnSamples.load(samples_path)
        if samples.n_agents != problem.n_agents:
            raise InvalidSamplesError(
                f"{samples_path} holds samples of {samples.n_agents} agents but this instance has "
                f"{problem.n_agents}; pass samples of the same instance (--sites, --phases, --agents)"
            )
        source = f"`{samples.measure}` measure, read from {samples_path}"
    elif mixture:
        samples = mixture_samples(problem, n_samples, seed)
        source = MIXTURE_SOURCE
    else:
        label = False if progress is False else f"bench scale seed {seed}: policy samples"
        samples = sample_policy_returns(problem, n_samples, rng=seed, workers=workers, progress=label)
        info = samples.info
        source = (
            f"the `policy` measure (seed {seed}), real samples drawn in this run "
            f"(method {info['method']}, {info['workers']} worker(s))"
        )
    sampling_seconds = phase("samples", start)
    decomposed = decomposes(occupancy_program(problem, np.zeros(problem.mdp.n_state_actions), name="probe"), backend)

    after_ranges = pool.snapshot()
    baseline = None
    timings = {}
    for label, name, options in tqdm(
        rules, desc=f"bench scale ({env or f'{n_sites} sites'}): rules", unit="rule", disable=progress is False
    ):
        if not share_columns:
            pool.restore(after_ranges)
        start, cpu = time.perf_counter(), cpu_seconds()
        with decomposition(pool=pool):
            result = solvers.get_rule(name)(problem, samples, backend=backend, **options)
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        diag = result.diagnostics
        baseline = seconds if baseline is None else baseline
        timings[label] = {
            "seconds": seconds,
            "cpu_seconds": cpu,  # CPU time of this run: shows when other jobs share the cores
            "rule_seconds": diag.get("wall_time"),  # inside the rule, before the Result is assembled
            "solves": diag.get("n_solves"),
            "build_seconds": diag.get("build_time"),
            "highs_seconds": diag.get("highs_time"),
            "pricing_seconds": diag.get("pricing_time", 0.0),
            "pricings": diag.get("pricings", 0),
            "gap": diag.get("column_generation_gap"),
            "vs_baseline": seconds / baseline,
            "min_rank": result.min_rank,
            "violation": float(problem.polytope.violation(_occupancy(result))),
            "status": result.status,
            "load": load_average(),
            "peak_rss_mb": peak_rss_mb(),
        }
    mdp = problem.mdp
    return {
        "model": f"{described} (S={mdp.n_states}, A={mdp.n_actions}, "
        f"{mdp.n_state_actions} occupancy columns, P nnz={mdp.P.nnz}), {problem.n_agents} agents",
        "samples": f"{samples.n_samples} samples from {source}",
        "sampling_seconds": sampling_seconds,
        "column_generation": decomposed,
        "share_columns": share_columns,
        "build_seconds": build_seconds,
        "ranges_seconds": ranges_seconds,
        "phases": phases,
        "baseline": rules[0][0] if rules else None,
        "baseline_seconds": baseline,
        "rules": timings,
        "peak_rss_mb": peak_rss_mb(),
    }


def format_scale(report: dict) -> str:
    """The report as a Markdown table."""
    phases = report.get("phases", {})
    lines = [
        f"{report['model']}; {report['samples']}; column generation: {report['column_generation']}",
        "; ".join(
            f"{name} {p['seconds']:.1f} s ({p['cpu_seconds']:.1f} CPU s, load {p['load']:.1f}, "
            f"peak RSS {p['peak_rss_mb']:.0f} MB)"
            for name, p in phases.items()
        ),
        "",
        "| rule | s | CPU s | in rule s | solves | build s | HiGHS s | pricing s | x baseline | status | min rank "
        "| load | peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, t in report["rules"].items():
        lines.append(
            f"| {label} | {t['seconds']:.1f} | {t['cpu_seconds']:.1f} | {t['rule_seconds']:.1f} | {t['solves']} | "
            f"{t['build_seconds']:.2f} | {t['highs_seconds']:.2f} | {t['pricing_seconds']:.1f} | "
            f"{t['vs_baseline']:.1f} | {t['status']} | {t['min_rank']:.3f} | {t['load']:.1f} | {t['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # python -m policyagg.experiments.bench_scale [n_sites] [samples.npz] [--share]
    import sys

    args = [a for a in sys.argv[1:] if a != "--share"]
    print(
        format_scale(
            bench_scale(
                n_sites=int(args[0]) if args else 8,
                samples_path=args[1] if len(args) > 1 else None,
                share_columns="--share" in sys.argv,
                progress=None,
            )
        )
    )


def _occupancy(outcome: Result | Lottery) -> np.ndarray:
    """A result's occupancy, or a tabular lottery's mixed occupancy (its ex-ante point of ``O``)."""
    occupancy = outcome.occupancy
    if occupancy is None:
        raise InvalidProblemError("a benchmarked lottery must be tabular (support occupancies)")
    return occupancy
