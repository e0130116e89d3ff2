"""experiments.plots: files written atomically, byte-identical renders, bars and CDF markers checked on the Figure."""

import os

import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import BarContainer

from policyagg.errors import InvalidProblemError
from policyagg.experiments import plots
from policyagg.samples import ReturnSamples

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LABELS = ("max-quantile", "Borda", "90%-approval", "egalitarian", "utilitarian")


def bars_data(n_rules=len(LABELS), n_agents=4, seed=0):  # noqa: B008
    rng = np.random.default_rng(seed)
    labels = (LABELS + tuple(f"rule{r}" for r in range(len(LABELS), n_rules)))[:n_rules]
    normalized = {label: np.sort(rng.uniform(0.0, 1.0, n_agents)) for label in labels}
    errors = {label: rng.uniform(0.0, 0.05, n_agents) for label in labels}
    return normalized, errors


def cdf_data(n_samples=400, n_agents=3, seed=1):
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_samples, n_agents)) * np.arange(1, n_agents + 1)
    returns = {label: rng.normal(size=n_agents) for label in LABELS[:3]}
    return values, returns


def check_written(paths, folder, stem):
    assert paths == [folder / f"{stem}.png", folder / f"{stem}.svg"]
    png, svg = (p.read_bytes() for p in paths)
    assert png.startswith(PNG_SIGNATURE) and len(png) > 1000
    assert svg.startswith(b"<?xml") and b"<svg" in svg and svg.rstrip().endswith(b"</svg>")
    assert sorted(os.listdir(folder)) == [f"{stem}.png", f"{stem}.svg"]  # no temporary files left
    return png, svg


def test_bar_chart_writes_png_and_svg(tmp_path):
    normalized, errors = bars_data()
    paths = plots.bar_chart(normalized, tmp_path / "bars", title="test bars", errors=errors)
    _, svg = check_written(paths, tmp_path, "bars")
    text = svg.decode()
    for label in LABELS:  # text is drawn as paths; matplotlib keeps each string as a comment
        assert f"<!-- {label} -->" in text
    assert "<!-- test bars -->" in text


def test_bar_chart_strips_an_image_suffix(tmp_path):
    normalized, _ = bars_data(n_rules=2, n_agents=2)
    paths = plots.bar_chart(normalized, tmp_path / "sub" / "fig.png")
    check_written(paths, tmp_path / "sub", "fig")


def test_cdf_figure_writes_png_and_svg(tmp_path):
    values, returns = cdf_data()
    paths = plots.cdf_figure(values, returns, tmp_path / "cdf", names=("a", "b", "c"), title="ranks")
    _, svg = check_written(paths, tmp_path, "cdf")
    for label in list(returns) + ["a", "b", "c", "ranks"]:
        assert f"<!-- {label} -->" in svg.decode()


def test_renders_are_byte_identical(tmp_path):
    normalized, errors = bars_data()
    values, returns = cdf_data()
    outputs = []
    for run, rc in enumerate(({}, {"svg.hashsalt": None, "font.size": 14.0, "lines.linewidth": 3.0})):
        folder = tmp_path / f"run{run}"
        with matplotlib.rc_context(rc):  # the second run has a random salt and another style outside
            before = dict(matplotlib.rcParams)
            files = plots.bar_chart(normalized, folder / "bars", errors=errors, title="t")
            files += plots.cdf_figure(values, returns, folder / "cdf", title="t")
            assert dict(matplotlib.rcParams) == before  # nothing leaks out either
        outputs.append([path.read_bytes() for path in files])
    assert outputs[0] == outputs[1]
    svg = outputs[0][1].decode()
    assert "<dc:date>" not in svg and "Matplotlib v" not in svg
    assert b"tEXt" not in outputs[0][0] and b"iTXt" not in outputs[0][0]  # no Software chunk in the PNG


