"""The ``policyagg`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from policyagg.errors import PolicyAggError


def _compare(args) -> None:
    from policyagg.experiments.compare import attention_problem, compare, fairness_table

    problem = attention_problem(args.experiment, n_sites=args.sites, n_phases=args.phases, n_agents=args.agents, seed=args.seed)
    out = Path(args.out) / f"experiment-{args.experiment}-seed{args.seed}"
    print(f"attention allocation: {args.sites} sites, {args.phases} phases, experiment ({args.experiment}), "
          f"{problem.n_agents} agents, {args.samples} sampled policies, seed {args.seed}")
    results = compare(problem, n_samples=args.samples, seed=args.seed, backend=args.backend, out=out)
    print(fairness_table(results))
    print(f"results written to {out}/")


PAPER = ("attention-a", "attention-b")


def _overrides(args) -> dict:
    return {"samples": args.samples, "seeds": None if args.seeds is None else list(range(args.seeds)),
            "measure": args.measure}


def _run(args) -> None:
    from policyagg.experiments.config import load_config
    from policyagg.experiments.run import run_config, summary_markdown, summarize

    config = load_config(args.config).with_overrides(output=args.out, **_overrides(args))
    run = run_config(config, workers=args.workers)
    print(summary_markdown(config, summarize(run.seeds)))
    print(f"results written to {config.output}/")


def _reproduce(args) -> None:
    from policyagg.experiments.config import CONFIGS, load_config
    from policyagg.experiments.run import run_configs, summary_markdown, summarize

    overrides = _overrides(args) | ({"samples": 500_000} if args.full else {})
    suffix = ("-full" if args.full else "") + (f"-{args.measure}" if args.measure not in (None, "policy") else "")
    configs = [load_config(CONFIGS / f"{name}.toml").with_overrides(output=Path(args.out) / (name + suffix), **overrides)
               for name in PAPER]
    # (a) and (b) share each seed's MDP: their policies are sampled once.
    for run in run_configs(configs, workers=args.workers):
        print(summary_markdown(run.config, summarize(run.seeds)))
        print(f"tables, figures and per-seed results in {run.config.output}/\n")


def _measures(args) -> None:
    from policyagg.experiments.measure_comparison import compare_measures

    seeds = None if args.seeds is None else list(range(args.seeds))
    report = compare_measures(args.config, measures=args.measures, samples=args.samples, seeds=seeds, out=args.out,
                              workers=args.workers)
    print(report["markdown"])
    print(f"written to {report['path']} (the runs in {args.out}/)")


def _bench(args) -> None:
    if args.sites is None:
        args.sites = 8 if args.target in ("scale", "growth") else 5
    {"sampler": _bench_sampler, "growth": _bench_growth, "rules": _bench_rules, "scale": _bench_scale,
     "volume": _bench_volume}[args.target](args)


def _rss(report) -> str:
    return f"  peak RSS {report['peak_rss_mb']:.0f} MB"


def _bench_sampler(args) -> None:
    from policyagg.experiments.bench import bench_sampler

    report = bench_sampler(n_sites=args.sites, n_phases=args.phases, n_samples=args.samples or 20_000,
                           baseline_samples=args.baseline_samples, workers=args.workers, repeats=args.repeats,
                           methods=tuple(args.methods))
    print(f"{report['model']}, {report['samples']} samples, best (median) of {args.repeats}, "
          f"load average {report['load_average'][0]:.1f}")
    print(f"  {'method':<28} {'workers':>7} {'policies/s':>16} {'ratio':>6} {'max |diff|':>10} {'= 1 worker':>10}")
    base = report["baseline_per_s"]
    print(f"  {'per-sample solve (baseline)':<28} {1:>7} {base:>9.0f} ({report['baseline_per_s_median']:>5.0f}) {1.0:>6.1f}")
    for row in report["rows"]:
        rate = row["per_s"]
        print(f"  {'batched ' + row['method']:<28} {row['workers']:>7} {rate['best']:>9.0f} ({rate['median']:>5.0f}) "
              f"{row['ratio_vs_baseline']:>6.1f} {row['max_abs_difference']:>10.1e} {row['bitwise_equal_to_1_worker']!s:>10}")
    print(_rss(report))


def _bench_growth(args) -> None:
    from policyagg.experiments.bench import bench_sampler_growth

    report = bench_sampler_growth(sites=tuple(range(3, args.sites + 1)), n_phases=args.phases, n_samples=args.samples,
                                  workers=args.workers or 1)
    print(f"{'sites':>5} {'S':>6} {'S*A':>7} {'nnz(P)':>9} {'samples':>7} {'CPU ms/sample':>13} {'CPU/nnz (rel.)':>14} {'GMRES steps':>11}")
    for row in report["rows"]:
        print(f"{row['sites']:>5} {row['S']:>6} {row['SA']:>7} {row['nnz_P']:>9} {row['samples']:>7} "
              f"{1e3 * row['cpu_s_per_sample']:>13.3f} {row['cpu_per_nnz_vs_smallest']:>14.2f} {row['gmres_steps_per_sample']:>11.1f}")
    print(_rss(report))


def _bench_scale(args) -> None:
    from policyagg.experiments.bench_scale import bench_scale, format_scale

    print(format_scale(bench_scale(n_sites=args.sites, n_phases=args.phases, n_agents=args.agents,
                                   n_samples=args.samples or 20_000)))


def _bench_volume(args) -> None:
    from policyagg.experiments.bench_volume import bench_volume

    report = bench_volume(n_sites=args.sites, n_phases=args.phases, n_samples=args.samples or 4000, workers=args.workers)
    print(f"{report['model']}, {report['chains']} chains on {report['workers']} workers")
    print(f"  {'sampler':<26} {'seconds':>8} {'min ESS':>8} {'ESS/s':>8} {'max R-hat':>9}")
    rows = [(f"volume ({kernel} kernel)", row) for kernel, row in report["volume"].items()]
    for name, row in rows + [("plain hit-and-run", report["hit_and_run"])]:
        print(f"  {name:<26} {row['seconds']:>8.1f} {row['ess_min']:>8.0f} {row['ess_per_s']:>8.2f} {row['rhat_max']:>9.3f}")
    first = rows[0][1]
    print(f"  {rows[0][0]}: {report['ratio']:.0f}x hit-and-run's ESS/s; acceptance {first['acceptance']:.2f}")
    print(_rss(report))


def _bench_rules(args) -> None:
    from policyagg.experiments.bench import bench_rules

    report = bench_rules(n_sites=args.sites, n_phases=args.phases, n_agents=args.agents, n_samples=args.samples or 100_000)
    base = report["baseline_seconds"]
    print(report["model"])
    print(f"  {'rule':<20} {'seconds':>8} {'x baseline':>9} {'LP solves':>9}")
    print(f"  {'utilitarian (baseline)':<20} {base:>8.3f} {1.0:>9.1f} {report['baseline_solves']:>9}")
    for label, row in report["rules"].items():
        print(f"  {label:<20} {row['seconds']:>8.3f} {row['seconds'] / base:>9.1f} {row['solves']!s:>9}")
    print(_rss(report))


def _show(args) -> None:
    from policyagg.result import Result

    print(Result.load(args.path).table())


def _common_run_options(p) -> None:
    from policyagg.measures import MEASURES

    p.add_argument("--measure", choices=MEASURES, default=None,
                   help="reference measure of the ranks (default: the configs' `policy`)")
    p.add_argument("--workers", type=int, default=None, help="processes for sampling and rules (default: the cores, at most 4)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="policyagg", description="Fair policy aggregation over the occupancy polytope.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reproduce", help="the paper's fairness comparison, experiments (a) and (b), over seeds")
    p.add_argument("--full", action="store_true", help="the paper's scale: 500000 sampled policies per seed")
    p.add_argument("--samples", type=int, default=None, help="sampled policies per seed (default: the configs' 10000)")
    p.add_argument("--seeds", type=int, default=None, help="run seeds 0..N-1 (default: the configs' five)")
    p.add_argument("--out", default="results", help="parent folder of the two experiments' folders")
    _common_run_options(p)
    p.set_defaults(run=_reproduce)

    p = sub.add_parser("run", help="run an experiment configuration (TOML); resumes where a killed run stopped")
    p.add_argument("config", help="path of a TOML configuration (see experiments/configs/)")
    p.add_argument("--samples", type=int, default=None, help="override `measure.samples`")
    p.add_argument("--seeds", type=int, default=None, help="override `seeds` with 0..N-1")
    p.add_argument("--out", default=None, help="override `output`")
    _common_run_options(p)
    p.set_defaults(run=_run)

    p = sub.add_parser("compare", help="one seed of the comparison, with options for the attention model")
    p.add_argument("--experiment", choices=["a", "b"], default="a", help="a: one agent per site; b: random subsets of sites")
    p.add_argument("--sites", type=int, default=5)
    p.add_argument("--phases", type=int, default=3)
    p.add_argument("--agents", type=int, default=10, help="number of agents in experiment b")
    p.add_argument("--samples", type=int, default=20_000, help="sampled random policies (paper: 500000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=["highs", "pulp"], default="highs")
    p.add_argument("--out", default="results")
    p.set_defaults(run=_compare)

    p = sub.add_parser("measures", help="one experiment under each reference measure: fairness, ranking, concentration")
    from policyagg.measures import MEASURES

    p.add_argument("config", nargs="?", default="attention-a", help="a shipped config name or a TOML path")
    p.add_argument("--measures", nargs="+", choices=MEASURES, default=list(MEASURES))
    p.add_argument("--samples", type=int, default=4000, help="samples per seed and measure")
    p.add_argument("--seeds", type=int, default=3, help="run seeds 0..N-1")
    p.add_argument("--out", default="results")
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(run=_measures)

    p = sub.add_parser("bench", help="benchmarks with a same-run baseline")
    p.add_argument("target", choices=["sampler", "growth", "rules", "scale", "volume"],
                   help="sampler: policies/s vs a per-sample solve; growth: sampler cost over 3..8 sites; "
                        "rules: rule times at 5 sites; scale: LP rules at 8 sites; volume: ESS/s vs hit-and-run")
    p.add_argument("--sites", type=int, default=None, help="attention sites (default 8 for scale and growth (3..N), else 5)")
    p.add_argument("--phases", type=int, default=3)
    p.add_argument("--agents", type=int, default=10, help="agents (rules benchmark)")
    p.add_argument("--samples", type=int, default=None, help="default: 10000 (sampler), 100000 (rules)")
    p.add_argument("--baseline-samples", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3, help="sampler: repetitions (best and median reported)")
    p.add_argument("--methods", nargs="+", choices=["dense", "krylov", "sparse"], default=["dense", "krylov", "sparse"])
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(run=_bench)

    p = sub.add_parser("show", help="print a saved result's table")
    p.add_argument("path", help="result path without suffix (the .json and .npz next to each other)")
    p.set_defaults(run=_show)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (PolicyAggError, FileNotFoundError) as exc:
        print(f"policyagg: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
