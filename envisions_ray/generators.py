"""The policy's generator actors (actors/generator.py) as one group: started on a policy, handed the
next one, stopped while the trainer needs their GPUs or memory. The group keeps the policy file a
restarted generator reads its checkpoint from, and is the only code that picks a generator: a
stream's chunks, the judge's greedy replies and the log-probs all go through it."""

from __future__ import annotations

from pathlib import Path

import ray

from envisions_ray.actors.backend import Sample
from envisions_ray.actors.generator import start_generators, stop_generators
from envisions_ray.config import GeneratorConfig
from envisions_ray.types import Sampling

GREEDY = 0.0  # the temperature of a greedy reply


class GeneratorGroup:
    """`generator.num_actors` generators on one policy; none until the first `use`."""

    def __init__(self, cfg: GeneratorConfig, dtype: str) -> None:
        self.cfg, self.dtype = cfg, dtype
        self.actors: list = []
        self.policy = ""  # the model path the generators hold
        self.policy_file: Path | None = None  # where a run writes `policy` for generators that Ray restarts

    def use(self, model: str) -> None:
        """Generators on `model`: loaded in place into running ones, or started when there are none."""
        if self.policy_file is not None:  # first: a generator restarted from now on must come back on `model`
            self.policy_file.write_text(model)
        if not self.actors:
            policy_file = str(self.policy_file) if self.policy_file else None
            self.actors = start_generators(self.cfg, model, self.dtype, policy_file)
        elif model != self.policy:
            ray.get([actor.load.remote(model) for actor in self.actors])
        self.policy = model

    def stop(self) -> None:
        """Stop every generator (and give back their GPUs); the next `use` starts them again."""
        stop_generators(self.actors)
        self.actors = []

    def sample(
        self,
        chunk: int,
        prompts: list[str],
        sampling: Sampling,
        with_self_reward: bool,
        grammar: str = "",
        seeds: list[int] | None = None,
    ) -> ray.ObjectRef:
        """Starts answering chunk number `chunk` of a stream on the generator whose turn it is
        (round-robin over those up now); the reference resolves to `sampling.n` Samples per prompt."""
        actor = self.actors[chunk % len(self.actors)]
        n, temperature, max_new_tokens = sampling.n, sampling.temperature, sampling.max_new_tokens
        return actor.sample.remote(prompts, n, temperature, max_new_tokens, with_self_reward, grammar, seeds)

    def greedy_replies(self, prompts: list[str], max_new_tokens: int) -> list[Sample]:
        """The policy's greedy reply to each prompt, in chunks of generator.chunk_size spread over the
        generators (no execution, no grammar: a judge's reply is a score, not a program)."""
        size, greedy = self.cfg.chunk_size, Sampling(1, GREEDY, max_new_tokens)
        chunks = [prompts[start : start + size] for start in range(0, len(prompts), size)]
        refs = [self.sample(c, chunk, greedy, with_self_reward=False) for c, chunk in enumerate(chunks)]
        return [per_prompt[0] for replies in ray.get(refs) for per_prompt in replies]

    def logprobs(self, prompts: list[str], targets: list[str]) -> list[float]:
        """log p(target | prompt) under the policy, per pair (actors/backend.py `Backend.logprob`)."""
        return ray.get(self.actors[0].logprob.remote(prompts, targets))
