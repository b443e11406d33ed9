"""Actors: executors survive a crash with no work lost; the hf backend's self-reward and reload."""

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import ray
import torch

from envisions_ray.actors.executor import ExecutorGroup
from envisions_ray.actors.hf_backend import HFBackend
from envisions_ray.config import EnvConfig, GeneratorConfig
from envisions_ray.losses import target_token_loss
from envisions_ray.prompts import PromptBook
from envisions_ray.tokens import collate, tokenize
from envisions_ray.types import Example, TrainExample
from tests.actor_process import actor_pid

SLOW_PROGRAM = "def solution():\n    import time\n    time.sleep(0.05)\n    return {n}"


def test_a_killed_executor_is_restarted_and_its_work_retried(ray_session):
    executors = ExecutorGroup(EnvConfig(num_executors=2, settings={"timeout_s": 2.0})).actors
    batches = [
        [(SLOW_PROGRAM.format(n=n), Example(str(n), "", str(n))) for n in range(b * 10, b * 10 + 10)] for b in range(8)
    ]
    refs = [executors[b % 2].execute.remote(batch) for b, batch in enumerate(batches)]
    victim = ray.get(actor_pid(executors[0]))
    os.kill(victim, signal.SIGKILL)  # mid-run: executor 0 still has batches queued
    results = ray.get(refs, timeout=120)
    assert [o.reward for batch in results for o in batch] == [1] * 80
    assert ray.get(actor_pid(executors[0])) != victim  # a new process took over
    for executor in executors:
        ray.kill(executor)


def test_self_reward_is_the_teacher_forced_mean_logprob(tiny_solver):
    backend = HFBackend(GeneratorConfig(stop=[], num_cpus=1), tiny_solver, "float32")
    prompt = PromptBook.load("conf/prompts/math.yaml").explore(
        "Ava has 3 apples. Then Ava gets 9 more apples. How many apples does Ava have now?"
    )
    [[sample]] = backend.sample([prompt], 1, 0.0, 32, True)
    assert sample.text.startswith("def solution")
    # The same number from an independent teacher-forced pass over prompt + text (EOS excluded).
    row = tokenize(backend.tokenizer, TrainExample(prompt, sample.text, "check"), 1024)
    without_eos = replace(row, input_ids=row.input_ids[:-1], labels=row.labels[:-1])
    batch = collate([without_eos], backend.tokenizer.pad_token_id)
    with torch.inference_mode():
        logits = backend.model(input_ids=batch["input_ids"]).logits
    mean_logprob = -target_token_loss(logits, batch["labels"]).item()
    assert abs(sample.self_reward - mean_logprob) < 1e-4


def test_self_reward_ignores_the_sampling_temperature(tiny_solver):
    # Greedy picks the same tokens at any temperature setting; their temperature-1 score must not move.
    backend = HFBackend(GeneratorConfig(stop=[], num_cpus=1, top_p=1.0), tiny_solver, "float32")
    prompt = PromptBook.load("conf/prompts/math.yaml").explore(
        "Ben has 4 cards. Then Ben gets 8 more cards. How many cards does Ben have now?"
    )
    greedy = backend.sample([prompt], 1, 0.0, 32, True)[0][0]
    torch.manual_seed(0)
    cold = backend.sample([prompt], 1, 1e-3, 32, True)[0][0]  # sampling this cold is greedy
    assert cold.text == greedy.text and abs(cold.self_reward - greedy.self_reward) < 1e-5


def test_load_swaps_weights_in_place(tiny_model, tiny_solver):
    backend = HFBackend(GeneratorConfig(stop=[], num_cpus=1), tiny_solver, "float32")
    prompt = "Question: Ava has 3 apples.\n"
    before = backend.sample([prompt], 1, 0.0, 16, False)[0][0].text
    backend.load(tiny_model)
    after = backend.sample([prompt], 1, 0.0, 16, False)[0][0].text
    backend.load(tiny_solver)
    assert before != after and backend.sample([prompt], 1, 0.0, 16, False)[0][0].text == before


