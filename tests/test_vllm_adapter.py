"""Contract tests of the vllm backend's adapter (actors/vllm_backend.py), not of vLLM: no vLLM runs here.

The fakes hold exactly the fields the adapter reads, shaped as vLLM's source defines them:
- `CompletionOutput` (vllm/outputs.py): `text` cut before a stop string; `token_ids` keeping the
  stop string's tokens, and a final EOS or stop token id that is not in `text`
  (vllm/v1/engine/detokenizer.py); `logprobs`, one {token_id: Logprob} dict per token id holding
  the sampled token among the top ones (vllm/v1/engine/logprobs.py); `finish_reason` ("stop",
  "length") and `stop_reason` (the stop string, a stop token id, or None for EOS).
- `RequestOutput` (vllm/outputs.py): `outputs`, `prompt_token_ids`, and `prompt_logprobs`, whose
  first entry is None (vllm/logprobs.py `create_prompt_logprobs`).
- `Logprob` (vllm/logprobs.py; vllm/sequence.py before it moved): `.logprob`.
A fake `vllm` module stands in for the engine, to check what the backend asks of it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

import actors.generator
from actors.generator import Sample, make_backend, start_generators
from actors.vllm_backend import VLLMBackend, samples_from_outputs, target_logprob_sums
from envisions_ray.config import GeneratorConfig
from envisions_ray.errors import UserError

STOPS = ["\n\n\n", "\nQuestion:"]
EOS = 0
MISSING_VLLM = "generator.backend=vllm needs the gpu extra: pip install 'envisions-ray[gpu]'"


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


def completion(text: str, sampled: list[tuple[int, float]], finish="length", stop=None, with_logprobs=True) -> CompletionOutput:
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
    [[sample]] = samples_from_outputs([RequestOutput([completion("a", [(5, -1.0), (6, -2.0)], with_logprobs=False)])], STOPS, False)
    assert sample == Sample("a", 0.0, 2)


def test_target_logprob_sum_skips_the_prompt_and_the_leading_none():
    positions = [None, {3: Logprob(-0.5)}, {4: Logprob(-1.0), 999: Logprob(-0.1)}, {999: Logprob(-0.2), EOS: Logprob(-0.25)}]
    outputs = [RequestOutput(prompt_token_ids=[2, 3, 4, EOS], prompt_logprobs=positions)] * 3
    # Prompt [2, 3], target [4] + EOS; a prompt of length 0 still cannot score the first token.
    assert target_logprob_sums(outputs, [2, 1, 0]) == [-1.25, -1.75, -1.75]


# A fake `vllm` module: records what the backend asks the engine for and answers with canned outputs.


class FakeTokenizer:
    eos_token_id = EOS

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}  # 1 = BOS


class FakeLLM:
    instances: list[FakeLLM] = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls, self.shut_down = kwargs, [], False
        self.llm_engine = SimpleNamespace(engine_core=SimpleNamespace(shutdown=self.shutdown))
        FakeLLM.instances.append(self)

    def shutdown(self) -> None:
        self.shut_down = True

    def get_tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        if params.kwargs.get("prompt_logprobs") is not None:
            # log p(token) = -(token + 1) / 100 at every position but the first.
            return [RequestOutput(prompt_token_ids=ids, prompt_logprobs=[None] + [{t: Logprob(-(t + 1) / 100)} for t in ids[1:]]) for ids in (p["prompt_token_ids"] for p in prompts)]
        with_logprobs = params.kwargs["logprobs"] is not None
        return [RequestOutput([completion(f"s{i}", [(5, -1.0), (6, -2.0)], with_logprobs=with_logprobs) for i in range(params.kwargs["n"])]) for _ in prompts]


@pytest.fixture
def fake_vllm(monkeypatch):
    FakeLLM.instances = []
    module = SimpleNamespace(LLM=FakeLLM, SamplingParams=lambda **kwargs: SimpleNamespace(kwargs=kwargs), TokensPrompt=dict)
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def test_greedy_asks_for_one_sample_and_repeats_it(fake_vllm):
    backend = VLLMBackend(GeneratorConfig(backend="vllm", stop=STOPS), "model-a", "bfloat16")
    groups = backend.sample(["hi", "yo"], 3, 0.0, 16, True)
    [(prompts, params)] = backend.llm.calls
    assert params.kwargs["n"] == 1 and params.kwargs["temperature"] == 0.0
    assert groups == [[Sample("s0", -1.5, 2)] * 3] * 2


def test_sampling_sends_unspecial_token_ids_and_asks_for_sampled_logprobs(fake_vllm):
    backend = VLLMBackend(GeneratorConfig(backend="vllm", stop=STOPS, top_p=0.9), "model-a", "bfloat16")
    groups = backend.sample(["hi"], 2, 0.7, 16, True)
    [(prompts, params)] = backend.llm.calls
    assert prompts == [{"prompt_token_ids": [ord("h"), ord("i")]}]  # no BOS, as hf and the trainer
    assert params.kwargs == dict(n=2, temperature=0.7, top_p=0.9, max_tokens=16, stop=STOPS, logprobs=0)
    assert [s.text for s in groups[0]] == ["s0", "s1"]


def test_without_self_reward_asks_for_no_logprobs(fake_vllm):
    backend = VLLMBackend(GeneratorConfig(backend="vllm"), "model-a", "bfloat16")
    [[first, second]] = backend.sample(["hi"], 2, 0.7, 16, False)
    assert backend.llm.calls[0][1].kwargs["logprobs"] is None
    assert first == Sample("s0", 0.0, 2)


def test_logprob_scores_target_and_eos_tokenised_apart(fake_vllm):
    backend = VLLMBackend(GeneratorConfig(backend="vllm"), "model-a", "bfloat16")
    [score] = backend.logprob(["ab"], ["c"])
    [(prompts, params)] = backend.llm.calls
    assert prompts == [{"prompt_token_ids": [ord("a"), ord("b"), ord("c"), EOS]}]
    assert params.kwargs["prompt_logprobs"] == 0 and params.kwargs["max_tokens"] == 1
    assert score == pytest.approx(-(ord("c") + 1) / 100 - (EOS + 1) / 100)


def test_engine_args_and_load_replaces_the_engine(fake_vllm):
    cfg = GeneratorConfig(backend="vllm", tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=512, seed=7)
    backend = VLLMBackend(cfg, "model-a", "bfloat16")
    backend.load("model-b")
    first, second = FakeLLM.instances
    assert first.shut_down and not second.shut_down and backend.llm is second
    assert second.kwargs == dict(
        model="model-b", dtype="bfloat16", seed=7, tensor_parallel_size=2, gpu_memory_utilization=0.5,
        max_model_len=512, logprobs_mode="raw_logprobs", distributed_executor_backend="mp",
    )


def test_without_vllm_the_backend_says_which_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail, installed or not
    with pytest.raises(UserError) as err:
        VLLMBackend(GeneratorConfig(backend="vllm"), "model-a", "float32")
    assert str(err.value) == MISSING_VLLM
    with pytest.raises(UserError, match="gpu extra"):
        make_backend(GeneratorConfig(backend="vllm"), "model-a", "float32")


@pytest.mark.parametrize("backend, engine_gpus", [("vllm", 4), ("hf", 1)])  # hf has no tensor parallelism
def test_each_generator_actor_gets_a_bundle_with_all_its_engines_gpus(monkeypatch, backend, engine_gpus):
    made, started = {}, []
    monkeypatch.setattr(actors.generator, "placement_group", lambda bundles, strategy, name: made.setdefault("bundles", bundles))
    actor = SimpleNamespace(options=lambda **options: SimpleNamespace(remote=lambda *args: started.append(options)))
    monkeypatch.setattr(actors.generator, "ray", SimpleNamespace(remote=lambda cls: actor))
    start_generators(GeneratorConfig(backend=backend, num_actors=2, num_cpus=3, num_gpus=1, tensor_parallel_size=4), "m", "bfloat16")
    assert made["bundles"] == [{"GPU": engine_gpus, "CPU": 3}] * 2
    placed = [(o["num_gpus"], o["num_cpus"], o["scheduling_strategy"].placement_group_bundle_index) for o in started]
    assert placed == [(engine_gpus, 3, 0), (engine_gpus, 3, 1)]
    assert all(o["scheduling_strategy"].placement_group is made["bundles"] for o in started)
