"""The trainer computes logits only from the position before a batch's first target token; the
losses must equal those over the whole sequence."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from envisions_ray.actors.train_job import _forward, first_scored_position
from envisions_ray.losses import sequence_logprobs, target_token_loss
from envisions_ray.tokens import IGNORE, collate, tokenize
from envisions_ray.types import TrainExample


def test_first_scored_position_is_the_one_before_the_earliest_label():
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, 5, 6], [IGNORE, IGNORE, 7, 8, IGNORE]])
    assert first_scored_position(labels) == 1
    assert first_scored_position(torch.tensor([[3, 4]])) == 0
    assert first_scored_position(torch.full((1, 3), IGNORE)) == 0


def test_sliced_logits_give_the_whole_sequence_losses(tiny_model):
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    examples = [
        TrainExample(
            "Question: Tom has 3 apples and buys 4 more. How many now?\n", "def solution():\n    return 7", "l1"
        ),
        TrainExample("Question: 2 times 6?\n", "def solution():\n    return 2 * 6", "l1"),
    ]
    batch = collate([tokenize(tokenizer, e, 512) for e in examples], tokenizer.pad_token_id)
    with torch.no_grad():
        whole = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        sliced, labels = _forward(model, batch)
    assert sliced.size(1) < whole.size(1)  # the prompts' logits were never computed
    assert torch.allclose(target_token_loss(sliced, labels), target_token_loss(whole, batch["labels"]), atol=1e-5)
    assert torch.allclose(sequence_logprobs(sliced, labels), sequence_logprobs(whole, batch["labels"]), atol=1e-4)
