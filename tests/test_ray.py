"""The Ray executor on a real Ray on this machine: same files as a local run, retries, resume,
and a simulated two-node cluster (object transfer, a killed worker node).

Skipped when Ray is not installed (``pip install 'policyagg[ray]'``). Every fixture shuts Ray
down, so no Ray process outlives this module.
"""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'policyagg[ray]' to run these tests")

from policyagg.chains import MixingWarning
from policyagg.experiments.executors import RayExecutor, close_executor, make_executor, ray_init
from policyagg.experiments.run import run_config
from policyagg.parallel import LocalExecutor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_experiments import small_config

# Ray workers cannot import this test module: send its task functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: Fields that measure time or the pool's size: the only ones allowed to differ between runs.
TIMING_SUFFIXES = ("_time", "seconds")
RAY_INIT = {"include_dashboard": False, "logging_level": "warning", "object_store_memory": 200 * 2**20}


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not k.endswith(TIMING_SUFFIXES) and k != "workers"}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def assert_same_outputs(a: Path, b: Path) -> None:
    """Every file of run folder ``a`` has its twin in ``b`` with the same content: arrays
    bitwise, JSON (and the samples' metadata) equal once timings are dropped, tables
    byte for byte. (Figures are drawn from the same tables; their files are not compared.)"""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != ".lock")
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != ".lock")
    compared = 0
    for name in files:
        x, y = a / name, b / name
        if name.suffix == ".npz":
            with np.load(x) as dx, np.load(y) as dy:
                assert sorted(dx.files) == sorted(dy.files), name
                for key in dx.files:
                    if key == "meta":
                        assert _without_timings(json.loads(str(dx[key]))) == _without_timings(json.loads(str(dy[key])))
                    else:
                        np.testing.assert_array_equal(dx[key], dy[key], err_msg=str(name))
        elif name.name == "manifest.json":
            assert json.loads(x.read_text()).keys() == json.loads(y.read_text()).keys()
        elif name.name == "config.json":  # the same configuration, but for its output folder
            assert {**json.loads(x.read_text()), "output": ""} == {**json.loads(y.read_text()), "output": ""}
        elif name.suffix == ".json":
            assert _without_timings(json.loads(x.read_text())) == _without_timings(json.loads(y.read_text())), name
        elif name.suffix in (".csv", ".md"):
            assert x.read_bytes() == y.read_bytes(), name
        else:
            continue
        compared += 1
    assert compared >= 10


@pytest.fixture(scope="module")
def local_ray():
    """A private Ray of 2 CPUs for this module's tests, shut down after them."""
    ray_init(num_cpus=2, **RAY_INIT)
    try:
        yield RayExecutor()
    finally:
        ray.shutdown()


def _square(payload, j):
    return payload["base"][j] ** 2


def test_map_stores_every_output_once_on_the_driver(local_ray):
    payload = {"base": np.arange(10.0)}
    out = np.full(10, np.nan)  # a plain array: `store` runs here, on the driver
    seen = list(local_ray.map(_square, payload, 10, lambda j, value: out.__setitem__(j, value)))
    assert sorted(seen) == list(range(10))
    np.testing.assert_array_equal(out, np.arange(10.0) ** 2)
    assert local_ray.slots == 2


def test_a_run_on_ray_writes_the_files_of_a_local_run(tmp_path, local_ray):
    config = small_config(tmp_path / "local")
    run_config(config, progress=False, executor=LocalExecutor(2))
    run_config(small_config(tmp_path / "ray"), progress=False, executor=local_ray)
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")


@pytest.mark.parametrize(
    "measure, options",
    [
        ("policy", {"method": "dense", "batch_size": 16}),
        ("policy", {"method": "krylov", "batch_size": 16}),
        ("policy", {"method": "sparse", "batch_size": 16}),  # its SuperLU is rebuilt on the workers
        pytest.param(
            "volume", {"chains": 3, "burn_in": 2, "thin": 1}, marks=pytest.mark.slow
        ),  # numba compiles per worker
    ],
)
def test_sampling_on_ray_is_bitwise_local(local_ray, measure, options):
    from policyagg import solvers
    from policyagg.experiments.compare import attention_problem
    from policyagg.measures import sample_returns

    problem = solvers.with_ranges(attention_problem("b", n_agents=3, seed=1, gamma=1.0, n_sites=3, n_phases=3))
    kwargs = dict(measure=measure, rng=5, progress=False, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MixingWarning)  # a short chain: mixing is not the point here
        local = sample_returns(problem, 120, workers=1, **kwargs)
        remote = sample_returns(problem, 120, executor=local_ray, **kwargs)
    np.testing.assert_array_equal(remote.values, local.values)


