"""A web run through Ray: new seeds every iteration, browsers in executor actors, success per task."""

import json
import os
import re
import signal
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from envisions_ray import driver
from envisions_ray.config import load_config
from envisions_ray.envs.web_browser import DIRECTORY_PREFIX
from envisions_ray.errors import UserError
from envisions_ray.leftovers import processes_under
from envisions_ray.report import read_metrics, report

TASKS = "click-test-2,click-button"


def web_config(tiny_model, run_dir, *extra):
    return load_config(
        "conf/web_quickstart.yaml",
        [
            f"run_dir={run_dir}",
            f"model.path={tiny_model}",
            "model.dtype=float32",  # the tiny model's answers on any CPU, with or without native bf16
            "generator.num_cpus=1",
            "generator.max_new_tokens=16",
            "eval.max_new_tokens=16",
            f"data.train=tasks:{TASKS}:0",
            "data.train_size=2",
            f"data.eval.miniwob=tasks:{TASKS}:100000",
            "data.eval_size=2",
            "algorithm.k=2",
            "algorithm.iterations=2",
            "algorithm.few_shot=0",
            "env.num_executors=1",
            "env.max_executors=2",
            "train.max_length=256",
            "generator.backend=hf",  # starts at once; tests/test_vllm_engine.py runs the vLLM engine
            "generator.grammar=false",  # free text: the random model's programs fail, and say why
            *extra,
        ],
    )


