"""Benchmarks, each reporting a ratio against a baseline measured in the same run."""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from policyagg import solvers
from policyagg.envs.attention import AttentionModel, one_agent_per_site
from policyagg.errors import InvalidProblemError, check_count, check_real
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


def _spread(values) -> dict:
    """Median, min and max of repeated measurements (never a best run alone)."""
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def _load() -> float:
    """The 1-minute load average."""
    return float(os.getloadavg()[0])


def machine() -> dict:
    """The CPU model (``model name`` in /proc/cpuinfo, else ``lscpu``'s ``Model name``, else
    :func:`platform.processor`), physical cores (distinct ``(physical id, core id)`` pairs in
    /proc/cpuinfo; ``None`` where it does not list them), logical CPUs and those usable here
    (affinity)."""
    model, cores = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            fields: dict[str, str] = {}
            for line in [*file, ""]:
                key, _, value = line.partition(":")
                if key.strip():
                    fields[key.strip()] = value.strip()
                    continue
                model = model or fields.get("model name", "")
                if "core id" in fields:
                    cores.add((fields.get("physical id", "0"), fields["core id"]))
                fields = {}
    except OSError:
        pass
    if not model and shutil.which("lscpu"):
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(
            (line.split(":", 1)[1].strip() for line in listing.splitlines() if line.startswith("Model name")), ""
        )
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return {
        "cpu_model": model or platform.processor() or "unknown",
        "physical_cores": len(cores) or None,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
    }


#: The GEMM timed by :func:`matmul_peak`: ``PEAK_SIZE x PEAK_SIZE`` float64, median of ``PEAK_REPEATS``.
PEAK_SIZE = 2000
PEAK_REPEATS = 5


def matmul_peak(threads: int, *, size: int = PEAK_SIZE, repeats: int = PEAK_REPEATS, seed: int = 0) -> dict:
    """The machine's flop limit as measured: GFLOP/s of a float64 ``size x size`` matrix
    product (``2 size^3`` flops) with ``threads`` BLAS threads (threadpoolctl), after one
    untimed product. ``gflop_s`` is the median, min and max over ``repeats`` products;
    ``load_average`` the 1-minute load at the start and end of each."""
    check_count("threads", threads)
    check_count("size", size)
    check_count("repeats", repeats)
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((size, size)), rng.standard_normal((size, size))
    c = np.empty((size, size))
    rates, loads = [], []
    with threadpool_limits(limits=threads, user_api="blas"):
        np.matmul(a, b, out=c)
        for _ in range(repeats):
            load = _load()
            start = time.perf_counter()
            np.matmul(a, b, out=c)
            seconds = time.perf_counter() - start
            loads.append([load, _load()])
            rates.append(2.0 * size**3 / seconds / 1e9)
    return {"threads": threads, "size": size, "gflop_s": _spread(rates), "load_average": loads}


#: BiCGSTAB's work per product with ``A_pi`` besides the product itself, in flops per state: half of an
#: iteration's five inner products (10), direction (4), half step (2), solution (4) and residual (2),
#: plus the diagonal scale each of its two products applies (2).
BICGSTAB_FLOPS_PER_PRODUCT = 12.0


