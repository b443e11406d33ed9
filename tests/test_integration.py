"""One full iteration through Ray: tiny random Llama, 2 executor actors, a 2-worker TorchTrainer."""
import json
import sqlite3

from pathlib import Path

import pytest

from envisions_ray import driver
from envisions_ray.config import load_config
from envisions_ray.model import TRAINED_MARKER


def tiny_run_config(tiny_model, run_dir, *extra):
    return load_config(
        "conf/math_quickstart.yaml",
        [
            f"run_dir={run_dir}",
            f"model.path={tiny_model}",
            "generator.num_cpus=1",
            "generator.max_new_tokens=32",
            "eval.max_new_tokens=32",
            "data.train_size=6",
            "data.eval_size=4",
            "algorithm.k=2",
            "algorithm.iterations=1",
            "algorithm.few_shot=0",
            "algorithm.refine_from_iteration=0",
            "train.num_workers=2",
            "train.epochs=1",
            "train.max_length=256",
            *extra,
        ],
    )


@pytest.mark.timeout(600)
def test_one_iteration_end_to_end(tiny_solver, twelves, tmp_path, ray_session):
    run_dir = tmp_path / "run"
    cfg = tiny_run_config(tiny_solver, run_dir, f"data.train={twelves}", f"data.eval.arith={twelves}")
    driver.run(cfg)

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["policy"] == 0 and set(metrics[0]["eval"]) == set(metrics[0]["executable"]) == {"arith"}
    summary = metrics[1]
    assert summary["iteration"] == 1 and summary["inputs"] == 6
    assert set(summary["seconds"]) == {"explore", "refine", "select", "train", "eval"}
    assert (run_dir / "config.yaml").is_file()

    db = sqlite3.connect(run_dir / "pool.sqlite")
    sources = dict(db.execute("SELECT source, COUNT(*) FROM trajectories GROUP BY source").fetchall())
    assert sources == {"explore": 6 * 2, "refine": 6 * 2}  # K per input, one refinement each
    orphans = db.execute("SELECT COUNT(*) FROM trajectories WHERE source = 'refine' AND parent_id IS NULL").fetchone()[0]
    assert orphans == 0
    in_pool = db.execute("SELECT COUNT(*) FROM trajectories WHERE in_pool = 1").fetchone()[0]
    assert 1 <= in_pool <= 6 * 2 and summary["pool_size"] == in_pool
    assert {row[0] for row in db.execute("SELECT stage FROM stages WHERE iteration = 0")} == {"select", "train", "eval"}

    # The solver model answers 12 often: there were positives, so the 2-worker trainer ran.
    assert summary["u1"] >= 1 and isinstance(summary["train_loss"], float)
    (detail,) = db.execute("SELECT detail FROM stages WHERE iteration = 0 AND stage = 'train'").fetchone()
    checkpoint = Path(json.loads(detail)["checkpoint"])
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / TRAINED_MARKER).is_file()
    exported = (run_dir / "iter-0" / "train.jsonl").read_text().splitlines()
    assert len(exported) == summary["u1"] + summary["u2"]

    # `envisions eval RUN_DIR DATASET` evaluates the run's newest checkpoint, zero-shot.
    assert driver.newest_checkpoint(run_dir) == str(checkpoint)
    scores = driver.evaluate_model(load_config(run_dir / "config.yaml", [f"model.path={run_dir}"]), twelves, 4, None)
    assert list(scores["accuracy"]) == [twelves] and 0.0 <= scores["accuracy"][twelves] <= 1.0
    assert 0.0 <= scores["executable"][twelves] <= 1.0


@pytest.mark.timeout(600)
def test_resume_after_a_crash_redoes_nothing_already_executed(tiny_solver, twelves, tmp_path, ray_session, monkeypatch):
    run_dir = tmp_path / "run"
    cfg = tiny_run_config(tiny_solver, run_dir, f"data.train={twelves}", f"data.eval.arith={twelves}", "algorithm.refine=false")

    def crash(*args, **kwargs):
        raise RuntimeError("node lost during training")

    monkeypatch.setattr(driver, "train", crash)
    with pytest.raises(RuntimeError, match="node lost"):
        driver.run(cfg)
    db = sqlite3.connect(run_dir / "pool.sqlite")
    explored_before = db.execute("SELECT id, solution FROM trajectories ORDER BY id").fetchall()
    assert len(explored_before) == 6 * 2  # everything executed before the crash is kept

    monkeypatch.undo()
    with pytest.raises(Exception, match="already holds a run"):
        driver.run(cfg)  # a fresh run must not overwrite it
    driver.run(load_config(run_dir / "config.yaml"), resume=True)

    assert db.execute("SELECT id, solution FROM trajectories ORDER BY id").fetchall() == explored_before
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["policy"] for line in metrics] == [0, 1]  # the base eval was not repeated
    assert metrics[1]["u1"] >= 1 and metrics[1]["train_loss"] is not None


@pytest.mark.timeout(600)
def test_ablation_switches_shape_the_training_set(tiny_solver, twelves, tmp_path, ray_session):
    run_dir = tmp_path / "ablated"
    switches = ["algorithm.l2=false", "algorithm.rank=random", "algorithm.pool=current_iteration"]
    driver.run(tiny_run_config(tiny_solver, run_dir, f"data.train={twelves}", f"data.eval.arith={twelves}", *switches))
    summary = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1]
    exported = [json.loads(line) for line in (run_dir / "iter-0" / "train.jsonl").read_text().splitlines()]
    assert summary["u2"] == 0 and exported and {e["kind"] for e in exported} == {"l1"}
    # No pair is built, so no positive is held back for one: every pooled positive is in U1 (N1 = 10).
    with sqlite3.connect(run_dir / "pool.sqlite") as db:
        (positives,) = db.execute("SELECT COUNT(*) FROM trajectories WHERE in_pool = 1 AND reward = 1").fetchone()
    assert summary["u1"] == positives
