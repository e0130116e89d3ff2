"""The ``policyagg`` command line.

Building the parser imports nothing heavy (no numpy, scipy or matplotlib): every subcommand
imports what it needs inside its handler, so ``policyagg --help`` answers at once.
"""

from __future__ import annotations

import argparse
import math
import sys
from contextlib import contextmanager
from pathlib import Path

#: The reference measures (``policyagg.measures.MEASURES``, which imports numpy; a test keeps
#: the two equal).
MEASURE_NAMES = ("policy", "volume", "optimal-mixture")


def _integer_at_least(minimum: int, wanted: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wanted}; got {value}")
        return value

    return parse


#: An argparse type: an integer >= 1 (``--samples 0`` would otherwise mean "the default").
positive_int = _integer_at_least(1, "a positive integer")
#: An argparse type: a seed, an integer >= 0 (numpy refuses negative seeds).
seed_int = _integer_at_least(0, "a non-negative integer")


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (seconds, megabytes)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number; got {text}")
    return value


def _compare(args) -> None:
    from policyagg.experiments.compare import attention_problem, compare, fairness_table

    problem = attention_problem(
        args.experiment,
        n_sites=args.sites,
        n_phases=args.phases,
        n_agents=args.agents,
        seed=args.seed,
        variant=args.variant,
    )
    out = Path(args.out) / f"experiment-{args.experiment}-seed{args.seed}"
    print(
        f"attention allocation ({args.variant}): {args.sites} sites, {args.phases} phases, experiment ({args.experiment}), "
        f"{problem.n_agents} agents, {args.samples} sampled policies, seed {args.seed}"
    )
    results = compare(
        problem,
        n_samples=args.samples,
        seed=args.seed,
        backend=args.backend,
        out=out,
        name=f"compare ({args.experiment})",
    )
    print(fairness_table(results))
    print(f"results written to {out}/")


PAPER = ("attention-a", "attention-b")
#: The attention model's parameterisations (``policyagg.envs.attention.VARIANTS``; a test keeps them equal).
VARIANTS = ("classic", "paper")
#: The variant `policyagg reproduce` runs unless told otherwise (README: why).
DEFAULT_VARIANT = "paper"


def paper_configs(variant: str) -> tuple[str, ...]:
    """The shipped configurations of experiments (a) and (b) in ``variant``:
    ``attention-a.toml`` / ``-b.toml`` (classic) or ``attention-a-paper.toml`` / ``-b-paper.toml``."""
    return PAPER if variant == "classic" else tuple(f"{name}-{variant}" for name in PAPER)


def _overrides(args) -> dict:
    return {
        "samples": args.samples,
        "seeds": None if args.seeds is None else list(range(args.seeds)),
        "measure": args.measure,
    }


def _run(args) -> None:
    from policyagg.experiments.config import load_config
    from policyagg.experiments.run import run_config, summarize, summary_markdown

    config = load_config(args.config).with_overrides(output=args.out, **_overrides(args))
    with _executor(args) as executor:
        run = run_config(config, overwrite=args.overwrite, executor=executor)
    print(summary_markdown(config, summarize(run.seeds)))
    print(f"results written to {config.output}/")


def _norms(args) -> None:
    from policyagg.experiments.config import load_config
    from policyagg.experiments.norms import write_price_table

    config = load_config(args.config).with_overrides(output=args.out, samples=args.samples, seeds=_seed_list(args))
    files = write_price_table(config)
    print(files[0].read_text(encoding="utf-8"))
    print(f"tables written to {files[0]} and {files[1]}")


def _seed_list(args) -> list[int] | None:
    return None if args.seeds is None else list(range(args.seeds))


def _reproduce(args) -> None:
    from policyagg.experiments.config import CONFIGS, load_config
    from policyagg.experiments.run import run_configs, summarize, summary_markdown

    overrides = _overrides(args) | ({"samples": 500_000} if args.full else {})
    suffix = ("-full" if args.full else "") + (f"-{args.measure}" if args.measure not in (None, "policy") else "")
    configs = [
        load_config(CONFIGS / f"{name}.toml").with_overrides(output=Path(args.out) / (name + suffix), **overrides)
        for name in paper_configs(args.variant)
    ]
    # (a) and (b) share each seed's MDP: their policies are sampled once.
    with _executor(args) as executor:
        runs = run_configs(configs, overwrite=args.overwrite, executor=executor)
    for run in runs:
        print(summary_markdown(run.config, summarize(run.seeds)))
        print(f"tables, figures and per-seed results in {run.config.output}/\n")


@contextmanager
def _executor(args):
    """The executor of ``--executor``/``--address``/``--workers``, closed on the way out."""
    from policyagg.experiments.executors import close_executor, make_executor

    executor = make_executor(args.executor, address=args.address, workers=args.workers)
    try:
        yield executor
    finally:
        close_executor(executor)


