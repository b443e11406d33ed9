"""L1 + L2 (ALGORITHM.md step 6) as token cross-entropy on target tokens only, and the DPO loss of
the SFT + DPO and Self-Rewarding baselines.

Both ENVISIONS losses are the same operation on different prompts: L1 pairs the training prompt
with a positive, L2 pairs the refine prompt filled with a negative with a positive. So an example
is (prompt, target), tokenised into a row whose prompt tokens get label IGNORE and add nothing to
the loss (envisions_ray/tokens.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from envisions_ray.tokens import IGNORE


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
