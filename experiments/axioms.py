"""The axiom audit: which guarantees does each rule keep? (``policyagg axioms``)

For every rule in the registry (at run time: whatever is registered) and every rank rule of
:mod:`policyagg.solvers.rank`, each axiom is checked on seeded random small instances, smallest
first, with targeted constructions (a majority of affine copies, a cloned population, mixed
feature magnitudes, ...). A table says per rule and axiom: ``holds`` on all ``N`` instances
tried, or ``fails`` with the first (smallest) counterexample, saved as a JSON instance that
:func:`verify_counterexample` re-checks after loading; ``n/a`` where the axiom does not apply
to that kind of rule, ``skipped`` with the reason where the rule could not be run.

Policy rules are judged by their outcome's normalised returns; a rule that returns a
:class:`~policyagg.lottery.Lottery` is judged *ex ante* (its expected returns and mixed
occupancy). Axioms (``tol``: on the normalised-return scale):

* ``pareto``: no ``d' in O`` gives every agent at least the outcome's return and one more (LP);
* ``majority``: a strict majority of agents (by weight) whose rewards are positive affine
  copies of one reward (so they share their best policy) all get their best return;
* ``monotonicity``: raising one agent's reward by ``width/2`` on the support of the chosen
  policy (a reward the chosen policy maximises) leaves every agent's return unchanged;
* ``anonymity``: permuting the agents permutes the normalised returns;
* ``affine``: ``r_j -> a r_j + b`` (``a > 0``) for one agent changes no normalised return;
* ``pvc``: the outcome is in the ``n/N``-proportional veto core of the instance's ``N`` samples;
* ``population``: the population together with a copy of itself (each part would choose the
  outcome) gets the same outcome.

Rank rules: ``pareto`` (every unanimous pair kept), ``pmc`` (a feasible ranking that agrees with
every strict pairwise majority is the output), ``majority`` (a candidate first for a strict
weighted majority is first), ``monotonicity`` (lifting the winner one place in one voter's
ranking keeps it first), ``anonymity`` (voters reversed), ``population`` (two halves of the
voters with the same output: the union keeps it; else the profile doubled).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linprog

from policyagg.errors import CorruptFileError, InvalidProblemError, PolicyAggError
from policyagg.io import StrPath, atomic_write_json
from policyagg.lottery import Lottery
from policyagg.mdp import TabularMDP
from policyagg.problem import Problem
from policyagg.result import Result
from policyagg.samples import ReturnSamples
from policyagg.sampling import sample_policy_returns
from policyagg.solvers import rank
from policyagg.solvers.occupancy import return_ranges
from policyagg.solvers.pvc import pvc_epsilon
from policyagg.solvers.registry import RULE_SPECS

POLICY_AXIOMS = ("pareto", "majority", "monotonicity", "anonymity", "affine", "pvc", "population")
RANK_AXIOMS = ("pareto", "pmc", "majority", "monotonicity", "anonymity", "population")
#: Rank axioms read off the rule's output alone: checked on the extra screening instances too.
SCREENED = ("pareto", "pmc")
AXIOMS = ("pareto", "pmc", "majority", "monotonicity", "anonymity", "affine", "pvc", "population")
FORMAT = "policyagg-axiom-counterexample"

#: Where a theorem (or the construction) says an axiom holds: (rule, axiom) -> the reason. A
#: counterexample to one of these is a bug and is flagged in the table.
THEOREMS: dict[tuple[str, str], str] = {
    **{
        ("leximax_copeland", axiom): "Ge et al. 2024, Thm. (leximax Copeland s.t. PO)"
        for axiom in ("pareto", "pmc", "majority", "monotonicity")
    },
    ("leximax_copeland", "anonymity"): "depends on the profile only through the weighted majorities",
    **{
        (rule, "pareto"): "Pareto lift in RuleCall.finish"
        for rule in (
            "utilitarian",
            "egalitarian",
            "approval",
            "max_quantile",
            "borda",
            "pvc",
            "random_dictator",
            "nash_welfare",
            "generalized_gini",
        )
    },
    **{
        (rule, "affine"): "uses ranks F_i(J_i) or normalised returns only"
        for rule in ("approval", "max_quantile", "borda", "pvc", "nash_welfare")
    },
    ("pvc", "pvc"): "sequential veto: eps(d) <= max(eps, n/N) (SPEC 4)",
}
#: Where a theorem says an axiom fails: the audit must find a counterexample (tested).
KNOWN_FAILURES: dict[tuple[str, str], str] = {
    (rule, axiom): "Ge et al. 2024, Thm. (loss-based rules fail PO and PMC)"
    for rule in ("bradley_terry", "squared_hinge")
    for axiom in ("pareto", "pmc")
}


class NotApplicable(Exception):
    """The axiom's premise does not hold on this instance (it is not counted as tried)."""


