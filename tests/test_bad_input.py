"""Every command refuses bad input in one line on stderr, with exit code 2, and writes nothing
(issue 33 part 4); the checks behind it, by hand."""

import json
import os
import re
from dataclasses import fields, is_dataclass

import pytest

from envisions_ray import cli
from envisions_ray.config import DOMAINS, RunConfig, load_config
from envisions_ray.data import finite_answer
from envisions_ray.envs.math_sandbox import is_correct
from envisions_ray.errors import UserError
from envisions_ray.judge import parse_score
from envisions_ray.sweep import plan_sweep
from tests.test_cli import QUICKSTART, assert_one_line_error, run_envisions

TMP = "TMP"  # stands for the test's directory in the cases below
RUN = ["--dry-run", f"run_dir={TMP}/run"]
SWEEP_HEAD = f"sweep:\n  config: {QUICKSTART}\n  parent: {TMP}/sweep\n"


def sweep_file(runs: str) -> str:
    return f"{SWEEP_HEAD}  runs:\n{runs}"


@pytest.mark.parametrize(
    "files, argv, needle",
    [
        # OmegaConf: interpolations, merges of a scalar onto a section and of a mapping onto a scalar
        ({}, ["run", QUICKSTART, "train.lr=${nope}", *RUN], "'train.lr': Interpolation key 'nope' not found"),
        ({}, ["run", QUICKSTART, "train=3", *RUN], "int is not a subclass of TrainConfig"),
        ({}, ["run", QUICKSTART, "train.lr={a: 1}", *RUN], "'train.lr' has the wrong type"),
        # config files: not a mapping, empty, not UTF-8, not YAML
        ({"c.yaml": b"- a\n- b\n"}, ["run", f"{TMP}/c.yaml", *RUN], "must be a YAML mapping of keys"),
        ({"c.yaml": b"# nothing\n"}, ["run", f"{TMP}/c.yaml", *RUN], "c.yaml is empty"),
        ({"c.yaml": b"seed: caf\xe9\n"}, ["run", f"{TMP}/c.yaml", *RUN], "c.yaml is not UTF-8 text"),
        # a config with no eval set
        ({"c.yaml": b"seed: 1\n"}, ["run", f"{TMP}/c.yaml", *RUN], "data.eval names no eval set"),
        # numbers outside their domain
        ({}, ["run", QUICKSTART, "generator.temperature=nan", *RUN], "'generator.temperature' must be 0 or more"),
        ({}, ["run", QUICKSTART, "train.lr=0", *RUN], "'train.lr' must be above 0, got 0.0"),
        ({}, ["run", QUICKSTART, "generator.top_p=1.5", *RUN], "'generator.top_p' must be in (0, 1], got 1.5"),
        # the other commands that read a config
        ({}, ["eval", "smollm2", "builtin:arith:eval", "generator.top_p=2"], "'generator.top_p' must be in (0, 1]"),
        (
            {"c.yaml": b"env: [\n"},
            ["exec", "math", f"{TMP}/c.yaml", "--input", "{}", "--config", f"{TMP}/c.yaml"],
            "c.yaml:2: not valid YAML",
        ),
        # a run directory that cannot be made
        ({"file": b""}, ["run", QUICKSTART, "--dry-run", f"run_dir={TMP}/file/run"], "file is not a directory"),
        ({}, ["run", QUICKSTART, "--dry-run", "run_dir=/proc/envisions-run"], "no directory can be made in /proc"),
        # data whose expected answer is no finite number
        (
            {"d.jsonl": b'{"question": "1+1?", "answer": 2}\n{"question": "1/0?", "answer": "inf"}\n'},
            ["run", QUICKSTART, f"data.train={TMP}/d.jsonl", *RUN],
            "d.jsonl:2: the answer 'inf' is not a finite number",
        ),
        (
            {"d.jsonl": b'{"question": "0/0?", "answer": NaN}\n'},
            ["run", QUICKSTART, f"data.eval.dev={TMP}/d.jsonl", *RUN],
            "d.jsonl:1: the answer 'nan' is not a finite number",
        ),
        # sweep files: not YAML, not UTF-8, not a mapping, runs that would leave the parent
        ({"s.yaml": b"sweep: {runs: [\n"}, ["sweep", f"{TMP}/s.yaml", "--dry-run"], "s.yaml:2: not valid YAML"),
        ({"s.yaml": b"sweep:\n  runs: {caf\xe9: []}\n"}, ["sweep", f"{TMP}/s.yaml", "--dry-run"], "is not UTF-8"),
        ({"s.yaml": b"- sweep\n"}, ["sweep", f"{TMP}/s.yaml", "--dry-run"], "s.yaml must be a YAML mapping of keys"),
        (
            {"s.yaml": sweep_file("    ../outside: []\n").encode()},
            ["sweep", f"{TMP}/s.yaml", "--dry-run"],
            "run name '../outside' is not a directory name",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, files, argv, needle):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content.replace(TMP.encode(), str(tmp_path).encode()))
    code, _, err = run_envisions(*(word.replace(TMP, str(tmp_path)) for word in argv))
    assert_one_line_error(code, err, needle.replace(TMP, str(tmp_path)))
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(files)  # no run or sweep directory


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["run_dir=${oc.env:ENVISIONS_UNSET}"], "'run_dir': KeyError"),
        (["method=${method}"], "'method': Recursive interpolation"),
        (["data.eval.dev=[1]"], "'data.eval.dev' has the wrong type"),
        (["generator.stop=[[1]]"], "'generator.stop[0]' has the wrong type"),
        (["data.eval={dev: [}"], "override 'data.eval={dev: [}' is not valid YAML"),
        (["=3"], "override '=3' is not key=value"),
        (["eval.temperature=-0.5"], "'eval.temperature' must be 0 or more"),
        (["train.lr=nan"], "'train.lr' must be above 0, got nan"),
        (["train.lr=-1e-5"], "'train.lr' must be above 0"),
        (["dpo.beta=.inf"], "'dpo.beta' must be above 0, got inf"),
        (["generator.top_p=0"], "'generator.top_p' must be in (0, 1]"),
        (["generator.gpu_memory_utilization=1.01"], "'generator.gpu_memory_utilization' must be in (0, 1]"),
        (["train.warmup_ratio=1"], "'train.warmup_ratio' must be in [0, 1)"),
        (["train.max_grad_norm=0"], "'train.max_grad_norm' must be above 0"),
        (["train.zero_stage=4"], "'train.zero_stage' must be in [0, 3]"),
        (["env.resources.browser=-1"], "'env.resources.browser' must be 0 or more"),
        (["env.settings.timeout_s=nan"], "'env.settings.timeout_s' must be a finite number"),
        (["seed=-1"], "'seed' must be in [0, 4294967295]"),
    ],
)
def test_load_config_refuses_in_one_line(overrides, needle):
    with pytest.raises(UserError) as refused:
        load_config(QUICKSTART, overrides)
    assert needle in str(refused.value) and "\n" not in str(refused.value)