def gmres_work(sampler: PolicySampler, steps: float) -> dict[str, float]:
    """Flops per sample of ``steps`` GMRES steps of ``sampler`` (method ``"krylov"``,
    ``"sparse"`` or ``"kronecker"``), by two models:

    * ``minimal`` (issue 22): one product with ``P_pi`` per step, 2 flops per non-zero:
      ``2 nnz(P_pi) m`` with ``m = steps``;
    * ``full``: what :meth:`PolicySampler.gmres` (and the compiled
      :meth:`PolicySampler.gmres_compiled`) does per step ``k = 0..m-1``: the sparse
      product with ``P`` in :meth:`PolicySampler.apply` (``2 nnz(P)``), the preconditioner
      (dense inverse ``2 S^2``, incomplete LU ``2 nnz(L + U)``) and classical Gram-Schmidt
      against ``k + 1`` basis vectors (``4 (k + 1) S``):
      ``m (2 nnz(P) + c_pre) + 2 S m (m + 1)``; the kronecker method has no preconditioner and
      its product costs ``2 S (A + sum_i m_i + sum_a sum_{i in O_a} m_i)`` (the weightings and
      one dense ``m_i x m_i`` product per base and per overridden component).

    With the BiCGSTAB solver ``steps`` counts its products with ``A_pi`` and the Gram-Schmidt term is
    its vector work instead, :data:`BICGSTAB_FLOPS_PER_PRODUCT` ``S`` per product (restarted GMRES
    cycles are then counted as BiCGSTAB).

    ``steps`` is the mean over samples (``info["gmres_steps_per_sample"]``), so the
    Gram-Schmidt term, convex in ``m``, is at most the mean of the per-sample counts; steps
    of a restarted cycle are counted as if the first cycle went on (after a restart ``k``
    starts again at 0: an overcount). Left out: the ``O(S A)`` element-wise work per step
    (weighting ``x`` by ``pi``, the column scale, normalising), the previous rotations applied
    to each new Hessenberg column (``2 (k + 1)^2`` at step ``k``: small next to
    ``2 nnz(P)`` unless ``S`` is tiny), the residuals, triangular solve and solution update
    once per cycle, direct re-solves, and the steps a sample sits through while the slowest
    sample of its block converges.
    ``nnz(P_pi)`` is structural: the pairs ``(s, s')`` with ``P(s'|s, a) > 0`` for some ``a``
    (a Dirichlet policy gives every action positive probability)."""
    steps = float(check_real("steps", steps))
    if not (np.isfinite(steps) and steps >= 0):
        raise InvalidProblemError(f"`steps` must be a non-negative number; got {steps}")
    S = sampler.S
    product = 2.0 * sampler.P_T.nnz * steps
    if sampler.method == "kronecker" and sampler.kronecker is not None:
        # its product: A weightings, a dense m_i x m_i product per base and per overridden component
        kron = sampler.kronecker
        components = sum(kron.sizes) + sum(matrix.shape[0] for replaced in kron.overrides for _, matrix in replaced)
        product = 2.0 * S * (kron.n_actions + components) * steps
        preconditioner = 0.0
    elif sampler.method == "krylov":
        preconditioner = 2.0 * S * S
    elif sampler.method == "sparse":
        ilu = sampler._ilu
        if ilu is None:
            raise InvalidProblemError("the sampler's incomplete LU is missing (a sampler unpickled without it?)")
        preconditioner = 2.0 * (ilu.L.nnz + ilu.U.nnz)
    else:
        raise InvalidProblemError(
            f"`gmres_work` needs a GMRES sampler (method 'krylov', 'sparse' or 'kronecker'); got {sampler.method!r} "
            "(for 'dense' see `dense_work`)"
        )
    preconditioning = preconditioner * steps
    gram_schmidt = 2.0 * S * steps * (steps + 1.0)
    if sampler.solver == "bicgstab":  # no basis: per product, half an iteration's passes over the block
        gram_schmidt = BICGSTAB_FLOPS_PER_PRODUCT * S * steps
    return {
        "minimal": 2.0 * sampler._dense_pattern[0].size * steps,
        "full": product + preconditioning + gram_schmidt,
        "product": product,
        "preconditioner": preconditioning,
        "gram_schmidt": gram_schmidt,
    }


def dense_work(n_states: int) -> float:
    """Flops per sample of the ``"dense"`` method's LAPACK solve: LU ``(2/3) S^3`` and the two
    triangular solves ``2 S^2`` (the assembly of ``A_pi`` is left out)."""
    S = float(check_count("n_states", n_states))
    return 2.0 / 3.0 * S**3 + 2.0 * S**2


def _method_work(sampler: PolicySampler, steps: float) -> dict[str, float | None]:
    """Both flop models per sample for any method; the minimal model is ``None`` for
    ``"dense"`` (it runs no GMRES steps; its full model is :func:`dense_work`)."""
    if sampler.method == "dense":
        return {"minimal": None, "full": dense_work(sampler.S)}
    work = gmres_work(sampler, steps)
    return {"minimal": work["minimal"], "full": work["full"]}


