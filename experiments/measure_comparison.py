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
from policyagg.io import atomic_write_bytes
from policyagg.measures import MEASURES
from policyagg.metrics import window_mass

#: Window (fraction of the LP range) of the concentration figure.
WINDOW = 0.06
#: A result "has rank ~ 1" for every agent when its quantile reached is at least this.
TOP_RANK = 0.99


def compare_measures(name: str = "attention-a", *, measures=MEASURES, samples: int | None = None, seeds=None,
                     out="results", workers: int | None = None, progress: bool | None = None) -> dict:
    """Run configuration ``name`` (a shipped config name or a TOML path) under each measure;
    return the per-measure figures and write the Markdown comparison next to the runs."""
    path = Path(name) if str(name).endswith(".toml") else CONFIGS / f"{name}.toml"
    base = load_config(path)
    out = Path(out)
    figures = {}
    for measure in measures:
        config = base.with_overrides(measure=measure, samples=samples, seeds=seeds,
                                     output=out / f"{base.name}-{measure}")
        run = run_config(config, workers=workers, progress=progress)
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
        ranges = build_problem(config, seed_run.seed).ranges
        masses.append(np.median(window_mass(ranges.normalize(seed_run.samples.values), WINDOW)))
    at_top = [np.mean([r.report.get("min_rank", 0.0) >= TOP_RANK for r in s.results.values()]) for s in run.seeds]
    info = run.seeds[0].samples.info
    return {
        "samples": config.samples, "seeds": len(config.seeds),
        "gini": {label: row["gini"] for label, row in summary.items()},
        "quantile": {label: row["quantile"] for label, row in summary.items()},
        "window_mass": float(np.mean(masses)),
        "rules_at_top": float(np.mean(at_top)),
        "ess": None if "ess" not in info else float(np.min(info["ess"])),
        "rhat": None if "rhat" not in info else float(np.max(info["rhat"])),
    }


def comparison_markdown(name: str, figures: dict) -> str:
    measures = list(figures)
    labels = list(next(iter(figures.values()))["gini"])
    first = figures[measures[0]]
    lines = [f"{name}: the rules under each reference measure ({first['seeds']} seed(s), "
             + ", ".join(f"{m}: {f['samples']} samples" for m, f in figures.items()) + "); mean ± s.e. over seeds", "",
             "| rule | " + " | ".join(f"Gini ({m})" for m in measures) + " | "
             + " | ".join(f"quantile ({m})" for m in measures) + " |",
             "| --- |" + " ---: |" * (2 * len(measures))]
    for label in labels:
        cells = [f"{figures[m]['gini'][label][0]:.3f} ± {figures[m]['gini'][label][1]:.3f}" for m in measures]
        cells += [f"{figures[m]['quantile'][label][0]:.3f}" for m in measures]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Rules from fairest to least fair (mean Gini):", ""]
    for m in measures:
        order = sorted(labels, key=lambda label: figures[m]["gini"][label][0])
        lines.append(f"* {m}: " + " < ".join(order))
    for m in measures[1:]:
        rho = stats.spearmanr([figures[measures[0]]["gini"][k][0] for k in labels],
                              [figures[m]["gini"][k][0] for k in labels]).statistic
        lines.append(f"* Spearman correlation of the Gini values, {measures[0]} vs {m}: {rho:.2f}")
    lines += ["", f"Concentration: the median agent's share of sampled returns in the densest window of "
              f"{WINDOW:.0%} of its LP range, and the share of rules whose result has rank >= {TOP_RANK} "
              "for every agent.", "", "| measure | window mass | rules at rank ~ 1 | min ESS | max R-hat |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for m, f in figures.items():
        ess = "" if f["ess"] is None else f"{f['ess']:.0f}"
        rhat = "" if f["rhat"] is None else f"{f['rhat']:.3f}"
        lines.append(f"| {m} | {f['window_mass']:.3f} | {f['rules_at_top']:.2f} | {ess} | {rhat} |")
    return "\n".join(lines) + "\n"