def test_a_sweep_on_ray_writes_the_files_of_a_local_sweep(tmp_path, local_ray):
    from policyagg.experiments.sweep import parse_sweep, run_sweep

    base = small_config(tmp_path / "unused", seeds=[0]) | {"rules": [{"label": "approval", "rule": "approval"}]}
    grid = {"rules.approval.alpha": [0.5, 0.9]}
    for name, executor in (("local", LocalExecutor(2)), ("ray", local_ray)):
        sweep = parse_sweep({"name": "s", "base": base, "output": str(tmp_path / name), "grid": grid})
        run_sweep(sweep, executor=executor, progress=False, figures=False)
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")


def _die_once(payload, j):
    """Kill this worker process on the first attempt at task 1 (a marker file remembers it)."""
    marker = Path(payload) / f"attempt-{j}"
    if j == 1 and not marker.exists():
        marker.write_text("died")
        os.kill(os.getpid(), signal.SIGKILL)
    return j * 10


def test_a_task_whose_worker_dies_is_retried(tmp_path, local_ray):
    out = {}
    assert sorted(local_ray.map(_die_once, str(tmp_path), 3, out.__setitem__)) == [0, 1, 2]
    assert out == {0: 0, 1: 10, 2: 20} and (tmp_path / "attempt-1").exists()
    no_retry = RayExecutor(max_retries=0)  # joins the running Ray
    with pytest.raises(ray.exceptions.RayError):
        list(no_retry.map(_die_once, str(tmp_path / "fresh"), 3, out.__setitem__))


def _fail(payload, j):
    from policyagg.errors import InvalidProblemError

    raise InvalidProblemError(f"task {j} is wrong")


def test_an_error_in_a_task_reaches_the_caller_as_its_type(local_ray):
    from policyagg.errors import InvalidProblemError

    with pytest.raises(InvalidProblemError, match="is wrong"):
        list(local_ray.map(_fail, None, 2, lambda j, v: None))


class _StopAfter:
    """An executor that stops the driver (KeyboardInterrupt) after ``n`` stored tasks."""

    def __init__(self, executor, n):
        self.executor, self.n, self.name = executor, n, "stopping"

    @property
    def slots(self):
        return self.executor.slots

    def map(self, compute, payload, n_tasks, store):
        for count, j in enumerate(self.executor.map(compute, payload, n_tasks, store), 1):
            yield j
            if count == self.n and n_tasks > self.n:
                raise KeyboardInterrupt


class _Counting:
    def __init__(self, executor):
        self.executor, self.name, self.tasks = executor, "counting", []

    @property
    def slots(self):
        return self.executor.slots

    def map(self, compute, payload, n_tasks, store):
        self.tasks.append(n_tasks)
        return self.executor.map(compute, payload, n_tasks, store)


def test_an_interrupted_driver_resumes_from_its_checkpoints(tmp_path, local_ray):
    config = small_config(tmp_path / "ray")
    with pytest.raises(KeyboardInterrupt):
        run_config(config, progress=False, figures=False, executor=_StopAfter(local_ray, 2))
    counting = _Counting(local_ray)
    run_config(config, progress=False, figures=False, executor=counting)
    # samples of both seeds and some rules were checkpointed: only the rest ran again
    assert counting.tasks and sum(counting.tasks) < 6
    run_config(small_config(tmp_path / "local"), progress=False, figures=False, executor=LocalExecutor(1))
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")


def test_make_executor_checks_its_arguments():
    from policyagg.errors import InvalidProblemError

    with pytest.raises(InvalidProblemError, match="executor"):
        make_executor("dask")
    with pytest.raises(InvalidProblemError, match="--executor ray"):
        make_executor("local", address="auto")
    executor = make_executor("local", workers=2)
    assert executor.slots == 2
    close_executor(executor)


