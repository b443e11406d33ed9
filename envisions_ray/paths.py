"""A run's paths. The config.yaml a run saves names every file absolutely, so `envisions run
--resume RUN_DIR` finds the run and all it needs from any working directory."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from envisions_ray.config import RAY_JOB_ENV, RunConfig, load_config
from envisions_ray.data import absolute_spec
from envisions_ray.model import PACKAGED_MODELS

CONFIG_FILE = "config.yaml"  # in the run directory: the run's whole recipe
POOL_FILE = "pool.sqlite"  # in the run directory: the candidate pool (actors/pool.py)
POLICY_FILE = "policy"  # in the run directory: the checkpoint the generators hold, for one that restarts


def absolute_paths(cfg: RunConfig, start: Path) -> RunConfig:
    """cfg with each relative path it names (run_dir, data files, prompt file, a local model, the
    model cache, the teacher file) taken from `start`. In a Ray job they stay as they are: they
    name files of the job's working_dir, and a resumed job runs in a fresh copy of it."""
    if os.environ.get(RAY_JOB_ENV):
        return cfg
    model = cfg.model.path
    # As model.check_model_path reads it: a packaged name or a hub id is no path.
    if model not in PACKAGED_MODELS and (model.startswith((".", "/", "~")) or (start / model).exists()):
        model = _absolute(os.path.expanduser(model), start)
    teacher = cfg.distill.teacher_file
    return replace(
        cfg,
        run_dir=_absolute(cfg.run_dir, start),
        model=replace(cfg.model, path=model, cache_dir=_absolute(os.path.expanduser(cfg.model.cache_dir), start)),
        env=replace(cfg.env, prompt_file=_absolute(cfg.env.prompt_file, start)),
        data=replace(
            cfg.data,
            train=absolute_spec(cfg.data.train, start),
            eval={name: absolute_spec(spec, start) for name, spec in cfg.data.eval.items()},
        ),
        distill=replace(cfg.distill, teacher_file=_absolute(teacher, start) if teacher else ""),
    )


def resumed_config(run_dir: Path) -> RunConfig:
    """RUN_DIR's own config.yaml, with RUN_DIR as its run_dir wherever the command runs. Paths it
    holds relative (a run dir from before they were saved absolute, or a Ray job's) are taken from
    the directory the run was started in: RUN_DIR less the relative run_dir it recorded, where
    RUN_DIR ends with that, else the current directory."""
    run_dir = Path(os.path.abspath(run_dir))
    cfg = load_config(run_dir / CONFIG_FILE)
    recorded = Path(cfg.run_dir)
    start, kept = Path.cwd(), len(run_dir.parts) - len(recorded.parts)
    if not recorded.is_absolute() and run_dir.parts[kept:] == recorded.parts:
        start = Path(*run_dir.parts[:kept])
    return replace(absolute_paths(cfg, start), run_dir=str(run_dir))


def _absolute(path: str, start: Path) -> str:
    return os.path.normpath(os.path.join(start, path))
