"""Dataset loading: JSONL with GSM8K answers, the built-in problems, and file:line errors."""

import json
import random
import re
from pathlib import Path

import pytest

from envisions_ray.data import load_examples, normalise_answer
from envisions_ray.errors import UserError
from envisions_ray.word_problems import SHAPES, arithmetic_problem, groups, story_problem


def test_gsm8k_answers_are_the_number_after_hashes():
    assert normalise_answer("She has 3 + 4 = 7 left.\n#### 1,072") == "1072"
    assert normalise_answer(" 72 ") == "72"


def test_jsonl_loader(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"id": "q1", "question": "2+2?", "answer": "#### 4"})
        + "\n\n"
        + json.dumps({"question": "1+1?", "answer": 2})
        + "\n"
    )
    examples = load_examples(str(path))
    assert [(e.id, e.question, e.answer) for e in examples] == [("q1", "2+2?", "4"), (f"{path}:3", "1+1?", "2")]
    assert len(load_examples(str(path), size=1)) == 1


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n{"question": "b"\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        load_examples(str(path))
    path.write_text('{"question": "a", "answer": "1"}\n{"q": "b", "answer": "1"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: 'question' must be a string or a number, not missing"):
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
    with pytest.raises(UserError, match="builtin:KIND:SPLIT, KIND arith or story"):
        load_examples("builtin:arith:test", 5)


def solve_story(problem: str) -> int:
    """Each shape's answer, read back from its text alone: a second derivation of the arithmetic."""
    sentences = re.split(r"(?<=[.?]) ", problem)
    # Distractors carry numbers the answer must not use; the question may come first.
    facts = [x for x in sentences if not x.endswith("?") and not re.search(r"years|blocks|rained", x)]
    [question] = [x for x in sentences if x.endswith("?")]
    text = " ".join([*facts, question])
    readers = {
        r"buys (\d+) \w+ that cost \$(\d+) each\. \w+ pays with a \$(\d+) bill": lambda n, p, b: b - n * p,
        r"reads (\d+) pages every day for (\d+) days\. \w+ had already read (\d+)": lambda r, d, a: a + r * d,
        r"for (\d+) minutes a day, (\d+) days a week": lambda m, d: m * d // 60,
        r"has (\d+) \w+\. \w+ gives half of them .* buys (\d+)": lambda t, b: t - t // 2 + b,
        r"has (\d+) \w+\. \w+ gives a third of them .* buys (\d+)": lambda t, b: t - t // 3 + b,
        r"has (\d+) \w+\. \w+ gives a quarter of them .* buys (\d+)": lambda t, b: t - t // 4 + b,
        r"costs \$(\d+)\. This week every \w+ is (\d+)% off\. \w+ buys (\d+)": lambda p, o, n: n * p * (100 - o) // 100,
        r"has (\d+) \w+\. \w+ has (\d+) more": lambda a, m: a + a + m,
        r"has (\d+) \w+\. \w+ has (\d+) times as many": lambda a, t: a + a * t,
        r"packs (\d+) \w+ into boxes of (\d+)\. How many .* filling (\d+) boxes": lambda n, per, b: n - per * b,
        r"saves \$(\d+) a week for (\d+) weeks and then spends \$(\d+)\. \w+ has saved \$(\d+)": (
            lambda w, k, s, o: w * k - s - o
        ),
    }
    [answer] = [read(*map(int, m.groups())) for pattern, read in readers.items() if (m := re.search(pattern, text))]
    return answer


def test_story_answers_follow_the_story_in_every_shape():
    rng = random.Random(5)
    for _ in range(400):
        question, answer = story_problem(rng)
        assert answer == solve_story(question) and answer >= 0, question
    for shape in SHAPES:  # every shape at least once, whatever the draw above met
        facts, question, answer = shape(random.Random(1))
        assert answer == solve_story(" ".join([*facts, question]))
    examples = load_examples("builtin:story:eval", 300, seed=0)
    assert not {x.question for x in examples} & {x.question for x in load_examples("builtin:story:train", 300)}


FIXTURES = Path(__file__).parent / "fixtures"
PROOFWRITER_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "proofwriter_dev.jsonl"


def test_jsonl_keeps_other_fields_for_the_environment(tmp_path):
    path = tmp_path / "pw.jsonl"
    record = {"id": "pw1", "context": "Bob is big.", "question": "Bob is big.", "answer": "True"}
    path.write_text(json.dumps(record) + "\n")
    [example] = load_examples(str(path))
    assert (example.id, example.question, example.answer, example.meta) == (
        "pw1",
        "Bob is big.",
        "True",
        {"context": "Bob is big."},
    )


@pytest.mark.skipif(not PROOFWRITER_DEV.is_file(), reason="shared data not beside this checkout")
def test_proofwriter_dev_loads_with_its_theories():
    examples = load_examples(str(PROOFWRITER_DEV))
    assert len(examples) == 600
    assert {e.answer for e in examples} == {"True", "False", "Unknown"}
    assert all(e.meta["context"] and e.question for e in examples)


def test_ruletaker_release_format_gives_one_example_per_question():
    examples = load_examples(f"ruletaker:{FIXTURES / 'ruletaker' / 'meta-test.jsonl'}")
    assert [(e.id, e.question, e.answer) for e in examples] == [
        ("AttNoneg-OWA-D1-17-Q1", "Bob is rough.", "True"),
        ("AttNoneg-OWA-D1-17-Q2", "Erin is not young.", "False"),
        ("AttNoneg-OWA-D1-17-Q3", "Erin is big.", "Unknown"),
        ("RelNeg-OWA-D0-5-Q1", "The dog sees the cat.", "False"),
    ]
    assert examples[0].meta == {
        "context": (
            "Bob is big. Bob is red. Erin is kind. If someone is big then they are rough. Kind people are young."
        ),
        "depth": 1,
    }
    assert examples[3].meta["context"] == "The cat chases the dog. The dog does not see the cat."


def test_ruletaker_errors_name_file_and_line(tmp_path):
    path = tmp_path / "meta-bad.jsonl"
    good = (FIXTURES / "ruletaker" / "meta-test.jsonl").read_text().splitlines()[0]
    path.write_text(
        good
        + "\n"
        + json.dumps({"id": "x", "theory": "T.", "questions": {"Q1": {"question": "q", "answer": "maybe"}}})
        + "\n"
    )
    with pytest.raises(UserError, match=r"meta-bad.jsonl:2: question Q1 has answer 'maybe'"):
        load_examples(f"ruletaker:{path}")
    path.write_text(json.dumps({"id": "x", "questions": {}}) + "\n")
    with pytest.raises(UserError, match=r"meta-bad.jsonl:1: a RuleTaker record needs 'theory' and 'questions'"):
        load_examples(f"ruletaker:{path}")


def test_task_inputs_are_task_seed_pairs_that_move_every_iteration(tmp_path):
    from envisions_ray.data import for_iteration

    listing = tmp_path / "tasks.txt"
    listing.write_text("# comment\nclick-test\nenter-text  # trailing comment\n")
    inputs = load_examples(f"tasks:{listing}:100", 2)
    assert [(x.id, x.meta) for x in inputs] == [
        ("click-test@100", {"task": "click-test", "seed": 100}),
        ("click-test@101", {"task": "click-test", "seed": 101}),
        ("enter-text@100", {"task": "enter-text", "seed": 100}),
        ("enter-text@101", {"task": "enter-text", "seed": 101}),
    ]
    assert [x.id for x in load_examples("tasks:click-test,enter-text:0", 1)] == ["click-test@0", "enter-text@0"]
    assert [x.id for x in for_iteration(inputs, 2, 50)] == [
        "click-test@200",
        "click-test@201",
        "enter-text@200",
        "enter-text@201",
    ]
    assert for_iteration(inputs, 2, 0) == inputs
    for bad in ("tasks:click-test", "tasks:click-test:x", "tasks::3"):
        with pytest.raises(UserError):
            load_examples(bad, 2)


def test_a_slice_splits_a_file_into_disjoint_train_and_dev(tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}?", "answer": str(i)}) + "\n" for i in range(10)))
    train, dev = load_examples(f"{data}[:-3]"), load_examples(f"{data}[-3:]")
    assert [x.answer for x in train] == [str(i) for i in range(7)]
    assert [x.answer for x in dev] == ["7", "8", "9"]
    assert [x.answer for x in load_examples(f"{data}[-3:]", size=2)] == ["7", "8"]  # size counts inside the slice
    assert [x.answer for x in load_examples(f"{data}[2:4]")] == ["2", "3"]


@pytest.mark.parametrize("bounds", ["[a:]", "[1:2:3]", "[5]"])
def test_a_malformed_slice_is_a_user_error(tmp_path, bounds):
    data = tmp_path / "problems.jsonl"
    data.write_text('{"question": "q?", "answer": "1"}\n')
    with pytest.raises(UserError, match="the slice must be"):
        load_examples(f"{data}{bounds}")


def test_an_empty_slice_is_a_user_error(tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text('{"question": "q?", "answer": "1"}\n')
    with pytest.raises(UserError, match="the slice holds no examples"):
        load_examples(f"{data}[5:]")


def test_a_mix_interleaves_its_parts(tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}?", "answer": str(i)}) + "\n" for i in range(10)))
    mixed = load_examples(f"{data}[:3] + builtin:story:train", size=5)
    assert ["story" if x.id.startswith("story-") else x.id for x in mixed] == [
        f"{data}:1",
        "story",
        f"{data}:2",
        "story",
        f"{data}:3",
    ]
    assert [x.answer for x in mixed[::2]] == ["0", "1", "2"]
    everything = load_examples(f"{data}[:2] + {data}[-1:]")
    assert [x.answer for x in everything] == ["0", "9", "1"]


def test_a_remainder_is_less_than_a_box():
    for seed in range(300):
        facts, question, left = groups(random.Random(seed))
        per_box = int(re.search(r"boxes of (\d+)", facts[0]).group(1))
        assert 1 <= left < per_box


def test_same_named_files_in_a_mix_give_every_input_an_id_of_its_own(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.jsonl").write_text(
            "".join(json.dumps({"question": f"{folder} {i}?", "answer": str(i)}) + "\n" for i in range(3))
        )
    a, b = tmp_path / "a" / "train.jsonl", tmp_path / "b" / "train.jsonl"
    mixed = load_examples(f"{a} + {b}")
    # The default id is the file's path and line: the two files' line 1 are two inputs.
    assert [x.id for x in mixed] == [f"{a}:1", f"{b}:1", f"{a}:2", f"{b}:2", f"{a}:3", f"{b}:3"]


@pytest.mark.parametrize(
    "records, spec, first, second",
    [
        # Two lines of one file give one id.
        ([{"id": "q", "question": "1?", "answer": "1"}, {"id": "q", "question": "2?", "answer": "2"}], "{a}", 1, 2),
        # Two files give one id.
        ([{"id": "q", "question": "1?", "answer": "1"}], "{a} + {b}", 1, 1),
        # Overlapping slices take line 3 twice.
        ([{"question": f"{i}?", "answer": str(i)} for i in range(4)], "{a}[:3] + {a}[2:]", 3, 3),
    ],
)
def test_an_id_given_twice_in_one_set_is_refused_naming_both_places(tmp_path, records, spec, first, second):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for path in (a, b):
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    second_file = b if "{b}" in spec else a
    with pytest.raises(UserError, match=re.escape(f"is given twice, at {a}:{first} and at {second_file}:{second}")):
        load_examples(spec.format(a=a, b=b))


def test_ids_need_only_be_unique_within_one_set(tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i}?", "answer": str(i)}) + "\n" for i in range(4)))
    # Train and dev from one file are two sets: each is unique (their overlap is driver._check_inputs' to refuse).
    assert len(load_examples(f"{data}[:3]")) == 3 and len(load_examples(f"{data}[2:]")) == 2


def test_a_spec_names_its_files_absolutely_and_keeps_the_rest(tmp_path):
    from envisions_ray.data import absolute_spec

    (tmp_path / "tasks.txt").write_text("click-test\n")
    assert absolute_spec("data/train.jsonl[:-500] + ruletaker:meta.jsonl", tmp_path) == (
        f"{tmp_path}/data/train.jsonl[:-500] + ruletaker:{tmp_path}/meta.jsonl"
    )
    assert absolute_spec("/abs/../d.jsonl[-5:]", tmp_path) == "/d.jsonl[-5:]"
    assert absolute_spec("tasks:tasks.txt:0", tmp_path) == f"tasks:{tmp_path}/tasks.txt:0"
    for kept in ("tasks:click-test,enter-text:0", "builtin:arith:train", "hf:openai/gsm8k:main:train"):
        assert absolute_spec(kept, tmp_path) == kept