# ----------------------------------------------------------------------------- two nodes
@pytest.fixture(scope="module")
def two_nodes():
    """A simulated cluster on this machine: a head node and a worker node of 1 CPU each."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": 100 * 2**20, "include_dashboard": False},
    )
    worker = cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
    try:
        ray_init(address=cluster.address, logging_level="warning")
        cluster.wait_for_nodes()
        yield cluster, worker
    finally:
        ray.shutdown()
        cluster.shutdown()


def _where(payload, j):
    time.sleep(0.3)  # long enough for both nodes to take tasks
    return ray.get_runtime_context().get_node_id(), float(payload.sum()), j


@pytest.mark.slow
def test_two_nodes_share_the_work_and_the_payload(two_nodes, tmp_path):
    payload = np.arange(2**20, dtype=float)  # 8 MB: from the driver's object store to the other node's
    out = {}
    executor = RayExecutor()
    assert executor.slots == 2
    list(executor.map(_where, payload, 8, out.__setitem__))
    assert len({node for node, _, _ in out.values()}) == 2
    assert all(total == payload.sum() and out[j][2] == j for j, (_, total, _) in out.items())
    run_config(small_config(tmp_path / "ray"), progress=False, executor=executor)
    run_config(small_config(tmp_path / "local"), progress=False, executor=LocalExecutor(1))
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")


def _slow_square(payload, j):
    time.sleep(1.0)
    return j * j


@pytest.mark.slow
def test_a_killed_worker_node_loses_no_task(two_nodes):
    cluster, worker = two_nodes
    executor = RayExecutor()
    out = {}
    stream = executor.map(_slow_square, None, 6, out.__setitem__)
    next(stream)  # work is under way on both nodes
    cluster.remove_node(worker)  # SIGKILL of the node's processes: its running task is retried on the head
    rest = list(stream)
    assert len(rest) == 5 and out == {j: j * j for j in range(6)}


@pytest.mark.slow
def test_a_killed_driver_resumes_on_the_cluster(two_nodes, tmp_path):
    """``policyagg run --executor ray --address`` killed by SIGKILL mid-run, then run again:
    the same files as a local run. (The driver is a process of its own, joining the cluster.)"""
    cluster, _ = two_nodes
    config_path = tmp_path / "tiny.toml"
    config = small_config(tmp_path / "ray", seeds=[0, 1, 2], measure={"name": "policy", "samples": 3000})
    config_path.write_text(_toml(config))
    # -P: not the checkout root on sys.path (its policyagg/ folder would shadow the installed package)
    command = [sys.executable, "-P", "-m", "policyagg.experiments.cli", "run", str(config_path)]
    command += ["--executor", "ray", "--address", cluster.address]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = tmp_path / "ray" / "manifest.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        if manifest.exists() and "seed0/samples.npz" in manifest.read_text():
            break
        time.sleep(0.1)
    assert driver.poll() is None, f"the run ended before it could be interrupted: {driver.stderr.read()[-2000:]!r}"
    driver.kill()
    driver.wait()
    driver.stderr.close()
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    run_config(
        small_config(tmp_path / "local", seeds=[0, 1, 2], measure={"name": "policy", "samples": 3000}),
        progress=False,
        executor=LocalExecutor(2),
    )
    assert_same_outputs(tmp_path / "local", tmp_path / "ray")


def _toml(config: dict) -> str:
    env = config["environment"]
    lines = [
        f'name = "{config["name"]}"',
        f'output = "{config["output"]}"',
        f"seeds = {config['seeds']}",
        "[environment]",
        f'id = "{env["id"]}"',
        f"kwargs = {{ n_sites = {env['kwargs']['n_sites']}, n_phases = {env['kwargs']['n_phases']} }}",
        f"gamma = {env['gamma']}",
        "[agents]",
        f'population = "{config["agents"]["population"]}"',
        f"n_agents = {config['agents']['n_agents']}",
        "[measure]",
        f'name = "{config["measure"]["name"]}"',
        f"samples = {config['measure']['samples']}",
    ]
    for rule in config["rules"]:
        options = ", ".join(f"{k} = {v}" for k, v in rule.get("options", {}).items())
        lines += ["[[rules]]", f'label = "{rule["label"]}"', f'rule = "{rule["rule"]}"', f"options = {{ {options} }}"]
    return "\n".join(lines) + "\n"
