"""Per-request sampling seeds (envisions_ray/seeds.py): the derivation on hand-computed cases; the hf
backend drawing a request's samples from its seed alone, whatever else is in the call; and `stream`
exploring the same programs whatever the chunking and the number of generators."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from envisions_ray.config import GeneratorConfig, RunConfig
from envisions_ray.prompts import PromptBook
from envisions_ray.run_state import Request, Run
from envisions_ray.seeds import SAMPLES_PER_SEED, request_seed
from envisions_ray.types import Example, Outcome, Sampling, Trajectory

MATH = PromptBook.load("conf/prompts/math.yaml")
QUESTIONS = [
    "Tom has 5 apples and buys 7 more. How many apples does he have?",
    "Ava has 3 cards. Then Ava gets 9 more cards. How many cards does Ava have now?",
    "Ben has 20 pens and gives away 8. How many pens does Ben have left?",
]
PROMPTS = [MATH.explore(q) for q in QUESTIONS]


def test_a_seed_is_the_requests_sha256_in_whole_slots_of_samples():
    # sha256(b'[0, 0, "explore", "t1", null]') starts ff2f53ba49d94c4a; its low 46 bits, 0x13ba49d94c4a,
    # shifted past the 16 bits left for the request's n samples.
    assert hashlib.sha256(b'[0, 0, "explore", "t1", null]').hexdigest().startswith("ff2f53ba49d94c4a")
    assert request_seed(0, 0, "explore", "t1") == 0x13BA49D94C4A0000
    # sha256(b'[0, 0, "refine", "t1", [0, "explore", 2]]') starts 2bb866b9e6f1a5d6: low 46 bits 0x26b9e6f1a5d6.
    assert request_seed(0, 0, "refine", "t1", [0, "explore", 2]) == 0x26B9E6F1A5D60000


def test_every_part_of_a_request_moves_its_seed_and_seeds_stay_int64():
    base = (0, 0, "explore", "t1", None)
    variants = [
        (1, 0, "explore", "t1", None),  # the run's seed
        (0, 1, "explore", "t1", None),  # the iteration
        (0, 0, "refine", "t1", None),  # the stage
        (0, 0, "explore", "t2", None),  # the input
        (0, 0, "explore", "t1", [0, "explore", 0]),  # the sample refined
        (0, 0, "explore", "t1", [0, "explore", 1]),
    ]
    seeds = [request_seed(*key) for key in [base, *variants]]
    assert len(set(seeds)) == len(seeds)
    # Whole slots: seed + k for the k-th of n samples never reaches another request's seed.
    assert all(seed % SAMPLES_PER_SEED == 0 and 0 <= seed < 2**62 for seed in seeds)


def test_a_requests_seed_names_its_parent_by_its_stable_key_not_its_row_id():
    example = Example("t1", "q", "12")
    parent = Trajectory("t1", "def solution():\n    return 3", 0, -1.0, 0, "explore", id=17, sample=2)
    refine = Request(example, "refine prompt", parent)
    # The pool numbers rows in the order executed batches arrive: another run may give it id 5.
    assert refine.seed(0, 0, "refine") == Request(example, "refine prompt", replace(parent, id=5)).seed(0, 0, "refine")
    assert refine.seed(0, 0, "refine") == request_seed(0, 0, "refine", "t1", [0, "explore", 2])
    assert refine.seed(0, 0, "refine") != Request(example, "refine prompt", replace(parent, sample=1)).seed(
        0, 0, "refine"
    )
    # What the request asks, not its prompt's text: the prompt (few-shot or not) is the config's.
    assert Request(example, "explore prompt").seed(3, 1, "explore") == request_seed(3, 1, "explore", "t1")


@pytest.fixture(scope="module")
def backend(tiny_model):
    from envisions_ray.actors.hf_backend import HFBackend

    return HFBackend(GeneratorConfig(backend="hf", stop=["\n\n"], num_cpus=1), tiny_model, "float32")


def texts(groups) -> list[list[str]]:
    return [[sample.text for sample in group] for group in groups]


def test_hf_draws_a_requests_samples_from_its_seed_whatever_else_is_in_the_call(backend):
    seeds = [request_seed(0, 0, "explore", f"x{i}") for i in range(len(PROMPTS))]
    together = backend.sample(PROMPTS, 3, 1.0, 12, True, seeds=seeds)
    alone = [backend.sample([prompt], 3, 1.0, 12, True, seeds=[seed])[0] for prompt, seed in zip(PROMPTS, seeds)]
    backwards = backend.sample(PROMPTS[::-1], 3, 1.0, 12, True, seeds=seeds[::-1])[::-1]
    again = backend.sample(PROMPTS, 3, 1.0, 12, True, seeds=seeds)
    assert texts(together) == texts(alone) == texts(backwards) == texts(again)
    assert len({text for group in texts(together) for text in group}) == 9  # a random model at 1.0: all differ
    for ours, theirs in zip(together, alone):  # the same tokens, scored the same up to float rounding
        assert [s.num_tokens for s in ours] == [s.num_tokens for s in theirs]
        assert [s.self_reward for s in ours] == pytest.approx([s.self_reward for s in theirs], abs=1e-4)
    # As vLLM seeds a request's n children: sample k is drawn from seed + k.
    [[third]] = backend.sample(PROMPTS[:1], 1, 1.0, 12, True, seeds=[seeds[0] + 2])
    assert third.text == together[0][2].text


def test_hf_two_inputs_with_one_prompt_get_different_samples(backend):
    seeds = [request_seed(0, 0, "explore", "a"), request_seed(0, 0, "explore", "b")]
    twins = backend.sample(PROMPTS[:1] * 2, 3, 1.0, 12, False, seeds=seeds)
    assert not set(texts(twins)[0]) & set(texts(twins)[1])


def test_hf_seeded_samples_keep_to_the_grammar(backend):
    seeds = [request_seed(0, 0, "explore", f"x{i}") for i in range(len(PROMPTS))]
    together = backend.sample(PROMPTS, 4, 1.0, 4, False, "root ::= [0-9]", seeds)
    assert all(len(text) == 1 and text.isdigit() for group in texts(together) for text in group)
    assert texts(together)[1:] == texts(backend.sample(PROMPTS[1:], 4, 1.0, 4, False, "root ::= [0-9]", seeds[1:]))


def test_hf_greedy_ignores_seeds_and_a_seeded_draw_this_cold_is_greedy(backend):
    greedy = texts(backend.sample(PROMPTS, 2, 0.0, 12, False))
    assert texts(backend.sample(PROMPTS, 2, 0.0, 12, False, seeds=[1, 2, 3])) == greedy
    # The draw sees the scores after temperature: at 1e-5 only the argmax is left to draw.
    assert texts(backend.sample(PROMPTS, 2, 1e-5, 12, False, seeds=[1, 2, 3])) == greedy


class LocalExecutors:
    """What `stream` asks of an ExecutorGroup, answered at once in this process: every solution fails."""

    def __init__(self, ray):
        self.ray, self.running = ray, {}

    @property
    def busy(self) -> bool:
        return bool(self.running)

    def in_flight(self) -> list:
        return list(self.running)

    def tick(self) -> None:
        pass

    def submit_execution(self, tag, jobs, affinity="") -> None:
        self.running[self.ray.put([Outcome(0)] * len(jobs))] = tag

    def collect(self, ref):
        return self.running.pop(ref), self.ray.get(ref)


def explored(ray, generator, tiny_model, tmp_path, generators: int, chunk_size: int, seeded: bool) -> list[str]:
    """One explore stream over four inputs, K = 3, through `generators` stand-ins for generator
    actors (each calls one local hf Generator, its stream of randomness reset as a new engine's)."""
    from envisions_ray.stages import recording
    from envisions_ray.streaming import stream

    cfg = RunConfig(run_dir=str(tmp_path))
    cfg.generator = replace(cfg.generator, backend="hf", chunk_size=chunk_size, seeded_requests=seeded)
    run = Run(cfg, tmp_path, tiny_model, MATH, [], {})
    actor = SimpleNamespace(sample=SimpleNamespace(remote=lambda *args: ray.put(generator.sample(*args))))
    run.generators.actors, run.executors = [actor] * generators, LocalExecutors(ray)
    run.pool = SimpleNamespace(record=lambda trajectories: None)
    examples = [Example(f"x{i}", q, "12") for i, q in enumerate([*QUESTIONS, QUESTIONS[0]])]
    torch.manual_seed(0)
    requests = [Request(x, MATH.explore(x.question)) for x in examples]
    return stream(run, requests, Sampling(3, 1.0, 12), recording(run, 0, "explore")).solutions


def test_exploration_is_the_same_whatever_the_chunking_and_the_generators(ray_session, tiny_model, tmp_path):
    from envisions_ray.actors.generator import Generator

    generator = Generator(GeneratorConfig(backend="hf", stop=["\n\n"], num_cpus=1), tiny_model, "float32")
    one_by_one = explored(ray_session, generator, tiny_model, tmp_path, generators=2, chunk_size=3, seeded=True)
    in_one_call = explored(ray_session, generator, tiny_model, tmp_path, generators=1, chunk_size=12, seeded=True)
    assert one_by_one == in_one_call
    assert one_by_one[:3] != one_by_one[9:]  # x0 and x3 ask one question, and get their own samples
    # generator.seeded_requests=false: each call draws from the generator's one stream, so the
    # chunking decides what a request gets.
    unseeded = explored(ray_session, generator, tiny_model, tmp_path, generators=1, chunk_size=3, seeded=False)
    assert unseeded != explored(ray_session, generator, tiny_model, tmp_path, generators=1, chunk_size=12, seeded=False)
