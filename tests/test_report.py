"""`envisions report`: a table per run and a real PNG plot."""

import json

import matplotlib.image
import pytest

from envisions_ray.cli import main
from envisions_ray.summary import format_summary


def write_run(run_dir, method, accuracies, held_out_accuracy=None):
    """A run directory as the driver leaves it: config.yaml and metrics.jsonl."""
    run_dir.mkdir(parents=True)
    held_out = "" if held_out_accuracy is None else "  held_out: [gsm8k]\n"
    (run_dir / "config.yaml").write_text(f"method: {method}\ndata:\n{held_out}")
    extra = {} if held_out_accuracy is None else {"gsm8k": held_out_accuracy}
    lines = [{"policy": 0, "eval": {"arith": accuracies[0], **extra}, "executable": {"arith": 0.5}}]
    for i, accuracy in enumerate(accuracies[1:], start=1):
        lines.append(
            {
                "iteration": i,
                "policy": i,
                "method": method,
                "inputs": 8,
                "explored": i + 2,
                "positives": 5,
                "unique_correct": 4 * i,
                "pool_size": 10 * i,
                "u1": 3,
                "u2": 1,
                "train_loss": 0.5 / i,
                "eval": {"arith": accuracy, **extra},
                "executable": {"arith": 0.5 + i / 10},
                "delta_logp": 1.5 * i,
                "ea": 0.1 * i,
                "stb": 0.9,
                "seconds": {"explore": 1.0, "train": 2.0},
            }
        )
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lines


def test_report_compares_runs_side_by_side_and_draws_every_figure(tmp_path, capsys):
    write_run(tmp_path / "sweep" / "ours", "envisions", [0.2, 0.3, 0.45], held_out_accuracy=0.1)
    write_run(tmp_path / "sweep" / "star", "star_env", [0.2, 0.25])
    assert main(["report", str(tmp_path / "sweep" / "ours"), str(tmp_path / "sweep" / "star")]) == 0
    out = capsys.readouterr().out
    # One row per run; the sets line up, the held-out one is marked, a run without it shows a dash.
    assert "| run | method | arith (held-in) | gsm8k (held-out) | average | EA | STB | unique correct |" in out
    assert "| ours | envisions | 45.0% | 10.0% | 27.5% | 0.20 | 0.90 | 8 |" in out
    assert "| star | star_env | 25.0% | – | 25.0% | 0.10 | 0.90 | 4 |" in out
    # The policy each run keeps as RUN_DIR/best, chosen on its first eval set, on every set.
    assert "| run | best | chosen on | arith (held-in) | gsm8k (held-out) |" in out
    assert "| ours | iter 2 | arith | 45.0% | 10.0% |" in out and "| star | iter 1 | arith | 25.0% | – |" in out
    # Then each run's iterations.
    assert "| iter 2 | 45.0% | 10.0% | – | – | 70% | – | 4 | – | 5 | 20 | 3 | 1 | 0.250 | +3.00 |" in out
    assert "## Grammar" not in out  # runs from before generator.grammar
    assert (tmp_path / "sweep" / "report.md").read_text().strip() in out
    for name in ("accuracy.png", "explored.png", "ea_stb.png", "delta_logp.png", "unique_correct.png", "wall_time.png"):
        image = matplotlib.image.imread(tmp_path / "sweep" / name)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0, name  # not a blank canvas


def test_report_names_the_runs_tensorboard_directory(tmp_path, capsys):
    write_run(tmp_path / "sweep" / "ours", "envisions", [0.2, 0.3])
    write_run(tmp_path / "sweep" / "star", "star_env", [0.2, 0.25])
    assert main(["report", str(tmp_path / "sweep" / "ours")]) == 0
    assert "TensorBoard" not in capsys.readouterr().out  # a run without event files
    for run in ("ours", "star"):
        (tmp_path / "sweep" / run / "tensorboard").mkdir()
    assert main(["report", str(tmp_path / "sweep" / "ours")]) == 0
    log_dir = tmp_path / "sweep" / "ours" / "tensorboard"
    assert f"TensorBoard: tensorboard --logdir {log_dir}\n" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "sweep")]) == 0  # several: their parent, which TensorBoard walks
    assert f"TensorBoard: tensorboard --logdir {tmp_path / 'sweep'}\n" in capsys.readouterr().out