def _sweep(args) -> None:
    from policyagg.experiments.sweep import load_sweep, run_sweep

    sweep = load_sweep(args.sweep, output=args.out)  # every grid point is checked before anything runs
    with _executor(args) as executor:
        report = run_sweep(sweep, executor=executor)
    print((sweep.output / "sweep.md").read_text(encoding="utf-8"))
    print("written to " + ", ".join(str(path) for path in report["files"]) + f" (the runs in {sweep.output}/)")


def _reference(args) -> None:
    from policyagg.experiments.reference import run_reference

    report = run_reference(args.file, out=args.out, experiments=args.experiments)
    print(report["markdown"])
    print("written to " + " and ".join(str(path) for path in report["files"]))


def _measures(args) -> None:
    from policyagg.experiments.measure_comparison import compare_measures

    seeds = None if args.seeds is None else list(range(args.seeds))
    report = compare_measures(
        args.config,
        measures=args.measures,
        samples=args.samples,
        seeds=seeds,
        out=args.out,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    print(report["markdown"])
    print(f"written to {report['path']} (the runs in {args.out}/)")


def _bench(args) -> None:
    if args.sites is None:
        args.sites = 8 if args.target in ("scale", "growth") else 5
    {
        "sampler": _bench_sampler,
        "growth": _bench_growth,
        "rules": _bench_rules,
        "scale": _bench_scale,
        "volume": _bench_volume,
        "agents": _bench_agents,
        "executor": _bench_executor,
        "oracle": _bench_oracle,
        "convert": _bench_convert,
    }[args.target](args)


def _bench_convert(args) -> None:
    from policyagg.experiments.bench_convert import bench_convert, format_convert

    print(format_convert([]))
    report = bench_convert(full=args.full, seed=args.seed, progress=print)
    if args.out:
        _write_bench(Path(args.out), "bench-convert", report)


def _write_bench(out: Path, name: str, report: dict) -> None:
    """``NAME.md`` (the report's markdown table) and ``NAME.json`` (its rows) in ``out``, each written atomically."""
    from policyagg.io import atomic_write_bytes, atomic_write_json

    atomic_write_bytes(out / f"{name}.md", (report["markdown"] + "\n").encode())
    atomic_write_json(out / f"{name}.json", report["rows"])
    print(f"written to {out / (name + '.md')} and {name}.json")


def _bench_executor(args) -> None:
    from policyagg.experiments.bench_executor import bench_executor, format_report
    from policyagg.experiments.executors import _import_ray

    _import_ray()  # a clear error when Ray is missing
    report = bench_executor(
        seeds=args.seeds or 5,
        samples=args.samples or 10_000,
        repeats=args.repeats,
        workers=args.workers,
        cluster=not args.no_cluster,
    )
    print(format_report(report))


def _bench_oracle(args) -> None:
    from policyagg.experiments.bench_oracle import bench_oracle, format_oracle

    print(format_oracle([]))
    report = bench_oracle(
        sites=tuple(range(5, max(5, args.sites) + 1)) if args.sites >= 5 else (args.sites,),
        n_samples=args.samples or 500,
        seed=args.seed,
        q_learning=args.q_learning,
        progress=print,
    )
    if args.out:
        _write_bench(Path(args.out), "bench-oracle", report)


def _counts(text: str) -> tuple[int, ...]:
    """``"5,10,30"`` -> ``(5, 10, 30)``: positive integers separated by commas."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, e.g. 5,10,30; got {text!r}")
    return counts


def _names(text: str) -> tuple[str, ...]:
    """``"utilitarian,egalitarian"`` -> ``("utilitarian", "egalitarian")``."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected rule names separated by commas; got {text!r}")
    return names


def _one_agent_count(args) -> int:
    """``--agents`` for the benchmarks of one problem: a single number (default 10)."""
    if args.agents is None:
        return 10
    if len(args.agents) != 1:
        from policyagg.errors import InvalidProblemError

        raise InvalidProblemError(
            f"`bench {args.target} --agents` takes one number; got {','.join(map(str, args.agents))}"
        )
    return args.agents[0]


def _rss(report) -> str:
    return f"  peak RSS {report['peak_rss_mb']:.0f} MB"


def _bench_sampler(args) -> None:
    from policyagg.experiments.bench import bench_sampler, format_sampler

    report = bench_sampler(
        n_sites=args.sites,
        n_phases=args.phases,
        n_samples=args.samples or 20_000,
        baseline_samples=args.baseline_samples,
        workers=args.workers,
        repeats=args.repeats,
        methods=tuple(args.methods),
        kernels=tuple(args.kernels),
        progress=None,
    )
    print(format_sampler(report))


