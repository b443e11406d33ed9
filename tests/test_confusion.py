"""Confusion matrices for label-valued eval sets, and the report's table of them."""

import json

from envisions_ray.cli import main
from envisions_ray.confusion import NO_ANSWER, confusion, label_valued


def test_counts_and_recall_by_hand():
    answers = [("True", "True"), ("True", "True"), ("True", "Unknown"), ("False", "True"), ("False", "")]
    matrix = confusion([*answers, ("Unknown", "Unknown")])
    assert matrix.labels == ("False", "True", "Unknown")
    assert matrix.predicted == ("False", "True", "Unknown", NO_ANSWER)
    assert matrix.counts["True", "True"] == 2 and matrix.counts["False", NO_ANSWER] == 1
    assert matrix.recall("True") == 2 / 3 and matrix.recall("False") == 0.0 and matrix.recall("Unknown") == 1.0


def test_an_answer_outside_the_labels_gets_its_own_column():
    matrix = confusion([("True", "True"), ("False", "Maybe")])
    assert matrix.predicted == ("False", "True", "Maybe", NO_ANSWER)


def test_only_sets_with_few_expected_values_are_label_valued():
    assert label_valued(["True", "False", "Unknown", "True"])
    assert not label_valued(str(n) for n in range(100))
    assert not label_valued([])
    assert label_valued("abcde") and not label_valued("abcdef")  # MAX_LABELS is 5
    assert not label_valued(["", ""])  # web episodes: no expected answer, no labels


def write_logic_run(run_dir, answers_per_policy):
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("method: envisions\n")
    (run_dir / "answers").mkdir()
    lines = []
    for policy, answers in enumerate(answers_per_policy):
        accuracy = sum(expected == given for expected, given in answers) / len(answers)
        lines.append({"policy": policy, "eval": {"proofwriter": accuracy}} | ({"iteration": policy} if policy else {}))
        rows = [
            {"eval_set": "proofwriter", "id": f"p{n}", "expected": expected, "output": given}
            for n, (expected, given) in enumerate(answers)
        ]
        (run_dir / "answers" / f"policy-{policy}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_report_shows_each_policys_confusion_and_recall(tmp_path, capsys):
    collapsed = [("True", "True"), ("False", "True"), ("Unknown", "True"), ("Unknown", "True")]
    spread = [("True", "True"), ("False", "False"), ("Unknown", "Unknown"), ("Unknown", "")]
    write_logic_run(tmp_path / "logic", [collapsed, spread])
    assert main(["report", str(tmp_path / "logic")]) == 0
    out = capsys.readouterr().out
    assert "## Confusion per policy: logic, proofwriter" in out
    assert "| policy | expected | answered False | answered True | answered Unknown | answered none | recall |" in out
    assert "| base | Unknown | 0 | 2 | 0 | 0 | 0.0% |" in out
    assert "| iter 1 | Unknown | 0 | 0 | 1 | 1 | 50.0% |" in out
    assert "| iter 1 | False | 1 | 0 | 0 | 0 | 100.0% |" in out
