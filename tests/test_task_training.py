"""Training data per task: exploration counted per task, train.jsonl rows counted by their input's task."""

from envisions_ray.task_training import TaskTraining, predates_ids, training_per_task, weakest_first
from envisions_ray.types import Trajectory


def t(example_id: str, solution: str, reward: int, source: str = "explore") -> Trajectory:
    return Trajectory(example_id, solution, reward, 0.0, 0, source)


GENERATED = [
    t("click@1", "click(ref=1)", 1),
    t("click@1", "click(ref=2)", 0),
    t("click@1", "click(ref=1)", 1, "refine"),
    t("click@2", "click(ref=3)", 0),
    t("click@2", "click(ref=5)", 1, "refine"),  # solved by refining only
    t("type@1", 'type(ref=1, "a")', 0),
    t("type@1", 'type(ref=2, "a")', 0, "refine"),
]


def test_each_task_counts_its_inputs_samples_positives_and_solved_inputs():
    per_task = training_per_task(GENERATED, [], tasks=["click", "type", "drag"])
    assert per_task["click"] == TaskTraining(inputs=2, samples=5, positives=3, solved=2)
    assert per_task["type"] == TaskTraining(inputs=1, samples=2, positives=0, solved=0)
    assert per_task["drag"] == TaskTraining()  # an eval task never explored still appears


def test_train_rows_count_under_the_task_of_their_input():
    rows = [
        {"prompt": "...", "target": "click(ref=1)", "kind": "l1", "example_id": "click@1"},
        {"prompt": "... click(ref=3) ...", "target": "click(ref=5)", "kind": "l2", "example_id": "click@2"},
        {"prompt": "...", "target": "click(ref=5)", "kind": "l1", "example_id": "press@1"},  # same target, other task
        {"prompt": "...", "chosen": "click(ref=1)", "rejected": "click(ref=3)", "example_id": "click@1"},  # DPO
    ]
    per_task = training_per_task(GENERATED, rows, tasks=["click", "type"])
    assert (per_task["click"].u1, per_task["click"].u2) == (1, 1)
    assert per_task["press"] == TaskTraining(u1=1)  # trained on, though not explored this iteration
    assert per_task["type"].u1 == per_task["type"].u2 == 0
    assert not predates_ids(rows)


def test_a_train_row_without_an_input_id_predates_them():
    old = {"prompt": "...", "target": "click(ref=1)", "kind": "l1"}
    assert predates_ids([old]) and not predates_ids([{"prompt": "...", "chosen": "a", "rejected": "b"}])
    assert training_per_task([], [old]) == {}  # counted nowhere, not guessed


def test_tasks_without_positives_come_first():
    per_task = {
        "b": TaskTraining(positives=3),
        "z": TaskTraining(),
        "a": TaskTraining(),
        "c": TaskTraining(positives=1),
    }
    assert weakest_first(per_task) == ["a", "z", "c", "b"]
