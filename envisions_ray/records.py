"""What a run records after each eval: its metrics line, built here from what the stages gave and
the run holds (the schema: envisions_ray/metrics_line.py), appended to metrics.jsonl with the best
policy so far, and its scalars to RUN_DIR/tensorboard (envisions_ray/tensorboard_scalars.py); then
RUN_DIR/best points at that policy and the summary line is printed."""

from __future__ import annotations

import json
from dataclasses import asdict

from envisions_ray.actors.pool import BASE_MODEL
from envisions_ray.actors.restarts import actor_restarts
from envisions_ray.best import METRICS_FILE, best_policy, model_location, point_best, policy_model, read_lines
from envisions_ray.methods import Examples
from envisions_ray.metrics import executable_rate, exploratory_ability, parse_rate, stability
from envisions_ray.metrics_line import IterationFacts, MetricsLine, Scores
from envisions_ray.run_state import Generated, Run
from envisions_ray.summary import format_summary
from envisions_ray.tensorboard_scalars import write_scalars
from envisions_ray.trained import Trained

NOTHING_TRAINED = Trained(None)  # an iteration without training data: no loss, nothing cut, no restart


def base_line(run: Run, scores: Scores, generated: Generated) -> MetricsLine:
    """The base model's metrics line (policy 0)."""
    return MetricsLine(
        scores,
        grammar=bool(run.grammar),
        tokens={"eval": generated.tokens},
        generation={"eval": asdict(generated)},
        seconds=run.pool.seconds(BASE_MODEL),
        env_events=env_events(run),
        restarts=new_restarts(run),
    )


def iteration_line(
    run: Run,
    i: int,
    examples: Examples,
    trained: Trained | None,
    scores: Scores,
    margin: float | None,
    generation: dict[str, Generated],
) -> MetricsLine:
    """Iteration i's metrics line (policy i + 1): what its stages gave, and what the pool holds."""
    trained, executors = trained or NOTHING_TRAINED, run.executors.stats()
    generated = run.pool.trajectories(i)  # explored and refined
    solved = [run.pool.solved_inputs(j) for j in range(i + 1)]
    explored = len(solved[-1])
    if run.cfg.data.seed_stride:  # every iteration has new seeds: EA and STB count the tasks solved
        task_of = {x.id: x.task for j in range(i + 1) for x in run.inputs(j)}
        solved = [{task_of[example_id] for example_id in ids} for ids in solved]
    facts = IterationFacts(
        iteration=i + 1,
        method=run.cfg.method,
        inputs=len(run.inputs(i)),
        explored=explored,
        positives=sum(t.reward for t in generated),
        generated_parsed=parse_rate([t.error for t in generated]),
        generated_executable=executable_rate([t.error for t in generated]),
        **run.pool.pool_counts(),
        u1=sum(e.kind == "l1" for e in examples.sft),
        u2=sum(e.kind == "l2" for e in examples.sft),
        pairs=len(examples.pairs),
        train_loss=trained.loss,
        dpo_loss=trained.dpo_loss,
        train_prompt_cut=trained.prompt_cut,
        train_dropped_too_long=trained.dropped_too_long,
        delta_logp=margin,
        ea=exploratory_ability(solved),
        stb=stability(solved),
        executors={"now": executors.size, "peak": executors.peak},  # the pool's size, as it scaled
    )
    return MetricsLine(
        scores,
        facts,
        grammar=bool(run.grammar),
        seconds=run.pool.seconds(i),  # of every driver that worked on it: a resumed one adds its own
        tokens={**{stage: used.tokens for stage, used in generation.items()}, **examples.tokens},
        generation={stage: asdict(used) for stage, used in generation.items()},
        env_events=env_events(run),
        restarts={**new_restarts(run), "train_worker_group": trained.restarts},
    )


def record(run: Run, line: dict) -> None:
    """Append a metrics line with the best policy so far (envisions_ray/best.py), write its scalars
    for TensorBoard, then point RUN_DIR/best at it: a driver killed in between leaves the line, and a
    resumed one writes the scalars it lacks and re-links."""
    line = {**line, "best": best_so_far(run, [*read_lines(run.run_dir), line])}
    with (run.run_dir / METRICS_FILE).open("a") as metrics:
        metrics.write(json.dumps(line) + "\n")
    write_scalars(run.run_dir, MetricsLine.from_json(line))
    if line["best"] is not None:
        point_best(run.run_dir, line["best"]["model"])
    print(format_summary(line), flush=True)


def best_so_far(run: Run, lines: list[dict]) -> dict | None:
    """The best of these metrics lines, with its model ("model"); None without an eval set."""
    best = best_policy(lines)
    if best is None:
        return None
    return {**best, "model": model_location(policy_model(run.pool.stage_detail, best["policy"], run.base_model))}


def new_restarts(run: Run) -> dict[str, int]:
    """Restarts of each kind since the last metrics line: Ray restarts dead actors unseen, and its
    actor table counts them."""
    now = actor_restarts()
    new = {kind: now[kind] - run.restarts_seen[kind] for kind in now}
    run.restarts_seen = now
    return new


def env_events(run: Run) -> dict[str, int]:
    """Since this driver started: the environments' own counts (web: browser starts, crashes,
    restarts), and the peak count of env.count_processes on this node (web: Chromium processes)."""
    return {**run.executors.events(), "peak_processes": run.executors.stats().peak_processes}