def _bench_growth(args) -> None:
    from policyagg.experiments.bench import bench_sampler_growth

    report = bench_sampler_growth(
        sites=tuple(range(3, args.sites + 1)),
        n_phases=args.phases,
        n_samples=args.samples,
        workers=args.workers or 1,
        progress=None,
    )
    print(
        f"{'sites':>5} {'S':>6} {'S*A':>7} {'nnz(P)':>9} {'method':>26} {'samples':>7} {'CPU ms/sample':>13} "
        f"{'x first':>7} {'CPU/nnz (rel.)':>14} {'GMRES steps':>11} {'max |diff|':>10}"
    )
    for row in report["rows"]:
        method = f"{row['method']} ({row['kernel']}{', ' + row['solver'] if row['solver'] != 'gmres' else ''})"
        print(
            f"{row['sites']:>5} {row['S']:>6} {row['SA']:>7} {row['nnz_P']:>9} {method:>26} {row['samples']:>7} "
            f"{1e3 * row['cpu_s_per_sample']:>13.3f} {row['cpu_vs_first_method']:>7.2f} "
            f"{row['cpu_per_nnz_vs_smallest']:>14.2f} {row['gmres_steps_per_sample']:>11.1f} {row['max_abs_difference']:>10.1e}"
        )
    print(f"1-min load average at the end: {report['load_average'][0]:.2f}")
    print(_rss(report))


def _bench_scale(args) -> None:
    from policyagg.experiments.bench_scale import bench_scale, format_scale, scale_cases

    print(
        format_scale(
            bench_scale(
                rules=scale_cases(args.rules),
                n_sites=args.sites,
                n_phases=args.phases,
                n_agents=_one_agent_count(args),
                n_samples=args.samples or 2_000,
                samples_path=args.samples_file,
                workers=args.workers,
                progress=None,
                env=args.env,
            )
        )
    )


def _bench_volume(args) -> None:
    from policyagg.experiments.bench_volume import bench_volume

    report = bench_volume(
        n_sites=args.sites, n_phases=args.phases, n_samples=args.samples or 4000, workers=args.workers, progress=None
    )
    print(f"{report['model']}, {report['chains']} chains on {report['workers']} workers")
    print(f"  {'sampler':<26} {'seconds':>8} {'min ESS':>8} {'ESS/s':>8} {'max R-hat':>9}")
    rows = [(f"volume ({kernel} kernel)", row) for kernel, row in report["volume"].items()]
    for name, row in rows + [("plain hit-and-run", report["hit_and_run"])]:
        print(
            f"  {name:<26} {row['seconds']:>8.1f} {row['ess_min']:>8.0f} {row['ess_per_s']:>8.2f} {row['rhat_max']:>9.3f}"
        )
    first = rows[0][1]
    print(f"  {rows[0][0]}: {report['ratio']:.0f}x hit-and-run's ESS/s; acceptance {first['acceptance']:.2f}")
    print(_rss(report))


def _bench_rules(args) -> None:
    from policyagg.experiments.bench import bench_rules

    report = bench_rules(
        n_sites=args.sites,
        n_phases=args.phases,
        n_agents=_one_agent_count(args),
        n_samples=args.samples or 100_000,
        progress=None,
    )
    base = report["baseline_seconds"]
    print(report["model"])
    print(f"  {'rule':<20} {'seconds':>8} {'x baseline':>9} {'LP solves':>9}")
    print(f"  {'utilitarian (baseline)':<20} {base:>8.3f} {1.0:>9.1f} {report['baseline_solves']:>9}")
    for label, row in report["rules"].items():
        print(f"  {label:<20} {row['seconds']:>8.3f} {row['seconds'] / base:>9.1f} {row['solves']!s:>9}")
    print(_rss(report))


def _bench_agents(args) -> None:
    from policyagg.experiments.bench_agents import AGENT_COUNTS, DEFAULT_SAMPLES, bench_agents, format_agents

    report = bench_agents(
        agent_counts=args.agents or AGENT_COUNTS,
        rules=args.rules,
        n_samples=args.samples or DEFAULT_SAMPLES,
        seed=args.seed,
        time_limit=args.time_limit,
        n_sites=args.sites,
        n_phases=args.phases,
        workers=args.workers,
        memory_limit_mb=args.memory_limit,
        out=args.out,
        progress=None,
    )
    print(format_agents(report))
    if args.out is not None:
        print(f"written to {Path(args.out) / 'bench-agents.csv'} and bench-agents.md")


