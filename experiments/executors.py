"""Where tasks run: ``local`` (forked workers on this machine) or ``ray`` (a Ray cluster).

Both implement :class:`policyagg.parallel.Executor`: a task is ``compute(payload, j)``,
whose output goes to ``store(j, output)``. With :class:`RayExecutor`, ``payload`` (the MDP,
the samples, the sampler) goes to the object store once per :meth:`~RayExecutor.map`
(``ray.put``) and is deserialised once per worker process, into its own memory; each task returns its arrays
(results as the bytes of their files), and ``store`` runs on the driver, which therefore
writes every output and every checkpoint. A task whose worker or node dies is retried
(``max_retries``); an error raised by the task itself is not retried and reaches the caller
as its own type. The numbers are those of a local run: every task gets the same inputs and
one BLAS thread, whatever the node.

Ray is optional (``pip install 'policyagg[ray]'``); it serialises the task functions with
cloudpickle (a transport between processes, never a file: saved outputs stay JSON + NPZ).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from threadpoolctl import threadpool_limits

from policyagg.errors import InvalidProblemError
from policyagg.parallel import Executor, LocalExecutor, Output, Payload, check_workers, keep_freed_memory

#: The executors' names, as the command line takes them.
EXECUTORS = ("local", "ray")
#: Times a task is run again when its worker process or node dies.
MAX_RETRIES = 3


class RayNotInstalledError(InvalidProblemError):
    """The ``ray`` executor was asked for, but Ray is not installed."""


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def _import_ray() -> Any:
    if not ray_available():
        raise RayNotInstalledError(
            "the `ray` executor needs Ray: pip install 'policyagg[ray]' (or 'ray>=2.40'); "
            "or use the local executor (`--executor local`, the default)"
        )
    import ray

    return ray


def ray_init(**options: Any) -> Any:
    """``ray.init(**options)``, from a neutral working directory when the current one holds a
    ``policyagg/`` folder that is not the imported package (a checkout with a non-editable
    install): Ray puts the driver's working directory first on its workers' ``sys.path``, where
    that folder would shadow the installed package and its subpackages."""
    ray = _import_ray()
    import policyagg

    local = Path.cwd() / "policyagg"
    if not local.is_dir() or local.resolve() == Path(policyagg.__file__).parent.resolve():
        return ray.init(**options)
    here = Path.cwd()
    os.chdir(tempfile.gettempdir())
    try:
        return ray.init(**options)
    finally:
        os.chdir(here)


class RayExecutor:
    """Tasks as Ray tasks (one CPU each) on the cluster at ``address``.

    ``address``: ``"auto"`` (a cluster started on this machine with ``ray start``), ``"HOST:PORT"``,
    or ``None`` (connect to the running one if this process already called ``ray.init``, else
    start a private one with ``num_cpus`` CPUs). ``max_retries``: runs of a task whose worker
    died. :meth:`shutdown` (or ``with``) disconnects, and stops a private cluster.
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, *, num_cpus: int | None = None, max_retries: int = MAX_RETRIES
    ) -> None:
        self._ray = ray = _import_ray()
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidProblemError(f"`max_retries` must be a non-negative integer; got {max_retries!r}")
        self.max_retries = max_retries
        self._owns_connection = not ray.is_initialized()
        if self._owns_connection:
            options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING}
            if address is None:
                options["num_cpus"] = check_workers(num_cpus)
            elif num_cpus is not None:
                raise InvalidProblemError("`num_cpus` applies to a private cluster only (no `address`)")
            try:
                ray_init(address=address, **options)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise InvalidProblemError(
                    f"cannot connect to a Ray cluster at {address!r} ({exc}); start one with `ray start --head` "
                    "or give its address as HOST:PORT"
                ) from None
        self._remote = ray.remote(num_cpus=1)(_run_task)

    @property
    def slots(self) -> int:
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def map(
        self,
        compute: Callable[[Payload, int], Output],
        payload: Payload,
        n_tasks: int,
        store: Callable[[int, Output], Any],
    ) -> Iterator[int]:
        """Submit every task, store outputs on the driver as they arrive; yield each ``j``.
        Tasks still pending when the caller stops iterating are cancelled."""
        ray = self._ray
        # once, whatever n_tasks; serialised here so that each worker unpickles its own writable
        # copy (the object store's zero-copy arrays are read-only, and tasks may write, e.g. numba kernels)
        shared = ray.put(ray.cloudpickle.dumps((compute, payload)))
        remote = self._remote.options(max_retries=self.max_retries, retry_exceptions=False)
        pending = {remote.remote([shared], j): j for j in range(n_tasks)}  # boxed: resolved by the worker
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    j = pending.pop(ref)
                    store(j, ray.get(ref))
                    yield j
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def shutdown(self) -> None:
        if self._owns_connection and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


#: The payload of the current map on this worker process: deserialised once, not per task.
_PAYLOAD: dict[str, Any] = {}


def _run_task(boxed: list[Any], j: int) -> Any:
    """On a Ray worker: task ``j`` of the map whose ``(compute, payload)`` is ``boxed[0]``."""
    import ray

    ref = boxed[0]
    key = ref.hex()
    if key not in _PAYLOAD:
        keep_freed_memory()  # as a local worker: the map's batches reuse their arrays
        _PAYLOAD.clear()
        _PAYLOAD[key] = ray.cloudpickle.loads(ray.get(ref))
    compute, payload = _PAYLOAD[key]
    with threadpool_limits(limits=1, user_api="blas"):  # as a local worker: same operations, same bits
        return compute(payload, j)


def make_executor(name: str = "local", *, address: str | None = None, workers: int | None = None) -> Executor:
    """The executor called ``name`` (:data:`EXECUTORS`): local with ``workers`` processes, or Ray
    at ``address`` (``None``: a private cluster of ``workers`` CPUs on this machine)."""
    if name == "local":
        if address is not None:
            raise InvalidProblemError("`--address` applies to the ray executor only; add `--executor ray`")
        return LocalExecutor(check_workers(workers))
    if name == "ray":
        return RayExecutor(address, num_cpus=workers if address is None else None)
    raise InvalidProblemError(f"`executor` must be one of {', '.join(EXECUTORS)}; got {name!r}")


def close_executor(executor: Executor) -> None:
    """Disconnect from the cluster (and stop a private one); nothing for the local executor."""
    shutdown = getattr(executor, "shutdown", None)
    if callable(shutdown):
        shutdown()