class Skip(Exception):
    """The rule cannot run on this instance; the message says why."""


# --------------------------------------------------------------------------- instances
@dataclass(frozen=True, eq=False)
class PolicyInstance:
    """A tiny policy-aggregation instance with the raw arrays kept (for JSON)."""

    P: NDArray[np.float64]  # (S, A, S)
    rho: NDArray[np.float64]  # (S,)
    gamma: float
    rewards: NDArray[np.float64]  # (n, S, A)
    weights: NDArray[np.float64]  # (n,)
    samples: NDArray[np.float64]  # (N, n), returns of sampled policies
    sample_seed: int = 0  # the samples are sample_policy_returns(problem, N, rng=sample_seed)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.P.shape[0] * self.P.shape[1]), int(self.rewards.shape[0])

    def problem(self) -> Problem:
        return Problem(TabularMDP(self.P, rho=self.rho, gamma=self.gamma), self.rewards, weights=self.weights)

    def replace(
        self, rewards: NDArray[np.float64], weights: NDArray[np.float64], samples: NDArray[np.float64]
    ) -> PolicyInstance:
        return PolicyInstance(self.P, self.rho, self.gamma, rewards, weights, samples, self.sample_seed)

    def to_json(self) -> dict[str, Any]:
        return {key: (value.tolist() if isinstance(value, np.ndarray) else value) for key, value in vars(self).items()}


@dataclass(frozen=True, eq=False)
class RankInstance:
    """A rank-aggregation instance: features (m, k), rankings (n, m), weights (n,)."""

    features: NDArray[np.float64]
    rankings: NDArray[np.int64]
    weights: NDArray[np.float64]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.features.shape[0]), int(self.rankings.shape[0])

    def profile(self) -> rank.RankProfile:
        return rank.rank_profile(self.features, self.rankings, self.weights, check_voters=False)

    def to_json(self) -> dict[str, Any]:
        return {key: value.tolist() for key, value in vars(self).items()}


def policy_instances(count: int, rng: np.random.Generator, *, n_samples: int = 300) -> list[PolicyInstance]:
    """``count`` random discounted MDPs (2-3 states, 2 actions) with 2-4 agents and sampled
    returns (the ``policy`` measure), smallest first."""
    sizes = sorted((int(rng.integers(2, 4)), int(rng.integers(2, 5))) for _ in range(count))
    out = []
    for S, n in sizes:
        A = 2
        P = rng.dirichlet(np.full(S, 0.5), size=(S, A))
        rho = np.full(S, 1.0 / S)
        rewards = np.round(rng.normal(size=(n, S, A)), 3)
        weights = np.ones(n)
        seed = int(rng.integers(2**31))
        base = PolicyInstance(P, rho, 0.8, rewards, weights, np.zeros((n_samples, n)), seed)
        out.append(base.replace(rewards, weights, _resampled(base, rewards)))
    return out


def rank_instances(count: int, rng: np.random.Generator) -> list[RankInstance]:
    """``count`` profiles of linear voters with features of mixed magnitudes (0.1 to 100: the
    scale differences the loss-based rules trip on), from three families in turn: 2-5 random
    voters over 3-5 candidates with 2-D features; unanimous voters (all share one ranking);
    two voters over five candidates with 3-D features (where the loss-based rules break
    Pareto optimality most often). Smallest first."""
    out: list[RankInstance] = []
    while len(out) < count:
        family = len(out) % 3
        m, n, k = (int(rng.integers(3, 6)), int(rng.integers(2, 6)), 2) if family < 2 else (5, 2, 3)
        V = np.round(rng.normal(size=(m, k)) * 10.0 ** rng.integers(-1, 3, size=(m, 1)), 1).astype(np.float64)
        if len({tuple(v) for v in V}) < m:
            continue
        thetas = np.tile(rng.normal(size=k), (n, 1)) if family == 1 else rng.normal(size=(n, k))
        scores = V @ thetas.T
        if np.any(np.diff(np.sort(scores, axis=0), axis=0) < 1e-6):
            continue
        out.append(RankInstance(V, np.argsort(-scores.T, axis=1), rng.integers(1, 4, size=n).astype(float)))
    return sorted(out, key=lambda inst: inst.size)