def kill_the_first_browser(killed: list[int], before: set[Path]) -> None:
    """Wait for a browser of this run to start, let it work a moment, and SIGKILL it."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not killed:
        for directory in set(Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}*")) - before:
            for pid in processes_under(str(directory)):
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:  # gone meanwhile
                    continue
                if b"chromium" in command and b"--type=" not in command:
                    time.sleep(0.5)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:  # closed meanwhile (a task switch): wait for the next one
                        continue
                    killed.append(pid)
                    return
        time.sleep(0.1)


@pytest.mark.timeout(600)
def test_each_iteration_meets_new_seeds_and_eval_scores_every_task(tiny_model, tmp_path, ray_session):
    run_dir = tmp_path / "web"
    killed: list[int] = []
    before = set(Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}*"))
    killer = threading.Thread(target=kill_the_first_browser, args=(killed, before))
    killer.start()
    driver.run_experiment(web_config(tiny_model, run_dir))  # a browser dies mid-run: no episode may be lost
    killer.join()
    assert killed
    assert (
        set(Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}*")) - before == set()
    )  # every browser quit at the end
    with sqlite3.connect(run_dir / "pool.sqlite") as db:
        rows = db.execute("SELECT iteration, example_id, error FROM trajectories WHERE source = 'explore'").fetchall()
    seen = {(iteration, example) for iteration, example, _ in rows}
    assert seen == {
        (0, "click-test-2@0"),
        (0, "click-test-2@1"),
        (0, "click-button@0"),
        (0, "click-button@1"),
        (1, "click-test-2@50"),
        (1, "click-test-2@51"),
        (1, "click-button@50"),
        (1, "click-button@51"),
    }
    assert len(rows) == 16  # K = 2 candidates per input, each run in a browser
    assert all(error for *_, error in rows)  # the random model writes no valid program; each says why
    metrics = read_metrics(run_dir)
    assert [line["policy"] for line in metrics] == [0, 1, 2]
    # Every episode counted once, each prompt's tokens once (the hf backend keeps no prefix cache).
    assert [line["generation"]["explore"]["answers"] for line in metrics[1:]] == [8, 8]
    assert all(line["generation"]["eval"]["answers"] == 4 for line in metrics)
    assert all(line["generation"]["eval"]["prompt_tokens"] > 0 for line in metrics)
    assert all(used["cached_prompt_tokens"] == 0 for line in metrics for used in line["generation"].values())
    # Browsers: at least one per task, the killed one replaced; the peak saw chromedriver,
    # Chromium and its helpers at once.
    events = metrics[-1]["env_events"]
    assert events["starts"] >= 2 and events.get("restarts", 0) <= events.get("crashes", 0)
    assert events["peak_processes"] >= 3
    assert all(set(line["per_task"]["miniwob"]) == {"click-test-2", "click-button"} for line in metrics)
    text = report([run_dir])
    assert (
        "## Success per task: miniwob" in text
        and "| click-button | 0.0% |" in text
        and "| **average** | 0.0% |" in text
    )


def test_web_inputs_are_checked_before_a_run_starts(tiny_model, tmp_path):
    with pytest.raises(UserError, match="data.seed_stride \\(1\\) is below data.train_size \\(2\\)"):
        driver.prepare(web_config(tiny_model, tmp_path / "a", "data.seed_stride=1"), convert_model=False)
    with pytest.raises(UserError, match="eval set 'miniwob' shares inputs with training \\(first: click-button@50\\)"):
        driver.prepare(
            web_config(tiny_model, tmp_path / "b", f"data.eval.miniwob=tasks:{TASKS}:50"), convert_model=False
        )
    with pytest.raises(
        UserError, match="has 1 demonstration\\(s\\) for task 'click-test-2', fewer than algorithm.few_shot \\(2\\)"
    ):
        driver.prepare(web_config(tiny_model, tmp_path / "c", "algorithm.few_shot=2"), convert_model=False)


@pytest.mark.parametrize("config", ["conf/web_quickstart.yaml", "conf/web_miniwob_cpu.yaml", "conf/web_miniwob.yaml"])
def test_shipped_web_configs_pass_the_input_checks(config, tmp_path):
    run = driver.prepare(load_config(config, [f"run_dir={tmp_path / 'run'}"]), convert_model=False)
    [eval_set] = run.eval_sets.values()  # the 44-task configs' dev seeds, the quickstart's own
    assert {x.meta["task"] for x in run.train_set} == {x.meta["task"] for x in eval_set}


def test_the_44_task_configs_choose_on_dev_seeds_apart_from_the_report_seeds(tmp_path):
    report_seeds = range(100000, 100030)
    for config in ("conf/web_miniwob_cpu.yaml", "conf/web_miniwob.yaml"):
        run = driver.prepare(load_config(config, [f"run_dir={tmp_path / 'run'}"]), convert_model=False)
        [dev] = run.eval_sets.values()
        dev_seeds = {x.meta["seed"] for x in dev}
        assert not dev_seeds & set(report_seeds)
        assert not dev_seeds & {x.meta["seed"] for x in run.train_set}


@pytest.mark.timeout(300)
def test_envisions_eval_prints_success_per_task(tiny_model, ray_session, capsys):
    from envisions_ray.cli import main

    code = main(
        [
            "eval",
            tiny_model,
            f"tasks:{TASKS}:100000",
            "--size",
            "2",
            "--shots",
            "0",
            "--config",
            "conf/web_quickstart.yaml",
            "generator.num_cpus=1",
            "eval.max_new_tokens=8",
            "env.num_executors=1",
            "generator.backend=hf",
            "generator.grammar=false",
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    table = [line for line in out if line.startswith("|")]
    assert table[0] == f"| task | {tiny_model} |" and table[2:] == [
        "| click-test-2 | 0.0% |",
        "| click-button | 0.0% |",
        "| **average** | 0.0% |",
    ]
    # 0 of 4: the Wilson interval's upper end is z^2 / (n + z^2) = 3.8415 / 7.8415.
    assert out[-2].startswith(f"tasks:{TASKS}:100000: accuracy 0.0% [0.0%, 49.0%] (95 % Wilson) on 4 problems;")
    assert out[-2].endswith("0% from the prefix cache")  # hf keeps none
    assert json.loads(out[-1])["per_task"] == {f"tasks:{TASKS}:100000": {"click-test-2": 0.0, "click-button": 0.0}}


# Programs of one click each, short enough that 16 tokens of the random model always finish one,
# on refs these two tasks' pages do not have: every program parses and fails, so nothing trains.
ONE_CLICK = 'root ::= "click(ref=9" [0-9] ")"'


@pytest.mark.timeout(600)
def test_the_grammar_holds_exploration_refinement_and_evaluation(tiny_model, tmp_path, ray_session):
    prompts = yaml.safe_load(Path("conf/prompts/web.yaml").read_text())
    prompt_file = tmp_path / "web.yaml"
    prompt_file.write_text(yaml.safe_dump({**prompts, "grammar": ONE_CLICK}))
    run_dir = tmp_path / "run"
    cfg = web_config(
        tiny_model,
        run_dir,
        "generator.grammar=true",
        f"env.prompt_file={prompt_file}",
        "algorithm.iterations=1",
        "algorithm.refine_from_iteration=0",
    )
    driver.run_experiment(cfg)
    with sqlite3.connect(run_dir / "pool.sqlite") as db:
        rows = db.execute("SELECT source, solution, error FROM trajectories").fetchall()
    assert {source for source, *_ in rows} == {"explore", "refine"}
    for _, solution, error in rows:
        assert re.fullmatch(r"click\(ref=9[0-9]\)", solution), solution
        assert error and not error.startswith("parse error"), error  # it ran, and found no such element
    base, first = read_metrics(run_dir)
    assert base["grammar"] is first["grammar"] is True
    assert base["parsed"] == first["parsed"] == {"miniwob": 1.0} and first["generated_parsed"] == 1.0
    assert first["generated_executable"] == 0.0 and first["train_loss"] is None