def test_report_markdown_prints_the_tables_only_and_writes_nothing(tmp_path, capsys):
    write_run(tmp_path / "sweep" / "ours", "envisions", [0.2, 0.3])
    write_run(tmp_path / "sweep" / "star", "star_env", [0.2, 0.25])
    (tmp_path / "sweep" / "ours" / "tensorboard").mkdir()
    before = sorted(tmp_path.rglob("*"))
    assert main(["report", "--markdown", str(tmp_path / "sweep")]) == 0
    tables = capsys.readouterr().out
    assert sorted(tmp_path.rglob("*")) == before  # no report.md, no plots
    assert tables.startswith("## Final accuracy\n") and "written:" not in tables and "TensorBoard" not in tables
    assert main(["report", str(tmp_path / "sweep")]) == 0  # the same tables as report.md
    capsys.readouterr()
    assert tables == (tmp_path / "sweep" / "report.md").read_text()
    with pytest.raises(SystemExit):  # --markdown writes nothing, so there is no --out
        main(["report", "--markdown", "--out", str(tmp_path / "elsewhere"), str(tmp_path / "sweep")])


def test_report_of_one_run_goes_beside_it(tmp_path, capsys):
    write_run(tmp_path / "a", "few_shot", [0.2])
    assert main(["report", str(tmp_path / "a")]) == 0
    assert "| a | few_shot | 20.0% | 20.0% | – | – | – |" in capsys.readouterr().out
    assert (tmp_path / "a" / "accuracy.png").is_file() and (tmp_path / "a" / "report.md").is_file()


