"""`envisions eval`: greedy accuracy of one model on one dataset; given a run directory, of the
run's best policy."""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from envisions_ray.actors.pool import CandidatePool, check_pool
from envisions_ray.best import best_policy, policy_model, policy_name, read_lines
from envisions_ray.cluster import connect_ray, start_actors, stop_actors
from envisions_ray.config import RunConfig
from envisions_ray.data import load_examples
from envisions_ray.errors import UserError
from envisions_ray.evaluation import evaluate
from envisions_ray.model import TRAINED_MARKER, resolve_model_path
from envisions_ray.paths import CONFIG_FILE, POOL_FILE
from envisions_ray.prompts import PromptBook
from envisions_ray.run_state import Run


def evaluate_model(
    cfg: RunConfig, dataset: str, size: int | None, shots: int | None, answers: Path | None = None
) -> dict[str, dict[str, float]]:
    """`envisions eval`: greedy accuracy of cfg.model.path (a model, or a run's best policy, RUN_DIR/best)
    on one dataset; each answer to the JSONL file `answers` if given. For a run, "policy" says which."""
    best = best_model(Path(cfg.model.path))
    model = resolve_model_path(best["model"] if best else cfg.model.path, cfg.model.cache_dir)
    if best is not None:
        print(
            f"{cfg.model.path}: evaluating its best policy, {policy_name(best['policy'])} "
            f"({best['eval_set']} {best['accuracy']:.1%} in the run): {best['model']}",
            flush=True,
        )
    if size is None and dataset.startswith("tasks:"):  # generated inputs have no natural end
        size = cfg.data.eval_size
    examples = load_examples(dataset, size, cfg.data.seed)
    run = Run(cfg, Path(cfg.run_dir), model, PromptBook.load(cfg.env.prompt_file), [], {dataset: examples})
    if shots is None:  # a model we trained answers the prompt it was trained on
        shots = cfg.algorithm.trained_shots if (Path(model) / TRAINED_MARKER).is_file() else cfg.algorithm.few_shot
    start = time.perf_counter()
    connect_ray(cfg)
    try:
        start_actors(run)
        started = time.perf_counter()
        scores, generated = evaluate(run, shots, answers)
        seconds = time.perf_counter() - started
        scored = scores.to_json()
        return {
            "accuracy": scored.pop("eval"),
            "problems": {dataset: len(examples)},
            **scored,
            "generated_tokens": generated.tokens,
            "prompt_tokens": generated.prompt_tokens,
            "cached_prompt_tokens": generated.cached_prompt_tokens,
            "seconds": seconds,
            # Ray and the actors launched; an engine loads in its actor meanwhile, and the eval's
            # first call waits for it, so "seconds" holds the engine's start.
            "start_seconds": started - start,
            **({"policy": best} if best else {}),
        }
    finally:
        stop_actors(run)


def best_model(run_dir: Path) -> dict | None:
    """What `envisions eval RUN_DIR` evaluates: the run's best policy as its last metrics line records
    it, {"policy", "eval_set", "accuracy", "model"}; None when `run_dir` is no run."""
    if not (run_dir / POOL_FILE).is_file():
        return None
    check_pool(run_dir / POOL_FILE)
    lines = read_lines(run_dir)
    best = lines[-1].get("best") if lines else None
    if best is None and lines:  # a run from before the best was recorded: decided the same way now
        best = best_policy(lines)
        if best is not None:
            pool = CandidatePool(str(run_dir / POOL_FILE))
            base = yaml.safe_load((run_dir / CONFIG_FILE).read_text())["model"]["path"]
            best["model"] = policy_model(pool.stage_detail, best["policy"], base)
            pool.close()
    if best is None:
        raise UserError(f"run {run_dir} has not evaluated a policy yet")
    return best
