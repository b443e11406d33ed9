"""A run's Ray cluster and actors: the cluster joined or started sized to the run, the candidate
pool placed beside the driver, the generators on a policy and the executors started, and all of
them stopped again."""

from __future__ import annotations

import os
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from envisions_ray import ray_workers
from envisions_ray.actors.executor import ExecutorGroup
from envisions_ray.actors.pool import CandidatePool
from envisions_ray.config import RunConfig
from envisions_ray.run_state import PoolClient, Run

ROUND_UP = 0.999  # a fractional CPU count asks for a whole CPU more


def connect_ray(cfg: RunConfig) -> None:
    """Join the cluster named by RAY_ADDRESS (ray job submit sets it), else start a local one sized to the run."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return
    executors = max(cfg.env.max_executors or 0, cfg.env.num_executors)
    cpus = (
        cfg.generator.num_actors * cfg.generator.num_cpus
        + executors
        + cfg.train.num_workers * cfg.train.cpus_per_worker
    )
    resources = {name: amount * executors for name, amount in cfg.env.resources.items()}  # e.g. one browser each
    # "local": always a new instance; otherwise ray.init joins a cluster that `ray start` on this
    # machine recorded in /tmp/ray/ray_current_cluster, and then refuses num_cpus.
    ray.init(
        address="local",
        num_cpus=int(cpus + ROUND_UP),
        resources=resources,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"worker_process_setup_hook": f"{ray_workers.__name__}.{ray_workers.setup.__name__}"},
    )


def start_pool(path: Path) -> PoolClient:
    """The candidate-pool actor on `path`, beside the driver, so that it lands in the run directory
    the driver writes (config.yaml, metrics.jsonl); a zero-CPU actor could otherwise be placed on
    any node of a cluster."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return PoolClient(
        # Restarted on the same pool.sqlite if it dies, and the call in hand retried (record is idempotent).
        ray.remote(CandidatePool)
        .options(num_cpus=0, scheduling_strategy=here, max_restarts=-1, max_task_retries=-1)
        .remote(str(path))
    )


def start_actors(run: Run) -> None:
    """The executors, and the generators on the newest checkpoint (resuming) or the base model."""
    run.executors = ExecutorGroup(run.cfg.env)
    newest = run.pool.newest_checkpoint() if run.pool else None  # set when resuming
    run.generators.use(newest or run.base_model)


def stop_actors(run: Run) -> None:
    """Free the actors' CPUs and memory (and the pool's database handle) for whatever runs next."""
    run.generators.stop()
    if run.executors is not None:
        run.executors.close()
    if run.pool is not None:
        ray.kill(run.pool.actor)
    run.executors, run.pool = None, None
