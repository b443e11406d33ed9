"""Analysis metrics (ALGORITHM.md, paper appendix B): accuracy, exploratory ability, stability, the
log-prob margin between positives and negatives, and the share of solutions the environment could
run at all (the paper's "limited proficiency in
symbolic language", made visible)."""

from __future__ import annotations

from envisions_ray.types import PARSE_ERROR

CONFIDENCE = 0.95


def accuracy(rewards: list[int]) -> float:
    return sum(rewards) / len(rewards) if rewards else 0.0


def accuracy_interval(rewards: list[int]) -> tuple[float, float]:
    """The accuracy's 95 % Wilson score interval: sound near 0 and 1, where a weak model's scores lie."""
    if not rewards:
        return 0.0, 1.0
    from scipy.stats import binomtest  # about 1 s to import: here, only evals pay it

    interval = binomtest(sum(rewards), len(rewards)).proportion_ci(CONFIDENCE, method="wilson")
    return interval.low, interval.high


def per_task_accuracy(examples, outcomes) -> dict[str, float]:
    """Success rate per task (web: paper table 11), tasks in first-seen order."""
    rewards: dict[str, list[int]] = {}
    for example, outcome in zip(examples, outcomes, strict=True):
        rewards.setdefault(example.task, []).append(outcome.reward)
    return {task: accuracy(values) for task, values in rewards.items()}


def executable_rate(errors: list[str]) -> float:
    """Share of solutions that ran to an answer, right or wrong: an environment's error is empty then
    (a logic answer that `grounded_positives` refuses carries one, so it counts as not run)."""
    return sum(not error for error in errors) / len(errors) if errors else 0.0


def parse_rate(errors: list[str]) -> float:
    """Share of solutions that are programs of the domain's language, whether or not they ran."""
    return sum(not error.startswith(PARSE_ERROR) for error in errors) / len(errors) if errors else 0.0


def mean_margin(chosen: list[float], rejected: list[float]) -> float:
    """Δlog p (ALGORITHM.md "Analysis"): mean over pairs of log p(a+) - log p(a-)."""
    return sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(chosen)


def exploratory_ability(solved_per_iteration: list[set[str]]) -> float:
    """EA = sum over i >= 2 of |M_i minus everything solved before| / |everything solved before|."""
    return _sum_over_iterations(solved_per_iteration, lambda now, before: len(now - before))


def stability(solved_per_iteration: list[set[str]]) -> float:
    """STB = sum over i >= 2 of |M_i intersect everything solved before| / |everything solved before|."""
    return _sum_over_iterations(solved_per_iteration, lambda now, before: len(now & before))


def _sum_over_iterations(solved_per_iteration, count) -> float:
    total, solved_before = 0.0, set(solved_per_iteration[0]) if solved_per_iteration else set()
    for solved_now in solved_per_iteration[1:]:
        if solved_before:  # nothing solved yet: the ratio is undefined and contributes nothing
            total += count(solved_now, solved_before) / len(solved_before)
        solved_before |= solved_now
    return total
