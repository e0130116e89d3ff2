"""Benchmarks, each reporting a ratio against a baseline measured in the same run."""

from __future__ import annotations

import os
import resource
import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from policyagg import solvers
from policyagg.envs.attention import AttentionModel, one_agent_per_site
from policyagg.problem import Problem
from policyagg.sampling import PolicySampler, sample_policy_returns


def per_sample_returns(problem: Problem, policies: np.ndarray) -> np.ndarray:
    """The straightforward computation, one policy at a time: dense ``P_pi``, one solve."""
    mdp = problem.mdp
    P, S = mdp.P_dense, mdp.n_states
    out = np.empty((len(policies), problem.n_agents))
    for k, policy in enumerate(policies):
        P_pi = np.einsum("sa,sat->st", policy, P)
        if mdp.gamma < 1:
            mu = np.linalg.solve(np.eye(S) - mdp.gamma * P_pi.T, (1 - mdp.gamma) * mdp.rho)
        else:
            system = np.eye(S) - P_pi.T
            system[-1] = 1.0
            mu = np.linalg.solve(system, np.eye(S)[-1])
        out[k] = np.einsum("sa,isa->i", mu[:, None] * policy, problem.rewards)
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process or of its largest finished (forked) child, in MB."""
    return (
        max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        / 1024
    )


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its finished child processes."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _best_median(values) -> dict:
    return {"best": float(np.max(values)), "median": float(np.median(values))}


def bench_sampler(
    *,
    n_sites=5,
    n_phases=3,
    n_samples=20_000,
    baseline_samples=500,
    workers=None,
    repeats=1,
    methods=("dense", "krylov"),
    seed=0,
    progress: bool | None = False,
) -> dict:
    """Policies per second of each sampler method with one worker and with ``workers``
    (default: all usable cores), each repeated ``repeats`` times (best and median), next to
    :func:`per_sample_returns` timed in the same run; the largest difference from it on the
    same policies; whether the parallel numbers are bitwise the serial ones. ``progress``:
    ``None`` or ``True`` shows a bar over the timed runs (updated between timings).

    ``per_s`` and ``max_abs_difference`` map each method to its best rate with ``workers``
    and its difference; ``rows`` has every (method, workers) measurement."""
    from policyagg.parallel import check_workers

    workers = check_workers(workers)
    model = AttentionModel(n_sites, n_phases, seed=seed)
    problem = Problem(model.mdp(), model.rewards(one_agent_per_site(n_sites, seed)))
    policies = PolicySampler(problem).draw_policies(np.random.default_rng(seed), baseline_samples)
    baseline_rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        baseline = per_sample_returns(problem, policies)
        baseline_rates.append(baseline_samples / (time.perf_counter() - start))
    baseline_best = max(baseline_rates)

    rows = []
    counts = sorted({1, workers})
    bar = tqdm(
        total=len(methods) * len(counts) * repeats,
        desc=f"bench sampler ({n_sites} sites, {n_samples} samples)",
        unit="run",
        disable=progress is False,
    )
    for method in methods:
        difference = float(np.abs(PolicySampler(problem, method=method).returns(policies) - baseline).max())
        serial = None
        for n_workers in counts:
            sample_policy_returns(problem, 200, rng=seed, method=method, workers=n_workers, progress=False)  # warm-up
            rates = []
            for _ in range(repeats):
                bar.set_postfix_str(f"{method}, {n_workers} worker(s)")
                samples = sample_policy_returns(
                    problem, n_samples, rng=seed, method=method, workers=n_workers, progress=False
                )
                rates.append(n_samples / samples.info["seconds"])
                bar.update()
            serial = samples.values if serial is None else serial
            rows.append(
                {
                    "method": method,
                    "workers": n_workers,
                    "per_s": _best_median(rates),
                    "ratio_vs_baseline": max(rates) / baseline_best,
                    "batch_size": samples.info["batch_size"],
                    "gmres_steps_per_sample": samples.info.get("gmres_steps_per_sample"),
                    "restarted": samples.info.get("restarted"),
                    "direct_solves": samples.info.get("direct_solves"),
                    "max_abs_difference": difference,
                    "bitwise_equal_to_1_worker": bool(np.array_equal(samples.values, serial)),
                }
            )
    bar.close()
    return {
        "model": f"attention {n_sites} sites x {n_phases} phases (S={problem.mdp.n_states}, A={problem.mdp.n_actions})",
        "samples": n_samples,
        "workers": workers,
        "baseline_per_s": baseline_best,
        "baseline_per_s_median": float(np.median(baseline_rates)),
        "per_s": {row["method"]: row["per_s"]["best"] for row in rows if row["workers"] == workers},
        "max_abs_difference": {row["method"]: row["max_abs_difference"] for row in rows},
        "rows": rows,
        "load_average": list(os.getloadavg()),
        "peak_rss_mb": peak_rss_mb(),
    }


#: Samples per size in :func:`bench_sampler_growth` (fewer where one sample costs more).
GROWTH_SAMPLES = {3: 4000, 4: 4000, 5: 4000, 6: 1000, 7: 400, 8: 160}


def bench_sampler_growth(
    *,
    sites=(3, 4, 5, 6, 7, 8),
    n_phases=3,
    n_samples=None,
    method="sparse",
    workers=1,
    seed=0,
    progress: bool | None = False,
) -> dict:
    """Cost per sampled policy on attention models of growing size: wall and CPU seconds per
    sample, and the CPU cost per sample divided by ``nnz(P)``, normalised to the smallest size
    (flat = the cost grows with the non-zeros of ``P``), with the GMRES steps per sample.
    ``n_samples``: one count for every size (default :data:`GROWTH_SAMPLES`). ``progress``:
    ``None`` or ``True`` shows a bar over the sizes."""
    from policyagg.sampling import resolve_method

    rows = []
    for k in tqdm(sites, desc="bench growth: sites", unit="size", disable=progress is False):
        start = time.perf_counter()
        model = AttentionModel(k, n_phases, seed=seed)
        problem = Problem(model.mdp(), model.rewards(one_agent_per_site(k, seed)))
        build = time.perf_counter() - start
        N = GROWTH_SAMPLES.get(k, 200) if n_samples is None else n_samples
        cpu = cpu_seconds()
        samples = sample_policy_returns(problem, N, rng=seed, method=method, workers=workers, progress=False)
        cpu = cpu_seconds() - cpu
        mdp = problem.mdp
        rows.append(
            {
                "sites": k,
                "S": mdp.n_states,
                "SA": mdp.n_states * mdp.n_actions,
                "nnz_P": int(mdp.P.nnz),
                "method": samples.info["method"],
                "auto_method": resolve_method("auto", mdp.n_states),
                "samples": N,
                "batch_size": samples.info["batch_size"],
                "build_s": build,
                "s_per_sample": samples.info["seconds"] / N,
                "cpu_s_per_sample": cpu / N,
                "gmres_steps_per_sample": samples.info["gmres_steps_per_sample"],
                "restarted": samples.info["restarted"],
                "direct_solves": samples.info["direct_solves"],
            }
        )
    first = rows[0]["cpu_s_per_sample"] / rows[0]["nnz_P"]
    for row in rows:
        row["cpu_per_nnz_vs_smallest"] = row["cpu_s_per_sample"] / row["nnz_P"] / first
    return {"rows": rows, "workers": workers, "load_average": list(os.getloadavg()), "peak_rss_mb": peak_rss_mb()}


#: (label, rule, options) timed by :func:`bench_rules`; rules not registered are skipped.
RULE_CASES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("max-quantile", "max_quantile", {}),
    ("0.9-approval", "approval", {"alpha": 0.9}),
    ("borda LP", "borda", {"solver": "lp", "fallback": "milp"}),
    ("borda MILP K=32", "borda", {"solver": "milp", "breakpoints": 32}),
    ("PVC", "pvc", {}),
    ("egalitarian", "egalitarian", {"normalize": True}),
    ("nash welfare", "nash_welfare", {}),
    ("generalized gini", "generalized_gini", {}),
    ("random dictator", "random_dictator", {}),
)


def bench_rules(
    *, n_sites=5, n_phases=3, n_agents=10, n_samples=100_000, seed=0, cases=RULE_CASES, progress: bool | None = False
) -> dict:
    """Seconds per rule on the attention model (experiment b), each also as a multiple of one
    utilitarian LP over the same polytope solved in the same run (the baseline). ``progress``:
    ``None`` or ``True`` shows bars for the sampling and over the rules (updated between timings)."""
    from policyagg.experiments.compare import attention_problem

    problem = solvers.with_ranges(
        attention_problem("b", n_sites=n_sites, n_phases=n_phases, n_agents=n_agents, seed=seed)
    )
    samples = sample_policy_returns(
        problem,
        n_samples,
        rng=seed,
        progress=False if progress is False else f"bench rules seed {seed}: policy samples",
    )
    start = time.perf_counter()
    baseline_solves = solvers.utilitarian(problem, normalize=True).diagnostics["n_solves"]
    baseline = time.perf_counter() - start
    timings = {}
    for label, name, options in tqdm(cases, desc="bench rules: rules", unit="rule", disable=progress is False):
        if name not in solvers.RULES:
            continue
        start = time.perf_counter()
        result = solvers.get_rule(name)(problem, samples, **options)
        timings[label] = {
            "seconds": time.perf_counter() - start,
            "solves": result.diagnostics.get("n_solves"),
            "min_rank": result.min_rank,
            "gini": result.gini,
        }
    return {
        "model": f"attention {n_sites} sites x {n_phases} phases (S={problem.mdp.n_states}), {problem.n_agents} agents, {n_samples} samples",
        "baseline_seconds": baseline,
        "baseline_solves": baseline_solves,
        "rules": timings,
        "peak_rss_mb": peak_rss_mb(),
    }
