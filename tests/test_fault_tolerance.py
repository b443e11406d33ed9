"""Any one process killed mid-run, the run finishes unaided and loses nothing: a generator and the
pool alone (executors in test_actors.py, browsers in test_web_run.py), then a generator, an
executor, the pool and a train worker in one run at seeded moments, and a whole node lost
(tests/node_loss.py)."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import psutil
import pytest
import ray

from envisions_ray import driver
from envisions_ray.actors.generator import start_generators, stop_generators
from envisions_ray.actors.pool import CandidatePool
from envisions_ray.config import GeneratorConfig
from envisions_ray.envs.math_sandbox import DIRECTORY_PREFIX
from envisions_ray.envs.web_browser import DIRECTORY_PREFIX as BROWSER_PREFIX
from envisions_ray.leftovers import processes_under
from envisions_ray.prompts import PromptBook
from envisions_ray.report import read_metrics
from envisions_ray.run_state import PoolClient
from envisions_ray.summary import format_summary
from envisions_ray.types import Trajectory
from tests.actor_process import actor_pid
from tests.node_loss import RESULT_MARKER, stored
from tests.test_integration import tiny_run_config
from tests.test_web_run import web_config

REPO = Path(__file__).resolve().parents[1]
CHAOS_SEED = 0
KINDS = ("Generator", "Executor", "CandidatePool", "RayTrainWorker")  # Ray titles their processes ray::CLASS


def processes(kind: str) -> list[psutil.Process]:
    """This Ray session's actor processes of one kind: its raylet started them (another session's,
    e.g. a run on the same machine, are left alone)."""
    sockets = {node["RayletSocketName"] for node in ray.nodes() if node["Alive"]}
    found = {}
    for raylet in psutil.process_iter(["cmdline"]):
        if any(socket in arg for arg in raylet.info["cmdline"] or [] for socket in sockets):
            for process in raylet.children(recursive=True):
                try:
                    if process.cmdline()[0].split(".")[0] == f"ray::{kind}":
                        found[process.pid] = process
                except (psutil.Error, IndexError):  # exited meanwhile
                    continue
    return list(found.values())


def wait_for(condition, timeout_s: float = 300.0, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(poll_s)
    raise TimeoutError("the awaited moment never came")


def kill_one(pick: Callable[[], list[psutil.Process]], rng: random.Random) -> float:
    """SIGKILL one of the processes `pick` lists (a seeded choice); returns when."""
    while True:
        try:
            rng.choice(wait_for(pick)).kill()
            return time.monotonic()
        except psutil.NoSuchProcess:  # exited between the listing and the kill: pick again
            continue


def test_a_killed_generator_comes_back_on_the_checkpoint_it_held(tiny_model, tiny_solver, tmp_path, ray_session):
    policy_file = tmp_path / "policy"
    policy_file.write_text(tiny_model)
    [generator] = start_generators(
        GeneratorConfig(backend="hf", num_cpus=1, stop=[]), tiny_model, "float32", str(policy_file)
    )
    prompt = PromptBook.load("conf/prompts/math.yaml").explore("Ava has 3 apples. How many apples does Ava have?")
    try:
        policy_file.write_text(tiny_solver)  # what the driver does before a handoff
        ray.get(generator.load.remote(tiny_solver))
        [[solver_reply]] = ray.get(generator.sample.remote([prompt], 1, 0.0, 32, False))
        victim = ray.get(actor_pid(generator))
        in_flight = generator.sample.remote([prompt] * 8, 8, 1.0, 256, True)
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        samples = ray.get(in_flight, timeout=300)  # generated again by the restarted actor
        assert [len(per_prompt) for per_prompt in samples] == [8] * 8
        assert ray.get(actor_pid(generator)) != victim
        # On the solver it held, not on the model it was started with.
        assert ray.get(generator.sample.remote([prompt], 1, 0.0, 32, False)) == [[solver_reply]]
    finally:
        stop_generators([generator])


def test_a_killed_pool_comes_back_on_its_database(tmp_path, ray_session):
    actor = ray.remote(CandidatePool).options(num_cpus=0, max_restarts=-1, max_task_retries=-1)
    pool = PoolClient(actor.remote(str(tmp_path / "pool.sqlite")))
    batch = [Trajectory("x", f"return {k}", 0, -1.0, 0, "explore", sample=k) for k in range(4)]
    ids = pool.record(batch)
    victim = ray.get(actor_pid(pool.actor))
    os.kill(victim, signal.SIGKILL)
    assert pool.record(batch) == ids  # the retried delivery stores nothing twice
    assert [t.solution for t in pool.trajectories(0)] == [t.solution for t in batch]
    ray.kill(pool.actor)


@pytest.mark.timeout(900)
def test_chaos_one_process_of_each_kind_killed_the_run_finishes_and_loses_nothing(
    tiny_solver, twelves, twelves_dev, tmp_path, ray_session
):
    rng = random.Random(CHAOS_SEED)
    run_dir = tmp_path / "run"
    cfg = tiny_run_config(
        tiny_solver,
        run_dir,
        f"data.train={twelves}",
        f"data.eval.arith={twelves_dev}",
        "data.train_size=12",
        "generator.chunk_size=2",  # one prompt (K = 2) per call: explore spans many calls
        "train.epochs=4",
    )
    sandboxes_before = set(Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}*"))
    killed: dict[str, float] = {}

    def chaos():
        # Exploration has begun when its first input is in the pool; its other calls are in flight.
        wait_for(lambda: stored(run_dir / "pool.sqlite"))
        for kind in ("Generator", "Executor", "CandidatePool"):
            time.sleep(rng.uniform(0.0, 0.5))
            killed[kind] = kill_one(lambda: processes(kind), rng)
        wait_for(lambda: processes("RayTrainWorker"))
        time.sleep(rng.uniform(0.5, 2.0))
        killed["RayTrainWorker"] = kill_one(lambda: processes("RayTrainWorker"), rng)

    killer = threading.Thread(target=chaos, daemon=True)
    killer.start()
    driver.run_experiment(cfg)
    finished = time.monotonic()
    killer.join(timeout=60)

    assert set(killed) == set(KINDS) and max(killed.values()) < finished  # every kill landed mid-run
    db = sqlite3.connect(run_dir / "pool.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]  # the killed pool left no torn write
    keys = Counter(db.execute("SELECT example_id, source FROM trajectories").fetchall())
    # A clean run: K explored per input and one refinement of each (test_one_iteration_end_to_end).
    inputs = [f"t{i}" for i in range(12)]
    assert keys == Counter({(x, source): cfg.algorithm.k for x in inputs for source in ("explore", "refine")})
    summary = read_metrics(run_dir)[-1]
    assert summary["iteration"] == 1
    assert summary["restarts"] == {"generator": 1, "executor": 1, "pool": 1, "train_worker_group": 1}
    assert "restarted generator=1 executor=1 pool=1 train_worker_group=1" in format_summary(summary)
    # The restarted training job reported its one checkpoint, at its end.
    assert len([path for path in (run_dir / "checkpoints" / "iter-0").glob("checkpoint_*") if path.is_dir()]) == 1
    # Nothing left: no actor process of the run, no engine, no sandbox directory.
    time.sleep(2.0)
    assert not [kind for kind in KINDS if processes(kind)]
    assert set(Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}*")) == sandboxes_before


@pytest.mark.timeout(900)
def test_chaos_on_a_web_run_a_browser_a_generator_an_executor_and_the_pool_killed(tiny_model, tmp_path, ray_session):
    rng = random.Random(CHAOS_SEED)
    run_dir = tmp_path / "web"
    # The untrained model: no positives, so no training. One prompt per call: exploration spans many.
    cfg = web_config(tiny_model, run_dir, "algorithm.iterations=1", "data.train_size=6", "generator.chunk_size=2")
    browsers_before = set(Path(tempfile.gettempdir()).glob(f"{BROWSER_PREFIX}*"))
    killed: dict[str, float] = {}

    def browsers() -> list[psutil.Process]:
        """Chromium's main process of each of this run's browsers."""
        found = []
        for directory in set(Path(tempfile.gettempdir()).glob(f"{BROWSER_PREFIX}*")) - browsers_before:
            for pid in processes_under(str(directory)):
                try:
                    command = psutil.Process(pid).cmdline()
                except psutil.Error:
                    continue
                if command and "chromium" in command[0] and not any(a.startswith("--type=") for a in command):
                    found.append(psutil.Process(pid))
        return found

    def chaos():
        # From the first page the run renders (the base eval) to the end of exploration.
        time.sleep(rng.uniform(0.0, 0.5))
        killed["browser"] = kill_one(browsers, rng)
        for kind in ("Generator", "Executor", "CandidatePool"):
            time.sleep(rng.uniform(0.0, 0.5))
            killed[kind] = kill_one(lambda: processes(kind), rng)

    killer = threading.Thread(target=chaos, daemon=True)
    killer.start()
    driver.run_experiment(cfg)
    finished = time.monotonic()
    killer.join(timeout=60)

    assert set(killed) == {"browser", "Generator", "Executor", "CandidatePool"} and max(killed.values()) < finished
    db = sqlite3.connect(run_dir / "pool.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    keys = Counter(db.execute("SELECT example_id, source FROM trajectories").fetchall())
    inputs = [f"{task}@{seed}" for task in ("click-test-2", "click-button") for seed in range(6)]
    sources = (
        ("explore", "refine") if cfg.algorithm.refine and cfg.algorithm.refine_from_iteration == 0 else ("explore",)
    )
    assert keys == Counter({(x, source): cfg.algorithm.k for x in inputs for source in sources})
    restarts = sum((Counter(line["restarts"]) for line in read_metrics(run_dir)), Counter())  # base eval or iteration
    assert restarts == Counter({"generator": 1, "executor": 1, "pool": 1})
    time.sleep(2.0)
    assert not [kind for kind in KINDS if processes(kind)]
    assert set(Path(tempfile.gettempdir()).glob(f"{BROWSER_PREFIX}*")) == browsers_before  # every browser quit


@pytest.mark.timeout(900)
def test_losing_the_executors_node_mid_exploration_the_run_finishes_on_the_head(
    tiny_model, twelves, twelves_dev, tmp_path
):
    run_dir = tmp_path / "run"
    # Its own process: a ray.cluster_utils.Cluster cannot start beside this session's Ray. The
    # untrained model finds no positive, so the run skips training: exploration is what is tested.
    done = subprocess.run(
        [sys.executable, "-m", "tests.node_loss", str(run_dir), tiny_model, twelves, twelves_dev],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    nodes = json.loads(result.removeprefix(RESULT_MARKER))
    assert nodes["before"] == [nodes["second"]] * 2 and nodes["second"] not in nodes["after"]
    keys = Counter(sqlite3.connect(run_dir / "pool.sqlite").execute("SELECT example_id, source FROM trajectories"))
    assert keys == Counter({(f"t{i}", source): 2 for i in range(12) for source in ("explore", "refine")})
    summary = read_metrics(run_dir)[-1]
    assert summary["iteration"] == 1 and summary["restarts"]["executor"] == 2
