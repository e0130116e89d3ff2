"""Pairwise preference data and pairwise-calibrated ensembles of linear rewards.

**Data.** ``m`` items (trajectories or policies of one MDP) are described by feature vectors
``v_c`` (state-action counts: an occupancy, or a discounted trajectory count); each compared
pair ``(a, b)`` carries the share ``s_p`` of the population preferring ``a`` (or raw votes).
:func:`preference_data` validates, :func:`load_preferences` reads NPZ or CSV,
:func:`synthetic_population` draws data from known value clusters.

**Ensembles** (Halpern, Micha, Procaccia, Shapira 2025, *pairwise calibrated rewards*,
arXiv 2506.06298). Members ``theta_j`` with weights ``w_j`` (a distribution) are
``eps``-pairwise-calibrated when for every pair

.. math:: \\Bigl| \\sum_j w_j [\\theta_j^\\top (v_a - v_b) > 0] - s_p \\Bigr| \\le \\varepsilon .

:func:`calibrated_ensemble` minimises ``eps`` by column generation: an LP master over the
weights of the members found so far, and a pricing step that proposes a new linear member (a
heuristic first, then an exact MILP whose answer also gives a lower bound: the certificate).
:func:`bradley_terry_reward` is the usual single reward for comparison;
:func:`ensemble_problem` turns an ensemble into weighted agents of a :class:`Problem`.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from policyagg.errors import CorruptFileError, InvalidProblemError, SolverError, float_array
from policyagg.io import StrPath
from policyagg.mdp import TabularMDP
from policyagg.problem import Problem


# --------------------------------------------------------------------------- data
@dataclass(frozen=True, eq=False)
class PreferenceData:
    """``features`` (m, k); ``pairs`` (P, 2): item indices ``(a, b)``; ``share`` (P,): the
    fraction of the population preferring ``a`` to ``b``; ``votes`` (P,) the number of votes
    behind each share (``None`` if unknown). Build with :func:`preference_data`."""

    features: NDArray[np.float64]
    pairs: NDArray[np.int64]
    share: NDArray[np.float64]
    votes: NDArray[np.float64] | None = None

    @property
    def differences(self) -> NDArray[np.float64]:
        """``v_a - v_b`` per pair, shape (P, k)."""
        return np.asarray(self.features[self.pairs[:, 0]] - self.features[self.pairs[:, 1]], dtype=float)

    def save(self, path: StrPath) -> Path:
        """Write an ``.npz`` (arrays ``features``, ``pairs``, ``share`` and ``votes`` if known)."""
        path = Path(path).with_suffix(".npz")
        arrays = {"features": self.features, "pairs": self.pairs, "share": self.share}
        if self.votes is not None:
            arrays["votes"] = self.votes
        np.savez(path, **arrays)  # type: ignore[arg-type]
        return path


def preference_data(
    features: ArrayLike,
    pairs: ArrayLike,
    share: ArrayLike | None = None,
    *,
    votes_first: ArrayLike | None = None,
    votes_second: ArrayLike | None = None,
) -> PreferenceData:
    """Validated :class:`PreferenceData` from shares, or from raw votes (``votes_first[p]``
    voters preferred ``a``, ``votes_second[p]`` preferred ``b``)."""
    V = float_array("features", features)
    if V.ndim != 2 or V.shape[0] < 2 or V.shape[1] < 1 or not np.all(np.isfinite(V)):
        raise InvalidProblemError(f"`features` must be a finite (m, k) array with m >= 2 items; got shape {V.shape}")
    m = V.shape[0]
    E = np.asarray(pairs)
    if E.ndim != 2 or E.shape[1] != 2 or E.shape[0] == 0 or not np.issubdtype(E.dtype, np.integer):
        raise InvalidProblemError(f"`pairs` must be a non-empty integer array (P, 2) of item indices; got {E.shape}")
    bad = np.flatnonzero((E < 0).any(axis=1) | (m <= E).any(axis=1))
    if bad.size:
        raise InvalidProblemError(f"`pairs[{bad[0]}]` = {E[bad[0]].tolist()} names an item outside 0..{m - 1}")
    same = np.flatnonzero(E[:, 0] == E[:, 1])
    if same.size:
        raise InvalidProblemError(f"`pairs[{same[0]}]` compares item {E[same[0], 0]} with itself")
    equal = np.flatnonzero(np.all(V[E[:, 0]] == V[E[:, 1]], axis=1))
    if equal.size:
        raise InvalidProblemError(
            f"`pairs[{equal[0]}]` compares items {E[equal[0]].tolist()} with the same features; no linear reward "
            "separates them: drop the pair or add a feature"
        )
    votes = None
    if share is None:
        if votes_first is None or votes_second is None:
            raise InvalidProblemError("give `share`, or both `votes_first` and `votes_second`")
        first, second = float_array("votes_first", votes_first), float_array("votes_second", votes_second)
        if first.shape != (E.shape[0],) or second.shape != first.shape or np.any(first < 0) or np.any(second < 0):
            raise InvalidProblemError(f"`votes_first` and `votes_second` must be {E.shape[0]} counts >= 0")
        votes = first + second
        if np.any(votes == 0):
            raise InvalidProblemError(f"pair {int(np.flatnonzero(votes == 0)[0])} has no votes")
        s = first / votes
    else:
        s = float_array("share", share)
    if s.shape != (E.shape[0],) or not np.all(np.isfinite(s)) or np.any(s < 0) or np.any(s > 1):
        raise InvalidProblemError(f"`share` must be {E.shape[0]} numbers in [0, 1], one per pair")
    return PreferenceData(V, E.astype(np.int64), s, votes)


def load_preferences(path: StrPath, pairs_csv: StrPath | None = None) -> PreferenceData:
    """Read preference data: an ``.npz`` written by :meth:`PreferenceData.save`, or two CSV
    files: ``path`` the items (a header, then one row of features per item, in item order) and
    ``pairs_csv`` the comparisons (header ``first,second,share`` or
    ``first,second,votes_first,votes_second``)."""
    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {key: z[key] for key in z.files}
        except (OSError, ValueError) as exc:
            raise CorruptFileError(f"{path}: not a readable .npz ({exc})") from None
        if not {"features", "pairs", "share"} <= set(arrays):
            raise CorruptFileError(f"{path}: needs arrays `features`, `pairs` and `share`; has {sorted(arrays)}")
        data = preference_data(arrays["features"], arrays["pairs"], arrays["share"])
        return PreferenceData(data.features, data.pairs, data.share, arrays.get("votes"))
    if pairs_csv is None:
        raise InvalidProblemError("CSV preference data needs two files: the items and `pairs_csv`")
    items = _read_csv(path)
    rows = _read_csv(Path(pairs_csv))
    header = rows[0]
    body = rows[1:]
    try:
        features = [[float(x) for x in row] for row in items[1:]]
        pairs = np.array([[int(row[header.index("first")]), int(row[header.index("second")])] for row in body])
        if "share" in header:
            return preference_data(features, pairs, [float(row[header.index("share")]) for row in body])
        return preference_data(
            features,
            pairs,
            votes_first=[float(row[header.index("votes_first")]) for row in body],
            votes_second=[float(row[header.index("votes_second")]) for row in body],
        )
    except ValueError as exc:
        if isinstance(exc, InvalidProblemError):
            raise
        raise CorruptFileError(
            f"{pairs_csv}: columns must be first,second,share or first,second,votes_first,votes_second and every "
            f"value a number ({exc})"
        ) from None


def _read_csv(path: Path) -> list[list[str]]:
    try:
        with path.open(newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except OSError as exc:
        raise CorruptFileError(f"{path}: cannot read ({exc})") from None
    if len(rows) < 2:
        raise CorruptFileError(f"{path}: needs a header row and at least one data row")
    return rows


@dataclass(frozen=True, eq=False)
class Population:
    """A synthetic population: member rewards (N, k), their weights (N,) and cluster labels (N,)."""

    rewards: NDArray[np.float64]
    weights: NDArray[np.float64]
    clusters: NDArray[np.int64]


def population_share(
    features: ArrayLike, pairs: ArrayLike, rewards: ArrayLike, weights: ArrayLike
) -> NDArray[np.float64]:
    """``sum_j w_j [theta_j @ (v_a - v_b) > 0]`` per pair (``w`` normalised): what a population prefers."""
    V, E = np.asarray(features, float), np.asarray(pairs, np.int64)
    w = np.asarray(weights, float) / np.sum(weights)
    prefers = (V[E[:, 0]] - V[E[:, 1]]) @ np.asarray(rewards, float).T > 0  # (P, N)
    return np.asarray(prefers @ w, dtype=float)


def synthetic_population(
    features: ArrayLike,
    centers: ArrayLike,
    *,
    sizes: ArrayLike,
    noise: float = 0.0,
    pairs: ArrayLike | None = None,
    rng: np.random.Generator | int | None = None,
) -> tuple[PreferenceData, Population]:
    """Preference data from value clusters: ``sizes[c]`` members with reward ``centers[c] +
    noise * N(0, I)`` (scaled by the centre's norm); every pair (default: all ``m (m-1)/2``) gets
    the population's exact share. Returns the data and the ground-truth population."""
    gen = np.random.default_rng(rng)
    V = float_array("features", features)
    C = float_array("centers", centers)
    counts = np.asarray(sizes, dtype=np.int64)
    if C.ndim != 2 or C.shape[1] != V.shape[1] or counts.shape != (C.shape[0],) or np.any(counts < 1):
        raise InvalidProblemError("`centers` must be (c, k) with k features and `sizes` c positive counts")
    labels = np.repeat(np.arange(C.shape[0]), counts)
    scale = np.linalg.norm(C, axis=1)[labels, None]
    rewards = C[labels] + float(noise) * scale * gen.normal(size=(labels.size, C.shape[1]))
    weights = np.ones(labels.size)
    E = np.array([(a, b) for a in range(V.shape[0]) for b in range(a + 1, V.shape[0])]) if pairs is None else pairs
    data = preference_data(V, E, population_share(V, E, rewards, weights))
    return data, Population(rewards, weights, labels)


# --------------------------------------------------------------------------- ensembles
@dataclass(frozen=True, eq=False)
class Ensemble:
    """Members ``rewards`` (K, k) with ``weights`` (K,) summing to 1; ``error`` is the
    calibration error ``max_p |sum_j w_j y_jp - s_p|`` achieved, ``lower_bound`` a certified
    lower bound on the least error of any ensemble of linear members (``None`` when no exact
    pricing finished), ``kemeny`` each member's Kemeny score (expected pairwise disagreements
    with the population over the compared pairs), ``status`` ``"optimal"`` (no member can lower
    the error: ``error - lower_bound`` within tolerance), ``"gap"`` (rounds ran out; the bound
    then comes from one last exact pricing) or ``"time-limit"``."""

    rewards: NDArray[np.float64]
    weights: NDArray[np.float64]
    error: float
    mean_error: float
    lower_bound: float | None
    kemeny: NDArray[np.float64]
    status: str
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.weights.size)


