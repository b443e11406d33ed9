"""What a resumed run finds: its run directory checked whole and its own, and what it has done, as
its pool and metrics.jsonl (envisions_ray/metrics_line.py) record it."""

from __future__ import annotations

from envisions_ray.actors.pool import BASE_MODEL, CandidatePool, check_pool
from envisions_ray.best import read_lines
from envisions_ray.errors import UserError
from envisions_ray.metrics_line import MetricsLine
from envisions_ray.paths import POOL_FILE
from envisions_ray.run_lock import nothing_to_resume
from envisions_ray.run_state import Run
from envisions_ray.stages import FINISHED


def check_resumable(run: Run) -> CandidatePool:
    """The run's pool, opened once its file and metrics.jsonl are found whole and every input it
    holds samples of is one of the run's: other data would mix two runs' memories."""
    path = run.run_dir / POOL_FILE
    if not path.is_file():
        raise nothing_to_resume(run.run_dir)
    check_pool(path)
    read_lines(run.run_dir)
    pool = CandidatePool(str(path))
    known = {x.id for i in range(run.cfg.algorithm.iterations) for x in run.inputs(i)}
    strangers = sorted(pool.inputs() - known)
    if strangers:
        pool.close()
        raise UserError(
            f"{path} holds samples of input '{strangers[0]}', which data.train no longer gives: the data or its "
            "ids changed since the run started; resume on the data it started with, or start the run again with "
            "another run_dir"
        )
    return pool


def resume_progress(run: Run) -> list[str]:
    """What a resumed run finds done, as its pool and metrics record it, and what it does next: the
    first stage that run_iteration would not skip."""
    pool = check_resumable(run)
    lines = [MetricsLine.from_json(line) for line in read_lines(run.run_dir)]
    scores = {
        line.policy: " ".join(f"{name}={value:.1%}" for name, value in line.scores.eval.items()) for line in lines
    }
    rows, upcoming = {}, None
    if pool.is_done(BASE_MODEL, FINISHED):
        rows["base model"] = f"evaluated: {scores.get(0, '')}"
    else:
        rows["base model"], upcoming = "not evaluated", "the base model's eval"
    for i in range(run.cfg.algorithm.iterations):
        if pool.is_done(i, FINISHED):
            rows[f"iter {i + 1}"] = f"done: {scores.get(i + 1, '')}"
            continue
        rows[f"iter {i + 1}"], stage = _iteration_progress(run, pool, i)
        upcoming = upcoming or f"iter {i + 1}, from its {stage} stage"
    pool.close()
    rows["next"] = upcoming or "nothing: every iteration is done"
    return [f"resume: {run.run_dir}", *(f"  {label:<11}{text}" for label, text in rows.items())]


def _iteration_progress(run: Run, pool: CandidatePool, i: int) -> tuple[str, str]:
    """What is done of iteration i, which is not evaluated yet, and the first stage left to do."""
    algo = run.cfg.algorithm
    inputs, explored = len(run.inputs(i)), len(pool.inputs(i, "explore"))
    samples, refined = pool.count(i, "explore"), pool.count(i, "refine")
    stages = {  # in run_iteration's order: what is done of each, and whether all of it is
        "explore": (f"explored {explored}/{inputs} inputs", explored == inputs),
        "refine": (f"refined {refined}/{samples} samples", refined == samples),
        "select": ("selected", pool.is_done(i, "select")),
        "train": ("trained", pool.is_done(i, "train")),
        "eval": ("", False),
    }
    if not algo.refine or i < algo.refine_from_iteration:
        del stages["refine"]
    done = ", ".join(text for name, (text, complete) in stages.items() if complete or name in ("explore", "refine"))
    return done, next(name for name, (_, complete) in stages.items() if not complete)