# --------------------------------------------------------------------------- running rules
@dataclass(frozen=True)
class Outcome:
    """What a policy rule chose: normalised and raw returns, and the (mixed) occupancy."""

    normalized: NDArray[np.float64]
    returns: NDArray[np.float64]
    occupancy: NDArray[np.float64] | None


def run_policy_rule(rule: str, instance: PolicyInstance) -> Outcome:
    """Run registered rule ``rule`` at its default options on ``instance`` (with its samples);
    a :class:`Lottery` is read ex ante. Errors of policyagg become :class:`Skip`."""
    spec = RULE_SPECS[rule]
    problem = instance.problem()
    try:
        out = spec.function(problem, ReturnSamples(instance.samples))
    except PolicyAggError as exc:
        raise Skip(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}") from None
    if isinstance(out, Result):
        return Outcome(out.normalized, out.returns, out.occupancy.ravel())
    if isinstance(out, Lottery):
        occupancy = out.occupancy
        return Outcome(out.normalized, out.returns, None if occupancy is None else occupancy.ravel())
    raise Skip(f"returns a {type(out).__name__}, not a Result or a Lottery")


def _mismatch(got: NDArray[np.float64], want: NDArray[np.float64], tol: float, what: str) -> str | None:
    gap = float(np.max(np.abs(np.asarray(got) - np.asarray(want))))
    if gap <= tol:
        return None
    return f"{what}: normalised returns {np.round(got, 6).tolist()} instead of {np.round(want, 6).tolist()} (gap {gap:.3g})"


# --------------------------------------------------------------------------- policy axioms
def pareto_gap(problem: Problem, d: NDArray[np.float64]) -> float:
    """``max sum_i (J_i(d') - J_i(d)) / width_i`` over ``d' in O`` with ``J(d') >= J(d)`` (an LP
    via scipy, not the library's lift): positive iff ``d`` is Pareto-dominated."""
    ranges = return_ranges(problem)
    width = np.where(ranges.width > 0, ranges.width, 1.0)
    R = problem.reward_matrix
    poly = problem.polytope
    J = R @ d
    res = linprog(
        -(R / width[:, None]).sum(axis=0),
        A_ub=-R,
        b_ub=-J,
        A_eq=poly.A_eq.toarray(),
        b_eq=poly.b_eq,
        bounds=(0, None),
        method="highs",
    )
    if res.status != 0:  # d itself is feasible: only numerical trouble lands here
        return 0.0
    return float(-res.fun - (R / width[:, None]).sum(axis=0) @ d)


def _policy_pareto(rule: str, inst: PolicyInstance, base: Outcome, params: dict[str, Any], tol: float) -> str | None:
    if base.occupancy is None:
        raise Skip("the lottery has no occupancies (non-tabular support)")
    gap = pareto_gap(inst.problem(), base.occupancy)
    return (
        None if gap <= tol else f"a policy gives every agent at least as much and {gap:.3g} more in total (normalised)"
    )


def _policy_majority(rule: str, inst: PolicyInstance, base: Outcome, params: dict[str, Any], tol: float) -> str | None:
    n = inst.rewards.shape[0]
    k = n // 2 + 1
    rewards = inst.rewards.copy()
    samples = inst.samples.copy()
    scales, shifts = np.asarray(params["scales"]), np.asarray(params["shifts"])
    for j in range(1, k):  # agents 1..k-1 become affine copies of agent 0
        rewards[j] = scales[j] * inst.rewards[0] + shifts[j]
        samples[:, j] = scales[j] * inst.samples[:, 0] + shifts[j]
    got = run_policy_rule(rule, inst.replace(rewards, inst.weights, samples)).normalized
    return _mismatch(got[:k], np.ones(k), tol, f"agents 0..{k - 1} (a majority, affine copies of one reward)")


