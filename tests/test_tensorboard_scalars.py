"""A run's metrics as TensorBoard scalars (envisions_ray/tensorboard_scalars.py): read back from the
event files, at step = policy, never a point twice, and nothing without tensorboard."""

import json
import sys
from types import SimpleNamespace

import pytest

from envisions_ray import records
from envisions_ray.actors.pool import CandidatePool
from envisions_ray.metrics_line import IterationFacts, MetricsLine, Scores
from envisions_ray.tensorboard_scalars import TENSORBOARD_DIR, say_tensorboard_missing, scalars, write_scalars

BASE = MetricsLine(Scores(eval={"dev": 0.25, "test": 0.125}), seconds={"eval": 12.0})
ITERATION = MetricsLine(
    Scores(eval={"dev": 0.5, "test": 0.375}),
    IterationFacts(
        iteration=1,
        inputs=8,
        explored=6,
        positives=11,
        pool_size=20,
        unique_correct=9,
        u1=7,
        u2=3,
        train_loss=0.75,
        delta_logp=1.5,
        ea=0.625,
        stb=1.0,
    ),
    seconds={"explore": 30.0, "train": 40.0, "eval": 10.0},
)
ITERATION_POINTS = {
    "eval/dev": 0.5,
    "eval/test": 0.375,
    "explore/explored": 6,
    "explore/positives": 11,
    "explore/ea": 0.625,
    "explore/stb": 1.0,
    "train/u1": 7,
    "train/u2": 3,
    "train/loss": 0.75,
    "train/delta_logp": 1.5,
    "seconds/explore": 30.0,
    "seconds/train": 40.0,
    "seconds/eval": 10.0,
}


def read_back(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every tag's (step, value) points, as TensorBoard reads the directory."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from tensorboard.util.tensor_util import make_ndarray

    events = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    return {
        tag: [(event.step, make_ndarray(event.tensor_proto).item()) for event in events.Tensors(tag)]
        for tag in events.Tags()["tensors"]
    }


def test_a_lines_scalars_are_its_accuracies_facts_and_stage_seconds_without_missing_ones():
    assert scalars(ITERATION) == ITERATION_POINTS  # no dpo_loss: the line has none
    assert scalars(BASE) == {"eval/dev": 0.25, "eval/test": 0.125, "seconds/eval": 12.0}


def test_each_line_is_written_at_step_policy_and_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    write_scalars(tmp_path, BASE)
    write_scalars(tmp_path, ITERATION)
    points = read_back(tmp_path / TENSORBOARD_DIR)
    assert points["eval/dev"] == [(0, 0.25), (1, 0.5)]
    assert points["seconds/eval"] == [(0, 12.0), (1, 10.0)]
    for tag, value in ITERATION_POINTS.items():
        assert points[tag][-1] == (1, pytest.approx(value)), tag  # float32 in the event file
    assert set(points) == set(ITERATION_POINTS)


def test_a_resumed_run_writes_only_the_points_not_written_before(tmp_path):
    summary = pytest.importorskip("tensorboard.summary")
    log_dir = tmp_path / TENSORBOARD_DIR
    write_scalars(tmp_path, BASE)
    partial = summary.Writer(str(log_dir))  # a driver killed while writing policy 1's points
    partial.add_scalar("eval/dev", 0.5, 1)
    partial.close()
    files = len(list(log_dir.iterdir()))
    write_scalars(tmp_path, ITERATION)  # resumed: the rest of policy 1
    write_scalars(tmp_path, ITERATION)  # and killed again before marking it finished
    write_scalars(tmp_path, BASE)
    points = read_back(log_dir)
    assert points["eval/dev"] == [(0, 0.25), (1, 0.5)]
    assert all(len({step for step, _ in tag_points}) == len(tag_points) for tag_points in points.values())
    assert set(points) == set(ITERATION_POINTS)
    assert len(list(log_dir.iterdir())) == files + 1  # nothing left to write: no empty event file


def test_record_writes_the_metrics_line_again_but_not_its_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    base = tmp_path / "base"
    base.mkdir()
    run = SimpleNamespace(run_dir=tmp_path, pool=CandidatePool(str(tmp_path / "pool.sqlite")), base_model=str(base))
    records.record(run, BASE.to_json())
    records.record(run, BASE.to_json())  # a driver killed before marking the base model's eval finished
    assert [json.loads(line)["policy"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 0]
    assert read_back(tmp_path / TENSORBOARD_DIR)["eval/dev"] == [(0, 0.25)]


def test_without_tensorboard_a_run_writes_no_event_file_and_says_so_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard.summary", None)  # `import` raises ImportError
    say_tensorboard_missing.cache_clear()
    write_scalars(tmp_path, BASE)
    write_scalars(tmp_path, ITERATION)
    out = capsys.readouterr().out
    assert out.count("tensorboard is not installed") == 1 and len(out.splitlines()) == 1
    assert not (tmp_path / TENSORBOARD_DIR).exists()
    say_tensorboard_missing.cache_clear()  # a later test's run says it again
