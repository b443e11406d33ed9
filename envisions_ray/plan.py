"""`envisions run --dry-run`: every check a run makes before it starts, and the plan it would
follow; resuming, also what the run has done and what comes next. Nothing is written."""

from __future__ import annotations

from envisions_ray.config import RunConfig
from envisions_ray.driver import prepare
from envisions_ray.envs import make_env
from envisions_ray.memory import check_memory
from envisions_ray.paths import POOL_FILE
from envisions_ray.resume import resume_progress
from envisions_ray.run_lock import existing_run


def plan(cfg: RunConfig, resume: bool = False) -> str:
    """`run --dry-run`: check config, model, data, environment and run directory; write nothing.
    Resuming, also what the run has done, as its pool and metrics record it, and what comes next."""
    run = prepare(cfg, convert_model=False)
    make_env(cfg.env).close()
    progress = resume_progress(run) if resume else []
    if not resume and (run.run_dir / POOL_FILE).exists():
        raise existing_run(run.run_dir)
    algo, gen = cfg.algorithm, cfg.generator
    executors = (
        f"{cfg.env.num_executors}-{cfg.env.max_executors}" if cfg.env.max_executors else str(cfg.env.num_executors)
    )
    grammar = "on" if run.grammar else ("off" if run.prompts.grammar else "none in the prompt file")
    return "\n".join(
        [
            f"plan: {algo.iterations} iterations of explore -> refine -> filter -> train -> eval",
            f"  model      {run.base_model} "
            f"({len(run.prompts.shots)} shots in the prompt file, {algo.few_shot} used in iteration 0, "
            f"{algo.trained_shots} by trained policies)",
            f"  train      {len(run.train_set)} inputs from {cfg.data.train}, K={algo.k}, "
            f"refine={'on' if algo.refine else 'off'}, N1={algo.n1}, N2={algo.n2}",
            "  eval       " + ", ".join(f"{name} ({len(examples)} inputs)" for name, examples in run.eval_sets.items()),
            f"  actors     {gen.num_actors} x {gen.backend} generator (grammar {grammar}), "
            f"{executors} x {cfg.env.name} executor, "
            f"{cfg.train.num_workers} train workers",
            f"  training   from {algo.train_from}, "
            + (f"{cfg.train.steps} steps, " if cfg.train.steps else f"{cfg.train.epochs} epoch(s), ")
            + f"lr {cfg.train.lr} {cfg.train.lr_schedule}",
            "  memory     " + "\n             ".join(check_memory(cfg, run.base_model)),
            f"  run_dir    {run.run_dir}",
            *progress,
        ]
    )