def _policy_monotonicity(
    rule: str, inst: PolicyInstance, base: Outcome, params: dict[str, Any], tol: float
) -> str | None:
    if base.occupancy is None:
        raise Skip("the lottery has no occupancies (non-tabular support)")
    problem = inst.problem()
    j = int(params["agent"]) % problem.n_agents
    support = (base.occupancy > 1e-9).astype(float).reshape(inst.rewards.shape[1:])
    width = return_ranges(problem).width[j] or 1.0
    rewards = inst.rewards.copy()
    rewards[j] = rewards[j] + 0.5 * width * support
    raised = inst.replace(rewards, inst.weights, _resampled(inst, rewards))
    new_problem = raised.problem()
    after = run_policy_rule(rule, raised)
    new_width = np.where(return_ranges(new_problem).width > 0, return_ranges(new_problem).width, 1.0)
    want = new_problem.returns(base.occupancy)
    gap = float(np.max(np.abs(after.returns - want) / new_width))
    if gap <= tol:
        return None
    return f"agent {j}'s reward raised on the chosen policy's support: the outcome changed by {gap:.3g} (normalised)"


def _resampled(inst: PolicyInstance, rewards: NDArray[np.float64]) -> NDArray[np.float64]:
    """Samples for new rewards on the same MDP, from the instance's seed (the same sampled policies)."""
    problem = inst.replace(rewards, inst.weights, inst.samples).problem()
    return np.asarray(sample_policy_returns(problem, inst.samples.shape[0], rng=inst.sample_seed).values)


def _policy_anonymity(rule: str, inst: PolicyInstance, base: Outcome, params: dict[str, Any], tol: float) -> str | None:
    perm = np.asarray(params["permutation"], dtype=np.int64)
    got = run_policy_rule(rule, inst.replace(inst.rewards[perm], inst.weights[perm], inst.samples[:, perm])).normalized
    return _mismatch(got, base.normalized[perm], tol, f"agents permuted by {perm.tolist()}")


def _policy_affine(rule: str, inst: PolicyInstance, base: Outcome, params: dict[str, Any], tol: float) -> str | None:
    j, a, b = int(params["agent"]) % inst.rewards.shape[0], float(params["scale"]), float(params["shift"])
    rewards, samples = inst.rewards.copy(), inst.samples.copy()
    rewards[j] = a * rewards[j] + b
    samples[:, j] = a * samples[:, j] + b
    got = run_policy_rule(rule, inst.replace(rewards, inst.weights, samples)).normalized
    return _mismatch(got, base.normalized, tol, f"agent {j}'s reward r -> {a:g} r + {b:g}")


def _policy_pvc(rule: str, inst: PolicyInstance, base: Outcome, params: dict[str, Any], tol: float) -> str | None:
    if base.occupancy is None:
        raise Skip("the lottery has no occupancies (non-tabular support)")
    n, N = inst.rewards.shape[0], inst.samples.shape[0]
    eps = pvc_epsilon(base.occupancy, ReturnSamples(inst.samples), inst.problem())
    return None if eps <= n / N + 1e-12 else f"in the eps-PVC only for eps = {eps:.4g} > n/N = {n / N:.4g}"


def _policy_population(
    rule: str, inst: PolicyInstance, base: Outcome, params: dict[str, Any], tol: float
) -> str | None:
    doubled = inst.replace(
        np.concatenate([inst.rewards, inst.rewards]),
        np.concatenate([inst.weights, inst.weights]),
        np.concatenate([inst.samples, inst.samples], axis=1),
    )
    got = run_policy_rule(rule, doubled).normalized
    return _mismatch(got, np.concatenate([base.normalized, base.normalized]), tol, "the population doubled")


PolicyCheck = Callable[[str, PolicyInstance, Outcome, dict[str, Any], float], "str | None"]
POLICY_CHECKS: dict[str, PolicyCheck] = {
    "pareto": _policy_pareto,
    "majority": _policy_majority,
    "monotonicity": _policy_monotonicity,
    "anonymity": _policy_anonymity,
    "affine": _policy_affine,
    "pvc": _policy_pvc,
    "population": _policy_population,
}


def _policy_params(axiom: str, inst: PolicyInstance, rng: np.random.Generator) -> dict[str, Any]:
    n = inst.rewards.shape[0]
    if axiom == "majority":
        return {
            "scales": np.round(rng.uniform(0.2, 5.0, size=n), 3).tolist(),
            "shifts": np.round(rng.normal(size=n), 3).tolist(),
        }
    if axiom == "monotonicity":
        return {"agent": int(rng.integers(n))}
    if axiom == "anonymity":
        return {"permutation": rng.permutation(n).tolist() if n > 2 else [1, 0]}
    if axiom == "affine":
        return {
            "agent": int(rng.integers(n)),
            "scale": float(rng.choice([0.01, 0.1, 10.0, 100.0])),
            "shift": round(float(rng.normal() * 10), 3),
        }
    return {}


