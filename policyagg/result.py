"""The result of a rule: a frozen record that saves to JSON + NPZ (no pickle), atomically."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from policyagg.errors import CorruptFileError, InvalidProblemError
from policyagg.io import StrPath, atomic_write_bytes, atomic_write_json, npz_bytes
from policyagg.metrics import gini
from policyagg.problem import Problem
from policyagg.samples import ReturnSamples

FORMAT_VERSION = 1
ARRAYS = ("occupancy", "policy", "returns", "normalized", "ranks")


@dataclass(frozen=True, eq=False)
class Result:
    """One collective policy chosen by a rule, with what it gives every agent.

    ``returns[i] = J_i(d)`` (per step), ``normalized[i]`` is in [0, 1] (0 = agent ``i``'s
    worst policy, 1 = its best), ``ranks[i] = F_i(J_i)`` under the samples (``None``
    when no samples were given); ``gini`` is the Gini index of ``normalized``.
    ``status`` is the worst status of the rule's solves: ``"optimal"``, or ``"gap"`` when
    column generation stopped with its optimality gap open (the gap is in
    ``diagnostics["column_generation_gap"]``); ``"policy-gap"`` when the solves were optimal
    but no stationary policy delivers the rule's point (it mixes closed classes, average
    reward): ``returns`` are then what ``policy`` does and ``diagnostics["optimizer_returns"]``
    the rule's point (``report["policy_return_gap"]``: how far apart, per agent's range).
    """

    rule: str
    occupancy: NDArray[np.float64]  # (S, A)
    policy: NDArray[np.float64]  # (S, A)
    returns: NDArray[np.float64]  # (n,)
    normalized: NDArray[np.float64]  # (n,)
    ranks: NDArray[np.float64] | None  # (n,)
    names: tuple[str, ...]
    gini: float
    options: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)  # fairness report: Pareto gap, Borda score, approvals, PVC eps
    status: str = "optimal"

    @property
    def min_rank(self) -> float | None:
        """The quantile reached: ``min_i rank_i``."""
        return None if self.ranks is None else float(self.ranks.min())

    def table(self) -> str:
        """A plain-text table: a summary line, the fairness report, then one line per agent."""
        lines = [
            f"rule: {self.rule}   gini: {self.gini:.4f}"
            + ("" if self.ranks is None else f"   min rank: {self.min_rank:.4f}")
            + ("" if self.status == "optimal" else f"   status: {self.status}")
        ]
        if self.report:
            lines.append("   ".join(f"{key}: {_fmt(value)}" for key, value in self.report.items() if key != "min_rank"))
        header = f"{'agent':>12} {'return':>14} {'normalized':>11}" + ("" if self.ranks is None else f" {'rank':>7}")
        lines.append(header)
        for i, name in enumerate(self.names):
            row = f"{name:>12} {self.returns[i]:>14.6g} {self.normalized[i]:>11.4f}"
            if self.ranks is not None:
                row += f" {self.ranks[i]:>7.4f}"
            lines.append(row)
        return "\n".join(lines)

    # ------------------------------------------------------------------ storage
    def save(self, path: StrPath) -> Path:
        """Write ``<path>.npz`` (arrays) then ``<path>.json`` (the rest + the npz's SHA-256).

        Both writes are atomic; the JSON is written last and names the exact arrays file, so a
        crash in between leaves no result that loads with mismatched arrays.
        """
        arrays = {k: getattr(self, k) for k in ARRAYS if getattr(self, k) is not None}
        meta = {
            "rule": self.rule,
            "names": list(self.names),
            "gini": self.gini,
            "options": self.options,
            "diagnostics": self.diagnostics,
            "report": self.report,
            "status": self.status,
        }
        return write_checked(path, arrays, meta)

    @classmethod
    def load(cls, path: StrPath) -> Result:
        """Read a result written by :meth:`save`: ``<path>.json`` and the arrays in ``<path>.npz``
        beside it (a fixed name: the JSON is data, never a path to follow).

        The arrays must match the JSON's SHA-256, hold at most :data:`MAX_ARRAY_BYTES`
        uncompressed, and fit each other and the agents' names; anything else (missing,
        truncated, invalid JSON, made-up or edited files) raises :class:`CorruptFileError`
        naming the file.
        """
        json_path, meta, payload = read_checked(path, "result", _META_KEYS)
        redo = "save the result again (or rerun the rule)"
        if meta.get("kind", "result") != "result":
            raise CorruptFileError(
                f"{json_path}: a {meta.get('kind')!r}, not a result; load it with policyagg.lottery.load_outcome"
            )
        arrays = read_arrays(json_path.with_suffix(".npz"), payload, ARRAYS)
        try:
            names = tuple(str(name) for name in meta["names"])
            result = cls(
                rule=str(meta["rule"]),
                names=names,
                gini=float(meta["gini"]),
                options=dict(meta["options"]),
                diagnostics=dict(meta["diagnostics"]),
                report=dict(meta.get("report", {})),
                status=str(meta.get("status", "optimal")),
                **arrays,
            )
        except (TypeError, ValueError) as exc:
            raise CorruptFileError(f"{json_path}: not a valid result ({exc}); {redo}") from None
        _check_shapes(result, json_path)
        return result


#: Keys every result JSON has.
_META_KEYS = ("rule", "names", "gini", "options", "diagnostics", "arrays", "arrays_sha256")
#: The most a result's arrays may take in memory once decompressed (a result of a 10^6
#: state-action model takes 16 MB): a small made-up NPZ cannot allocate more.
MAX_ARRAY_BYTES = 1 << 30


def write_checked(path: StrPath, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Write ``<path>.npz`` (``arrays``) then ``<path>.json`` (``meta`` + the format version, the
    arrays' file name and SHA-256), both atomically: the JSON, written last, names the exact
    arrays file, so a crash in between leaves nothing that loads with mismatched arrays."""
    path = Path(path)
    payload = npz_bytes(**arrays)
    npz_path = atomic_write_bytes(path.with_suffix(".npz"), payload)
    checked = {"format_version": FORMAT_VERSION, **meta}
    checked |= {"arrays": npz_path.name, "arrays_sha256": hashlib.sha256(payload).hexdigest()}
    return atomic_write_json(path.with_suffix(".json"), checked)


