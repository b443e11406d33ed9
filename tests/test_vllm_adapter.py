"""The vllm backend's adapter (actors/vllm_backend.py) on output shapes a real engine cannot be made to
produce on demand (a stop token id, an EOS-valued token cut by length, an empty completion), and
the GPU engine arguments; tests/test_vllm_engine.py runs the real engine.

The fakes hold exactly the fields the adapter reads, shaped as vLLM's source defines them:
- `CompletionOutput` (vllm/outputs.py): `text` cut before a stop string; `token_ids` keeping the
  stop string's tokens, and a final EOS or stop token id that is not in `text`
  (vllm/v1/engine/detokenizer.py); `logprobs`, one {token_id: Logprob} dict per token id holding
  the sampled token among the top ones (vllm/v1/engine/logprobs.py); `finish_reason` ("stop",
  "length") and `stop_reason` (the stop string, a stop token id, or None for EOS).
- `RequestOutput` (vllm/outputs.py): `outputs`, `prompt_token_ids`, `prompt_logprobs`, whose
  first entry is None (vllm/logprobs.py `create_prompt_logprobs`), and `num_cached_tokens`, the
  prompt tokens found in the prefix cache (None when not reported).
- `Logprob` (vllm/logprobs.py; vllm/sequence.py before it moved): `.logprob`.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

import envisions_ray.actors.generator
from envisions_ray.actors.backend import Sample
from envisions_ray.actors.generator import make_backend, start_generators
from envisions_ray.actors.vllm_backend import (
    GRAMMAR_ARG,
    LOGITS_PROCESSOR,
    MULTIPROCESSING_ENV,
    VLLMBackend,
    engine_args,
    engine_process_setting,
    samples_from_outputs,
    target_logprob_sums,
)
from envisions_ray.config import GeneratorConfig
from envisions_ray.errors import UserError

STOPS = ["\n\n\n", "\nQuestion:"]
EOS = 0
MISSING_VLLM = "generator.backend=vllm needs vLLM: run scripts/setup.sh (CPU), or pip install 'envisions-ray[gpu]'"


@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = "length"
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    outputs: list[CompletionOutput] = field(default_factory=list)
    prompt_token_ids: list[int] = field(default_factory=list)
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None
    num_cached_tokens: int | None = None


def completion(
    text: str, sampled: list[tuple[int, float]], finish="length", stop=None, with_logprobs=True
) -> CompletionOutput:
    """Each position also holds a likelier token (token 999), first, as a top-1 entry would."""
    logprobs = [{999: Logprob(-0.001), token: Logprob(lp)} for token, lp in sampled] if with_logprobs else None
    return CompletionOutput(text, [token for token, _ in sampled], logprobs, finish, stop)


def test_n_samples_per_prompt_in_order_with_their_mean_logprob():
    outputs = [
        RequestOutput([completion("a", [(5, -1.0), (6, -3.0)]), completion("b", [(7, -0.5)])]),
        RequestOutput([completion("c", [(8, -2.0), (9, -2.0), (10, -5.0)]), completion("d", [(11, -0.25)])]),
    ]
    assert samples_from_outputs(outputs, STOPS, True) == [
        [Sample("a", -2.0, 2), Sample("b", -0.5, 1)],
        [Sample("c", -3.0, 3), Sample("d", -0.25, 1)],
    ]


def test_each_sample_carries_its_prompts_length_and_the_prefix_caches_share():
    cached = RequestOutput([completion("a", [(5, -1.0)])] * 2, prompt_token_ids=[1, 2, 3, 4], num_cached_tokens=3)
    unreported = RequestOutput([completion("b", [(6, -1.0)])], prompt_token_ids=[1, 2])
    [[first, second], [third]] = samples_from_outputs([cached, unreported], STOPS, True)
    assert (first.prompt_tokens, first.cached_prompt_tokens) == (4, 3) and second == first
    assert (third.prompt_tokens, third.cached_prompt_tokens) == (2, 0)


def test_a_stop_string_cuts_the_text_but_its_tokens_count():
    # vLLM already cut "\n\n\n" from the text; its two tokens are still in token_ids, as hf counts them.
    stopped = completion("x = 1\n  ", [(5, -1.0), (6, -1.0), (7, -2.0), (8, -4.0)], "stop", "\n\n\n")
    # Text that still holds a stop string (include_stop_str_in_output) is cut here, as hf cuts it.
    uncut = completion("y = 2\nQuestion: more", [(5, -1.0)], "stop", "\nQuestion:")
    [[first, second]] = samples_from_outputs([RequestOutput([stopped, uncut])], STOPS, True)
    assert first == Sample("x = 1", -2.0, 4)
    assert second.text == "y = 2"


def test_eos_or_a_stop_token_ends_the_sample_but_does_not_count():
    at_eos = completion("z", [(5, -1.0), (6, -3.0), (EOS, -9.0)], "stop", None)
    at_stop_token = completion("z", [(5, -1.0), (6, -3.0), (42, -9.0)], "stop", 42)
    cut_by_length = completion("z", [(5, -1.0), (6, -3.0), (EOS, -8.0)], "length", None)  # EOS-valued token, not an end
    [samples] = samples_from_outputs([RequestOutput([at_eos, at_stop_token, cut_by_length])], STOPS, True)
    assert samples == [Sample("z", -2.0, 2), Sample("z", -2.0, 2), Sample("z", -4.0, 3)]


def test_empty_completions_have_zero_tokens_and_zero_self_reward():
    only_eos = completion("", [(EOS, -0.5)], "stop", None)
    nothing = completion("", [], "length")
    [samples] = samples_from_outputs([RequestOutput([only_eos, nothing])], STOPS, True)
    assert samples == [Sample("", 0.0, 0), Sample("", 0.0, 0)]


def test_without_self_reward_no_logprobs_are_read():
    [[sample]] = samples_from_outputs(
        [RequestOutput([completion("a", [(5, -1.0), (6, -2.0)], with_logprobs=False)])], STOPS, False
    )
    assert sample == Sample("a", 0.0, 2)


def test_target_logprob_sum_skips_the_prompt_and_the_leading_none():
    positions = [
        None,
        {3: Logprob(-0.5)},
        {4: Logprob(-1.0), 999: Logprob(-0.1)},
        {999: Logprob(-0.2), EOS: Logprob(-0.25)},
    ]
    outputs = [RequestOutput(prompt_token_ids=[2, 3, 4, EOS], prompt_logprobs=positions)] * 3
    # Prompt [2, 3], target [4] + EOS; a prompt of length 0 still cannot score the first token.
    assert target_logprob_sums(outputs, [2, 1, 0]) == [-1.25, -1.75, -1.75]


def test_the_grammar_masks_after_the_tokens_sampled_so_far_and_leaves_allowed_logits_alone(tiny_model):
    """A sample's GrammarRow takes in what the live token list gained since its last call; the
    allowed tokens keep their logits (so raw logprobs taken before it are untouched in any case),
    the others become -inf, and after a complete program only EOS is left."""
    import torch
    import xgrammar
    from transformers import AutoTokenizer

    from envisions_ray.actors.vllm_grammar import GrammarRow

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    vocabulary = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    row = GrammarRow(xgrammar.GrammarCompiler(vocabulary).compile_grammar('root ::= "ab"'))
    [a] = tokenizer.encode("a", add_special_tokens=False)
    [b] = tokenizer.encode("b", add_special_tokens=False)
    sampled: list[int] = []
    logits = torch.arange(len(tokenizer), dtype=torch.float32)
    masked = row(sampled, logits.clone())
    assert masked[a] == logits[a] and torch.isinf(masked).sum() == len(tokenizer) - 1
    sampled += [a]  # vLLM appends to the very list the row was given
    masked = row(sampled, logits.clone())
    assert masked[b] == logits[b] and masked[a] == -math.inf
    sampled += [b]
    masked = row(sampled, logits.clone())
    assert torch.isfinite(masked).nonzero().flatten().tolist() == [tokenizer.eos_token_id]


def test_the_engine_finds_the_grammar_processor_by_name_and_only_grammar_requests_get_one(tiny_model):
    from vllm.v1.sample.logits_processor import _load_logitsprocs_by_fqcns

    from envisions_ray.actors.vllm_grammar import GrammarAfterLogprobs, GrammarRow

    assert _load_logitsprocs_by_fqcns([LOGITS_PROCESSOR]) == [GrammarAfterLogprobs]
    model = SimpleNamespace(tokenizer=tiny_model, get_vocab_size=lambda: 512)
    processor = GrammarAfterLogprobs(SimpleNamespace(model_config=model), "cpu", False)
    assert isinstance(
        processor.new_req_logits_processor(SimpleNamespace(extra_args={GRAMMAR_ARG: "root ::= [0-9]"})), GrammarRow
    )
    assert processor.new_req_logits_processor(SimpleNamespace(extra_args=None)) is None


def test_engine_args_size_the_kv_cache_by_gpu_share_or_by_cpu_gibibytes():
    gpu = GeneratorConfig(
        backend="vllm", num_gpus=1, tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=512, seed=7
    )
    gpu = engine_args(gpu, "model-a", "bfloat16")
    assert gpu == dict(
        model="model-a",
        dtype="bfloat16",
        seed=7,
        tensor_parallel_size=2,
        max_model_len=512,
        enforce_eager=False,
        logprobs_mode="raw_logprobs",
        logits_processors=[LOGITS_PROCESSOR],
        distributed_executor_backend="mp",
        gpu_memory_utilization=0.5,
    )
    cpu = engine_args(
        GeneratorConfig(backend="vllm", kv_cache_gib=1.5, kv_block_size=64, enforce_eager=True), "model-a", "float32"
    )
    assert cpu["kv_cache_memory_bytes"] == 1.5 * 2**30 and "gpu_memory_utilization" not in cpu
    assert cpu["block_size"] == 64 and "block_size" not in gpu  # GPUs keep vLLM's own
    assert cpu["enforce_eager"] and cpu["distributed_executor_backend"] == "uni"  # generator.engine_in_process
    # Whole prompts a step on CPU: a cut prompt kills the engine for seeded requests (vllm_backend docstring).
    assert cpu["enable_chunked_prefill"] is False and cpu["max_num_batched_tokens"] == 4096
    assert "enable_chunked_prefill" not in gpu


def test_the_engine_runs_in_the_actors_process_on_cpu_only_where_the_config_asks(monkeypatch):
    """vLLM's own executor (None) on GPUs and where the setting is off; on CPU, "uni" and
    multiprocessing off while the engine is built, and as it was after."""
    cpu, spawned = GeneratorConfig(backend="vllm"), GeneratorConfig(backend="vllm", engine_in_process=False)
    gpu = GeneratorConfig(backend="vllm", num_gpus=1)
    executors = [
        engine_args(config, "model-a", "float32")["distributed_executor_backend"] for config in (cpu, spawned, gpu)
    ]
    assert executors == ["uni", None, None]
    for before in [None, "1"]:
        if before is None:
            monkeypatch.delenv(MULTIPROCESSING_ENV, raising=False)
        else:
            monkeypatch.setenv(MULTIPROCESSING_ENV, before)
        with engine_process_setting(cpu):
            assert os.environ[MULTIPROCESSING_ENV] == "0"
        assert os.environ.get(MULTIPROCESSING_ENV) == before
        for config in (spawned, gpu):
            with engine_process_setting(config):
                assert os.environ.get(MULTIPROCESSING_ENV) == before
    with pytest.raises(RuntimeError), engine_process_setting(cpu):
        raise RuntimeError("the engine failed to start")
    assert os.environ.get(MULTIPROCESSING_ENV) == before


def test_without_vllm_the_backend_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail, installed or not
    with pytest.raises(UserError) as err:
        VLLMBackend(GeneratorConfig(backend="vllm"), "model-a", "float32")
    assert str(err.value) == MISSING_VLLM
    with pytest.raises(UserError, match="needs vLLM"):
        make_backend(GeneratorConfig(backend="vllm"), "model-a", "float32")


@pytest.mark.parametrize("backend, engine_gpus", [("vllm", 4), ("hf", 1)])  # hf has no tensor parallelism
def test_each_generator_actor_gets_a_bundle_with_all_its_engines_gpus(monkeypatch, backend, engine_gpus):
    made, started = {}, []
    monkeypatch.setattr(
        envisions_ray.actors.generator,
        "placement_group",
        lambda bundles, strategy, name: made.setdefault("bundles", bundles),
    )
    actor = SimpleNamespace(options=lambda **options: SimpleNamespace(remote=lambda *args: started.append(options)))
    monkeypatch.setattr(envisions_ray.actors.generator, "ray", SimpleNamespace(remote=lambda cls: actor))
    start_generators(
        GeneratorConfig(backend=backend, num_actors=2, num_cpus=3, num_gpus=1, tensor_parallel_size=4), "m", "bfloat16"
    )
    assert made["bundles"] == [{"GPU": engine_gpus, "CPU": 3}] * 2
    placed = [(o["num_gpus"], o["num_cpus"], o["scheduling_strategy"].placement_group_bundle_index) for o in started]
    assert placed == [(engine_gpus, 3, 0), (engine_gpus, 3, 1)]
    assert all(o["scheduling_strategy"].placement_group is made["bundles"] for o in started)
