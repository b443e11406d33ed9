"""The metrics-line schema (envisions_ray/metrics_line.py): lines written before it had a version
read as they did, and a line keeps its keys from the run to metrics.jsonl and back."""

import json

import pytest

from envisions_ray.best import read_lines
from envisions_ray.errors import UserError
from envisions_ray.metrics_line import METRICS_VERSION, UNVERSIONED, IterationFacts, MetricsLine, Scores
from envisions_ray.summary import format_summary

# As a run wrote them before lines had a version (runs/qs_base, shortened): the base model's line,
# and an iteration's from before the too-long counts.
BASE = {
    "policy": 0,
    "grammar": False,
    "eval": {"arith": 0.13},
    "ci95": {"arith": [0.09, 0.18]},
    "parsed": {"arith": 0.92},
    "executable": {"arith": 0.855},
    "tokens": {"eval": 7163},
    "generation": {"eval": {"tokens": 7163, "prompt_tokens": 48554, "cached_prompt_tokens": 0, "seconds": 52.1}},
    "seconds": {"eval": 53.6},
    "env_events": {"peak_processes": 0},
    "restarts": {"generator": 0, "executor": 0, "pool": 0},
    "best": {"policy": 0, "eval_set": "arith", "accuracy": 0.13, "model": "/models/base"},
}
ITERATION = {
    **BASE,
    "iteration": 1,
    "policy": 1,
    "method": "envisions",
    "inputs": 64,
    "explored": 10,
    "positives": 14,
    "generated_parsed": 0.96,
    "generated_executable": 0.85,
    "pool_size": 251,
    "unique_correct": 13,
    "u1": 10,
    "u2": 3,
    "pairs": 0,
    "train_loss": 0.562,
    "dpo_loss": None,
    "eval": {"arith": 0.34},
    "delta_logp": 6.7,
    "ea": 0.0,
    "stb": 0.0,
    "executors": {"now": 2, "peak": 2},
}


@pytest.mark.parametrize("line", [BASE, ITERATION], ids=["base", "iteration"])
def test_an_unversioned_line_reads_as_it_was_written(line):
    metrics = MetricsLine.from_json(line)
    assert metrics.version == UNVERSIONED and metrics.policy == line["policy"]
    written = json.loads(json.dumps(metrics.to_json()))
    assert {key: written[key] for key in line} == line
    assert set(written) - set(line) <= {"version", "train_prompt_cut", "train_dropped_too_long"}


def test_a_new_line_carries_the_version_and_reads_back_equal():
    facts = IterationFacts(1, 64, 10, 14, 251, 13, 10, 3, 0.5, method="envisions", ea=1.0, stb=0.0)
    line = MetricsLine(Scores({"arith": 0.5}, {"arith": (0.4, 0.6)}), facts, grammar=True, seconds={"train": 2.0})
    written = json.loads(json.dumps(line.to_json()))
    assert written["version"] == METRICS_VERSION and written["policy"] == written["iteration"] == 1
    assert "per_task" not in written and "eval_refine" not in written  # only where an eval made them
    assert MetricsLine.from_json(written).to_json() == written
    assert format_summary(written).startswith("[iter 1] explored 10/64 positives 14 unique-correct 13 pool 251")


def test_a_line_from_a_newer_schema_is_refused_in_one_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({**BASE, "version": METRICS_VERSION + 1}) + "\n")
    with pytest.raises(UserError, match=r"metrics.jsonl:1: written by a newer envisions-ray"):
        read_lines(tmp_path)
