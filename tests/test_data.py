"""Dataset loading: JSONL with GSM8K answers, the built-in problems, and file:line errors."""
import json
import random

import pytest

from envisions_ray.data import arithmetic_problem, load_examples, normalise_answer
from envisions_ray.errors import UserError


def test_gsm8k_answers_are_the_number_after_hashes():
    assert normalise_answer("She has 3 + 4 = 7 left.\n#### 1,072") == "1072"
    assert normalise_answer(" 72 ") == "72"


def test_jsonl_loader(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"id": "q1", "question": "2+2?", "answer": "#### 4"}) + "\n\n" + json.dumps({"question": "1+1?", "answer": 2}) + "\n")
    examples = load_examples(str(path))
    assert [(e.id, e.question, e.answer) for e in examples] == [("q1", "2+2?", "4"), ("d-3", "1+1?", "2")]
    assert len(load_examples(str(path), size=1)) == 1


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{"question": "b"\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        load_examples(str(path))
    path.write_text('{"question": "a", "answer": "1"}\n{"q": "b", "answer": "1"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: a record needs 'question' and 'answer'"):
        load_examples(str(path))
    with pytest.raises(UserError, match="dataset not found"):
        load_examples(str(tmp_path / "absent.jsonl"))


def test_builtin_problems_are_seeded_and_splits_are_disjoint():
    train = load_examples("builtin:arith:train", 300, seed=0)
    evaluation = load_examples("builtin:arith:eval", 300, seed=0)
    assert train == load_examples("builtin:arith:train", 300, seed=0)
    assert not {e.question for e in train} & {e.question for e in evaluation}
    assert len({e.id for e in train}) == 300


def test_builtin_answers_follow_the_story():
    rng = random.Random(3)
    for _ in range(200):
        question, answer = arithmetic_problem(rng)
        value = int(question.split(" has ")[1].split()[0])
        for sentence in question.split(". ")[1:]:
            words = sentence.split()
            if " gets " in sentence:
                value += int(words[words.index("gets") + 1])
            elif " gives away " in sentence:
                value -= int(words[words.index("away") + 1])
            elif "times as large" in sentence:
                value *= int(words[words.index("times") - 1])
        assert value == answer and answer > 0
        assert 1 <= question.count("Then") <= 3


def test_unknown_builtin_is_a_user_error():
    with pytest.raises(UserError, match="builtin:arith:train"):
        load_examples("builtin:arith:test", 5)
