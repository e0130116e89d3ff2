"""Our rules on the paper's own instance, side by side with the paper's code's answers.

The input is an ``.npz`` of the paper's public code's outputs on one seed (see
``experiments/reference-instance/README.md``): the MDP ``P`` (S, A, S), and per experiment ``{exp}``
(``base``: one agent per site; ``subsets``: random subsets of sites) the rewards
``{exp}_rewards`` (n, S, A), the sampled returns ``{exp}_sampled_returns`` (N, n), each agent's
LP range ``{exp}_min_expected`` / ``{exp}_max_expected`` (n,) and the paper's code's occupancy
per rule ``{exp}_occ__{rule}`` (S, A). A JSON of the same name beside it, if present, adds
what the paper's code reported (its max-quantile grid index, approvals, returns).

Every rule of the paper's figure runs twice on the same MDP, rewards and samples:

* **ours**: our defaults, as ``policyagg reproduce`` runs them, on the ``N`` sampled returns;
* **ours, paper's choices**: the paper's code's choices where they differ from ours: each
  agent's sample set also holds its own best and worst return (``N + 2`` values, so its
  empirical CDF is exactly the paper's code's histogram), approval completes by the raw
  sum of returns (``completion="utilitarian-raw"``) and Borda's LP takes 256 tangents
  (the paper's code adds one wherever its fitted CDF's slope changes by 0.001);
* for Borda also **ours, exact (MILP)** on the same histograms.

Every point is measured alike: normalised returns ``(J_i - min_O J_i) / (max_O J_i -
min_O J_i)``, their Gini index, the ranks ``F_i(J_i)`` under the samples the point was
chosen with (the paper's code's histograms, except for ``ours``: the ``N`` samples) with
their minimum, grid index ``(samples) min_i F_i - 1`` and sum (the Borda score), the
approvals at the rule's ``alpha``, and the Pareto gap (the largest total gain in normalised
returns available without making any agent worse: 0 when Pareto optimal).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm.auto import tqdm

from policyagg import solvers
from policyagg.errors import InvalidProblemError
from policyagg.io import atomic_write_bytes
from policyagg.mdp import TabularMDP
from policyagg.metrics import gini
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples

#: The experiments a reference file may hold, with the names the tables give them.
EXPERIMENTS = {"base": "(a) base: one agent per site", "subsets": "(b) subsets: agents on random subsets of sites"}
#: Normalised returns within this of each other count as equal (dominance, Pareto gaps).
TOL = 1e-6
SOURCES = ("paper's code", "ours", "ours, paper's choices", "ours, exact (MILP)")


class InvalidReferenceError(InvalidProblemError):
    """A reference file of the paper's code's outputs is missing a key or has a bad array."""


@dataclass(frozen=True)
class RuleMatch:
    """One rule of the paper's figure: our label (as in ``attention-a.toml``), the paper's
    code's key, our rule's name, the approval level (if any) and the options that mimic the
    paper's code on top of our defaults."""

    label: str
    paper_key: str
    rule: str
    alpha: float | None = None
    paper_choices: dict[str, Any] = field(default_factory=dict)
    extra: tuple[tuple[str, dict[str, Any]], ...] = ()  # more of our points: (source, options), on the histograms


#: The paper's figure's rules, in its order.
RULES = (
    RuleMatch("max-quantile", "quantile", "max_quantile"),
    RuleMatch(
        "Borda", "borda", "borda", paper_choices={"tangents": 256}, extra=(("ours, exact (MILP)", {"solver": "milp"}),)
    ),
    RuleMatch("90%-approval", "0.9-approvals", "approval", 0.9, {"completion": "utilitarian-raw"}),
    RuleMatch("80%-approval", "0.8-approvals", "approval", 0.8, {"completion": "utilitarian-raw"}),
    RuleMatch("egalitarian", "egalitarian", "egalitarian"),
    RuleMatch("utilitarian", "0.0-approvals", "utilitarian"),
)


@dataclass(frozen=True)
class ReferenceExperiment:
    """One experiment of a reference file: the problem (LP ranges attached), the ``N``
    sampled returns, the paper's code's histograms (``N + 2`` rows: the samples, each agent's
    best, each agent's worst), its occupancy per rule and what its JSON reported (or ``{}``)."""

    name: str
    problem: Problem
    samples: ReturnSamples
    histograms: ReturnSamples
    occupancies: dict[str, NDArray[np.float64]]
    reported: dict[str, Any]