# --------------------------------------------------------------------------- rank axioms
def _positions(ranking: Sequence[int] | NDArray[np.int64]) -> dict[int, int]:
    return {int(c): i for i, c in enumerate(ranking)}


def _rank_pareto(rule: str, inst: RankInstance, out: rank.RankResult, params: dict[str, Any]) -> str | None:
    pos = _positions(out.ranking)
    broken = [(a, b) for a, b in rank.unanimous_pairs(inst.profile()) if pos[a] > pos[b]]
    return (
        None
        if not broken
        else f"every voter ranks {broken[0][0]} above {broken[0][1]}; the output {out.ranking.tolist()} does not"
    )


def _rank_pmc(rule: str, inst: RankInstance, out: rank.RankResult, params: dict[str, Any]) -> str | None:
    W = inst.profile().majority()
    m = W.shape[0]
    wins = (W > W.T).sum(axis=1)
    if sorted(wins.tolist()) != list(range(m)):
        raise NotApplicable
    pmc = sorted(range(m), key=lambda c: -wins[c])
    if not rank.is_feasible(inst.features, pmc):
        raise NotApplicable
    return (
        None if out.ranking.tolist() == pmc else f"the feasible PMC ranking is {pmc}; the output {out.ranking.tolist()}"
    )


def _rank_majority(rule: str, inst: RankInstance, out: rank.RankResult, params: dict[str, Any]) -> str | None:
    weights = inst.weights.copy()
    weights[0] = weights[1:].sum() + 1.0  # voter 0 alone is a strict majority
    got = _run_rank(rule, RankInstance(inst.features, inst.rankings, weights))
    top = int(inst.rankings[0, 0])
    return (
        None
        if got.top == top
        else f"candidate {top} is first for a majority (voter 0, weight {weights[0]:g}); output first {got.top}"
    )


def _rank_monotonicity(rule: str, inst: RankInstance, out: rank.RankResult, params: dict[str, Any]) -> str | None:
    a = out.top
    n = inst.rankings.shape[0]
    for i in np.roll(np.arange(n), -int(params.get("voter", 0))):
        row = inst.rankings[i].tolist()
        p = row.index(a)
        if p == 0:
            continue
        row[p - 1], row[p] = row[p], row[p - 1]
        if not rank.is_feasible(inst.features, row):
            continue
        rankings = inst.rankings.copy()
        rankings[i] = row
        got = _run_rank(rule, RankInstance(inst.features, rankings, inst.weights))
        if got.top == a:
            return None
        return f"winner {a} lifted one place by voter {i} ({row}); output first {got.top}"
    raise NotApplicable


def _rank_anonymity(rule: str, inst: RankInstance, out: rank.RankResult, params: dict[str, Any]) -> str | None:
    got = _run_rank(rule, RankInstance(inst.features, inst.rankings[::-1].copy(), inst.weights[::-1].copy()))
    return (
        None
        if np.array_equal(got.ranking, out.ranking)
        else f"voters reversed: {got.ranking.tolist()} instead of {out.ranking.tolist()}"
    )


def _rank_population(rule: str, inst: RankInstance, out: rank.RankResult, params: dict[str, Any]) -> str | None:
    n = inst.rankings.shape[0]
    half = n // 2
    parts = [RankInstance(inst.features, inst.rankings[s], inst.weights[s]) for s in (slice(0, half), slice(half, n))]
    if half >= 1 and all(np.array_equal(_run_rank(rule, part).ranking, out.ranking) for part in parts):
        what = "both halves of the voters choose the output"
    else:
        inst = RankInstance(inst.features, np.concatenate([inst.rankings] * 2), np.concatenate([inst.weights] * 2))
        what = "the profile doubled"
    got = _run_rank(rule, inst)
    return (
        None
        if np.array_equal(got.ranking, out.ranking)
        else f"{what}: the union gives {got.ranking.tolist()} instead of {out.ranking.tolist()}"
    )


RankCheck = Callable[[str, RankInstance, rank.RankResult, dict[str, Any]], "str | None"]
RANK_CHECKS: dict[str, RankCheck] = {
    "pareto": _rank_pareto,
    "pmc": _rank_pmc,
    "majority": _rank_majority,
    "monotonicity": _rank_monotonicity,
    "anonymity": _rank_anonymity,
    "population": _rank_population,
}


def _run_rank(rule: str, inst: RankInstance) -> rank.RankResult:
    return rank.get_rank_rule(rule)(inst.profile())


