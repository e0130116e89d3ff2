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
from policyagg import solvers
from policyagg.experiments.compare import attention_problem
from policyagg.parallel import run_tasks, shared_empty
from policyagg.sampling import sample_policy_returns

problem = solvers.with_ranges(attention_problem("a", seed=0))
samples = sample_policy_returns(problem, 2000, rng=0, workers=1)
parent = solvers.RULES["approval"](problem, samples, alpha=0.9).returns  # HiGHS's scheduler starts here
out = shared_empty((2, problem.n_agents))
def task(j):
    out[j] = solvers.RULES["approval"](problem, samples, alpha=0.9).returns
    return j
list(run_tasks(task, 2, workers=2, kind="process"))
assert np.array_equal(out[0], parent) and np.array_equal(out[1], parent), (out, parent)
"""


@pytest.mark.skipif(not processes_available(), reason="no fork")
def test_highs_mip_in_forked_workers_after_the_parent_used_highs():
    # Without resetting HiGHS's global scheduler in the worker, the MIP waits forever for
    # scheduler threads that did not survive the fork: run it in a subprocess with a timeout.
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-P", "-c", MILP_AFTER_FORK], cwd=root, timeout=240, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
