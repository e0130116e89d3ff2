"""Independent, seeded tasks on several cores.

Tasks are numbered ``0..n_tasks-1`` and write their output into arrays made by
:func:`shared_empty`, so results never travel through a pipe (no pickling of data) and do
not depend on which worker ran which task. On platforms with ``fork`` the workers are
processes (numpy and scipy release the GIL only in their large kernels, so threads scale
poorly on the many small calls of a sampler); elsewhere they are threads.

:class:`Executor` is the seam for other engines: a task is split into ``compute(payload, j)``
(pure, may run on another machine) and ``store(j, result)`` (writes the result where the caller
wants it). :class:`LocalExecutor` runs both on the forked workers (``store`` must then write
to :func:`shared_empty` arrays or to files); the Ray executor
(:mod:`policyagg.experiments.executors`) runs ``compute`` on the cluster and ``store`` on the
driver. Either way the numbers are those of a serial run.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor as PoolExecutor
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
from numpy.typing import DTypeLike
from threadpoolctl import threadpool_limits

from policyagg.errors import InvalidProblemError, check_count

#: Most workers used when the caller does not say.
MAX_DEFAULT_WORKERS = 4
#: glibc malloc: blocks up to this size come from the heap (its largest allowed value, 32 MiB on 64 bit) ...
HEAP_MMAP_THRESHOLD = 32 * 2**20
#: ... and freed heap memory is kept until this much is free at its top.
HEAP_TRIM_THRESHOLD = 64 * 2**20
KINDS = ("auto", "process", "thread")

_task: Callable[[int], int] | None = None  # the running task, inherited by forked workers

Payload = TypeVar("Payload")
Output = TypeVar("Output")


def default_workers() -> int:
    """The usable CPU count (respecting affinity), at most :data:`MAX_DEFAULT_WORKERS`."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return max(1, min(usable, MAX_DEFAULT_WORKERS))


def check_workers(workers: int | None) -> int:
    """``workers`` as a positive int (``None`` -> :func:`default_workers`)."""
    return default_workers() if workers is None else check_count("workers", workers)


def processes_available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def shared_empty(shape: int | tuple[int, ...], dtype: DTypeLike = float) -> np.ndarray:
    """An uninitialised array in anonymous shared memory: writes by forked workers are seen
    by the parent. (Freed when the array is garbage collected.)"""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = mmap.mmap(-1, max(size, 1))  # MAP_SHARED | MAP_ANONYMOUS on Unix
    return np.frombuffer(buffer, dtype=dtype, count=int(np.prod(shape, dtype=np.int64))).reshape(shape)


