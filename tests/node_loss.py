"""A tiny run on two simulated nodes that loses the executors' node mid-exploration (its own process).

`python tests/node_loss.py RUN_DIR MODEL DATASET` starts a `ray.cluster_utils.Cluster`: a head
with the CPUs for the generator, the train workers and two executors, and a second node with two
CPUs. The executors prefer the second node (soft node affinity, which Ray drops once the node is
gone). When exploration has stored its first trajectories, the second node is removed. The run
must finish on the head. Prints a line RESULT_MARKER + JSON: the node each executor ran on before and after.

test_fault_tolerance.py runs it in a subprocess: a Cluster needs a process with no Ray of its own.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from envisions_ray import driver
from envisions_ray.actors import executor
from tests.test_integration import tiny_run_config

HEAD_CPUS = 5  # generator 1, train workers 2, and the two executors once they move here
SECOND_NODE_CPUS = 2
RESULT_MARKER = "node-loss: "  # stdout also carries the actors' forwarded logs


def node_of(actor) -> str:
    return ray.get(actor.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id()))


def stored(pool_path: Path) -> int:
    if not pool_path.exists():
        return 0
    with sqlite3.connect(pool_path) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM trajectories").fetchone()[0]
        except sqlite3.OperationalError:  # the table is being made
            return 0


def main(run_dir: Path, model: str, dataset: str, dev: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": HEAD_CPUS, "include_dashboard": False})
    second = cluster.add_node(num_cpus=SECOND_NODE_CPUS)
    cluster.wait_for_nodes()
    os.environ["RAY_ADDRESS"] = cluster.address  # what `ray job submit` sets; driver.connect_ray joins it
    ray.init(address=cluster.address, logging_level="WARNING")
    second_id = next(node["NodeID"] for node in ray.nodes() if node["NodeManagerPort"] == second.node_manager_port)

    def on_the_second_node(cfg):  # start_executor's options, plus the preference
        prefer = NodeAffinitySchedulingStrategy(second_id, soft=True)
        actor = ray.remote(executor.Executor).options(
            num_cpus=1, max_restarts=-1, max_task_retries=cfg.max_retries, scheduling_strategy=prefer
        )
        return actor.remote(cfg)

    executor.start_executor = on_the_second_node
    cfg = tiny_run_config(
        model,
        run_dir,
        f"data.train={dataset}",
        f"data.eval.arith={dev}",
        "data.train_size=12",
        "generator.chunk_size=2",
    )
    nodes = {}

    def lose_the_second_node():
        while stored(run_dir / "pool.sqlite") == 0:
            time.sleep(0.05)
        nodes["before"] = [node_of(a) for a in run.executors.actors]
        cluster.remove_node(second)
        nodes["after"] = [node_of(a) for a in run.executors.actors]  # once restarted

    run = None
    original_start_actors = driver.start_actors

    def start_actors(started_run):
        nonlocal run
        run = started_run
        original_start_actors(started_run)

    driver.start_actors = start_actors
    killer = threading.Thread(target=lose_the_second_node, daemon=True)
    killer.start()
    driver.run_experiment(cfg)
    killer.join()
    print(RESULT_MARKER + json.dumps({"second": second_id, **nodes}), flush=True)
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
