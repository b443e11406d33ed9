"""(prompt, target) examples as the token rows the trainer trains on and the generators score.

A row is the prompt's ids, labelled IGNORE, then the target's ids and EOS, labelled as themselves;
the prompt is tokenised as every backend conditions on it and the target as it follows the prompt.
An example over max_length loses prompt tokens, never target ones. The losses on such rows are
envisions_ray/losses.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from envisions_ray.errors import UserError
from envisions_ray.types import PreferenceExample, TrainExample

# PyTorch's cross_entropy skips this label.
IGNORE = -100


@dataclass(frozen=True)
class Tokenized:
    """One row: the prompt's ids (label IGNORE), then the target's and EOS."""

    input_ids: list[int]
    labels: list[int]
    prompt_cut: bool  # the prompt lost its first tokens to fit max_length


@dataclass(frozen=True)
class TokenizedPair:
    """A preference pair's rows, after the same prompt, cut alike: DPO compares the two targets
    given one context."""

    chosen: Tokenized
    rejected: Tokenized

    @property
    def prompt_cut(self) -> bool:
        return self.chosen.prompt_cut


class Fitting(NamedTuple):
    """What max_length did to a job's examples; a preference pair counts once."""

    dropped_too_long: int  # the target alone (either of a pair's) does not fit: not trained on
    prompt_cut: int  # trained after a cut prompt, which is not what the policy is shown


def _bos(tokenizer) -> list[int]:
    """[BOS] when the model's tokenizer adds one (Llama's), [] when it does not (SmolLM2's)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    adds_bos = bos is not None and tokenizer("", add_special_tokens=True)["input_ids"][:1] == [bos]
    return [bos] if adds_bos else []


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The prompt's ids as every backend conditions on them and the trainer trains on them: with BOS
    first when the model's tokenizer adds one."""
    return _bos(tokenizer) + tokenizer(prompt, add_special_tokens=False)["input_ids"]


def target_ids(tokenizer, prompt: str, target: str) -> list[int]:
    """The target's ids as they follow the prompt, tokenised in that context.

    Tokenised alone, a SentencePiece target starts with a prefix-space token (`▁def`) that the model
    never produces after the prompt's newline; trained on it, the model writes " def" and every
    program fails with IndentationError. So prompt and target are tokenised together and the
    prompt's tokens cut off; where the two merge across the boundary, the target is tokenised alone.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    joint = tokenizer(prompt + target, add_special_tokens=False)["input_ids"]
    if joint[: len(prompt_ids)] == prompt_ids:
        return joint[len(prompt_ids) :]
    return tokenizer(target, add_special_tokens=False)["input_ids"]


def tokenize(tokenizer, example: TrainExample, max_length: int) -> Tokenized | None:
    """Token ids and labels: the prompt as the generator conditioned on it, the target as it follows
    the prompt, then EOS. Over max_length, the prompt loses its first tokens (the instruction goes
    first, then the problem; BOS stays) and the target none: what the model learns to write stays
    whole. None when the target alone does not fit."""
    rows = _after_one_prompt(tokenizer, example.prompt, [example.target], max_length)
    return None if rows is None else rows[0]


def scored_rows(tokenizer, prompts: list[str], targets: list[str], max_length: int) -> list[Tokenized]:
    """Rows to score targets teacher-forced, tokenised as the trainer tokenises them. A target that
    does not fit alone cannot be scored whole: refused, not scored in part."""
    rows = [tokenize(tokenizer, TrainExample(p, t, "score"), max_length) for p, t in zip(prompts, targets)]
    if None in rows:
        raise UserError(f"a target to score is longer than generator.max_model_len ({max_length} tokens): raise it")
    return rows


def tokenize_pair(tokenizer, pair: PreferenceExample, max_length: int) -> TokenizedPair | None:
    """Chosen and rejected as `tokenize` makes them, the prompt cut for the longer of the two; None
    when either target alone does not fit."""
    rows = _after_one_prompt(tokenizer, pair.prompt, [pair.chosen, pair.rejected], max_length)
    return None if rows is None else TokenizedPair(*rows)


def fitting(rows: list[Tokenized | None] | list[TokenizedPair | None]) -> Fitting:
    """The counts of a job's `tokenize` (or `tokenize_pair`) results."""
    kept = [row for row in rows if row is not None]
    return Fitting(len(rows) - len(kept), sum(row.prompt_cut for row in kept))


def _after_one_prompt(tokenizer, prompt: str, targets: list[str], max_length: int) -> list[Tokenized] | None:
    """One row per target after the same prompt, whose first tokens are cut until the longest target
    + EOS fits; None when it does not fit after BOS alone."""
    bos = _bos(tokenizer)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ends = [target_ids(tokenizer, prompt, target) + [tokenizer.eos_token_id] for target in targets]
    room = max_length - len(bos) - max(len(end) for end in ends)
    if room < 0:
        return None
    cut = max(0, len(prompt_ids) - room)
    head = bos + prompt_ids[cut:]
    return [Tokenized(head + end, [IGNORE] * len(head) + end, prompt_cut=cut > 0) for end in ends]


def collate(rows: list[Tokenized], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch; padding is masked from attention and from the loss."""
    width = max(len(row.input_ids) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        length = len(row.input_ids)
        input_ids[index, :length] = torch.tensor(row.input_ids)
        labels[index, :length] = torch.tensor(row.labels)
        attention_mask[index, :length] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