def _rules(args) -> None:
    from policyagg import solvers

    specs = [solvers.get_spec(name) for name in ([args.name] if args.name else solvers.RULES)]
    for spec in specs:
        print(f"{spec.name}{'  (needs samples)' if spec.needs_samples else ''}: {spec.summary}")
        if args.name or args.verbose:
            for name, option in {**spec.options, **solvers.COMMON_OPTIONS}.items():
                print(
                    f"    {name} = {option.default!r}: {option.allowed}" + (f"; {option.help}" if option.help else "")
                )


def _front(args) -> None:
    from policyagg.envs.fronts import pareto_front, write_front
    from policyagg.envs.tabular import from_gymnasium

    model = from_gymnasium(args.env_id, gamma=args.gamma, on_termination=args.on_termination)
    front = pareto_front(model, mode=args.mode)
    exact = bool(model.info.get("exact"))
    meta = {"env_id": args.env_id, "route": model.route, "model_exact": exact, "on_termination": args.on_termination}
    out = Path(args.out)
    stem = args.env_id.replace("/", "-") + f"-gamma{args.gamma:g}-{args.mode}"
    csv_path, json_path = write_front(front, out, stem=stem, meta=meta)
    print(f"{args.env_id}: {model.mdp.n_states} states, route {model.route!r}, gamma {args.gamma:g}")
    if not exact:
        print("note: this model is estimated from samples; the front is exact for the estimated model only")
    label = "CCS" if args.mode == "ccs" else "vertex"
    print("  ".join([f"{label:>6}", *(f"{n:>12}" for n in front.names)]))
    for j in range(len(front)):
        mark = "pareto" if front.pareto[j] else ""
        print("  ".join([f"{mark:>6}", *(f"{v:>12.6g}" for v in front.values[j])]))
    print(f"wrote {csv_path} and {json_path}")


def _axioms(args) -> None:
    from policyagg.experiments.axioms import run_command

    run_command(args)


def _show(args) -> None:
    from policyagg.lottery import load_outcome

    print(load_outcome(args.path).table())


WORKERS_HELP = "worker processes for sampling and rules (default: the usable cores, at most 4)"


def _common_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--measure",
        choices=MEASURE_NAMES,
        default=None,
        help="reference measure of the ranks (default: the configuration's, `policy` in the shipped ones)",
    )
    p.add_argument("--workers", type=positive_int, default=None, metavar="N", help=WORKERS_HELP)
    _executor_options(p)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of another configuration in the output folder; the new run is "
        "written beside it and swapped in when it has finished (the old results stay until then)",
    )


def _executor_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where sampling batches and rule tasks run: local (forked workers, the default) or ray (a Ray "
        "cluster; pip install 'policyagg[ray]'); the results are the same",
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="auto|HOST:PORT",
        help="the Ray cluster to join (auto: the one `ray start` runs on this machine); default: a private "
        "cluster of --workers CPUs on this machine",
    )


