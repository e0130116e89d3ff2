"""The preference study runs end to end on a small attention model and writes its files."""

from pathlib import Path

import numpy as np

from policyagg.experiments import preference_study as study


def test_small_study(tmp_path):
    config = study.StudyConfig(n_sites=2, clusters=[[1.0, 0.0], [0.0, 1.0]], sizes=[2, 1], n_items=6, max_members=20)
    report = study.run_study(config)
    assert set(report["methods"]) == {"ensemble + nash_welfare", "single BT", "clusters + nash_welfare"}
    for row in report["methods"].values():
        u = np.array(row["normalized"])
        assert u.shape == (2,) and np.all((u >= -1e-9) & (u <= 1 + 1e-9))
        assert row["min"] == u.min()
    c = report["calibration"]
    assert c["ensemble_error"] <= c["single_bt_error"]
    names = {p.name for p in study.write_study(report, tmp_path)}
    assert {"preferences.csv", "preferences.md", "preferences.png"} <= names


def test_site_features_reproduce_the_attention_rewards():
    from policyagg.envs.attention import AttentionModel

    model = AttentionModel(n_sites=3, n_phases=3, seed=1)
    w = np.array([[0.5, 0.0, 2.0]])
    assert np.allclose(study.site_features(model) @ np.array([1.0, *w[0]]), model.rewards(w)[0].ravel())


def test_config_file_loads():
    config = study.load_config(
        Path(__file__).parents[1] / "experiments" / "configs" / "studies" / "preferences-attention.toml"
    )
    assert config.n_sites == 4 and len(config.clusters) == len(config.sizes) == 3
