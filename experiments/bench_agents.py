"""Rules against the number of agents (``policyagg bench agents``, issue 13).

The attention model of experiment (b) (``configs/attention-b.toml``: 5 sites, 3 phases,
average reward, agents on random subsets of sites with random weights, the ``policy``
measure), built by the experiments' own code (:func:`~policyagg.experiments.run.build_problem`)
for each number of agents ``n``. Per ``n`` one seeded sample of returns is drawn and shared by
every rule; each rule then runs alone in a fresh forked process, so that its peak resident
memory (``resource.getrusage``) is its own. Per (n, rule) the table gives the wall time, the
result's status (and any gap in its diagnostics), the LP solves, the peak memory and the wall
time as a multiple of utilitarian's on the same ``n`` in the same run. No figure is asserted.

Time limit ``T``: each rule gets ``time_limit=T`` (its own option: seconds per LP/MILP solve),
and its process is killed if it is still running :func:`kill_after` ``(T)`` seconds after it
started (a rule of many solves could otherwise run for many times ``T``); a killed rule is
reported with status ``"time-limit"`` and no result. A rule that raises is reported as
``"error: <type>"`` and the benchmark goes on.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import resource
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from policyagg import solvers
from policyagg.errors import InvalidProblemError, SolverTimeLimitError, check_count
from policyagg.experiments.bench import peak_rss_mb
from policyagg.experiments.config import CONFIGS, load_config
from policyagg.experiments.run import build_problem
from policyagg.io import atomic_write_bytes
from policyagg.measures import sample_returns
from policyagg.parallel import _worker_init, processes_available  # the workers' own set-up: die with the parent
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples

#: Numbers of agents timed by default.
AGENT_COUNTS: tuple[int, ...] = (5, 10, 30, 100, 300, 1000)
#: Sampled policies per number of agents, by default.
DEFAULT_SAMPLES = 2000
#: Seconds per rule, by default (see :func:`kill_after`).
DEFAULT_TIME_LIMIT = 120.0
#: The rule every other rule's wall time is divided by (always run, first).
BASELINE = "utilitarian"
#: The configuration whose environment, agents and measure are benchmarked.
CONFIG = CONFIGS / "attention-b.toml"
#: Diagnostics that hold a gap, in the order they are looked for, and what the table calls them
#: (``gap`` is the rule's own, e.g. nash_welfare's log-welfare gap of its tangent cuts).
GAP_KEYS = {"column_generation_gap": "column-generation gap", "mip_gap": "MIP gap", "gap": "diagnostics['gap']"}
#: Share of the memory available at the start that each rule's process may address (its
#: ``RLIMIT_AS``), so that one rule's model cannot exhaust the machine (the OWA LP of
#: generalized_gini grew as n^2 S A before its cutting planes).
MEMORY_SHARE = 0.5
#: Characters of an error message or warning kept in the table.
MESSAGE_CHARS = 200


def kill_after(time_limit: float) -> float:
    """Seconds after which a rule's process is killed: ``1.25 T + 5``, so that a solve stopped
    by its own limit ``T`` can still return its incumbent and the result be assembled."""
    return 1.25 * time_limit + 5.0


def default_memory_limit_mb() -> float:
    """:data:`MEMORY_SHARE` of the memory available now, in MB."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return MEMORY_SHARE * available / 2**20


def agents_problem(n_agents: int, *, seed: int = 0, n_sites: int = 5, n_phases: int = 3) -> Problem:
    """Experiment (b)'s problem with ``n_agents`` agents (return ranges attached): the shipped
    ``attention-b.toml`` with ``agents.n_agents`` (and the model's size) replaced."""
    config = load_config(CONFIG)
    config = replace(
        config,
        n_agents=check_count("n_agents", n_agents),
        env_kwargs={**config.env_kwargs, "n_sites": n_sites, "n_phases": n_phases},
    )
    return build_problem(config, seed)