# --------------------------------------------------------------------------- the audit
@dataclass
class Cell:
    """One rule x axiom entry of the audit."""

    rule: str
    kind: str  # "policy" or "rank"
    axiom: str
    status: str  # "holds", "fails", "n/a", "skipped"
    tried: int = 0
    detail: str = ""
    counterexample: str | None = None  # file name, beside the table
    theorem: str = ""  # why the axiom is expected to hold (or fail), if known

    @property
    def bug(self) -> bool:
        """A counterexample where a theorem says the axiom holds."""
        return self.status == "fails" and (self.rule, self.axiom) in THEOREMS

    def text(self) -> str:
        if self.status == "holds":
            return f"holds ({self.tried})"
        if self.status == "fails":
            return ("**BUG** " if self.bug else "") + f"fails ({self.counterexample or 'see detail'})"
        return self.status


@dataclass
class AuditReport:
    """The audit's cells, with their Markdown / CSV tables; counterexamples in ``folder``."""

    cells: list[Cell] = field(default_factory=list)
    folder: Path | None = None
    seconds: float = 0.0

    def cell(self, rule: str, axiom: str) -> Cell:
        for c in self.cells:
            if c.rule == rule and c.axiom == axiom:
                return c
        raise KeyError((rule, axiom))

    @property
    def bugs(self) -> list[Cell]:
        return [c for c in self.cells if c.bug]

    def markdown(self) -> str:
        rules = list(dict.fromkeys(c.rule for c in self.cells))
        lines = ["| rule | " + " | ".join(AXIOMS) + " |", "|---" * (len(AXIOMS) + 1) + "|"]
        for rule in rules:
            row = []
            for axiom in AXIOMS:
                try:
                    row.append(self.cell(rule, axiom).text())
                except KeyError:
                    row.append("n/a")
            lines.append(f"| {rule} | " + " | ".join(row) + " |")
        notes = [
            f"* {c.rule} / {c.axiom}: {c.detail}" for c in self.cells if c.status in ("fails", "skipped") or c.detail
        ]
        if notes:
            lines += ["", *notes]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["rule", "kind", "axiom", "status", "tried", "counterexample", "theorem", "bug", "detail"])
        for c in self.cells:
            writer.writerow(
                [c.rule, c.kind, c.axiom, c.status, c.tried, c.counterexample or "", c.theorem, c.bug, c.detail]
            )
        return buffer.getvalue()


def audit(
    rules: Iterable[str] | None = None,
    *,
    policy_instances_count: int = 3,
    rank_instances_count: int = 40,
    rank_screen: int = 200,
    seed: int = 0,
    folder: StrPath | None = None,
    tol: float = 1e-4,
    axioms: Iterable[str] | None = None,
) -> AuditReport:
    """Check every axiom for every rule; write ``axioms.md``, ``axioms.csv`` and one JSON per
    counterexample into ``folder`` (if given).

    ``rules``: names among the registry's rules and :data:`~policyagg.solvers.rank.RANK_RULES`
    (default: all, read at call time). Policy rules: every axiom on ``policy_instances_count``
    random MDPs, smallest first. Rank rules: every axiom on ``rank_instances_count`` profiles,
    and Pareto optimality and PMC (read off the output alone, so cheap) on ``rank_screen`` more.
    Each (rule, axiom) stops at its first counterexample (rank ones are then shrunk: candidates
    and voters dropped while the violation persists). ``tol`` bounds differences of normalised
    returns.
    """
    started = time.perf_counter()
    known = [*RULE_SPECS, *rank.RANK_RULES]
    chosen = list(known if rules is None else rules)
    for name in chosen:
        if name not in known:
            raise InvalidProblemError(f"unknown rule {name!r}; choose among: {', '.join(known)}")
    wanted = tuple(AXIOMS if axioms is None else axioms)
    for axiom in wanted:
        if axiom not in AXIOMS:
            raise InvalidProblemError(f"unknown axiom {axiom!r}; choose among: {', '.join(AXIOMS)}")
    out = Path(folder) if folder is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    report = AuditReport(folder=out)
    rng = np.random.default_rng(seed)
    policy_rules = [r for r in chosen if r in RULE_SPECS]
    rank_rules = [r for r in chosen if r in rank.RANK_RULES and r not in RULE_SPECS]
    p_instances = policy_instances(policy_instances_count, rng) if policy_rules else []
    r_instances = rank_instances(rank_instances_count, rng) + rank_instances(rank_screen, rng) if rank_rules else []
    for rule in policy_rules:
        report.cells += _audit_policy_rule(rule, p_instances, wanted, seed, tol, out)
    for rule in rank_rules:
        report.cells += _audit_rank_rule(rule, r_instances, rank_instances_count, wanted, out)
    report.seconds = time.perf_counter() - started
    if out is not None:
        (out / "axioms.md").write_text(report.markdown())
        (out / "axioms.csv").write_text(report.csv())
    return report