def _die_with_parent() -> None:
    """Linux: ask the kernel to kill this worker when its parent dies, so a killed run leaves
    no orphan workers behind (they would hold its output pipes open)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def keep_freed_memory() -> bool:
    """glibc (Linux): keep freed arrays up to :data:`HEAP_MMAP_THRESHOLD` in this process's heap for
    reuse (``mallopt``), instead of returning them to the kernel, which a process that allocates and
    frees the same megabyte-sized arrays for every batch then page-faults in again (zeroed) each time.
    In ``reproduce --full --seeds 1`` on 2 cores that was 6.1 million page faults and 11.6 s of system
    time, about a third of the sampling. At most :data:`HEAP_TRIM_THRESHOLD` stays free at the heap's
    top, so peak memory stayed where it was (``reproduce --full``, ``bench scale --sites 9``).
    Returns whether the settings took (False off Linux, or where the C library lacks ``mallopt``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
    return bool(mallopt(M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD))


def _worker_init() -> None:
    # Libraries whose state does not survive fork repair it with `os.register_at_fork`
    # (the LP layer, policyagg.solvers.lp, stops HiGHS's task scheduler before every fork that way).
    _die_with_parent()
    keep_freed_memory()  # the workers are ours: their batches reuse the same arrays


def _run(index: int) -> int:
    task = _task
    if task is None:
        raise RuntimeError("a worker ran outside `run_tasks` (no task is set)")
    with threadpool_limits(limits=1, user_api="blas"):
        return task(index)


def run_tasks(
    task: Callable[[int], int], n_tasks: int, *, workers: int | None = None, kind: str = "auto"
) -> Iterator[int]:
    """Run ``task(j)`` for ``j in range(n_tasks)``; yield each task's (small int) return value
    as it completes, e.g. for a progress bar.

    ``kind``: ``"process"`` (forked workers; outputs must go to :func:`shared_empty` arrays),
    ``"thread"``, or ``"auto"`` (processes where ``fork`` exists, else threads). One worker
    runs the tasks in order in this process. BLAS is limited to one thread per worker.
    """
    global _task
    if kind not in KINDS:
        raise InvalidProblemError(f"`kind` must be one of {', '.join(KINDS)}; got {kind!r}")
    workers = min(check_workers(workers), max(n_tasks, 1))
    if workers == 1:
        with threadpool_limits(limits=1, user_api="blas"):
            for j in range(n_tasks):
                yield task(j)
        return
    if kind == "auto":
        kind = "process" if processes_available() else "thread"
    if kind == "process" and not processes_available():
        raise InvalidProblemError(
            "`kind='process'` needs the 'fork' start method, which this platform lacks; use kind='thread'"
        )
    if _task is not None:
        raise RuntimeError("run_tasks is not re-entrant: a parallel run is already in progress")
    _task = task
    try:
        pool: PoolExecutor
        if kind == "process":
            pool = ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init
            )
        else:
            pool = ThreadPoolExecutor(workers)
        with pool:
            futures = [pool.submit(_run, j) for j in range(n_tasks)]
            try:
                for future in as_completed(futures):
                    yield future.result()
            finally:
                for future in futures:
                    future.cancel()
    finally:
        _task = None


class Executor(Protocol):
    """Runs ``n_tasks`` independent tasks: ``store(j, compute(payload, j))`` for every ``j``.

    ``compute`` must depend on ``payload`` and ``j`` only (so any worker, on any machine,
    gives the same output); ``payload`` is shipped to the workers once per :meth:`map`, not
    once per task. ``store`` may run on a worker (local) or on the driver (Ray): it must write
    only to :func:`shared_empty` arrays or files. :meth:`map` yields each ``j`` once stored,
    in completion order.
    """

    @property
    def name(self) -> str:
        """``"local"``, ``"ray"``, ..."""
        ...

    @property
    def slots(self) -> int:
        """Tasks that can run at once (to size the tasks)."""
        ...

    def map(
        self,
        compute: Callable[[Payload, int], Output],
        payload: Payload,
        n_tasks: int,
        store: Callable[[int, Output], Any],
    ) -> Iterator[int]: ...


@dataclass(frozen=True)
class LocalExecutor:
    """Today's pool on this machine (:func:`run_tasks`): ``workers`` forked processes (threads
    where ``fork`` is missing); ``compute`` and ``store`` both run on the worker, which
    inherits ``payload`` by fork (nothing is pickled)."""

    workers: int | None = None
    kind: str = "auto"
    name: str = "local"

    @property
    def slots(self) -> int:
        return check_workers(self.workers)

    def map(
        self,
        compute: Callable[[Payload, int], Output],
        payload: Payload,
        n_tasks: int,
        store: Callable[[int, Output], Any],
    ) -> Iterator[int]:
        def task(j: int) -> int:
            store(j, compute(payload, j))
            return j

        return run_tasks(task, n_tasks, workers=self.workers, kind=self.kind)


def resolve_executor(executor: Executor | None, workers: int | None = None) -> Executor:
    """``executor``, or a :class:`LocalExecutor` with ``workers`` when it is ``None``."""
    if executor is None:
        return LocalExecutor(check_workers(workers))
    if not callable(getattr(executor, "map", None)):
        raise InvalidProblemError(
            f"`executor` must be an Executor (LocalExecutor, or policyagg.experiments.executors.RayExecutor); "
            f"got {executor!r}"
        )
    return executor
