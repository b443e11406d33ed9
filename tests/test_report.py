"""`envisions report`: a table per run and a real PNG plot."""
import json

import matplotlib.image

from envisions_ray.cli import main
from envisions_ray.driver import format_summary


def write_run(run_dir, accuracies):
    run_dir.mkdir()
    lines = [{"policy": 0, "eval": {"arith": accuracies[0]}, "executable": {"arith": 0.5}}]
    for i, accuracy in enumerate(accuracies[1:], start=1):
        lines.append({
            "iteration": i, "policy": i, "inputs": 8, "explored": i + 2, "positives": 5, "unique_correct": 4 * i,
            "pool_size": 10 * i, "u1": 3, "u2": 1, "train_loss": 0.5 / i, "eval": {"arith": accuracy},
            "executable": {"arith": 0.5 + i / 10},
            "ea": 0.1, "stb": 0.9, "seconds": {"explore": 1.0, "train": 2.0},
        })
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lines


def test_report_writes_table_and_plot(tmp_path, capsys):
    write_run(tmp_path / "a", [0.2, 0.3, 0.45])
    write_run(tmp_path / "b", [0.2, 0.25])
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "| policy | arith | arith ran | explored |" in out
    assert "| iter 2 | 45.0% | 70% | 4 | 20 | 3 | 1 | 0.250 |" in out
    assert "| base | 20.0% | 50% |" in out and out.count("| iter ") == 3
    image = matplotlib.image.imread(tmp_path / "a" / "accuracy.png")
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0  # not a blank canvas


def test_report_on_a_non_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err


def test_summary_line_names_every_quantity():
    summary = {
        "iteration": 2, "policy": 2, "inputs": 64, "explored": 20, "positives": 31, "unique_correct": 25, "pool_size": 200,
        "u1": 30, "u2": 9, "train_loss": 0.4321, "eval": {"arith": 0.375}, "executable": {"arith": 0.8}, "seconds": {"explore": 61.2, "train": 90.0},
    }
    text = format_summary(summary)
    for part in ["iter 2", "explored 20/64", "positives 31", "unique-correct 25", "pool 200", "|U1| 30", "|U2| 9", "loss 0.432", "arith=37.5% (ran 80%)", "explore=61s", "train=90s"]:
        assert part in text
