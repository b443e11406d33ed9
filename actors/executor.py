"""Environment-executor actors: each owns one environment instance on one CPU.

A dead executor is restarted by Ray (`max_restarts`) and the calls it had in hand are run again
(`max_task_retries`), so the driver never sees the crash, only a slower result.
"""
from __future__ import annotations

import os

import ray

from envisions_ray.config import EnvConfig
from envisions_ray.types import Example, Outcome
from envs import make_env


class Executor:
    def __init__(self, cfg: EnvConfig):
        self.env = make_env(cfg)

    def execute(self, jobs: list[tuple[str, Example]]) -> list[Outcome]:
        return [self.env.execute(solution, example) for solution, example in jobs]

    def describe(self, examples: list[Example]) -> list[str]:
        return [self.env.describe(example) for example in examples]

    def pid(self) -> int:
        """The worker process id, so a crash can be provoked and watched."""
        return os.getpid()


def start_executors(cfg: EnvConfig) -> list:
    # Restart forever: an environment can crash on any input, and a run must not end for it.
    actor = ray.remote(Executor).options(num_cpus=1, max_restarts=-1, max_task_retries=cfg.max_retries)
    return [actor.remote(cfg) for _ in range(cfg.num_executors)]