def _new_cells(rule: str, kind: str, axioms: Sequence[str], applicable: Sequence[str]) -> dict[str, Cell]:
    cells = {}
    for axiom in axioms:
        theorem = THEOREMS.get((rule, axiom)) or KNOWN_FAILURES.get((rule, axiom), "")
        status = "holds" if axiom in applicable else "n/a"
        cells[axiom] = Cell(rule, kind, axiom, status, theorem=theorem)
    return cells


def _audit_policy_rule(
    rule: str, instances: Sequence[PolicyInstance], axioms: Sequence[str], seed: int, tol: float, out: Path | None
) -> list[Cell]:
    cells = _new_cells(rule, "policy", axioms, POLICY_AXIOMS)
    open_axioms = [a for a in axioms if a in POLICY_AXIOMS]
    errors: dict[str, str] = {}
    for index, inst in enumerate(instances):
        rng = np.random.default_rng([seed, index])
        try:
            base = run_policy_rule(rule, inst)
        except Skip as exc:
            errors.setdefault("base", str(exc))
            continue
        for axiom in list(open_axioms):
            params = _policy_params(axiom, inst, rng)
            cell = cells[axiom]
            try:
                violation = POLICY_CHECKS[axiom](rule, inst, base, params, tol)
            except NotApplicable:
                continue
            except Skip as exc:
                errors.setdefault(axiom, str(exc))
                continue
            cell.tried += 1
            if violation is not None:
                cell.status, cell.detail = "fails", violation
                cell.counterexample = _save(out, "policy", rule, axiom, inst.to_json(), params, tol, violation)
                open_axioms.remove(axiom)
    return _close(cells, errors)


def _audit_rank_rule(
    rule: str, instances: Sequence[RankInstance], full: int, axioms: Sequence[str], out: Path | None
) -> list[Cell]:
    """Every axiom on the first ``full`` instances; the cheap ones (:data:`SCREENED`, read off
    the rule's output alone) on all. A counterexample is shrunk before it is saved."""
    cells = _new_cells(rule, "rank", axioms, RANK_AXIOMS)
    open_axioms = [a for a in axioms if a in RANK_AXIOMS]
    errors: dict[str, str] = {}
    for index, inst in enumerate(instances):
        todo = [a for a in open_axioms if index < full or a in SCREENED]
        if not todo:
            break
        try:
            base = _run_rank(rule, inst)
        except PolicyAggError as exc:
            errors.setdefault("base", f"{type(exc).__name__}: {exc}")
            continue
        params = {"voter": index}
        for axiom in todo:
            try:
                violation = RANK_CHECKS[axiom](rule, inst, base, params)
            except NotApplicable:
                continue
            cells[axiom].tried += 1
            if violation is not None:
                small, violation = shrink_rank(rule, axiom, inst, params, violation)
                cell = cells[axiom]
                cell.status, cell.detail = "fails", violation
                cell.counterexample = _save(out, "rank", rule, axiom, small.to_json(), params, 0.0, violation)
                open_axioms.remove(axiom)
    return _close(cells, errors)


def _rank_violation(rule: str, axiom: str, inst: RankInstance, params: dict[str, Any]) -> str | None:
    try:
        return RANK_CHECKS[axiom](rule, inst, _run_rank(rule, inst), params)
    except (NotApplicable, PolicyAggError):
        return None


def shrink_rank(
    rule: str, axiom: str, inst: RankInstance, params: dict[str, Any], violation: str
) -> tuple[RankInstance, str]:
    """A smaller instance that still violates the axiom: drop candidates and voters one at a
    time while the violation persists (voters stay linear: dropping candidates keeps their
    rankings feasible)."""
    improved = True
    while improved:
        improved = False
        m, n = inst.size
        smaller = [_without_candidate(inst, c) for c in range(m)] if m > 2 else []
        smaller += [_without_voter(inst, i) for i in range(n)] if n > 1 else []
        for candidate in smaller:
            if candidate is None:
                continue
            found = _rank_violation(rule, axiom, candidate, params)
            if found is not None:
                inst, violation, improved = candidate, found, True
                break
    return inst, violation


