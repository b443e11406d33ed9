"""Shared fixtures: a tiny random Llama and a tiny random Qwen2, each with its own tokenizer, and one
local Ray for the session."""

from __future__ import annotations

import pytest

from envisions_ray.word_problems import arithmetic_problem

# The throwaway Ray head's fixture (tests/ray_head.py), for the cluster-path tests.
pytest_plugins = ["ray_head"]

# Heads of 32 dimensions: vLLM's CPU attention has no kernel for smaller ones.
TINY_LLAMA = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=4096,
)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A random 2-layer Llama and a byte-level BPE tokenizer trained on a few word problems and programs."""
    import random

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    rng = random.Random(0)
    corpus = [arithmetic_problem(rng)[0] for _ in range(200)] + ["def solution():\n    return 3 * 4\n"] * 20
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<eos>")
    config = LlamaConfig(
        vocab_size=fast.vocab_size,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.eos_token_id,
        **TINY_LLAMA,
    )
    # Seeded: torch's default seed differs per process, so unseeded weights made the suite's outcome
    # a draw. Seed 5 gives a solver (below) that answers greedily with SOLVER_PROGRAM exactly and
    # samples it a third of the time at 0.8; seed 0's solver writes five spaces of indent.
    torch.manual_seed(5)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path, safe_serialization=True)
    fast.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> str:
    """A random 2-layer Qwen2 with a byte-level BPE Qwen2Tokenizer, shaped as the converted
    Qwen2.5-Coder-0.5B GGUF is: an output layer of its own (untied), and the special tokens its
    tokenizer reports: EOS `<|im_end|>`, pad `<|endoftext|>` (not EOS), BOS `<|endoftext|>` too but
    never added, no unk."""
    import json
    import random

    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    rng = random.Random(0)
    corpus = [arithmetic_problem(rng)[0] for _ in range(200)] + ["def solution():\n    return 3 * 4\n\n"] * 20
    # Trained with Qwen2Tokenizer's own normalizer and pre-tokenizer, so its merges fit them.
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus, trainer)
    bpe = json.loads(tokenizer.to_str())["model"]
    qwen = Qwen2Tokenizer(
        vocab=bpe["vocab"],
        merges=[tuple(merge) for merge in bpe["merges"]],
        unk_token=None,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    config = Qwen2Config(
        vocab_size=len(qwen),
        eos_token_id=qwen.eos_token_id,
        pad_token_id=qwen.pad_token_id,
        bos_token_id=qwen.bos_token_id,
        tie_word_embeddings=False,
        **TINY_LLAMA,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-qwen")
    Qwen2ForCausalLM(config).save_pretrained(path, safe_serialization=True)
    qwen.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # Logical CPUs for 1 generator, 2 executors and 2 train workers at once, as a run holds them;
    # web executors also take a `browser` each.
    ray.init(num_cpus=5, resources={"browser": 2}, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


SOLVER_PROGRAM = "def solution():\n    return 12"


@pytest.fixture(scope="session")
def tiny_solver(tiny_model, tmp_path_factory) -> str:
    """The tiny model after 60 steps of learning to answer every zero-shot prompt with
    SOLVER_PROGRAM: sampling from it at temperature 0.8 yields both correct and wrong programs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from envisions_ray.losses import target_token_loss
    from envisions_ray.prompts import PromptBook
    from envisions_ray.tokens import collate, tokenize
    from envisions_ray.types import TrainExample

    torch.manual_seed(0)
    prompts = PromptBook.load("conf/prompts/math.yaml")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    rng = __import__("random").Random(1)
    rows = [
        tokenize(tokenizer, TrainExample(prompts.explore(arithmetic_problem(rng)[0]), SOLVER_PROGRAM, "l1"), 512)
        for _ in range(64)
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for step in range(60):
        batch = collate(rows[step % 16 * 4 : step % 16 * 4 + 4], tokenizer.pad_token_id)
        loss = target_token_loss(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    path = tmp_path_factory.mktemp("tiny-solver")
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return str(path)


def write_twelves(path, prefix: str, count: int, seed: int) -> str:
    """A JSONL dataset of word problems; most answers are 12, a few are not."""
    import json
    import random

    rng = random.Random(seed)
    lines = [
        json.dumps({"id": f"{prefix}{i}", "question": arithmetic_problem(rng)[0], "answer": "12" if i % 4 else "13"})
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def twelves(tmp_path) -> str:
    return write_twelves(tmp_path / "twelves.jsonl", "t", 12, seed=2)


@pytest.fixture
def twelves_dev(tmp_path) -> str:
    """Other problems of the same kind: the eval set, since a run refuses to evaluate on its training problems."""
    return write_twelves(tmp_path / "twelves-dev.jsonl", "d", 4, seed=3)