@dataclass(frozen=True)
class Row:
    """One point measured with the common yardstick (module docstring)."""

    experiment: str
    label: str
    source: str
    returns: NDArray[np.float64]
    normalized: NDArray[np.float64]
    gini: float
    min_rank: float
    q_index: int
    borda: float
    approvals: int | None
    pareto_gap: float
    dominance: str
    status: str = "optimal"
    q_star_index: int | None = None  # max-quantile: the grid index the rule itself reached


# --------------------------------------------------------------------------- loading
def load_reference(path: str | Path, *, experiments: Sequence[str] | None = None) -> list[ReferenceExperiment]:
    """Read and check a reference ``.npz`` (and the JSON of the same name beside it, if any).

    Missing keys, wrong shapes, non-finite values or a file that is not an ``.npz`` of plain
    arrays raise :class:`InvalidReferenceError` naming the key; a bad MDP raises
    :class:`~policyagg.errors.InvalidMDPError`."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a bare .npy array
            raise ValueError("a single array, not an archive of named arrays")
        with data:
            arrays = {key: np.asarray(data[key]) for key in data.files}
    except FileNotFoundError:
        raise InvalidReferenceError(f"{path}: no such file; give the path of the paper's code's .npz") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidReferenceError(
            f"{path}: not an .npz of plain arrays ({type(exc).__name__}: {exc}); pass the paper's code's .npz"
        ) from None
    P = _array(arrays, "P", path, ndim=3)
    S, A = P.shape[0], P.shape[1]
    if P.shape[2] != S:
        raise InvalidReferenceError(f"{path}: `P` must have shape (S, A, S); got {P.shape}")
    found = [name for name in EXPERIMENTS if f"{name}_rewards" in arrays]
    wanted = found if experiments is None else list(experiments)
    unknown = [name for name in wanted if name not in EXPERIMENTS]
    if unknown:
        raise InvalidReferenceError(f"unknown experiment {unknown[0]!r}; choose from {', '.join(EXPERIMENTS)}")
    if not wanted or any(name not in found for name in wanted):
        missing = next((f"{name}_rewards" for name in wanted if name not in found), "base_rewards")
        raise InvalidReferenceError(f"{path}: missing key `{missing}` (keys: {', '.join(sorted(arrays))})")
    reported = _read_json(path.with_suffix(".json"))
    mdp = TabularMDP(P, gamma=1.0)
    return [_experiment(name, arrays, mdp, (S, A), path, reported.get(name, {})) for name in wanted]


def _experiment(
    name: str, arrays: dict, mdp: TabularMDP, shape: tuple[int, int], path: Path, reported: dict
) -> ReferenceExperiment:
    rewards = _array(arrays, f"{name}_rewards", path, ndim=3)
    n = rewards.shape[0]
    if rewards.shape[1:] != shape:
        raise InvalidReferenceError(
            f"{path}: `{name}_rewards` must have shape (n, {shape[0]}, {shape[1]}); got {rewards.shape}"
        )
    values = _array(arrays, f"{name}_sampled_returns", path, ndim=2)
    if values.shape[1] != n or values.shape[0] == 0:
        raise InvalidReferenceError(f"{path}: `{name}_sampled_returns` must have shape (N, {n}); got {values.shape}")
    best = _array(arrays, f"{name}_max_expected", path, ndim=1)
    worst = _array(arrays, f"{name}_min_expected", path, ndim=1)
    for key, array in ((f"{name}_max_expected", best), (f"{name}_min_expected", worst)):
        if array.shape != (n,):
            raise InvalidReferenceError(f"{path}: `{key}` must have shape ({n},); got {array.shape}")
    occupancies = {}
    for match in RULES:
        key = f"{name}_occ__{match.paper_key}"
        occupancy = _array(arrays, key, path, ndim=2)
        if occupancy.shape != shape or occupancy.min() < -1e-6 or abs(occupancy.sum() - 1) > 1e-6:
            raise InvalidReferenceError(
                f"{path}: `{key}` must be an occupancy measure: shape {shape}, entries >= 0, sum 1 "
                f"(got shape {occupancy.shape}, sum {occupancy.sum():.6g})"
            )
        occupancies[match.paper_key] = np.clip(occupancy, 0.0, None) / np.clip(occupancy, 0.0, None).sum()
    problem = solvers.with_ranges(Problem(mdp, rewards, names=[f"{name}{i}" for i in range(n)]))
    samples = ReturnSamples(values, "policy", {"source": str(path)})
    histograms = ReturnSamples(np.vstack([values, best, worst]), "policy", {"source": str(path), "with": "best, worst"})
    return ReferenceExperiment(name, problem, samples, histograms, occupancies, reported)


def _array(arrays: dict, key: str, path: Path, *, ndim: int) -> NDArray[np.float64]:
    if key not in arrays:
        raise InvalidReferenceError(f"{path}: missing key `{key}` (keys: {', '.join(sorted(arrays))})")
    array = arrays[key]
    if array.ndim != ndim or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InvalidReferenceError(f"{path}: `{key}` must be a real {ndim}-d array; got {array.dtype} {array.shape}")
    array = array.astype(float)
    if not np.all(np.isfinite(array)):
        raise InvalidReferenceError(f"{path}: `{key}` has non-finite entries")
    return array


def _read_json(path: Path) -> dict[str, Any]:
    """Per experiment, what the paper's code reported (``{}`` if there is no JSON beside the npz)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: dict(exp.get("rules", {})) for name, exp in data["experiments"].items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidReferenceError(
            f"{path}: not the paper's code's report ({type(exc).__name__}: {exc}); move it away to compare without it"
        ) from None


