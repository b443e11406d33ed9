"""ENVISIONS and the paper's baselines (ALGORITHM.md "Baselines"), each as the three things it
decides; the generators, executors, pool, trainer and eval are the same for all of them.

- `settings`: what the method fixes, whatever the YAML says (load_config applies them);
- `explorer`: who answers the training inputs, the policy or the distill teacher;
- `examples`: how the pool becomes training data: SFT (prompt, target) examples and DPO
  (prompt, chosen, rejected) pairs.

This module imports no Ray: an `examples` function reads the pool and asks the policy through the
`Run` it is given (envisions_ray/run_state.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from envisions_ray.judge import best_against_worst, parse_score
from envisions_ray.types import PreferenceExample, Sampling, TrainExample, Trajectory

if TYPE_CHECKING:
    from envisions_ray.config import RunConfig
    from envisions_ray.run_state import Run


@dataclass
class Examples:
    """One iteration's training data, and the tokens the policy generated to build it (the judge's)."""

    sft: list[TrainExample]
    pairs: list[PreferenceExample]
    tokens: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    settings: dict[str, Any]
    examples: Callable[[Run, int], Examples]
    explorer: str = "policy"  # or "teacher": the distill teacher answers each input once
    stage: str = "select"  # the stage its examples are timed under in metrics.jsonl
    # Trains DPO on preference pairs: the job holds a frozen reference model (envisions_ray/memory.py).
    dpo: bool = False

    def explore_sampling(self, cfg: RunConfig) -> Sampling:
        """K samples per input from the policy; the teacher's one answer, greedily."""
        if self.explorer == "teacher":
            return Sampling(1, 0.0, cfg.generator.max_new_tokens)
        return Sampling(cfg.algorithm.k, cfg.generator.temperature, cfg.generator.max_new_tokens)


def l1_examples(run: Run, positives: list[Trajectory]) -> list[TrainExample]:
    """L1: the training prompt (zero-shot, or algorithm.trained_shots), then a positive."""
    return [TrainExample(run.training_prompt(t.example_id), t.solution, "l1") for t in positives]


def l2_examples(run: Run, pairs: list[tuple[Trajectory, Trajectory]]) -> list[TrainExample]:
    """L2: the refine prompt filled with the negative, then the positive."""
    return [
        TrainExample(run.prompts.refine(run.problems[p.example_id], n.solution), p.solution, "l2") for p, n in pairs
    ]


def preference_examples(run: Run, pairs: list[tuple[Trajectory, Trajectory]]) -> list[PreferenceExample]:
    return [PreferenceExample(run.training_prompt(p.example_id), p.solution, n.solution) for p, n in pairs]


def envisions_examples(run: Run, i: int) -> Examples:
    """U1 for L1 and U2 for L2 (ALGORITHM.md steps 5-6); without refinement or with l2 off, L1 only."""
    algo = run.cfg.algorithm
    n2 = algo.n2 if algo.l2 and algo.refine else 0  # no refine step: no refined pairs to learn from
    training = run.pool.training_set(
        n1=algo.n1,
        n2=n2,
        leave_positive_for_pair=algo.leave_positive_for_pair and n2 > 0,
        rank_by=algo.rank,
        seed=run.cfg.seed + i,
        iteration=run.pool_scope(i),
    )
    return Examples(l1_examples(run, training.u1) + l2_examples(run, training.u2), [])


def positives_examples(run: Run, i: int) -> Examples:
    """STaR and distillation: SFT on U1, the pool's positives, and nothing else."""
    algo = run.cfg.algorithm
    training = run.pool.training_set(
        n1=algo.n1,
        n2=0,
        leave_positive_for_pair=False,
        rank_by=algo.rank,
        seed=run.cfg.seed + i,
        iteration=run.pool_scope(i),
    )
    return Examples(l1_examples(run, training.u1), [])


def sft_dpo_examples(run: Run, i: int) -> Examples:
    """SFT on U1, then DPO on (positive, negative) pairs of the same inputs."""
    algo = run.cfg.algorithm
    pairs = run.pool.preference_pairs(n2=algo.n2, rank_by=algo.rank, seed=run.cfg.seed + i, iteration=run.pool_scope(i))
    return Examples(positives_examples(run, i).sft, preference_examples(run, pairs))


def self_rewarding_examples(run: Run, i: int) -> Examples:
    """DPO on the policy's own judgement: per input, its best-scored candidate against its worst."""
    candidates = run.pool.trajectories(i, "explore")
    settings = run.cfg.self_rewarding
    prompts = [run.prompts.judge(run.problems[t.example_id], t.solution, settings.max_score) for t in candidates]
    replies = run.greedy_replies(prompts, settings.judge_max_new_tokens)
    scores = [parse_score(reply.text, settings.max_score) for reply in replies]
    pairs = preference_examples(run, best_against_worst(candidates, scores))
    return Examples([], pairs, {"judge": sum(reply.num_tokens for reply in replies)})


def no_examples(run: Run, i: int) -> Examples:
    return Examples([], [])


# None of the baselines refines; STaR and distillation retrain from the base model, the DPO
# methods continue from the last policy.
METHODS: dict[str, Method] = {
    "envisions": Method({}, envisions_examples),
    "star_env": Method({"algorithm.refine": False, "algorithm.train_from": "base"}, positives_examples),
    "sft_dpo": Method({"algorithm.refine": False, "algorithm.train_from": "last"}, sft_dpo_examples, dpo=True),
    "self_rewarding": Method(
        {"algorithm.refine": False, "algorithm.train_from": "last"}, self_rewarding_examples, stage="judge", dpo=True
    ),
    # The teacher answers each input once, so a second iteration would train on the same data.
    "distill": Method(
        {"algorithm.refine": False, "algorithm.train_from": "base", "algorithm.iterations": 1},
        positives_examples,
        explorer="teacher",
    ),
    "few_shot": Method({"algorithm.iterations": 0}, no_examples),
}