def bench_sampler(
    *,
    n_sites=5,
    n_phases=3,
    n_samples=20_000,
    baseline_samples=500,
    workers=None,
    repeats=1,
    methods=("dense", "krylov"),
    kernels=("auto",),
    seed=0,
    peak_size=PEAK_SIZE,
    peak_repeats=PEAK_REPEATS,
    progress: bool | None = False,
) -> dict:
    """Policies per second of each sampler method with one worker and with ``workers``
    (default: all usable cores), each repeated ``repeats`` times, next to
    :func:`per_sample_returns` timed in the same run; the largest difference from it on the
    same policies; whether the parallel numbers are bitwise the serial ones; and the share of
    the machine's flop limit reached, measured in the same run.

    Each GMRES method runs with each of ``kernels`` (e.g. ``("numba", "numpy")``: the compiled
    kernel against the numpy one in the same run). Every rate is the median, min and max over ``repeats``; ``ratio_vs_baseline`` is median
    over median; the baseline runs with one BLAS thread. The limit is :func:`matmul_peak` with 1 BLAS thread (for the 1-worker rows)
    and with ``workers`` threads (for the ``workers`` rows). Work per sample is counted by
    :func:`gmres_work` (both models, with the run's GMRES steps per sample) or, for
    ``"dense"``, :func:`dense_work` (full model only); then
    ``gflop_s = work x median policies/s / 1e9`` and ``share_of_peak = gflop_s / peak``.
    Each timed run records the 1-minute load average at its start and end. ``progress``:
    ``None`` or ``True`` shows a bar over the timed runs (updated between timings).

    ``per_s`` maps each method to its median rate with ``workers``; ``rows`` has every
    (method, workers) measurement."""
    from policyagg.parallel import check_workers

    workers = check_workers(workers)
    check_count("repeats", repeats)
    model = AttentionModel(n_sites, n_phases, seed=seed)
    problem = Problem(model.mdp(), model.rewards(one_agent_per_site(n_sites, seed)))
    policies = PolicySampler(problem).draw_policies(np.random.default_rng(seed), baseline_samples)
    counts = sorted({1, workers})
    peaks = {threads: matmul_peak(threads, size=peak_size, repeats=peak_repeats, seed=seed) for threads in counts}
    baseline_rates, baseline_loads = [], []
    # One BLAS thread, as the 1-worker rows: with more, OpenBLAS's threads on these small
    # solves wait for each other, 15-35x slower on a loaded 2-core machine (measured).
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(repeats):
            load = _load()
            start = time.perf_counter()
            baseline = per_sample_returns(problem, policies)
            baseline_rates.append(baseline_samples / (time.perf_counter() - start))
            baseline_loads.append([load, _load()])
    baseline_per_s = _spread(baseline_rates)

    rows = []
    n_runs = sum(1 if method == "dense" else len(kernels) for method in methods)
    bar = tqdm(
        total=n_runs * len(counts) * repeats,
        desc=f"bench sampler ({n_sites} sites, {n_samples} samples)",
        unit="run",
        disable=progress is False,
    )
    runs = [(method, kernel) for method in methods for kernel in (kernels if method != "dense" else ("numpy",))]
    for method, kernel in runs:
        sampler = PolicySampler(problem, method=method, kernel=kernel)
        difference = float(np.abs(sampler.returns(policies) - baseline).max())
        serial = None
        options = {"rng": seed, "method": method, "kernel": kernel, "progress": False}
        for n_workers in counts:
            sample_policy_returns(problem, 200, workers=n_workers, **options)  # warm-up
            rates, loads = [], []
            for _ in range(repeats):
                bar.set_postfix_str(f"{method} ({kernel}), {n_workers} worker(s)")
                load = _load()
                samples = sample_policy_returns(problem, n_samples, workers=n_workers, **options)
                loads.append([load, _load()])
                rates.append(n_samples / samples.info["seconds"])
                bar.update()
            serial = samples.values if serial is None else serial
            per_s = _spread(rates)
            steps = samples.info["gmres_steps_per_sample"]
            work = _method_work(sampler, steps)
            peak = peaks[n_workers]["gflop_s"]["median"]
            gflop_s = {name: None if w is None else w * per_s["median"] / 1e9 for name, w in work.items()}
            rows.append(
                {
                    "method": method,
                    "kernel": samples.info.get("kernel"),
                    "workers": n_workers,
                    "per_s": per_s,
                    "ratio_vs_baseline": per_s["median"] / baseline_per_s["median"],
                    "work_per_sample": work,
                    "gflop_s": gflop_s,
                    "peak_threads": n_workers,
                    "share_of_peak": {name: None if g is None else g / peak for name, g in gflop_s.items()},
                    "load_average": loads,
                    "batch_size": samples.info["batch_size"],
                    "gmres_steps_per_sample": steps,
                    "restarted": samples.info.get("restarted"),
                    "direct_solves": samples.info.get("direct_solves"),
                    "max_abs_difference": difference,
                    "bitwise_equal_to_1_worker": bool(np.array_equal(samples.values, serial)),
                }
            )
    bar.close()
    return {
        "model": f"attention {n_sites} sites x {n_phases} phases (S={problem.mdp.n_states}, A={problem.mdp.n_actions})",
        "nnz_P": int(problem.mdp.P.nnz),
        "samples": n_samples,
        "repeats": repeats,
        "workers": workers,
        "machine": machine(),
        "peaks": peaks,
        "baseline_per_s": baseline_per_s,
        "baseline_load_average": baseline_loads,
        "per_s": {_run_key(row, kernels): row["per_s"]["median"] for row in rows if row["workers"] == workers},
        "max_abs_difference": {_run_key(row, kernels): row["max_abs_difference"] for row in rows},
        "rows": rows,
        "load_average": list(os.getloadavg()),
        "peak_rss_mb": peak_rss_mb(),
    }