def test_bar_figure_draws_one_rectangle_per_rule_and_agent():
    normalized, errors = bars_data(n_rules=12, n_agents=10)
    fig = plots._bar_figure(normalized, errors=errors)
    axes = fig.axes
    assert len(axes) == 2  # 12 groups of 10 bars wrap into two rows of six
    assert sum(len(ax.patches) for ax in axes) == 12 * 10
    assert [t.get_text() for ax in axes for t in ax.get_xticklabels()] == list(normalized)
    assert all(ax.get_ylim() == (0.0, 1.05) for ax in axes)
    # left to right, row by row: rule groups in dict order, agents ascending inside each group
    rects = [p for ax in axes for p in sorted(ax.patches, key=lambda p: p.get_x())]
    np.testing.assert_allclose([p.get_height() for p in rects], np.concatenate(list(normalized.values())))
    for ax in axes:
        groups = np.array([p.get_x() + p.get_width() / 2 for p in sorted(ax.patches, key=lambda p: p.get_x())])
        groups = groups.reshape(-1, 10)
        assert np.all(groups.max(axis=1)[:-1] < groups.min(axis=1)[1:])  # groups do not overlap
    bars = [[c for c in ax.containers if isinstance(c, BarContainer)] for ax in axes]
    assert all(len(b) == 10 and all(c.errorbar is not None for c in b) for b in bars)  # one bar() per agent rank
    segments = np.concatenate([np.stack([c.errorbar.lines[2][0].get_segments() for c in b]) for b in bars], axis=1)
    half_lengths = (segments[:, :, 1, 1] - segments[:, :, 0, 1]) / 2  # (agent, rule)
    np.testing.assert_allclose(half_lengths.T, np.vstack(list(errors.values())), atol=1e-12)
    fig_no_err = plots._bar_figure(normalized)
    assert all(c.errorbar is None for ax in fig_no_err.axes for c in ax.containers if isinstance(c, BarContainer))


def legend_texts(fig):
    return [t.get_text() for legend in fig.legends for t in [legend.get_title(), *legend.get_texts()]]


def test_error_bars_are_labelled_and_absent_without_errors():
    normalized, errors = bars_data()
    assert "error bars: s.e. over seeds" in legend_texts(plots._bar_figure(normalized, errors=errors))
    fig = plots._bar_figure(normalized, errors=errors, error_label="s.e. over 5 seeds")
    assert "error bars: s.e. over 5 seeds" in legend_texts(fig)
    assert not any("error bars" in text for text in legend_texts(plots._bar_figure(normalized)))


@pytest.mark.parametrize("n_rules, n_agents", [(12, 10), (12, 5), (6, 10), (2, 3), (1, 1), (30, 4), (12, 40)])
def test_bar_figure_size_suits_the_number_of_rules(n_rules, n_agents):
    rows, per_row, (width, height) = plots.bar_layout(n_rules, n_agents)
    assert rows * per_row >= n_rules and per_row <= plots.RULES_PER_ROW
    assert 3.5 <= width <= 9.0
    assert (0.4 if n_rules * n_agents < 400 else 0.3) <= width / height <= 2.6  # never the old 4:1 strip
    normalized, _ = bars_data(n_rules=n_rules, n_agents=n_agents)
    fig = plots._bar_figure(normalized)
    assert tuple(fig.get_size_inches()) == (width, height)
    assert len(fig.axes) == rows


def png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def test_paper_sized_bar_chart_is_not_a_strip(tmp_path):
    """Experiment (b): 12 rules x 10 agents was a 2370 x 600 px strip."""
    normalized, errors = bars_data(n_rules=12, n_agents=10)
    png = plots.bar_chart(normalized, tmp_path / "bars", errors=errors)[0].read_bytes()
    width, height = png_size(png)
    assert width <= 1400 and width / height < 2


def test_bar_values_at_the_bounds_are_kept():
    fig = plots._bar_figure({"r": np.array([-1e-10, 0.5, 1.0 + 1e-10])})
    assert [p.get_height() for p in fig.axes[0].patches] == [0.0, 0.5, 1.0]


