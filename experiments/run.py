"""Run an experiment configuration over its seeds, with checkpoints that survive interruption.

Layout of the output folder::

    config.json            the configuration this folder belongs to
    manifest.json          the SHA-256 of every checkpoint below
    seed<k>/samples.npz    the sampled returns of seed k
    seed<k>/<rule>.json/.npz   one result per rule and seed (a Lottery under the oracle route)
    seed<k>/<rule>.oracle/     oracle route: each best response and evaluation (resume)
    summary.md, summary.csv    mean ± standard error over seeds, per rule
    bars.csv, bars.png/.svg    agents' normalised returns sorted ascending, per rule
    cdf-seed<k>.png/.svg       every agent's sampled-return CDF with each rule's result marked

Every file is written atomically, and a seed's samples and each rule's result are written as
soon as they exist, so a killed run (even SIGKILL) started again with the same command
skips the finished work and ends with the same numbers: sampling and rules are
deterministic given the configuration and the seed. Each checkpoint's SHA-256 goes into
``manifest.json`` as it is written, and a resumed run reuses only files whose checksum
matches; one run at a time holds the folder's lock (:mod:`policyagg.experiments.checkpoints`).

Both cores are used: sampling splits each seed's samples into batches solved in parallel,
then every (seed, rule) pair is an independent task run by ``workers`` forked processes,
which save their results to the checkpoint files the parent then reads (nothing crosses a
pipe). The numbers do not depend on ``workers``. On a Ray cluster (``executor``, see
:mod:`policyagg.experiments.executors`) the same tasks run as Ray tasks and the driver writes
every file, byte for byte the same (apart from timings).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from contextlib import ExitStack
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from policyagg import solvers
from policyagg.bargaining import individual_rationality
from policyagg.envs.tabular import RESET_SAMPLES, from_gymnasium, make_env
from policyagg.errors import CheckpointWarning, CorruptFileError, PolicyAggError
from policyagg.experiments.checkpoints import Manifest, output_lock
from policyagg.experiments.compare import attention_problem, slug
from policyagg.experiments.config import (
    ExperimentConfig,
    InvalidConfigError,
    RuleRow,
    import_modules,
    load_config,
    parse_config,
)
from policyagg.experiments.tables import COLUMNS as TABLE_COLUMNS
from policyagg.experiments.tables import FairnessTable, table_from_summary, to_markdown, write_bars_csv, write_csv
from policyagg.io import atomic_write_bytes, atomic_write_json
from policyagg.lottery import Lottery, load_outcome
from policyagg.measures import sample_returns
from policyagg.parallel import Executor, resolve_executor
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.samples import ReturnSamples


@dataclass
class SeedRun:
    seed: int
    samples: ReturnSamples | None  # None under the sb3 oracle route
    results: dict[str, Result | Lottery]  # by rule label, in the configuration's order


@dataclass
class ExperimentRun:
    config: ExperimentConfig
    seeds: list[SeedRun]
    files: list[Path]


def build_problem(config: ExperimentConfig, seed: int) -> Problem:
    """The problem of one seed, with return ranges attached."""
    if config.env_id == "attention":
        experiment = "a" if config.population == "one_per_site" else "b"
        problem = attention_problem(
            experiment, n_agents=config.n_agents or 10, seed=seed, gamma=config.gamma, **config.env_kwargs
        )
    else:
        import_modules(config.env_imports, config.name)
        model = from_gymnasium(
            make_env(config.env_id, **config.env_kwargs),
            gamma=config.gamma,
            on_termination=config.on_termination,
            rng=seed,
            reset_samples=RESET_SAMPLES if config.reset_samples is None else config.reset_samples,
        )
        problem = model.problem()
    return solvers.with_ranges(problem)


def run_config(
    config,
    *,
    progress: bool | None = None,
    figures: bool = True,
    workers: int | None = None,
    problems: dict[int, Problem] | None = None,
    overwrite: bool = False,
    executor: Executor | None = None,
) -> ExperimentRun:
    """Run ``config`` (an :class:`ExperimentConfig`, a dict as parsed from TOML, or a path).

    Finished seeds' samples and results found in the output folder are reused (resume); a
    folder holding another configuration is refused unless ``overwrite``, which runs into a
    staging folder next to it and swaps it in only when the run has finished (see
    :func:`run_configs`). ``workers`` processes (default: the usable cores, at most 4) sample
    and run the rules. ``problems``: seeds' problems already built by :func:`build_problem`
    (the rest are built). ``progress``: ``False`` hides the progress bars (each names the
    configuration, the seed and the measure). ``executor``: where sampling batches and rule
    tasks run (default: a local pool of ``workers``; see :mod:`policyagg.experiments.executors`);
    the numbers and files do not depend on it.
    """
    config = _as_config(config)
    if overwrite:
        return run_configs(
            [config], progress=progress, figures=figures, workers=workers, overwrite=True, executor=executor
        )[0]
    executor = resolve_executor(executor, workers)
    out = Path(config.output)
    with output_lock(out):
        manifest = _claim_output(config, out)
        problems, samples = dict(problems or {}), {}
        seeds = tqdm(
            config.seeds,
            desc=f"{config.name} ({config.measure} measure): seeds",
            disable=progress is False,
            unit="seed",
        )
        for seed in seeds:
            if seed not in problems and not trains_on_env(config):  # an sb3 oracle needs no tabular model
                problems[seed] = build_problem(config, seed)
            samples[seed] = _seed_samples(config, seed, problems.get(seed), manifest, progress, executor)
        results = _run_rules(config, problems, samples, manifest, progress, executor)
        runs = [SeedRun(seed, samples[seed], results[seed]) for seed in config.seeds]
        files = write_summary(config, runs, out, figures=figures)
    return ExperimentRun(config, runs, files)


#: Measures that depend on the MDP only, not on the agents' rewards: configurations whose
#: seed gives the same MDP can share one sampling run.
REWARD_FREE_MEASURES = ("policy", "volume")


def run_configs(
    configs,
    *,
    progress: bool | None = None,
    figures: bool = True,
    workers: int | None = None,
    overwrite: bool = False,
    executor: Executor | None = None,
) -> list[ExperimentRun]:
    """Run several configurations (as :func:`run_config`). Where some of them give the same
    MDP for a seed and sample the same reward-free measure alike, the policies are sampled
    once for all of them (their agents' rewards stacked) and each keeps its own agents'
    columns: the same sampled policies (common random numbers), half the sampling time for
    the paper's two experiments.

    ``overwrite``: replace whatever the output folders hold. Each configuration runs into a
    staging folder ``.<name>.overwrite`` beside its output folder (a killed run resumes
    there); only when every run has finished is each output folder renamed aside, the
    staging folder renamed into its place and the old one deleted. A failed or killed run
    leaves the old results untouched, never a half-deleted folder."""
    configs = [_as_config(c) for c in configs]
    executor = resolve_executor(executor, workers)
    with ExitStack() as locks:
        for config in configs:
            locks.enter_context(output_lock(Path(config.output)))
        if overwrite:
            staged = [_staging_config(c) for c in configs]
            runs = run_configs(staged, progress=progress, figures=figures, executor=executor)
            return [_publish(run, config) for run, config in zip(runs, configs)]
        built = _share_samples(configs, progress, executor)
        return [
            run_config(c, progress=progress, figures=figures, executor=executor, problems=built[i])
            for i, c in enumerate(configs)
        ]


def _staging_config(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` writing to the staging folder of its output; a staging folder left by an
    interrupted overwrite of another configuration is cleared (it holds nothing published)."""
    out = Path(config.output)
    staging = out.parent / f".{out.name}.overwrite"
    path = staging / "config.json"
    if staging.exists():
        theirs = (_read_fingerprint(path) if path.exists() else None) or {}
        mine = _fingerprint(config)
        if any(theirs.get(k) != mine[k] for k in mine if k not in ("seeds", "output")):
            shutil.rmtree(staging)
    return replace(config, output=staging)


def _publish(run: ExperimentRun, config: ExperimentConfig) -> ExperimentRun:
    """Move a finished staging folder into ``config.output`` (the old folder renamed aside first,
    then deleted); the run as if it had been written there."""
    staging, out = Path(run.config.output), Path(config.output)
    atomic_write_json(staging / "config.json", _fingerprint(config))
    if out.exists():  # (it does: the run holds its lock, <out>/.lock)
        aside = out.parent / f".{out.name}.replaced-{os.getpid()}"
        os.rename(out, aside)
        os.rename(staging, out)
        shutil.rmtree(aside)
    else:
        os.rename(staging, out)
    return ExperimentRun(config, run.seeds, [out / path.relative_to(staging) for path in run.files])


def _share_samples(configs: list[ExperimentConfig], progress, executor: Executor) -> list[dict[int, Problem]]:
    """Write the shared samples' checkpoints that :func:`run_config` will then find; return
    the problems built on the way, per configuration and seed, for it to reuse."""
    built: list[dict[int, Problem]] = [{} for _ in configs]
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        if config.measure in REWARD_FREE_MEASURES and not trains_on_env(config):
            for seed in config.seeds:
                share_key = (config.measure, json.dumps(config.measure_options, sort_keys=True), config.samples, seed)
                groups.setdefault(share_key, []).append(i)
    for (measure, _, n_samples, seed), indices in groups.items():
        if len(indices) < 2:
            continue
        members = [configs[i] for i in indices]
        problems = [build_problem(config, seed) for config in members]
        for i, problem in zip(indices, problems):
            built[i][seed] = problem
        manifests = [Manifest(Path(config.output)) for config in members]
        paths = [manifest.folder / f"seed{seed}" / "samples.npz" for manifest in manifests]
        todo = [
            k
            for k, (config, problem) in enumerate(zip(members, problems))
            if _load_samples(manifests[k], paths[k], config, problem) is None
        ]
        for same in _same_mdp_groups([problems[k] for k in todo]):
            if len(same) < 2:
                continue
            chosen = [todo[k] for k in same]
            for k in chosen:
                manifests[k] = _claim_output(members[k], manifests[k].folder)
            stacked = Problem(problems[chosen[0]].mdp, np.concatenate([problems[k].rewards for k in chosen]))
            names = "+".join(members[k].name for k in chosen)
            shared = sample_returns(
                stacked,
                n_samples,
                measure=measure,
                rng=seed,
                executor=executor,
                progress=_label(progress, f"{names} seed {seed}: {measure} samples (shared)"),
                **members[chosen[0]].measure_options,
            )
            start = 0
            for k in chosen:
                n = problems[k].n_agents
                info = shared.info | {"shared_with": [members[j].name for j in chosen]}
                for key in ("ess", "rhat"):  # per-agent diagnostics: keep this config's agents
                    if key in info:
                        info[key] = list(info[key][start : start + n])
                ReturnSamples(shared.values[:, start : start + n], measure, info).save(paths[k])
                manifests[k].record(paths[k])
                start += n
    return built


def _same_mdp_groups(problems: list[Problem]) -> list[list[int]]:
    """Indices of ``problems`` grouped by identical MDP (``P``, ``rho``, ``gamma``)."""
    groups: list[list[int]] = []
    for k, problem in enumerate(problems):
        for group in groups:
            other = problems[group[0]].mdp
            mdp = problem.mdp
            if (
                mdp.gamma == other.gamma
                and mdp.P.shape == other.P.shape
                and np.array_equal(mdp.rho, other.rho)
                and (mdp.P != other.P).nnz == 0
            ):
                group.append(k)
                break
        else:
            groups.append([k])
    return groups


def trains_on_env(config: ExperimentConfig) -> bool:
    """Whether the configuration's oracle trains on the Gymnasium environment (``sb3:*``)."""
    return config.solver is not None and config.solver.oracle.startswith("sb3:")


def _seed_samples(
    config: ExperimentConfig, seed: int, problem: Problem | None, manifest: Manifest, progress, executor: Executor
) -> ReturnSamples | None:
    if problem is None:
        return None  # the sb3 oracle route: max-quantile draws its reference from the oracle
    path = manifest.folder / f"seed{seed}" / "samples.npz"
    samples = _load_samples(manifest, path, config, problem)
    if samples is None:
        samples = sample_returns(
            problem,
            config.samples,
            measure=config.measure,
            rng=seed,
            executor=executor,
            progress=_label(progress, f"{config.name} seed {seed}: {config.measure} samples"),
            **config.measure_options,
        )
        manifest.record(samples.save(path))
    return samples


def _label(progress: bool | None, label: str) -> bool | str:
    """A sampler's ``progress`` argument: ``False`` (hidden) or the bar's label."""
    return False if progress is False else label


@dataclass(frozen=True)
class RuleTasks:
    """The (seed, rule) tasks of a run: task ``j`` runs ``todo[j]`` and saves it as ``names[j]``."""

    config: ExperimentConfig
    todo: tuple
    problems: dict
    samples: dict
    names: tuple[str, ...]
    folders: tuple[Path, ...]  # where each result goes (the oracle route keeps its calls there)


def _rule_task(tasks: RuleTasks, j: int) -> dict[str, bytes]:
    """Task ``j``: run the rule and return the files its ``save`` writes, by file name (the
    same bytes wherever it ran; the caller writes them)."""
    seed, spec = tasks.todo[j]
    outcome: Result | Lottery
    if tasks.config.solver is not None:  # the oracle route checkpoints its calls beside the result
        problem, path = tasks.problems.get(seed), tasks.folders[j] / tasks.names[j]
        outcome = _run_oracle_rule(tasks.config, spec, problem, tasks.samples[seed], seed, path)
    else:
        outcome = _run_rule(tasks.config, spec, tasks.problems[seed], tasks.samples[seed])
    return saved_files(outcome, tasks.names[j])


def saved_files(outcome, name: str) -> dict[str, bytes]:
    """The files ``outcome.save(folder / name)`` writes, as ``{file name: bytes}`` (saved into
    a private temporary folder); JSON files last, as ``save`` writes them."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="policyagg-task-") as folder:
        outcome.save(Path(folder) / name)
        files = sorted(Path(folder).iterdir(), key=lambda path: (path.suffix == ".json", path.name))
        return {path.name: path.read_bytes() for path in files}


def write_saved_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write :func:`saved_files`' output into ``folder``, atomically and in its order."""
    for name, payload in files.items():
        atomic_write_bytes(folder / name, payload)


def _run_rules(
    config: ExperimentConfig, problems: dict, samples: dict, manifest: Manifest, progress, executor: Executor
) -> dict[int, dict[str, Result | Lottery]]:
    """Every (seed, rule) result: loaded if saved and verified, else computed by a task whose
    files are written by ``store`` (on a local worker, or on the driver with Ray); their
    checksums are recorded here, in the parent, the manifest's only writer."""
    out = manifest.folder
    paths = {
        (seed, spec.label): out / f"seed{seed}" / slug(spec.label) for seed in config.seeds for spec in config.rules
    }
    loaded = {key: _load_result(manifest, path) for key, path in paths.items()}
    results = {key: result for key, result in loaded.items() if result is not None}
    todo = [(seed, spec) for seed in config.seeds for spec in config.rules if (seed, spec.label) not in results]

    def store(j: int, files: dict[str, bytes]) -> None:
        seed, spec = todo[j]
        write_saved_files(paths[seed, spec.label].parent, files)

    seeds = sorted({seed for seed, _ in todo})
    bar = tqdm(
        total=len(todo),
        desc=f"{config.name} ({config.measure} measure): rules on seed(s) " + ",".join(map(str, seeds)),
        disable=progress is False or not todo,
        unit="rule",
    )
    with bar:
        names = tuple(paths[seed, spec.label].name for seed, spec in todo)
        folders = tuple(paths[seed, spec.label].parent for seed, spec in todo)
        payload = RuleTasks(config, tuple(todo), problems, samples, names, folders)
        for j in executor.map(_rule_task, payload, len(todo), store):
            seed, spec = todo[j]
            manifest.record(*_result_files(paths[seed, spec.label]))
            bar.update()
    for seed, spec in todo:
        results[seed, spec.label] = load_outcome(paths[seed, spec.label])
    return {seed: {spec.label: results[seed, spec.label] for spec in config.rules} for seed in config.seeds}


def _run_rule(config: ExperimentConfig, spec: RuleRow, problem: Problem, samples: ReturnSamples) -> Result | Lottery:
    """One rule of the configuration on one seed: its options (with the status quo's, see
    :func:`rule_call_options`), under the configuration's norms if it has any."""
    options = rule_call_options(config, spec, problem)
    if not config.norms:
        return solvers.get_rule(spec.rule)(problem, samples, **options)
    from policyagg.experiments.norms import build_norms

    norms = build_norms(config, problem)
    return solvers.run_with_norms(spec.rule, problem, samples, norms=norms, select=config.norm_selection, **options)


def rule_call_options(config: ExperimentConfig, row: RuleRow, problem: Problem) -> dict:
    """The keyword options of one rule's call on ``problem``: the row's ``options`` and, if the
    configuration has a ``[status_quo]``, individual rationality against its point as
    ``constraints`` (unless ``individual_rationality = false``) and the point as the
    ``status_quo`` of a rule that takes one (unless the row's options name their own)."""
    options = dict(row.options)
    if config.status_quo is None:
        return options
    point = config.status_quo["point"]
    if "status_quo" in solvers.get_spec(row.rule).options:
        options.setdefault("status_quo", point)
    if config.status_quo["individual_rationality"]:
        options["constraints"] = individual_rationality(problem, point)
    return options


def _run_oracle_rule(
    config: ExperimentConfig,
    spec: RuleRow,
    problem: Problem | None,
    samples: ReturnSamples | None,
    seed: int,
    path: Path,
) -> Lottery:
    """One rule by the oracle route; its oracle calls are checkpointed in ``<path>.oracle/``."""
    from policyagg.experiments.oracle_route import run_oracle_rule

    env = None
    if trains_on_env(config):
        import_modules(config.env_imports, config.name)
        env = make_env(config.env_id, **config.env_kwargs)
    folder = path.with_name(path.name + ".oracle")
    return run_oracle_rule(config.solver, spec.rule, spec.options, problem, samples, seed=seed, folder=folder, env=env)


def _as_config(config) -> ExperimentConfig:
    if isinstance(config, ExperimentConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config)
    return load_config(config)


def _fingerprint(config: ExperimentConfig) -> dict:
    data = asdict(config)
    data["output"] = str(data["output"])
    return json.loads(json.dumps(data))  # tuples become lists, as they come back from the file


def _claim_output(config: ExperimentConfig, out: Path) -> Manifest:
    """Refuse to mix runs: the folder must be new, hold no results yet, or hold this same
    configuration (seeds may grow); return its manifest."""
    path = out / "config.json"
    mine = _fingerprint(config)
    manifest = Manifest(out)
    if path.exists() and manifest.holds_results():
        theirs = _read_fingerprint(path)
        if theirs is None:
            raise CorruptFileError(
                f"{path} is damaged, so the results in {out} cannot be matched to a configuration; replace "
                "them with `--overwrite` (Python: overwrite=True), or write elsewhere with `--out DIR`"
            )
        defaults = {f.name: _fingerprint_value(f.default) for f in fields(ExperimentConfig) if f.default is not MISSING}
        differs = sorted(k for k in mine if k not in ("seeds", "output") and theirs.get(k, defaults.get(k)) != mine[k])
        if differs:
            raise InvalidConfigError(
                f"{out} holds results of a different configuration (differs in {', '.join(differs)}); "
                "replace them with `--overwrite` (Python: overwrite=True), or write elsewhere with "
                "`--out DIR` (the configuration's `output`)"
            )
    atomic_write_json(path, mine)
    return manifest


def _read_fingerprint(path: Path) -> dict | None:
    """A folder's ``config.json``, or ``None`` if it is damaged."""
    try:
        theirs = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return theirs if isinstance(theirs, dict) else None


def _fingerprint_value(value):
    return json.loads(json.dumps(value))  # as it comes back from the file (tuples as lists)


def _load_samples(manifest: Manifest, path: Path, config: ExperimentConfig, problem: Problem) -> ReturnSamples | None:
    if not manifest.verified(path):
        return None
    try:
        samples = ReturnSamples.load(path)
    except PolicyAggError as exc:  # damaged: sample again
        warnings.warn(f"{exc}; sampling again", CheckpointWarning, stacklevel=2)
        return None
    if samples.values.shape != (config.samples, problem.n_agents):
        return None  # from another configuration: sample again
    return samples


def _result_files(path: Path) -> tuple[Path, Path]:
    return path.with_suffix(".json"), path.with_suffix(".npz")


def _load_result(manifest: Manifest, path: Path) -> Result | Lottery | None:
    if not manifest.verified(*_result_files(path)):
        return None
    try:
        return load_outcome(path)
    except PolicyAggError as exc:  # damaged, edited or from an interrupted write pair: compute it again
        warnings.warn(f"{exc}; computing it again", CheckpointWarning, stacklevel=2)
        return None


# --------------------------------------------------------------------------- summary
def summarize(runs: list[SeedRun]) -> dict[str, dict]:
    """Per rule label: mean and standard error over seeds of the fairness figures, and of
    the agents' normalised returns sorted ascending."""
    labels = list(runs[0].results)
    summary = {}
    for label in labels:
        results = [run.results[label] for run in runs]
        figures = {
            "gini": [r.gini for r in results],
            "min_normalized": [float(r.normalized.min()) for r in results],
            "mean_normalized": [float(r.normalized.mean()) for r in results],
            "quantile": [r.report.get("min_rank", np.nan) for r in results],
            "pvc_epsilon": [_num(r.report.get("pvc_epsilon")) for r in results],
            "ex_post_gini": [ex_post_gini(r) for r in results],
            "ex_post_min_normalized": [ex_post_min_normalized(r) for r in results],
        }
        sorted_normalized = np.sort(np.stack([r.normalized for r in results]), axis=1)
        summary[label] = {
            "rule": results[0].rule,
            "options": dict(results[0].options),
            "lottery": any(isinstance(r, Lottery) for r in results),
            **{k: (float(np.mean(v)), _se(np.asarray(v, float))) for k, v in figures.items()},
            "bars_mean": sorted_normalized.mean(axis=0),
            "bars_se": np.array([_se(col) for col in sorted_normalized.T]),
        }
    return summary


def ex_post_gini(outcome: Result | Lottery) -> float:
    """The expected Gini index of the policy drawn (a result: its own Gini index)."""
    return outcome.ex_post_gini if isinstance(outcome, Lottery) else outcome.gini


def ex_post_min_normalized(outcome: Result | Lottery) -> float:
    """``E_k[min_i u_i(pi_k)]``: the expected worst-off agent's normalised return in the policy
    drawn (a result: its minimum normalised return)."""
    if isinstance(outcome, Lottery):
        return float(outcome.probabilities @ outcome.support_normalized.min(axis=1))
    return float(outcome.normalized.min())


def _num(value) -> float:
    return np.nan if value is None else float(value)


def _se(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / np.sqrt(values.size)) if values.size > 1 else 0.0


#: The summary tables' columns (see :mod:`policyagg.experiments.tables`).
COLUMNS = TABLE_COLUMNS


def summary_table(config: ExperimentConfig, summary: dict) -> FairnessTable:
    """The :class:`~policyagg.experiments.tables.FairnessTable` of a :func:`summarize` dict."""
    return table_from_summary(config.name, summary, n_seeds=len(config.seeds), n_samples=config.samples)


def summary_markdown(config: ExperimentConfig, summary: dict) -> str:
    """The Markdown table of a :func:`summarize` dict (:func:`~policyagg.experiments.tables.to_markdown`)."""
    return to_markdown(summary_table(config, summary))


def write_summary(config: ExperimentConfig, runs: list[SeedRun], out: Path, *, figures: bool = True) -> list[Path]:
    """Write the Markdown and CSV tables, the bar data, and the figures; return the paths."""
    table = summary_table(config, summarize(runs))
    files = [
        atomic_write_bytes(out / "summary.md", to_markdown(table).encode()),
        write_csv(table, out / "summary.csv"),
        write_bars_csv(table, out / "bars.csv"),
    ]
    if figures:
        from policyagg.experiments.plots import cdf_figure, plot_returns

        files += plot_returns(table, out / "bars", title=f"{config.name} ({len(config.seeds)} seed(s))")
        first = runs[0]
        if first.samples is None:  # the sb3 oracle route samples no measure
            return files
        labels = {row.key: row.label for row in table.rows}
        returns = {labels[key]: result.returns for key, result in first.results.items()}
        names = next(iter(first.results.values())).names
        files += cdf_figure(
            first.samples.values,
            returns,
            out / f"cdf-seed{first.seed}",
            names=names,
            title=f"{config.name}, seed {first.seed}",
        )
    return files
