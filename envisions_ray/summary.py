"""The line a run prints for each metrics line it writes: the base model's eval, or what an
iteration explored, pooled, trained and scored, and where its time went."""

from __future__ import annotations

from envisions_ray.best import policy_name
from envisions_ray.metrics_line import MetricsLine, Scores


def format_summary(line: dict) -> str:
    """One metrics.jsonl line (envisions_ray/metrics_line.py), older ones included, as one line of text."""
    metrics = MetricsLine.from_json(line)
    scores = _scores(metrics.scores)
    restarted = " ".join(f"{kind}={n}" for kind, n in metrics.restarts.items() if n)
    faults = f" | restarted {restarted}" if restarted else ""
    facts = metrics.iteration
    if facts is None:
        return f"[base model] eval {scores}{faults}"
    if metrics.best is not None:
        best = metrics.best
        scores += f" | best {policy_name(best['policy'])} ({best['eval_set']}={best['accuracy']:.1%})"
    stages = " ".join(f"{stage}={s:.0f}s" for stage, s in metrics.seconds.items())
    loss = "n/a" if facts.train_loss is None else f"{facts.train_loss:.3f}"
    if facts.dpo_loss is not None:
        loss += f" dpo-loss {facts.dpo_loss:.3f}"
    cut, dropped = facts.train_prompt_cut, facts.train_dropped_too_long
    if cut or dropped:
        loss += f" (over train.max_length: {cut} prompts cut, {dropped} dropped)"
    margin = "" if facts.delta_logp is None else f" Δlogp {facts.delta_logp:+.2f}"
    return (
        f"[iter {facts.iteration}] explored {facts.explored}/{facts.inputs} positives {facts.positives} "
        f"unique-correct {facts.unique_correct} pool {facts.pool_size} |U1| {facts.u1} |U2| {facts.u2} "
        f"loss {loss}{margin} eval {scores} | {stages}{faults}"
    )


def _scores(scores: Scores) -> str:
    """Accuracy per eval set with its interval and the shares that parsed and ran (older runs lack
    them), then after a refine pass where the eval made one."""
    text = " ".join(
        f"{name}={value:.1%}{_interval(scores.ci95.get(name))} "
        f"(parsed {scores.parsed.get(name, float('nan')):.0%} ran {scores.executable.get(name, float('nan')):.0%})"
        for name, value in scores.eval.items()
    )
    if scores.eval_refine:
        text += " refined " + " ".join(f"{name}={value:.1%}" for name, value in scores.eval_refine.items())
    return text


def _interval(bounds: tuple[float, float] | None) -> str:
    return "" if bounds is None else f" [{bounds[0]:.1%}, {bounds[1]:.1%}]"