# --------------------------------------------------------------------------- comparison
def compare_reference(
    experiment: ReferenceExperiment, *, exact: bool = True, backend: str = "highs", progress: bool | None = None
) -> list[Row]:
    """Per rule of :data:`RULES`: the paper's code's point, ours, ours with the paper's choices and,
    if ``exact``, the extra points of :attr:`RuleMatch.extra` (Borda's exact MILP)."""
    from policyagg.experiments.compare import paper_rules

    defaults = {row.label: dict(row.options) for row in paper_rules()}
    rows = []
    for match in tqdm(RULES, desc=f"reference {experiment.name}: rules", unit="rule", disable=progress is False):
        occupancy = experiment.occupancies[match.paper_key]
        paper = _measure(experiment, match, "paper's code", occupancy, experiment.histograms, None)
        rows.append(paper)
        rule = solvers.get_rule(match.rule)
        runs = [
            ("ours", experiment.samples, defaults[match.label]),
            ("ours, paper's choices", experiment.histograms, defaults[match.label] | match.paper_choices),
            *((source, experiment.histograms, options) for source, options in (match.extra if exact else ())),
        ]
        for source, samples, options in runs:
            result = rule(experiment.problem, samples, backend=backend, **options)
            q_star = result.diagnostics.get("q_star")
            row = _measure(experiment, match, source, result.occupancy, samples, paper, status=result.status)
            if q_star is not None:
                row = replace(row, q_star_index=int(round(q_star * samples.n_samples)) - 1)
            rows.append(row)
    return rows


def _measure(
    experiment: ReferenceExperiment,
    match: RuleMatch,
    source: str,
    occupancy,
    yardstick: ReturnSamples,
    paper: Row | None,
    status: str = "optimal",
) -> Row:
    """``occupancy`` measured: ranks under ``yardstick`` (the samples the point was chosen with)."""
    problem = experiment.problem
    returns = problem.returns(occupancy)
    ranges = problem.require_ranges()
    normalized = (returns - ranges.lower) / np.where(ranges.flat, 1.0, ranges.width)
    ranks = yardstick.cdf(returns)
    _, gap = solvers.pareto_check(problem, occupancy)
    return Row(
        experiment=experiment.name,
        label=match.label,
        source=source,
        returns=returns,
        normalized=normalized,
        gini=gini(np.clip(normalized, 0.0, 1.0)),
        min_rank=float(ranks.min()),
        q_index=int(round(ranks.min() * yardstick.n_samples)) - 1,
        borda=float(ranks.sum()),
        approvals=None if match.alpha is None else int(np.count_nonzero(ranks >= match.alpha - 1e-12)),
        pareto_gap=gap,
        dominance="" if paper is None else dominance(normalized, paper.normalized),
        status=status,
    )


def dominance(ours: NDArray[np.float64], paper: NDArray[np.float64], tol: float = TOL) -> str:
    """Which of two normalised return vectors weakly dominates the other (within ``tol``):
    ``"equal"``, ``"ours"``, ``"paper's"`` or ``"neither"``."""
    ours_at_least, paper_at_least = bool(np.all(ours >= paper - tol)), bool(np.all(paper >= ours - tol))
    if ours_at_least and paper_at_least:
        return "equal"
    return "ours" if ours_at_least else "paper's" if paper_at_least else "neither"


# --------------------------------------------------------------------------- explanations
def explain(rows: Sequence[Row], experiment: ReferenceExperiment) -> str:
    """One paragraph on why a rule's points differ (or agree), with the numbers."""
    by = {row.source: row for row in rows}
    label = rows[0].label
    return f"- **{label}**: " + EXPLANATIONS["approval" if "approval" in label else label](by, experiment)


def _sums(by: dict[str, Row]) -> str:
    return "raw sums " + ", ".join(f"{row.returns.sum():.6g} ({source})" for source, row in by.items())


