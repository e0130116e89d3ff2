"""Lotteries over policies: a finite support of policies with probabilities, drawn once per episode.

A lottery ``L = {(p_k, pi_k)}`` gives agent ``i`` the *ex-ante* return ``sum_k p_k J_i(pi_k)``
(the return of the mixed occupancy ``sum_k p_k d_k``, a point of ``O``) and, *ex post*, the
return ``J_i(pi_k)`` with probability ``p_k``. Both views are reported: a lottery can be fair
ex ante (equal expected shares) yet unfair in every outcome it draws.

Support policies are tabular (occupancies and policies of one MDP) or, for policies found by an
oracle without a model, described only by their estimated returns and standard errors.
Saved and loaded like :class:`~policyagg.result.Result` (JSON + NPZ, no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import CorruptFileError, InvalidProblemError
from policyagg.io import StrPath
from policyagg.metrics import gini
from policyagg.problem import Problem, ReturnRanges
from policyagg.result import Result, read_arrays, read_checked, write_checked
from policyagg.samples import ReturnSamples

KIND = "lottery"
#: The NPZ arrays of a saved lottery (``ranks``: ex ante; ``support_*``: one row per policy).
ARRAYS = (
    "probabilities",
    "support_returns",
    "support_normalized",
    "support_ranks",
    "support_errors",
    "support_occupancies",
    "support_policies",
    "ranks",
)
#: Probabilities must sum to one within this; they are then renormalised exactly.
PROBABILITY_TOL = 1e-9
#: Support policies whose occupancies differ by at most this (max-norm) are merged into one.
MERGE_TOL = 1e-12
#: The ex-post quantiles that :meth:`Lottery.table` shows.
TABLE_QUANTILES = (0.1, 0.5)


@dataclass(frozen=True, eq=False)
class Lottery:
    """A lottery over ``k`` policies: ``probabilities[k]`` and, per support policy, each agent's
    return ``support_returns[k, i] = J_i(pi_k)`` (per step, as in :class:`Result`) and its
    normalised value in ``[0, 1]`` (``support_normalized``).

    Ex ante: :attr:`returns` ``= p @ support_returns``, :attr:`normalized`, :attr:`gini`, and
    :attr:`occupancy` ``= p @ support_occupancies`` for tabular supports. Ex post:
    :meth:`ex_post` (per-agent mean, minimum and quantiles over the support) and
    :attr:`ex_post_gini` ``= sum_k p_k gini(normalized_k)``. ``ranks`` are the ex-ante ranks
    ``F_i(J_i(L))`` under the samples, ``support_ranks`` each policy's (``None`` without samples).
    ``support_errors`` are standard errors when returns were estimated by rollouts (else ``None``).
    ``status`` is ``"optimal"`` or the worst status of the solves that built it (``"gap"``, ...).
    """

    rule: str
    probabilities: NDArray[np.float64]  # (k,)
    support_returns: NDArray[np.float64]  # (k, n)
    support_normalized: NDArray[np.float64]  # (k, n)
    names: tuple[str, ...]
    support_occupancies: NDArray[np.float64] | None = None  # (k, S, A)
    support_policies: NDArray[np.float64] | None = None  # (k, S, A)
    support_ranks: NDArray[np.float64] | None = None  # (k, n)
    support_errors: NDArray[np.float64] | None = None  # (k, n)
    ranks: NDArray[np.float64] | None = None  # (n,) ex ante
    options: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    status: str = "optimal"

    def __post_init__(self) -> None:
        _check_fit(self, "a lottery")

    # ------------------------------------------------------------------ ex ante
    @property
    def size(self) -> int:
        """The number of support policies."""
        return int(self.probabilities.size)

    @property
    def returns(self) -> NDArray[np.float64]:
        """Ex-ante returns ``sum_k p_k J_i(pi_k)``, shape (n,)."""
        return np.asarray(self.probabilities @ self.support_returns, dtype=float)

    @property
    def normalized(self) -> NDArray[np.float64]:
        """Ex-ante normalised returns (normalisation is affine, so this is ``p @ support_normalized``)."""
        return np.asarray(self.probabilities @ self.support_normalized, dtype=float)

    @property
    def gini(self) -> float:
        """Ex-ante Gini index: of the expected normalised returns."""
        return gini(self.normalized)

    @property
    def ex_post_gini(self) -> float:
        """Ex-post Gini index: the expected Gini index of the outcome drawn, ``sum_k p_k gini(u_k)``."""
        return float(sum(p * gini(u) for p, u in zip(self.probabilities, self.support_normalized, strict=True)))

    @property
    def min_rank(self) -> float | None:
        """The ex-ante quantile reached, ``min_i rank_i`` (``None`` without samples)."""
        return None if self.ranks is None else float(self.ranks.min())

    @property
    def occupancy(self) -> NDArray[np.float64] | None:
        """The mixed occupancy ``sum_k p_k d_k`` (a point of ``O``), or ``None`` for a non-tabular support."""
        if self.support_occupancies is None:
            return None
        return np.asarray(np.tensordot(self.probabilities, self.support_occupancies, axes=1), dtype=float)

    # ------------------------------------------------------------------ ex post
    def quantile(self, q: float, *, normalized: bool = True) -> NDArray[np.float64]:
        """Each agent's ex-post ``q``-quantile: the least value ``v`` with ``P(J_i <= v) >= q``, shape (n,)."""
        if not 0.0 <= q <= 1.0:
            raise InvalidProblemError(f"`q` must be in [0, 1]; got {q}")
        values = self.support_normalized if normalized else self.support_returns
        order = np.argsort(values, axis=0, kind="stable")
        out = np.empty(values.shape[1])
        for i in range(values.shape[1]):
            cumulative = np.cumsum(self.probabilities[order[:, i]])
            at = min(int(np.searchsorted(cumulative, q - PROBABILITY_TOL, side="left")), values.shape[0] - 1)
            out[i] = values[order[at, i], i]
        return out

    def ex_post(self, quantiles: tuple[float, ...] = (0.1, 0.5, 0.9), *, normalized: bool = True) -> dict[str, Any]:
        """Each agent's outcome distribution over the support: ``mean``, ``min`` (over policies
        drawn with positive probability), and the ``quantiles``; lists of length n."""
        values = self.support_normalized if normalized else self.support_returns
        drawn = self.probabilities > 0
        summary: dict[str, Any] = {
            "mean": (self.probabilities @ values).tolist(),
            "min": values[drawn].min(axis=0).tolist(),
        }
        for q in quantiles:
            summary[f"q{q:g}"] = self.quantile(q, normalized=normalized).tolist()
        return summary

    def sample(self, rng: np.random.Generator, size: int | None = None) -> Any:
        """Draw support indices with the lottery's probabilities (one per episode)."""
        return rng.choice(self.size, size=size, p=self.probabilities)

    def table(self) -> str:
        """A plain-text table: ex-ante and ex-post summaries per agent, then the support."""
        head = f"rule: {self.rule}   lottery over {self.size} policies   ex-ante gini: {self.gini:.4f}"
        head += f"   ex-post gini: {self.ex_post_gini:.4f}"
        if self.ranks is not None:
            head += f"   min rank: {self.min_rank:.4f}"
        if self.status != "optimal":
            head += f"   status: {self.status}"
        lines = [head]
        ex_ante = {key: value for key, value in self.report.items() if key != "ex_post"}
        if ex_ante:
            lines.append("ex ante: " + "   ".join(f"{key}: {_fmt(value)}" for key, value in ex_ante.items()))
        ex_post = self.report.get("ex_post")
        if isinstance(ex_post, Mapping):  # per-agent lists are in the table below
            shown = {key: value for key, value in ex_post.items() if not isinstance(value, Mapping | list)}
            lines.append("ex post (expected over the draw): " + "   ".join(f"{k}: {_fmt(v)}" for k, v in shown.items()))
        quantiles = {q: self.quantile(q) for q in TABLE_QUANTILES}
        lines.append(
            f"{'agent':>12} {'return':>14} {'normalized':>11} {'min drawn':>10}"
            + "".join(f" {f'q{q:g} drawn':>10}" for q in TABLE_QUANTILES)
        )
        worst = self.support_normalized[self.probabilities > 0].min(axis=0)
        for i, name in enumerate(self.names):
            row = f"{name:>12} {self.returns[i]:>14.6g} {self.normalized[i]:>11.4f} {worst[i]:>10.4f}"
            lines.append(row + "".join(f" {quantiles[q][i]:>10.4f}" for q in TABLE_QUANTILES))
        lines.append(f"{'policy':>12} {'probability':>14} {'gini':>11} {'min norm.':>10}")
        for k, p in enumerate(self.probabilities):
            u = self.support_normalized[k]
            lines.append(f"{k:>12} {p:>14.6g} {gini(u):>11.4f} {u.min():>10.4f}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ storage
    def save(self, path: StrPath) -> Path:
        """Write ``<path>.npz`` then ``<path>.json`` (with the npz's SHA-256), both atomically."""
        path = Path(path)
        arrays = {k: getattr(self, k) for k in ARRAYS if getattr(self, k) is not None}
        meta = {
            "kind": KIND,
            "rule": self.rule,
            "names": list(self.names),
            "gini": self.gini,
            "ex_post_gini": self.ex_post_gini,
            "options": self.options,
            "diagnostics": self.diagnostics,
            "report": self.report,
            "status": self.status,
        }
        return write_checked(path, arrays, meta)

    @classmethod
    def load(cls, path: StrPath) -> Lottery:
        """Read a lottery written by :meth:`save`; anything damaged raises :class:`CorruptFileError`."""
        json_path, meta, payload = read_checked(path, "lottery", _META_KEYS)
        if meta.get("kind") != KIND:
            raise CorruptFileError(f"{json_path}: not a lottery (kind {meta.get('kind')!r}); load it with Result.load")
        arrays = read_arrays(json_path.with_suffix(".npz"), payload, ARRAYS)
        try:
            return cls(
                rule=str(meta["rule"]),
                names=tuple(str(name) for name in meta["names"]),
                options=dict(meta["options"]),
                diagnostics=dict(meta["diagnostics"]),
                report=dict(meta["report"]),
                status=str(meta["status"]),
                **arrays,
            )
        except (TypeError, ValueError, KeyError, InvalidProblemError) as exc:
            raise CorruptFileError(f"{json_path}: not a valid lottery ({exc}); save it again") from None


# ---------------------------------------------------------------------- building lotteries
def build_lottery(
    problem: Problem,
    occupancies: ArrayLike,
    probabilities: ArrayLike,
    *,
    rule: str,
    samples: ReturnSamples | None = None,
    policies: ArrayLike | None = None,
    options: Mapping[str, Any] | None = None,
    diagnostics: Mapping[str, Any] | None = None,
    report: Mapping[str, Any] | None = None,
    status: str = "optimal",
) -> Lottery:
    """A lottery over tabular policies of ``problem.mdp`` from their occupancies ``(k, S*A)``.

    Entries with probability 0 are dropped and identical occupancies merged (their
    probabilities added). ``policies`` default to ``mdp.policy_from_occupancy(d_k)``.
    """
    mdp = problem.mdp
    p = check_probabilities(probabilities)
    d = np.asarray(occupancies, dtype=float).reshape(p.size, mdp.n_states, mdp.n_actions)
    if not np.all(np.isfinite(d)):
        raise InvalidProblemError("`occupancies` must be finite")
    d = np.clip(d, 0.0, None)
    d /= d.sum(axis=(1, 2), keepdims=True)
    pi = None if policies is None else np.asarray(policies, dtype=float).reshape(d.shape)
    keep, p = _merge(d.reshape(p.size, -1), p)
    d = d[keep]
    pi = np.stack([mdp.policy_from_occupancy(dk) for dk in d]) if pi is None else pi[keep]
    returns = np.stack([problem.returns(dk) for dk in d])
    ranks = support_ranks = None
    if samples is not None:
        samples.check_agents(problem.n_agents)
        support_ranks = samples.cdf(returns)
        ranks = samples.cdf(p @ returns)
    return Lottery(
        rule=rule,
        probabilities=p,
        support_returns=returns,
        support_normalized=np.clip(problem.require_ranges().normalize(returns), 0.0, 1.0),
        names=problem.names,
        support_occupancies=d,
        support_policies=pi,
        support_ranks=support_ranks,
        ranks=ranks,
        options=dict(options or {}),
        diagnostics=dict(diagnostics or {}),
        report=dict(report or {}),
        status=status,
    )


def estimated_lottery(
    returns: ArrayLike,
    probabilities: ArrayLike,
    ranges: ReturnRanges,
    *,
    rule: str,
    names: tuple[str, ...],
    standard_errors: ArrayLike | None = None,
    samples: ReturnSamples | None = None,
    options: Mapping[str, Any] | None = None,
    diagnostics: Mapping[str, Any] | None = None,
    report: Mapping[str, Any] | None = None,
    status: str = "optimal",
) -> Lottery:
    """A lottery over policies known only by their (estimated) returns ``(k, n)``, e.g. trained
    by an RL oracle; ``standard_errors`` ``(k, n)`` say how well each return is known. The
    policies themselves live elsewhere (the oracle's checkpoints, named in ``diagnostics``)."""
    p = check_probabilities(probabilities)
    J = np.asarray(returns, dtype=float)
    if J.shape != (p.size, len(names)) or not np.all(np.isfinite(J)):
        raise InvalidProblemError(f"`returns` must be finite with shape ({p.size}, {len(names)}); got {J.shape}")
    errors = None if standard_errors is None else np.asarray(standard_errors, dtype=float)
    return Lottery(
        rule=rule,
        probabilities=p,
        support_returns=J,
        support_normalized=np.clip(ranges.normalize(J), 0.0, 1.0),
        names=tuple(names),
        support_errors=errors,
        support_ranks=None if samples is None else samples.cdf(J),
        ranks=None if samples is None else samples.cdf(p @ J),
        options=dict(options or {}),
        diagnostics=dict(diagnostics or {}),
        report=dict(report or {}),
        status=status,
    )


def single_policy(result: Result) -> Lottery:
    """The lottery that always draws ``result``'s policy (its ex-post view equals its ex-ante one)."""
    return Lottery(
        rule=result.rule,
        probabilities=np.ones(1),
        support_returns=result.returns[None, :],
        support_normalized=result.normalized[None, :],
        names=result.names,
        support_occupancies=result.occupancy[None],
        support_policies=result.policy[None],
        support_ranks=None if result.ranks is None else result.ranks[None, :],
        ranks=result.ranks,
        options=dict(result.options),
        diagnostics=dict(result.diagnostics),
        report=dict(result.report),
        status=result.status,
    )


def check_probabilities(probabilities: ArrayLike) -> NDArray[np.float64]:
    """Validate a probability vector (finite, ``>= 0``, sums to 1 within :data:`PROBABILITY_TOL`)
    and return it renormalised to sum exactly to 1."""
    p = np.atleast_1d(np.asarray(probabilities, dtype=float))
    if p.ndim != 1 or p.size == 0:
        raise InvalidProblemError(f"`probabilities` must be a non-empty vector; got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise InvalidProblemError("`probabilities` must be finite and non-negative")
    if abs(p.sum() - 1.0) > PROBABILITY_TOL * p.size:
        raise InvalidProblemError(f"`probabilities` must sum to 1; they sum to {p.sum():.12g}")
    return np.asarray(p / p.sum(), dtype=float)


def load_outcome(path: StrPath) -> Result | Lottery:
    """Load what a rule saved at ``path``: a :class:`Lottery` or a :class:`Result`."""
    json_path = Path(path).with_suffix(".json")
    try:
        kind = json.loads(json_path.read_text(encoding="utf-8")).get("kind")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        kind = None  # Result.load says what is wrong with the file
    return Lottery.load(path) if kind == KIND else Result.load(path)


# ---------------------------------------------------------------------- internals
def _merge(d: NDArray[np.float64], p: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Indices of the distinct support points with positive probability, and their summed probabilities."""
    keep: list[int] = []
    mass: list[float] = []
    for k in np.flatnonzero(p > 0):
        for j, kept in enumerate(keep):
            if np.max(np.abs(d[k] - d[kept])) <= MERGE_TOL:
                mass[j] += p[k]
                break
        else:
            keep.append(int(k))
            mass.append(float(p[k]))
    total = np.asarray(mass)
    return np.asarray(keep, dtype=np.intp), total / total.sum()


def _check_fit(lottery: Lottery, what: str) -> None:
    """Shapes, finiteness and probabilities of a lottery's arrays (raises InvalidProblemError)."""
    p = lottery.probabilities
    check_probabilities(p)
    k, n = p.size, len(lottery.names)
    problems = []
    for name in ("support_returns", "support_normalized", "support_ranks", "support_errors"):
        array = getattr(lottery, name)
        if array is not None and (array.shape != (k, n) or not np.all(np.isfinite(array))):
            problems.append(f"{name} must be finite with shape ({k}, {n}); got {array.shape}")
    shapes = [
        getattr(lottery, a).shape
        for a in ("support_occupancies", "support_policies")
        if getattr(lottery, a) is not None
    ]
    if any(len(s) != 3 or s[0] != k for s in shapes) or len(set(shapes)) > 1:
        problems.append(f"support occupancies and policies must both be ({k}, S, A); got {shapes}")
    if lottery.ranks is not None and lottery.ranks.shape != (n,):
        problems.append(f"ranks must have one entry per agent ({n})")
    if problems:
        raise InvalidProblemError(f"{what} whose arrays do not fit: {'; '.join(problems)}")
    for array in (p, lottery.support_returns, lottery.support_normalized):
        array.flags.writeable = False


_META_KEYS = ("kind", "rule", "names", "options", "diagnostics", "report", "status", "arrays", "arrays_sha256")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