def agents_samples(problem: Problem, n_samples: int, *, seed: int = 0, workers: int | None = None) -> ReturnSamples:
    """``n_samples`` returns of ``problem`` under the configuration's measure, seeded by ``seed``."""
    config = load_config(CONFIG)
    return sample_returns(
        problem,
        n_samples,
        measure=config.measure,
        rng=seed,
        workers=workers,
        progress=False,
        **config.measure_options,
    )


def rule_names(rules: Sequence[str] | None = None) -> tuple[str, ...]:
    """The rules to time, :data:`BASELINE` first (added if missing); ``None``: every registered rule."""
    names = list(solvers.RULES) if rules is None else list(rules)
    unknown = [name for name in names if name not in solvers.RULES]
    if unknown:
        raise InvalidProblemError(
            f"`rules`: {', '.join(map(repr, unknown))} is not a registered rule; "
            f"choose among {', '.join(solvers.RULES)}"
        )
    return (BASELINE, *dict.fromkeys(name for name in names if name != BASELINE))


def _gap(diagnostics: dict[str, Any]) -> tuple[float | None, str]:
    """The first gap recorded in ``diagnostics`` (value, its name in :data:`GAP_KEYS`), or ``(None, "")``."""
    for key, label in GAP_KEYS.items():
        value = diagnostics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), label
    return None, ""


def _short(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= MESSAGE_CHARS else first[: MESSAGE_CHARS - 3] + "..."


def time_rule(name: str, problem: Problem, samples: ReturnSamples, *, time_limit: float) -> dict[str, Any]:
    """Run rule ``name`` once (default options, ``time_limit`` seconds per solve) in this
    process; its wall seconds, status, gap, LP solves, warnings and peak RSS (of this process)."""
    start_rss = peak_rss_mb()
    row: dict[str, Any] = {"gap": None, "gap_kind": "", "solves": None, "error": ""}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            result = solvers.get_rule(name)(problem, samples, time_limit=time_limit)
        except SolverTimeLimitError as exc:
            seconds = time.perf_counter() - start
            incumbent_gap = getattr(exc.solution, "mip_gap", None)
            row |= {"status": "time-limit", "error": f"{type(exc).__name__}: {_short(str(exc))}"}
            if incumbent_gap is not None:
                row |= {"gap": float(incumbent_gap), "gap_kind": "MIP gap of the incumbent"}
        except Exception as exc:  # the benchmark reports any failure and goes on
            seconds = time.perf_counter() - start
            row |= {"status": f"error: {type(exc).__name__}", "error": _short(str(exc))}
        else:
            seconds = time.perf_counter() - start
            gap, kind = _gap(result.diagnostics)
            row |= {"status": result.status, "gap": gap, "gap_kind": kind, "solves": result.diagnostics.get("n_solves")}
    kinds = dict.fromkeys(f"{w.category.__name__}: {_short(str(w.message))}" for w in caught)
    return row | {
        "seconds": seconds,
        "warnings": "; ".join(kinds),
        "peak_rss_mb": peak_rss_mb(),
        "start_rss_mb": start_rss,
        "killed": False,
    }


def _child(send: Any, task: Callable[[], dict[str, Any]], memory_limit_mb: float | None) -> None:
    _worker_init()  # die with the parent
    try:
        if memory_limit_mb is not None:  # allocations beyond it fail (MemoryError) instead of exhausting the machine
            limit = int(memory_limit_mb * 2**20)
            resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        with threadpool_limits(limits=1, user_api="blas"):
            row = task()
    except BaseException as exc:  # anything time_rule did not catch: report it
        row = {"status": f"error: {type(exc).__name__}", "error": _short(str(exc)), "peak_rss_mb": peak_rss_mb()}
    send.send_bytes(json.dumps(row).encode())  # JSON, not pickle
    send.close()


def in_fresh_process(
    task: Callable[[], dict[str, Any]], *, kill_after_seconds: float, memory_limit_mb: float | None = None
) -> dict[str, Any]:
    """``task()`` (a dict of JSON values) run in a forked process that starts with only this
    process's memory, so its peak RSS is the task's own plus what it inherited; killed after
    ``kill_after_seconds`` (then ``{"status": "time-limit", "killed": True, ...}``); its
    address space limited to ``memory_limit_mb`` (``None``: no limit)."""
    if not processes_available():
        raise InvalidProblemError(
            "`policyagg bench agents` runs each rule in a forked process; this platform lacks fork"
        )
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(send, task, memory_limit_mb), daemon=True)
    start = time.perf_counter()
    process.start()
    send.close()
    try:
        if receive.poll(kill_after_seconds):
            try:
                return dict(json.loads(receive.recv_bytes()))
            except EOFError:  # the process died without a word (killed by the OS, out of memory, ...)
                process.join()
                return {
                    "status": "error: crashed",
                    "error": f"the rule's process ended with exit code {process.exitcode} and no result"
                    + ("" if memory_limit_mb is None else f" (its memory limit: {memory_limit_mb:.0f} MB)"),
                    "seconds": time.perf_counter() - start,
                }
        process.kill()
        return {
            "status": "time-limit",
            "killed": True,
            "error": f"killed after {kill_after_seconds:.0f} s without a result",
            "seconds": time.perf_counter() - start,
        }
    finally:
        process.join()
        receive.close()