def _explain_utilitarian(by: dict[str, Row], _: ReferenceExperiment) -> str:
    paper, ours = by["paper's code"], by["ours"]
    same = abs(paper.returns.sum() - ours.returns.sum()) <= 1e-6 * max(1.0, abs(paper.returns.sum()))
    return (
        "both maximise the sum of raw returns (the paper's code as its 0.0-approval rule, where every agent "
        f"approves); {_sums(by)}: {'the same optimum' if same else 'different optima'}. "
        + (
            "The points agree agent by agent."
            if ours.dominance == "equal"
            else "The optimum is not unique: the two LP solvers return different optimal vertices (ties)."
        )
        + " The raw sum is driven by the agents with the largest penalties, hence the high Gini "
        f"({paper.gini:.3f})."
    )


def _explain_egalitarian(by: dict[str, Row], _: ReferenceExperiment) -> str:
    paper, ours = by["paper's code"], by["ours"]
    return (
        f"both are leximin on raw returns; the lowest return (the first leximin level) is {paper.returns.min():.6g} "
        f"(paper's code) and {ours.returns.min():.6g} (ours). The paper's code fixes, each round, the agent lowest "
        "in that round's solution; ours fixes the agents whose floor binds in every optimum (non-zero dual), so "
        "later levels can differ when several agents tie at a level"
        + ("; here they do not." if ours.dominance == "equal" else f" (which weakly dominates: {ours.dominance}).")
    )


def _explain_approval(by: dict[str, Row], _: ReferenceExperiment) -> str:
    paper, ours, mimic = by["paper's code"], by["ours"], by["ours, paper's choices"]
    n = paper.returns.size
    return (
        f"approvers: {paper.approvals}/{n} (paper's code), {ours.approvals}/{n} (ours), {mimic.approvals}/{n} "
        "(ours, paper's choices); the thresholds are each agent's alpha-quantile of its samples. The approving "
        "region holds many points and a completion picks one: the paper's code maximises the sum of raw returns, "
        "which favours the agents with large penalties; ours by default maximises the sum of normalised returns "
        f"(Gini {ours.gini:.3f} against the paper's {paper.gini:.3f}, neither point dominating the other); with "
        f"the paper's completion (`utilitarian-raw`): {_sums(by)}. Our completion keeps a margin of at most 1e-5 of "
        "each agent's range above its threshold (so that solver tolerance cannot drop a rank), which costs a "
        "little raw sum; where the raw-sum optimum is not unique the two solvers may pick different points (ties)."
    )


def _explain_borda(by: dict[str, Row], _: ReferenceExperiment) -> str:
    scores = ", ".join(f"{row.borda:.4f} ({source})" for source, row in by.items())
    return (
        "the paper's code fits a generalised-logistic CDF to each agent's samples and maximises the sum of its "
        "tangents above the fitted mode (a tangent wherever the slope changes by 0.001); ours takes the "
        "empirical CDF's concave envelope above its mode on `tangents` quantile knots (32 by default, 256 as the "
        "paper's choice) in the same LP; the MILP is exact for the piecewise-linear empirical CDF. A fitted CDF "
        "is not the empirical one, and few knots make a coarse envelope, so each LP optimises a slightly "
        f"different score. Borda scores under the empirical CDFs: {scores}."
    )


def _explain_quantile(by: dict[str, Row], experiment: ReferenceExperiment) -> str:
    paper, ours, mimic = by["paper's code"], by["ours"], by["ours, paper's choices"]
    reported = experiment.reported.get("quantile", {}).get("max_q_index")
    gap = (
        f"The paper's code returns the LP's point without completion: its Pareto gap is {paper.pareto_gap:.3g}, "
        "so some policy makes no agent worse and some better. "
        if paper.pareto_gap > TOL
        else "The paper's code's point happens to be Pareto optimal here. "
    )
    return (
        f"on the paper's histograms (N + 2 values per agent) the grid index of q* is {paper.q_index} for the paper's "
        "code's point" + ("" if reported is None else f" (its report: {reported})") + f" and {mimic.q_star_index} "
        f"for ours with its choices; {ours.q_star_index} for ours on the N samples alone (a grid of N values). "
        + gap
        + "Ours completes inside the same region {J_i >= t_i(q*)} by leximin of normalised returns, which is "
        "Pareto optimal but need not lie above the paper's point; which weakly dominates: "
        f"{mimic.dominance}."
    )