def test_a_sweeps_parent_directory_stands_for_its_runs(tmp_path, capsys):
    write_run(tmp_path / "sweep" / "star", "star_env", [0.2, 0.25])
    write_run(tmp_path / "sweep" / "ours", "envisions", [0.2, 0.3])
    (tmp_path / "sweep" / "notes").mkdir()  # not a run: left out
    assert main(["report", str(tmp_path / "sweep")]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| ours |", "| star |"))]
    assert [row.split(" | ")[1] for row in rows[:2]] == ["envisions", "star_env"]  # the runs, by name
    assert (tmp_path / "sweep" / "report.md").is_file()


def test_report_names_the_best_policy_never_one_worse_than_the_base_model(tmp_path, capsys):
    write_run(tmp_path / "worse", "envisions", [0.4, 0.3, 0.35])  # from before `best` was recorded
    lines = write_run(tmp_path / "peak", "envisions", [0.2, 0.5, 0.3])
    lines[-1]["best"] = {"policy": 1, "eval_set": "arith", "accuracy": 0.5, "model": "/ck/iter-0"}
    (tmp_path / "peak" / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["report", str(tmp_path / "worse"), str(tmp_path / "peak")]) == 0
    out = capsys.readouterr().out
    assert "| worse | base | arith | 40.0% |" in out and "| peak | iter 1 | arith | 50.0% |" in out


def test_report_on_a_non_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize(
    "line, needle",
    [
        (b'{"policy": 1, "eval": {"arith"', "not valid JSON"),
        (b"[0.3, 0.4]", "a record must be a JSON object"),
        (b'{"policy": 1}', "not a metrics line: it needs 'policy' (an integer) and 'eval' (accuracy by eval set)"),
        (b'{"policy": "iter 1", "eval": {}}', "not a metrics line"),
        (b'{"policy": 1, "eval": {"arith": "30%"}}', "not a metrics line"),
        (b'{"policy": 1, "eval": {"arith": 0.3}, "note": "caf\xe9"}', "not UTF-8"),
    ],
)
def test_report_on_a_malformed_metrics_line_is_one_line_naming_file_and_line(tmp_path, capsys, line, needle):
    write_run(tmp_path / "a", "envisions", [0.2, 0.3])
    metrics = tmp_path / "a" / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes() + line + b"\n")
    assert main(["report", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"envisions: error: {metrics}:3: {needle}")


def test_summary_line_names_every_quantity():
    summary = {
        "iteration": 2,
        "policy": 2,
        "inputs": 64,
        "explored": 20,
        "positives": 31,
        "unique_correct": 25,
        "pool_size": 200,
        "u1": 30,
        "u2": 9,
        "train_loss": 0.4321,
        "dpo_loss": 0.69,
        "eval": {"arith": 0.375},
        "ci95": {"arith": [0.2, 0.6]},
        "parsed": {"arith": 0.9},
        "executable": {"arith": 0.8},
        "eval_refine": {"arith": 0.4},
        "delta_logp": 2.345,
        "seconds": {"explore": 61.2, "train": 90.0},
        "best": {"policy": 1, "eval_set": "arith", "accuracy": 0.4, "model": "/ck/iter-0"},
    }
    text = format_summary(summary)
    for part in [
        "iter 2",
        "explored 20/64",
        "positives 31",
        "unique-correct 25",
        "pool 200",
        "|U1| 30",
        "|U2| 9",
        "loss 0.432 dpo-loss 0.690",
        "Δlogp +2.35",
        "arith=37.5% [20.0%, 60.0%] (parsed 90% ran 80%) refined arith=40.0%",
        "best iter 1 (arith=40.0%)",
        "explore=61s",
        "train=90s",
    ]:
        assert part in text


def test_report_sets_runs_with_and_without_the_grammar_side_by_side(tmp_path, capsys):
    for name, grammar, parsed in [("free", False, [0.0, 0.1]), ("held", True, [0.95, 1.0])]:
        lines = write_run(tmp_path / name, "envisions", [0.1, 0.3])
        for line, share in zip(lines, parsed):
            line.update(grammar=grammar, parsed={"arith": share})
        lines[-1]["generated_parsed"] = share
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["report", str(tmp_path / "free"), str(tmp_path / "held")]) == 0
    out = capsys.readouterr().out
    assert (
        "| run | grammar | explored parsed | arith base parsed | arith base | arith final parsed | arith final |" in out
    )
    assert "| free | off | 10.0% | 0.0% | 10.0% | 10.0% | 30.0% |" in out
    assert "| held | on | 100.0% | 95.0% | 10.0% | 100.0% | 30.0% |" in out


def test_the_accuracy_plot_draws_each_policys_95_percent_interval():
    from envisions_ray.report import RunRecord, accuracy_points

    lines = [
        {"policy": 0, "eval": {"dev": 0.10}, "ci95": {"dev": [0.05, 0.20]}},
        {"iteration": 1, "policy": 1, "eval": {"dev": 0.30}, "ci95": {"dev": [0.25, 0.40]}},
    ]
    policies, accuracies, errors = accuracy_points(RunRecord("r", "envisions", frozenset(), lines), "dev")
    assert policies == [0, 1] and accuracies == pytest.approx([10.0, 30.0])
    assert errors == [pytest.approx([5.0, 5.0]), pytest.approx([10.0, 10.0])]  # down, up in points
    # Metrics from before the intervals: the points, no bars.
    older = [{key: value for key, value in line.items() if key != "ci95"} for line in lines]
    assert accuracy_points(RunRecord("r", "envisions", frozenset(), older), "dev")[2] is None


ITERATION_TIMES = {
    "policy": 1,
    "iteration": 1,
    "seconds": {
        "explore": 100.0,
        "refine": 50.0,
        "select": 2.0,
        "envisions": 3.0,
        "train": 200.0,
        "handoff": 4.0,
        "eval": 300.0,
    },
    "generation": {
        "explore": {"tokens": 800, "prompt_tokens": 4000, "cached_prompt_tokens": 1000, "seconds": 60.0, "answers": 40},
        "refine": {"tokens": 400, "prompt_tokens": 2000, "cached_prompt_tokens": 0, "seconds": 30.0, "answers": 40},
        "eval": {"tokens": 300, "prompt_tokens": 2000, "cached_prompt_tokens": 1000, "seconds": 210.0, "answers": 20},
    },
    "env_events": {"starts": 3, "crashes": 1, "restarts": 1, "peak_processes": 12},
}