def kemeny_scores(data: PreferenceData, prefers: NDArray[np.float64]) -> NDArray[np.float64]:
    """``sum_p y_p (1 - s_p) + (1 - y_p) s_p`` for each row ``y`` of ``prefers`` (K, P)."""
    y = np.atleast_2d(prefers)
    return np.asarray(y @ (1 - data.share) + (1 - y) @ data.share, dtype=float)


def calibrated_ensemble(
    data: PreferenceData,
    *,
    max_members: int = 50,
    outlier_factor: float | None = None,
    tolerance: float = 1e-6,
    time_limit: float = 30.0,
    rng: np.random.Generator | int | None = 0,
    heuristic_tries: int = 2000,
) -> Ensemble:
    """A pairwise-calibrated ensemble of linear rewards by column generation.

    Master LP over the members' weights (``y_jp = [theta_j @ (v_a - v_b) > 0]``):

    .. math:: \\min_{w \\in \\Delta, \\varepsilon} \\varepsilon \\quad \\text{s.t.} \\quad
              \\Bigl|\\sum_j w_j y_{jp} - s_p\\Bigr| \\le \\varepsilon \\ \\forall p.

    With duals ``alpha, beta >= 0`` of the two sides and ``mu`` of ``sum w = 1``, a member
    ``y`` improves the master iff ``sum_p (alpha_p - beta_p) y_p < mu``. Pricing: random
    directions first (cheap); when none improves, a MILP over ``theta in [-1, 1]^k`` and binary
    ``y`` (big-M from ``||v_a - v_b||_1``, margin ``delta``) finds the best member or proves
    there is none; its value ``z`` gives the lower bound ``eps_master - mu + z`` on the error of
    *every* ensemble (weak duality). ``outlier_factor`` ``beta``: members must have a Kemeny
    score at most ``beta`` times the best realisable one (a linear constraint on ``y``).
    ``max_members`` bounds the column-generation rounds; the support is at most ``P + 1``.
    """
    gen = np.random.default_rng(rng)
    started = time.perf_counter()
    D = data.differences
    P, k = D.shape
    margin = 1e-4 * float(np.max(np.abs(D)))
    kemeny_cap = None
    if outlier_factor is not None:
        if outlier_factor < 1:
            raise InvalidProblemError(f"`outlier_factor` must be >= 1; got {outlier_factor}")
        best, _, _ = _price_milp(D, 1 - 2 * data.share, margin, None, time_limit)  # K(y) = sum s + (1 - 2s) @ y
        best_kemeny = float(data.share.sum()) + (best if best is not None else 0.0)
        kemeny_cap = outlier_factor * best_kemeny + tolerance
    thetas: list[NDArray[np.float64]] = []
    columns: list[NDArray[np.float64]] = []
    for theta in _initial_members(data, gen):
        y0 = (D @ theta > 0).astype(float)
        tie_free = np.min(np.abs(D @ theta)) > 1e-9
        if tie_free and (kemeny_cap is None or kemeny_scores(data, y0)[0] <= kemeny_cap):
            thetas.append(theta)
            columns.append(y0)
    if not columns:  # the outlier cap left none: the least-Kemeny member is always allowed
        _, least, least_y = _price_milp(D, 1 - 2 * data.share, margin, None, time_limit)
        if least is None or least_y is None:
            raise SolverError("no member found for the ensemble (the Kemeny MILP failed)")
        thetas, columns = [least], [least_y]
    lower: float | None = None
    status = "gap"
    rounds = 0
    for rounds in range(1, max_members + 1):  # noqa: B007 (reported after the loop)
        eps, w, alpha, beta, mu = _master(np.array(columns), data.share)
        price = alpha - beta
        guess, guess_y = _price_heuristic(D, price, margin, gen, heuristic_tries, kemeny_cap, data)
        if guess is not None and guess_y is not None and price @ guess_y < mu - tolerance:
            thetas.append(guess)
            columns.append(guess_y)
            continue
        remaining = time_limit - (time.perf_counter() - started)
        if remaining <= 0:
            status = "time-limit"
            break
        cap_row = None if kemeny_cap is None else (1 - 2 * data.share, kemeny_cap - float(data.share.sum()))
        value, best_theta, best_y = _price_milp(D, price, margin, cap_row, remaining)
        if value is None or best_theta is None or best_y is None:
            status = "time-limit"
            break
        lower = max(lower or 0.0, eps - mu + value)
        if value >= mu - tolerance:
            status = "optimal"
            break
        thetas.append(best_theta)
        columns.append(best_y)
    eps, w, alpha, beta, mu = _master(np.array(columns), data.share)
    remaining = time_limit - (time.perf_counter() - started)
    if status == "gap" and remaining > 0:  # rounds ran out: one exact pricing for the bound
        cap_row = None if kemeny_cap is None else (1 - 2 * data.share, kemeny_cap - float(data.share.sum()))
        value, _, _ = _price_milp(D, alpha - beta, margin, cap_row, remaining)
        if value is not None:
            lower = max(lower or 0.0, eps - mu + value)
            if value >= mu - tolerance:
                status = "optimal"
    keep = w > 1e-9
    Y = np.array(columns)[keep]
    weights = w[keep] / w[keep].sum()
    fit = weights @ Y
    return Ensemble(
        rewards=np.array(thetas)[keep],
        weights=weights,
        error=float(np.max(np.abs(fit - data.share))),
        mean_error=float(np.mean(np.abs(fit - data.share))),
        lower_bound=lower,
        kemeny=kemeny_scores(data, Y),
        status=status,
        diagnostics={"rounds": rounds, "columns": len(columns), "seconds": time.perf_counter() - started},
    )


