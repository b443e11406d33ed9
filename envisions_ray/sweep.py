"""`envisions sweep`: several runs under one parent directory, one after another, then one report.

Two ways to name the runs:
- a run config and overrides whose values are comma lists, `method=envisions,star_env
  algorithm.k=2,4`: every combination is a run, named after its values (`method-star_env_k-4`);
- a sweep file (`conf/sweeps/*.yaml`) with a `sweep:` section that names each run and its
  overrides, for grids that are not products, such as paper table 3's ablations.

Every run's config is checked before the first one starts. A sweep that was stopped continues
where it stopped when started again: finished runs are kept, an interrupted one is resumed.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from envisions_ray.config import RunConfig, load_config, read_mapping
from envisions_ray.errors import UserError

# A run's name is its directory's, inside the sweep's parent.
RUN_NAME_CHARS = r"\w.=-"
RUN_NAME = f"[{RUN_NAME_CHARS}]+"


@dataclass(frozen=True)
class PlannedRun:
    name: str
    cfg: RunConfig


def plan_sweep(config: str, overrides: list[str], parent: str | None) -> tuple[Path, list[PlannedRun]]:
    """The parent directory and the runs, every config already validated."""
    sweep = _sweep_section(config)
    if sweep is not None:
        base, shared = sweep["config"], [*(sweep.get("overrides") or []), *overrides]
        named = {name: [*shared, *extra] for name, extra in sweep["runs"].items()}
        parent_dir = Path(parent or sweep.get("parent") or _default_parent(base))
    else:
        base, named = config, _product(overrides)
        parent_dir = Path(parent or _default_parent(base))
    for name in named:  # its run goes to parent_dir / name: a path, or YAML's or OmegaConf's syntax, would move it
        if not re.fullmatch(RUN_NAME, name) or name in (".", ".."):
            raise UserError(
                f"sweep: run name {name!r} is not a directory name of letters, digits, '_', '.', '=' and '-', "
                f"which would keep its run in {parent_dir}"
            )
    runs = [
        PlannedRun(name, load_config(base, [*extra, f"run_dir={parent_dir / name}"])) for name, extra in named.items()
    ]
    return parent_dir, runs


def run_sweep(runs: list[PlannedRun]) -> list[Path]:
    import ray

    from envisions_ray import driver

    for number, planned in enumerate(runs, start=1):
        run_dir = Path(planned.cfg.run_dir)
        if _finished(run_dir, planned.cfg):
            print(f"sweep: run {number}/{len(runs)} {planned.name} finished before; kept", flush=True)
            continue
        resume = (run_dir / "pool.sqlite").exists()
        print(
            f"sweep: run {number}/{len(runs)} {planned.name}{' (resumed)' if resume else ''} -> {run_dir}", flush=True
        )
        driver.run_experiment(planned.cfg, resume=resume)
        ray.shutdown()  # the next run sizes its own local cluster (or reconnects to RAY_ADDRESS)
    return [Path(planned.cfg.run_dir) for planned in runs]


def _sweep_section(config: str) -> dict | None:
    path = Path(config)
    raw = OmegaConf.to_container(read_mapping(path, "sweep"))  # interpolations stay as written
    if "sweep" not in raw:
        return None
    sweep = raw["sweep"]
    if (
        not isinstance(sweep, dict)
        or not isinstance(sweep.get("config"), str)
        or not isinstance(sweep.get("parent") or "", str)
        or not isinstance(sweep.get("runs"), dict)
        or not sweep["runs"]
    ):
        raise UserError(
            f"sweep: {path} needs sweep.config (a run config) and sweep.runs (name: [key=value, ...]), "
            "and may have sweep.parent (a directory) and sweep.overrides"
        )
    lists = {"sweep.overrides": sweep.get("overrides")}
    lists.update({f"sweep.runs.{name}": extra for name, extra in sweep["runs"].items()})
    for key, value in lists.items():
        if value is not None and not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            raise UserError(f"sweep: {path}: {key} must be a list of key=value overrides, not {value!r:.60}")
    sweep["runs"] = {str(name): extra or [] for name, extra in sweep["runs"].items()}
    return sweep


def _product(overrides: list[str]) -> dict[str, list[str]]:
    """Every combination of the comma-listed values; a value in brackets is one value, commas and all."""
    axes = []
    for item in overrides:
        key, _, value = item.partition("=")
        values = [value] if value.startswith(("[", "{")) else value.split(",")
        axes.append([(key, v) for v in values])
    varied = {axis[0][0] for axis in axes if len(axis) > 1}  # only these name a run
    runs = {}
    for combination in itertools.product(*axes):
        name = "_".join(f"{key.rsplit('.', 1)[-1]}-{value}" for key, value in combination if key in varied) or "run"
        runs[re.sub(f"[^{RUN_NAME_CHARS}]+", "-", name)] = [f"{key}={value}" for key, value in combination]
    return runs


def _default_parent(config: str) -> str:
    """Beside the config's own run_dir; a run_dir override would be replaced per run anyway."""
    return load_config(config).run_dir + "-sweep"


def _finished(run_dir: Path, cfg: RunConfig) -> bool:
    """Its metrics hold the base model's line and one per iteration."""
    metrics = run_dir / "metrics.jsonl"
    return metrics.is_file() and len(metrics.read_text().splitlines()) >= cfg.algorithm.iterations + 1
