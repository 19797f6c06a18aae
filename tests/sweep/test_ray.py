"""`executor: ray` on a local Ray cluster of 2 CPUs started here: the same results as a local sweep, through a worker
killed mid-cell (Ray retries it and the cell resumes from its checkpoint) and a driver killed mid-sweep (the rerun
reuses the finished cells)."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from safedose.cache import Cache
from tests.sweep.test_sweep import _generations, write_config

RAY = str(Path(sys.executable).parent / "ray")
SAFEDOSE = str(Path(sys.executable).parent / "safedose")


def _env() -> dict[str, str]:
    """The test's environment (its SAFEDOSE_CACHE) for the cluster and the drivers; loopback only, so no tokens."""
    return {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _start_cluster(temp: Path, *, num_cpus: int = 2) -> str:
    """`ray start --head` with `num_cpus` CPUs and no GPU on loopback, its files under `temp`; its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    cmd = [RAY, "start", "--head", "--num-cpus", str(num_cpus), "--num-gpus", "0", "--port", str(port),
           "--node-ip-address", "127.0.0.1", "--include-dashboard", "false", "--disable-usage-stats",
           "--temp-dir", str(temp)]  # fmt: skip
    started = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=_env())
    assert started.returncode == 0, started.stderr[-3000:]
    return f"127.0.0.1:{port}"


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: its parent's pid and its command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            found[int(entry.name)] = (int(stat.rpartition(")")[2].split()[1]), cmdline)
    return found


def _cluster_pids(temp: Path) -> set[int]:
    """The processes of the cluster whose files are under `temp`: those naming it on their command line (GCS, raylet,
    monitors) and their descendants (workers and agents)."""
    procs = _processes()
    pids = {pid for pid, (_, cmdline) in procs.items() if str(temp) in cmdline and pid != os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, (parent, _) in procs.items() if parent in pids} - pids
        pids |= more
        grew = bool(more)
    return pids


def _stop_cluster(temp: Path) -> None:
    """Stop the cluster started with `--temp-dir temp`, and only it (`ray stop` stops every Ray on the machine)."""
    pids = _cluster_pids(temp)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 30
        while (pids := {p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)}) and \
                time.monotonic() < deadline:  # fmt: skip
            time.sleep(0.1)
        if not pids:
            return


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Ray cluster of 2 CPUs on loopback, started for these tests and stopped afterwards (only it)."""
    temp = tmp_path_factory.mktemp("ray")
    address = _start_cluster(temp)
    try:
        yield address
    finally:
        _stop_cluster(temp)


def _ray_config(tmp_path: Path, model: Path, run: Path, address: str) -> Path:
    path = write_config(tmp_path, model, run)
    config = yaml.safe_load(path.read_text())
    # one cell per task: the two cells train side by side, and generation, judging and capability each merge two
    # tasks' stores
    config.update(executor="ray", ray={"address": address, "adapters_per_task": 1, "max_retries": 2})
    path.write_text(yaml.safe_dump(config))
    return path


def _task_pids(prefix: str) -> list[int]:
    """The processes of Ray workers running a task whose name starts with `prefix` (Ray's process title)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(f"ray::{prefix}"):
                pids.append(int(entry.name))
    return pids


def _wait(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + 600
    while not ready():
        assert proc.poll() is None, f"the driver ended before {what}: {log.with_suffix('.err').read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _driver(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`safedose sweep CONFIG` with stdout and stderr in LOG.out / LOG.err (Ray relays worker output at length)."""
    cmd = [sys.executable, "-m", "safedose", "sweep", str(config)]
    with log.with_suffix(".out").open("wb") as out, log.with_suffix(".err").open("wb") as err:
        return subprocess.Popen(cmd, stdout=out, stderr=err, env=_env())


def test_ray_sweep_equals_local_through_a_killed_worker_and_driver(
    tiny_model: Path, tmp_path: Path, ray_cluster: str, clean_tiny_run: Path
) -> None:
    local_run, ray_run = clean_tiny_run, tmp_path / "ray"

    config = _ray_config(tmp_path, tiny_model, ray_run, ray_cluster)
    adapters = ray_run / "adapters"
    first, second = tmp_path / "first", tmp_path / "second"
    driver = _driver(config, first)
    # A worker killed mid-cell: Ray runs the task again and train() resumes from the checkpoint.
    _wait(lambda: any(adapters.glob("n8-*/checkpoints/step-*")), driver, first, "the first checkpoint of n8")
    (worker,) = _task_pids("train:n8-s0-instruction")
    os.kill(worker, signal.SIGKILL)
    # The driver killed once the first generation task's rows are merged into the run's store.
    _wait(lambda: _generations(ray_run) > 0, driver, first, "the first generations")
    driver.kill()
    driver.wait()
    stamps = {p: p.stat().st_mtime_ns for p in adapters.glob("*/safedose.json")}
    assert len(stamps) == 2  # both cells finished, n8 through the retried task
    deadline = time.monotonic() + 120  # Ray ends the dead driver's tasks
    while _task_pids("generate:") and time.monotonic() < deadline:
        time.sleep(0.2)

    rerun = _driver(config, second)
    assert rerun.wait(timeout=900) == 0, second.with_suffix(".err").read_text()[-3000:]
    assert "done on ray" in second.with_suffix(".out").read_text()
    assert {p: p.stat().st_mtime_ns for p in adapters.glob("*/safedose.json")} == stamps  # not trained again

    # the same numbers: fp32 sums may differ in the 7th digit (a 1-CPU Ray task sums on one thread)
    metrics = json.loads((ray_run / "results" / "metrics.json").read_text())
    assert _digits(metrics) == _digits(json.loads((local_run / "results" / "metrics.json").read_text()))
    judged = (ray_run / "results" / "judged.jsonl").read_text()
    assert judged == (local_run / "results" / "judged.jsonl").read_text()
    # the driver's store holds every task's rows, as the local sweep's store does
    with Cache(ray_run / "cache.sqlite") as ray_store, Cache(local_run / "cache.sqlite") as local_store:
        for table in ("generations", "verdicts", "capability"):
            assert ray_store.count(table) == local_store.count(table) > 0
    log = [json.loads(line) for line in next(adapters.glob("n8-*/train_log.jsonl")).read_text().splitlines()]
    local_log = [json.loads(line) for line in next((local_run / "adapters").glob("n8-*/train_log.jsonl"))
                 .read_text().splitlines()]  # fmt: skip
    assert [_digits(r.get("loss")) for r in log] == [_digits(r.get("loss")) for r in local_log]


def _digits(value: Any) -> Any:
    """A JSON value with every float rounded to 6 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _digits(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_digits(v) for v in value]
    return value


def test_ray_missing_cluster_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = _ray_config(tmp_path, tiny_model, tmp_path / "run", f"127.0.0.1:{port}")
    proc = subprocess.run([sys.executable, "-m", "safedose", "sweep", str(config)], capture_output=True, text=True,
                          timeout=120, env=_env())  # fmt: skip
    assert proc.returncode == 2
    assert "ray: cannot connect to 127.0.0.1:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_task_store_is_a_private_copy_whose_writes_merge_back(tmp_path: Path) -> None:
    with Cache(tmp_path / "run.sqlite") as run:
        run.put_many("generations", {"a": {"response": "one"}})
        copy = Cache.restore(run.snapshot(), tmp_path / "task" / "cache.sqlite")
        assert copy.get_many("generations", ["a"]) == {"a": {"response": "one"}}
        copy.put_many("generations", {"b": {"response": "two"}})
        copy.put_many("verdicts", {"c": {"label": "refusal"}})
        copy.close()
        assert run.count("generations") == 1  # nothing reached the run's store by itself
        assert copy.written == {"generations": {"b": {"response": "two"}}, "verdicts": {"c": {"label": "refusal"}}}
        run.merge(copy.written)
        assert run.get_many("generations", ["a", "b"]) == {"a": {"response": "one"}, "b": {"response": "two"}}
        assert run.count("verdicts") == 1
    empty = Cache(tmp_path / "empty.sqlite")
    assert Cache.restore(empty.snapshot(), tmp_path / "e2.sqlite").count("generations") == 0


def test_executor_ray_without_ray_installed_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from safedose.errors import SafedoseError
    from safedose.sweep._executor import LocalExecutor, RaySettings, make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray then raises ImportError
    with pytest.raises(SafedoseError, match=r"pip install 'safedose\[ray\]'"):
        make_executor("ray", RaySettings())
    local = make_executor("local", RaySettings())
    assert isinstance(local, LocalExecutor) and local.groups([1, 2, 3]) == [[1, 2, 3]]


def test_stopping_the_test_cluster_leaves_another_ray_running(tmp_path_factory: pytest.TempPathFactory) -> None:
    ours, theirs = tmp_path_factory.mktemp("ours"), tmp_path_factory.mktemp("theirs")  # short: Ray's socket paths
    _start_cluster(theirs, num_cpus=1)  # e.g. a user's sweep on the same machine
    try:
        _start_cluster(ours, num_cpus=1)
        mine, other = _cluster_pids(ours), _cluster_pids(theirs)
        assert mine and other and not mine & other
        _stop_cluster(ours)
        assert not _cluster_pids(ours)
        assert all(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in other)
    finally:
        _stop_cluster(theirs)
    assert not _cluster_pids(theirs)


def test_task_resources_no_node_has_fail_in_one_line_before_submitting(
    tmp_path: Path, ray_cluster: str, tiny_model: Path
) -> None:
    run = tmp_path / "run"
    config = _ray_config(tmp_path, tiny_model, run, ray_cluster)
    for override, needle in [("ray.train.num_gpus=1", "a train task asks 1 CPUs and 1 GPUs (ray.train)"),
                             ("ray.judge.num_cpus=4", "a judge task asks 4 CPUs and 0 GPUs (ray.judge)")]:  # fmt: skip
        cmd = [SAFEDOSE, "sweep", str(config), override]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert proc.stderr.startswith(f"error: ray: {needle}; the cluster has 2 CPUs and 0 GPUs")
        assert proc.stderr.count("\n") == 1 and "No available node types" not in proc.stdout + proc.stderr
        assert not run.exists()  # nothing submitted, nothing written
    # the dry run says it too, against this machine when Ray would start here
    dry = subprocess.run([SAFEDOSE, "sweep", str(config), "ray.address=null", "ray.train.num_gpus=1", "--dry-run"],
                         capture_output=True, text=True, timeout=300, env=_env())  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-3000:]
    flat = " ".join(dry.stdout.split())
    assert "warning: a train task asks 1 CPUs and 1 GPUs (ray.train); this machine has" in flat
    assert "so Ray would wait for it forever" in flat