def _initial_members(data: PreferenceData, gen: np.random.Generator) -> list[NDArray[np.float64]]:
    """The Bradley-Terry reward and a few random directions."""
    k = data.features.shape[1]
    members: list[NDArray[np.float64]] = [bradley_terry_reward(data)]
    members += [np.asarray(gen.normal(size=k), dtype=float) for _ in range(3)]
    return [m / max(float(np.max(np.abs(m))), 1e-12) for m in members]


def _master(
    Y: NDArray[np.float64], share: NDArray[np.float64]
) -> tuple[float, NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], float]:
    """The master LP in (w, eps): returns eps, w and the duals alpha, beta >= 0 and mu."""
    K, P = Y.shape
    ones = np.ones((P, 1))
    A_ub = np.vstack([np.hstack([Y.T, -ones]), np.hstack([-Y.T, -ones])])
    b_ub = np.concatenate([share, -share])
    A_eq = np.append(np.ones(K), 0.0)[None]
    c = np.append(np.zeros(K), 1.0)
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0], bounds=(0, None), method="highs")
    if res.status != 0:
        raise SolverError(f"calibration master LP failed: {res.message}")
    marg = -np.asarray(res.ineqlin.marginals)
    return float(res.fun), np.asarray(res.x[:K]), marg[:P], marg[P:], float(res.eqlin.marginals[0])


