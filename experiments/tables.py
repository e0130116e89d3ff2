"""Fairness tables: per rule, the mean and standard error over seeds of its fairness figures.

A :class:`FairnessTable` is plain data (no pandas): one :class:`FairnessRow` per rule with
``(mean, s.e.)`` per column of :data:`COLUMNS` and the agents' normalised returns sorted
ascending (the bar figure's data). Export it with :func:`to_markdown`, :func:`to_csv` /
:func:`write_csv` and :func:`write_bars_csv`; draw it with
:func:`policyagg.experiments.plots.plot_fairness` (the columns per rule) and
:func:`policyagg.experiments.plots.plot_returns` (the paper's bar figure)::

    from policyagg.experiments.run import run_config
    from policyagg.experiments.tables import table_of_run, to_markdown, write_csv
    from policyagg.experiments.plots import plot_fairness

    run = run_config("experiments/configs/attention-a.toml")
    table = table_of_run(run)
    print(to_markdown(table))
    write_csv(table, "fairness.csv")
    plot_fairness(table, "fairness")          # fairness.png and fairness.svg

The standard error over ``k`` seeds is ``std(x, ddof=1) / sqrt(k)``; with one seed there is
none: Markdown shows no ``±`` and figures draw no error bars (the CSV keeps a 0 there).
Rules on raw returns (``normalize=False``) are labelled ``"<label> (raw)"``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policyagg.io import atomic_write_bytes

__all__ = [
    "COLUMNS",
    "LOTTERY_COLUMNS",
    "FairnessRow",
    "FairnessTable",
    "display_label",
    "table_from_summary",
    "table_of_run",
    "to_markdown",
    "to_csv",
    "write_csv",
    "bars_csv",
    "write_bars_csv",
]

#: (key, title) of the table's columns, in order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("gini", "Gini"),
    ("min_normalized", "min normalised"),
    ("mean_normalized", "mean normalised"),
    ("quantile", "quantile reached"),
    ("pvc_epsilon", "PVC eps"),
)

#: Columns added when a row is a lottery: the drawn policy's expected Gini index and expected
#: minimum normalised return (a single policy's equal its own ``gini`` and ``min_normalized``).
LOTTERY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ex_post_gini", "ex-post Gini"),
    ("ex_post_min_normalized", "ex-post min normalised"),
)

RAW_SUFFIX = " (raw)"


def display_label(label: str, options: Mapping[str, Any]) -> str:
    """``label`` as figures and tables show it: ``"<label> (raw)"`` for a rule run on raw returns.

    A rule is on raw returns when its result's options record ``normalize=False``
    (utilitarian and egalitarian by default); a label already saying ``raw`` is kept.
    """
    if options.get("normalize") is False and "raw" not in label.lower():
        return label + RAW_SUFFIX
    return label


@dataclass(frozen=True)
class FairnessRow:
    """One rule's line of a :class:`FairnessTable`.

    ``label`` is the shown label (raw rules end with ``" (raw)"``), ``key`` the configuration's
    label (the result files' name); ``figures[column] = (mean, s.e.)`` over seeds;
    ``bars_mean`` / ``bars_se`` (n,) are the agents' normalised returns sorted ascending per
    seed, then averaged (and their s.e.), position by position.
    """

    label: str
    key: str
    rule: str
    figures: dict[str, tuple[float, float]]
    bars_mean: np.ndarray
    bars_se: np.ndarray
    lottery: bool = False


@dataclass(frozen=True)
class FairnessTable:
    """Per rule, ``(mean, s.e.)`` over ``n_seeds`` seeds of every column of :data:`COLUMNS`."""

    name: str
    n_seeds: int
    n_samples: int
    rows: tuple[FairnessRow, ...]

    @property
    def labels(self) -> list[str]:
        return [row.label for row in self.rows]

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        """:data:`COLUMNS`, then :data:`LOTTERY_COLUMNS` if some row is a lottery (tables of
        single policies keep their columns)."""
        return COLUMNS + LOTTERY_COLUMNS if any(row.lottery for row in self.rows) else COLUMNS

    @property
    def has_errors(self) -> bool:
        """Whether there is a standard error to show (two seeds or more)."""
        return self.n_seeds > 1


def table_from_summary(
    name: str, summary: Mapping[str, Mapping[str, Any]], *, n_seeds: int, n_samples: int
) -> FairnessTable:
    """The table of a :func:`policyagg.experiments.run.summarize` dict (rows in its order)."""
    rows = []
    for key, row in summary.items():
        present = [column for column, _ in COLUMNS + LOTTERY_COLUMNS if column in row]
        figures = {column: (float(row[column][0]), float(row[column][1])) for column in present}
        rows.append(
            FairnessRow(
                label=display_label(key, row.get("options", {})),
                key=key,
                rule=str(row["rule"]),
                figures=figures,
                bars_mean=np.asarray(row["bars_mean"], dtype=float),
                bars_se=np.asarray(row["bars_se"], dtype=float),
                lottery=bool(row.get("lottery", False)),
            )
        )
    return FairnessTable(name=name, n_seeds=int(n_seeds), n_samples=int(n_samples), rows=tuple(rows))


def table_of_run(run: Any) -> FairnessTable:
    """The table of an :class:`~policyagg.experiments.run.ExperimentRun` (from ``run_config``)."""
    from policyagg.experiments.run import summarize

    return table_from_summary(
        run.config.name, summarize(run.seeds), n_seeds=len(run.seeds), n_samples=run.config.samples
    )


def _cell(mean: float, se: float, with_error: bool) -> str:
    return f"{mean:.4f} ± {se:.4f}" if with_error else f"{mean:.4f}"


def to_markdown(table: FairnessTable) -> str:
    """A Markdown table: one row per rule, ``mean ± s.e.`` (only the mean with one seed)."""
    spread = "mean ± s.e. over seeds" if table.has_errors else "one seed: no standard error"
    lines = [
        f"{table.name}: {table.n_seeds} seed(s), {table.n_samples} sampled policies per seed; {spread}",
        "",
        "| rule | " + " | ".join(title for _, title in table.columns) + " |",
        "| --- |" + " ---: |" * len(table.columns),
    ]
    for row in table.rows:
        cells = [_cell(*row.figures[key], table.has_errors) for key, _ in table.columns]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_text(rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def to_csv(table: FairnessTable) -> str:
    """CSV text: ``rule`` then ``<column>_mean, <column>_se`` per column (10 significant digits)."""
    columns = table.columns
    header = ["rule"] + [f"{key}_{part}" for key, _ in columns for part in ("mean", "se")]
    rows = [[row.label] + [f"{row.figures[key][i]:.10g}" for key, _ in columns for i in (0, 1)] for row in table.rows]
    return _csv_text([header] + rows)


def write_csv(table: FairnessTable, path: str | Path) -> Path:
    """Write :func:`to_csv` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, to_csv(table).encode())


def bars_csv(table: FairnessTable) -> str:
    """CSV text of the bar figure's data: ``rule, position, mean, se`` (position 0 = worst-off agent)."""
    rows = [
        [row.label, j, f"{row.bars_mean[j]:.10g}", f"{row.bars_se[j]:.10g}"]
        for row in table.rows
        for j in range(row.bars_mean.size)
    ]
    return _csv_text([["rule", "position", "mean", "se"]] + rows)


def write_bars_csv(table: FairnessTable, path: str | Path) -> Path:
    """Write :func:`bars_csv` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, bars_csv(table).encode())
