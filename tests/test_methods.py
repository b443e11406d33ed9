"""Each method's training data, built from a pool by hand (no Ray): what ENVISIONS and each
baseline train on, and what each of them fixes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from envisions_ray.actors.backend import Sample
from envisions_ray.config import METHOD_SETTINGS, load_config
from envisions_ray.methods import METHODS, MethodContext
from envisions_ray.prompts import PromptBook
from envisions_ray.run_state import Run
from envisions_ray.selection import build_training_set, preference_pairs
from envisions_ray.types import Trajectory

RIGHT, WRONG, BETTER = "return 12", "return 13", "x = 12\nreturn x"
POOL = [
    Trajectory("a", RIGHT, 1, -0.1, 0, "explore", id=1),
    Trajectory("a", BETTER, 1, -0.3, 0, "explore", id=2),
    Trajectory("a", WRONG, 0, -0.2, 0, "explore", id=3),
]


class HandPool:
    """The candidate pool's calls, answered from POOL with the real selection functions."""

    def training_set(self, *, n1, n2, leave_positive_for_pair, rank_by, seed, iteration):
        return build_training_set(POOL, n1, n2, leave_positive_for_pair, rank_by, seed)

    def preference_pairs(self, *, n2, rank_by, seed, iteration):
        return preference_pairs(POOL, n2, rank_by, seed)

    def trajectories(self, iteration=None, source=None):
        return POOL


@dataclass
class HandJudge:
    """The policy's greedy replies as a judge, fixed: RIGHT 2, BETTER 5, WRONG 0."""

    judged: list = field(default_factory=list)

    def __call__(self, prompts, max_new_tokens):
        self.judged += prompts
        return [Sample(score, 0.0, 1) for score in ["2", "5", "0"]]


def context_of(method: str, *overrides: str) -> MethodContext:
    """A method's context on POOL and one problem, with the run's real training prompt."""
    cfg = load_config("conf/math_quickstart.yaml", [f"method={method}", *overrides])
    run = Run(cfg, Path("unused"), "model", PromptBook.load("conf/prompts/math.yaml"), [], {})
    run.problems["a"] = "Tom has 12 apples."
    return MethodContext(
        cfg, HandPool(), HandJudge(), run.prompts, run.problems, run.training_prompt, lambda iteration: None
    )


def test_envisions_trains_l1_on_u1_and_l2_on_u2():
    ctx = context_of("envisions")
    examples = METHODS["envisions"].examples(ctx, 0)
    # One positive is kept back for the one pair (the authors' cap): U1 = [RIGHT], U2 = [(BETTER, WRONG)].
    assert [(e.kind, e.target) for e in examples.sft] == [("l1", RIGHT), ("l2", BETTER)]
    assert examples.sft[0].prompt == ctx.prompts.explore("Tom has 12 apples.")
    assert examples.sft[1].prompt == ctx.prompts.refine("Tom has 12 apples.", WRONG) and examples.pairs == []
    assert [e.example_id for e in examples.sft] == ["a", "a"]  # each names its input (train.jsonl's example_id)


def test_without_refinement_envisions_has_no_pairs_and_keeps_no_positive_back():
    examples = METHODS["envisions"].examples(context_of("envisions", "algorithm.refine=false"), 0)
    assert [(e.kind, e.target) for e in examples.sft] == [("l1", RIGHT), ("l1", BETTER)]


@pytest.mark.parametrize("method", ["star_env", "distill"])
def test_star_and_distill_train_on_every_positive_only(method):
    examples = METHODS[method].examples(context_of(method, "distill.teacher_file=t.jsonl"), 0)
    assert [(e.kind, e.target) for e in examples.sft] == [("l1", RIGHT), ("l1", BETTER)] and examples.pairs == []


def test_sft_dpo_adds_preference_pairs_to_the_positives():
    examples = METHODS["sft_dpo"].examples(context_of("sft_dpo"), 0)
    assert [e.target for e in examples.sft] == [RIGHT, BETTER]
    assert [(p.chosen, p.rejected, p.example_id) for p in examples.pairs] == [(RIGHT, WRONG, "a")]


def test_self_rewarding_trains_only_on_its_own_judgement():
    ctx = context_of("self_rewarding")
    examples = METHODS["self_rewarding"].examples(ctx, 0)
    assert examples.sft == []  # no SFT set is built to be thrown away
    assert [(p.chosen, p.rejected) for p in examples.pairs] == [(BETTER, WRONG)]  # judged 5 against 0
    assert len(ctx.judge.judged) == 3 and examples.tokens == {"judge": 3}


def test_few_shot_trains_on_nothing_and_runs_no_iteration():
    ctx = context_of("few_shot")
    assert METHODS["few_shot"].examples(ctx, 0).sft == [] and ctx.cfg.algorithm.iterations == 0


def test_the_teacher_answers_once_per_input_greedily_and_the_policy_k_times():
    cfg = load_config("conf/math_quickstart.yaml", ["method=distill", "distill.teacher_file=t.jsonl"])
    assert (METHODS["distill"].explore_sampling(cfg).n, METHODS["distill"].explore_sampling(cfg).temperature) == (
        1,
        0.0,
    )
    assert METHODS["envisions"].explore_sampling(cfg).n == cfg.algorithm.k


def test_a_trained_policy_is_trained_on_the_prompt_it_is_asked_under():
    zero_shot = METHODS["envisions"].examples(context_of("envisions"), 0).sft[0].prompt
    assert zero_shot == PromptBook.load("conf/prompts/math.yaml").explore("Tom has 12 apples.")
    two_shots = METHODS["envisions"].examples(context_of("envisions", "algorithm.trained_shots=2"), 0).sft[0].prompt
    demonstrations = PromptBook.load("conf/prompts/math.yaml").shots
    assert two_shots.count("Question:") == 3 and demonstrations[1].problem in two_shots
    assert demonstrations[2].problem not in two_shots and two_shots.endswith("Question: Tom has 12 apples.\n")


def test_every_method_has_its_settings_in_the_config():
    assert list(METHODS) == list(METHOD_SETTINGS)
