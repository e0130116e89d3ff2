import numpy as np
import pytest

from policyagg.errors import InvalidProblemError
from policyagg.parallel import processes_available, run_tasks, shared_empty


def _fill(out):
    def task(j):
        out[j] = np.random.default_rng([j, 7]).random(3)
        return j
    return task


@pytest.mark.parametrize("kind", ["thread", pytest.param("process", marks=pytest.mark.skipif(
    not processes_available(), reason="no fork"))])
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
