import platform
import resource
from pathlib import Path

import numpy as np
import pytest

from policyagg.errors import InvalidProblemError
from policyagg.parallel import processes_available, run_tasks, shared_empty


def _fill(out):
    def task(j):
        out[j] = np.random.default_rng([j, 7]).random(3)
        return j

    return task


@pytest.mark.parametrize(
    "kind", ["thread", pytest.param("process", marks=pytest.mark.skipif(not processes_available(), reason="no fork"))]
)
def test_results_do_not_depend_on_workers(kind):
    serial = shared_empty((9, 3))
    assert sorted(run_tasks(_fill(serial), 9, workers=1)) == list(range(9))
    parallel = shared_empty((9, 3))
    assert sorted(run_tasks(_fill(parallel), 9, workers=2, kind=kind)) == list(range(9))
    np.testing.assert_array_equal(parallel, serial)
    assert np.unique(serial).size == 27  # every task wrote its own row


def test_worker_error_propagates():
    def task(j):
        if j == 3:
            raise ValueError("task 3 failed")
        return j

    with pytest.raises(ValueError, match="task 3"):
        list(run_tasks(task, 5, workers=2))


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_workers(workers):
    with pytest.raises(InvalidProblemError, match="workers"):
        list(run_tasks(lambda j: j, 3, workers=workers))


MILP_AFTER_FORK = """
import numpy as np
from policyagg.parallel import run_tasks, shared_empty
from policyagg.solvers.lp import LinearProgram, solve

# a small 0/1 knapsack that HiGHS branches on (approval on the attention model, used here
# before, now proves everyone approves with one LP and solves no MIP)
rng = np.random.default_rng(0)
W = rng.integers(100, 1000, (3, 15)).astype(float)
lp = LinearProgram.build(
    W.mean(0) + rng.integers(0, 30, 15), A_ub=W, b_ub=W.sum(1) / 2, bounds=(0, 1),
    integrality=np.ones(15, bool), maximize=True, name="knapsack",
)
parent = solve(lp).x  # HiGHS's scheduler starts here
out = shared_empty((2, lp.n_cols))
def task(j):
    out[j] = solve(lp).x
    return j
list(run_tasks(task, 2, workers=2, kind="process"))
assert np.array_equal(out[0], parent) and np.array_equal(out[1], parent), (out, parent)
"""


@pytest.mark.skipif(not processes_available(), reason="no fork")
def test_highs_mip_in_forked_workers_after_the_parent_used_highs():
    # Without stopping HiGHS's scheduler before the fork, the MIP waits forever for scheduler
    # threads that did not survive it: run it in a subprocess with a timeout.
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-P", "-c", MILP_AFTER_FORK], cwd=root, timeout=240, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux's /proc lists threads")
def test_no_highs_scheduler_thread_lives_across_a_fork():
    """HiGHS's scheduler is stopped, its threads joined, before every fork: a child that touched
    the inherited one could lock a mutex a parent's thread held at the fork, and wait forever
    (about 1 fork in 1,500 made within 10 ms of a solve did, when the child reset it)."""
    import os

    import highspy

    from policyagg.solvers.lp import LinearProgram, solve

    def threads() -> set[str]:
        return set(os.listdir("/proc/self/task"))

    highspy.Highs.resetGlobalScheduler(True)  # this process's earlier tests may have started one
    rng = np.random.default_rng(0)
    W = rng.integers(100, 1000, (3, 15)).astype(float)
    knapsack = LinearProgram.build(
        W.mean(0), A_ub=W, b_ub=W.sum(1) / 2, bounds=(0, 1), integrality=np.ones(15, bool), maximize=True
    )
    before = threads()
    assert solve(knapsack).status == "optimal"
    scheduler = threads() - before
    if not scheduler:
        pytest.skip("HiGHS runs on one thread here (one core): no scheduler thread to stop")
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert not scheduler & threads(), "HiGHS's scheduler threads outlived the fork"
    assert solve(knapsack).status == "optimal"  # the next solve starts a new one


@pytest.mark.skipif(
    not processes_available() or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt, forked workers"
)
def test_forked_workers_reuse_freed_arrays():
    """A worker that allocates and frees the same megabyte-sized arrays keeps them in its heap:
    eight 4 MiB arrays a round, 20 rounds, are about 80,000 page faults where glibc returns them
    to the kernel (its default once more than twice the largest freed block is free)."""
    faults = shared_empty(2, dtype=np.int64)

    def task(j: int) -> int:
        def rounds(n: int) -> int:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(n):
                arrays = [np.ones(2**19) for _ in range(8)]
                del arrays
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

        rounds(1)  # the heap grows once
        faults[j] = rounds(20)
        return j

    list(run_tasks(task, 2, workers=2, kind="process"))
    assert faults.max() < 2 * 1024  # the pages of half an array; 20 rounds of re-faulting would be 163,840


def test_keep_freed_memory_is_a_no_op_off_linux(monkeypatch):
    """The command calls it on every platform: elsewhere it changes nothing and says so."""
    import policyagg.parallel as parallel

    monkeypatch.setattr(parallel.sys, "platform", "win32")
    assert parallel.keep_freed_memory() is False
