"""Atomic file writes: write to a temporary file in the same folder, fsync, rename."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

#: What the writers accept as a path.
StrPath = str | os.PathLike[str]


def atomic_write_bytes(path: StrPath, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` so that readers see the old file or the new one, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared and read
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_json(path: StrPath, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def npz_bytes(**arrays: ArrayLike) -> bytes:
    """The bytes of an uncompressed ``.npz`` holding ``arrays`` (no object arrays, no pickle)."""
    buffer = io.BytesIO()
    # numpy >= 2.1 types savez(file, *args, allow_pickle: bool, **kwds), so mypy takes a key of
    # **arrays for `allow_pickle`; passing allow_pickle=True would instead store an array named
    # "allow_pickle" on numpy < 2.1 (which pyproject allows), hence the ignore.
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    return buffer.getvalue()
