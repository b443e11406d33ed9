"""L1 + L2 (ALGORITHM.md step 6) as token cross-entropy on target tokens only, and the DPO loss of
the SFT + DPO and Self-Rewarding baselines.

Both ENVISIONS losses are the same operation on different prompts: L1 pairs the training prompt
with a positive, L2 pairs the refine prompt filled with a negative with a positive. So an example
is (prompt, target); prompt tokens get label IGNORE and add nothing to the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from envisions_ray.types import TrainExample

# PyTorch's cross_entropy skips this label.
IGNORE = -100


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The prompt's ids as every backend conditions on them and the trainer trains on them: with BOS
    first when the model's tokenizer adds one (Llama's), without when it does not (SmolLM2's)."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    adds_bos = bos is not None and tokenizer("", add_special_tokens=True)["input_ids"][:1] == [bos]
    return [bos] + ids if adds_bos else ids


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


def tokenize(tokenizer, example: TrainExample, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels: the prompt as the generator conditioned on it, the target as it follows
    the prompt, then EOS."""
    prompt_ids = encode_prompt(tokenizer, example.prompt)
    target = target_ids(tokenizer, example.prompt, example.target) + [tokenizer.eos_token_id]
    input_ids = (prompt_ids + target)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + target)[:max_length]
    return input_ids, labels


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch; padding is masked from attention and from the loss."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, (ids, row_labels) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(row_labels)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def target_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over target tokens; the logit at t predicts the token at t + 1."""
    shifted_logits = logits[:, :-1, :].reshape(-1, logits.size(-1))
    shifted_labels = labels[:, 1:].reshape(-1)
    return F.cross_entropy(shifted_logits.float(), shifted_labels, ignore_index=IGNORE)


def sequence_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row: log p(target tokens | prompt), summed over the tokens whose label is not IGNORE."""
    logprobs = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)
    shifted_labels = labels[:, 1:]
    picked = logprobs.gather(-1, shifted_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * (shifted_labels != IGNORE)).sum(dim=1)


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Rafailov et al. (2023): -log sigmoid(beta * (policy margin - reference margin)), batch mean."""
    margin = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected)
    return -F.logsigmoid(beta * margin).mean()
