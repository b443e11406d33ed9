"""What the trainer sees for (prompt, target) is what the generator conditioned on and produced,
with a Llama-style SentencePiece tokenizer (prefix space, BOS) built here with `tokenizers`."""

from __future__ import annotations

import pytest
import torch

from envisions_ray.actors.backend import cut_at_stop
from envisions_ray.actors.hf_backend import HFBackend
from envisions_ray.config import GeneratorConfig
from envisions_ray.prompts import PromptBook
from envisions_ray.tokens import IGNORE, encode_prompt, target_ids, tokenize
from envisions_ray.types import TrainExample

PROMPT = PromptBook.load("conf/prompts/math.yaml").explore(
    "Tom has 5 apples and buys 7 more. How many apples does he have?"
)
PROGRAM = "def solution():\n    apples = 5\n    return apples + 7"


@pytest.fixture(scope="module")
def llama_style(tmp_path_factory) -> str:
    """A tiny Llama with a SentencePiece-style BPE tokenizer: "▁" marks a word start, the whole text
    gets one prefix "▁" (as Llama-2's normalizer does), newlines stand alone, and BOS comes first."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.pre_tokenizer = pre_tokenizers.Split("\n", behavior="isolated")
    tokenizer.decoder = decoders.Replace("▁", " ")
    corpus = [PROMPT + PROGRAM, PROGRAM, "def solution():\n    return 12"] * 20
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"]))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.token_to_id("<s>"))]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )
    config = LlamaConfig(
        vocab_size=fast.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    path = tmp_path_factory.mktemp("llama-style")
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    fast.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(llama_style):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(llama_style)


def test_the_target_is_tokenised_as_it_follows_the_prompt_not_with_a_prefix_space(tokenizer):
    alone = tokenizer(PROGRAM, add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(alone[0]).startswith("▁")  # the defect: "▁def", which never follows "\n"
    in_context = target_ids(tokenizer, PROMPT, PROGRAM)
    assert not tokenizer.convert_ids_to_tokens(in_context[0]).startswith("▁")
    whole = tokenizer(PROMPT + PROGRAM, add_special_tokens=False)["input_ids"]
    assert whole[-len(in_context) :] == in_context and tokenizer.decode(in_context) == PROGRAM


def test_the_prompt_starts_with_bos_as_the_model_s_tokenizer_adds_it(tokenizer):
    row = tokenize(tokenizer, TrainExample(PROMPT, PROGRAM, "l1"), 1024)
    prompt_length = row.labels.count(IGNORE)
    assert row.input_ids[0] == tokenizer.bos_token_id
    assert row.input_ids[:prompt_length] == encode_prompt(tokenizer, PROMPT)
    assert row.input_ids[prompt_length:] == target_ids(tokenizer, PROMPT, PROGRAM) + [tokenizer.eos_token_id]


def test_the_hf_generator_conditions_on_the_prompt_ids_the_trainer_sees(llama_style, tokenizer, monkeypatch):
    backend = HFBackend(GeneratorConfig(backend="hf", stop=[], num_cpus=1), llama_style, "float32")
    seen = []
    generate = backend.model.generate
    monkeypatch.setattr(
        backend.model, "generate", lambda **kwargs: seen.append(kwargs["input_ids"]) or generate(**kwargs)
    )
    backend.sample(["Hi", PROMPT], 1, 0.0, 2, False)
    conditioned = seen[0][1][seen[0][1] != tokenizer.pad_token_id].tolist()  # the longer row has no padding
    row = tokenize(tokenizer, TrainExample(PROMPT, PROGRAM, "l1"), 1024)
    assert conditioned == row.input_ids[: row.labels.count(IGNORE)]
    assert torch.equal(seen[0][0][-len(encode_prompt(tokenizer, "Hi")) :], torch.tensor(encode_prompt(tokenizer, "Hi")))


def test_a_program_sampled_with_a_prefix_space_is_stored_as_the_same_runnable_text_by_both_backends(tokenizer):
    sampled = tokenizer(PROGRAM + "\n\nQuestion:", add_special_tokens=False)[
        "input_ids"
    ]  # "▁def ...", as a base model may write
    prompt_ids = encode_prompt(tokenizer, PROMPT)
    alone = tokenizer.decode(sampled)  # the hf backend decodes the generated tokens alone
    in_context = tokenizer.decode(prompt_ids + sampled)[len(tokenizer.decode(prompt_ids)) :]  # vLLM, after the prompt
    assert in_context.startswith(" def")  # Python's IndentationError, unstripped
    stops = ["\n\n", "\nQuestion:"]
    assert cut_at_stop(alone, stops) == cut_at_stop(in_context, stops) == PROGRAM
    compile(cut_at_stop(in_context, stops), "<solution>", "exec")
