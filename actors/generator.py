"""Generator actors: a thin Ray shell around a sampling backend.

A backend has three methods, `sample`, `logprob` and `load`, so a vLLM backend slots in beside the
`hf` one without the driver noticing.

A generator that dies (its process killed, its node lost) is restarted by Ray, and the calls it had
in hand run again on the new one, so the chunk it was generating is generated again; what it had
returned is with the driver already. Ray restarts an actor with its first arguments, so the actor
reads the checkpoint the driver handed out last from `policy_file` instead. Its engine runs in its
own process (vLLM on CPU, `generator.engine_in_process`) or in child processes that die with it
(tests/test_vllm_engine.py kills one and looks).
"""

from __future__ import annotations

from pathlib import Path

import ray
from ray.util import get_placement_group, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from envisions_ray.actors.backend import Backend, Sample
from envisions_ray.config import GeneratorConfig
from envisions_ray.model import local_copy, resolve_dtype

# The GPU generators' placement group, by name, so stopping them can release it.
GENERATOR_GROUP = "envisions-generators"
# How long stopping waits for the backends to close before it kills the actors anyway (a vLLM
# engine shuts down in seconds; a hung one must not hold the run's end).
CLOSE_TIMEOUT_S = 60.0


def make_backend(cfg: GeneratorConfig, model_path: str, dtype: str) -> Backend:
    dtype = resolve_dtype(dtype)  # here, on the generator's own machine
    if cfg.backend == "hf":
        from envisions_ray.actors.hf_backend import HFBackend

        return HFBackend(cfg, model_path, dtype)
    if cfg.backend == "vllm":
        from envisions_ray.actors.vllm_backend import VLLMBackend

        return VLLMBackend(cfg, model_path, dtype)
    raise NotImplementedError(f"generator backend '{cfg.backend}' is not available in this build")


class Generator:
    def __init__(self, cfg: GeneratorConfig, model_path: str, dtype: str, policy_file: str | None = None):
        if policy_file is not None and ray.get_runtime_context().was_current_actor_reconstructed:
            model_path = Path(policy_file).read_text()
        self.backend = make_backend(cfg, local_copy(model_path), dtype)

    def sample(
        self, prompts, n, temperature, max_new_tokens, with_self_reward=True, grammar="", seeds=None
    ) -> list[list[Sample]]:
        """`seeds`: one per prompt, or None (actors/backend.py `Backend.sample`)."""
        return self.backend.sample(prompts, n, temperature, max_new_tokens, with_self_reward, grammar, seeds)

    def logprob(self, prompts: list[str], targets: list[str]) -> list[float]:
        return self.backend.logprob(prompts, targets)

    def load(self, model_path: str) -> None:
        self.backend.load(local_copy(model_path))

    def close(self) -> None:
        """Free what the backend holds beyond this process (vLLM: its engine, its copy in /tmp)."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()


def start_generators(cfg: GeneratorConfig, model_path: str, dtype: str, policy_file: str | None = None) -> list:
    """`policy_file` names the checkpoint a restarted generator loads; None: the one it started on."""
    restarts = {"max_restarts": -1, "max_task_retries": -1}  # a generator's calls are pure: safe to rerun
    if cfg.num_gpus == 0:
        actor = ray.remote(Generator).options(num_cpus=cfg.num_cpus, **restarts)
        return [actor.remote(cfg, model_path, dtype, policy_file) for _ in range(cfg.num_actors)]
    # One bundle per actor holding all of its engine's GPUs, so a bundle (and an engine) never spans
    # nodes. vLLM's tensor-parallel workers are the actor's child processes ("mp" executor, see
    # actors/vllm_backend.py) and use the GPUs Ray gave the actor; they need no bundles of their own.
    gpus = cfg.num_gpus * (cfg.tensor_parallel_size if cfg.backend == "vllm" else 1)
    group = placement_group(
        [{"GPU": gpus, "CPU": cfg.num_cpus}] * cfg.num_actors, strategy="PACK", name=GENERATOR_GROUP
    )
    actor = ray.remote(Generator)
    bundles = [PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i) for i in range(cfg.num_actors)]
    return [
        actor.options(num_cpus=cfg.num_cpus, num_gpus=gpus, scheduling_strategy=b, **restarts).remote(
            cfg, model_path, dtype, policy_file
        )
        for b in bundles
    ]


def stop_generators(generators: list, close_timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close the backends, kill the actors and give back their placement group's GPUs, e.g. to the
    trainer. Killed unclosed, a vLLM generator left its untied weights (625 MB) in /tmp until the
    next generator on the machine swept them."""
    closing = [generator.close.remote() for generator in generators]
    ray.wait(closing, num_returns=len(closing), timeout=close_timeout_s)
    for generator in generators:
        ray.kill(generator)
    try:
        remove_placement_group(get_placement_group(GENERATOR_GROUP))
    except ValueError:  # CPU generators have no group
        pass