def _without_candidate(inst: RankInstance, c: int) -> RankInstance | None:
    V = np.delete(inst.features, c, axis=0)
    if len({tuple(v) for v in V}) < V.shape[0]:
        return None
    rankings = np.array([[x - (x > c) for x in row if x != c] for row in inst.rankings], dtype=np.int64)
    return RankInstance(V, rankings, inst.weights)


def _without_voter(inst: RankInstance, i: int) -> RankInstance:
    return RankInstance(inst.features, np.delete(inst.rankings, i, axis=0), np.delete(inst.weights, i))


def _close(cells: dict[str, Cell], errors: dict[str, str]) -> list[Cell]:
    """Cells never tried become ``skipped`` with the first error seen (or "premise never met")."""
    for axiom, cell in cells.items():
        if cell.status == "holds" and cell.tried == 0:
            cell.status = "skipped"
            cell.detail = errors.get(axiom) or errors.get("base") or "the axiom's premise held on no instance tried"
        elif cell.status == "holds" and (axiom in errors or "base" in errors):
            cell.detail = "some instances could not be run: " + (errors.get(axiom) or errors["base"])
    return list(cells.values())


def _save(
    out: Path | None,
    kind: str,
    rule: str,
    axiom: str,
    instance: dict[str, Any],
    params: dict[str, Any],
    tol: float,
    violation: str,
) -> str | None:
    if out is None:
        return None
    name = f"{rule}-{axiom}.json"
    atomic_write_json(
        out / name,
        {
            "format": FORMAT,
            "version": 1,
            "kind": kind,
            "rule": rule,
            "axiom": axiom,
            "tol": tol,
            "params": params,
            "violation": violation,
            "instance": instance,
        },
    )
    return name


# --------------------------------------------------------------------------- re-verification
def load_counterexample(path: StrPath) -> dict[str, Any]:
    """A saved counterexample (JSON, no pickle), validated; :class:`CorruptFileError` if not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptFileError(f"{path}: cannot read an axiom counterexample ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("kind") not in ("policy", "rank"):
        raise CorruptFileError(f"{path}: not a policyagg axiom counterexample (written by `policyagg axioms`)")
    return data


def verify_counterexample(path: StrPath) -> str | None:
    """Load a counterexample, rebuild its instance and re-run the axiom's check: the violation
    (a message) if it reproduces, else ``None``. The rule must be registered."""
    data = load_counterexample(path)
    rule, axiom, params, raw = data["rule"], data["axiom"], data["params"], data["instance"]
    try:
        if data["kind"] == "policy":
            inst = PolicyInstance(
                np.asarray(raw["P"], float),
                np.asarray(raw["rho"], float),
                float(raw["gamma"]),
                np.asarray(raw["rewards"], float),
                np.asarray(raw["weights"], float),
                np.asarray(raw["samples"], float),
                int(raw.get("sample_seed", 0)),
            )
            if rule not in RULE_SPECS:
                raise InvalidProblemError(f"rule {rule!r} is not registered; import the module that defines it")
            return POLICY_CHECKS[axiom](rule, inst, run_policy_rule(rule, inst), params, float(data["tol"]))
        rinst = RankInstance(
            np.asarray(raw["features"], float), np.asarray(raw["rankings"], np.int64), np.asarray(raw["weights"], float)
        )
        return RANK_CHECKS[axiom](rule, rinst, _run_rank(rule, rinst), params)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, PolicyAggError):
            raise
        raise CorruptFileError(f"{path}: malformed counterexample ({exc})") from None


# --------------------------------------------------------------------------- command line
def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def run_command(args: Any) -> None:
    """``policyagg axioms``: run the audit, print the Markdown table, write the files."""
    report = audit(
        _names(args.rules) if args.rules else None,
        policy_instances_count=args.instances,
        rank_instances_count=args.rank_instances,
        rank_screen=args.screen,
        seed=args.seed,
        folder=args.out,
        tol=args.tol,
        axioms=_names(args.axioms) if args.axioms else None,
    )
    print(report.markdown(), end="")
    print(
        f"\n{len(report.cells)} cells in {report.seconds:.1f} s; written to {Path(args.out) / 'axioms.md'}, axioms.csv"
    )
    for cell in report.bugs:
        print(f"BUG: {cell.rule} / {cell.axiom} fails although {cell.theorem}; counterexample {cell.counterexample}")