def bench_agents(
    *,
    agent_counts: Sequence[int] = AGENT_COUNTS,
    rules: Sequence[str] | None = None,
    n_samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    time_limit: float = DEFAULT_TIME_LIMIT,
    n_sites: int = 5,
    n_phases: int = 3,
    workers: int | None = None,
    memory_limit_mb: float | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool | None = False,
) -> dict[str, Any]:
    """Every rule in ``rules`` (default: every registered rule, default options) on experiment
    (b) with each number of agents in ``agent_counts``; see the module docstring.

    ``workers`` processes draw the samples; the rules run one at a time, each with its address
    space limited to ``memory_limit_mb`` (default :func:`default_memory_limit_mb`). With ``out``, the
    tables :func:`write_agents` writes are rewritten (atomically) after every rule, so an
    interrupted run keeps what it measured. ``progress``: ``None`` or ``True`` shows a bar."""
    counts = [check_count("agent_counts", n) for n in agent_counts]
    if not counts:
        raise InvalidProblemError("`agent_counts` must name at least one number of agents, e.g. 5,10,30")
    if isinstance(time_limit, bool) or not isinstance(time_limit, (int, float)) or not time_limit > 0:
        raise InvalidProblemError(f"`time_limit` must be a positive number of seconds; got {time_limit!r}")
    n_samples = check_count("n_samples", n_samples)
    names = rule_names(rules)
    if memory_limit_mb is None:
        memory_limit_mb = default_memory_limit_mb()
    elif isinstance(memory_limit_mb, bool) or not isinstance(memory_limit_mb, (int, float)) or not memory_limit_mb > 0:
        raise InvalidProblemError(f"`memory_limit_mb` must be a positive number of MB; got {memory_limit_mb!r}")
    report: dict[str, Any] = {
        "model": f"attention {n_sites} sites x {n_phases} phases, experiment (b) agents (attention-b.toml), seed {seed}",
        "samples": n_samples,
        "time_limit": float(time_limit),
        "kill_after": kill_after(time_limit),
        "memory_limit_mb": memory_limit_mb,
        "setup": [],
        "rows": [],
    }
    bar = tqdm(total=len(counts) * len(names), desc="bench agents", unit="rule", disable=progress is False)
    for n in counts:
        bar.set_postfix_str(f"{n} agents: return ranges and samples")
        start = time.perf_counter()
        problem = agents_problem(n, seed=seed, n_sites=n_sites, n_phases=n_phases)
        problem_seconds = time.perf_counter() - start
        start = time.perf_counter()
        samples = agents_samples(problem, n_samples, seed=seed, workers=workers)
        report["setup"].append(
            {
                "agents": n,
                "problem_seconds": problem_seconds,
                "sampling_seconds": time.perf_counter() - start,
                "load_average": os.getloadavg()[0],  # other jobs on the machine slow every figure
            }
        )
        baseline = None
        for name in names:
            bar.set_postfix_str(f"{n} agents: {name}")
            row = in_fresh_process(
                partial(time_rule, name, problem, samples, time_limit=time_limit),
                kill_after_seconds=kill_after(time_limit),
                memory_limit_mb=memory_limit_mb,
            )
            if name == BASELINE and not str(row["status"]).startswith("error") and not row.get("killed"):
                baseline = row["seconds"]
            row = {"agents": n, "rule": name} | row
            row["vs_utilitarian"] = None if baseline is None else row["seconds"] / baseline
            report["rows"].append(row)
            if out is not None:
                write_agents(report, out)
            bar.update()
    bar.close()
    return report


