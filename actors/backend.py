"""What every generator backend shares: the Sample it returns, the Backend protocol it meets, and
how its text is cut. The backends and the generator actor import this; it imports none of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Sample:
    text: str  # the solution, cut at the first stop string
    self_reward: float  # mean token log-prob under the policy at temperature 1
    num_tokens: int  # tokens generated for it, up to the stop string or EOS
    # Its prompt's length, and how much of it the engine took from its prefix cache (the same for
    # a request's n samples: count them once per request).
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0


class Backend(Protocol):
    def sample(
        self,
        prompts: list[str],
        n: int,
        temperature: float,
        max_new_tokens: int,
        with_self_reward: bool,
        grammar: str = "",
        seeds: list[int] | None = None,
    ) -> list[list[Sample]]:
        """n samples per prompt; temperature 0 means greedy. A grammar (xgrammar EBNF) constrains
        every sample to its language; the self-reward stays the policy's, before the grammar's mask.
        `seeds`, one per prompt (envisions_ray/seeds.py): sample k of prompt i is drawn from seed
        seeds[i] + k alone, so a prompt gets the same samples with the same seed whatever else is
        in the call (up to float rounding: other prompts in a batch may move a logit in its last
        bits). None: the backend's own stream of randomness, seeded once when it starts. Greedy
        sampling ignores them."""

    def logprob(self, prompts: list[str], targets: list[str]) -> list[float]:
        """log p(target | prompt) under the policy at temperature 1, summed over the target's tokens."""

    def load(self, model_path: str) -> None:
        """Swap in new weights (a checkpoint written by the trainer)."""


def cut_at_stop(text: str, stops: list[str]) -> str:
    """The text before the earliest stop string, without surrounding whitespace: what is stored,
    executed and trained on. A SentencePiece model may start with a prefix-space token ("▁def"):
    decoded in the prompt's context (vLLM) that is " def", alone (hf) it may be "def", and Python
    refuses the first. Stripped, both backends give one text, which the trainer tokenises in context."""
    end = min((text.find(stop) for stop in stops if stop in text), default=len(text))
    return text[:end].strip()
