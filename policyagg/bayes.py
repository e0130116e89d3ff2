"""Agents' rewards as evidence about shared values: posteriors on ``U*`` (no solver needed).

Each agent's *vote* is a reward vector ``r_i`` over the ``D = S*A`` state-actions (the rules
use the normalised rewards, whose return is the normalised return). Two likelihoods:

* **Gaussian** (conjugate): ``r_i = U* + eps_i``, ``eps_i ~ N(0, sigma^2 I)``, prior
  ``U*(s, a) ~ N(m0, tau^2)`` independently. An agent's weight ``w_i`` counts as ``w_i``
  votes. The posterior is independent per state-action:

  .. math:: \\operatorname{Var} = \\frac{\\tau^2\\sigma^2}{\\sigma^2 + W\\tau^2},\\qquad
            \\text{mean} = \\frac{\\sigma^2 m_0 + \\tau^2 \\sum_i w_i r_i}{\\sigma^2 + W\\tau^2},
            \\qquad W = \\sum_i w_i.

* **Value clusters**: ``z_i ~ Cat(pi)``, ``r_i | z_i = k ~ N(mu_k, sigma^2 I)`` (one shared
  spherical noise level), fitted by EM; ``K`` is chosen by BIC
  ``= -2 log L + p log W`` with ``p = K D + 1 + (K - 1)`` parameters. Given the fit, each
  cluster's ``U*_k`` has the conjugate posterior above from its members (responsibility-weighted),
  and ``p(U* | V) = sum_k pi_k N(U*; m_k, V_k)``.

:func:`adjusted_rand_index` compares two clusterings (from the contingency table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

from policyagg.errors import InvalidProblemError, check_count

#: The EM noise variance is kept at least this times the votes' mean square (plus a tiny absolute
#: floor): a cluster fitted to identical votes would otherwise have zero variance and infinite
#: likelihood. With noise-free clusters every K >= the true one then fits equally well and BIC's
#: penalty picks the true one.
VARIANCE_FLOOR = 1e-12


# ---------------------------------------------------------------------------- Gaussian model
@dataclass(frozen=True, eq=False)
class GaussianPosterior:
    """``U* ~ N(mean, diag(variance))`` over the ``D`` state-actions."""

    mean: NDArray[np.float64]  # (D,)
    variance: NDArray[np.float64]  # (D,)
    noise: float  # the likelihood's sigma

    @property
    def mode(self) -> NDArray[np.float64]:
        """The posterior mode (the mean, for a Gaussian)."""
        return self.mean

    def sample(self, rng: np.random.Generator, size: int) -> NDArray[np.float64]:
        """``size`` draws of ``U*``, shape (size, D)."""
        z = rng.standard_normal((size, self.mean.size))
        return np.asarray(self.mean + np.sqrt(self.variance) * z)

    def log_density(self, U: ArrayLike) -> NDArray[np.float64]:
        """``log p(U | V)`` for rows ``U`` (m, D); ``-inf`` off a degenerate (zero-variance) posterior."""
        U = np.atleast_2d(np.asarray(U, dtype=float))
        return _diag_normal_logpdf(U, self.mean, self.variance)


def gaussian_posterior(
    votes: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    prior_mean: float = 0.0,
    prior_scale: float = 1.0,
    noise: float | None = None,
) -> GaussianPosterior:
    """The conjugate posterior of ``U*`` given votes ``(n, D)`` (module docstring).

    ``noise`` (``sigma``) ``None``: estimated as the pooled, weighted standard deviation of the
    votes around their weighted mean (:func:`pooled_noise`); with one agent there is no spread
    to estimate it from and ``sigma = prior_scale``.
    """
    R, w = _votes(votes, weights)
    if not (np.isfinite(prior_scale) and prior_scale > 0):
        raise InvalidProblemError(f"`prior_scale` must be a positive number; got {prior_scale}")
    if noise is None:
        noise = pooled_noise(R, w) if R.shape[0] > 1 else float(prior_scale)
    if not (np.isfinite(noise) and noise >= 0):
        raise InvalidProblemError(f"`noise` must be a number >= 0 (the votes' standard deviation); got {noise}")
    s2, t2, W = float(noise) ** 2, float(prior_scale) ** 2, float(w.sum())
    denominator = s2 + W * t2
    mean = (s2 * prior_mean + t2 * (w @ R)) / denominator
    variance = np.full(R.shape[1], t2 * s2 / denominator)
    return GaussianPosterior(mean=np.asarray(mean, dtype=float), variance=variance, noise=float(noise))


def pooled_noise(votes: ArrayLike, weights: ArrayLike | None = None) -> float:
    """``sqrt( n/(n-1) * sum_i w_i ||r_i - rbar||^2 / (W D) )``, ``rbar`` the weighted mean vote."""
    R, w = _votes(votes, weights)
    n, D = R.shape
    if n < 2:
        raise InvalidProblemError("estimating the noise needs at least two votes; pass `noise`")
    centre = (w @ R) / w.sum()
    spread = float(w @ ((R - centre) ** 2).sum(axis=1)) / (w.sum() * D)
    return float(np.sqrt(spread * n / (n - 1)))


# ---------------------------------------------------------------------------- value clusters
@dataclass(frozen=True, eq=False)
class ClusterFit:
    """An EM fit of ``K`` value clusters: ``labels`` (n,) (most responsible cluster),
    ``responsibilities`` (n, K), ``centers`` (K, D), ``proportions`` (K,), the shared ``noise``
    ``sigma``, the weighted ``log_likelihood`` and ``bic``."""

    labels: NDArray[np.int64]
    responsibilities: NDArray[np.float64]
    centers: NDArray[np.float64]
    proportions: NDArray[np.float64]
    noise: float
    log_likelihood: float
    bic: float
    iterations: int

    @property
    def n_clusters(self) -> int:
        return int(self.proportions.size)


def fit_clusters(
    votes: ArrayLike,
    n_clusters: int,
    rng: np.random.Generator,
    weights: ArrayLike | None = None,
    *,
    n_init: int = 5,
    max_iter: int = 500,
    tol: float = 1e-10,
) -> ClusterFit:
    """EM for ``r_i ~ sum_k pi_k N(mu_k, sigma^2 I)`` (votes weighted by ``w_i``), the best of
    ``n_init`` starts (k-means++ seeding from ``rng``) by likelihood.

    E step: ``gamma_ik ∝ pi_k N(r_i; mu_k, sigma^2 I)``; M step: ``N_k = sum_i w_i gamma_ik``,
    ``mu_k = sum_i w_i gamma_ik r_i / N_k``, ``pi_k = N_k / W``,
    ``sigma^2 = sum_ik w_i gamma_ik ||r_i - mu_k||^2 / (W D)`` (floored: :data:`VARIANCE_FLOOR`).
    """
    R, w = _votes(votes, weights)
    n, D = R.shape
    K = check_count("n_clusters", n_clusters)
    if n < K:
        raise InvalidProblemError(f"`n_clusters` must be at most the number of votes ({n}); got {K}")
    floor = VARIANCE_FLOOR * (float(np.mean(R**2)) + 1e-300)
    best: ClusterFit | None = None
    for _ in range(check_count("n_init", n_init)):
        fit = _em(R, w, _kmeanspp(R, K, rng), floor, max_iter, tol)
        if best is None or fit.log_likelihood > best.log_likelihood:
            best = fit
    assert best is not None  # n_init >= 1
    return best


def select_clusters(
    votes: ArrayLike,
    rng: np.random.Generator,
    weights: ArrayLike | None = None,
    *,
    max_clusters: int = 6,
    n_init: int = 5,
) -> tuple[ClusterFit, dict[int, float]]:
    """The fit with the smallest BIC over ``K = 1 .. min(max_clusters, n - 1)`` (``K = n``, a
    cluster per vote, is excluded: its noise is zero), and every ``K``'s BIC."""
    R, w = _votes(votes, weights)
    top = max(1, min(check_count("max_clusters", max_clusters), R.shape[0] - 1))
    fits = [fit_clusters(R, K, rng, w, n_init=n_init) for K in range(1, top + 1)]
    best = min(fits, key=lambda fit: fit.bic)
    return best, {fit.n_clusters: fit.bic for fit in fits}