def test_wall_time_splits_into_generation_execution_training_handoff_eval_and_the_rest():
    from envisions_ray.report import wall_time_parts

    # Exploring and refining took 150 s, 90 of them generating: executions outlasted it by 60.
    assert wall_time_parts(ITERATION_TIMES) == {
        "generate": 90.0,
        "execute": 60.0,
        "train": 200.0,
        "handoff": 4.0,
        "eval": 300.0,
        "other": 5.0,  # select and the method's examples
    }
    assert wall_time_parts({"policy": 0, "seconds": {"eval": 42.0}})["eval"] == 42.0  # the base model's line


def test_speed_table_gives_rates_per_iteration_and_the_environment_events(tmp_path):
    from envisions_ray.report import RunRecord, speed_table

    table = speed_table(RunRecord("web", "envisions", frozenset(), [ITERATION_TIMES]))
    # 100 episodes in the 450 s of explore, refine and eval; 1,500 tokens and 8,000 prompt tokens
    # (2,000 of them cached) in 300 s of generation.
    assert "| iter 1 | 100 | 0.2 | 5.0 | 26.7 | 25% | 90 | 60 | 200 | 4 | 300 | 5 |" in table
    assert "crashes 1, peak_processes 12, restarts 1, starts 3 |" in table


def test_report_gives_success_per_task_for_every_iteration_and_why_the_weakest_failed(tmp_path, capsys, monkeypatch):
    import envisions_ray.report

    run_dir = tmp_path / "web"
    lines = write_run(run_dir, "envisions", [0.2, 0.3, 0.4])
    scores = [{"a": 0.5, "b": 0.0, "c": 1.0}, {"a": 0.5, "b": 0.5, "c": 1.0}, {"a": 0.0, "b": 0.5, "c": 1.0}]
    for line, per_task in zip(lines, scores):
        line["per_task"] = {"miniwob": per_task}
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    answers = [
        ("a@1", 0, "parse error: line 1: 'go' is not an action", "go"),
        ("a@2", 0, "line 1: no element on the page matches text='OK'", 'click_text("OK")'),
        ("b@1", 0, "the program ended before the task did", "click(ref=3)"),
        ("b@2", 1, None, "click(ref=4)"),
        ("c@1", 1, None, "click(ref=5)"),
    ]
    rows = [
        {"eval_set": "miniwob", "id": i, "expected": "", "solution": s, "reward": r, "output": str(r), "error": e}
        for i, r, e, s in answers
    ]
    (run_dir / "answers").mkdir()
    (run_dir / "answers" / "policy-2.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    monkeypatch.setattr(envisions_ray.report, "FAILURE_TASKS", 2)  # the two weakest: a (0 %), b (50 %)
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "| task | web base | web iter 1 | web iter 2 |" in out
    assert "| b | 0.0% | 50.0% | 50.0% |" in out
    assert "## Why web iter 2 failed on its 2 weakest tasks: miniwob" in out
    assert "| a | 1 | 1 | 0 | 0 | 0 | 0 |" in out and "| b | 0 | 0 | 1 | 0 | 0 | 0 |" in out
    assert "| **all** | 1 | 1 | 1 | 0 | 0 | 0 |" in out
    assert "Confusion per policy" not in out  # episodes have no labels
    assert "| no element | a@2 | `click_text(\"OK\")` | line 1: no element on the page matches text='OK' |" in out
    assert "| c |" not in out.split("## Why")[1].split("##")[0]  # the strongest task is left out


@pytest.mark.parametrize(
    "reward, error, cause",
    [
        (1, None, None),
        (0, "parse error: line 2: press takes one quoted string", "parse error"),
        (0, "line 1: no element on the page matches text='Submit'", "no element"),
        (0, "line 1: [4] has no option 'Mozambine'", "no element"),
        (0, "line 2: select needs a <select>, and [3] is div", "no element"),
        (0, "the program ended before the task did", "ended early"),
        (0, None, "wrong answer"),  # the task ended, with no reward
        (0, "line 3: the task ended before text='OK' appeared", "wrong answer"),
        (0, "the browser crashed twice: WebDriverException", "browser error"),
        (0, "the episode ran past 20.0s", "too long"),
        (0, "the program types 2000 characters, more than 1000", "too long"),
    ],
)
def test_each_web_failure_has_one_cause(reward, error, cause):
    from envisions_ray.envs.web_failures import failure_cause

    assert failure_cause(reward, error) == cause


def training_table_of(run_dir, capsys) -> str:
    """The markdown report's training-data table of the run's first iteration."""
    assert main(["report", "--markdown", str(run_dir)]) == 0
    out = capsys.readouterr().out
    return out.split("## Training data per task: web iter 1 (explored by base)\n\n")[1].split("\n\n##")[0]


def test_report_gives_each_iterations_training_data_per_task_tasks_without_positives_first(tmp_path, capsys):
    from envisions_ray.actors.pool import CandidatePool
    from envisions_ray.types import Trajectory

    run_dir = tmp_path / "web"
    lines = write_run(run_dir, "envisions", [0.2, 0.3])
    for line, per_task in zip(lines, [{"a": 0.5, "b": 0.0, "c": 0.0}, {"a": 1.0, "b": 0.5, "c": 0.0}]):
        line["per_task"] = {"miniwob": per_task}
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    pool = CandidatePool(str(run_dir / "pool.sqlite"))
    explored = [("a@1", "click(ref=1)", 1), ("a@1", "click(ref=2)", 0), ("a@2", "click(ref=1)", 1)]
    explored += [("b@1", "click(ref=7)", 1), ("c@1", "click(ref=3)", 0)]
    pool.record([Trajectory(x, s, r, 0.0, 0, "explore", sample=n) for n, (x, s, r) in enumerate(explored)])
    pool.select(0)
    pool.close()
    rows = [("a@1", "click(ref=1)", "l1"), ("a@2", "click(ref=1)", "l1"), ("b@1", "click(ref=7)", "l1")]
    rows += [("a@1", "click(ref=1)", "l2")]
    (run_dir / "iter-0").mkdir()
    train_file = run_dir / "iter-0" / "train.jsonl"
    train_file.write_text(
        "".join(json.dumps({"prompt": "p", "target": t, "kind": kind, "example_id": x}) + "\n" for x, t, kind in rows)
    )
    table = training_table_of(run_dir, capsys)
    assert table.splitlines() == [
        "1 of the 3 tasks had no positive.",
        "",
        "| task | inputs explored | samples | positives | inputs with a positive | U1 | U2 "
        "| miniwob before | miniwob after |",
        "|---|---|---|---|---|---|---|---|---|",
        "| c | 1 | 1 | 0 | 0 | 0 | 0 | 0.0% | 0.0% |",
        "| b | 1 | 1 | 1 | 1 | 1 | 0 | 0.0% | 50.0% |",
        "| a | 2 | 3 | 2 | 2 | 2 | 1 | 50.0% | 100.0% |",
    ]
    # A train.jsonl from before rows named their input: said so, and no U1 or U2 columns.
    train_file.write_text(json.dumps({"prompt": "p", "target": "click(ref=1)", "kind": "l1"}) + "\n")
    table = training_table_of(run_dir, capsys)
    assert table.splitlines() == [
        "1 of the 3 tasks had no positive.",
        "",
        "Its train.jsonl predates per-example ids: no U1 or U2 per task.",
        "",
        "| task | inputs explored | samples | positives | inputs with a positive | miniwob before | miniwob after |",
        "|---|---|---|---|---|---|---|",
        "| c | 1 | 1 | 0 | 0 | 0.0% | 0.0% |",
        "| b | 1 | 1 | 1 | 1 | 0.0% | 50.0% |",
        "| a | 2 | 3 | 2 | 2 | 50.0% | 100.0% |",
    ]