def _price_heuristic(
    D: NDArray[np.float64],
    price: NDArray[np.float64],
    margin: float,
    gen: np.random.Generator,
    tries: int,
    kemeny_cap: float | None,
    data: PreferenceData,
) -> tuple[NDArray[np.float64] | None, NDArray[np.float64] | None]:
    """The best of ``tries`` random directions for ``min price @ y`` (directions that nearly tie
    a pair, ``|theta @ D_p| <= margin``, are left out so that ``y`` is what ``theta`` prefers)."""
    thetas = gen.normal(size=(tries, D.shape[1]))
    thetas /= np.max(np.abs(thetas), axis=1, keepdims=True)
    Z = thetas @ D.T
    Y = (Z > 0).astype(float)
    values = np.where(np.min(np.abs(Z), axis=1) > margin, Y @ price, np.inf)
    if kemeny_cap is not None:
        values = np.where(kemeny_scores(data, Y) <= kemeny_cap, values, np.inf)
    j = int(np.argmin(values))
    if not np.isfinite(values[j]):
        return None, None
    return thetas[j], Y[j]


def _price_milp(
    D: NDArray[np.float64],
    price: NDArray[np.float64],
    margin: float,
    cap: tuple[NDArray[np.float64], float] | None,
    time_limit: float,
) -> tuple[float | None, NDArray[np.float64] | None, NDArray[np.float64] | None]:
    """``min price @ y`` over ``y_p = [theta @ D_p >= margin]`` (else ``theta @ D_p <= -margin``),
    ``theta in [-1, 1]^k``; a MILP with big-M ``||D_p||_1 + margin``. ``cap = (c, b)`` adds
    ``c @ y <= b``. Returns (value, theta, y), or Nones if not solved to optimality."""
    P, k = D.shape
    M = np.abs(D).sum(axis=1) + margin
    # variables: theta (k, free in [-1, 1]), y (P, binary)
    # theta @ D_p - M_p y_p >= margin - M_p   (y_p = 1 -> theta @ D_p >= margin)
    # theta @ D_p - M_p y_p <= -margin        (y_p = 0 -> theta @ D_p <= -margin)
    A = np.hstack([D, -np.diag(M)])
    constraints = [LinearConstraint(A, margin - M, -margin * np.ones(P))]
    if cap is not None:
        constraints.append(LinearConstraint(np.append(np.zeros(k), cap[0])[None], -np.inf, cap[1]))
    res = milp(
        np.concatenate([np.zeros(k), price]),
        constraints=constraints,
        integrality=np.concatenate([np.zeros(k), np.ones(P)]),
        bounds=Bounds(np.concatenate([-np.ones(k), np.zeros(P)]), np.ones(k + P)),
        options={"time_limit": max(time_limit, 0.1)},
    )
    if res.status != 0 or res.x is None:
        return None, None, None
    y = np.round(res.x[k:])
    return float(res.fun), np.asarray(res.x[:k], dtype=float), y