@dataclass(frozen=True, eq=False)
class MixturePosterior:
    """``p(U* | V) = sum_k proportions_k N(U*; components_k)``, from a :class:`ClusterFit`."""

    components: tuple[GaussianPosterior, ...]
    proportions: NDArray[np.float64]
    fit: ClusterFit

    @property
    def mean(self) -> NDArray[np.float64]:
        """The posterior mean ``sum_k pi_k m_k``."""
        return np.asarray(self.proportions @ np.stack([c.mean for c in self.components]))

    @property
    def mode(self) -> NDArray[np.float64]:
        """The mean of the heaviest component (the mixture's mode when the clusters are well
        separated and share one variance; the exact mode of a mixture is not computed)."""
        return self.components[int(np.argmax(self.proportions))].mean

    def sample(self, rng: np.random.Generator, size: int) -> NDArray[np.float64]:
        """``size`` draws: a cluster ``k ~ pi``, then ``U* ~ N(m_k, V_k)``; shape (size, D)."""
        ks = rng.choice(self.proportions.size, size=size, p=self.proportions)
        z = rng.standard_normal((size, self.components[0].mean.size))
        means = np.stack([c.mean for c in self.components])[ks]
        sds = np.sqrt(np.stack([c.variance for c in self.components]))[ks]
        return np.asarray(means + sds * z)

    def log_density(self, U: ArrayLike) -> NDArray[np.float64]:
        U = np.atleast_2d(np.asarray(U, dtype=float))
        with np.errstate(divide="ignore"):
            logs = np.stack([np.log(p) + c.log_density(U) for p, c in zip(self.proportions, self.components)])
        return np.asarray(logsumexp(logs, axis=0))


