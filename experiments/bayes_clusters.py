"""Bayesian aggregation on the attention model: value clusters, their recovery, and lotteries
against deterministic rules (issue 18 item 5).

A config (``experiments/configs/bayes/*.toml``, see ``attention-clusters.toml``) names the
attention model, a population drawn from value clusters with noise, and the rules to compare.
For every seed the script draws the population, fits the value clusters from the agents'
normalised rewards (EM, ``K`` by BIC: :func:`policyagg.bayes.select_clusters`), reports the
adjusted Rand index against the true clusters, runs the rules, and tabulates per rule:

* ``ex_ante_gini``: Gini index of the expected normalised returns;
* ``ex_post_gini``: expected Gini index of the drawn policy's normalised returns (= ex ante for a
  single policy);
* ``min_c<k>``: cluster ``k``'s minimum expected normalised return (ex ante);
  ``min_c<k>_ex_post``: the expected minimum over cluster ``k`` of the drawn policy's; and
  ``min_c<k>_worst``: the minimum over cluster ``k`` and over the policies drawn with positive
  probability (what the cluster may end up with).

A rule option ``clusters = "fitted"`` is replaced by the fitted cluster labels (the proportional
lottery over the clusters' optima). Outputs in the config's ``output`` folder: ``summary.csv``
(a row per rule and seed), ``summary.md`` (means over seeds) and ``bayes-clusters.png``/``.svg``.

    python -m policyagg.experiments.bayes_clusters experiments/configs/bayes/attention-clusters.toml
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from policyagg import solvers
from policyagg.bayes import adjusted_rand_index, select_clusters
from policyagg.envs.attention import AttentionModel
from policyagg.experiments.config import InvalidConfigError
from policyagg.experiments.plots import COLORS, _save, _style
from policyagg.io import atomic_write_bytes
from policyagg.lottery import Lottery
from policyagg.metrics import gini
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.solvers.occupancy import utilities

FIGURE = "bayes-clusters"


@dataclass(frozen=True)
class RuleEntry:
    label: str
    rule: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BayesConfig:
    """A validated config: the model, the population of value clusters, the rules."""

    name: str
    output: Path
    seeds: tuple[int, ...]
    n_sites: int
    n_phases: int
    variant: str
    gamma: float
    prototypes: np.ndarray  # (K, n_sites) site weights of each cluster
    sizes: tuple[int, ...]  # agents per cluster
    weight_noise: float
    reward_noise: float
    max_clusters: int
    rules: tuple[RuleEntry, ...]

    @property
    def labels(self) -> np.ndarray:
        """The true cluster of every agent (agents ordered by cluster)."""
        return np.repeat(np.arange(len(self.sizes)), self.sizes)


def load_config(path: str | Path) -> BayesConfig:
    """Read and check a config; a bad entry raises :class:`InvalidConfigError` naming it."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidConfigError(f"{path}: cannot read the config ({exc})") from None
    env, pop, post = data.get("environment", {}), data.get("population", {}), data.get("posterior", {})
    try:
        prototypes = np.asarray(pop["prototypes"], dtype=float)
        sizes = tuple(int(s) for s in pop["sizes"])
        rules = tuple(
            RuleEntry(str(r["label"]), str(r["rule"]), dict(r.get("options", {}))) for r in data.get("rules", [])
        )
        config = BayesConfig(
            name=str(data["name"]),
            output=Path(data.get("output", f"results/{data['name']}")),
            seeds=tuple(int(s) for s in data.get("seeds", [0])),
            n_sites=int(env.get("n_sites", 5)),
            n_phases=int(env.get("n_phases", 3)),
            variant=str(env.get("variant", "classic")),
            gamma=float(env.get("gamma", 1.0)),
            prototypes=prototypes,
            sizes=sizes,
            weight_noise=float(pop.get("weight_noise", 0.0)),
            reward_noise=float(pop.get("reward_noise", 0.0)),
            max_clusters=int(post.get("max_clusters", 6)),
            rules=rules,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidConfigError(f"{path}: missing or malformed entry ({exc!r}); see attention-clusters.toml") from None
    if prototypes.ndim != 2 or prototypes.shape != (len(sizes), config.n_sites) or np.any(prototypes < 0):
        raise InvalidConfigError(
            f"{path}: `population.prototypes` must be non-negative site weights, one row of {config.n_sites} "
            f"per cluster ({len(sizes)} clusters in `population.sizes`); got shape {prototypes.shape}"
        )
    if min(sizes) < 1 or config.weight_noise < 0 or config.reward_noise < 0 or not config.rules:
        raise InvalidConfigError(
            f"{path}: `population.sizes` must be positive, the noises >= 0, and at least one [[rules]] given"
        )
    for entry in rules:
        spec = solvers.get_spec(entry.rule)  # an unknown rule lists the valid ones
        spec.validate({k: v for k, v in entry.options.items() if v != "fitted"})
    return config


def population(config: BayesConfig, seed: int) -> Problem:
    """The seed's problem: agent ``i`` of cluster ``c`` has site weights
    ``prototypes[c] * (1 + weight_noise * N(0, 1))`` (clipped at 0) and rewards
    ``model.rewards(weights) + reward_noise * N(0, 1)`` (independent per state-action)."""
    rng = np.random.default_rng(seed)
    model = AttentionModel(n_sites=config.n_sites, n_phases=config.n_phases, seed=seed, variant=config.variant)
    labels = config.labels
    weights = config.prototypes[labels] * (
        1.0 + config.weight_noise * rng.standard_normal((labels.size, config.n_sites))
    )
    rewards = model.rewards(np.clip(weights, 0.0, None))
    rewards = rewards + config.reward_noise * rng.standard_normal(rewards.shape)
    names = [f"c{c}-{i}" for i, c in enumerate(labels)]
    return solvers.with_ranges(Problem(model.mdp(gamma=config.gamma), rewards, names=names))


def fairness(outcome: Result | Lottery, labels: np.ndarray) -> dict[str, float]:
    """Ex-ante and ex-post Gini, and each cluster's minimum normalised return (ex ante, and the
    expected minimum of the drawn policy's)."""
    if isinstance(outcome, Lottery):
        p, support = outcome.probabilities, outcome.support_normalized
    else:
        p, support = np.ones(1), outcome.normalized[None, :]
    expected = p @ support
    row = {"ex_ante_gini": gini(expected), "ex_post_gini": float(sum(q * gini(u) for q, u in zip(p, support)))}
    for c in np.unique(labels):
        members = labels == c
        row[f"min_c{c}"] = float(expected[members].min())
        row[f"min_c{c}_ex_post"] = float(p @ support[:, members].min(axis=1))
        row[f"min_c{c}_worst"] = float(support[p > 0][:, members].min())
    row["support"] = float(p.size)
    return row


def run_seed(config: BayesConfig, seed: int, *, log=print) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One seed: the cluster fit (``K``, ARI) and a fairness row per rule."""
    started = time.perf_counter()
    problem = population(config, seed)
    labels = config.labels
    C, c0 = utilities(problem, normalize=True)
    fit, bics = select_clusters(C + c0[:, None], np.random.default_rng(seed), max_clusters=config.max_clusters)
    fitted = {"seed": seed, "K": fit.n_clusters, "ARI": adjusted_rand_index(labels, fit.labels), "bic": bics}
    log(f"seed {seed}: K = {fit.n_clusters} by BIC, ARI = {fitted['ARI']:.3f} ({time.perf_counter() - started:.1f} s)")
    rows = []
    for entry in config.rules:
        options = dict(entry.options)
        for key, value in options.items():
            if value == "fitted":
                options[key] = fit.labels.tolist()
        spec = solvers.get_spec(entry.rule)
        if "max_clusters" in spec.options:  # the Bayesian rules fit the same clusters as above
            options = {"max_clusters": config.max_clusters, "seed": seed} | options
        t0 = time.perf_counter()
        outcome = spec.function(problem, **options)
        row = {"rule": entry.label, "seed": seed, **fairness(outcome, labels), "time": time.perf_counter() - t0}
        if isinstance(outcome, Lottery) or "posterior" in outcome.diagnostics:
            info = outcome.diagnostics.get("posterior", {})
            if "cluster_labels" in info:
                row["ARI"] = adjusted_rand_index(labels, info["cluster_labels"])
        rows.append(row)
        log(
            f"  {entry.label}: ex-ante gini {row['ex_ante_gini']:.3f}, ex-post {row['ex_post_gini']:.3f} ({row['time']:.1f} s)"
        )
    return rows, fitted


def summarise(rows: list[dict[str, Any]], fits: list[dict[str, Any]], n_clusters: int) -> str:
    """A Markdown table of the means over seeds, with the cluster recovery per seed."""
    labels = list(dict.fromkeys(r["rule"] for r in rows))
    columns = ["ex_ante_gini", "ex_post_gini"] + [f"min_c{c}" for c in range(n_clusters)]
    columns += [f"min_c{c}_worst" for c in range(n_clusters)] + ["support"]
    lines = [
        "Cluster recovery: " + ", ".join(f"seed {f['seed']}: K = {f['K']}, ARI = {f['ARI']:.3f}" for f in fits),
        "",
        "| rule | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for label in labels:
        mine = [r for r in rows if r["rule"] == label]
        means = [np.mean([r[c] for r in mine]) for c in columns]
        lines.append(f"| {label} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict[str, Any]], n_clusters: int, title: str) -> Figure:
    """Left: ex-ante and ex-post Gini per rule; right: each cluster's minimum normalised return
    (bars ex ante, black ticks the worst policy drawn). Means over seeds."""
    labels = list(dict.fromkeys(r["rule"] for r in rows))

    def mean(label: str, column: str) -> float:
        return float(np.mean([r[column] for r in rows if r["rule"] == label]))

    with _style():
        fig = Figure(figsize=(11, 4.2), layout="constrained")
        left, right = fig.subplots(1, 2, width_ratios=(1, 1.6))
        x = np.arange(len(labels))
        left.bar(x - 0.2, [mean(lb, "ex_ante_gini") for lb in labels], 0.4, label="ex ante", color=COLORS[0])
        left.bar(x + 0.2, [mean(lb, "ex_post_gini") for lb in labels], 0.4, label="ex post", color=COLORS[1])
        left.set_xticks(x, labels, rotation=35, ha="right")
        left.set_ylabel("Gini index of normalised returns")
        left.legend(frameon=False)
        width = 0.8 / n_clusters
        for c in range(n_clusters):
            offset = (c - (n_clusters - 1) / 2) * width
            right.bar(
                x + offset, [mean(lb, f"min_c{c}") for lb in labels], width, label=f"cluster {c}", color=COLORS[2 + c]
            )
            right.scatter(
                x + offset,
                [mean(lb, f"min_c{c}_worst") for lb in labels],
                marker="_",
                s=120,
                color="black",
                zorder=3,
                label="worst policy drawn" if c == 0 else None,
            )
        right.set_xticks(x, labels, rotation=35, ha="right")
        right.set_ylim(0, 1.05)
        right.set_ylabel("cluster's minimum normalised return")
        right.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        fig.suptitle(title)
    return fig


def run(config: BayesConfig, output: Path | None = None, *, log=print) -> Path:
    """Every seed, then ``summary.csv``, ``summary.md`` and the figure in the output folder."""
    out = Path(output or config.output)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    fits = []
    for seed in config.seeds:
        seed_rows, fitted = run_seed(config, seed, log=log)
        rows += seed_rows
        fits.append(fitted)
    K = len(config.sizes)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out / "summary.csv", text.getvalue().encode())
    atomic_write_bytes(out / "summary.md", summarise(rows, fits, K).encode())
    shares = ", ".join(f"{s / sum(config.sizes):.0%}" for s in config.sizes)
    _save(figure(rows, K, f"{config.name}: clusters of {shares}, {len(config.seeds)} seeds"), out / FIGURE)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m policyagg.experiments.bayes_clusters", description=__doc__)
    parser.add_argument("config", help="a config such as experiments/configs/bayes/attention-clusters.toml")
    parser.add_argument("--output", help="output folder (default: the config's)")
    parser.add_argument("--seeds", type=int, help="run only the first N seeds")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.seeds is not None:
        if args.seeds < 1:
            parser.error("--seeds must be a positive integer")
        config = BayesConfig(**{**config.__dict__, "seeds": config.seeds[: args.seeds]})
    out = run(config, Path(args.output) if args.output else None)
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