#: CSV columns, in order (one row per number of agents and rule).
CSV_COLUMNS = (
    "agents",
    "rule",
    "status",
    "gap",
    "gap_kind",
    "seconds",
    "vs_utilitarian",
    "solves",
    "peak_rss_mb",
    "start_rss_mb",
    "killed",
    "warnings",
    "error",
)


def agents_csv(report: dict[str, Any]) -> str:
    """The report's rows as CSV (:data:`CSV_COLUMNS`), with each size's set-up seconds."""
    setup = {s["agents"]: s for s in report["setup"]}
    header = [*CSV_COLUMNS, "problem_seconds", "sampling_seconds", "load_average"]
    rows = [
        [row.get(c, "") if row.get(c) is not None else "" for c in CSV_COLUMNS]
        + [setup[row["agents"]][key] for key in ("problem_seconds", "sampling_seconds", "load_average")]
        for row in report["rows"]
    ]
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    return buffer.getvalue()


def _number(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def format_agents(report: dict[str, Any]) -> str:
    """The report as Markdown: a line of set-up times per size, then one table row per (n, rule)."""
    lines = [
        f"{report['model']}; {report['samples']} sampled policies per size; time limit "
        f"{report['time_limit']:g} s per solve, a rule killed after {report['kill_after']:g} s; "
        f"each rule's address space limited to {report['memory_limit_mb']:.0f} MB",
        "",
    ]
    for s in report["setup"]:
        lines.append(
            f"- {s['agents']} agents: problem and return ranges {s['problem_seconds']:.1f} s, "
            f"samples {s['sampling_seconds']:.1f} s, load average {s['load_average']:.1f}"
        )
    lines += [
        "",
        "| agents | rule | status | gap | wall s | x utilitarian | LP solves | peak RSS MB | rule's own MB | notes |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in report["rows"]:
        gap = "" if row.get("gap") is None else f"{row['gap']:.2g} ({row['gap_kind']})"
        peak, start = row.get("peak_rss_mb"), row.get("start_rss_mb")
        own = None if peak is None or start is None else peak - start
        notes = "; ".join(filter(None, [row.get("error", ""), row.get("warnings", "")])).replace("|", "/")
        lines.append(
            f"| {row['agents']} | {row['rule']} | {row['status']} | {gap} | {_number(row.get('seconds'), '.2f')} | "
            f"{_number(row.get('vs_utilitarian'), '.1f')} | {row.get('solves') or ''} | {_number(peak, '.0f')} | "
            f"{_number(own, '.0f')} | {notes} |"
        )
    return "\n".join(lines)


def write_agents(report: dict[str, Any], out: str | os.PathLike[str]) -> list[Path]:
    """Write ``bench-agents.csv`` and ``bench-agents.md`` into folder ``out``, each atomically."""
    folder = Path(out)
    return [
        atomic_write_bytes(folder / "bench-agents.csv", agents_csv(report).encode()),
        atomic_write_bytes(folder / "bench-agents.md", (format_agents(report) + "\n").encode()),
    ]
