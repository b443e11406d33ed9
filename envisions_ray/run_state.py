"""What one run holds while it runs: its config, data, prompts and actors (`Run`), what it asks the
explorer for (`Request`), where executed answers go (`Sink`) and what comes back (`Streamed`), the
candidate pool as typed calls, the two explorers (the policy's generators or the distill teacher),
and the narrow view of it all that a method is given (`Run.method_context`)."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import ray

from envisions_ray.actors.backend import Sample
from envisions_ray.actors.executor import ExecutorGroup
from envisions_ray.config import RunConfig
from envisions_ray.data import for_iteration
from envisions_ray.generators import GeneratorGroup
from envisions_ray.methods import MethodContext
from envisions_ray.prompts import PromptBook
from envisions_ray.seeds import request_seed
from envisions_ray.selection import TrainingSet
from envisions_ray.teacher import Teacher
from envisions_ray.types import Example, Outcome, Sampling, Trajectory


@dataclass(frozen=True)
class Request:
    """One prompt to sample from, and what its solutions are about."""

    example: Example
    prompt: str
    parent: Trajectory | None = None  # set when the request refines this trajectory

    def seed(self, run_seed: int, iteration: int, stage: str) -> int:
        """Its sampling seed (envisions_ray/seeds.py), from what it asks, never how it is sent. A
        refinement names its parent by the parent's stable key (iteration, source, sample index),
        so the refinements of two samples of one input draw differently."""
        parent = None if self.parent is None else [self.parent.iteration, self.parent.source, self.parent.sample]
        return request_seed(run_seed, iteration, stage, self.example.id, parent)


@dataclass
class Generated:
    """What the policy did in one stream: tokens generated; prompt tokens read (once per request)
    and how many of those came from the engine's prefix cache; solutions; and generation's wall
    time, from the start until the last chunk was answered (generation runs without a pause from
    the start, so the rest of a stage is executions that outlasted it)."""

    tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    seconds: float = 0.0
    answers: int = 0  # solutions, each one episode for the executors

    def __add__(self, other: Generated) -> Generated:
        return Generated(*(mine + theirs for mine, theirs in zip(astuple(self), astuple(other))))


@dataclass
class Streamed:
    """What `stream` gives back, in request order (n per request)."""

    solutions: list[str]
    outcomes: list[Outcome]
    generated: Generated = field(default_factory=Generated)


@dataclass(frozen=True)
class Sink:
    """Where `stream` sends executed answers: the progress bars' label, whether the explorer scores
    its samples (self-reward, which only a recorded trajectory keeps), what to keep of each
    executed batch of (request, sample, outcome), and the (iteration, stage) that seeds each
    request (`Request.seed`, with generator.seeded_requests); None: the generators' own randomness
    (greedy eval needs none)."""

    label: str
    with_self_reward: bool = False
    keep: Callable[[list[tuple[Request, Sample, Outcome]]], None] | None = None
    seeding: tuple[int, str] | None = None


class Explorer(Protocol):
    def __call__(
        self, part: list[Request], sampling: Sampling, with_self_reward: bool, chunk: int, seeds: list[int] | None
    ) -> ray.ObjectRef:
        """Starts answering one chunk of requests; the reference resolves to n Samples per request.
        `seeds`: one per request (`Request.seed`), or None."""


def policy_explorer(generators: GeneratorGroup, grammar: str) -> Explorer:
    """The policy: chunks go round-robin to the group's generators, whichever are up at the time,
    each sample held to `grammar` (none when empty)."""

    def explore(
        part: list[Request], sampling: Sampling, with_self_reward: bool, chunk: int, seeds: list[int] | None
    ) -> ray.ObjectRef:
        return generators.sample(chunk, [r.prompt for r in part], sampling, with_self_reward, grammar, seeds)

    return explore


@ray.remote(num_cpus=0)
def _teacher_answers(teacher: Teacher, keyed_prompts: list[tuple[str, str]]) -> list[list[Sample]]:
    return [[Sample(teacher.answer(example_id, prompt).strip(), 0.0, 0)] for example_id, prompt in keyed_prompts]


def teacher_explorer(teacher: Teacher) -> Explorer:
    """The distill teacher: one answer per request, a Ray task per chunk, none of its tokens ours
    (and none of our seeds: its randomness is the teacher's)."""

    def explore(
        part: list[Request], sampling: Sampling, with_self_reward: bool, chunk: int, seeds: list[int] | None
    ) -> ray.ObjectRef:
        return _teacher_answers.remote(teacher, [(r.example.id, r.prompt) for r in part])

    return explore


class PoolClient:
    """The candidate-pool actor (actors/pool.py) called as if it were local: one `ray.get` per call."""

    def __init__(self, actor):
        self.actor = actor

    def record(self, trajectories: list[Trajectory]) -> list[int]:
        return ray.get(self.actor.record.remote(trajectories))

    def trajectories(self, iteration: int | None = None, source: str | None = None) -> list[Trajectory]:
        return ray.get(self.actor.trajectories.remote(iteration=iteration, source=source))

    def select(self, iteration: int, long_term: bool) -> int:
        return ray.get(self.actor.select.remote(iteration=iteration, long_term=long_term))

    def training_set(
        self, *, n1: int, n2: int, leave_positive_for_pair: bool, rank_by: str, seed: int, iteration: int | None
    ) -> TrainingSet:
        return ray.get(
            self.actor.training_set.remote(
                n1=n1,
                n2=n2,
                leave_positive_for_pair=leave_positive_for_pair,
                rank_by=rank_by,
                seed=seed,
                iteration=iteration,
            )
        )

    def preference_pairs(
        self, *, n2: int, rank_by: str, seed: int, iteration: int | None
    ) -> list[tuple[Trajectory, Trajectory]]:
        return ray.get(self.actor.preference_pairs.remote(n2=n2, rank_by=rank_by, seed=seed, iteration=iteration))

    def solved_inputs(self, iteration: int) -> set[str]:
        return ray.get(self.actor.solved_inputs.remote(iteration))

    def pool_counts(self) -> dict[str, int]:
        return ray.get(self.actor.pool_counts.remote())

    def mark_done(self, iteration: int, stage: str, detail: str | None = None) -> None:
        ray.get(self.actor.mark_done.remote(iteration, stage, detail))

    def is_done(self, iteration: int, stage: str) -> bool:
        return ray.get(self.actor.is_done.remote(iteration, stage))

    def stage_detail(self, iteration: int, stage: str) -> str | None:
        return ray.get(self.actor.stage_detail.remote(iteration, stage))

    def newest_checkpoint(self) -> str | None:
        return ray.get(self.actor.newest_checkpoint.remote())

    def record_seconds(self, iteration: int, stage: str, session: str, seconds: float) -> None:
        ray.get(self.actor.record_seconds.remote(iteration, stage, session, seconds))

    def seconds(self, iteration: int) -> dict[str, float]:
        return ray.get(self.actor.seconds.remote(iteration))


@dataclass
class Run:
    """Everything one run holds: its config, data, prompts and actors."""

    cfg: RunConfig
    run_dir: Path
    base_model: str
    prompts: PromptBook
    train_set: list[Example]
    eval_sets: dict[str, list[Example]]
    problems: dict[str, str] = field(default_factory=dict)  # example id -> text the model reads
    tasks: dict[str, str] = field(default_factory=dict)  # example id -> its task (web), for its demonstrations
    generators: GeneratorGroup = field(init=False)  # none started until the first handoff
    executors: ExecutorGroup | None = None
    pool: PoolClient | None = None
    explorer: Explorer | None = None  # who answers the training inputs: the policy, or the distill teacher
    # This driver process, under which it records its stages' wall time; a resumed run is a new session.
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    restarts_seen: Counter = field(default_factory=Counter)  # actor restarts counted into metrics so far

    def __post_init__(self) -> None:
        self.generators = GeneratorGroup(self.cfg.generator, self.cfg.model.dtype)

    def inputs(self, i: int) -> list[Example]:
        """Iteration i's training inputs: web tasks move to new seeds every iteration."""
        return for_iteration(self.train_set, i, self.cfg.data.seed_stride)

    def shots(self) -> int:
        """Demonstrations in the current policy's prompt: the base model's few shots, a trained
        policy's algorithm.trained_shots."""
        algo = self.cfg.algorithm
        return algo.few_shot if self.generators.policy == self.base_model else algo.trained_shots

    def training_prompt(self, example_id: str) -> str:
        """The prompt a trained policy answers example_id under, and is trained on (L1, DPO)."""
        return self.prompts.explore(
            self.problems[example_id], self.cfg.algorithm.trained_shots, self.tasks.get(example_id, "")
        )

    @property
    def grammar(self) -> str:
        """What the policy's programs must follow (generator.grammar): the prompt file's grammar, or none."""
        return self.prompts.grammar if self.cfg.generator.grammar else ""

    @property
    def long_term(self) -> bool:
        """Long-term memory (algorithm.memory): the pool keeps every iteration's winners."""
        return self.cfg.algorithm.memory == "long_term"

    def pool_scope(self, i: int) -> int | None:
        """Which iteration's part of the pool iteration i trains on: all of it (None), with long-term memory."""
        return None if self.long_term else i

    def method_context(self) -> MethodContext:
        """What a method reads of this run (envisions_ray/methods.py): the pool, the policy as judge,
        the prompts; not the run itself."""
        return MethodContext(
            self.cfg,
            self.pool,
            self.generators.greedy_replies,
            self.prompts,
            self.problems,
            self.training_prompt,
            self.pool_scope,
        )
