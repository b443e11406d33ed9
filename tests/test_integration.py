"""One full iteration through Ray: tiny random Llama, 2 executor actors, a 2-worker TorchTrainer."""

import itertools
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from envisions_ray import driver, methods, stages, training
from envisions_ray.actors.pool import CandidatePool
from envisions_ray.best import best_policy, policy_name
from envisions_ray.cli import main
from envisions_ray.config import load_config
from envisions_ray.errors import UserError
from envisions_ray.generators import GeneratorGroup
from envisions_ray.model import TRAINED_MARKER
from envisions_ray.plan import plan
from envisions_ray.report import read_metrics
from envisions_ray.trained import Trained

# The hf backend starts at once on a tiny model, while a vLLM engine takes most of a minute on 2
# cores: these tests are about the loop. The end-to-end test and tests/test_vllm_engine.py run vLLM.
HF = "generator.backend=hf"
VLLM = ("generator.backend=vllm", "generator.enforce_eager=true", "generator.kv_cache_gib=0.25")
EXPLORE_DELAY_S = 3.0


def newest_checkpoint(run_dir: Path) -> str | None:
    """The last checkpoint the run's training wrote, as its pool records it."""
    pool = CandidatePool(str(run_dir / "pool.sqlite"))
    checkpoint = pool.newest_checkpoint()
    pool.close()
    return checkpoint


def record_training(monkeypatch) -> list[tuple[list, float | None]]:
    """For tests about what a run trains on, not about training: `training.train` records each job's
    examples and DPO beta, and hands back the model it started from. A Ray Train job on a tiny model
    costs about 30 s of process starts and imports on 2 cores; the end-to-end and SFT-then-DPO
    tests, test_actors.py and the cluster-path tests run it for real."""
    jobs = []

    def recorded(cfg, init_model, examples, storage_dir, name, dpo_beta=None):
        jobs.append((examples, dpo_beta))
        return Trained(init_model, 0.0, 0)

    monkeypatch.setattr(training, "train", recorded)
    return jobs


def tiny_run_config(tiny_model, run_dir, *extra):
    return load_config(
        "conf/math_quickstart.yaml",
        [
            f"run_dir={run_dir}",
            f"model.path={tiny_model}",
            "model.dtype=float32",  # the tiny models' answers on any CPU, with or without native bf16
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
            "train.cpus_per_worker=1",
            "train.deepspeed=true",  # the GPU configs' path, over gloo here
            "train.cpu_bf16=false",  # the tiny models' losses on any CPU
            "train.epochs=1",
            "train.max_length=256",
            HF,
            *extra,
        ],
    )