def _run_key(row: dict, kernels: tuple[str, ...]) -> str:
    """``"krylov"``, or ``"krylov/numpy"`` when several kernels ran."""
    return row["method"] if len(kernels) == 1 or row["method"] == "dense" else f"{row['method']}/{row['kernel']}"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.2g}%"


def _gflops(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _label(row: dict) -> str:
    """``batched krylov (numba)``: the method and, for GMRES, the kernel that ran it."""
    kernel = row.get("kernel")
    return f"batched {row['method']}" + (f" ({kernel})" if kernel and row["method"] != "dense" else "")


def format_sampler(report: dict) -> str:
    """:func:`bench_sampler`'s report as text: a header with the model and the machine, one
    table (median (min-max) policies/s, ratio, GFLOP/s and share of the peak by the minimal /
    full work model, GMRES steps, agreement with the baseline), then the peaks and the load."""
    m = report["machine"]
    cores = "" if m["physical_cores"] is None else f"{m['physical_cores']} cores, "
    lines = [
        f"{report['model']}, nnz(P) {report['nnz_P']}, {report['samples']} samples, "
        f"median (min-max) of {report['repeats']} repeat(s)",
        f"machine: {m['cpu_model']}, {cores}{m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable)",
        f"  {'method':<28} {'workers':>7} {'policies/s median (min-max)':>28} {'ratio':>6} "
        f"{'GFLOP/s min/full':>16} {'peak share min/full':>19} {'steps':>5} {'max |diff|':>10} {'= 1 worker':>10}",
    ]

    def rate(per_s: dict) -> str:
        return f"{per_s['median']:.0f} ({per_s['min']:.0f}-{per_s['max']:.0f})"

    lines.append(f"  {'per-sample solve (baseline)':<28} {1:>7} {rate(report['baseline_per_s']):>28} {1.0:>6.1f}")
    for row in report["rows"]:
        g, share = row["gflop_s"], row["share_of_peak"]
        steps = "-" if row["method"] == "dense" else f"{row['gmres_steps_per_sample']:.1f}"
        lines.append(
            f"  {_label(row):<28} {row['workers']:>7} {rate(row['per_s']):>28} "
            f"{row['ratio_vs_baseline']:>6.1f} {_gflops(g['minimal']) + '/' + _gflops(g['full']):>16} "
            f"{_percent(share['minimal']) + '/' + _percent(share['full']):>19} {steps:>5} "
            f"{row['max_abs_difference']:>10.1e} {row['bitwise_equal_to_1_worker']!s:>10}"
        )
    peaks = report["peaks"]
    first = next(iter(peaks.values()))
    loads = [
        value
        for pairs in [
            *(peak["load_average"] for peak in report["peaks"].values()),
            report["baseline_load_average"],
            *(row["load_average"] for row in report["rows"]),
        ]
        for pair in pairs
        for value in pair
    ]
    peak_text = ", ".join(
        f"{threads} thread{'s' if threads > 1 else ''} {peak['gflop_s']['median']:.1f} "
        f"({peak['gflop_s']['min']:.1f}-{peak['gflop_s']['max']:.1f})"
        for threads, peak in peaks.items()
    )
    lines.append(
        f"peak GFLOP/s (float64 {first['size']}x{first['size']} matmul, median (min-max) of "
        f"{len(first['load_average'])}): {peak_text}; 1-min load average {min(loads):.2f}-{max(loads):.2f} "
        "at the starts and ends of the timed runs"
    )
    lines.append(f"  peak RSS {report['peak_rss_mb']:.0f} MB")
    return "\n".join(lines)


#: Samples per size in :func:`bench_sampler_growth` (fewer where one sample costs more).
GROWTH_SAMPLES = {3: 4000, 4: 4000, 5: 4000, 6: 1000, 7: 400, 8: 160}


def bench_sampler_growth(
    *,
    sites=(3, 4, 5, 6, 7, 8),
    n_phases=3,
    n_samples=None,
    methods=("sparse", "kronecker"),
    solvers=("gmres", "auto"),
    workers=1,
    seed=0,
    progress: bool | None = False,
) -> dict:
    """Cost per sampled policy on attention models of growing size, for each of ``methods``
    on the same samples: wall and CPU seconds per sample, the CPU cost per sample divided by
    ``nnz(P)`` normalised to the smallest size with the first method (flat = the cost grows
    with the non-zeros of ``P``), the CPU cost relative to the first method at that size, the
    GMRES steps per sample, and the largest difference from the first method's returns on the
    same 8 policies (the samples differ: a method's default batch size sets which policies it draws).
    Each method runs with each of ``solvers`` it takes (:func:`policyagg.sampling.resolve_solver`; one row
    per distinct solver: the kronecker method with the numba kernel runs GMRES and BiCGSTAB on the
    same samples).
    ``n_samples``: one count for every size (default :data:`GROWTH_SAMPLES`). ``progress``:
    ``None`` or ``True`` shows a bar over the sizes."""
    from policyagg.sampling import resolve_kernel, resolve_method, resolve_solver

    rows = []
    for k in tqdm(sites, desc="bench growth: sites", unit="size", disable=progress is False):
        start = time.perf_counter()
        model = AttentionModel(k, n_phases, seed=seed)
        problem = Problem(model.mdp(), model.rewards(one_agent_per_site(k, seed)))
        build = time.perf_counter() - start
        N = GROWTH_SAMPLES.get(k, 200) if n_samples is None else n_samples
        mdp = problem.mdp
        first = None
        check = PolicySampler(problem).draw_policies(np.random.default_rng(seed), 8)  # the same 8 for every method
        cases = []
        for method in methods:
            for solver in solvers:
                try:
                    case = (
                        method,
                        resolve_solver(
                            solver, resolve_method(method, mdp.n_states, True), resolve_kernel("auto", method)
                        ),
                    )
                except InvalidProblemError:
                    continue
                if case not in cases:
                    cases.append(case)
        for method, solver in cases:
            options = {"method": method, "solver": solver, "progress": False}
            sample_policy_returns(problem, 2, rng=seed, workers=1, **options)  # compile, warm up
            cpu = cpu_seconds()
            samples = sample_policy_returns(problem, N, rng=seed, workers=workers, **options)
            cpu = cpu_seconds() - cpu
            # (each method's default batch size sets which policies it draws: compare on the same ones)
            values = PolicySampler(problem, method=method, solver=solver).returns(check)
            first = (values, cpu) if first is None else first
            rows.append(
                {
                    "sites": k,
                    "S": mdp.n_states,
                    "SA": mdp.n_states * mdp.n_actions,
                    "nnz_P": int(mdp.P.nnz),
                    "method": samples.info["method"],
                    "kernel": samples.info["kernel"],
                    "solver": samples.info["solver"],
                    "auto_method": resolve_method(
                        "auto",
                        mdp.n_states,
                        mdp.kronecker is not None,
                        compiled=resolve_kernel("auto", "krylov") == "numba",
                    ),
                    "samples": N,
                    "batch_size": samples.info["batch_size"],
                    "build_s": build,
                    "s_per_sample": samples.info["seconds"] / N,
                    "cpu_s_per_sample": cpu / N,
                    "cpu_vs_first_method": cpu / first[1],
                    "max_abs_difference": float(np.abs(values - first[0]).max()),
                    "gmres_steps_per_sample": samples.info["gmres_steps_per_sample"],
                    "restarted": samples.info["restarted"],
                    "direct_solves": samples.info["direct_solves"],
                }
            )
    smallest = rows[0]["cpu_s_per_sample"] / rows[0]["nnz_P"]
    for row in rows:
        row["cpu_per_nnz_vs_smallest"] = row["cpu_s_per_sample"] / row["nnz_P"] / smallest
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
