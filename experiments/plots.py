"""Figures for the fairness comparison: per-rule bar groups and per-agent empirical CDFs, and
figures of a :class:`~policyagg.experiments.tables.FairnessTable` (:func:`plot_returns`,
:func:`plot_fairness`).

Every public function builds a :class:`matplotlib.figure.Figure` directly (no pyplot, no
global backend switch), render it to PNG and SVG bytes, and only then write ``<path>.png``
and ``<path>.svg`` with :func:`policyagg.io.atomic_write_bytes`, so a failed render writes
nothing and readers never see half a file.

Rendering is deterministic: the figure is built and saved under matplotlib's ``default``
style (a user's ``matplotlibrc`` does not leak in) with a fixed ``svg.hashsalt`` (SVG clip
path and glyph ids), no ``Date``/``Creator`` in the SVG metadata and no ``Software`` text
chunk in the PNG, so the same data give byte-identical files. The style is applied with
``matplotlib.style.context``, which changes ``rcParams`` only for the duration of the call
(rcParams are process-wide, so do not render figures from several threads at once).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib
import matplotlib.style
import matplotlib.transforms as transforms
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from policyagg.errors import InvalidProblemError
from policyagg.io import atomic_write_bytes
from policyagg.samples import ReturnSamples

__all__ = ["bar_chart", "bar_layout", "cdf_figure", "plot_fairness", "plot_norm_prices", "plot_returns", "ring_offsets"]

#: rcParams applied on top of matplotlib's default style while building and saving a figure.
RC = {
    "svg.hashsalt": "policyagg",
    "svg.fonttype": "path",  # glyphs as paths: no dependence on the viewer's fonts
    "font.size": 9,
    "axes.titlesize": 10,
    "figure.dpi": 100,
    "savefig.dpi": 150,
}
SVG_METADATA = {"Date": None, "Creator": None}
PNG_METADATA = {"Software": None}
#: Normalised values may stray this far outside [0, 1] (solver round-off) before being rejected.
TOL = 1e-9
#: At most this many points per empirical CDF curve (see :func:`_ecdf_points`).
MAX_CDF_POINTS = 2000
#: One colour and one marker per rule (tab10 with black for its grey, which reads as the curve,
#: plus two more): every pair is distinct for up to 144 rules, colours alone for 12.
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#000000",
    "#bcbd22",
    "#17becf",
    "#000080",
    "#b8860b",
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
MARKER_SIZE = {"*": 9.0, "P": 7.0, "X": 7.0, "h": 7.0, "p": 7.0}


def _marker_style(marker: str, color) -> dict:
    """One rule's marker, the same on the axes and in the legend."""
    return {
        "linestyle": "none",
        "marker": marker,
        "markersize": MARKER_SIZE.get(marker, 6.0),
        "markerfacecolor": color,
        "markeredgecolor": "white",
        "markeredgewidth": 0.6,
    }


def _style():
    return matplotlib.style.context(["default", RC])


# ---------------------------------------------------------------------------- bar chart
#: At most this many rule groups per row of the bar figure, and at most this wide (inches).
RULES_PER_ROW = 10
MAX_WIDTH = 9.0
#: Legend text of the error bars (with ``errors``).
ERROR_LABEL = "s.e. over seeds"


def bar_chart(
    normalized: dict[str, np.ndarray],
    path,
    *,
    title: str = "",
    errors: dict[str, np.ndarray] | None = None,
    error_label: str = ERROR_LABEL,
) -> list[Path]:
    """The paper's figure: every rule's agents' normalised returns, sorted ascending.

    Parameters
    ----------
    normalized : dict label -> array (n,)
        One rule per entry (groups drawn in dict order, labels on the x axis); each array
        holds that rule's agents' normalised returns in [0, 1], SORTED ASCENDING and
        already averaged over seeds. Every array has the same length ``n``.
    path : path without suffix
        ``<path>.png`` and ``<path>.svg`` are written (a trailing ``.png``/``.svg`` is dropped).
    title : str
        Figure title.
    errors : dict label -> array (n,), optional
        Standard errors over seeds, same labels and shapes as ``normalized``; drawn as error
        bars named ``error_label`` in the legend. Pass ``None`` (no error bars) for one seed.

    The rule groups wrap into rows (as many groups as fit in :data:`MAX_WIDTH` inches, at most
    :data:`RULES_PER_ROW`; every row on the same y scale), so the figure keeps a readable
    aspect ratio whatever the number of rules (:func:`bar_layout`). Returns ``[<path>.png, <path>.svg]``.
    """
    with _style():
        return _save(_bar_figure(normalized, title=title, errors=errors, error_label=error_label), path)


