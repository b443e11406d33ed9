"""Generator actors: a thin Ray shell around a sampling backend.

A backend has two methods, `sample` and `load`, so a vLLM backend slots in beside the `hf` one
without the driver noticing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import ray

from envisions_ray.config import GeneratorConfig


@dataclass(frozen=True)
class Sample:
    text: str  # the solution, cut at the first stop string
    self_reward: float  # mean token log-prob under the policy at temperature 1


class Backend(Protocol):
    def sample(
        self, prompts: list[str], n: int, temperature: float, max_new_tokens: int, with_self_reward: bool
    ) -> list[list[Sample]]:
        """n samples per prompt; temperature 0 means greedy."""

    def load(self, model_path: str) -> None:
        """Swap in new weights (a checkpoint written by the trainer)."""


def make_backend(cfg: GeneratorConfig, model_path: str, dtype: str) -> Backend:
    if cfg.backend == "hf":
        from actors.hf_backend import HFBackend

        return HFBackend(cfg, model_path, dtype)
    raise NotImplementedError(f"generator backend '{cfg.backend}' is not available in this build")


class Generator:
    def __init__(self, cfg: GeneratorConfig, model_path: str, dtype: str):
        self.backend = make_backend(cfg, model_path, dtype)

    def sample(self, prompts, n, temperature, max_new_tokens, with_self_reward=True) -> list[list[Sample]]:
        return self.backend.sample(prompts, n, temperature, max_new_tokens, with_self_reward)

    def load(self, model_path: str) -> None:
        self.backend.load(model_path)


def start_generators(cfg: GeneratorConfig, model_path: str, dtype: str) -> list:
    actor = ray.remote(Generator).options(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus)
    return [actor.remote(cfg, model_path, dtype) for _ in range(cfg.num_actors)]
