"""Release jobs on a real Spark standalone cluster: one master and two workers on 127.0.0.1.

The cluster runs from the installed pyspark's own Spark distribution; each job goes through
`spark-submit` with the packaged environment archive (`scripts/package.sh`) shipped to the
executors and the packaged `jobs/submit.py` as the main. Three submissions share the
cluster: a plain one, one with aggressive speculative execution, and one whose executor
is killed while it runs tasks. Every release must verify against its manifest.

No SparkSession is created in this process: the driver is spark-submit's own process.
Every process the test starts (master, workers, and the executors and Python workers they
start) is stopped by its id at the end, even on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pyspark
import pytest
import yaml

from jobs.cli import main
from pipelines.errors import ExitCode

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SPARK_HOME = Path(pyspark.__file__).resolve().parent
HOST = "127.0.0.1"
# One loopback address per worker: Spark never runs a speculative copy of a task on the
# host that runs the original, so the workers must look like two hosts.
WORKER_HOSTS = ("127.0.0.1", "127.0.0.2")
START_TIMEOUT = 120.0
JOB_TIMEOUT = 600.0


# --- processes ------------------------------------------------------------------------


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (2nd field) may hold spaces: the ppid follows the last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for(what: str, check: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def spark_env(tmp: Path, host: str = HOST) -> dict[str, str]:
    """The environment of the cluster's processes: nothing from the test's Python setup."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYSPARK_", "SPARK_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    conf_dir = tmp / "spark-conf"  # empty: no spark-defaults.conf from anywhere else
    conf_dir.mkdir(exist_ok=True)
    env |= {
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_CONF_DIR": str(conf_dir),
        "SPARK_LOCAL_IP": host,
        "SPARK_LOCAL_DIRS": str(tmp / "spark-local"),
        "SPARK_DAEMON_MEMORY": "512m",
    }
    return env


@dataclass
class Cluster:
    """A standalone master and workers, started as subprocesses with known pids."""

    tmp: Path
    workers: tuple[str, ...] = WORKER_HOSTS
    master_port: int = field(default_factory=free_port)
    master_ui_port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    work_dirs: list[Path] = field(default_factory=list)
    # Processes started by the workers (executors, Python workers) seen while running.
    seen: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"spark://{HOST}:{self.master_port}"

    def master_json(self) -> dict[str, Any]:
        state: dict[str, Any] = get_json(f"http://{HOST}:{self.master_ui_port}/json")
        return state

    def _start(self, name: str, args: list[str], host: str = HOST) -> None:
        log = (self.tmp / f"{name}.log").open("wb")
        command = [str(SPARK_HOME / "bin" / "spark-class"), *args]
        # spark-class execs the JVM, so the Popen pid is the JVM's pid.
        self.processes.append(
            subprocess.Popen(
                command, env=spark_env(self.tmp, host), stdout=log, stderr=subprocess.STDOUT
            )
        )
        log.close()

    def start(self) -> None:
        self._start(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                HOST,
                "--port",
                str(self.master_port),
                "--webui-port",
                str(self.master_ui_port),
            ],
        )
        wait_for("the master", lambda: self.master_json()["status"] == "ALIVE")
        for index, host in enumerate(self.workers):
            work_dir = self.tmp / f"worker{index}"
            work_dir.mkdir()
            self.work_dirs.append(work_dir)
            self._start(
                f"worker{index}",
                [
                    "org.apache.spark.deploy.worker.Worker",
                    self.url,
                    "--host",
                    host,
                    "--port",
                    str(free_port(host)),
                    "--webui-port",
                    str(free_port(host)),
                    "--cores",
                    "1",
                    "--memory",
                    "1g",
                    "--work-dir",
                    str(work_dir),
                ],
                host,
            )
        wait_for(
            "the workers",
            lambda: self.master_json()["aliveworkers"] == len(self.workers),
        )

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.processes[1:]]

    def executor_pids(self) -> dict[str, int]:
        """Executor id -> pid of the executor JVMs the workers run now."""
        found = {}
        for worker in self.worker_pids:
            for pid in children(worker):
                args = cmdline(pid)
                if "--executor-id" in args:
                    found[args[args.index("--executor-id") + 1]] = pid
        return found

    def remember_descendants(self) -> None:
        for worker in self.worker_pids:
            self.seen.update(descendants(worker))

    def stop(self) -> None:
        """Stop every process this cluster started, by pid: workers, then the master."""
        self.remember_descendants()
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=30)
        # Executors and Python workers exit with their worker; kill any that did not.
        for pid in self.seen:
            if alive(pid):
                kill_pid(pid)


# --- fixtures ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Package:
    wheel: Path
    archive: Path


