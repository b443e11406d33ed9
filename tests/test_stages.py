"""Stages own their bookkeeping (envisions_ray/stages.py): on a local candidate pool, what a
resumed run skips, what it is given back, and where the wall time goes. No Ray."""

import json
from pathlib import Path
from types import SimpleNamespace

from envisions_ray import stages
from envisions_ray.actors.pool import CandidatePool
from envisions_ray.run_state import Generated, Request, Streamed
from envisions_ray.stages import Stages
from envisions_ray.trained import Trained
from envisions_ray.types import Example, Sampling, Trajectory

OLD_DETAIL = '{"checkpoint": "/ck/iter-0", "loss": 0.5, "dpo_loss": null, "restarts": 0}'  # before the too-long counts


def driver_on(path: Path, session: str) -> SimpleNamespace:
    """What Stages reads of a Run: its pool and the driver's session."""
    return SimpleNamespace(pool=CandidatePool(str(path)), session=session)


def test_a_stage_run_once_is_given_back_to_a_resumed_run(tmp_path):
    first = driver_on(tmp_path / "pool.sqlite", "first")
    trained = Trained("/ck/iter-0", 0.5, restarts=1, prompt_cut=2)
    assert Stages(first, 0).once("train", lambda: trained, Trained) == trained
    assert Stages(first, 0).once("select", lambda: 3) == 3
    resumed = driver_on(tmp_path / "pool.sqlite", "resumed")
    again = Stages(resumed, 0)
    assert again.once("train", lambda: 1 / 0, Trained) == trained  # not run again
    assert again.once("select", lambda: 1 / 0) is None  # done, and nothing kept
    assert resumed.pool.seconds(0).keys() == {"train", "select"}


def test_a_stage_that_did_nothing_runs_again_on_a_resume(tmp_path):
    run = driver_on(tmp_path / "pool.sqlite", "first")
    assert Stages(run, 0).once("train", lambda: None, Trained) is None
    assert not run.pool.is_done(0, "train")
    trained = Trained("/ck/iter-0", 0.5)
    assert Stages(driver_on(tmp_path / "pool.sqlite", "resumed"), 0).once("train", lambda: trained, Trained) == trained


def test_a_training_kept_before_its_too_long_counts_reads_them_as_zero(tmp_path):
    run = driver_on(tmp_path / "pool.sqlite", "first")
    run.pool.mark_done(0, "train", OLD_DETAIL)
    assert Stages(run, 0).once("train", lambda: 1 / 0, Trained) == Trained("/ck/iter-0", 0.5)
    assert json.loads(OLD_DETAIL)["checkpoint"] == run.pool.newest_checkpoint()


def test_the_time_of_one_stage_adds_up_within_a_driver_and_across_drivers(tmp_path, monkeypatch):
    first = Stages(driver_on(tmp_path / "pool.sqlite", "first"), 0)
    clock = iter([0.0, 1.0, 1.0, 3.0])  # two blocks of 1 s and 2 s
    monkeypatch.setattr(stages.time, "perf_counter", lambda: next(clock))
    first.timed("select", lambda: None)
    first.timed("select", lambda: None)  # a method's examples are timed under select too
    monkeypatch.undo()
    assert first.seconds["select"] == 3.0 == first.run.pool.seconds(0)["select"]
    resumed = Stages(driver_on(tmp_path / "pool.sqlite", "resumed"), 0)
    resumed.timed("select", lambda: None)
    assert resumed.run.pool.seconds(0)["select"] == first.seconds["select"] + resumed.seconds["select"]


def test_a_resumed_sampling_stage_asks_only_what_the_pool_has_no_trajectory_of(tmp_path, monkeypatch):
    asked = []

    def stream(run, requests, sampling, sink, explorer=None):
        asked.extend(requests)
        return Streamed([], [], Generated(answers=len(requests)))

    monkeypatch.setattr(stages, "stream", stream)
    run = driver_on(tmp_path / "pool.sqlite", "resumed")
    x, y = Example("x", "1 + 1?", "2"), Example("y", "2 + 2?", "4")
    [x_id] = run.pool.record([Trajectory("x", "return 2", 1, -1.0, 0, "explore")])
    explored = run.pool.trajectories(0, "explore")[0]
    run.pool.record([Trajectory("x", "return 2", 1, -1.0, 0, "refine", parent_id=x_id)])
    sampling = Sampling(1, 1.0, 8)
    assert Stages(run, 0).sample("explore", [Request(x, "x?"), Request(y, "y?")], sampling).answers == 1
    assert [request.example.id for request in asked] == ["y"]
    asked.clear()
    assert Stages(run, 0).sample("refine", [Request(x, "refine x", explored)], sampling).answers == 0
    assert asked == []
