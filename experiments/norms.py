"""Norms in experiment configurations: build a configuration's ``[[norms]]`` for one seed's
problem, and the price-of-a-norm table of ``policyagg norms CONFIG.toml``.

A ``[[norms]]`` table (validated by :func:`policyagg.experiments.config.parse_norms`)::

    [[norms]]
    kind = "rate"                          # prohibition | obligation | rate | guarantee | ambiguous
    name = "top phase unattended <= 5%"
    role = { site = "each", phase = 2 }    # "all" | { states = [...] } | attention: { site = j | "each" | "any", phase = p }
                                           # (a site without a phase: every state, the site naming the actions)
    actions = "other"                      # indices, or attention words: "attend" (the role's site), "other", "none"
    at_most = 0.05                         # rate: at_most and/or at_least (shares of the time)

``site = "each"`` makes one norm per site, held together under the table's name
(:class:`~policyagg.norms.AllOf`); ``"any"``: states where some site is in that phase.
Guarantees take ``agent`` (a name or an index) and ``floor`` (a normalised return); ambiguous
norms take ``interpretations`` (an array of norm tables), ``weights``, ``mode`` ("robust" or
"chance") and ``level``; the configuration's ``norm_selection`` says how chance norms choose.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from policyagg import solvers
from policyagg.errors import InvalidProblemError
from policyagg.experiments.config import ExperimentConfig, InvalidConfigError, _attention_size
from policyagg.io import atomic_write_bytes
from policyagg.measures import sample_returns
from policyagg.norms import AllOf, AmbiguousNorm, Guarantee, Norm, Norms, Obligation, Prohibition, Rate, Role
from policyagg.problem import Problem
from policyagg.solvers.norms import NormPrice, norm_prices


def attention_phases(n_sites: int, n_phases: int) -> NDArray[np.int64]:
    """``(S, k)``: every state's site phases (mixed radix, site 0 least significant; as
    :meth:`policyagg.envs.attention.AttentionModel.phases`)."""
    s = np.arange(n_phases**n_sites)
    return (s[:, None] // n_phases ** np.arange(n_sites)) % n_phases


def build_norms(config: ExperimentConfig, problem: Problem) -> Norms:
    """The configuration's norms on ``problem`` (one seed's), as :class:`~policyagg.norms.Norms`."""
    labels = None
    if config.env_id == "attention":
        labels = [tuple(int(p) for p in row) for row in attention_phases(*_attention_size(config.env_kwargs))]
    norms = Norms(_norm(spec, labels) for spec in config.norms)
    for norm in norms:  # state and action indices of Gymnasium models are checked here, naming the norm
        parts = norm.interpretations if isinstance(norm, AmbiguousNorm) else (norm,)
        try:
            for part in parts:
                part.compile(problem)
        except InvalidProblemError as exc:
            raise InvalidConfigError(f"{config.name}: `norms`: {exc}") from None
    return norms


def _norm(spec: dict, labels: list[tuple[int, ...]] | None) -> Norm:
    kind, name = spec["kind"], spec["name"]
    if kind == "guarantee":
        return Guarantee(name, spec["agent"], spec["floor"])
    if kind == "ambiguous":
        parts = tuple(_norm(part, labels) for part in spec["interpretations"])
        return AmbiguousNorm(name, parts, tuple(spec["weights"]), spec["mode"], spec["level"])
    role = spec["role"]
    if isinstance(role, dict) and role.get("site") == "each":
        assert labels is not None  # parse_norms allows sites only for the attention model
        n_sites = len(labels[0])
        parts = tuple(_single(kind, f"{name} (site {j})", role | {"site": j}, spec, labels) for j in range(n_sites))
        return AllOf(name, parts)
    return _single(kind, name, role, spec, labels)


def _single(kind: str, name: str, role_spec: Any, spec: dict, labels: list[tuple[int, ...]] | None) -> Norm:
    role = _role(role_spec, labels)
    actions = _actions(spec.get("actions"), role_spec, labels)
    if kind == "prohibition":
        assert actions is not None
        return Prohibition(name, role, actions)
    if kind == "obligation":
        assert actions is not None
        return Obligation(name, role, actions)
    return Rate(name, role, actions, spec.get("at_most"), spec.get("at_least"))


def _role(spec: Any, labels: list[tuple[int, ...]] | None) -> Role:
    if spec == "all":
        return Role.every()
    if "states" in spec:
        return Role.of(spec["states"])
    assert labels is not None
    site, phase = spec["site"], spec.get("phase")
    if phase is None:
        return Role(None, f"every state (site {site}'s actions)")
    if site == "any":
        return Role.where(lambda p: phase in p, labels, f"some site in phase {phase}")
    return Role.where(lambda p: p[site] == phase, labels, f"site {site} in phase {phase}")


def _actions(value: Any, role_spec: Any, labels: list[tuple[int, ...]] | None) -> tuple[int, ...] | None:
    if value is None or isinstance(value, list):
        return None if value is None else tuple(value)
    assert labels is not None
    n_sites = len(labels[0])
    if value == "none":
        return (n_sites,)
    site = role_spec["site"]
    return (site,) if value == "attend" else tuple(a for a in range(n_sites + 1) if a != site)


# --------------------------------------------------------------------------- the price table
#: Columns of the price table (Markdown and CSV).
PRICE_COLUMNS = (
    "rule",
    "norm",
    "objective",
    "without",
    "with",
    "change",
    "losers",
    "min normalised without",
    "min normalised with",
    "gini without",
    "gini with",
    "seeds",
    "status",
    "chosen interpretations",
)


def price_rows(config: ExperimentConfig, *, progress: bool | None = None) -> list[dict[str, Any]]:
    """For every rule of ``config`` and every norm (and all norms together): the price table's
    rows, means over the configuration's seeds (infeasible seeds left out and counted in
    ``status``). Samples are drawn as the run would (same measure, size and seed)."""
    from policyagg.experiments.run import build_problem

    if not config.norms:
        raise InvalidConfigError(f"{config.name}: the configuration has no [[norms]] tables")
    collected: dict[tuple[str, str], list[NormPrice]] = {}
    needs_samples = any(solvers.get_spec(row.rule).needs_samples for row in config.rules)
    seeds = tqdm(config.seeds, desc=f"{config.name}: price of norms, seeds", disable=progress is False, unit="seed")
    for seed in seeds:
        problem = build_problem(config, seed)
        samples = None
        if needs_samples:
            samples = sample_returns(
                problem, config.samples, measure=config.measure, rng=seed, progress=False, **config.measure_options
            )
        norms = build_norms(config, problem)
        for row in config.rules:
            spec = solvers.get_spec(row.rule)
            for price in norm_prices(
                row.rule,
                problem,
                samples if spec.needs_samples else None,
                norms=norms,
                select=config.norm_selection,
                **row.options,
            ):
                collected.setdefault((row.label, price.norm), []).append(price)
    return [_row(label, norm, prices) for (label, norm), prices in collected.items()]


def _row(label: str, norm: str, prices: Sequence[NormPrice]) -> dict[str, Any]:
    ok = [p for p in prices if p.status != "infeasible"]

    def mean(values: Callable[[NormPrice], float], among: Sequence[NormPrice]) -> float:
        return float(np.mean([values(p) for p in among])) if among else float("nan")

    infeasible = len(prices) - len(ok)
    statuses = sorted({p.status for p in ok})
    status = ", ".join(statuses) + (f"; infeasible on {infeasible}/{len(prices)} seeds" if infeasible else "")
    return {
        "rule": label,
        "norm": norm,
        "objective": prices[0].objective_name,
        "without": mean(lambda p: p.objective_without, prices),
        "with": mean(lambda p: p.objective_with, ok),
        "change": mean(lambda p: p.objective_change, ok),
        "losers": mean(lambda p: p.losers, ok),
        "min normalised without": mean(lambda p: float(np.min(p.normalized_without)), prices),
        "min normalised with": mean(lambda p: float(np.min(p.normalized_with)), ok),
        "gini without": mean(lambda p: p.gini_without, prices),
        "gini with": mean(lambda p: p.gini_with, ok),
        "seeds": len(prices),
        "chosen interpretations": _chosen(ok),
        "status": status.strip("; ") or "infeasible",
        "normalized_change": np.mean([p.normalized_change for p in ok], axis=0) if ok else None,
    }


def _chosen(prices: Sequence[NormPrice]) -> str:
    """The interpretations chance norms chose, with on how many seeds: ``"a + b (2/3); c (1/3)"``."""
    counts: dict[str, int] = {}
    for price in prices:
        for norm, picked in (price.chosen or {}).items():
            key = f"{norm}: {' + '.join(picked)}" if len(price.chosen or {}) > 1 else " + ".join(picked)
            counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{key} ({k}/{len(prices)})" for key, k in counts.items())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:.4g}"
    return str(value)


def price_markdown(rows: Sequence[dict[str, Any]], title: str) -> str:
    """The price table in Markdown: one row per (rule, norm)."""
    lines = [f"# Price of norms: {title}", "", "| " + " | ".join(PRICE_COLUMNS) + " |"]
    lines.append("|" + "---|" * len(PRICE_COLUMNS))
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) for c in PRICE_COLUMNS) + " |")
    lines += [
        "",
        "`without` / `with`: the rule's objective without any norm / with the norm (means over seeds); "
        "`losers`: agents whose normalised return drops by more than 1e-3 of its range (mean over seeds).",
    ]
    return "\n".join(lines) + "\n"


def price_csv(rows: Sequence[dict[str, Any]], n_agents: int | None = None) -> str:
    """The price table as CSV, with each agent's mean normalised-return change."""
    buffer = io.StringIO()
    n = n_agents or max((len(r["normalized_change"]) for r in rows if r["normalized_change"] is not None), default=0)
    writer = csv.writer(buffer)
    writer.writerow([*PRICE_COLUMNS, *(f"normalised change agent {i}" for i in range(n))])
    for row in rows:
        change = row["normalized_change"] if row["normalized_change"] is not None else [float("nan")] * n
        writer.writerow([_fmt(row[c]) for c in PRICE_COLUMNS] + [f"{v:.6g}" for v in change])
    return buffer.getvalue()


def write_price_table(
    config: ExperimentConfig, out: Path | None = None, *, progress: bool | None = None, figures: bool = True
) -> list[Path]:
    """Compute the price table of ``config`` and write ``norms.md``, ``norms.csv`` and (with
    ``figures``) ``norms.png``/``.svg`` into ``out`` (default: the configuration's output
    folder); return the paths."""
    rows = price_rows(config, progress=progress)
    folder = Path(config.output if out is None else out)
    title = f"{config.name} ({len(config.seeds)} seed(s))"
    files = [
        atomic_write_bytes(folder / "norms.md", price_markdown(rows, title).encode()),
        atomic_write_bytes(folder / "norms.csv", price_csv(rows).encode()),
    ]
    if figures:
        from policyagg.experiments.plots import plot_norm_prices

        files += plot_norm_prices(rows, folder / "norms", title=f"price of norms: {title}")
    return files