def bar_layout(n_rules: int, n_agents: int) -> tuple[int, int, tuple[float, float]]:
    """``(rows, rule groups per row, (width, height) in inches)`` of the bar figure.

    A group of ``n`` bars is ``0.3 + 0.06 n`` inches wide; ``cap`` groups fit in
    :data:`MAX_WIDTH` (1 to :data:`RULES_PER_ROW`); rows are balanced: ``rows = ceil(n_rules /
    cap)``, then ``ceil(n_rules / rows)`` groups per row. The width follows the groups per row
    (3.5 in at least), the height the rows (2.6 in each).
    """
    group = 0.3 + 0.06 * n_agents
    cap = int(np.clip((MAX_WIDTH - 1.3) // group, 1, RULES_PER_ROW))
    rows = math.ceil(n_rules / cap)
    per_row = math.ceil(n_rules / rows)
    width = float(np.clip(1.3 + per_row * group, 3.5, MAX_WIDTH))
    return rows, per_row, (width, 0.8 + 2.6 * rows)


def _bar_figure(normalized, *, title: str = "", errors=None, error_label: str = ERROR_LABEL) -> Figure:
    labels, values, errs = _check_bars(normalized, errors)
    n_rules, n_agents = values.shape
    rows, per_row, size = bar_layout(n_rules, n_agents)
    with _style():
        fig = Figure(figsize=size, layout="constrained")
        axes = fig.subplots(rows, 1, squeeze=False, sharey=True)[:, 0]
        group = 0.8
        bar = group / n_agents
        colors = matplotlib.colormaps["viridis"](np.linspace(0.15, 0.85, n_agents) if n_agents > 1 else [0.5])
        rotate = per_row > 4 or max(len(s) for s in labels) > 12
        for row, ax in enumerate(axes):
            chunk = slice(row * per_row, min((row + 1) * per_row, n_rules))
            centers = np.arange(chunk.stop - chunk.start, dtype=float)
            for k in range(n_agents):  # the k-th worst-off agent of every rule
                x = centers - group / 2 + (k + 0.5) * bar
                ax.bar(
                    x,
                    values[chunk, k],
                    width=bar,
                    color=colors[k],
                    edgecolor="white",
                    linewidth=0.4,
                    yerr=None if errs is None else errs[chunk, k],
                    error_kw={"elinewidth": 0.7, "capsize": 1.5 if n_agents <= 6 else 0.8, "ecolor": "0.2"},
                    label=f"_agent{k}",
                )
            ax.set_xticks(centers, labels[chunk])
            if rotate:
                for tick in ax.get_xticklabels():
                    tick.set_rotation(30)
                    tick.set_horizontalalignment("right")
                    tick.set_rotation_mode("anchor")
            ax.set_xlim(-0.6, per_row - 0.4)
            ax.set_ylim(0.0, 1.05)
            ax.set_ylabel("normalised return")
            ax.yaxis.grid(True, linewidth=0.5, alpha=0.5)
            ax.set_axisbelow(True)
            ax.tick_params(axis="x", length=0)
        caption = "bars: each rule's agents' normalised returns, sorted ascending"
        handles = []
        if errs is not None:
            handles.append(
                Line2D(
                    [],
                    [],
                    color="0.2",
                    marker="|",
                    markersize=9,
                    markeredgewidth=0.9,
                    linestyle="none",
                    label=f"error bars: {error_label}",
                )
            )
        fig.legend(
            handles=handles, loc="outside lower center", frameon=False, fontsize=8, title=caption, title_fontsize=8
        )
        if title:
            fig.suptitle(title)
    return fig


def _check_bars(normalized, errors):
    if not isinstance(normalized, dict) or not normalized:
        raise InvalidProblemError(
            "`normalized` must be a non-empty dict {rule label: array (n,)}; got an empty or non-dict value"
        )
    labels = [str(label) for label in normalized]
    rows = [_vector(normalized[label], f"normalized[{label!r}]") for label in normalized]
    n = rows[0].shape[0]
    for label, row in zip(normalized, rows):
        if row.shape != (n,):
            raise InvalidProblemError(
                f"normalized[{label!r}] has shape {row.shape} but the first rule's has ({n},); "
                "give every rule the same agents"
            )
        if row.min() < -TOL or row.max() > 1 + TOL:
            raise InvalidProblemError(
                f"normalized[{label!r}] has values outside [0, 1] (min {row.min():.6g}, max {row.max():.6g}); "
                "pass normalised returns (Result.normalized), not raw returns"
            )
        if np.any(np.diff(row) < -TOL):
            raise InvalidProblemError(
                f"normalized[{label!r}] is not sorted ascending; sort each seed's normalised returns "
                "(np.sort) before averaging, and sort the standard errors with them"
            )
    values = np.clip(np.vstack(rows), 0.0, 1.0)
    if errors is None:
        return labels, values, None
    if not isinstance(errors, dict) or set(errors) != set(normalized):
        missing = sorted(map(str, set(normalized) - set(errors or {})))
        extra = sorted(map(str, set(errors or {}) - set(normalized)))
        raise InvalidProblemError(
            f"`errors` must have the same rule labels as `normalized` (missing {missing}, extra {extra}); "
            "or pass errors=None"
        )
    errs = []
    for label in normalized:
        err = _vector(errors[label], f"errors[{label!r}]")
        if err.shape != (n,):
            raise InvalidProblemError(f"errors[{label!r}] has shape {err.shape} but normalized[{label!r}] has ({n},)")
        if err.min() < 0:
            raise InvalidProblemError(f"errors[{label!r}] has a negative standard error ({err.min():.6g})")
        errs.append(err)
    return labels, values, np.vstack(errs)


# ---------------------------------------------------------------------------- CDF figure
def cdf_figure(
    samples_values: np.ndarray,
    returns: dict[str, np.ndarray],
    path,
    *,
    names=None,
    title: str = "",
    headline: str | None = None,
) -> list[Path]:
    """One subplot per agent: the empirical CDF of its sampled returns and every rule's rank.

    Parameters
    ----------
    samples_values : array (N, n) or ReturnSamples
        ``samples_values[k, i]`` is agent ``i``'s return under the ``k``-th sampled policy.
    returns : dict label -> array (n,)
        Every rule's returns ``J_i`` (``Result.returns``), same scale as the samples. Rule
        ``r`` gets a marker at ``(J_i, F_i(J_i))`` in agent ``i``'s subplot, one
        colour/marker per rule across subplots, one shared legend.
    path : path without suffix
        ``<path>.png`` and ``<path>.svg`` are written.
    names : sequence of n str, optional
        Subplot titles (default ``agent 0``, ``agent 1``, ...).
    title : str
        Figure title.
    headline : str, optional
        The rule drawn on top (default: the first of ``returns``).

    ``F_i(v)`` is the empirical CDF ``#{k : V[k, i] <= v} / N`` as
    :meth:`policyagg.samples.ReturnSamples.cdf` computes it (returns within
    ``TIE_TOL`` x the sampled range of a sample count as equal to it), so the markers sit
    at ``Result.ranks``. Rules often coincide (max-quantile, Borda and PVC pick the same
    policy): the headline stays at its point, on top, and a marker that would overlap one
    already drawn moves to the nearest free place on rings around its point
    (:func:`ring_offsets`; shifted in points on the page, its data unchanged), so every
    rule's marker stays visible. The curve is drawn from at most ``MAX_CDF_POINTS`` points.
    Returns ``[<path>.png, <path>.svg]``.
    """
    with _style():
        return _save(_cdf_figure(samples_values, returns, names=names, title=title, headline=headline), path)


#: Marker width (points): markers whose centres are closer than this overlap.
MARKER_WIDTH = 6.0
#: Radius step (points) of the rings of places tried around a marker's point.
RING_RADIUS = 7.0


def ring_offsets(
    points: np.ndarray, priority: list[int], *, width: float = MARKER_WIDTH, inward: np.ndarray | None = None
) -> np.ndarray:
    """Offsets (points) that keep every marker visible: ``points`` (m, 2) are marker centres on
    the page, in points; ``priority`` lists the markers, most important first.

    Markers are placed greedily in ``priority`` order, each at the first free place among its
    own point, then rings of radius ``RING_RADIUS``, ``2 RING_RADIUS``, ... around it (places
    ``width`` apart on each ring, the first in the direction of ``inward``, e.g. the axes'
    centre; default up). A place is free when every marker placed before is at least ``width``
    away, so the first marker never moves and no two markers end closer than ``width``.
    """
    points = np.asarray(points, dtype=float)
    offsets = np.zeros_like(points)
    placed: list[np.ndarray] = []
    for r in priority:
        start = math.pi / 2
        if inward is not None and np.hypot(*(inward - points[r])) > 0:
            start = math.atan2(*(inward - points[r])[::-1])
        ring = 0
        while True:
            if ring == 0:
                candidates = points[r][None, :]
            else:
                radius = ring * RING_RADIUS
                slots = max(6, int(2 * math.pi * radius // width))
                angles = start + 2 * math.pi * np.arange(slots) / slots
                candidates = points[r] + radius * np.column_stack([np.cos(angles), np.sin(angles)])
            if placed:
                gaps = np.hypot(*(candidates[:, None, :] - np.array(placed)[None, :, :]).transpose(2, 0, 1)).min(axis=1)
                free = np.flatnonzero(gaps >= width)
            else:
                free = np.array([0])
            if free.size:
                offsets[r] = candidates[free[0]] - points[r]
                placed.append(candidates[free[0]])
                break
            ring += 1
    return offsets


def _cdf_figure(samples_values, returns, *, names=None, title: str = "", headline: str | None = None) -> Figure:
    samples, labels, J, names = _check_cdf(samples_values, returns, names)
    if headline is None:
        headline = labels[0]
    elif headline not in labels:
        raise InvalidProblemError(
            f"`headline` = {headline!r} is not one of the rules in `returns` ({', '.join(labels)})"
        )
    top = labels.index(headline)
    priority = [top] + [r for r in range(len(labels)) if r != top]
    ranks = samples.cdf(J)  # (rules, n)
    n = samples.n_agents
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    styles = [(COLORS[r % len(COLORS)], MARKERS[(r + r // len(COLORS)) % len(MARKERS)]) for r in range(len(labels))]
    width, height = 2.9 * ncols + 0.4, 2.3 * nrows + 0.5 + 0.22 * math.ceil(len(labels) / 4)
    # the axes' size on the page (points), near enough to find overlapping markers
    axes_points = np.array([72 * (width / ncols - 0.55), 72 * ((height - 0.7) / nrows - 0.55)])
    with _style():
        fig = Figure(figsize=(width, height), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        for i in range(nrows * ncols):
            ax = axes.flat[i]
            if i >= n:
                ax.set_visible(False)
                continue
            xs, ys = _ecdf_points(samples.sorted_values[i])
            lo = min(xs[0], J[:, i].min())
            hi = max(xs[-1], J[:, i].max())
            pad = 0.03 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.05
            lo, hi = lo - pad, hi + pad
            ax.step(np.r_[lo, xs, hi], np.r_[0.0, ys, 1.0], where="post", color="0.35", linewidth=1.0, label="_ecdf")
            fractions = np.column_stack([(J[:, i] - lo) / (hi - lo), (ranks[:, i] + 0.03) / 1.06])
            offsets = ring_offsets(fractions * axes_points, priority, inward=0.5 * axes_points)
            for r, label in enumerate(labels):
                color, marker = styles[r]
                shift = transforms.ScaledTranslation(offsets[r, 0] / 72, offsets[r, 1] / 72, fig.dpi_scale_trans)
                ax.plot(
                    [J[r, i]],
                    [ranks[r, i]],
                    **_marker_style(marker, color),
                    alpha=0.9,
                    label=label,
                    transform=ax.transData + shift,
                    clip_on=False,
                    zorder=3.0 + (len(labels) - priority.index(r)) / len(labels),
                )
            ax.set_xlim(lo, hi)
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(names[i])
            ax.grid(True, linewidth=0.4, alpha=0.5)
            ax.tick_params(labelsize=7)
            if i % ncols == 0:
                ax.set_ylabel("F(J) (rank)")
            if i + ncols >= n:
                ax.set_xlabel("return J")
        handles = [Line2D([], [], **_marker_style(m, c), label=label) for label, (c, m) in zip(labels, styles)]
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=min(len(labels), 4),
            frameon=False,
            fontsize=8,
            title="markers: each rule's (J, F(J)); overlapping markers are moved apart on rings around their point",
            title_fontsize=8,
        )
        if title:
            fig.suptitle(title)
    return fig


def _ecdf_points(sorted_row: np.ndarray, max_points: int = MAX_CDF_POINTS):
    """Jump points ``(x_(k), k/N)`` of the empirical CDF of an ascending row, at most ``max_points``.

    With ``N <= max_points`` every jump is kept (the exact step function). Otherwise the
    ranks ``k_j = ceil(j N / M)``, ``j = 1..M``, are kept: the quantile function on a fixed
    grid of levels ``j / M``. Drawn as a post-step, the curve is the exact CDF at the kept
    points and below it by less than ``1/M + 1/N`` in between; ``k = N`` (level 1) is always kept.
    """
    N = sorted_row.shape[0]
    if max_points >= N:
        k = np.arange(1, N + 1)
    else:
        k = np.unique(np.ceil(np.arange(1, max_points + 1) * N / max_points - 1e-9).astype(np.int64))
        k = np.clip(k, 1, N)
    return sorted_row[k - 1], k / N


def _check_cdf(samples_values, returns, names):
    values = samples_values.values if isinstance(samples_values, ReturnSamples) else samples_values
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise InvalidProblemError(
            f"`samples_values` must be a non-empty (N, n) array of sampled returns; got shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise InvalidProblemError("`samples_values` has non-finite returns; drop or resample them")
    n = values.shape[1]
    if not isinstance(returns, dict) or not returns:
        raise InvalidProblemError(
            "`returns` must be a non-empty dict {rule label: array (n,)}; got an empty or non-dict value"
        )
    rows = []
    for label in returns:
        row = _vector(returns[label], f"returns[{label!r}]")
        if row.shape != (n,):
            raise InvalidProblemError(
                f"returns[{label!r}] has shape {row.shape} but the samples have n = {n} agents; "
                "pass Result.returns of a problem with the samples' agents"
            )
        rows.append(row)
    if names is None:
        names = [f"agent {i}" for i in range(n)]
    else:
        names = [str(name) for name in names]
        if len(names) != n:
            raise InvalidProblemError(f"`names` has {len(names)} entries but the samples have n = {n} agents")
    return ReturnSamples(values), [str(label) for label in returns], np.vstack(rows), names


# ---------------------------------------------------------------------------- tables
#: Columns :func:`plot_fairness` draws by default.
FAIRNESS_COLUMNS = ("gini", "min_normalized", "quantile")


def plot_returns(table, path, *, title: str | None = None) -> list[Path]:
    """The paper's bar figure of a :class:`~policyagg.experiments.tables.FairnessTable`: per rule,
    its agents' normalised returns sorted ascending (mean over seeds), with error bars of the
    standard error over seeds when the table has two seeds or more (none for one seed)."""
    normalized = {row.label: row.bars_mean for row in table.rows}
    errors = {row.label: row.bars_se for row in table.rows} if table.has_errors else None
    return bar_chart(
        normalized,
        path,
        title=f"{table.name} ({table.n_seeds} seed(s))" if title is None else title,
        errors=errors,
        error_label=f"s.e. over {table.n_seeds} seeds",
    )


def plot_fairness(table, path, *, columns=FAIRNESS_COLUMNS, title: str | None = None) -> list[Path]:
    """One panel per column of a :class:`~policyagg.experiments.tables.FairnessTable` (default Gini,
    min normalised return, quantile reached): a horizontal bar per rule at its mean over seeds,
    error bars of the standard error over seeds when there are two seeds or more.

    The height grows with the number of rules. Writes ``<path>.png`` and ``<path>.svg``
    atomically; returns their paths.
    """
    with _style():
        return _save(_fairness_figure(table, columns=columns, title=title), path)


def _fairness_figure(table, *, columns=FAIRNESS_COLUMNS, title: str | None = None) -> Figure:
    from policyagg.experiments.tables import COLUMNS

    titles = dict(COLUMNS)
    columns = list(columns)
    unknown = [c for c in columns if c not in titles]
    if not columns or unknown:
        raise InvalidProblemError(f"`columns` must name columns among {', '.join(titles)}; got {columns!r}")
    if not table.rows:
        raise InvalidProblemError("the table has no rows; run at least one rule")
    labels = table.labels
    y = np.arange(len(labels), dtype=float)
    with _style():
        fig = Figure(figsize=(1.6 + 2.4 * len(columns), 1.3 + 0.24 * len(labels)), layout="constrained")
        axes = fig.subplots(1, len(columns), squeeze=False, sharey=True)[0]
        for ax, column in zip(axes, columns):
            mean = np.array([row.figures[column][0] for row in table.rows])
            se = np.array([row.figures[column][1] for row in table.rows]) if table.has_errors else None
            ax.barh(
                y,
                np.nan_to_num(mean),
                height=0.7,
                color=COLORS[0],
                xerr=se,
                error_kw={"elinewidth": 0.8, "capsize": 2.0, "ecolor": "0.2"},
            )
            ax.set_title(titles[column])
            ax.xaxis.grid(True, linewidth=0.5, alpha=0.5)
            ax.set_axisbelow(True)
        axes[0].set_yticks(y, labels)
        axes[0].invert_yaxis()  # first rule on top, as in the Markdown table
        caption = (
            f"mean over {table.n_seeds} seeds; error bars: s.e. over seeds"
            if table.has_errors
            else "one seed: no error bars"
        )
        fig.supxlabel(caption, fontsize=8)
        fig.suptitle(f"{table.name}: fairness per rule" if title is None else title)
    return fig


# ---------------------------------------------------------------------------- shared
def _vector(value, what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidProblemError(f"{what} must be an array of numbers ({exc})") from None
    if array.ndim != 1 or array.size == 0:
        raise InvalidProblemError(
            f"{what} must be a non-empty 1-D array (one value per agent); got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        raise InvalidProblemError(f"{what} has non-finite values")
    return array


def _stem(path) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in (".png", ".svg") else path


def _render(fig: Figure) -> tuple[bytes, bytes]:
    with _style():
        png, svg = io.BytesIO(), io.BytesIO()
        fig.savefig(png, format="png", metadata=PNG_METADATA)
        fig.savefig(svg, format="svg", metadata=SVG_METADATA)
    return png.getvalue(), svg.getvalue()


def _save(fig: Figure, path) -> list[Path]:
    """Render ``fig`` to PNG and SVG bytes, then write ``<path>.png`` and ``<path>.svg`` atomically."""
    png, svg = _render(fig)  # both rendered before anything is written
    stem = _stem(path)
    return [
        atomic_write_bytes(stem.parent / f"{stem.name}.png", png),
        atomic_write_bytes(stem.parent / f"{stem.name}.svg", svg),
    ]


# ---------------------------------------------------------------------------- price of norms
#: The panels of :func:`plot_norm_prices`: (title, price-row key without the norm, with it).
NORM_PANELS = (
    ("min normalised return", "min normalised without", "min normalised with"),
    ("Gini index of normalised returns", "gini without", "gini with"),
)


def plot_norm_prices(rows, path, *, title: str = "price of norms") -> list[Path]:
    """Per rule, the smallest normalised return and the Gini index without norms and under each
    norm (rows of :func:`policyagg.experiments.norms.price_rows`: means over seeds; a norm that
    is infeasible on every seed has no bar). Writes ``<path>.png`` and ``<path>.svg`` atomically."""
    rows = list(rows)
    if not rows:
        raise InvalidProblemError("no price rows to plot; the configuration needs rules and [[norms]]")
    rules = list(dict.fromkeys(row["rule"] for row in rows))
    norms = list(dict.fromkeys(row["norm"] for row in rows))
    series = ["no norm", *norms]
    by_key = {(row["rule"], row["norm"]): row for row in rows}
    height = 0.8 / len(series)
    with _style():
        fig = Figure(figsize=(9.0, 1.4 + 0.32 * len(rules) * len(series) / 2), layout="constrained")
        axes = fig.subplots(1, len(NORM_PANELS), squeeze=False, sharey=True)[0]
        y = np.arange(len(rules), dtype=float)
        for ax, (panel, without, with_) in zip(axes, NORM_PANELS):
            for k, label in enumerate(series):
                values = [
                    by_key[rule, norms[0]][without] if k == 0 else by_key.get((rule, label), {}).get(with_, np.nan)
                    for rule in rules
                ]
                ax.barh(
                    y + (k - (len(series) - 1) / 2) * height,
                    np.nan_to_num(values, nan=0.0),
                    height=height,
                    color=COLORS[k % len(COLORS)],
                    label=label,
                )
            ax.set_title(panel)
            ax.xaxis.grid(True, linewidth=0.5, alpha=0.5)
            ax.set_axisbelow(True)
        axes[0].set_yticks(y, rules)
        axes[0].invert_yaxis()
        axes[-1].legend(loc="lower right", fontsize=7, frameon=False)
        fig.suptitle(title)
    return _save(fig, path)
