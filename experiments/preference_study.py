"""From pairwise preferences to fair policies on the attention model (issue 17 item 5).

A synthetic population with value clusters (each cluster weights the attention sites
differently; members add noise to their cluster's site weights) compares ``n_items`` random
policies pairwise; the data are the exact shares. Then

* ``ensemble + RULE``: a pairwise-calibrated ensemble (:func:`policyagg.preferences.calibrated_ensemble`),
  its members as weighted agents (:func:`~policyagg.preferences.ensemble_problem`), and a rule;
* ``single BT``: the optimal policy of the one Bradley-Terry reward fitted to the same data;
* ``clusters + RULE``: the rule on the true cluster rewards (what an oracle would do).

Each policy is judged by the clusters' true rewards: per cluster the normalised return
``(J_c(d) - min_O J_c) / (max_O J_c - min_O J_c)``, their minimum and Gini index.
Run ``python -m policyagg.experiments.preference_study [CONFIG.toml] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policyagg import preferences as pr
from policyagg.envs.attention import AttentionModel
from policyagg.errors import InvalidProblemError
from policyagg.metrics import gini
from policyagg.problem import Problem
from policyagg.solvers import get_rule
from policyagg.solvers.occupancy import return_ranges


@dataclass(frozen=True)
class StudyConfig:
    """The study's parameters (the TOML file's keys)."""

    n_sites: int = 3
    n_phases: int = 3
    gamma: float = 0.95
    clusters: list[list[float]] = field(default_factory=lambda: [[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])
    sizes: list[int] = field(default_factory=lambda: [6, 3, 1])
    noise: float = 0.1
    n_items: int = 12
    rule: str = "nash_welfare"
    rule_options: dict[str, Any] = field(default_factory=dict)
    max_members: int = 100
    time_limit: float = 60.0
    seed: int = 0


def load_config(path: str | Path | None) -> StudyConfig:
    """A :class:`StudyConfig` from a TOML file (``None``: the defaults); unknown keys are refused."""
    if path is None:
        return StudyConfig()
    data = tomllib.loads(Path(path).read_text())
    unknown = set(data) - set(StudyConfig.__dataclass_fields__)
    if unknown:
        raise InvalidProblemError(
            f"{path}: unknown key `{sorted(unknown)[0]}`; keys are: {', '.join(StudyConfig.__dataclass_fields__)}"
        )
    return StudyConfig(**data)


def site_features(model: AttentionModel) -> np.ndarray:
    """``Phi`` (S*A, 1 + n_sites): minus the attention cost, then minus the penalty for each site
    left unattended at its top phase; a member with site weights ``w`` has reward ``Phi @ (1, w)``
    (exactly :meth:`AttentionModel.rewards`)."""
    base = model.rewards(np.zeros((1, model.n_sites)))[0].ravel()
    per_site = model.rewards(np.eye(model.n_sites)).reshape(model.n_sites, -1) - base
    return np.column_stack([base, per_site.T])


def run_study(config: StudyConfig) -> dict[str, Any]:
    """Run the study; returns per method the clusters' normalised returns, min and Gini, and the
    ensemble's calibration (error, certified lower bound, size) beside the single reward's."""
    rng = np.random.default_rng(config.seed)
    model = AttentionModel(n_sites=config.n_sites, n_phases=config.n_phases, seed=config.seed)
    mdp = model.mdp(gamma=config.gamma)
    S, A = mdp.n_states, mdp.n_actions
    centers = np.asarray(config.clusters, dtype=float)
    if centers.shape[1] != config.n_sites or len(config.sizes) != len(centers):
        raise InvalidProblemError("`clusters` must hold one row of n_sites weights per cluster, `sizes` one count each")
    labels = np.repeat(np.arange(len(centers)), config.sizes)
    member_sites = np.clip(centers[labels] + config.noise * rng.normal(size=(labels.size, config.n_sites)), 0, None)
    Phi = site_features(model)
    members = np.hstack([np.ones((labels.size, 1)), member_sites])  # reward = Phi @ (1, site weights)
    occupancies = np.array([mdp.occupancy(rng.dirichlet(np.ones(A), size=S)).ravel() for _ in range(config.n_items)])
    items = occupancies @ Phi
    pairs = np.array([(a, b) for a in range(config.n_items) for b in range(a + 1, config.n_items)])
    data = pr.preference_data(items, pairs, pr.population_share(items, pairs, members, np.ones(labels.size)))

    ensemble = pr.calibrated_ensemble(
        data, max_members=config.max_members, time_limit=config.time_limit, rng=config.seed
    )
    bt = pr.bradley_terry_reward(data)
    bt_error, bt_probability_error = pr.single_reward_error(data, bt)

    truth = Problem(mdp, model.rewards(centers), names=[f"cluster{c}" for c in range(len(centers))])
    ranges = return_ranges(truth)
    rule = get_rule(config.rule)

    def judged(d: np.ndarray) -> dict[str, Any]:
        normalized = ranges.normalize(truth.returns(d))
        return {"normalized": normalized.tolist(), "min": float(normalized.min()), "gini": gini(normalized)}

    methods: dict[str, Any] = {
        f"ensemble + {config.rule}": rule(
            pr.ensemble_problem(ensemble, mdp, feature_map=Phi), **config.rule_options
        ).occupancy,
        "single BT": get_rule("utilitarian")(Problem(mdp, (Phi @ bt).reshape(1, S, A))).occupancy,
        f"clusters + {config.rule}": rule(
            Problem(mdp, truth.rewards, weights=np.asarray(config.sizes, float)), **config.rule_options
        ).occupancy,
    }
    return {
        "config": asdict(config),
        "calibration": {
            "ensemble_error": ensemble.error,
            "ensemble_mean_error": ensemble.mean_error,
            "ensemble_lower_bound": ensemble.lower_bound,
            "ensemble_status": ensemble.status,
            "ensemble_size": ensemble.size,
            "single_bt_error": bt_error,
            "single_bt_probability_error": bt_probability_error,
            "pairs": int(pairs.shape[0]),
        },
        "methods": {name: judged(d) for name, d in methods.items()},
    }


def write_study(report: dict[str, Any], out: str | Path) -> list[Path]:
    """``preferences.json``, ``preferences.csv``, ``preferences.md`` and the bar chart
    ``preferences.png/.svg`` (each method's clusters' normalised returns, sorted ascending)."""
    from policyagg.experiments.plots import bar_chart

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "preferences.json").write_text(json.dumps(report, indent=2))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "min_normalized", "gini", "normalized_per_cluster"])
    for name, row in report["methods"].items():
        writer.writerow(
            [name, f"{row['min']:.4f}", f"{row['gini']:.4f}", " ".join(f"{x:.4f}" for x in row["normalized"])]
        )
    (folder / "preferences.csv").write_text(buffer.getvalue())
    (folder / "preferences.md").write_text(markdown(report))
    figures = bar_chart(
        {name: np.sort(row["normalized"]) for name, row in report["methods"].items()},
        folder / "preferences",
        title="clusters' normalised returns (sorted)",
    )
    return [folder / "preferences.json", folder / "preferences.csv", folder / "preferences.md", *figures]


def markdown(report: dict[str, Any]) -> str:
    """The study's tables: fairness per method, then calibration."""
    c = report["calibration"]
    lines = ["| method | min normalised return | Gini | per cluster |", "|---|---|---|---|"]
    for name, row in report["methods"].items():
        per = ", ".join(f"{x:.3f}" for x in row["normalized"])
        lines.append(f"| {name} | {row['min']:.3f} | {row['gini']:.3f} | {per} |")
    bound = "none" if c["ensemble_lower_bound"] is None else f"{c['ensemble_lower_bound']:.3g}"
    lines += [
        "",
        f"Calibration over {c['pairs']} pairs: ensemble of {c['ensemble_size']} members, max error "
        f"{c['ensemble_error']:.3g} (certified lower bound {bound}, status {c['ensemble_status']}); one "
        f"Bradley-Terry reward: {c['single_bt_error']:.3g} as a ranking, {c['single_bt_probability_error']:.3g} "
        "as probabilities.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="preferences -> calibrated ensemble -> fair policy (attention model)")
    parser.add_argument("config", nargs="?", default=None, help="a TOML file (default: the built-in study)")
    parser.add_argument("--out", default="results/preferences", help="output folder")
    args = parser.parse_args(argv)
    report = run_study(load_config(args.config))
    print(markdown(report), end="")
    for path in write_study(report, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
