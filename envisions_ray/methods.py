"""ENVISIONS and the paper's baselines (ALGORITHM.md "Baselines"), each as what it decides; the
generators, executors, pool, trainer and eval are the same for all of them.

- `explorer`: who answers the training inputs, the policy or the distill teacher;
- `examples`: how the pool becomes training data: SFT (prompt, target) examples and DPO
  (prompt, chosen, rejected) pairs;
- what it fixes, whatever the YAML says, is config.METHOD_SETTINGS (load_config applies them).

This module imports no Ray and sees no run: an `examples` function reads the pool and asks the
policy through the narrow `MethodContext` it is given (built by envisions_ray/run_state.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Protocol, Sequence

from envisions_ray.judge import best_against_worst, parse_score
from envisions_ray.types import PreferenceExample, Sampling, TrainExample, Trajectory

if TYPE_CHECKING:
    from envisions_ray.config import RunConfig
    from envisions_ray.prompts import PromptBook
    from envisions_ray.selection import TrainingSet


@dataclass
class Examples:
    """One iteration's training data, and the tokens the policy generated to build it (the judge's)."""

    sft: list[TrainExample]
    pairs: list[PreferenceExample]
    tokens: dict[str, int] = field(default_factory=dict)


class PoolQueries(Protocol):
    """The candidate pool's reads a method makes (run_state.PoolClient answers them)."""

    def training_set(
        self, *, n1: int, n2: int, leave_positive_for_pair: bool, rank_by: str, seed: int, iteration: int | None
    ) -> TrainingSet: ...

    def preference_pairs(
        self, *, n2: int, rank_by: str, seed: int, iteration: int | None
    ) -> list[tuple[Trajectory, Trajectory]]: ...

    def trajectories(self, iteration: int | None = None, source: str | None = None) -> list[Trajectory]: ...


class Reply(Protocol):
    """A greedy reply of the policy (actors/backend.py `Sample` is one)."""

    text: str
    num_tokens: int


class Judge(Protocol):
    def __call__(self, prompts: list[str], max_new_tokens: int) -> Sequence[Reply]:
        """The policy's greedy reply to each prompt (generators.GeneratorGroup.greedy_replies)."""


@dataclass(frozen=True)
class MethodContext:
    """All a method reads to build an iteration's training data: the config, the pool's queries,
    the prompts and problems it trains under, and the policy as its judge; no actor, no Ray."""

    cfg: RunConfig
    pool: PoolQueries
    judge: Judge
    prompts: PromptBook
    problems: Mapping[str, str]  # example id -> the text the model reads
    training_prompt: Callable[[str], str]  # example id -> the prompt a trained policy answers under
    pool_scope: Callable[[int], int | None]  # iteration -> the iteration whose pool it trains on (None: all)


@dataclass(frozen=True)
class Method:
    examples: Callable[[MethodContext, int], Examples]
    explorer: str = "policy"  # or "teacher": the distill teacher answers each input once
    stage: str = "select"  # the stage its examples are timed under in metrics.jsonl
    # Trains DPO on preference pairs: the job holds a frozen reference model (envisions_ray/memory.py).
    dpo: bool = False

    def explore_sampling(self, cfg: RunConfig) -> Sampling:
        """K samples per input from the policy; the teacher's one answer, greedily."""
        if self.explorer == "teacher":
            return Sampling(1, 0.0, cfg.generator.max_new_tokens)
        return Sampling(cfg.algorithm.k, cfg.generator.temperature, cfg.generator.max_new_tokens)


def l1_examples(ctx: MethodContext, positives: list[Trajectory]) -> list[TrainExample]:
    """L1: the training prompt (zero-shot, or algorithm.trained_shots), then a positive."""
    return [TrainExample(ctx.training_prompt(t.example_id), t.solution, "l1", t.example_id) for t in positives]


def l2_examples(ctx: MethodContext, pairs: list[tuple[Trajectory, Trajectory]]) -> list[TrainExample]:
    """L2: the refine prompt filled with the negative, then the positive."""
    return [
        TrainExample(ctx.prompts.refine(ctx.problems[p.example_id], n.solution), p.solution, "l2", p.example_id)
        for p, n in pairs
    ]


def preference_examples(ctx: MethodContext, pairs: list[tuple[Trajectory, Trajectory]]) -> list[PreferenceExample]:
    return [
        PreferenceExample(ctx.training_prompt(p.example_id), p.solution, n.solution, p.example_id) for p, n in pairs
    ]


def envisions_examples(ctx: MethodContext, i: int) -> Examples:
    """U1 for L1 and U2 for L2 (ALGORITHM.md steps 5-6); without refinement or with l2 off, L1 only."""
    algo = ctx.cfg.algorithm
    n2 = algo.n2 if algo.l2 and algo.refine else 0  # no refine step: no refined pairs to learn from
    training = ctx.pool.training_set(
        n1=algo.n1,
        n2=n2,
        leave_positive_for_pair=algo.leave_positive_for_pair and n2 > 0,
        rank_by=algo.rank,
        seed=ctx.cfg.seed + i,
        iteration=ctx.pool_scope(i),
    )
    return Examples(l1_examples(ctx, training.u1) + l2_examples(ctx, training.u2), [])


def positives_examples(ctx: MethodContext, i: int) -> Examples:
    """STaR and distillation: SFT on U1, the pool's positives, and nothing else."""
    algo = ctx.cfg.algorithm
    training = ctx.pool.training_set(
        n1=algo.n1,
        n2=0,
        leave_positive_for_pair=False,
        rank_by=algo.rank,
        seed=ctx.cfg.seed + i,
        iteration=ctx.pool_scope(i),
    )
    return Examples(l1_examples(ctx, training.u1), [])


def sft_dpo_examples(ctx: MethodContext, i: int) -> Examples:
    """SFT on U1, then DPO on (positive, negative) pairs of the same inputs."""
    algo = ctx.cfg.algorithm
    pairs = ctx.pool.preference_pairs(n2=algo.n2, rank_by=algo.rank, seed=ctx.cfg.seed + i, iteration=ctx.pool_scope(i))
    return Examples(positives_examples(ctx, i).sft, preference_examples(ctx, pairs))


def self_rewarding_examples(ctx: MethodContext, i: int) -> Examples:
    """DPO on the policy's own judgement: per input, its best-scored candidate against its worst."""
    candidates = ctx.pool.trajectories(i, "explore")
    settings = ctx.cfg.self_rewarding
    prompts = [ctx.prompts.judge(ctx.problems[t.example_id], t.solution, settings.max_score) for t in candidates]
    replies = ctx.judge(prompts, settings.judge_max_new_tokens)
    scores = [parse_score(reply.text, settings.max_score) for reply in replies]
    pairs = preference_examples(ctx, best_against_worst(candidates, scores))
    return Examples([], pairs, {"judge": sum(reply.num_tokens for reply in replies)})


def no_examples(ctx: MethodContext, i: int) -> Examples:
    return Examples([], [])


METHODS: dict[str, Method] = {
    "envisions": Method(envisions_examples),
    "star_env": Method(positives_examples),
    "sft_dpo": Method(sft_dpo_examples, dpo=True),
    "self_rewarding": Method(self_rewarding_examples, stage="judge", dpo=True),
    "distill": Method(positives_examples, explorer="teacher"),
    "few_shot": Method(no_examples),
}
