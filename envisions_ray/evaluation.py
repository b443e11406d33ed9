"""A policy's eval: greedy accuracy on every eval set, and Δlog p over the pairs of the pool."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from envisions_ray.best import answers_path
from envisions_ray.data import write_jsonl
from envisions_ray.metrics import (
    accuracy,
    accuracy_interval,
    executable_rate,
    mean_margin,
    parse_rate,
    per_task_accuracy,
)
from envisions_ray.metrics_line import Scores
from envisions_ray.run_state import Generated, Request, Run, Sink
from envisions_ray.streaming import describe, stream
from envisions_ray.types import Sampling


def evaluate(run: Run, shots: int, answers: Path | None = None) -> tuple[Scores, Generated]:
    """The current policy's greedy `Scores` on every eval set, and what it generated. Each answer,
    with the expected one, goes to the JSONL file `answers` if given."""
    scores, generated, rows = Scores(), Generated(), []
    greedy = Sampling(1, run.cfg.eval.temperature, run.cfg.eval.max_new_tokens)
    for name, examples in run.eval_sets.items():
        problems = describe(run, examples)
        requests = [Request(x, run.prompts.explore(p, shots, x.task)) for x, p in zip(examples, problems)]
        answered = stream(run, requests, greedy, Sink("eval"))
        generated += answered.generated
        rows += [
            {"eval_set": name, "id": x.id, "expected": x.answer, "solution": solution, **asdict(outcome)}
            for x, solution, outcome in zip(examples, answered.solutions, answered.outcomes)
        ]
        rewards, errors = [o.reward for o in answered.outcomes], [o.error for o in answered.outcomes]
        scores.eval[name] = accuracy(rewards)
        scores.ci95[name] = accuracy_interval(rewards)
        if any(x.task for x in examples):  # web: success per task, as paper table 11
            scores.per_task[name] = per_task_accuracy(examples, answered.outcomes)
        scores.parsed[name] = parse_rate(errors)
        scores.executable[name] = executable_rate(errors)
        if run.cfg.eval.refine:  # paper table 8: one refine pass at inference
            again = [Request(x, run.prompts.refine(p, a)) for x, p, a in zip(examples, problems, answered.solutions)]
            refined = stream(run, again, greedy, Sink("eval"))
            generated += refined.generated
            scores.eval_refine[name] = accuracy([o.reward for o in refined.outcomes])
    if answers is not None:
        write_jsonl(answers, rows)
    return scores, generated


def logprob_margin(run: Run, i: int) -> float | None:
    """Δlog p: mean log p(a+) - log p(a-) under the new policy, over the U2 pairs ENVISIONS would build
    from this pool (the same construction for every method, so runs compare); None without pairs."""
    algo = run.cfg.algorithm
    training = run.pool.training_set(
        n1=algo.n1,
        n2=algo.n2,
        leave_positive_for_pair=True,
        rank_by=algo.rank,
        seed=run.cfg.seed + i,
        iteration=run.pool_scope(i),
    )
    pairs = training.u2
    if not pairs:
        return None
    prompts = [run.training_prompt(p.example_id) for p, _ in pairs]
    chosen = run.generators.logprobs(prompts, [p.solution for p, _ in pairs])
    return mean_margin(chosen, run.generators.logprobs(prompts, [n.solution for _, n in pairs]))


def answers_file(run: Run, policy: int) -> Path:
    return answers_path(run.run_dir, policy)