def marker_data(fig, labels, n_agents):
    """{label: (x, y) arrays over agents} read from the plotted marker lines."""
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == n_agents
    data = {}
    for label in labels:
        lines = [[line for line in ax.get_lines() if line.get_label() == label] for ax in axes]
        assert all(len(found) == 1 for found in lines)
        lines = [found[0] for found in lines]
        assert len({(line.get_color(), line.get_marker()) for line in lines}) == 1  # same style in every subplot
        data[label] = (
            np.array([line.get_xdata()[0] for line in lines]),
            np.array([line.get_ydata()[0] for line in lines]),
        )
    return data


def test_cdf_markers_sit_at_the_empirical_cdf():
    values, returns = cdf_data(n_samples=301, n_agents=5)
    returns["below"] = values.min(axis=0) - 1.0
    returns["above"] = values.max(axis=0) + 1.0
    returns["on a sample"] = values[7]  # ties count: F = #{V <= J} / N
    fig = plots._cdf_figure(values, returns)
    data = marker_data(fig, returns, 5)
    for label, J in returns.items():
        expected = np.array([np.count_nonzero(values[:, i] <= J[i]) for i in range(5)]) / 301
        x, y = data[label]
        np.testing.assert_array_equal(x, J)
        np.testing.assert_allclose(y, expected, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(data["below"][1], 0.0)
    np.testing.assert_array_equal(data["above"][1], 1.0)
    # one legend for the figure, one entry per rule, styles distinct
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(returns)
    styles = {(h.get_markerfacecolor(), h.get_marker()) for h in legend.legend_handles}
    assert len(styles) == len(returns)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == [f"agent {i}" for i in range(5)]
    assert sum(not ax.get_visible() for ax in fig.axes) == 3  # 2 x 4 grid, 3 empty cells hidden


def test_cdf_markers_agree_with_result_ranks_tolerance():
    """A return a hair below a sample (LP round-off) gets that sample's rank, like Result.ranks."""
    values, _ = cdf_data(n_samples=50, n_agents=2)
    J = values[3] - 1e-9
    fig = plots._cdf_figure(ReturnSamples(values), {"lp": J})
    np.testing.assert_allclose(marker_data(fig, ["lp"], 2)["lp"][1], ReturnSamples(values).cdf(J))
    np.testing.assert_allclose(ReturnSamples(values).cdf(J), ReturnSamples(values).cdf(values[3]))


def marker_centres(fig):
    """Per visible subplot: {label: (centre on the canvas in pixels, zorder, marker size in pixels)}."""
    FigureCanvasAgg(fig).draw()
    out = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        found = {}
        for line in ax.get_lines():
            if line.get_label().startswith("_"):
                continue
            point = (line.get_xdata()[0], line.get_ydata()[0])
            found[line.get_label()] = (
                line.get_transform().transform(point),
                line.get_zorder(),
                line.get_markersize() * fig.dpi / 72,
                ax.transData.transform(point),
            )
        out.append(found)
    return out


def test_coinciding_markers_all_stay_visible_and_the_headline_is_on_top():
    """The seed-0 CDF figure had max-quantile hidden under Borda and PVC: equal returns, one point."""
    values, _ = cdf_data(n_samples=300, n_agents=5)
    best = values.max(axis=0) + 0.1
    returns = {
        "max-quantile": best,
        "Borda": best,
        "PVC": best,
        "egalitarian (normalised)": best,
        "generalised Gini": best - 1e-12,
        "egalitarian (raw)": best - 1.0,
        "utilitarian (raw)": values[0],
        **{f"rule{k}": best for k in range(5)},
    }
    for headline in (None, "PVC"):
        fig = plots._cdf_figure(values, returns, headline=headline)
        top = headline or "max-quantile"
        for markers in marker_centres(fig):
            assert set(markers) == set(returns)
            centre, zorder, _, exact = markers[top]
            np.testing.assert_allclose(centre, exact, atol=1e-6)  # the headline sits at its point
            assert zorder > max(z for label, (_, z, _, _) in markers.items() if label != top)
            labels = list(markers)
            for a in range(len(labels)):
                for b in range(a + 1, len(labels)):
                    (ca, _, sa, _), (cb, _, sb, _) = markers[labels[a]], markers[labels[b]]
                    # no marker covers another one's centre: every marker shows
                    assert np.hypot(*(ca - cb)) > 0.5 * max(sa, sb), (labels[a], labels[b])
        # the markers still carry the exact (J, F(J)) as data
        data = marker_data(fig, returns, 5)
        np.testing.assert_array_equal(data["Borda"][0], best)
    with pytest.raises(InvalidProblemError, match="`headline`"):
        plots._cdf_figure(values, returns, headline="nope")


def test_ring_offsets_moves_only_overlapping_markers():
    rng = np.random.default_rng(3)
    points = np.vstack([np.zeros((8, 2)), [[1.0, 0.0], [50.0, 50.0], [9.0, 0.0]], rng.uniform(0, 12, (10, 2))])
    priority = list(rng.permutation(len(points)))
    offsets = plots.ring_offsets(points, priority, inward=np.array([100.0, 100.0]))
    assert np.all(offsets[priority[0]] == 0.0)  # the headline stays at its point
    assert np.all(offsets[9] == 0.0)  # a lone marker stays
    moved = points + offsets
    gaps = np.hypot(*(moved[:, None] - moved[None]).transpose(2, 0, 1))
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() >= plots.MARKER_WIDTH - 1e-9


def ecdf_line(ax):
    (line,) = [line for line in ax.get_lines() if line.get_label() == "_ecdf"]
    return np.asarray(line.get_xdata()), np.asarray(line.get_ydata())


def test_small_sample_curve_is_the_exact_step_function():
    values, returns = cdf_data(n_samples=200, n_agents=1)
    x, y = ecdf_line(plots._cdf_figure(values, returns).axes[0])
    assert len(x) == 200 + 2  # every jump, plus the run-in at 0 and the run-out at 1
    np.testing.assert_array_equal(x[1:-1], np.sort(values[:, 0]))
    np.testing.assert_allclose(y[1:-1], np.arange(1, 201) / 200)
    assert (y[0], y[-1]) == (0.0, 1.0)


def test_large_sample_curve_is_subsampled_without_changing_its_shape():
    N, M = 100_003, plots.MAX_CDF_POINTS
    values = np.random.default_rng(5).lognormal(size=(N, 1))
    x, y = ecdf_line(plots._cdf_figure(values, {"r": np.array([1.0])}).axes[0])
    assert len(x) <= M + 2
    assert y[-2] == 1.0 and x[-2] == values.max()
    # the drawn post-step vs the exact CDF at many points: below it by less than 1/M + 1/N
    grid = np.quantile(values[:, 0], np.linspace(0, 1, 5001))
    drawn = y[np.searchsorted(x, grid, side="right") - 1]
    exact = np.searchsorted(np.sort(values[:, 0]), grid, side="right") / N
    gap = exact - drawn
    assert gap.min() >= -1e-12 and gap.max() < 1 / M + 1 / N


BAD_BARS = [
    ({}, None, "non-empty dict"),
    ({"a": np.array([0.1, 0.2]), "b": np.array([0.1, 0.2, 0.3])}, None, r"shape \(3,\).*same agents"),
    ({"a": np.zeros((2, 2))}, None, "1-D"),
    ({"a": np.array([0.1, 1.2])}, None, r"outside \[0, 1\]"),
    ({"a": np.array([-0.01, 0.5])}, None, r"outside \[0, 1\]"),
    ({"a": np.array([0.1, np.nan])}, None, "non-finite"),
    ({"a": np.array([0.5, 0.1])}, None, "not sorted ascending"),
    ({"a": np.array([0.1, 0.5])}, {"b": np.array([0.0, 0.0])}, "same rule labels"),
    ({"a": np.array([0.1, 0.5])}, {"a": np.array([0.0])}, r"errors\['a'\] has shape"),
    ({"a": np.array([0.1, 0.5])}, {"a": np.array([0.0, -0.1])}, "negative standard error"),
]


@pytest.mark.parametrize("normalized, errors, match", BAD_BARS)
def test_bar_chart_rejects_bad_inputs(tmp_path, normalized, errors, match):
    with pytest.raises(InvalidProblemError, match=match):
        plots.bar_chart(normalized, tmp_path / "bars", errors=errors)
    assert os.listdir(tmp_path) == []  # nothing written


BAD_CDF = [
    (np.zeros((0, 2)), {"r": np.zeros(2)}, None, r"non-empty \(N, n\)"),
    (np.zeros(5), {"r": np.zeros(2)}, None, r"non-empty \(N, n\)"),
    (np.array([[0.0, np.inf]]), {"r": np.zeros(2)}, None, "non-finite"),
    (np.zeros((5, 2)), {}, None, "non-empty dict"),
    (np.zeros((5, 2)), {"r": np.zeros(3)}, None, r"shape \(3,\).*n = 2"),
    (np.zeros((5, 2)), {"r": np.zeros(2)}, ("only one",), "`names` has 1 entries"),
]


@pytest.mark.parametrize("values, returns, names, match", BAD_CDF)
def test_cdf_figure_rejects_bad_inputs(tmp_path, values, returns, names, match):
    with pytest.raises(InvalidProblemError, match=match):
        plots.cdf_figure(values, returns, tmp_path / "cdf", names=names)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- tables' figures
def small_table(n_seeds=3):
    from policyagg.experiments.tables import COLUMNS, FairnessRow, FairnessTable

    rows = []
    for r, (label, rule) in enumerate([("max-quantile", "max_quantile"), ("utilitarian (raw)", "utilitarian")]):
        figures = {key: (0.1 * (r + 1) + 0.01 * k, 0.02 * (k + 1)) for k, (key, _) in enumerate(COLUMNS)}
        rows.append(
            FairnessRow(
                label=label,
                key=label.split(" ")[0],
                rule=rule,
                figures=figures,
                bars_mean=np.array([0.2, 0.5 + 0.1 * r, 0.9]),
                bars_se=np.array([0.01, 0.02, 0.03]),
            )
        )
    return FairnessTable(name="tiny", n_seeds=n_seeds, n_samples=100, rows=tuple(rows))


def test_plot_fairness_draws_every_column_with_labelled_errors(tmp_path):
    table = small_table()
    fig = plots._fairness_figure(table, columns=("gini", "quantile"))
    assert [ax.get_title() for ax in fig.axes] == ["Gini", "quantile reached"]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["max-quantile", "utilitarian (raw)"]
    widths = [[p.get_width() for p in ax.patches] for ax in fig.axes]
    np.testing.assert_allclose(widths, [[0.1, 0.2], [0.13, 0.23]])
    assert all(c.errorbar is not None for ax in fig.axes for c in ax.containers if isinstance(c, BarContainer))
    assert "error bars: s.e. over seeds" in fig.get_supxlabel()
    one = plots._fairness_figure(small_table(n_seeds=1))
    assert all(c.errorbar is None for ax in one.axes for c in ax.containers if isinstance(c, BarContainer))
    assert "no error bars" in one.get_supxlabel()
    check_written(plots.plot_fairness(table, tmp_path / "fair"), tmp_path, "fair")
    with pytest.raises(InvalidProblemError, match="`columns`"):
        plots.plot_fairness(table, tmp_path / "x", columns=("colour",))


def test_plot_returns_draws_no_error_bars_for_one_seed(tmp_path):
    with matplotlib.rc_context():
        files = plots.plot_returns(small_table(n_seeds=1), tmp_path / "one")
    assert files[0].exists()
    normalized = {row.label: row.bars_mean for row in small_table().rows}
    one = plots._bar_figure(normalized, errors=None)
    assert all(c.errorbar is None for ax in one.axes for c in ax.containers if isinstance(c, BarContainer))
    svg = plots.plot_returns(small_table(n_seeds=3), tmp_path / "three")[1].read_text()
    assert "<!-- error bars: s.e. over 3 seeds -->" in svg and "<!-- utilitarian (raw) -->" in svg
    assert "error bars" not in files[1].read_text()
