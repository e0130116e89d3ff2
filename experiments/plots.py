"""Figures for the fairness comparison: per-rule bar groups and per-agent empirical CDFs.

Both public functions build a :class:`matplotlib.figure.Figure` directly (no pyplot, no
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
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from policyagg.errors import InvalidProblemError
from policyagg.io import atomic_write_bytes
from policyagg.samples import ReturnSamples

__all__ = ["bar_chart", "cdf_figure"]

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
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#000000",
          "#bcbd22", "#17becf", "#000080", "#b8860b")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
MARKER_SIZE = {"*": 9.0, "P": 7.0, "X": 7.0, "h": 7.0, "p": 7.0}


def _style():
    return matplotlib.style.context(["default", RC])


# ---------------------------------------------------------------------------- bar chart
def bar_chart(normalized: dict[str, np.ndarray], path, *, title: str = "",
              errors: dict[str, np.ndarray] | None = None) -> list[Path]:
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
        Axes title.
    errors : dict label -> array (n,), optional
        Standard errors over seeds, same labels and shapes as ``normalized``; drawn as error bars.

    Returns ``[<path>.png, <path>.svg]``.
    """
    with _style():
        return _save(_bar_figure(normalized, title=title, errors=errors), path)


def _bar_figure(normalized, *, title: str = "", errors=None) -> Figure:
    labels, values, errs = _check_bars(normalized, errors)
    n_rules, n_agents = values.shape
    with _style():
        width = float(np.clip(2.0 + n_rules * (0.25 + 0.09 * n_agents), 5.0, 16.0))
        fig = Figure(figsize=(width, 4.0), layout="constrained")
        ax = fig.add_subplot()
        group = 0.8
        bar = group / n_agents
        colors = matplotlib.colormaps["viridis"](np.linspace(0.15, 0.85, n_agents) if n_agents > 1 else [0.5])
        centers = np.arange(n_rules, dtype=float)
        for k in range(n_agents):  # the k-th worst-off agent of every rule
            x = centers - group / 2 + (k + 0.5) * bar
            ax.bar(
                x, values[:, k], width=bar, color=colors[k], edgecolor="white", linewidth=0.4,
                yerr=None if errs is None else errs[:, k],
                error_kw={"elinewidth": 0.7, "capsize": 1.5 if n_agents <= 6 else 0.8, "ecolor": "0.2"},
                label=f"_agent{k}",
            )
        ax.set_xticks(centers, labels)
        if n_rules > 4 or max(len(s) for s in labels) > 12:
            for tick in ax.get_xticklabels():
                tick.set_rotation(30)
                tick.set_horizontalalignment("right")
                tick.set_rotation_mode("anchor")
        ax.set_xlim(-0.6, n_rules - 0.4)
        ax.set_ylim(0.0, 1.05)
        ax.set_ylabel("normalised return\n(bars: agents sorted ascending)")
        ax.yaxis.grid(True, linewidth=0.5, alpha=0.5)
        ax.set_axisbelow(True)
        ax.tick_params(axis="x", length=0)
        if title:
            ax.set_title(title)
    return fig