def _subcommand(sub, name: str, summary: str, description: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="policyagg",
        description="Fair policy aggregation over the occupancy polytope.",
        epilog="examples:\n  policyagg reproduce\n  policyagg run experiments/configs/attention-a.toml --samples 2000\n"
        "  policyagg <command> --help    (options and an example of each command)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = _subcommand(
        sub,
        "reproduce",
        "the paper's fairness comparison, experiments (a) and (b), over seeds",
        "Run the paper's experiments (a) and (b) (experiments/configs/attention-a-paper.toml and -b-paper.toml, or "
        "with --variant classic attention-a.toml and -b.toml) over their seeds; print per rule the Gini index, minimum and mean normalised return, quantile reached and PVC eps "
        "(mean ± s.e. over seeds) and write tables, figures and per-seed results under --out. A stopped run "
        "resumes where it stopped.",
        "  policyagg reproduce                      # 5 seeds, 10000 samples each, a few minutes\n"
        "  policyagg reproduce --variant classic    # the classic parameterisation (configs attention-a/-b.toml)\n"
        "  policyagg reproduce --seeds 1 --samples 2000 --out /tmp/quick\n"
        "  policyagg reproduce --full --seeds 1     # the paper's 500000 samples per seed",
    )
    p.add_argument("--full", action="store_true", help="the paper's scale: 500000 sampled policies per seed")
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        default=DEFAULT_VARIANT,
        help="the attention model's parameterisation: paper (the paper's code's escalation probabilities and "
        "weights; configs attention-a-paper.toml, -b-paper.toml) or classic (configs attention-a.toml, -b.toml) "
        f"(default: {DEFAULT_VARIANT})",
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        metavar="N",
        help="sampled policies per seed (default: the configs' 10000)",
    )
    p.add_argument(
        "--seeds", type=positive_int, default=None, metavar="N", help="run seeds 0..N-1 (default: the configs' five)"
    )
    p.add_argument(
        "--out",
        default="results",
        metavar="DIR",
        help="parent folder of the two experiments' folders (default: results)",
    )
    _common_run_options(p)
    p.set_defaults(run=_reproduce)

    p = _subcommand(
        sub,
        "run",
        "run an experiment configuration (TOML); resumes where a killed run stopped",
        "Run one experiment configuration (TOML: environment, agents, measure, rules, seeds, output folder; see "
        "experiments/configs/) and write its tables, figures and per-seed results. Finished work found in the "
        "output folder is reused; a folder holding another configuration is refused unless --overwrite.",
        "  policyagg run experiments/configs/attention-a.toml --samples 2000\n"
        "  policyagg run experiments/configs/attention-b.toml --seeds 2 --out /tmp/b --workers 2\n"
        "  policyagg run experiments/configs/attention-a.toml --samples 2000 --overwrite   # after `reproduce`",
    )
    p.add_argument("config", help="path of a TOML configuration (see experiments/configs/)")
    p.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        metavar="N",
        help="sampled policies per seed (overrides `measure.samples`)",
    )
    p.add_argument("--seeds", type=positive_int, default=None, metavar="N", help="run seeds 0..N-1 (overrides `seeds`)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (overrides `output`)")
    _common_run_options(p)
    p.set_defaults(run=_run)

    p = _subcommand(
        sub,
        "sweep",
        "a grid of runs over any configuration keys; one combined table and the alpha-sweep figures",
        'Expand a sweep file (a base configuration and a [grid] of dotted keys, e.g. "rules.approval.alpha" = '
        "[0.8, 0.9]) into one run per grid point, each in its own subfolder named from its grid values; run them "
        "(points sharing an MDP share their sampled policies), then write sweep.csv, sweep.md and, per numeric "
        "grid key, its figure against the Gini index and the minimum normalised return. Every point is "
        "validated first; a stopped sweep resumes (finished points are read back).",
        "  policyagg sweep experiments/configs/sweeps/alpha-sweep.toml\n"
        "  policyagg sweep experiments/configs/sweeps/alpha-sweep.toml --out /tmp/alpha --executor ray --address auto",
    )
    p.add_argument("sweep", help="path of a sweep file (TOML; see experiments/configs/sweeps/alpha-sweep.toml)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (overrides the sweep's `output`)")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N", help=WORKERS_HELP)
    _executor_options(p)
    p.set_defaults(run=_sweep)

    p = _subcommand(
        sub,
        "compare",
        "one seed of the comparison, with options for the attention model",
        "One seed of the fairness comparison on an attention model of any size: sample policies, run every rule "
        "of experiments/configs/attention-a.toml, print the fairness table and save each result (JSON + NPZ) "
        "under --out/experiment-<a|b>-seed<k>/. Quick; no resume, no seeds.",
        "  policyagg compare\n  policyagg compare --experiment b --agents 6 --sites 4 --samples 5000 --seed 3",
    )
    p.add_argument(
        "--experiment",
        choices=["a", "b"],
        default="a",
        help="a: one agent per site; b: --agents agents on random subsets of sites (default: a)",
    )
    p.add_argument(
        "--sites", type=positive_int, default=5, metavar="N", help="sites of the attention model (default: 5)"
    )
    p.add_argument("--phases", type=positive_int, default=3, metavar="N", help="phases per site (default: 3)")
    p.add_argument(
        "--agents", type=positive_int, default=10, metavar="N", help="number of agents in experiment b (default: 10)"
    )
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        default="classic",
        help="how the seed draws escalation probabilities and weights: classic or paper (default: classic)",
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        default=20_000,
        metavar="N",
        help="sampled random policies (default: 20000; the paper: 500000)",
    )
    p.add_argument(
        "--seed", type=seed_int, default=0, help="seed of the model, the agents and the samples (default: 0)"
    )
    p.add_argument(
        "--backend",
        choices=["highs", "pulp"],
        default="highs",
        help="LP/MILP backend: HiGHS directly, or PuLP (CBC) (default: highs)",
    )
    p.add_argument("--out", default="results", metavar="DIR", help="parent folder of the results (default: results)")
    p.set_defaults(run=_compare)

    p = _subcommand(
        sub,
        "reference",
        "our rules on the paper's own instance (its code's outputs), side by side",
        "Load the paper's code's outputs on one instance (an .npz: MDP, rewards, sampled returns, its occupancy "
        "per rule; a JSON of the same name beside it is read too) and run every rule of the paper's figure twice: "
        "with our defaults, and with the paper's code's choices (each agent's best and worst return added to its "
        "samples; approval completed by the raw sum). Print per rule the paper's and our returns, normalised "
        "returns, Gini, minimum rank, Borda score, Pareto gap and which weakly dominates, with why they differ; "
        "write reference.md and reference.csv under --out.",
        "  policyagg reference experiments/reference-instance/reference_seed1_N19800.npz\n"
        "  policyagg reference experiments/reference-instance/reference_seed1_N19800.npz --experiments base --out /tmp/ref",
    )
    p.add_argument("file", help="the paper's code's outputs (.npz; see experiments/reference-instance/README.md)")
    p.add_argument(
        "--experiments",
        nargs="+",
        choices=["base", "subsets"],
        default=None,
        help="which experiments of the file to compare (default: every one it holds)",
    )
    p.add_argument(
        "--out", default="results/reference", metavar="DIR", help="output folder (default: results/reference)"
    )
    p.set_defaults(run=_reference)

    p = _subcommand(
        sub,
        "measures",
        "one experiment under each reference measure: fairness, ranking, concentration",
        "Run one experiment once per reference measure (policy, volume, optimal-mixture), each in its own "
        "resumable folder <out>/<name>-<measure>/, and write <out>/<name>-measures.md: per rule the Gini index "
        "and quantile reached under each measure, the rules from fairest to least fair, and how concentrated "
        "each measure's samples are.",
        "  policyagg measures\n"
        "  policyagg measures attention-b --measures policy optimal-mixture --samples 2000 --seeds 2",
    )
    p.add_argument(
        "config",
        nargs="?",
        default="attention-a",
        help="a shipped config name (attention-a, attention-b) or a TOML path (default: attention-a)",
    )
    p.add_argument(
        "--measures",
        nargs="+",
        choices=MEASURE_NAMES,
        default=list(MEASURE_NAMES),
        help="measures to compare (default: all three)",
    )
    p.add_argument(
        "--samples", type=positive_int, default=4000, metavar="N", help="samples per seed and measure (default: 4000)"
    )
    p.add_argument("--seeds", type=positive_int, default=3, metavar="N", help="run seeds 0..N-1 (default: 3)")
    p.add_argument("--out", default="results", metavar="DIR", help="parent folder of the runs (default: results)")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N", help=WORKERS_HELP)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace runs of another configuration in the measures' folders (swapped in when finished)",
    )
    p.set_defaults(run=_measures)

    p = _subcommand(
        sub,
        "bench",
        "benchmarks with a same-run baseline",
        "Benchmarks; each reports a ratio against a baseline measured in the same run, and peak memory.\n"
        "  sampler  policies/s of the batched sampler vs one dense solve per policy, 1 and N workers, share of the matmul peak\n"
        "  growth   sampler cost per sample on 3..--sites sites, sparse vs kronecker (GMRES, BiCGSTAB), against nnz(P)\n"
        "  rules    seconds per rule vs one utilitarian LP (experiment b, 5 sites)\n"
        "  scale    every LP rule on the 8-site model (6561 states; --sites 9: 19683) with real `policy` samples\n"
        "           (--env ID: on a converted Gymnasium environment instead, e.g. four-room-v0)\n"
        "  volume   effective samples/s of the volume measure vs plain hit-and-run\n"
        "  agents   every rule on experiment b with 5..1000 agents: time, status, memory vs utilitarian\n"
        "  executor local vs Ray: overhead per task, `reproduce` end to end, a simulated two-node cluster\n"
        "  oracle   egalitarian and max-quantile by the oracle route vs the LP route, 5..--sites sites\n"
        "  convert  Gymnasium environments to tabular models: states/s, peak RSS and route vs a plain step loop",
        "  policyagg bench sampler --samples 20000 --repeats 3\n"
        "  policyagg bench scale --samples 2000\n"
        "  policyagg bench growth --sites 6\n"
        "  policyagg bench scale --sites 6 --samples 2000\n"
        "  policyagg bench scale --samples-file results/experiment-b-seed0/samples.npz\n"
        "      # samples saved by `policyagg compare --experiment b --sites 8` (the same instance)\n"
        "  policyagg bench agents --agents 5,10,30 --rules utilitarian,egalitarian --out results/bench\n"
        "  policyagg bench executor --seeds 1 --samples 2000 --repeats 1   # needs Ray: pip install 'policyagg[ray]'\n"
        "  policyagg bench oracle --sites 7 --q-learning\n"
        "  policyagg bench convert --full   # with four-room (about 594k states) and fickle Taxi: minutes\n"
        "  policyagg bench scale --env four-room-v0 --rules utilitarian,egalitarian,max-quantile --workers 2",
    )
    p.add_argument(
        "target",
        choices=["sampler", "growth", "rules", "scale", "volume", "agents", "executor", "oracle", "convert"],
        help="the benchmark to run",
    )
    p.add_argument(
        "--q-learning",
        action="store_true",
        help="oracle: also time the Q-learning oracle (on the model discounted at 0.9)",
    )
    p.add_argument(
        "--sites",
        type=positive_int,
        default=None,
        metavar="N",
        help="attention sites (default: 8 for scale and growth (3..N), else 5)",
    )
    p.add_argument("--phases", type=positive_int, default=3, metavar="N", help="phases per site (default: 3)")
    p.add_argument(
        "--agents",
        type=_counts,
        default=None,
        metavar="N[,N...]",
        help="agents in experiment b: rules, scale: one number (default: 10); agents: the numbers to time, "
        "separated by commas (default: 5,10,30,100,300,1000)",
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        metavar="N",
        help="samples (default: sampler 20000, growth 4000 at 3-5 sites down to 160 at 8, rules 100000, "
        "scale 2000, volume 4000, agents 2000 per number of agents, executor 10000 per seed)",
    )
    p.add_argument(
        "--samples-file",
        default=None,
        metavar="PATH",
        help="scale: a ReturnSamples .npz of the same instance to use instead of sampling",
    )
    p.add_argument(
        "--baseline-samples",
        type=positive_int,
        default=500,
        metavar="N",
        help="sampler: policies solved one at a time for the baseline (default: 500)",
    )
    p.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        metavar="N",
        help="sampler, executor: repetitions, the median reported (sampler: with min and max) (default: 3)",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        choices=["dense", "krylov", "sparse", "kronecker"],
        default=["dense", "krylov", "sparse", "kronecker"],
        help="sampler: occupancy solvers to time (default: all four)",
    )
    p.add_argument(
        "--kernels",
        nargs="+",
        choices=["auto", "numba", "numpy"],
        default=["auto"],
        help="sampler: GMRES kernels to time each GMRES method with, e.g. `numba numpy` (default: auto)",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="worker processes (default: the usable cores, at most 4; growth: 1; agents: for the sampling, "
        "the rules run one at a time)",
    )
    p.add_argument(
        "--rules",
        type=_names,
        default=None,
        metavar="NAME[,NAME...]",
        help="agents: the registered rules to time, separated by commas (default: every one; utilitarian, "
        "the baseline, is always run); scale: the rules to time by label or name, e.g. "
        "max-quantile,egalitarian (default: every LP rule; the utilitarian baseline is always run)",
    )
    p.add_argument(
        "--time-limit",
        type=positive_float,
        default=120.0,
        metavar="SECONDS",
        help="agents: each rule's time_limit (seconds per LP/MILP solve); a rule still running after "
        "1.25 x this + 5 s is killed and reported as time-limit (default: 120)",
    )
    p.add_argument(
        "--memory-limit",
        type=positive_float,
        default=None,
        metavar="MB",
        help="agents: each rule's address-space limit; beyond it the rule fails with MemoryError "
        "(default: half the memory available at the start)",
    )
    p.add_argument(
        "--seed",
        type=seed_int,
        default=0,
        help="agents, oracle: seed of the model, the agents and the samples; convert: seed of the sampled "
        "routes (default: 0)",
    )
    p.add_argument(
        "--seeds", type=positive_int, default=None, metavar="N", help="executor: seeds of `reproduce` (default: 5)"
    )
    p.add_argument("--no-cluster", action="store_true", help="executor: skip the simulated two-node cluster")
    p.add_argument(
        "--full",
        action="store_true",
        help="convert: also four-room-v0 (about 594k states; minutes, up to 2 GB) and Taxi-v4 with a fickle passenger",
    )
    p.add_argument(
        "--env",
        default=None,
        metavar="ID",
        help="scale: a Gymnasium environment id to convert (gamma 0.99, as `bench convert`) and run the rules on "
        "instead of the attention model, e.g. four-room-v0 (about 594k states: conversion 2-3 minutes, 1.4 GB)",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="agents: write bench-agents.csv and bench-agents.md here, rewritten after every rule; oracle, convert: "
        "write bench-NAME.md and bench-NAME.json here (default: print only)",
    )
    p.set_defaults(run=_bench)

    p = _subcommand(
        sub,
        "norms",
        "the price of each norm of a configuration ([[norms]] tables), per rule",
        "For every rule of a configuration and every norm in its [[norms]] tables (and all of them together): "
        "re-solve with and without the norm and report the change of the rule's objective, how many agents lose, "
        "the smallest normalised return and the Gini index (means over the seeds). Writes norms.md and norms.csv "
        "into the output folder (per-agent changes in the CSV).",
        "  policyagg norms experiments/configs/attention-norms.toml\n"
        "  policyagg norms experiments/configs/attention-norms.toml --seeds 1 --samples 2000 --out /tmp/norms",
    )
    p.add_argument("config", help="path of a TOML configuration with [[norms]] tables")
    p.add_argument("--samples", type=positive_int, default=None, metavar="N", help="sampled policies per seed")
    p.add_argument("--seeds", type=positive_int, default=None, metavar="N", help="seeds 0..N-1 (overrides `seeds`)")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (overrides `output`)")
    p.set_defaults(run=_norms)

    p = _subcommand(
        sub,
        "rules",
        "list the registered rules and their options",
        "List every registered rule (the built-in ones and any registered with "
        "policyagg.solvers.register_rule) with whether it needs sampled returns; with a NAME or "
        "--verbose, each option's default, allowed values and help, as a configuration's "
        "`options = { ... }` takes them.",
        "  policyagg rules\n  policyagg rules approval",
    )
    p.add_argument("name", nargs="?", default=None, help="one rule's name (default: every rule)")
    p.add_argument("--verbose", "-v", action="store_true", help="list every rule's options")
    p.set_defaults(run=_rules)

    p = _subcommand(
        sub,
        "front",
        "the exact Pareto front of a multi-objective Gymnasium environment (CSV and JSON)",
        "Convert a discrete (multi-objective) Gymnasium environment to its tabular model and compute its exact "
        "front: the convex coverage set (the Pareto-optimal vertices of the achievable discounted returns), or "
        "with --mode vertices every vertex of the return set (2-3 objectives). Each point comes with a "
        "deterministic policy whose exact evaluation returns it. Prints the discounted returns (the gain for "
        "--gamma 1) and writes ENV-gammaG-MODE.csv and .json under --out.",
        "  policyagg front deep-sea-treasure-v0 --gamma 0.99\n"
        "  policyagg front resource-gathering-v0 --gamma 0.9 --mode vertices --out fronts",
    )
    p.add_argument("env_id", help="a registered Gymnasium or MO-Gymnasium id, e.g. deep-sea-treasure-v0")
    p.add_argument("--gamma", type=float, default=0.99, help="discount in (0, 1]; 1 = average reward (default: 0.99)")
    p.add_argument("--mode", choices=("ccs", "vertices"), default="ccs", help="ccs (default) or vertices")
    p.add_argument(
        "--on-termination",
        choices=("absorb", "reset"),
        default="absorb",
        help="terminating transitions go to an absorbing state (default) or back to the start (for --gamma 1)",
    )
    p.add_argument("--out", default="fronts", metavar="DIR", help="output folder (default: fronts)")
    p.set_defaults(run=_front)

    p = _subcommand(
        sub,
        "show",
        "print a saved result's table",
        "Print a saved result: its rule, Gini index and quantile reached, its fairness report and every agent's "
        "return, normalised return and rank.",
        "  policyagg show results/attention-a/seed0/max-quantile",
    )
    p.add_argument("path", help="result path without suffix (the .json and .npz next to each other)")
    p.set_defaults(run=_show)

    p = _subcommand(
        sub,
        "axioms",
        "audit which axioms every rule keeps, with counterexamples (Markdown and CSV)",
        "For every registered rule and every rank rule (leximax_copeland, bradley_terry, squared_hinge), check "
        "Pareto optimality, pairwise majority consistency (rank rules), majority consistency, winner "
        "monotonicity, anonymity, invariance to an affine change of one reward (policy rules), proportional "
        "veto core membership (policy rules) and population consistency on seeded random small instances. "
        "Writes axioms.md, axioms.csv and one JSON per counterexample (re-checked by "
        "policyagg.experiments.axioms.verify_counterexample) under --out. A failure where a theorem says the "
        "axiom holds is marked BUG.",
        "  policyagg axioms\n  policyagg axioms --rules utilitarian,leximax_copeland --instances 20 --out audit",
    )
    p.add_argument("--rules", default=None, help="comma-separated rule names (default: every rule)")
    p.add_argument(
        "--axioms",
        default=None,
        help="comma-separated axioms (default: all eight: pareto,pmc,majority,monotonicity,anonymity,affine,pvc,population)",
    )
    p.add_argument("--instances", type=int, default=3, metavar="N", help="random MDPs per policy rule (default: 3)")
    p.add_argument("--rank-instances", type=int, default=40, metavar="N", help="profiles per rank rule (default: 40)")
    p.add_argument(
        "--screen", type=int, default=200, metavar="N", help="extra profiles for rank PO and PMC (default: 200)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--tol", type=positive_float, default=1e-4, help="tolerance on normalised returns (default: 1e-4)")
    p.add_argument("--out", default="axioms", metavar="DIR", help="output folder (default: axioms)")
    p.set_defaults(run=_axioms)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from policyagg.errors import PolicyAggError  # imports numpy: after parsing, so --help stays fast
    from policyagg.parallel import keep_freed_memory

    keep_freed_memory()  # the command owns this process: one worker's batches run here, as in a forked worker
    try:
        args.run(args)
    except (PolicyAggError, FileNotFoundError) as exc:
        print(f"policyagg: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
