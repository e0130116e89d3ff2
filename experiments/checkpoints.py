"""A run's output folder: checksums of its checkpoints, and a lock so that one run writes at a time.

``manifest.json`` maps every checkpoint file (a seed's ``samples.npz``, a rule's ``.json`` and
``.npz``; paths relative to the folder) to its SHA-256, recorded right after the file is
written. A resumed run reuses a file only if its checksum matches; a file that was changed,
damaged or written without its checksum being recorded (an interrupted run, an older version
of policyagg) is computed again, with a :class:`~policyagg.errors.CheckpointWarning` that says
which and why.

The lock is ``fcntl.flock`` on ``<folder>/.lock``, held for the whole run (worker processes
inherit it) and released by the operating system if the run is killed. A second run into the
same folder is refused with :class:`~policyagg.errors.OutputLockedError` naming the process
that holds it. (On systems without ``fcntl``, such as Windows, there is no lock.)
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from policyagg.errors import CheckpointWarning, OutputLockedError
from policyagg.io import atomic_write_json, output_error

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
LOCK = ".lock"


def sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Manifest:
    """The checksums of one output folder's checkpoints (``<folder>/manifest.json``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST
        self.damaged = False
        self.sums = self._read()

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        try:
            sums = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(sums, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in sums.items()):
                return sums
        except (OSError, ValueError):
            pass
        self.damaged = True  # said once here, not again for every checkpoint
        warnings.warn(
            f"{self.path} is damaged: no checkpoint of this folder can be verified, so all are computed again",
            CheckpointWarning,
            stacklevel=3,
        )
        return {}

    def _key(self, path: Path) -> str:
        return Path(path).relative_to(self.folder).as_posix()

    def problem(self, *paths: Path) -> str | None:
        """Why the checkpoint made of ``paths`` cannot be reused, or ``None`` if every file is there
        and matches its recorded checksum (a missing file is the plain reason ``"missing"``)."""
        missing = [path for path in paths if not path.exists()]
        if len(missing) == len(paths):
            return "missing"
        if missing:
            return f"{missing[0]} is missing (its other files are there)"
        for path in paths:
            expected = self.sums.get(self._key(path))
            if expected is None:
                return f"{path} has no recorded checksum (written by an interrupted run or an older version)"
            if sha256(path) != expected:
                return f"{path} was changed after it was written (its checksum does not match)"
        return None

    def verified(self, *paths: Path) -> bool:
        """``True`` if the checkpoint can be reused; else ``False``, with a
        :class:`CheckpointWarning` unless its files are simply missing."""
        reason = self.problem(*paths)
        if reason is not None and reason != "missing" and not self.damaged:
            warnings.warn(f"{reason}; computing it again", CheckpointWarning, stacklevel=3)
        return reason is None

    def record(self, *paths: Path) -> None:
        """Record the checksums of freshly written ``paths`` (the manifest is rewritten atomically)."""
        for path in paths:
            self.sums[self._key(path)] = sha256(path)
        atomic_write_json(self.path, self.sums)

    def holds_results(self) -> bool:
        """Whether the folder holds any checkpoint file, recorded or not."""
        return any(path.is_file() for path in self.folder.glob("seed*/*"))


_HELD: dict[Path, int] = {}  # folders this process has locked, with a count (re-entrant)


@contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """Hold the lock of ``folder`` (created if needed) for the ``with`` block; re-entrant within a
    process. Refused at once with :class:`OutputLockedError` if another process holds it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        key = folder.resolve()
    except OSError as exc:
        raise output_error(folder, exc) from None
    if fcntl is None or key in _HELD:
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield
        finally:
            _release(key)
        return
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise output_error(folder / LOCK, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise OutputLockedError(
                f"{folder} is being written by another run (process {holder}); wait for it to finish, "
                "or write elsewhere with `--out DIR` (Python: the configuration's `output`)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _HELD[key] = 1
        try:
            yield
        finally:
            _release(key)
    finally:
        os.close(fd)  # closing the descriptor releases the lock (forked workers have exited)


def _release(key: Path) -> None:
    _HELD[key] -= 1
    if not _HELD[key]:
        del _HELD[key]
