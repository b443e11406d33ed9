"""The vllm backend on a real vLLM engine (the CPU build), inside a Ray generator actor.

One engine, in vLLM's own processes, serves the whole module: starting one costs most of a minute on
2 cores. A second, in the actor's own process (`generator.engine_in_process`), is held to the first
in one test. The hf backend
on the same tiny model is the reference for greedy text, self-reward and teacher-forced logprobs;
both run in float32, so they agree to float32 rounding (the kernels differ, the arithmetic does not).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import torch
from conftest import SOLVER_PROGRAM

from envisions_ray.actors.generator import Generator
from envisions_ray.actors.hf_backend import HFBackend
from envisions_ray.actors.vllm_backend import GIB, MULTIPROCESSING_ENV, UNTIED_PREFIX, ServedWeights
from envisions_ray.config import GeneratorConfig
from envisions_ray.model import is_tied
from envisions_ray.prompts import PromptBook
from envisions_ray.seeds import request_seed
from tests.actor_process import actor_pid

PROMPT = PromptBook.load("conf/prompts/math.yaml").explore(
    "Tom has 5 apples and buys 7 more. How many apples does he have?"
)
# Float32 on both sides; sums over ~15 tokens of differently ordered reductions.
TOLERANCE = 1e-3
# A grammar of one digit, each digit one token of the tiny model's vocabulary.
ONE_DIGIT = "root ::= [0-9]"


def engine_config(**overrides) -> GeneratorConfig:
    settings = dict(
        backend="vllm", num_cpus=1, stop=["\n\n"], max_model_len=1024, kv_cache_gib=0.25, enforce_eager=True, top_p=1.0
    )
    return GeneratorConfig(**{**settings, **overrides})


def start_engine(ray_session, model: str, in_process: bool):
    config = engine_config(engine_in_process=in_process)
    return ray_session.remote(Generator).options(num_cpus=1).remote(config, model, "float32")


@pytest.fixture(scope="module")
def engine(ray_session, tiny_solver):
    """vLLM's engine-core and worker processes, whatever generator.engine_in_process defaults to."""
    actor = start_engine(ray_session, tiny_solver, in_process=False)
    yield actor
    ray_session.kill(actor)


@pytest.fixture(scope="module")
def reference(tiny_solver) -> HFBackend:
    return HFBackend(GeneratorConfig(backend="hf", stop=["\n\n"], num_cpus=1, top_p=1.0), tiny_solver, "float32")


def engine_processes(generator_pid: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(generator_pid).children(recursive=True) if "EngineCore" in " ".join(p.cmdline())]