def test_a_setting_that_holds_a_nul_is_refused(tmp_path):
    # YAML refuses a NUL in an override, but a file may write one as an escape.
    (tmp_path / "c.yaml").write_text('run_dir: "a\\0b"\n')
    with pytest.raises(UserError, match="'run_dir' holds a NUL character"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.parametrize(
    "runs, needle",
    [
        ("    a: method=star_env\n", "sweep.runs.a must be a list of key=value overrides"),
        ("    a: [1]\n", "sweep.runs.a must be a list of key=value overrides"),
        ("    /tmp/elsewhere: []\n", "run name '/tmp/elsewhere' is not a directory name"),
        ('    "..": []\n', "run name '..' is not a directory name"),
        ("    a b: []\n", "run name 'a b' is not a directory name"),
    ],
)
def test_a_sweep_file_s_runs_are_lists_of_overrides_in_the_parent(tmp_path, runs, needle):
    path = tmp_path / "s.yaml"
    path.write_text(sweep_file(runs).replace(TMP, str(tmp_path)))
    with pytest.raises(UserError, match=re.escape(needle)):
        plan_sweep(str(path), [], None)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_a_run_directory_under_a_read_only_directory_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, err = run_envisions("run", QUICKSTART, "--dry-run", f"run_dir={locked / 'run'}")
    finally:
        locked.chmod(0o755)
    assert_one_line_error(code, err, f"no directory can be made in {locked}")
    assert list(locked.iterdir()) == []


def write_model(directory, positions: int) -> None:
    """A model directory as far as a dry run reads one: config.json and a tokenizer of one token per word."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    directory.mkdir()
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    shape = {"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1, "vocab_size": 1}
    (directory / "config.json").write_text(json.dumps({**shape, "max_position_embeddings": positions}))


def test_a_prompt_that_cannot_fit_the_model_s_context_is_refused(tmp_path):
    write_model(tmp_path / "short", positions=128)
    write_model(tmp_path / "long", positions=4096)
    short, long = (f"model.path={tmp_path / name}" for name in ("short", "long"))
    run = [f"run_dir={tmp_path / 'run'}", "--dry-run"]
    code, _, err = run_envisions("run", QUICKSTART, short, *run)
    assert_one_line_error(code, err, "(3 shots) is", "over the 128 of max_position_embeddings in", "short/config.json")
    code, _, err = run_envisions("run", QUICKSTART, long, "generator.max_model_len=200", *run)
    assert_one_line_error(code, err, "max_new_tokens (96) more", "over the 200 of generator.max_model_len")
    code, out, _ = run_envisions("run", QUICKSTART, long, *run)
    assert code == 0 and "plan:" in out
    assert sorted(path.name for path in tmp_path.iterdir()) == ["long", "short"]


def test_a_bug_prints_its_traceback_then_where_to_report_it(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("no check foresaw this")

    monkeypatch.setattr(cli, "_report", broken)
    assert cli.main(["report", "runs/any"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: no check foresaw this" in err
    assert err.splitlines()[-1] == (
        f"envisions: this is a bug; please report it with the traceback above at {cli.BUG_REPORTS}"
    )


def numeric_fields(cls, prefix=""):
    for spec in fields(cls):
        default = spec.default_factory() if callable(spec.default_factory) else spec.default
        if is_dataclass(default):
            yield from numeric_fields(type(default), f"{prefix}{spec.name}.")
        elif any(name in str(spec.type) for name in ("int", "float")) and "dict" not in str(spec.type):
            yield f"{prefix}{spec.name}"


def test_every_number_in_the_config_has_a_domain():
    assert sorted(numeric_fields(RunConfig)) == sorted(key for key in DOMAINS if not key.endswith(".*"))


@pytest.mark.parametrize(
    "override", ["generator.top_p=1", "train.warmup_ratio=0", "generator.temperature=0", "train.steps=null"]
)
def test_the_edges_of_a_domain_that_belong_to_it_load(override):
    load_config(QUICKSTART, [override])


def test_a_solution_that_prints_nan_or_inf_scores_nothing():
    assert is_correct("72", "72") and is_correct("72.00001", "72") and is_correct("True", "True")
    for printed in ("nan", "NaN", "inf", "-inf", "1e999"):
        assert not is_correct(printed, printed) and not is_correct(printed, "72")


def test_only_finite_numbers_are_expected_answers():
    assert finite_answer("72", "f:1") == "72" and finite_answer("Unknown", "f:1") == "Unknown"
    for answer in ("nan", "inf", "-Infinity", "1e999"):
        with pytest.raises(UserError, match=f"f:3: the answer '{answer}' is not a finite number"):
            finite_answer(answer, "f:3")


def test_a_judge_reply_with_a_huge_number_is_no_score():
    # int() refuses strings of over 4,300 digits; the judge's reply is the policy's free text.
    assert parse_score("9" * 5000, max_score=5) is None and parse_score("0" * 5000 + "4", max_score=5) == 4
