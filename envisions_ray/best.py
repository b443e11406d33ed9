"""The best policy of a run, which `RUN_DIR/best` keeps and `envisions eval RUN_DIR` evaluates.

Policy 0 is the base model, policy k the policy after iteration k. The best is the one with the
highest accuracy on the run's first eval set (the first of `data.eval`: the run's own dev split,
so a held-out set belongs after it); ties go to the earlier policy, so the base model wins a tie
and a run never keeps a model worse than the one it started from. No Ray here: the driver, the
report and `envisions eval` all decide it the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from envisions_ray.data import json_records
from envisions_ray.errors import UserError
from envisions_ray.metrics_line import check_line

BEST_LINK = "best"  # in the run directory: a symlink to the best policy's model directory
METRICS_FILE = "metrics.jsonl"  # in the run directory: the base model's line, then one per iteration


def answers_path(run_dir: Path, policy: int) -> Path:
    """Where policy k's eval answers go: 0 is the base model, k the policy after iteration k."""
    return run_dir / "answers" / f"policy-{policy}.jsonl"


def best_policy(lines: list[dict], eval_set: str | None = None) -> dict | None:
    """{"policy", "eval_set", "accuracy"} of the best of the metrics lines on `eval_set` (by default
    the first set of the first line: data.eval's first, as the base model's eval ran them). A policy
    evaluated twice (a resumed run repeats an eval whose line was written but not marked done)
    counts by its last line. None when no line scores that set."""
    if eval_set is None:
        eval_set = next(iter(lines[0]["eval"]), None) if lines else None
    scores = {line["policy"]: line["eval"][eval_set] for line in lines if eval_set in line["eval"]}
    if not scores:
        return None
    policy = min(scores, key=lambda k: (-scores[k], k))
    return {"policy": policy, "eval_set": eval_set, "accuracy": scores[policy]}


def policy_model(stage_detail: Callable[[int, str], str | None], policy: int, base_model: str) -> str:
    """Policy k's model: the checkpoint of the newest iteration before k that finished training (an
    iteration that trained nothing keeps the policy it had), else the base model. `stage_detail` is
    the candidate pool's (iteration, stage) -> detail."""
    for iteration in range(policy - 1, -1, -1):
        detail = stage_detail(iteration, "train")
        if detail is not None:
            return json.loads(detail)["checkpoint"]
    return base_model


def policy_name(policy: int) -> str:
    return "base" if policy == 0 else f"iter {policy}"


def model_location(model: str) -> str:
    """An existing local model as an absolute path (a relative one would not survive a change of
    directory); anything else, such as a hub id, as it is."""
    return os.path.abspath(model) if Path(model).exists() else model


def point_best(run_dir: Path, model: str) -> None:
    """Make RUN_DIR/best a symlink to `model`, atomically: a reader sees the old link or the new one."""
    temporary = run_dir / f".{BEST_LINK}.{os.getpid()}"
    temporary.unlink(missing_ok=True)
    os.symlink(model_location(model), temporary)
    os.replace(temporary, run_dir / BEST_LINK)


def read_lines(run_dir: Path) -> list[dict]:
    """The run's metrics.jsonl lines; none before the base model's eval. A line that is no metrics
    line (cut short, or another file's, or a newer schema's) is refused in one line that names file:line."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    try:
        return [check_line(line, f"{path}:{number}") for number, line in json_records(path)]
    except UserError as err:
        raise UserError(f"{err}: repair or delete that line, or restore {METRICS_FILE} from a copy") from None
