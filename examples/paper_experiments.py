"""The paper's two attention-allocation experiments, at a tiny size.

Runs the shipped configurations ``attention-a`` (one agent per site) and ``attention-b``
(10 agents with random subsets of sites) through :func:`policyagg.experiments.run.run_configs`
with the six rules of the paper's figure (the configurations add six more rows), 1,000
sampled policies and one seed instead of 10,000 and five, and prints each experiment's
summary table (with several seeds: mean and standard error over the seeds). With every row,
``policyagg reproduce --samples 1000 --seeds 1 --out DIR`` does the same; the full scale is
``policyagg reproduce --full``.

The output folder gets, per experiment, ``summary.md``/``summary.csv``, the bar and CDF
figures and every seed's samples and results (JSON + NPZ). Run again with the same
``--out`` and the finished work is reused.

Run: ``python examples/paper_experiments.py [--out DIR] [--samples N] [--seeds K]`` (about 20 s on 2 cores).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from policyagg.experiments.config import CONFIGS, load_config
from policyagg.experiments.run import run_configs, summarize, summary_markdown

#: The rule rows of the paper's figure, as labelled in the shipped configurations.
PAPER_RULES = ("max-quantile", "Borda", "90%-approval", "80%-approval", "egalitarian", "utilitarian")


def main(out: Path, samples: int, seeds: int) -> None:
    configs = []
    for name in ("attention-a", "attention-b"):
        config = load_config(CONFIGS / f"{name}.toml").with_overrides(
            samples=samples, seeds=list(range(seeds)), output=out / name
        )
        configs.append(replace(config, rules=tuple(spec for spec in config.rules if spec.label in PAPER_RULES)))
    for run in run_configs(configs, progress=False):
        print(summary_markdown(run.config, summarize(run.seeds)))
        print(f"written to {run.config.output}/\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/examples/paper"))
    parser.add_argument("--samples", type=int, default=1_000)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    main(args.out, args.samples, args.seeds)
