"""Training data per task (web diagnosis, issue 35): for one iteration, what exploring found for each
task and what of it became U1 and U2, so that a task with no positive (never trained on) shows.

Pure: it reads nothing; envisions_ray/report.py reads the pool and train.jsonl and draws the
table. A task is the part of an input's id before "@" (data.task_input: MiniWoB inputs are
`task@seed`); a train.jsonl row names its input by `example_id` (types.TrainExample).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from envisions_ray.types import Trajectory

KINDS = {"l1": "u1", "l2": "u2"}  # train.jsonl kind -> the count it adds to


@dataclass(frozen=True)
class TaskTraining:
    inputs: int = 0  # inputs explored
    samples: int = 0  # trajectories, explored and refined
    positives: int = 0  # samples with reward 1
    solved: int = 0  # inputs with a positive
    u1: int = 0  # L1 examples (train.jsonl kind "l1")
    u2: int = 0  # L2 examples (kind "l2")


def task_of(example_id: str) -> str:
    return example_id.split("@")[0]


def predates_ids(train_rows: list[dict]) -> bool:
    """Whether a U1 or U2 row names no input: train.jsonl of a run from before rows had ids."""
    return any(row.get("kind") in KINDS and not row.get("example_id") for row in train_rows)


def training_per_task(
    generated: list[Trajectory], train_rows: list[dict], tasks: Iterable[str] = ()
) -> dict[str, TaskTraining]:
    """Per task: `generated` (the iteration's explored and refined trajectories) counted, and the U1
    and U2 rows of its train.jsonl by their input's task. Every task in `tasks` (the eval's) appears,
    zeros and all. Preference rows (the DPO baselines') are not U1 or U2 and are left out."""
    counts: dict[str, Counter] = {task: Counter() for task in tasks}
    for t in generated:
        counts.setdefault(task_of(t.example_id), Counter()).update(samples=1, positives=int(t.reward == 1))
    for example_id in {t.example_id for t in generated if t.source == "explore"}:
        counts[task_of(example_id)]["inputs"] += 1
    for example_id in {t.example_id for t in generated if t.reward == 1}:
        counts[task_of(example_id)]["solved"] += 1
    for row in train_rows:
        if row.get("kind") in KINDS and row.get("example_id"):
            counts.setdefault(task_of(row["example_id"]), Counter())[KINDS[row["kind"]]] += 1
    return {task: TaskTraining(**count) for task, count in counts.items()}


def weakest_first(per_task: dict[str, TaskTraining]) -> list[str]:
    """Tasks by positives, fewest first, then by name."""
    return sorted(per_task, key=lambda task: (per_task[task].positives, task))
