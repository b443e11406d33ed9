"""Stop strings are looked for in the generated text only, with the real SmolLM2 tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, StoppingCriteria
from transformers.generation.stopping_criteria import StopStringCriteria

from envisions_ray.actors.hf_backend import StopInGeneratedText
from envisions_ray.model import packaged_gguf
from envisions_ray.prompts import PromptBook

PROMPT = PromptBook.load("conf/prompts/logic.yaml").explore("Bob is big.", 0)  # ends in ":\n", as every logic prompt


@pytest.fixture(scope="module")
def tokenizer():
    gguf = packaged_gguf("smollm2", Path("~/.cache/envisions-ray").expanduser())  # in its package: nothing written
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def rows(tokenizer, *generated: str) -> torch.Tensor:
    ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    return torch.tensor([ids + tokenizer(text, add_special_tokens=False)["input_ids"] for text in generated])


def test_a_first_generated_newline_after_a_prompt_ending_in_one_is_no_stop(tokenizer):
    assert PROMPT.endswith("\n")
    prompt_length = len(tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    first = rows(tokenizer, "\n")
    ours: StoppingCriteria = StopInGeneratedText(tokenizer, ["\n\n"], prompt_length)
    assert not ours(first).any()
    assert StopStringCriteria(tokenizer, ["\n\n"])(first, None).all()  # transformers' own check stops here: the defect


def test_a_stop_string_in_the_generated_text_stops_its_row_only(tokenizer):
    prompt_length = len(tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    stop = StopInGeneratedText(tokenizer, ["\n\n"], prompt_length)
    assert stop(rows(tokenizer, "\nFacts:\nBig(Bob, True)\n\n")).all()
    # Rows of one batch are judged apart (same length here: the same text, one token swapped).
    ended, going = rows(tokenizer, "Big(Bob, True)\n\n")[0], rows(tokenizer, "Big(Bob, True)\n\n")[0].clone()
    going[-1] = tokenizer("x", add_special_tokens=False)["input_ids"][0]
    assert stop(torch.stack([ended, going])).tolist() == [True, False]
