"""MCMC mixing diagnostics: rank-normalised split R-hat and bulk effective sample size.

Both follow Vehtari, Gelman, Simpson, Carpenter and Buerkner (2021), "Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC",
Bayesian Analysis 16(2), 667-718:

* every chain is split in half (so a trend inside a chain shows up as disagreement);
* the pooled draws are replaced by normal scores of their ranks,
  ``z = Phi^{-1}((rank - 3/8) / (N + 1/4))``;
* R-hat is the larger of the classic ``sqrt(var+ / W)`` on ``z`` and on the rank-normalised
  folded draws ``|x - median(x)|`` (the "tail" check);
* bulk ESS is ``m n / tau`` on ``z``, with ``tau = -1 + 2 sum_t rho_t`` and the
  autocorrelations ``rho_t`` combined across chains and truncated by Geyer's initial
  monotone sequence.

Chains that are constant give R-hat 1 and ESS ``m n`` when they agree (nothing is
uncertain), R-hat ``inf`` and ESS 1 when they do not.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

from policyagg.errors import InvalidSamplesError


def _as_chains(draws: ArrayLike) -> NDArray[np.float64]:
    """``draws`` (chains, n) or (chains, n, k) as floats with at least 4 draws per chain."""
    chains = np.asarray(draws, dtype=float)
    if chains.ndim not in (2, 3) or chains.shape[0] < 1 or chains.shape[1] < 4:
        raise InvalidSamplesError(
            f"`draws` must have shape (chains, n) or (chains, n, k) with n >= 4; got {chains.shape}"
        )
    if not np.all(np.isfinite(chains)):
        raise InvalidSamplesError("`draws` must be finite")
    return chains


def _split(chains: NDArray[np.float64]) -> NDArray[np.float64]:
    """(m, n) -> (2m, n // 2): each chain cut in two halves (the middle draw of an odd n dropped)."""
    half = chains.shape[1] // 2
    return np.concatenate([chains[:, :half], chains[:, -half:]], axis=0)


def _rank_normalise(chains: NDArray[np.float64]) -> NDArray[np.float64]:
    ranks = stats.rankdata(chains, axis=None).reshape(chains.shape)  # ties: average ranks
    scores: NDArray[np.float64] = special.ndtri((ranks - 0.375) / (chains.size + 0.25))  # scipy is untyped: Any
    return scores


def _basic_rhat(chains: NDArray[np.float64]) -> float:
    m, n = chains.shape
    within = chains.var(axis=1, ddof=1).mean()
    between = n * chains.mean(axis=1).var(ddof=1) if m > 1 else 0.0
    if within <= 0.0:
        return 1.0 if between <= 0.0 else float("inf")
    var_plus = (n - 1) / n * within + between / n
    return float(np.sqrt(var_plus / within))


def _ess(chains: NDArray[np.float64]) -> float:
    """ESS of (m, n) chains with Geyer's initial monotone sequence (Vehtari et al. 2021, eqs. 10-11)."""
    m, n = chains.shape
    centred = chains - chains.mean(axis=1, keepdims=True)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(centred, size, axis=1)
    acov = np.fft.irfft(spectrum * spectrum.conj(), size, axis=1)[:, :n] / n  # biased autocovariances
    within = acov[:, 0].mean() * n / (n - 1)
    var_plus = within * (n - 1) / n + (chains.mean(axis=1).var(ddof=1) if m > 1 else 0.0)
    if var_plus <= 0.0:
        return float(m * n) if within <= 0.0 else 1.0
    rho = 1.0 - (within - acov.mean(axis=0)) / var_plus  # rho[0] == 1
    # Geyer: sums of consecutive pairs P_k = rho_{2k} + rho_{2k+1}, kept while positive and
    # forced to be non-increasing.
    pairs = rho[: 2 * (n // 2)].reshape(-1, 2).sum(axis=1)
    negative = np.flatnonzero(pairs <= 0.0)
    pairs = pairs[: negative[0] if negative.size else pairs.size]
    pairs = np.minimum.accumulate(pairs)
    tau = -1.0 + 2.0 * pairs.sum()
    total = m * n
    tau = max(tau, 1.0 / np.log10(total))  # the cap of Stan/ArviZ: ESS <= N log10(N)
    return float(total / tau)


def _per_column(function: Callable[[NDArray[np.float64]], float], draws: ArrayLike) -> float | NDArray[np.float64]:
    chains = _as_chains(draws)
    if chains.ndim == 2:
        return function(chains)
    return np.array([function(chains[:, :, j]) for j in range(chains.shape[2])])


def rhat(draws: ArrayLike) -> float | NDArray[np.float64]:
    """Rank-normalised split R-hat (max of bulk and folded), per column for 3-D input.

    ``draws``: (chains, n) or (chains, n, k). Values near 1 (< 1.01) indicate mixing.
    """

    def one(chains: NDArray[np.float64]) -> float:
        split = _split(chains)
        folded = np.abs(split - np.median(split))
        return max(_basic_rhat(_rank_normalise(split)), _basic_rhat(_rank_normalise(folded)))

    return _per_column(one, draws)


def effective_sample_size(draws: ArrayLike) -> float | NDArray[np.float64]:
    """Bulk effective sample size (rank-normalised split chains), per column for 3-D input.

    ``draws``: (chains, n) or (chains, n, k). For an AR(1) chain with coefficient ``phi``
    it estimates ``N (1 - phi) / (1 + phi)``.
    """
    return _per_column(lambda chains: _ess(_rank_normalise(_split(chains))), draws)