@pytest.mark.timeout(600)
def test_one_iteration_end_to_end(tiny_solver, twelves, twelves_dev, tmp_path, ray_session, capsys):
    run_dir = tmp_path / "run"
    cfg = tiny_run_config(
        tiny_solver, run_dir, f"data.train={twelves}", f"data.eval.arith={twelves_dev}", "eval.refine=true", *VLLM
    )
    driver.run_experiment(cfg)

    metrics = read_metrics(run_dir)
    assert metrics[0]["policy"] == 0 and set(metrics[0]["eval"]) == set(metrics[0]["executable"]) == {"arith"}
    summary = metrics[1]
    assert summary["iteration"] == 1 and summary["inputs"] == 6
    assert set(summary["seconds"]) == {"explore", "refine", "select", "train", "handoff", "eval"}
    assert summary["seconds"]["handoff"] > 0  # the in-place load
    assert all(summary["tokens"][stage] > 0 for stage in ("explore", "refine", "eval"))
    # Inference-time self-refine is scored beside the plain accuracy.
    assert set(summary["eval_refine"]) == {"arith"} and 0.0 <= summary["eval_refine"]["arith"] <= 1.0
    # Δlog p is measured over U2 pairs under the new policy whenever there are pairs.
    assert (summary["delta_logp"] is None) == (summary["u2"] == 0)
    assert (run_dir / "config.yaml").is_file()
    # Every policy's eval answers, one line per eval problem, whose rewards make its accuracy.
    for policy, line in enumerate(metrics):
        rows = (run_dir / "answers" / f"policy-{policy}.jsonl").read_text().splitlines()
        answered = [json.loads(row) for row in rows]
        assert len(answered) == 4 and all(row["eval_set"] == "arith" for row in answered)  # data.eval_size
        assert sum(row["reward"] for row in answered) / len(answered) == line["eval"]["arith"]

    db = sqlite3.connect(run_dir / "pool.sqlite")
    sources = dict(db.execute("SELECT source, COUNT(*) FROM trajectories GROUP BY source").fetchall())
    assert sources == {"explore": 6 * 2, "refine": 6 * 2}  # K per input, one refinement each
    orphans = db.execute("SELECT COUNT(*) FROM trajectories WHERE source = 'refine' AND parent_id IS NULL").fetchone()[
        0
    ]
    assert orphans == 0
    in_pool = db.execute("SELECT COUNT(*) FROM trajectories WHERE in_pool = 1").fetchone()[0]
    assert 1 <= in_pool <= 6 * 2 and summary["pool_size"] == in_pool
    assert {row[0] for row in db.execute("SELECT stage FROM stages WHERE iteration = 0")} == {"select", "train", "eval"}

    # The solver model answers 12 often: there were positives, so the 2-worker trainer ran.
    assert summary["u1"] >= 1 and isinstance(summary["train_loss"], float)
    (detail,) = db.execute("SELECT detail FROM stages WHERE iteration = 0 AND stage = 'train'").fetchone()
    checkpoint = Path(json.loads(detail)["checkpoint"])
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / TRAINED_MARKER).is_file()
    # A plain transformers checkpoint: AutoModelForCausalLM loads it and generates with it.
    loaded, tokenizer = AutoModelForCausalLM.from_pretrained(checkpoint), AutoTokenizer.from_pretrained(checkpoint)
    prompt = tokenizer("Question: 1 + 1?\n", return_tensors="pt")
    assert loaded.generate(**prompt, max_new_tokens=4, do_sample=False).shape[1] > prompt["input_ids"].shape[1]
    exported = (run_dir / "iter-0" / "train.jsonl").read_text().splitlines()
    assert len(exported) == summary["u1"] + summary["u2"]

    # RUN_DIR/best: the policy, base model included, that scored highest on the first eval set.
    best = summary["best"]
    assert best == {**best_policy(metrics), "model": best["model"]} and best["eval_set"] == "arith"
    assert best["model"] == (str(checkpoint) if best["policy"] == 1 else tiny_solver)
    assert os.readlink(run_dir / "best") == best["model"]
    assert newest_checkpoint(run_dir) == str(checkpoint)

    # `envisions eval RUN_DIR DATASET` evaluates that policy, and says so. On the hf backend: a
    # third vLLM engine start would prove nothing the handoff has not.
    capsys.readouterr()
    argv = ["eval", str(run_dir), twelves, "--size", "4", "--config", str(run_dir / "config.yaml"), HF]
    assert main([*argv, "--answers", str(tmp_path / "a.jsonl")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{run_dir}: evaluating its best policy, {policy_name(best['policy'])} (arith " in "\n".join(out)
    scores = json.loads(next(line for line in reversed(out) if line.startswith("{")))
    assert scores["policy"] == best
    assert list(scores["accuracy"]) == [twelves] and 0.0 <= scores["accuracy"][twelves] <= 1.0
    assert 0.0 <= scores["executable"][twelves] <= 1.0
    answered = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [row["id"] for row in answered] == [f"t{i}" for i in range(4)]
    assert [row["expected"] for row in answered] == ["13", "12", "12", "12"]  # write_twelves: every 4th is 13
    assert sum(row["reward"] for row in answered) / 4 == scores["accuracy"][twelves]


@pytest.mark.timeout(600)
def test_resume_after_a_crash_redoes_nothing_already_executed(
    tiny_solver, twelves, twelves_dev, tmp_path, ray_session, monkeypatch
):
    run_dir = tmp_path / "run"
    cfg = tiny_run_config(
        tiny_solver, run_dir, f"data.train={twelves}", f"data.eval.arith={twelves_dev}", "algorithm.refine=false"
    )

    def crash(*args, **kwargs):
        raise RuntimeError("node lost during training")

    slow_stream = stages.stream

    def stream_slowly(*args, **kwargs):  # the first driver's explore takes 3 s more
        time.sleep(EXPLORE_DELAY_S)
        return slow_stream(*args, **kwargs)

    monkeypatch.setattr(training, "train", crash)
    monkeypatch.setattr(stages, "stream", stream_slowly)
    with pytest.raises(RuntimeError, match="node lost"):
        driver.run_experiment(cfg)
    assert os.readlink(run_dir / "best") == tiny_solver  # only the base model evaluated so far
    db = sqlite3.connect(run_dir / "pool.sqlite")
    explored_before = db.execute("SELECT id, solution FROM trajectories ORDER BY id").fetchall()
    assert len(explored_before) == 6 * 2  # everything executed before the crash is kept

    monkeypatch.undo()
    with pytest.raises(Exception, match="already holds a run"):
        driver.run_experiment(cfg)  # a fresh run must not overwrite it
    jobs = record_training(monkeypatch)
    driver.run_experiment(load_config(run_dir / "config.yaml"), resume=True)

    assert db.execute("SELECT id, solution FROM trajectories ORDER BY id").fetchall() == explored_before
    metrics = read_metrics(run_dir)
    assert [line["policy"] for line in metrics] == [0, 1]  # the base eval was not repeated
    assert metrics[1]["best"] == {**best_policy(metrics), "model": tiny_solver}  # the stub trainer gave back the base
    assert os.readlink(run_dir / "best") == tiny_solver
    assert metrics[1]["u1"] >= 1 and metrics[1]["train_loss"] is not None
    [(examples, _)] = jobs  # the resumed driver trained once, on U1 and U2 from the kept explorations
    assert len(examples) == metrics[1]["u1"] + metrics[1]["u2"]
    # The iteration's seconds add the first driver's explore to the resumed one's train and eval.
    assert metrics[1]["seconds"]["explore"] >= EXPLORE_DELAY_S and metrics[1]["seconds"]["train"] > 0


@pytest.mark.timeout(600)
def test_ablation_switches_shape_the_training_set(
    tiny_solver, twelves, twelves_dev, tmp_path, ray_session, monkeypatch
):
    jobs = record_training(monkeypatch)
    stopped_before_training = []  # generator.stop_while_training rides along: the generators give way to the trainer
    stop = GeneratorGroup.stop
    monkeypatch.setattr(GeneratorGroup, "stop", lambda group: (stopped_before_training.append(len(jobs)), stop(group)))
    run_dir = tmp_path / "ablated"
    switches = ["algorithm.l2=false", "algorithm.rank=random", "algorithm.memory=current_iteration"]
    driver.run_experiment(
        tiny_run_config(
            tiny_solver,
            run_dir,
            f"data.train={twelves}",
            f"data.eval.arith={twelves_dev}",
            "generator.stop_while_training=true",
            *switches,
        )
    )
    summary = read_metrics(run_dir)[1]
    # Stopped once before the one training job (and again at the run's end); evaluated after it on a new one.
    assert stopped_before_training[0] == 0 and len(jobs) == 1 and "arith" in summary["eval"]
    exported = [json.loads(line) for line in (run_dir / "iter-0" / "train.jsonl").read_text().splitlines()]
    assert summary["u2"] == 0 and exported and {e["kind"] for e in exported} == {"l1"}
    assert all(e["example_id"] for e in exported)  # each row names its input (the report's U1 per task)
    # No pair is built, so no positive is held back for one: every pooled positive is in U1 (N1 = 10).
    with sqlite3.connect(run_dir / "pool.sqlite") as db:
        (positives,) = db.execute("SELECT COUNT(*) FROM trajectories WHERE in_pool = 1 AND reward = 1").fetchone()
    assert summary["u1"] == positives
    # The trainer got exactly what was exported: U1, and no L2 example.
    [(examples, dpo_beta)] = jobs
    assert dpo_beta is None and [(e.target, e.kind) for e in examples] == [(e["target"], e["kind"]) for e in exported]


@pytest.mark.timeout(600)
def test_sft_dpo_trains_sft_then_dpo_on_pairs_from_the_pool(tiny_solver, twelves, twelves_dev, tmp_path, ray_session):
    run_dir = tmp_path / "sft_dpo"
    # Sampled at 0.8, the solver sometimes misses an input it otherwise solves: a positive and a negative to pair.
    driver.run_experiment(
        tiny_run_config(
            tiny_solver,
            run_dir,
            f"data.train={twelves}",
            f"data.eval.arith={twelves_dev}",
            "method=sft_dpo",
            "algorithm.k=4",
            "generator.temperature=0.8",
        )
    )
    summary = read_metrics(run_dir)[1]
    assert summary["method"] == "sft_dpo" and summary["u2"] == 0 and summary["pairs"] >= 1
    assert "refine" not in summary["seconds"]  # baselines do not refine
    assert isinstance(summary["train_loss"], float) and isinstance(summary["dpo_loss"], float)
    exported = [json.loads(line) for line in (run_dir / "iter-0" / "train.jsonl").read_text().splitlines()]
    assert (
        sum("chosen" in e for e in exported) == summary["pairs"]
        and sum("target" in e for e in exported) == summary["u1"]
    )
    # DPO started from the SFT checkpoint; the policy the run continues with is DPO's.
    assert Path(newest_checkpoint(run_dir)).parent.name == "iter-0-dpo"
    assert list((run_dir / "checkpoints").glob("iter-0/*/model.safetensors"))


@pytest.mark.timeout(600)
def test_self_rewarding_trains_dpo_on_the_judge_s_best_against_worst(
    tiny_solver, twelves, twelves_dev, tmp_path, ray_session, monkeypatch
):
    # The tiny model's replies are noise that rarely parses; a fixed judge that scores an input's
    # three candidates 1, 4 and 2 makes a (best, worst) pair of each input certain.
    judged, scores = [], itertools.cycle([1, 4, 2])
    monkeypatch.setattr(methods, "parse_score", lambda reply, max_score: judged.append(reply) or next(scores))
    jobs = record_training(monkeypatch)
    run_dir = tmp_path / "self_rewarding"
    driver.run_experiment(
        tiny_run_config(
            tiny_solver,
            run_dir,
            f"data.train={twelves}",
            f"data.eval.arith={twelves_dev}",
            "method=self_rewarding",
            "algorithm.k=3",
        )
    )
    summary = read_metrics(run_dir)[1]
    assert len(judged) == 6 * 3  # every candidate judged once
    assert summary["seconds"]["judge"] > 0 and summary["tokens"]["judge"] > 0
    assert summary["pairs"] == 6 and summary["train_loss"] is None and isinstance(summary["dpo_loss"], float)
    # One DPO job and no SFT: a pair per input, its best-judged candidate against its worst.
    [(pairs, dpo_beta)] = jobs
    assert dpo_beta is not None and len({pair.prompt for pair in pairs}) == len(pairs) == 6


@pytest.mark.timeout(600)
def test_distill_keeps_the_teacher_s_correct_answers(
    tiny_model, twelves, twelves_dev, tmp_path, ray_session, monkeypatch
):
    jobs = record_training(monkeypatch)
    answers = {json.loads(line)["id"]: json.loads(line)["answer"] for line in Path(twelves).read_text().splitlines()}
    teacher = tmp_path / "teacher.jsonl"
    # Right for t0..t3, wrong for t4, nothing for the rest.
    records = [{"id": f"t{i}", "solution": f"def solution():\n    return {answers[f't{i}']}"} for i in range(4)]
    records.append({"id": "t4", "solution": "def solution():\n    return -1"})
    teacher.write_text("".join(json.dumps(r) + "\n" for r in records))
    run_dir = tmp_path / "distill"
    driver.run_experiment(
        tiny_run_config(
            tiny_model,
            run_dir,
            f"data.train={twelves}",
            f"data.eval.arith={twelves_dev}",
            "method=distill",
            f"distill.teacher_file={teacher}",
        )
    )
    metrics = read_metrics(run_dir)
    assert len(metrics) == 2  # distillation trains once
    with sqlite3.connect(run_dir / "pool.sqlite") as db:
        rows = db.execute("SELECT example_id, reward, source FROM trajectories ORDER BY example_id").fetchall()
    assert [(example, reward) for example, reward, _ in rows] == [
        ("t0", 1),
        ("t1", 1),
        ("t2", 1),
        ("t3", 1),
        ("t4", 0),
        ("t5", 0),
    ]
    assert (
        {source for *_, source in rows} == {"explore"}
        and metrics[1]["u1"] == 4
        and metrics[1]["tokens"]["explore"] == 0
    )
    # One job, on the teacher's four right answers (its wrong one is dropped).
    [(examples, dpo_beta)] = jobs
    assert dpo_beta is None and sorted(e.target for e in examples) == sorted(r["solution"] for r in records[:4])


@pytest.mark.timeout(600)
def test_few_shot_only_evaluates(tiny_model, twelves, twelves_dev, tmp_path, ray_session):
    run_dir = tmp_path / "few_shot"
    driver.run_experiment(
        tiny_run_config(
            tiny_model,
            run_dir,
            f"data.train={twelves}",
            f"data.eval.arith={twelves_dev}",
            "method=few_shot",
            "algorithm.few_shot=2",
        )
    )
    (line,) = read_metrics(run_dir)
    assert line["policy"] == 0 and set(line["eval"]) == {"arith"} and line["tokens"]["eval"] > 0
    assert not (run_dir / "checkpoints").exists()


def test_inside_a_ray_job_a_relative_run_dir_is_refused(tiny_model, tmp_path, monkeypatch):
    # A job runs in a temporary copy of its working_dir: a relative run directory would vanish with it.
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    with pytest.raises(UserError, match="run_dir 'runs/x' is relative"):
        plan(tiny_run_config(tiny_model, "runs/x"))
    assert str(tmp_path / "run") in plan(tiny_run_config(tiny_model, tmp_path / "run"))
