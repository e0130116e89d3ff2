"""One experiment under each reference measure: how the rules' fairness and ranking move.

``compare_measures("attention-a")`` runs the shipped configuration once per measure
(``policy``, ``volume``, ``optimal-mixture``; each in its own resumable folder) and writes
``<name>-measures.md``: per rule the Gini index and the quantile reached under each measure,
the rules ordered by Gini, and how concentrated each measure is — the share of an agent's
sampled returns inside the densest window of 6% of its LP range (the median agent). In high
dimension ``policy`` and ``volume`` put almost all their mass in such a thin band, so every
clearly good policy has rank ~ 1 and quantile rules lose resolution; ``optimal-mixture``
spreads the mass between the agents' optima and keeps it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import stats

from policyagg.experiments.config import CONFIGS, load_config
from policyagg.experiments.run import build_problem, run_config, summarize
from policyagg.experiments.tables import display_label
from policyagg.io import atomic_write_bytes
from policyagg.measures import MEASURES
from policyagg.metrics import window_mass

#: Window (fraction of the LP range) of the concentration figure.
WINDOW = 0.06
#: A result "has rank ~ 1" for every agent when its quantile reached is at least this.
TOP_RANK = 0.99


def compare_measures(
    name: str = "attention-a",
    *,
    measures=MEASURES,
    samples: int | None = None,
    seeds=None,
    out="results",
    workers: int | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
) -> dict:
    """Run configuration ``name`` (a shipped config name or a TOML path) under each measure;
    return the per-measure figures and write the Markdown comparison next to the runs.
    ``overwrite``: replace runs of another configuration in the folders (see ``run_config``)."""
    path = Path(name) if str(name).endswith(".toml") else CONFIGS / f"{name}.toml"
    base = load_config(path)
    out = Path(out)
    figures = {}
    for measure in measures:
        config = base.with_overrides(
            measure=measure, samples=samples, seeds=seeds, output=out / f"{base.name}-{measure}"
        )
        run = run_config(config, workers=workers, progress=progress, overwrite=overwrite)
        figures[measure] = measure_figures(config, run)
    text = comparison_markdown(base.name, figures)
    atomic_write_bytes(out / f"{base.name}-measures.md", text.encode())
    return {"figures": figures, "markdown": text, "path": out / f"{base.name}-measures.md"}


def measure_figures(config, run) -> dict:
    """Per rule: Gini and quantile reached (mean, s.e. over seeds); per measure: the median
    agent's window mass and the share of rules at rank ~ 1, over seeds."""
    summary = summarize(run.seeds)
    masses = []
    for seed_run in run.seeds:
        ranges = build_problem(config, seed_run.seed).require_ranges()
        masses.append(np.median(window_mass(ranges.normalize(seed_run.samples.values), WINDOW)))
    at_top = [np.mean([r.report.get("min_rank", 0.0) >= TOP_RANK for r in s.results.values()]) for s in run.seeds]
    info = run.seeds[0].samples.info
    return {
        "samples": config.samples,
        "seeds": len(config.seeds),
        "labels": {label: display_label(label, row["options"]) for label, row in summary.items()},
        "gini": {label: row["gini"] for label, row in summary.items()},
        "quantile": {label: row["quantile"] for label, row in summary.items()},
        "window_mass": float(np.mean(masses)),
        "rules_at_top": float(np.mean(at_top)),
        "ess": None if "ess" not in info else float(np.min(info["ess"])),
        "rhat": None if "rhat" not in info else float(np.max(info["rhat"])),
    }


def _pm(mean: float, se: float, seeds: int) -> str:
    return f"{mean:.3f} ± {se:.3f}" if seeds > 1 else f"{mean:.3f}"


#: Two rules' mean Gini closer than this are equal (`=`) in the ordering.
TIE = 1e-9


def rank_order(values: dict[str, float], digits: int = 3) -> str:
    """``values`` from smallest to largest, joined by ``<``; ties joined by ``=`` (equal within
    :data:`TIE`) or ``≈`` (equal once rounded to ``digits`` decimals, as the table prints them)."""
    order = sorted(values, key=lambda label: values[label])
    text = order[0] if order else ""
    for before, label in zip(order, order[1:]):
        a, b = values[before], values[label]
        sign = "=" if abs(b - a) <= TIE else "≈" if f"{a:.{digits}f}" == f"{b:.{digits}f}" else "<"
        text += f" {sign} {label}"
    return text


def comparison_markdown(name: str, figures: dict) -> str:
    measures = list(figures)
    keys = list(next(iter(figures.values()))["gini"])
    shown = next(iter(figures.values())).get("labels", {})
    first = figures[measures[0]]
    seeds = first["seeds"]
    spread = "mean ± s.e. over seeds" if seeds > 1 else "one seed: no standard error"
    lines = [
        f"{name}: the rules under each reference measure ({seeds} seed(s), "
        + ", ".join(f"{m}: {f['samples']} samples" for m, f in figures.items())
        + f"); {spread}",
        "",
        "| rule | "
        + " | ".join(f"Gini ({m})" for m in measures)
        + " | "
        + " | ".join(f"quantile ({m})" for m in measures)
        + " |",
        "| --- |" + " ---: |" * (2 * len(measures)),
    ]
    for key in keys:
        cells = []
        for m in measures:
            mean, se = figures[m]["gini"][key]
            cells.append(_pm(mean, se, seeds))
        cells += [f"{figures[m]['quantile'][key][0]:.3f}" for m in measures]
        lines.append(f"| {shown.get(key, key)} | " + " | ".join(cells) + " |")
    lines += ["", "Rules from fairest to least fair (mean Gini; `=` equal, `≈` equal to 3 decimals):", ""]
    for m in measures:
        lines.append(f"* {m}: " + rank_order({shown.get(k, k): figures[m]["gini"][k][0] for k in keys}))
    for m in measures[1:]:
        rho = stats.spearmanr(
            [figures[measures[0]]["gini"][k][0] for k in keys], [figures[m]["gini"][k][0] for k in keys]
        ).statistic
        lines.append(f"* Spearman correlation of the Gini values, {measures[0]} vs {m}: {rho:.2f}")
    lines += [
        "",
        f"Concentration: the median agent's share of sampled returns in the densest window of "
        f"{WINDOW:.0%} of its LP range, and the share of rules whose result has rank >= {TOP_RANK} "
        "for every agent.",
        "",
        "| measure | window mass | rules at rank ~ 1 | min ESS | max R-hat |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for m, f in figures.items():
        ess = "" if f["ess"] is None else f"{f['ess']:.0f}"
        rhat = "" if f["rhat"] is None else f"{f['rhat']:.3f}"
        lines.append(f"| {m} | {f['window_mass']:.3f} | {f['rules_at_top']:.2f} | {ess} | {rhat} |")
    return "\n".join(lines) + "\n"
