"""Sampled returns and the empirical CDFs (volumetric ranks) they define.

Given ``N`` samples ``d_1..d_N`` of a measure ``mu`` on the occupancy polytope, only the
``N x n`` matrix ``V[k, i] = J_i(d_k)`` is kept. Agent ``i``'s rank of a return ``v`` is
the empirical CDF ``F_i(v) = #{k : V[k, i] <= v} / N``.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import CorruptFileError, InvalidSamplesError, float_array
from policyagg.io import StrPath, atomic_write_bytes, npz_bytes

#: Returns within this fraction of an agent's sampled range of a sample count as equal to
#: it, so that an LP optimum sitting on a sample gets its rank although LP solvers meet
#: constraints only to about 1e-7 (rules scale their threshold rows by the return range).
TIE_TOL = 1e-6


@dataclass(frozen=True, eq=False)
class ReturnSamples:
    """An ``(N, n)`` matrix of sampled returns, from any sampler.

    Parameters
    ----------
    values : array (N, n)
        ``values[k, i]`` is agent ``i``'s return ``J_i`` under the ``k``-th sampled policy,
        on the same (per-step) scale as ``Problem.returns``.
    measure : str
        Where the samples come from (``"policy"``, ``"user"``, ...), for reports.
    info : dict
        JSON-serialisable facts about the sampling run (seed, time, ...).
    """

    values: NDArray[np.float64]
    measure: str = "user"
    info: dict[str, Any] = field(default_factory=dict)
    sorted_values: NDArray[np.float64] = field(init=False, repr=False)  # (n, N), each row ascending
    tolerance: NDArray[np.float64] = field(init=False, repr=False)  # (n,)

    def __post_init__(self) -> None:
        if not isinstance(self.measure, str) or not isinstance(self.info, dict):
            raise InvalidSamplesError(
                f"`measure` must be a string and `info` a dict; got {type(self.measure).__name__} and "
                f"{type(self.info).__name__}"
            )
        values = float_array("values", self.values, InvalidSamplesError)  # a private copy
        if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
            raise InvalidSamplesError(
                f"`values` must be a non-empty (N, n) array of returns; got shape {np.shape(self.values)}"
            )
        if not np.all(np.isfinite(values)):
            k, i = np.argwhere(~np.isfinite(values))[0]
            raise InvalidSamplesError(f"`values` has a non-finite return at sample {k}, agent {i}")
        values.flags.writeable = False
        sorted_values = np.array(values.T, order="C")  # one copy (never a view), each row sorted in place
        sorted_values.sort(axis=1)
        span = sorted_values[:, -1] - sorted_values[:, 0]
        magnitude = np.maximum(np.abs(sorted_values[:, 0]), np.abs(sorted_values[:, -1]))
        scale = np.where(span > 0, span, np.maximum(magnitude, 1.0))  # all samples equal: any tie scale
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "sorted_values", sorted_values)
        object.__setattr__(self, "tolerance", TIE_TOL * scale)

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_agents(self) -> int:
        return int(self.values.shape[1])

    def check_agents(self, n_agents: int) -> ReturnSamples:
        if self.n_agents != n_agents:
            raise InvalidSamplesError(
                f"the samples have returns for {self.n_agents} agents but the problem has {n_agents}; "
                "sample again for this problem or pass the matching (N, n) array"
            )
        return self

    def cdf(self, returns: ArrayLike) -> NDArray[np.float64]:
        """Ranks ``F_i(J_i)`` for returns of shape (n,) or (m, n); values in [0, 1]."""
        returns = np.asarray(returns, dtype=float)
        if returns.shape[-1] != self.n_agents:
            raise InvalidSamplesError(f"`returns` must end in n = {self.n_agents}; got shape {returns.shape}")
        flat = returns.reshape(-1, self.n_agents)
        counts = np.empty(flat.shape, dtype=np.int64)
        for i in range(self.n_agents):
            counts[:, i] = np.searchsorted(self.sorted_values[i], flat[:, i] + self.tolerance[i], side="right")
        return (counts / self.n_samples).reshape(returns.shape)

    def threshold(self, alpha: float) -> NDArray[np.float64]:
        """Quantile thresholds ``t_i(alpha) = min{v in samples_i : F_i(v) >= alpha}``, shape (n,).

        ``alpha <= 0`` gives ``-inf`` (every return is approved).
        """
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise InvalidSamplesError(f"`alpha` must be in [0, 1]; got {alpha}")
        k = int(np.ceil(alpha * self.n_samples - 1e-12))
        if k <= 0:
            return np.full(self.n_agents, -np.inf)
        return self.sorted_values[:, k - 1].copy()

    # ------------------------------------------------------------------ storage
    def save(self, path: StrPath) -> Path:
        """Write ``values``, ``measure`` and ``info`` to one ``.npz`` file, atomically."""
        path = Path(path).with_suffix(".npz")
        meta = json.dumps({"measure": self.measure, "info": self.info})
        atomic_write_bytes(path, npz_bytes(values=self.values, meta=np.array(meta)))
        return path

    @classmethod
    def load(cls, path: StrPath) -> ReturnSamples:
        """Read a file written by :meth:`save`; anything else (truncated, pickled, compressed to
        expand far beyond its size, missing keys) is a :class:`CorruptFileError` naming it."""
        path = Path(path).with_suffix(".npz")
        try:
            _check_expansion(path)
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                return cls(np.asarray(data["values"], dtype=float), str(meta["measure"]), dict(meta["info"]))
        except (FileNotFoundError, CorruptFileError):
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            raise CorruptFileError(
                f"{path}: not readable sampled returns ({type(exc).__name__}: {exc}); delete it to sample again"
            ) from None


#: A samples file is written uncompressed, so its arrays take about its own size in memory;
#: one claiming more than this many times its size (plus a little) is a compression bomb.
MAX_EXPANSION = 16


def _check_expansion(path: Path) -> None:
    """Refuse, before anything is decompressed, an NPZ whose arrays would take far more memory
    than the file's own size."""
    with zipfile.ZipFile(path) as archive:
        total = sum(member.file_size for member in archive.infolist())
    allowed = MAX_EXPANSION * path.stat().st_size + (1 << 20)
    if total > allowed:
        raise CorruptFileError(
            f"{path}: its arrays would take {total / 2**20:.0f} MB from a {path.stat().st_size / 2**20:.1f} MB "
            "file (limit 16x); not a samples file written by policyagg: delete it to sample again"
        )