def bradley_terry_reward(data: PreferenceData, *, l2: float = 1e-3) -> NDArray[np.float64]:
    """The single Bradley-Terry reward: maximum likelihood of the shares (with a ridge ``l2``,
    relative to the feature scale), by Newton's method.

    .. math:: \\max_\\theta \\sum_p s_p \\log \\sigma(\\theta^\\top \\Delta_p) + (1 - s_p) \\log \\sigma(-\\theta^\\top \\Delta_p)
              - \\tfrac{\\lambda}{2} \\|\\theta\\|^2
    """
    D = data.differences
    scale = float(np.max(np.abs(D))) or 1.0
    lam = float(l2) * scale**2 * D.shape[0]
    theta = np.zeros(D.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(D @ theta)))
        grad = D.T @ (p - data.share) + lam * theta
        H = (D.T * (p * (1 - p))) @ D + lam * np.eye(D.shape[1])
        step = np.linalg.solve(H, grad)
        theta = theta - step
        if float(grad @ step) < 1e-14:
            break
    return np.asarray(theta, dtype=float)


def single_reward_error(data: PreferenceData, reward: ArrayLike) -> tuple[float, float]:
    """Calibration errors of one reward: as a one-member ensemble (``max |y_p - s_p|``) and as
    Bradley-Terry probabilities (``max |sigma(theta @ Delta_p) - s_p|``)."""
    z = data.differences @ np.asarray(reward, dtype=float)
    deterministic = float(np.max(np.abs((z > 0).astype(float) - data.share)))
    probabilistic = float(np.max(np.abs(1.0 / (1.0 + np.exp(-z)) - data.share)))
    return deterministic, probabilistic


def ensemble_problem(
    ensemble: Ensemble, mdp: TabularMDP, *, feature_map: ArrayLike | None = None, names: list[str] | None = None
) -> Problem:
    """The ensemble's members as weighted agents on ``mdp``; every rule runs on it.

    ``feature_map`` ``Phi`` (S*A, k): the items' features are ``Phi^T d`` for occupancy ``d``, so
    member ``theta_j`` is the reward ``Phi theta_j``; ``None``: the features are the occupancy
    itself (``k = S*A``, ``Phi = I``)."""
    S, A = mdp.n_states, mdp.n_actions
    Phi = np.eye(S * A) if feature_map is None else float_array("feature_map", feature_map)
    if Phi.shape != (S * A, ensemble.rewards.shape[1]):
        raise InvalidProblemError(
            f"`feature_map` must have shape (S*A, k) = ({S * A}, {ensemble.rewards.shape[1]}); got {Phi.shape} "
            "(without it the members' features must be the S*A occupancy entries)"
        )
    rewards = ensemble.rewards @ Phi.T
    return Problem(mdp, rewards.reshape(-1, S, A), names=names, weights=ensemble.weights)