EXPLANATIONS: dict[str, Callable[[dict[str, Row], ReferenceExperiment], str]] = {
    "utilitarian": _explain_utilitarian,
    "egalitarian": _explain_egalitarian,
    "approval": _explain_approval,
    "Borda": _explain_borda,
    "max-quantile": _explain_quantile,
}


# --------------------------------------------------------------------------- output
def _numbers(values: NDArray[np.float64], fmt: str) -> str:
    return ", ".join(format(float(v), fmt) for v in values)


def to_markdown(experiments: Sequence[ReferenceExperiment], rows: Sequence[Row]) -> str:
    """The side-by-side tables and the explanations, one section per experiment."""
    lines = [
        "# Our rules on the paper's own instance",
        "",
        "Sources: the paper's code's point; ours with our defaults (as `policyagg reproduce` runs them) on the "
        "N samples; ours with the paper's code's choices (each agent's best and worst return added to its "
        "samples, approval completed by the raw sum, Borda with 256 tangents); for Borda also our exact MILP. "
        "Ranks are under the samples the point was chosen with: the paper's code's histograms (N + 2 values "
        "per agent) except for `ours` (N). `q index` = (samples) x min rank - 1; Pareto gap: the total "
        "normalised gain available without making any agent worse (0 = Pareto optimal); weakly dominates: "
        "which of our point and the paper's is at least as good for every agent (normalised returns, "
        "tolerance 1e-6).",
    ]
    for experiment in experiments:
        mine = [r for r in rows if r.experiment == experiment.name]
        lines += [
            "",
            f"## {EXPERIMENTS[experiment.name]}: {experiment.problem.n_agents} agents, "
            f"N = {experiment.samples.n_samples} sampled policies",
            "",
            "| rule | source | Gini | min normalised | min rank | q index | Borda | approvals | Pareto gap "
            "| weakly dominates | returns | normalised returns |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
        ]
        for r in mine:
            cells = [
                r.label,
                r.source,
                f"{r.gini:.4f}",
                f"{r.normalized.min():.4f}",
                f"{r.min_rank:.5f}",
                str(r.q_index),
                f"{r.borda:.4f}",
                "" if r.approvals is None else str(r.approvals),
                f"{r.pareto_gap:.2g}",
                r.dominance,
                _numbers(r.returns, ".5g"),
                _numbers(r.normalized, ".4f"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Why they differ:", ""]
        for match in RULES:
            lines.append(explain([r for r in mine if r.label == match.label], experiment))
    return "\n".join(lines) + "\n"


CSV_HEADER = (
    "experiment",
    "rule",
    "source",
    "gini",
    "min_normalized",
    "min_rank",
    "q_index",
    "borda",
    "approvals",
    "pareto_gap",
    "weakly_dominates",
    "status",
    "returns",
    "normalized",
)


def to_csv(rows: Sequence[Row]) -> str:
    """CSV text: one line per point; per-agent returns and normalised returns joined by ``;``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for r in rows:
        writer.writerow(
            [
                r.experiment,
                r.label,
                r.source,
                f"{r.gini:.10g}",
                f"{r.normalized.min():.10g}",
                f"{r.min_rank:.10g}",
                r.q_index,
                f"{r.borda:.10g}",
                "" if r.approvals is None else r.approvals,
                f"{r.pareto_gap:.10g}",
                r.dominance,
                r.status,
                ";".join(f"{v:.10g}" for v in r.returns),
                ";".join(f"{v:.10g}" for v in r.normalized),
            ]
        )
    return buffer.getvalue()


def run_reference(
    path: str | Path,
    *,
    out: str | Path | None = None,
    experiments: Sequence[str] | None = None,
    exact: bool = True,
    backend: str = "highs",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Load a reference file, compare every rule, and write ``reference.md`` and ``reference.csv``
    (atomically) under ``out`` if given. Returns ``{"experiments", "rows", "markdown", "files"}``."""
    loaded = load_reference(path, experiments=experiments)
    rows = [
        row
        for experiment in loaded
        for row in compare_reference(experiment, exact=exact, backend=backend, progress=progress)
    ]
    markdown = to_markdown(loaded, rows)
    files = []
    if out is not None:
        out = Path(out)
        files = [
            atomic_write_bytes(out / "reference.md", markdown.encode()),
            atomic_write_bytes(out / "reference.csv", to_csv(rows).encode()),
        ]
    return {"experiments": loaded, "rows": rows, "markdown": markdown, "files": files}


__all__ = [
    "EXPERIMENTS",
    "RULES",
    "InvalidReferenceError",
    "ReferenceExperiment",
    "Row",
    "RuleMatch",
    "compare_reference",
    "dominance",
    "load_reference",
    "run_reference",
    "to_csv",
    "to_markdown",
]
