"""What `envisions run` checks of a run's inputs before anything is written or started: no eval set
meets the training data, every task has its demonstrations, every prompt leaves room for its
answer, and the run directory can be written."""

from __future__ import annotations

import tempfile
from pathlib import Path

from envisions_ray.config import RunConfig
from envisions_ray.data import problem_key, seeded_training_ids
from envisions_ray.envs import offline_describe
from envisions_ray.errors import UserError
from envisions_ray.model import max_positions, model_directory, token_counts
from envisions_ray.prompts import PromptBook
from envisions_ray.types import Example

WRITE_PROBE_PREFIX = ".envisions-write-probe-"  # made and removed where a run directory is to be created


def check_inputs(
    cfg: RunConfig, train_set: list[Example], eval_sets: dict[str, list[Example]], prompts: PromptBook
) -> None:
    """No eval set meets a training problem (the same question on the same context; for generated
    (task, seed) inputs, a seed some iteration trains on), and every task has its demonstration
    for the few-shot prompt."""
    trained = seeded_training_ids(train_set, max(cfg.algorithm.iterations, 1), cfg.data.seed_stride)
    for name, examples in eval_sets.items():
        shared = sorted(trained & {x.id for x in examples})
        if shared:
            raise UserError(
                f"config: eval set '{name}' shares inputs with training (first: {shared[0]}); "
                "move its first seed past the training seeds"
            )
    training_problems = {problem_key(x) for x in train_set if not x.task}
    for name, examples in eval_sets.items():
        leaked = next((x for x in examples if problem_key(x) in training_problems), None)
        if leaked is not None:
            raise UserError(
                f"config: eval set '{name}' holds a training problem ({leaked.id}: {leaked.question[:60]!r}); "
                "hold it out of data.train, e.g. PATH[:-500] for training and PATH[-500:] for dev"
            )
    wanted = max(cfg.algorithm.few_shot, cfg.algorithm.trained_shots)
    for x in [*train_set, *(x for examples in eval_sets.values() for x in examples)]:
        if len(prompts.shots_for(x.task)) < wanted:
            count = len(prompts.shots_for(x.task))
            raise UserError(
                f"{cfg.env.prompt_file} has {count} demonstration(s)"
                + (f" for task '{x.task}'" if x.task else "")
                + f", fewer than algorithm.few_shot ({cfg.algorithm.few_shot}) or algorithm.trained_shots "
                f"({cfg.algorithm.trained_shots})"
            )


def check_context(
    cfg: RunConfig, base_model: str, prompts: PromptBook, train_set: list[Example], eval_sets: dict[str, list[Example]]
) -> None:
    """Every exploration and eval prompt leaves room for its answer: its tokens and max_new_tokens
    within generator.max_model_len and the model's max_position_embeddings. Counted where the model's
    tokenizer.json is here (a directory, a converted packaged model) and the environment tells the
    problem without running (math, logic); a web page is only seen in a browser."""
    describe = offline_describe(cfg.env.name)
    if describe is None:
        return
    algo = cfg.algorithm
    shots = max(algo.few_shot, algo.trained_shots if algo.iterations else 0)  # the more shots, the longer
    asked = [(x, "generator.max_new_tokens", cfg.generator.max_new_tokens) for x in train_set]
    asked += [(x, "eval.max_new_tokens", cfg.eval.max_new_tokens) for examples in eval_sets.values() for x in examples]
    directory = model_directory(base_model, cfg.model.cache_dir)
    lengths = token_counts(directory, [prompts.explore(describe(x), shots, x.task) for x, _, _ in asked])
    if lengths is None:
        return
    limits = [(cfg.generator.max_model_len, "generator.max_model_len")]
    positions = max_positions(directory)
    if positions is not None:
        limits.append((positions, f"max_position_embeddings in {directory / 'config.json'}"))
    limit, limited_by = min(limits)
    length, (x, key, room) = max(zip(lengths, asked), key=lambda pair: pair[0] + pair[1][2])
    if length + room > limit:
        raise UserError(
            f"config: the prompt of input '{x.id}' ({shots} shots) is {length} tokens, and {key} ({room}) more "
            f"make {length + room}: over the {limit} of {limited_by}"
        )


def check_writable(run_dir: Path) -> None:
    """The run directory exists as a writable directory, or its nearest existing parent is one. Tried,
    not read from permission bits, which root, read-only mounts and /proc make untrue: a directory is
    made there and removed."""
    try:
        existing = next(p for p in [run_dir, *run_dir.parents] if p.exists())
    except OSError as err:  # a name too long
        raise UserError(f"run directory {run_dir} is not writable: {err.strerror}") from None
    if not existing.is_dir():
        raise UserError(f"run directory {run_dir} is not writable: {existing} is not a directory")
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=WRITE_PROBE_PREFIX).cleanup()
    except OSError as err:
        raise UserError(
            f"run directory {run_dir} is not writable: no directory can be made in {existing} ({err.strerror})"
        ) from None