def mixture_posterior(
    votes: ArrayLike,
    fit: ClusterFit,
    weights: ArrayLike | None = None,
    *,
    prior_mean: float = 0.0,
    prior_scale: float = 1.0,
) -> MixturePosterior:
    """Each cluster's conjugate posterior of ``U*_k`` (votes weighted by ``w_i gamma_ik``, noise
    the fit's ``sigma``), mixed with the fit's proportions."""
    R, w = _votes(votes, weights)
    components = []
    for k in range(fit.n_clusters):
        member = w * fit.responsibilities[:, k]
        keep = member > 0
        components.append(
            gaussian_posterior(
                R[keep] if keep.any() else R[:1],
                member[keep] if keep.any() else np.array([1e-300]),
                prior_mean=prior_mean,
                prior_scale=prior_scale,
                noise=fit.noise,
            )
        )
    return MixturePosterior(tuple(components), fit.proportions, fit)


# ---------------------------------------------------------------------------- clustering agreement
def adjusted_rand_index(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Hubert and Arabie's adjusted Rand index of two clusterings of the same items.

    From the contingency table ``n_uv``, row sums ``a_u``, column sums ``b_v``:
    ``ARI = (sum C(n_uv, 2) - E) / ((sum C(a_u, 2) + sum C(b_v, 2)) / 2 - E)`` with
    ``E = sum C(a_u, 2) sum C(b_v, 2) / C(n, 2)``; 1 for identical partitions (also when both
    are trivial), about 0 for independent ones.
    """
    a, b = np.asarray(labels_true).ravel(), np.asarray(labels_pred).ravel()
    if a.shape != b.shape or a.size == 0:
        raise InvalidProblemError(f"the two labelings must have the same positive length; got {a.size} and {b.size}")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(table, (ia, ib), 1.0)

    def pairs(x: NDArray[np.float64]) -> float:
        return float((x * (x - 1) / 2).sum())

    index, rows, cols = pairs(table), pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    total = a.size * (a.size - 1) / 2
    expected = rows * cols / total if total > 0 else 0.0
    top = (rows + cols) / 2
    if top == expected:  # both partitions trivial (all in one cluster, or all singletons)
        return 1.0
    return float((index - expected) / (top - expected))


# ---------------------------------------------------------------------------- helpers
def _votes(votes: ArrayLike, weights: ArrayLike | None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    R = np.asarray(votes, dtype=float)
    if R.ndim != 2 or R.shape[0] == 0 or R.shape[1] == 0 or not np.all(np.isfinite(R)):
        raise InvalidProblemError(f"`votes` must be a finite (n, D) array with n, D >= 1; got shape {R.shape}")
    w = np.ones(R.shape[0]) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (R.shape[0],) or not np.all(np.isfinite(w) & (w > 0)):
        raise InvalidProblemError(f"`weights` must be {R.shape[0]} positive numbers; got {w!r}")
    return R, w


def _diag_normal_logpdf(
    U: NDArray[np.float64], mean: NDArray[np.float64], variance: NDArray[np.float64]
) -> NDArray[np.float64]:
    diff = U - mean
    if np.all(variance > 0):
        quad = (diff**2 / variance).sum(axis=1)
        return np.asarray(-0.5 * (quad + np.log(2 * np.pi * variance).sum()))
    at_mean = np.all(np.abs(diff) <= 0, axis=1)
    return np.where(at_mean, np.inf, -np.inf)


def _kmeanspp(R: NDArray[np.float64], K: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """k-means++ seeds: each next centre a vote drawn with probability ∝ squared distance."""
    centers = [R[rng.integers(R.shape[0])]]
    for _ in range(1, K):
        dist = np.min([((R - c) ** 2).sum(axis=1) for c in centers], axis=0)
        total = dist.sum()
        pick = rng.choice(R.shape[0], p=dist / total) if total > 0 else rng.integers(R.shape[0])
        centers.append(R[pick])
    return np.stack(centers)


def _em(
    R: NDArray[np.float64],
    w: NDArray[np.float64],
    centers: NDArray[np.float64],
    floor: float,
    max_iter: int,
    tol: float,
) -> ClusterFit:
    n, D = R.shape
    K = centers.shape[0]
    W = float(w.sum())
    sq = ((R[:, None, :] - centers[None]) ** 2).sum(axis=2)  # (n, K)
    resp = np.zeros((n, K))
    resp[np.arange(n), sq.argmin(axis=1)] = 1.0  # start from the nearest-seed partition
    loglik, previous, iterations = -np.inf, -np.inf, 0
    for step in range(1, max_iter + 1):
        iterations = step
        # M step
        Nk = w @ resp
        alive = Nk > 0
        centers = np.where(alive[:, None], (resp * w[:, None]).T @ R / np.where(alive, Nk, 1.0)[:, None], centers)
        proportions = Nk / W
        sq = ((R[:, None, :] - centers[None]) ** 2).sum(axis=2)
        var = max(float((w[:, None] * resp * sq).sum()) / (W * D), floor)
        # E step
        with np.errstate(divide="ignore"):
            logp = np.log(proportions)[None] - sq / (2 * var) - 0.5 * D * np.log(2 * np.pi * var)
        norm = logsumexp(logp, axis=1)
        resp = np.exp(logp - norm[:, None])
        loglik = float(w @ norm)
        if abs(loglik - previous) <= tol * max(1.0, abs(loglik)):
            break
        previous = loglik
    Nk = w @ resp
    proportions = Nk / W
    p = K * D + 1 + (K - 1)
    bic = -2.0 * loglik + p * np.log(W)
    return ClusterFit(
        labels=resp.argmax(axis=1).astype(np.int64),
        responsibilities=resp,
        centers=centers,
        proportions=proportions,
        noise=float(np.sqrt(var)),
        log_likelihood=loglik,
        bic=float(bic),
        iterations=iterations,
    )