def read_checked(path: StrPath, what: str, required: tuple[str, ...]) -> tuple[Path, dict[str, Any], bytes]:
    """The JSON metadata of a saved ``what`` (``"result"``, ``"lottery"``) (``<path>.json``, holding the ``required`` keys) and
    the bytes of its arrays (``<path>.npz`` beside it: a fixed name, the JSON is data, never a
    path to follow), checked against the JSON's SHA-256. Anything else raises
    :class:`CorruptFileError` naming the file."""
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidProblemError(f"`path` must be a file path; got {type(path).__name__}")
    json_path, npz_path = Path(path).with_suffix(".json"), Path(path).with_suffix(".npz")
    redo = f"save the {what} again (or rerun the rule)"
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"{json_path}: cannot read a {what} ({exc}); {redo}") from None
    if not isinstance(meta, dict):
        raise CorruptFileError(f"{json_path}: not a {what} (a JSON object is expected); {redo}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CorruptFileError(f"{json_path}: unsupported {what} format version {meta.get('format_version')!r}")
    missing = [key for key in required if key not in meta]
    if missing:
        raise CorruptFileError(f"{json_path}: not a {what} (missing {', '.join(missing)}); {redo}")
    if meta["arrays"] != npz_path.name:
        raise CorruptFileError(
            f"{json_path}: its arrays must be {npz_path.name!r} beside it, not {meta['arrays']!r}; {redo}"
        )
    try:
        payload = npz_path.read_bytes()
    except OSError as exc:
        raise CorruptFileError(f"{npz_path}: cannot read the {what}'s arrays ({exc}); {redo}") from None
    if hashlib.sha256(payload).hexdigest() != meta["arrays_sha256"]:
        raise CorruptFileError(f"{npz_path} does not match {json_path} (checksum); {redo}")
    return json_path, meta, payload


def read_arrays(npz_path: Path, payload: bytes, names: tuple[str, ...]) -> dict[str, Any]:
    """The arrays ``names`` of a saved NPZ (``None`` where absent), checked before anything is
    decompressed: no other members, no object arrays, at most :data:`MAX_ARRAY_BYTES`."""
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise CorruptFileError(f"{npz_path}: not an NPZ archive ({exc}); save the result again") from None
    unknown = sorted({m.filename.removesuffix(".npy") for m in members} - set(names))
    if unknown:
        raise CorruptFileError(f"{npz_path}: unexpected arrays {unknown}; it may hold only {list(names)}")
    total = sum(m.file_size for m in members)
    if total > MAX_ARRAY_BYTES:
        raise CorruptFileError(
            f"{npz_path}: its arrays would take {total / 2**20:.0f} MB (limit {MAX_ARRAY_BYTES / 2**20:.0f} MB)"
        )
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as data:
            arrays = {k: (np.asarray(data[k], dtype=float) if k in data else None) for k in names}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptFileError(f"{npz_path}: unreadable arrays ({exc}); save the result again") from None
    return arrays


def _check_shapes(result: Result, json_path: Path) -> None:
    n = len(result.names)
    problems = []
    for name in ("occupancy", "policy"):
        array = getattr(result, name)
        if array is None or array.ndim != 2:
            problems.append(f"{name} must be an (S, A) array")
    if result.policy is not None and result.occupancy is not None and result.policy.shape != result.occupancy.shape:
        problems.append("policy and occupancy differ in shape")
    for name in ("returns", "normalized", "ranks"):
        array = getattr(result, name)
        if (array is not None or name != "ranks") and (array is None or array.shape != (n,)):
            problems.append(f"{name} must have one entry per agent ({n})")
    if problems:
        raise CorruptFileError(f"{json_path}: arrays do not fit the result: {'; '.join(problems)}")


def make_result(
    problem: Problem,
    d: ArrayLike,
    *,
    rule: str,
    samples: ReturnSamples | None = None,
    options: Mapping[str, Any] | None = None,
    diagnostics: Mapping[str, Any] | None = None,
    report: Mapping[str, Any] | None = None,
    status: str = "optimal",
    policy: ArrayLike | None = None,
) -> Result:
    """Assemble a :class:`Result` from an occupancy ``d`` (clipped at 0, renormalised) and
    its ``policy`` (default: ``problem.mdp.policy_from_occupancy(d)``)."""
    mdp = problem.mdp
    occupancy = np.clip(np.asarray(d, dtype=float).reshape(mdp.n_states, mdp.n_actions), 0.0, None)
    occupancy /= occupancy.sum()
    returns = problem.returns(occupancy)
    normalized = np.clip(problem.require_ranges().normalize(returns), 0.0, 1.0)
    ranks = None if samples is None else samples.check_agents(problem.n_agents).cdf(returns)
    for array in (occupancy, returns, normalized) + (() if ranks is None else (ranks,)):
        array.flags.writeable = False
    return Result(
        rule=rule,
        occupancy=occupancy,
        policy=mdp.policy_from_occupancy(occupancy) if policy is None else np.asarray(policy, dtype=float),
        returns=returns,
        normalized=normalized,
        ranks=ranks,
        names=problem.names,
        gini=gini(normalized),
        options=dict(options or {}),
        diagnostics=dict(diagnostics or {}),
        report=dict(report or {}),
        status=str(status),
    )


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)