@pytest.fixture(scope="module")
def package() -> Package:
    """The wheel and the environment archive, built by scripts/package.sh unless fresh."""
    env = dict(os.environ, VENV=sys.prefix)
    build = subprocess.run(
        ["bash", str(REPO / "scripts" / "package.sh"), "--if-stale"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-4000:]
    (wheel,) = (REPO / "dist").glob("dprelease-*-py3-none-any.whl")
    (archive,) = (REPO / "dist").glob("dprelease-*-env-*.tar.gz")
    return Package(wheel, archive)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("standalone")
    cluster = Cluster(tmp)
    try:
        try:
            cluster.start()
        except Exception:
            for log in sorted(tmp.glob("*.log")):
                sys.stderr.write(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}\n")
            raise
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def submit_main(package: Package, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """jobs/submit.py as packaged in the wheel."""
    target = tmp_path_factory.mktemp("main") / "submit.py"
    with zipfile.ZipFile(package.wheel) as wheel:
        target.write_bytes(wheel.read("jobs/submit.py"))
    return target


@pytest.fixture(scope="module")
def events_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 users, each with a few rows in some of five keys."""
    rows = [
        {"user": f"u{u:03d}", "key": f"k{(u + i) % 5}", "value": float((u * 7 + i) % 11)}
        for u in range(200)
        for i in range(1 + u % 4)
    ]
    schema = pa.schema([("user", pa.string()), ("key", pa.string()), ("value", pa.float64())])
    path = tmp_path_factory.mktemp("input") / "events.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


# --- submissions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    returncode: int
    stdout: str
    stderr: str
    event_log: list[dict[str, Any]]
    killed_executor: str | None = None
    seconds: float = 0.0

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.event_log if e.get("Event") == kind]


def write_config(root: Path, input_path: Path, name: str) -> Path:
    raw = {
        "release": {"name": name, "output_root": str(root / "releases"), "data_period": "2026-11"},
        "input": {"path": str(input_path)},
        "privacy_unit": {"column": "user"},
        "partition_columns": ["key"],
        "contribution_bounds": {"max_partitions_per_unit": 2, "max_rows_per_unit_per_partition": 2},
        "metrics": [
            {"metric": "count"},
            {"metric": "sum", "column": "value", "lower": 0.0, "upper": 10.0},
        ],
        "budget": {"epsilon": 2.0, "delta": 1e-6},
        "ledger": {"dataset": "cluster-events", "lifetime_budget": {"epsilon": 100, "delta": 1e-3}},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def submit(
    cluster: Cluster,
    package: Package,
    submit_main: Path,
    config: Path,
    *,
    conf: dict[str, str] | None = None,
    kill_an_executor: bool = False,
) -> Submission:
    """One `spark-submit` of `dprelease run CONFIG` to the cluster (client deploy mode)."""
    tmp = config.parent
    event_dir = tmp / f"events-{config.stem}"
    event_dir.mkdir()
    ui_port = free_port()
    settings = {
        # The Python of the executors: the archive, unpacked in each executor's directory.
        "spark.pyspark.python": "./environment/bin/python",
        # The driver runs here, in client mode, with the repository's venv.
        "spark.pyspark.driver.python": sys.executable,
        "spark.driver.host": HOST,
        "spark.driver.bindAddress": HOST,
        "spark.driver.memory": "1g",
        "spark.executor.memory": "512m",
        "spark.executor.cores": "1",
        "spark.ui.port": str(ui_port),
        "spark.sql.shuffle.partitions": "4",
        # Start the job only once both executors are up, so both workers run tasks.
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": event_dir.as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    } | (conf or {})
    command = [
        str(SPARK_HOME / "bin" / "spark-submit"),
        "--master",
        cluster.url,
        "--deploy-mode",
        "client",
        "--properties-file",
        str(REPO / "conf" / "spark" / "cluster.conf"),
        "--archives",
        f"{package.archive}#environment",
    ]
    for key, value in settings.items():
        command += ["--conf", f"{key}={value}"]
    command += [str(submit_main), "run", str(config)]
    stdout_path, stderr_path = tmp / f"{config.stem}.out", tmp / f"{config.stem}.err"
    started = time.monotonic()
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        driver = subprocess.Popen(command, cwd=tmp, env=spark_env(tmp), stdout=out, stderr=err)
        killed = None
        try:
            if kill_an_executor:
                killed = kill_busy_executor(cluster, driver, stdout_path, ui_port)
            driver.wait(timeout=JOB_TIMEOUT)
        finally:
            cluster.remember_descendants()
            if driver.poll() is None:  # timed out or failed: stop the driver and its Python
                leftovers = descendants(driver.pid)
                driver.kill()
                driver.wait(timeout=30)
                for pid in leftovers:
                    kill_pid(pid)
    events = [
        json.loads(line)
        for log in sorted(event_dir.rglob("*"))
        if log.is_file()
        for line in log.read_text().splitlines()
        if line.strip()
    ]
    return Submission(
        driver.returncode,
        stdout_path.read_text(),
        stderr_path.read_text(),
        events,
        killed,
        time.monotonic() - started,
    )


def kill_busy_executor(
    cluster: Cluster, driver: subprocess.Popen[bytes], stdout_path: Path, ui_port: int
) -> str:
    """SIGKILL one executor while it runs a task of the noise-and-write job.

    Waits for the job's log line saying the noisy release is being written (the exact
    aggregates are cached on the executors by then), then for an executor with an active
    task (its first Python task starts a Python worker, which takes seconds), and kills
    that executor's JVM: its tasks and cached blocks are lost and must be recomputed.
    """
    deadline = time.monotonic() + JOB_TIMEOUT
    api = f"http://{HOST}:{ui_port}/api/v1/applications"
    while time.monotonic() < deadline and driver.poll() is None:
        if "writing the noisy release to staging" in stdout_path.read_text(errors="replace"):
            break
        time.sleep(0.1)
    while time.monotonic() < deadline and driver.poll() is None:
        cluster.remember_descendants()
        try:
            (app,) = get_json(api, timeout=2)
            executors = get_json(f"{api}/{app['id']}/executors", timeout=2)
        except (OSError, ValueError):
            time.sleep(0.1)
            continue
        busy = [e["id"] for e in executors if e["id"] != "driver" and e["activeTasks"] > 0]
        pids = cluster.executor_pids()
        for executor in busy:
            if executor in pids:
                kill_pid(pids[executor])
                return str(executor)
        time.sleep(0.05)
    raise AssertionError("the job ended before an executor could be killed mid-task")


def check_release(
    submission: Submission, cluster: Cluster, release_name: str
) -> tuple[dict[str, Any], str]:
    """The run published a release that verifies, on executors of both workers."""
    assert submission.returncode == ExitCode.OK, submission.stderr[-4000:]
    # spark-submit merges the driver's stderr into its stdout (client and cluster mode),
    # so the operator log lines come first; the summary is the one JSON line, and the last.
    lines = submission.stdout.strip().splitlines()
    assert [line for line in lines if line.startswith("{")] == lines[-1:], submission.stdout
    summary: dict[str, Any] = json.loads(lines[-1])
    assert summary["status"] == "published"
    assert summary["release"] == release_name and summary["version"] == "v0001"
    assert main(["verify", str(Path(summary["path"]).parent)]) == ExitCode.OK

    (start,) = submission.events("SparkListenerApplicationStart")
    app_id = str(start["App ID"])
    assert start["App Name"] == f"dprelease:{release_name}"
    # The master ran it to the end.
    completed = {a["id"]: a for a in cluster.master_json()["completedapps"]}
    assert completed[app_id]["state"] == "FINISHED"
    # Executors ran on both workers, from the unpacked archive.
    for work_dir in cluster.work_dirs:
        executor_dirs = list((work_dir / app_id).iterdir())
        assert executor_dirs, f"no executor of {app_id} ran on {work_dir.name}"
        assert any((d / "environment" / "bin" / "python").exists() for d in executor_dirs)
    # Tasks ran on both workers (an attempt may lose to a speculative copy or be killed).
    hosts = {e["Task Info"]["Host"] for e in submission.events("SparkListenerTaskStart")}
    assert hosts == set(cluster.workers), f"tasks ran on {hosts} only"
    return summary, app_id


# --- the test ---------------------------------------------------------------------------


def test_release_jobs_on_a_standalone_cluster(
    cluster: Cluster,
    package: Package,
    submit_main: Path,
    events_input: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 1. A plain submission.
    plain = submit(
        cluster, package, submit_main, write_config(tmp_path, events_input, "cluster_plain")
    )
    check_release(plain, cluster, "cluster_plain")

    # 2. Speculative execution everywhere: duplicate task attempts must not change what is
    #    published (one attempt's output is committed; the noise is drawn per attempt and
    #    only the committed attempt's noise is ever read).
    speculative = submit(
        cluster,
        package,
        submit_main,
        write_config(tmp_path, events_input, "cluster_speculation"),
        conf={
            "spark.speculation": "true",
            "spark.speculation.multiplier": "1",
            "spark.speculation.quantile": "0.1",
            "spark.speculation.minTaskRuntime": "0",
            "spark.speculation.interval": "50ms",
        },
    )
    check_release(speculative, cluster, "cluster_speculation")
    speculated = [
        e for e in speculative.events("SparkListenerTaskStart") if e["Task Info"]["Speculative"]
    ]

    # 3. An executor is killed while it runs a task: tasks and cached blocks are lost and
    #    recomputed on the other worker (and the replacement executor).
    lost = submit(
        cluster,
        package,
        submit_main,
        write_config(tmp_path, events_input, "cluster_executor_lost"),
        kill_an_executor=True,
    )
    check_release(lost, cluster, "cluster_executor_lost")
    removed = [str(e["Executor ID"]) for e in lost.events("SparkListenerExecutorRemoved")]
    assert lost.killed_executor in removed
    failed = [
        e
        for e in lost.events("SparkListenerTaskEnd")
        if e["Task End Reason"]["Reason"] == "ExecutorLostFailure"
    ]
    with capsys.disabled():
        print(
            f"\n[cluster] speculative task attempts: {len(speculated)}; "
            f"killed executor {lost.killed_executor}, tasks lost with it: {len(failed)}; "
            f"seconds: {plain.seconds:.0f}, {speculative.seconds:.0f}, {lost.seconds:.0f}"
        )