def teacher_forced_mean(reference: HFBackend, prompt: str, text: str) -> tuple[float, int]:
    """Mean log-prob of `text`'s tokens after `prompt` under the hf model, and how many tokens."""
    prompt_ids = reference.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target_ids = reference.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = reference.model(input_ids=torch.tensor([prompt_ids + target_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
    picked = logprobs[torch.arange(len(target_ids)), torch.tensor(target_ids)]
    return picked.mean().item(), len(target_ids)


def test_greedy_text_and_self_reward_match_the_hf_backend(ray_session, engine, reference):
    [[first, second]] = ray_session.get(engine.sample.remote([PROMPT], 2, 0.0, 32, True))
    [[expected, _]] = reference.sample([PROMPT], 2, 0.0, 32, True)
    assert first == second and first.text == expected.text == SOLVER_PROGRAM
    assert first.num_tokens == expected.num_tokens
    assert first.self_reward == pytest.approx(expected.self_reward, abs=TOLERANCE)
    mean, count = teacher_forced_mean(reference, PROMPT, first.text)
    assert count == first.num_tokens and first.self_reward == pytest.approx(mean, abs=TOLERANCE)


def test_n_samples_are_cut_at_the_stop_string_and_scored_on_their_own_tokens(ray_session, engine, reference):
    [samples] = ray_session.get(engine.sample.remote([PROMPT], 24, 0.8, 32, True))
    assert len(samples) == 24 and len({s.text for s in samples}) > 1  # 0.8 on a half-trained model
    for sample in samples:
        assert "\n\n" not in sample.text and sample.num_tokens > 0 and sample.self_reward < 0
    # Samples of the program the solver learnt (a third of them at 0.8), in its own tokens, ended on
    # EOS: their self-reward is the teacher-forced mean. A sampled text may also have come from other
    # tokens than it re-tokenises into, which the token count tells apart.
    mean, count = teacher_forced_mean(reference, PROMPT, SOLVER_PROGRAM)
    learnt = [sample for sample in samples if sample.text == SOLVER_PROGRAM and sample.num_tokens == count]
    assert learnt, f"the solver never sampled its program in its own tokens: {[s.text for s in samples]}"
    for sample in learnt:
        assert sample.self_reward == pytest.approx(mean, abs=TOLERANCE)


def test_the_logprob_pass_matches_the_hf_backend(ray_session, engine, reference):
    targets = [SOLVER_PROGRAM, "def solution():\n    return 13", "print('no')"]
    ours = ray_session.get(engine.logprob.remote([PROMPT] * 3, targets))
    theirs = reference.logprob([PROMPT] * 3, targets)
    assert ours == pytest.approx(theirs, abs=TOLERANCE)
    assert ours[0] > ours[2]  # the program it was trained on is the likeliest


def test_a_constrained_sample_keeps_the_unmasked_policys_self_reward(ray_session, engine, reference):
    """The grammar's mask comes after vLLM takes the raw logprobs (actors/vllm_grammar.py), so the
    sampling pass gives the unmasked policy's. One digit is one token, so the hf model's log
    p(digit) is the truth."""
    [samples] = ray_session.get(engine.sample.remote([PROMPT], 16, 1.0, 8, True, ONE_DIGIT))
    assert all(len(s.text) == 1 and s.text.isdigit() and s.num_tokens == 1 for s in samples)
    assert len({s.text for s in samples}) > 1
    for sample in samples:
        mean, count = teacher_forced_mean(reference, PROMPT, sample.text)
        assert count == 1 and sample.self_reward == pytest.approx(mean, abs=TOLERANCE)
    assert max(s.self_reward for s in samples) < math.log(0.1) - 1  # not renormalised over ten digits


def test_a_grammar_that_allows_the_policys_answer_changes_nothing(ray_session, engine):
    exact = 'root ::= "' + SOLVER_PROGRAM.replace("\n", "\\n") + '"'
    [[free]] = ray_session.get(engine.sample.remote([PROMPT], 1, 0.0, 32, True))
    [[held]] = ray_session.get(engine.sample.remote([PROMPT], 1, 0.0, 32, True, exact))
    assert held.text == free.text == SOLVER_PROGRAM and held.num_tokens == free.num_tokens
    assert held.self_reward == pytest.approx(free.self_reward, abs=TOLERANCE)


def test_a_seeded_request_gets_the_same_samples_whatever_else_the_engine_runs(ray_session, engine):
    """Per-request seeds (envisions_ray/seeds.py): the second request alone, after its prompt was
    cached by the first call, draws what it drew beside the first; two inputs with one prompt
    draw differently; and sample k is vLLM's child k, seeded seed + k."""
    seeds = [request_seed(0, 0, "explore", "a"), request_seed(0, 0, "explore", "b")]
    together = ray_session.get(engine.sample.remote([PROMPT, PROMPT], 4, 1.0, 16, True, "", seeds))
    [alone] = ray_session.get(engine.sample.remote([PROMPT], 4, 1.0, 16, True, "", seeds[1:]))
    assert [s.text for s in alone] == [s.text for s in together[1]]
    assert [s.text for s in together[0]] != [s.text for s in together[1]]
    [[third]] = ray_session.get(engine.sample.remote([PROMPT], 1, 1.0, 16, True, "", [seeds[0] + 2]))
    assert third.text == together[0][2].text


def test_seeded_requests_whose_prompts_overflow_a_step_keep_the_engine_alive(ray_session, engine):
    """A prompt that a step's token budget cuts rewinds its request's generator, which a CPU
    torch.Generator refuses ("Chunked prefill" in actors/vllm_backend.py): a 2-hour GSM8K run died
    so. Forty seeded prompts of a hundred-odd tokens of their own overflow vLLM's default budget."""
    book = PromptBook.load("conf/prompts/math.yaml")
    prompts = [book.explore(f"Box {i}: " + ", ".join(f"{i * 97 + j} pears" for j in range(30))) for i in range(40)]
    seeds = [request_seed(0, 1, "explore", str(i)) for i in range(len(prompts))]
    groups = ray_session.get(engine.sample.remote(prompts, 2, 1.0, 4, True, "", seeds))
    assert [len(group) for group in groups] == [2] * len(prompts)


def resident_bytes(ray_session, actor) -> int:
    return psutil.Process(ray_session.get(actor_pid(actor))).memory_info().rss


def test_an_engine_in_the_actors_process_samples_reloads_and_frees_as_the_spawned_one(
    ray_session, engine, tiny_solver, tied_models
):
    """generator.engine_in_process: no engine process; seeded samples, free and under a grammar
    (the logits processor loads in the actor), are those of the engine in vLLM's own processes,
    self-reward included; an in-place reload computes the new weights; `close` frees the KV cache
    in the actor. Before the spawned engine's own reload: both still serve the solver."""
    in_process = start_engine(ray_session, tiny_solver, in_process=True)
    try:
        pid = ray_session.get(actor_pid(in_process))
        assert not psutil.Process(pid).children(recursive=True)  # no engine core, no worker
        setting, threads = ray_session.get(
            in_process.__ray_call__.remote(lambda _: (os.environ.get(MULTIPROCESSING_ENV), torch.get_num_threads()))
        )
        assert setting is None and threads == 1  # restored after the build; the actor's num_cpus
        seeds = [request_seed(0, 0, "explore", "a"), request_seed(0, 0, "explore", "b")]
        for grammar in ["", ONE_DIGIT]:
            call = ([PROMPT, PROMPT], 4, 1.0, 8, True, grammar, seeds)
            ours, theirs = ray_session.get([in_process.sample.remote(*call), engine.sample.remote(*call)])
            assert [[s.text for s in group] for group in ours] == [[s.text for s in group] for group in theirs]
            texts = {s.text for group in ours for s in group}
            assert len(texts) > 1 and (not grammar or all(text.isdigit() and len(text) == 1 for text in texts))
            for mine, spawned in zip(sum(ours, []), sum(theirs, [])):
                assert mine.self_reward == pytest.approx(spawned.self_reward, abs=TOLERANCE)
        targets = [SOLVER_PROGRAM, "print('no')"]
        hf = GeneratorConfig(backend="hf", stop=["\n\n"], num_cpus=1, top_p=1.0)
        expected = HFBackend(hf, tied_models[1], "float32").logprob([PROMPT] * 2, targets)
        ray_session.get(in_process.load.remote(tied_models[1]))
        reloaded = ray_session.get(in_process.logprob.remote([PROMPT] * 2, targets))
        assert reloaded == pytest.approx(expected, abs=TOLERANCE)
        before = resident_bytes(ray_session, in_process)
        ray_session.get(in_process.close.remote())
        assert before - resident_bytes(ray_session, in_process) > engine_config().kv_cache_gib * GIB / 2
    finally:
        ray_session.kill(in_process)


@pytest.fixture(scope="module")
def tied_models(tiny_model, tmp_path_factory) -> list[str]:
    """Two tied models (the output layer shares the embedding's weight, as in SmolLM2): the tiny
    model with its head tied, and that model with every weight moved by noise."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    paths = []
    for name in ["tied", "tied-moved"]:
        path = str(tmp_path_factory.mktemp(name))
        model.save_pretrained(path, safe_serialization=True)
        AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)
        paths.append(path)
        with torch.no_grad():
            for weight in model.parameters():
                weight.add_(torch.randn_like(weight) * weight.std() * 0.05)
    return paths


def test_a_killed_generators_untied_copy_is_removed_by_the_next_one(tied_models, tmp_path, monkeypatch):
    """A SIGKILLed generator cannot remove its copy; the next copy made on the machine does."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = tmp_path / f"{UNTIED_PREFIX}{gone.pid}-x"
    orphan.mkdir()
    (orphan / "model.safetensors").write_bytes(b"weights")
    served = ServedWeights(tied_models[0])
    assert not orphan.exists() and Path(served.path).parent == tmp_path
    assert not is_tied(served.path)
    served.close()
    assert not any(tmp_path.iterdir())


def test_new_weights_load_in_place_and_the_engine_computes_them(ray_session, engine, tied_models):
    """After the checks on the solver's weights (untied): a tied model, then another tied one, as a
    run hands SmolLM2's trained checkpoints over. Each time the engine's logprobs are the hf
    backend's on that checkpoint; a head left stale by the reload would be far off."""
    before = engine_processes(ray_session.get(actor_pid(engine)))
    targets = [SOLVER_PROGRAM, "def solution():\n    return 13", "print('no')"]
    hf = GeneratorConfig(backend="hf", stop=["\n\n"], num_cpus=1, top_p=1.0)
    expected = [HFBackend(hf, path, "float32").logprob([PROMPT] * 3, targets) for path in tied_models]
    # The second load is a test only if an engine still on the first model would fail it.
    assert expected[1] != pytest.approx(expected[0], abs=TOLERANCE)
    for path, logprobs in zip(tied_models, expected):
        ray_session.get(engine.load.remote(path))
        assert ray_session.get(engine.logprob.remote([PROMPT] * 3, targets)) == pytest.approx(logprobs, abs=TOLERANCE)
    [[untrained]] = ray_session.get(engine.sample.remote([PROMPT], 1, 0.0, 16, False))
    assert untrained.text != SOLVER_PROGRAM
    # In place: the engine that served the solver still runs, and no other.
    assert len(before) == 1 and engine_processes(ray_session.get(actor_pid(engine))) == before


def test_a_killed_generator_leaves_no_engine_process(ray_session, engine):
    """Last in this module: it kills the shared engine, with SIGKILL as a lost process dies."""
    actor = psutil.Process(ray_session.get(actor_pid(engine)))
    children = actor.children(recursive=True)
    assert children, "the engine runs in child processes"
    actor.kill()
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive
