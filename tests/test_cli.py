"""Bad input gives one line on stderr and exit code 2, and nothing is written; `exec` and `--dry-run`."""

import json
import os
import subprocess
import sys

import pytest

from envisions_ray.cli import main
from envisions_ray.errors import UserError
from envisions_ray.run_lock import claimed_run_dir

QUICKSTART = "conf/math_quickstart.yaml"


def run_envisions(*argv):
    """The CLI as its own process, as users meet it: in-process, Ray log lines forwarded from
    other tests' actors can land on this process's stderr at any moment."""
    done = subprocess.run(
        [sys.executable, "-m", "envisions_ray.cli", *argv], capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stdout, done.stderr


def assert_one_line_error(code, err, *needles):
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("envisions: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["algorithm.itrations=2"], ["algorithm.itrations", "algorithm.iterations"]),
        (["algorithm.k=many"], ["algorithm.k"]),
        (["data.train=/nonexistent/train.jsonl"], ["dataset not found", "/nonexistent/train.jsonl"]),
        (["model.path=/nonexistent/model"], ["model not found", "/nonexistent/model"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, overrides, needles):
    run_dir = tmp_path / "run"
    code, _, err = run_envisions("run", QUICKSTART, f"run_dir={run_dir}", *overrides)
    assert_one_line_error(code, err, *needles)
    assert not run_dir.exists()


def test_bad_input_is_refused_before_the_heavy_libraries_load(tmp_path):
    # torch, Ray Train, xgrammar and scipy took 7.5 s of a refusal's 10 s to import on 2 cores.
    probe = (
        "import sys; from envisions_ray.cli import main; code = main(sys.argv[1:]); "
        "print(code, sorted({'torch', 'ray.train', 'xgrammar', 'scipy'} & set(sys.modules)))"
    )
    argv = ["run", QUICKSTART, f"run_dir={tmp_path / 'run'}", "data.train=/nonexistent/train.jsonl"]
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
    assert done.stdout.splitlines() == ["2 []"] and "dataset not found" in done.stderr


def test_bad_dataset_line_names_file_and_line(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\nnot json\n')
    code, _, err = run_envisions("run", QUICKSTART, f"run_dir={tmp_path / 'run'}", f"data.train={data}")
    assert_one_line_error(code, err, f"{data}:2")
    assert not (tmp_path / "run").exists()


def test_an_answers_file_that_cannot_be_written_is_refused_before_the_eval(tmp_path):
    answers = tmp_path / "missing" / "answers.jsonl"
    code, _, err = run_envisions("eval", "smollm2", "builtin:arith:eval", "--answers", str(answers))
    assert_one_line_error(code, err, f"--answers {answers}")
    assert not answers.parent.exists()


def test_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = run_envisions("run", QUICKSTART, f"run_dir={blocker / 'run'}")
    assert_one_line_error(code, err, "not writable")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="algorithm.itrations"):
        main(["--debug", "run", QUICKSTART, f"run_dir={tmp_path}", "algorithm.itrations=2"])


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    code, out, _ = run_envisions("run", QUICKSTART, f"run_dir={run_dir}", "--dry-run")
    assert code == 0
    assert (
        "2 iterations" in out
        and "64 inputs" in out
        and "K=4" in out
        and "1 x vllm generator" in out
        and "2 x math executor" in out
    )
    assert not run_dir.exists()


def test_exec_runs_one_solution_as_a_run_would(tmp_path):
    solution = tmp_path / "solution.py"
    solution.write_text("def solution():\n    return 8 * 9\n")
    code, out, _ = run_envisions("exec", "math", str(solution), "--input", '{"answer": "72"}')
    assert code == 0 and json.loads(out) == {"reward": 1, "output": "72", "error": ""}
    solution.write_text("def solution():\n    return open('/etc/passwd').read()\n")
    code, out, _ = run_envisions("exec", "math", str(solution), "--input", '{"answer": "72"}')
    result = json.loads(out)
    assert code == 0 and result["reward"] == 0 and "FileNotFoundError" in result["error"]


def test_exec_logic_prints_the_engine_answer(tmp_path):
    program = tmp_path / "theory.lp"
    program.write_text("Facts:\nBig(Bob, True)\nRules:\nBig($x, True) >>> Kind($x, False)\nQuery:\nKind(Bob, True)\n")
    code, out, _ = run_envisions("exec", "logic", str(program), "--input", '{"answer": "False"}')
    assert code == 0 and json.loads(out) == {"reward": 1, "output": "False", "error": ""}
    program.write_text("Facts:\nBig(Bob)\nQuery:\nKind(Bob, True)\n")
    code, out, _ = run_envisions("exec", "logic", str(program), "--input", '{"answer": "False"}')
    assert code == 0 and json.loads(out) == {
        "reward": 0,
        "output": "",
        "error": "parse error: line 2: 'Big(Bob)' must end with True or False",
    }


def test_exec_bad_input(tmp_path):
    code, _, err = run_envisions("exec", "math", str(tmp_path / "absent.py"), "--input", "{}")
    assert_one_line_error(code, err, "solution file not found")
    (tmp_path / "s.py").write_text("")
    code, _, err = run_envisions("exec", "math", str(tmp_path / "s.py"), "--input", "{oops")
    assert_one_line_error(code, err, "--input is not valid JSON")
    for not_an_object in ("[1,2]", '"x"'):
        code, _, err = run_envisions("exec", "math", str(tmp_path / "s.py"), "--input", not_an_object)
        assert_one_line_error(code, err, "--input must be a JSON object")
    # str(None) is "None": a null answer would reward `return None`.
    (tmp_path / "none.py").write_text("def solution():\n    return None\n")
    code, _, err = run_envisions("exec", "math", str(tmp_path / "none.py"), "--input", '{"answer": null}')
    assert_one_line_error(code, err, "'answer' must be a string or a number, not null")
    (tmp_path / "binary.py").write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe")
    code, _, err = run_envisions("exec", "math", str(tmp_path / "binary.py"), "--input", "{}")
    assert_one_line_error(code, err, "binary.py is not a UTF-8 text file")


@pytest.mark.parametrize(
    "record, needle",
    [
        (b'{"question": "1+1?", "answer": null}', ":2: 'answer' must be a string or a number, not null"),
        (b'{"question": ["a"], "answer": "2"}', ":2: 'question' must be a string or a number, not a list"),
        (b'{"question": "1+1?"}', ":2: 'answer' must be a string or a number, not missing"),
        (b'{"question": "caf\xe9", "answer": "2"}', ":2: not UTF-8"),
    ],
)
def test_bad_dataset_fields_name_file_and_line(tmp_path, record, needle):
    data = tmp_path / "train.jsonl"
    data.write_bytes(b'{"question": "1+1?", "answer": 2}\n' + record + b"\n")
    code, _, err = run_envisions("run", QUICKSTART, f"run_dir={tmp_path / 'run'}", f"data.train={data}")
    assert_one_line_error(code, err, f"{data}{needle}")
    assert not (tmp_path / "run").exists()


def test_an_eval_set_that_holds_a_training_problem_is_refused(tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(f'{{"question": "What is {i} + 1?", "answer": "{i + 1}"}}\n' for i in range(6)))
    split = [f"data.train={data}[:-2]", f"data.eval={{dev: '{data}[-2:]'}}"]
    code, out, _ = run_envisions("run", QUICKSTART, f"run_dir={tmp_path / 'a'}", "--dry-run", *split)
    assert code == 0 and "dev (2 inputs)" in out
    leaky = [f"data.train={data}", f"data.eval={{dev: '{data}[-2:]'}}"]
    code, _, err = run_envisions("run", QUICKSTART, f"run_dir={tmp_path / 'b'}", "--dry-run", *leaky)
    assert_one_line_error(code, err, "eval set 'dev' holds a training problem", "What is 4 + 1?")


def test_a_config_that_is_not_a_mapping_is_one_line(tmp_path):
    config = tmp_path / "list.yaml"
    config.write_text("- a\n- b\n")
    code, _, err = run_envisions("run", str(config), "--dry-run")
    assert_one_line_error(code, err, "must be a YAML mapping")


def test_a_second_driver_on_a_run_directory_is_refused_until_the_first_dies(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from envisions_ray.run_lock import claimed_run_dir\n"
            f"with claimed_run_dir(Path({str(run_dir)!r}), resume=False):\n"
            "    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        (run_dir / "pool.sqlite").write_text("")  # what the first driver's pool would have made by now
        with pytest.raises(UserError, match=rf"in use by another driver \(pid {holder.pid} on "):
            with claimed_run_dir(run_dir, resume=True):
                pass
    finally:
        holder.kill()  # as SIGKILL leaves it: no cleanup ran, yet the kernel dropped the lock
        holder.wait()
    with claimed_run_dir(run_dir, resume=True):
        assert f"pid {os.getpid()} on " in (run_dir / "driver.lock").read_text()


def test_overrides_may_follow_options(tmp_path):
    code, out, _ = run_envisions("run", QUICKSTART, "--dry-run", f"run_dir={tmp_path / 'run'}", "algorithm.k=7")
    assert code == 0 and "K=7" in out
    with pytest.raises(SystemExit):
        main(["run", QUICKSTART, "--dry-run", "--no-such-flag"])


def test_a_user_error_raised_in_an_actor_is_still_one_line(monkeypatch, capsys):
    import ray.exceptions

    from envisions_ray import eval_command
    from envisions_ray.errors import UserError

    def fails_in_an_actor(*args):
        cause = UserError("logic input 'a' has no 'context'")
        raise ray.exceptions.RayTaskError(
            "Executor.describe", "Traceback (most recent call last):\n  ...", cause
        ).as_instanceof_cause()

    monkeypatch.setattr(eval_command, "evaluate_model", fails_in_an_actor)
    assert main(["eval", "smollm2", "data.jsonl"]) == 2
    assert capsys.readouterr().err == "envisions: error: logic input 'a' has no 'context'\n"


def test_a_run_that_fails_says_how_to_resume_it_after_the_traceback(tmp_path, monkeypatch, capsys):
    from envisions_ray import driver

    def lost(cfg, resume):
        raise RuntimeError("the node holding the pool was lost")

    monkeypatch.setattr(driver, "run_experiment", lost)
    assert main(["run", QUICKSTART, f"run_dir={tmp_path / 'run'}"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert "RuntimeError: the node holding the pool was lost" in err[-2]
    assert err[-1] == f"envisions: the run stopped; continue it with: envisions run --resume {tmp_path / 'run'}"
