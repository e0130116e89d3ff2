"""Atomic file writes: write to a temporary file in the same folder, fsync, rename."""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from policyagg.errors import OutputError

#: What the writers accept as a path.
StrPath = str | os.PathLike[str]


def atomic_write_bytes(path: StrPath, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` so that readers see the old file or the new one, never half.
    A failed write (disk full, no permission, ...) is an :class:`OutputError`; the old file stays."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise output_error(target, exc) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared and read
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise output_error(target, exc) from None
        raise
    return target


def output_error(path: StrPath, exc: OSError) -> OutputError:
    """An :class:`OutputError` for a failed write of ``path``, saying what to change."""
    hints = {
        errno.ENOSPC: "free some disk space, or write elsewhere (`--out DIR`)",
        errno.EDQUOT: "free some of your disk quota, or write elsewhere (`--out DIR`)",
        errno.EACCES: "choose a folder you may write to (`--out DIR`)",
        errno.EPERM: "choose a folder you may write to (`--out DIR`)",
        errno.EROFS: "the file system is read-only; write elsewhere (`--out DIR`)",
        errno.ENOTDIR: "a part of the path is a file, not a folder; choose another output folder (`--out DIR`)",
        errno.EEXIST: "a part of the path is a file, not a folder; choose another output folder (`--out DIR`)",
    }
    hint = hints.get(exc.errno or 0, "check the path and the disk")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}; {hint}")


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