def _check_bars(normalized, errors):
    if not isinstance(normalized, dict) or not normalized:
        raise InvalidProblemError("`normalized` must be a non-empty dict {rule label: array (n,)}; got an empty or non-dict value")
    labels = [str(label) for label in normalized]
    rows = [_vector(normalized[label], f"normalized[{label!r}]") for label in normalized]
    n = rows[0].shape[0]
    for label, row in zip(normalized, rows):
        if row.shape != (n,):
            raise InvalidProblemError(
                f"normalized[{label!r}] has shape {row.shape} but the first rule's has ({n},); "
                "give every rule the same agents")
        if row.min() < -TOL or row.max() > 1 + TOL:
            raise InvalidProblemError(
                f"normalized[{label!r}] has values outside [0, 1] (min {row.min():.6g}, max {row.max():.6g}); "
                "pass normalised returns (Result.normalized), not raw returns")
        if np.any(np.diff(row) < -TOL):
            raise InvalidProblemError(
                f"normalized[{label!r}] is not sorted ascending; sort each seed's normalised returns "
                "(np.sort) before averaging, and sort the standard errors with them")
    values = np.clip(np.vstack(rows), 0.0, 1.0)
    if errors is None:
        return labels, values, None
    if not isinstance(errors, dict) or set(errors) != set(normalized):
        missing = sorted(map(str, set(normalized) - set(errors or {})))
        extra = sorted(map(str, set(errors or {}) - set(normalized)))
        raise InvalidProblemError(
            f"`errors` must have the same rule labels as `normalized` (missing {missing}, extra {extra}); "
            "or pass errors=None")
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
def cdf_figure(samples_values: np.ndarray, returns: dict[str, np.ndarray], path, *, names=None,
               title: str = "") -> list[Path]:
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

    ``F_i(v)`` is the empirical CDF ``#{k : V[k, i] <= v} / N`` as
    :meth:`policyagg.samples.ReturnSamples.cdf` computes it (returns within
    ``TIE_TOL`` x the sampled range of a sample count as equal to it), so the markers sit
    at ``Result.ranks``. The curve is drawn from at most ``MAX_CDF_POINTS`` points.
    Returns ``[<path>.png, <path>.svg]``.
    """
    with _style():
        return _save(_cdf_figure(samples_values, returns, names=names, title=title), path)


def _cdf_figure(samples_values, returns, *, names=None, title: str = "") -> Figure:
    samples, labels, J, names = _check_cdf(samples_values, returns, names)
    ranks = samples.cdf(J)  # (rules, n)
    n = samples.n_agents
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    styles = [(COLORS[r % len(COLORS)], MARKERS[(r + r // len(COLORS)) % len(MARKERS)]) for r in range(len(labels))]
    with _style():
        fig = Figure(figsize=(2.9 * ncols + 0.4, 2.3 * nrows + 0.5 + 0.22 * math.ceil(len(labels) / 4)),
                     layout="constrained")
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
            ax.step(np.r_[lo, xs, hi], np.r_[0.0, ys, 1.0], where="post", color="0.35", linewidth=1.0,
                    label="_ecdf")
            for r, label in enumerate(labels):
                color, marker = styles[r]
                ax.plot([J[r, i]], [ranks[r, i]], linestyle="none", marker=marker, markersize=MARKER_SIZE.get(marker, 6.0),
                        markerfacecolor=color, markeredgecolor="white", markeredgewidth=0.6,
                        alpha=0.9, label=label)
            ax.set_xlim(lo, hi)
            ax.set_ylim(-0.03, 1.03)
            ax.set_title(names[i])
            ax.grid(True, linewidth=0.4, alpha=0.5)
            ax.tick_params(labelsize=7)
            if i % ncols == 0:
                ax.set_ylabel("F(J) (rank)")
            if i + ncols >= n:
                ax.set_xlabel("return J")
        handles = [Line2D([], [], linestyle="none", marker=m, markersize=MARKER_SIZE.get(m, 6.0), markerfacecolor=c,
                          markeredgecolor="white", markeredgewidth=0.6, label=label)
                   for label, (c, m) in zip(labels, styles)]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(labels), 4),
                   frameon=False, fontsize=8)
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
    if N <= max_points:
        k = np.arange(1, N + 1)
    else:
        k = np.unique(np.ceil(np.arange(1, max_points + 1) * N / max_points - 1e-9).astype(np.int64))
        k = np.clip(k, 1, N)
    return sorted_row[k - 1], k / N


def _check_cdf(samples_values, returns, names):
    values = samples_values.values if isinstance(samples_values, ReturnSamples) else samples_values
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise InvalidProblemError(f"`samples_values` must be a non-empty (N, n) array of sampled returns; got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise InvalidProblemError("`samples_values` has non-finite returns; drop or resample them")
    n = values.shape[1]
    if not isinstance(returns, dict) or not returns:
        raise InvalidProblemError("`returns` must be a non-empty dict {rule label: array (n,)}; got an empty or non-dict value")
    rows = []
    for label in returns:
        row = _vector(returns[label], f"returns[{label!r}]")
        if row.shape != (n,):
            raise InvalidProblemError(
                f"returns[{label!r}] has shape {row.shape} but the samples have n = {n} agents; "
                "pass Result.returns of a problem with the samples' agents")
        rows.append(row)
    if names is None:
        names = [f"agent {i}" for i in range(n)]
    else:
        names = [str(name) for name in names]
        if len(names) != n:
            raise InvalidProblemError(f"`names` has {len(names)} entries but the samples have n = {n} agents")
    return ReturnSamples(values), [str(label) for label in returns], np.vstack(rows), names


# ---------------------------------------------------------------------------- shared
def _vector(value, what: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidProblemError(f"{what} must be an array of numbers ({exc})") from None
    if array.ndim != 1 or array.size == 0:
        raise InvalidProblemError(f"{what} must be a non-empty 1-D array (one value per agent); got shape {array.shape}")
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
    return [atomic_write_bytes(stem.parent / f"{stem.name}.png", png),
            atomic_write_bytes(stem.parent / f"{stem.name}.svg", svg)]
