"""A throwaway Ray head for the cluster-path tests (test_ray_job.py, test_notebook.py).

`ray start --head --block` runs in its own process group with a private temp dir and free ports,
so it shares nothing with any other Ray on the machine: its `ray_current_cluster` file is written
into that temp dir, not /tmp/ray, so a plain `ray.init()` elsewhere never finds it. It runs with
Ray's token authentication (RAY_AUTH_MODE=token, the default of a new cluster once a token
exists) on a token of its own, passed in RAY_AUTH_TOKEN, so ~/.ray/auth_token is neither read
nor written; every client (CLI, notebook kernel) gets `head.env()`. Stopping it signals that
`ray start` and its process group only (never `ray stop`, which would stop every Ray here), and
every process whose command line names the temp dir is its own: that is how a test checks that
none is left.

conftest.py registers the `ray_head` fixture (pytest_plugins); test modules import its helpers
from here, which works because pytest's default (prepend) import mode puts tests/ on sys.path.
"""

from __future__ import annotations

import copy
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def ray_cli() -> list[str]:
    """The `ray` command of the interpreter running the tests."""
    beside = Path(sys.executable).with_name("ray")
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "ray.scripts.scripts"]


def child_env(**extra: str) -> dict[str, str]:
    """The environment for Ray processes: this interpreter's bin first, no RAY_ADDRESS of ours."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update(extra)
    return env


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class RayHead:
    process: subprocess.Popen
    temp_dir: Path
    gcs_address: str  # host:port, what RAY_ADDRESS and ray.init(address=...) take
    dashboard_url: str  # http://host:port, what `ray job submit --address` and JobSubmissionClient take
    log: Path
    token: str

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a client of this head: its token, and no other cluster's address."""
        return child_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, **extra)

    def client(self):
        """Ray's JobSubmissionClient for this head, its token in the Authorization header (taken
        as given whatever this process's own RAY_AUTH_MODE is)."""
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard_url, headers={"Authorization": f"Bearer {self.token}"})

    def processes(self) -> list[psutil.Process]:
        """Every live process of this head: its command line names the private temp dir."""
        return processes_naming(str(self.temp_dir))

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.is_file() else ""


def processes_naming(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.info["pid"] != os.getpid() and any(text in arg for arg in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def start_head(num_cpus: int = 2, timeout: float = 120) -> RayHead:
    """`ray start --head --block` on free ports. RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0: on
    SIGTERM the node is torn down at once instead of first draining for up to 30 s."""
    # Unix socket paths (temp_dir/session_<date>_<pid>/sockets/plasma_store) must stay under
    # 107 bytes, which a pytest tmp_path does not: a short directory of our own under /tmp.
    temp_dir = Path(tempfile.mkdtemp(prefix="rayh-", dir="/tmp"))
    gcs, dashboard, client, agent, metrics = free_ports(5)
    log = temp_dir / "ray-start.log"
    token = secrets.token_hex(32)
    command = [
        *ray_cli(),
        "start",
        "--head",
        "--block",
        f"--port={gcs}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        "--object-store-memory=300000000",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--dashboard-agent-listen-port={agent}",
        f"--metrics-export-port={metrics}",
        f"--ray-client-server-port={client}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0"),
            start_new_session=True,
        )
    head = RayHead(process, temp_dir, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", log, token)
    try:
        wait_for_job_server(head, timeout)
    except BaseException:
        stop_head(head)
        raise
    return head


def wait_for_job_server(head: RayHead, timeout: float) -> None:
    """Until the dashboard's job module answers /api/version (with the head's token)."""
    request = urllib.request.Request(
        f"{head.dashboard_url}/api/version", headers={"Authorization": f"Bearer {head.token}"}
    )
    deadline = time.monotonic() + timeout
    while True:
        if head.process.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.process.returncode}:\n{head.output()}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError as err:  # not up yet: connection refused, or the job module still loading
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no job server at {head.dashboard_url} after {timeout:.0f} s ({err}):\n{head.output()}"
                )
        time.sleep(1)


def stop_head(head: RayHead, grace: float = 30) -> list[str]:
    """Stop the head; returns what was still alive after `grace` seconds (then killed), so a
    caller can assert a clean shutdown.

    SIGTERM goes to `ray start` first: its handler stops the node's processes in order. A
    SIGTERM to the whole group at once kills the GCS before the autoscaler monitor, whose own
    SIGTERM handler then waits on the dead GCS and holds `ray start` for 30 s. Whatever is left
    in the process group after that (workers) gets the group's SIGTERM.
    """
    _signal(head, signal.SIGTERM, group=False)
    _wait_until_gone(head, grace / 2)
    _signal(head, signal.SIGTERM, group=True)
    _wait_until_gone(head, grace / 2)
    leftover = [f"{p.pid} {' '.join(p.cmdline())[:160]}" for p in _alive(head.processes())]
    for proc in head.processes():  # ours alone: each names our temp dir
        proc.kill()
    _signal(head, signal.SIGKILL, group=True)
    head.process.wait(10)
    shutil.rmtree(head.temp_dir, ignore_errors=True)
    return leftover


def _signal(head: RayHead, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(head.process.pid, sig)  # start_new_session: the group id is its pid
        else:
            os.kill(head.process.pid, sig)
    except ProcessLookupError:
        pass


def _wait_until_gone(head: RayHead, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (head.process.poll() is None or _alive(head.processes())):
        time.sleep(0.25)


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in processes:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                proc.cmdline()
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture
def ray_head():
    """A local 2-CPU Ray head with the dashboard's job server, stopped after the test."""
    head = start_head(num_cpus=2)
    yield head
    if head.process.poll() is None or head.processes():
        stop_head(head)


def write_tiny_config(path: Path, model: str, dataset: str, dev: str, run_dir: Path, **overrides) -> Path:
    """conf/math_quickstart.yaml cut down to one iteration of a tiny model, sized for a 2-CPU head.

    The run holds 1 generator (0.5 CPU), 1 executor (1 CPU) and, while training, 1 Ray Train
    worker (0.5 CPU): 2 CPUs at most. Ray Train's controller and the pool actor take none.
    """
    cfg = read_recipe(REPO / "conf" / "math_quickstart.yaml")
    tiny = {
        "run_dir": str(run_dir),
        "model": {"path": model, "dtype": "float32"},  # the tiny models' answers on any CPU
        # hf starts at once; tests/test_vllm_engine.py and test_integration.py run the vLLM engine.
        "generator": {"backend": "hf", "num_actors": 1, "num_cpus": 0.5, "max_new_tokens": 32},
        "env": {"num_executors": 1},
        "data": {"train": dataset, "eval": {"arith": dev}, "train_size": 6, "eval_size": 4},
        "algorithm": {"k": 2, "iterations": 1, "few_shot": 0, "refine_from_iteration": 0},
        # DeepSpeed in float32, as before the quickstart went to plain torch in bf16: the path the GPU
        # configs take, and the tiny models' losses on any CPU.
        "train": {
            "num_workers": 1,
            "cpus_per_worker": 0.5,
            "deepspeed": True,
            "cpu_bf16": False,
            "epochs": 1,
            "max_length": 256,
        },
        "eval": {"max_new_tokens": 32},
    }
    merged = _merge(_merge(cfg, tiny), overrides)
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    return path


def read_recipe(path: Path) -> dict:
    """A config file merged over the file it `extends`, and so on, as `load_config` reads it."""
    cfg = yaml.safe_load(path.read_text())
    base = cfg.pop("extends", None)
    return _merge(read_recipe(path.parent / base), cfg) if base else cfg


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