def test_ddp_fallback_trains_and_lowers_the_loss(tiny_model, ray_session, tmp_path):
    from envisions_ray.actors.train_job import train
    from envisions_ray.config import TrainConfig
    from envisions_ray.model import load_model_and_tokenizer

    examples = [TrainExample("Question: Ava has 3 apples.\n", "def solution():\n    return 3", "l1")] * 16

    def loss_of(path):
        model, tokenizer = load_model_and_tokenizer(path)
        batch = collate([tokenize(tokenizer, examples[0], 256)], tokenizer.pad_token_id)
        with torch.inference_mode():
            logits = model(input_ids=batch["input_ids"]).logits
        return target_token_loss(logits, batch["labels"]).item()

    # 2 workers x micro-batch 2 = global batch 4: 4 optimizer steps a pass over the 16 examples;
    # train.steps = 32 cycles the data 8 times.
    config = TrainConfig(num_workers=2, deepspeed=False, steps=32, lr=3e-3, global_batch_size=4, micro_batch_size=2)
    trained = train(config, tiny_model, examples, str(tmp_path), "ddp")
    assert trained.loss > 0 and trained.restarts == 0 and trained.dropped_too_long == 0
    # untrained stays near 6.0; 32 steps reach about 3.6
    assert loss_of(trained.checkpoint) < 0.75 * loss_of(tiny_model)


def test_logprob_scores_whole_targets_and_prefers_what_the_model_learned(tiny_solver):
    from tests.conftest import SOLVER_PROGRAM

    backend = HFBackend(GeneratorConfig(stop=[], num_cpus=1, chunk_size=2), tiny_solver, "float32")
    prompt = PromptBook.load("conf/prompts/math.yaml").explore(
        "Ben has 4 cards. Then Ben gets 8 more cards. How many cards does Ben have now?"
    )
    [[sample]] = backend.sample([prompt], 1, 0.0, 32, True)
    # The greedy text re-tokenises into the tokens that were counted.
    assert sample.num_tokens == len(backend.tokenizer(sample.text, add_special_tokens=False)["input_ids"])
    wrong = "def solution():\n    return 99"
    learned, other, again = backend.logprob(
        [prompt] * 3, [SOLVER_PROGRAM, wrong, SOLVER_PROGRAM]
    )  # 2 batches of chunk_size 2
    assert learned == again and other < learned < 0


def test_a_checkpoint_in_storage_is_copied_onto_the_node(tiny_model):
    from envisions_ray.model import local_copy

    assert local_copy(tiny_model) == tiny_model  # a directory is used where it is
    copied = local_copy(f"file://{tiny_model}")  # a URI, as s3:// would be, comes through Ray's Checkpoint
    assert copied != tiny_model and sorted(p.name for p in Path(copied).iterdir()) == sorted(
        p.name for p in Path(tiny_model).iterdir()
    )


def test_training_attention_is_sdpa_without_a_gpu():
    from envisions_ray.actors.train_job import attention_implementation

    assert attention_implementation(use_gpu=False) == "sdpa"


def test_stopping_generators_closes_their_backends_before_killing_them(ray_session, tmp_path):
    """Killed unclosed, a vLLM generator left its untied weights (625 MB) in /tmp."""
    from types import SimpleNamespace

    from envisions_ray.actors.generator import Generator, stop_generators

    @ray.remote
    class Closable:
        def close(self) -> None:
            (tmp_path / "closed").write_text("before the kill")

    actor = Closable.remote()
    stop_generators([actor])
    assert (tmp_path / "closed").read_text() == "before the kill"
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.close.remote())
    # The actor's close is its backend's, where it has one (vLLM's; hf holds nothing outside).
    generator, closed = Generator.__new__(Generator), []
    generator.backend = SimpleNamespace(close=lambda: closed.append(True))
    generator.close()
    generator.backend = SimpleNamespace()
    generator.close()
    assert closed == [True]
