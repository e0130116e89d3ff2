"""The fairness comparison on the attention-allocation environment (SPEC section 7).

Builds the attention MDP, an agent population (experiment ``a``: one agent per site;
``b``: random subsets of sites), samples returns under the ``policy`` measure, runs every
rule variant and reports Gini index, minimum normalised return and quantile reached.
The paper's utilitarian and egalitarian baselines act on raw returns; the normalised
variants are extra rows.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from policyagg import solvers
from policyagg.envs.attention import AttentionModel, site_weights
from policyagg.experiments.config import CONFIGS, load_config
from policyagg.experiments.tables import display_label
from policyagg.lottery import Lottery
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.sampling import sample_policy_returns


def paper_rules():
    """The rule rows of the paper's comparison, as shipped in ``configs/attention-a.toml``
    (the paper's six first, then the normalised variants, PVC and the baselines)."""
    return load_config(CONFIGS / "attention-a.toml").rules


def attention_problem(
    experiment: str,
    *,
    n_sites: int = 5,
    n_phases: int = 3,
    n_agents: int = 10,
    seed: int = 0,
    gamma: float = 1.0,
    variant: str = "classic",
    **model_options,
) -> Problem:
    """The attention MDP (average reward by default) with experiment ``a`` or ``b``'s agents;
    the escalation probabilities and the agents are drawn from ``seed`` as ``variant`` says
    (``"classic"`` or ``"paper"``: :mod:`policyagg.envs.attention`). ``model_options`` go to
    :class:`AttentionModel` (``attention_cost``, ``penalty``, ``escalation``)."""
    rng = np.random.default_rng(seed)
    model = AttentionModel(n_sites, n_phases, seed=int(rng.integers(2**32)), variant=variant, **model_options)
    weights = site_weights(experiment, n_sites, rng, n_agents=n_agents, variant=variant)
    names = tuple(f"site{j}" for j in range(n_sites)) if experiment == "a" else None
    return Problem(model.mdp(gamma=gamma), model.rewards(weights), names=names)


def attention_options() -> tuple[str, ...]:
    """The ``environment.kwargs`` of an attention configuration: :func:`attention_problem`'s
    model options and :class:`AttentionModel`'s parameters (its seed comes from the run's)."""
    own = [
        name
        for name, p in inspect.signature(attention_problem).parameters.items()
        if p.kind is p.KEYWORD_ONLY and name not in ("n_agents", "seed", "gamma")
    ]
    model = [f.name for f in fields(AttentionModel) if f.init and f.name != "seed"]
    return tuple(dict.fromkeys(own + model))


def compare(
    problem: Problem,
    *,
    n_samples: int,
    seed: int = 0,
    variants=None,
    backend: str = "highs",
    out: Path | None = None,
    progress: bool | None = None,
    name: str = "compare",
) -> dict[str, Result | Lottery]:
    """Run every rule row (``RuleRow``s; default :func:`paper_rules`) on ``problem`` with one
    shared sample set; save results under ``out``. ``progress``: ``False`` hides the sampling
    and rule progress bars (labelled with ``name`` and the seed)."""
    variants = paper_rules() if variants is None else variants
    problem = solvers.with_ranges(problem, backend=backend)
    samples = sample_policy_returns(
        problem, n_samples, rng=seed, progress=False if progress is False else f"{name} seed {seed}: policy samples"
    )
    results = {}
    for variant in tqdm(variants, desc=f"{name} seed {seed}: rules", unit="rule", disable=progress is False):
        result = solvers.get_rule(variant.rule)(problem, samples, backend=backend, **variant.options)
        results[variant.label] = result
        if out is not None:
            result.save(Path(out) / slug(variant.label))
    if out is not None:
        samples.save(Path(out) / "samples")
    return results


def slug(label: str) -> str:
    """A file name for a variant label: ``"90%-approval"`` -> ``"90-approval"``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def fairness_table(results: dict[str, Result | Lottery]) -> str:
    """Markdown table: one row per rule variant (rules on raw returns labelled ``(raw)``); a
    lottery's row is ex ante, and two ex-post columns are added when some row is a lottery."""
    lotteries = any(isinstance(r, Lottery) for r in results.values())
    lines = [
        "| rule | Gini | min normalised | mean normalised | quantile reached | Borda | PVC eps | Pareto optimal |"
        + (" ex-post Gini | ex-post min normalised |" if lotteries else ""),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |" + (" ---: | ---: |" if lotteries else ""),
    ]
    for label, r in results.items():
        report = r.report
        cells = [
            f"{r.gini:.4f}",
            f"{r.normalized.min():.4f}",
            f"{r.normalized.mean():.4f}",
            _cell(report.get("min_rank")),
            _cell(report.get("borda")),
            _cell(report.get("pvc_epsilon")),
            "yes" if report.get("pareto_optimal") else "no",
        ]
        if lotteries:
            drawn = r.support_normalized if isinstance(r, Lottery) else r.normalized[None, :]
            p = r.probabilities if isinstance(r, Lottery) else np.ones(1)
            cells += [f"{r.ex_post_gini if isinstance(r, Lottery) else r.gini:.4f}", f"{p @ drawn.min(axis=1):.4f}"]
        lines.append(f"| {display_label(label, r.options)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    return "" if value is None else f"{value:.4f}"
