"""experiments.tables: the fairness table's Markdown and CSV, raw-rule labels, one seed without ±."""

import numpy as np

from policyagg.experiments import tables
from policyagg.experiments.tables import COLUMNS, FairnessRow, FairnessTable


def table(n_seeds=2):
    figures = {key: (0.5 + 0.1 * k, 0.01 * k) for k, (key, _) in enumerate(COLUMNS)}
    rows = (
        FairnessRow(
            "max-quantile", "max-quantile", "max_quantile", figures, np.array([0.25, 0.75]), np.array([0.0, 0.125])
        ),
        FairnessRow(
            "utilitarian (raw)", "utilitarian", "utilitarian", figures, np.array([0.5, 1.0]), np.array([0.0, 0.0])
        ),
    )
    return FairnessTable(name="tiny", n_seeds=n_seeds, n_samples=300, rows=rows)


def test_display_label_marks_raw_rules_once():
    assert tables.display_label("utilitarian", {"normalize": False}) == "utilitarian (raw)"
    assert tables.display_label("egalitarian (raw)", {"normalize": False}) == "egalitarian (raw)"
    assert tables.display_label("egalitarian (normalised)", {"normalize": True}) == "egalitarian (normalised)"
    assert tables.display_label("Borda", {}) == "Borda"  # rules without the option are not raw


def test_markdown_shows_errors_only_with_two_seeds():
    two = tables.to_markdown(table(2))
    assert two.splitlines()[0] == "tiny: 2 seed(s), 300 sampled policies per seed; mean ± s.e. over seeds"
    assert (
        "| utilitarian (raw) | 0.5000 ± 0.0000 | 0.6000 ± 0.0100 | 0.7000 ± 0.0200 | 0.8000 ± 0.0300 | 0.9000 ± 0.0400 |"
        in two
    )
    one = tables.to_markdown(table(1))
    assert "±" not in one and "one seed: no standard error" in one
    assert "| max-quantile | 0.5000 | 0.6000 | 0.7000 | 0.8000 | 0.9000 |" in one


def test_csv_and_bars_csv(tmp_path):
    text = tables.to_csv(table())
    assert text.splitlines()[0] == (
        "rule,gini_mean,gini_se,min_normalized_mean,min_normalized_se,mean_normalized_mean,"
        "mean_normalized_se,quantile_mean,quantile_se,pvc_epsilon_mean,pvc_epsilon_se"
    )
    assert text.splitlines()[2] == "utilitarian (raw),0.5,0,0.6,0.01,0.7,0.02,0.8,0.03,0.9,0.04"
    path = tables.write_csv(table(), tmp_path / "t.csv")
    assert path.read_text() == text
    bars = tables.write_bars_csv(table(), tmp_path / "bars.csv").read_text().splitlines()
    assert bars == [
        "rule,position,mean,se",
        "max-quantile,0,0.25,0",
        "max-quantile,1,0.75,0.125",
        "utilitarian (raw),0,0.5,0",
        "utilitarian (raw),1,1,0",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.csv", "t.csv"]  # no temporary files left
