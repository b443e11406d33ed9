"""The best policy a run keeps (envisions_ray/best.py), on hand-computed cases; RUN_DIR/best and
what `envisions eval RUN_DIR` reads, on run directories written by hand (no Ray)."""

import json
import os
from types import SimpleNamespace

import pytest

from envisions_ray import eval_command, records
from envisions_ray.actors.pool import CandidatePool
from envisions_ray.best import best_policy, point_best, policy_model, read_lines
from envisions_ray.errors import UserError


def lines(*accuracies, eval_set="arith"):
    return [{"policy": k, "eval": {eval_set: accuracy}} for k, accuracy in enumerate(accuracies)]


@pytest.mark.parametrize(
    "accuracies, policy",
    [
        ([0.2, 0.3, 0.45], 2),  # improving: the last
        ([0.5, 0.4, 0.3], 0),  # only worse than the base model: the base model
        ([0.2, 0.6, 0.4], 1),  # up, then down: the peak
        ([0.5, 0.5, 0.4], 0),  # a tie goes to the earlier policy: the base model wins it
        ([0.2, 0.6, 0.6], 1),
        ([0.0], 0),  # no iteration (few_shot)
    ],
)
def test_the_best_is_the_highest_accuracy_and_ties_go_to_the_earlier_policy(accuracies, policy):
    assert best_policy(lines(*accuracies)) == {"policy": policy, "eval_set": "arith", "accuracy": accuracies[policy]}


def test_the_first_eval_set_chooses_unless_another_is_named():
    scores = [{"dev": 0.3, "test": 0.6}, {"dev": 0.4, "test": 0.2}, {"dev": 0.1, "test": 0.7}]
    metrics = [{"policy": k, "eval": s} for k, s in enumerate(scores)]
    assert best_policy(metrics) == {"policy": 1, "eval_set": "dev", "accuracy": 0.4}
    assert best_policy(metrics, "test") == {"policy": 2, "eval_set": "test", "accuracy": 0.7}


def test_a_policy_evaluated_twice_counts_by_its_last_line():
    # A driver killed after writing policy 1's line, before marking its eval done: the resumed one
    # evaluates it again (greedy, but a batch can change the numerics) and writes a second line.
    metrics = lines(0.5, 0.75) + [{"policy": 1, "eval": {"arith": 0.25}}]
    assert best_policy(metrics) == {"policy": 0, "eval_set": "arith", "accuracy": 0.5}


def test_no_eval_set_means_no_best():
    assert best_policy([]) is None
    assert best_policy([{"policy": 0, "eval": {}}, {"policy": 1, "eval": {}}]) is None


def test_policy_k_runs_on_the_newest_checkpoint_trained_before_it():
    details = {0: '{"checkpoint": "/ck/iter-0", "loss": 0.5}', 2: '{"checkpoint": "/ck/iter-2-dpo"}'}
    detail = lambda iteration, stage: details.get(iteration) if stage == "train" else None  # noqa: E731
    assert [policy_model(detail, k, "/base") for k in range(4)] == [
        "/base",
        "/ck/iter-0",
        "/ck/iter-0",  # iteration 1 trained nothing: policy 2 is policy 1
        "/ck/iter-2-dpo",
    ]
    assert policy_model(lambda i, s: None, 2, "/base") == "/base"


def test_best_link_is_replaced_in_place_and_absolute(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path)
    point_best(tmp_path, "a")  # a relative model path: the link must not depend on the directory
    assert os.readlink(tmp_path / "best") == str(tmp_path / "a")
    point_best(tmp_path, "HuggingFaceTB/SmolLM2-135M")  # a hub id stays a name
    assert os.readlink(tmp_path / "best") == "HuggingFaceTB/SmolLM2-135M"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "best"]  # no temporary link left


def iteration_line(i, accuracy):
    return {
        "iteration": i,
        "policy": i,
        "inputs": 6,
        "explored": 3,
        "positives": 4,
        "unique_correct": 2,
        "pool_size": 5,
        "u1": 2,
        "u2": 1,
        "train_loss": 0.5,
        "eval": {"arith": accuracy},
        "seconds": {"train": 1.0},
    }


def test_each_metrics_line_records_the_best_and_the_link_follows_it(tmp_path, capsys):
    base, checkpoint = tmp_path / "base", tmp_path / "checkpoints" / "iter-0"
    base.mkdir()
    checkpoint.mkdir(parents=True)
    pool = CandidatePool(str(tmp_path / "pool.sqlite"))
    run = SimpleNamespace(run_dir=tmp_path, pool=pool, base_model=str(base))
    records.record(run, {"policy": 0, "eval": {"arith": 0.5}})
    assert os.readlink(tmp_path / "best") == str(base)
    pool.mark_done(0, "train", json.dumps({"checkpoint": str(checkpoint)}))
    records.record(run, iteration_line(1, 0.75))
    assert os.readlink(tmp_path / "best") == str(checkpoint)
    records.record(run, iteration_line(2, 0.25))  # worse: iter 1 stays
    assert os.readlink(tmp_path / "best") == str(checkpoint)
    recorded = [line["best"] for line in read_lines(tmp_path)]
    assert recorded == [
        {"policy": 0, "eval_set": "arith", "accuracy": 0.5, "model": str(base)},
        {"policy": 1, "eval_set": "arith", "accuracy": 0.75, "model": str(checkpoint)},
        {"policy": 1, "eval_set": "arith", "accuracy": 0.75, "model": str(checkpoint)},
    ]
    summaries = capsys.readouterr().out.splitlines()
    assert "| best iter 1 (arith=75.0%) |" in summaries[-1]
    # A resumed driver decides from metrics.jsonl and the pool, whatever the link says by then.
    point_best(tmp_path, str(base))
    assert records.best_so_far(run, read_lines(tmp_path)) == recorded[-1]
    # `envisions eval RUN_DIR` takes the recorded best.
    assert eval_command.best_model(tmp_path) == recorded[-1]
    pool.close()


def test_eval_of_a_run_from_before_the_best_was_recorded_decides_it_the_same_way(tmp_path):
    pool = CandidatePool(str(tmp_path / "pool.sqlite"))
    pool.mark_done(0, "train", json.dumps({"checkpoint": "/ck/iter-0"}))
    pool.close()
    (tmp_path / "config.yaml").write_text("model:\n  path: smollm2\n")
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines(0.5, 0.25)))
    assert eval_command.best_model(tmp_path) == {"policy": 0, "eval_set": "arith", "accuracy": 0.5, "model": "smollm2"}
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines(0.5, 0.75)))
    assert eval_command.best_model(tmp_path)["model"] == "/ck/iter-0"


def test_eval_of_a_run_without_an_evaluated_policy_is_one_line(tmp_path):
    assert eval_command.best_model(tmp_path) is None  # no pool.sqlite: a model directory, not a run
    CandidatePool(str(tmp_path / "pool.sqlite")).close()
    with pytest.raises(UserError, match="has not evaluated a policy yet"):
        eval_command.best_model(tmp_path)
