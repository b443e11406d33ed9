"""A run directory stands on its own: its config.yaml names every file absolutely, so `envisions run
--resume RUN_DIR` works from any working directory, and the dry run says what the resume would do.
A damaged pool.sqlite or metrics.jsonl is one line from every command that reads it (the report
reads no pool). Runs here stop where they would start Ray."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from envisions_ray import driver
from envisions_ray.actors.pool import CandidatePool
from envisions_ray.cli import main
from envisions_ray.config import RAY_JOB_ENV, load_config, to_yaml
from envisions_ray.data import load_examples
from envisions_ray.paths import absolute_paths, resumed_config
from envisions_ray.types import Trajectory

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "conf" / "math_quickstart.yaml"
RELATIVE = ["run_dir=runs/a", "env.prompt_file=prompts/math.yaml", "data.train=problems.jsonl[:4]"]


class Stopped(Exception):
    """Raised where a run would start Ray: the test has seen what it wanted."""


@pytest.fixture
def start(tmp_path, monkeypatch) -> Path:
    """The working directory a run starts from, with the prompt file and data its config names relatively."""
    start = tmp_path / "start"
    (start / "prompts").mkdir(parents=True)
    shutil.copy(REPO / "conf" / "prompts" / "math.yaml", start / "prompts")
    problems = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)]
    (start / "problems.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
    monkeypatch.chdir(start)
    return start


@pytest.fixture
def started(start, tiny_model, tmp_path, monkeypatch) -> Path:
    """A run started from `start` on relative paths and stopped where it would start Ray; its pool
    and metrics then as if the base model's eval and 3 of iteration 1's 4 inputs had been done. The
    test continues in another directory."""
    cfg = load_config(QUICKSTART, [*RELATIVE, "data.eval={dev: 'problems.jsonl[4:]'}", f"model.path={tiny_model}"])
    started_with = []

    def stop(cfg):
        started_with.append(cfg)
        raise Stopped

    monkeypatch.setattr(driver, "connect_ray", stop)
    with pytest.raises(Stopped):
        driver.run_experiment(cfg)
    run_dir = start / "runs" / "a"
    assert started_with[0].run_dir == str(run_dir)
    pool = CandidatePool(str(run_dir / "pool.sqlite"))
    pool.mark_done(-1, "eval")
    inputs = load_examples(started_with[0].data.train)
    pool.record([Trajectory(x.id, "return 1", 0, -1.0, 0, "explore", sample=k) for x in inputs[:3] for k in range(4)])
    pool.close()
    (run_dir / "metrics.jsonl").write_text(json.dumps({"policy": 0, "eval": {"arith": 0.25, "dev": 0.5}}) + "\n")
    monkeypatch.chdir(tmp_path)
    return run_dir


def test_a_run_saves_every_path_absolute(started, start, tiny_model):
    saved = yaml.safe_load((started / "config.yaml").read_text())
    assert saved["run_dir"] == str(started)
    assert saved["env"]["prompt_file"] == str(start / "prompts" / "math.yaml")
    assert saved["data"]["train"] == f"{start}/problems.jsonl[:4]"
    assert saved["data"]["eval"] == {"arith": "builtin:arith:eval", "dev": f"{start}/problems.jsonl[4:]"}
    assert saved["model"]["path"] == tiny_model


def test_resume_dry_run_from_another_directory_says_what_is_done_and_what_comes_next(started, capsys):
    assert main(["run", "--resume", str(started), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-5:] == [
        f"resume: {started}",
        "  base model evaluated: arith=25.0% dev=50.0%",
        "  iter 1     explored 3/4 inputs",  # the quickstart refines from iteration 2
        "  iter 2     explored 0/4 inputs, refined 0/0 samples",
        "  next       iter 1, from its explore stage",
    ]
    assert f"  run_dir    {started}" in out


def test_resume_takes_the_directory_given_not_the_run_dir_in_its_config(started, tmp_path, monkeypatch, capsys):
    moved = shutil.move(started, tmp_path / "moved")
    resumed = []

    def stop(cfg):
        resumed.append(cfg)
        raise Stopped

    monkeypatch.setattr(driver, "connect_ray", stop)
    monkeypatch.chdir(moved)
    assert main(["run", "--resume", "."]) == 1  # stopped where Ray would start, as a lost cluster stops it
    assert resumed[0].run_dir == str(moved)
    assert yaml.safe_load((moved / "config.yaml").read_text())["run_dir"] == str(moved)
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"continue it with: envisions run --resume {moved}")


def test_an_old_run_dir_with_relative_paths_takes_them_from_where_it_started(start, tmp_path, monkeypatch):
    # A config.yaml from before paths were saved absolute: as the run was given them.
    old = load_config(QUICKSTART, RELATIVE)
    (start / "runs" / "a").mkdir(parents=True)
    (start / "runs" / "a" / "config.yaml").write_text(to_yaml(old))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # RUN_DIR ends with the run_dir it recorded: the run started in what is left of RUN_DIR.
    cfg = resumed_config(start / "runs" / "a")
    assert (cfg.run_dir, cfg.env.prompt_file) == (str(start / "runs" / "a"), str(start / "prompts" / "math.yaml"))
    assert cfg.data.train == f"{start}/problems.jsonl[:4]"
    # Renamed, it says nothing of where the run started: the current directory, as before.
    shutil.move(start / "runs" / "a", start / "runs" / "b")
    cfg = resumed_config(start / "runs" / "b")
    assert (cfg.run_dir, cfg.env.prompt_file) == (str(start / "runs" / "b"), str(elsewhere / "prompts" / "math.yaml"))


def test_only_what_names_a_file_is_made_absolute(start, tiny_model, monkeypatch):
    local_model = start / "models" / "tiny"
    shutil.copytree(tiny_model, local_model)
    (start / "teacher.jsonl").write_text("")
    relative = load_config(QUICKSTART, ["run_dir=r", "model.path=models/tiny", "model.cache_dir=~/cache"])
    cfg = absolute_paths(relative, start)
    assert (cfg.model.path, cfg.model.cache_dir) == (str(local_model), str(Path("~/cache").expanduser()))
    for model in ("smollm2", "Qwen/Qwen2.5-Coder-0.5B-Instruct"):  # a packaged model, a hub id
        assert absolute_paths(load_config(QUICKSTART, ["run_dir=r", f"model.path={model}"]), start).model.path == model
    distill = load_config(QUICKSTART, ["run_dir=r", "method=distill", "distill.teacher_file=teacher.jsonl"])
    assert absolute_paths(distill, start).distill.teacher_file == str(start / "teacher.jsonl")
    # A Ray job's relative paths name files of its working_dir, which a resumed job has a new copy of.
    monkeypatch.setenv(RAY_JOB_ENV, "{}")
    job = load_config(QUICKSTART, ["run_dir=/shared/run", "env.prompt_file=prompts/math.yaml"])
    assert absolute_paths(job, start) == job


def test_resuming_on_data_that_no_longer_gives_the_pool_s_inputs_is_refused(started, capsys):
    pool = CandidatePool(str(started / "pool.sqlite"))
    pool.record([Trajectory("problems-1", "return 1", 0, -1.0, 0, "explore")])  # an id from other data
    pool.close()
    assert main(["run", "--resume", str(started), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds samples of input 'problems-1', which data.train no longer gives" in err


def cut_in_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "pool cut short": ("pool.sqlite", cut_in_half, "pool.sqlite is damaged (database disk image is malformed)"),
    "pool not SQLite": ("pool.sqlite", lambda path: path.write_text("{}\n"), "pool.sqlite is damaged (file is not a"),
    "metrics cut short": ("metrics.jsonl", cut_in_half, "metrics.jsonl:1: not valid JSON"),
    "metrics of another kind": (
        "metrics.jsonl",
        lambda path: path.write_text('{"id": "q1", "question": "1 + 1?"}\n'),
        "metrics.jsonl:1: not a metrics line: it needs 'policy' (an integer) and 'eval'",
    ),
}
COMMANDS = {
    "resume": lambda run_dir: ["run", "--resume", str(run_dir)],
    "eval": lambda run_dir: ["eval", str(run_dir), "builtin:arith:eval", "--config", str(QUICKSTART)],
    "report": lambda run_dir: ["report", str(run_dir)],
}


@pytest.mark.parametrize(
    "command, damage", [(c, d) for c in COMMANDS for d in DAMAGES if c != "report" or "metrics" in d]
)
def test_a_damaged_store_is_one_line_that_names_the_file_and_what_to_do(started, capsys, command, damage):
    name, spoil, needle = DAMAGES[damage]
    spoil(started / name)
    assert main(COMMANDS[command](started)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"envisions: error: {started}/{needle}")
    assert "restore" in err  # what to do
