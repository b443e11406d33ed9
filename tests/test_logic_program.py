"""Logic-LLM programs through clingo: hand-written theories, malformed programs, and GPT-4's dev programs."""

import json
from pathlib import Path

import pytest

from envisions_ray.envs.logic_program import LogicError, answer, parse

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "proofwriter_dev.jsonl"


def program(facts: str, rules: str, query: str) -> str:
    return f"Predicates:\nP($x, bool) ::: unused\n\nFacts:\n{facts}\n\nRules:\n{rules}\n\nQuery:\n{query}\n"


def test_negated_facts_answer_false():
    text = program("Red(Bob, False) ::: Bob is not red.", "", "Red(Bob, True) ::: Bob is red.")
    assert answer(text, 1.0) == "False"
    assert answer(program("Red(Bob, False)", "", "Red(Bob, False)"), 1.0) == "True"


def test_depth_five_chain():
    rules = "\n".join(f"A{i}($x, True) >>> A{i + 1}($x, True)" for i in range(5))
    assert answer(program("A0(Bob, True)", rules, "A5(Bob, True)"), 1.0) == "True"
    assert answer(program("A0(Bob, True)", rules, "A5(Ann, True)"), 1.0) == "Unknown"


def test_cyclic_rules_terminate():
    rules = "Cold($x, True) >>> Rough($x, True)\nRough($x, True) >>> Cold($x, True)"
    assert answer(program("Cold(Bob, True)", rules, "Rough(Bob, True)"), 1.0) == "True"
    assert answer(program("Big(Bob, True)", rules, "Rough(Bob, True)"), 1.0) == "Unknown"


def test_binary_relations_and_conditions_on_false():
    facts = "Chases(Cat, Bob, True)\nKind(Cat, False)"
    rules = "Chases($x, $y, True) && Kind($x, False) >>> Visits($y, $x, True)"
    assert answer(program(facts, rules, "Visits(Bob, Cat, True)"), 1.0) == "True"
    assert answer(program(facts, rules, "Visits(Cat, Bob, True)"), 1.0) == "Unknown"


def test_contradictory_facts_answer_true():
    # Both Red(Bob, True) and Red(Bob, False) hold; the queried atom is derived, so True.
    text = program("Red(Bob, True)\nBig(Bob, True)", "Big($x, True) >>> Red($x, False)", "Red(Bob, True)")
    assert answer(text, 1.0) == "True"
    assert answer(text.replace("Query:\nRed(Bob, True)", "Query:\nRed(Bob, False)"), 1.0) == "True"


def test_weak_model_formatting_is_tolerated():
    text = "Facts:\n   Red( Bob ,True )   \n\n\nRules:\nRed($x, True)>>>Big($x, True)\nQuery:\n\nBig(Bob, True)"
    assert answer(text, 1.0) == "True"


@pytest.mark.parametrize(
    "text, message",
    [
        ("Red(Bob, True)\nQuery:\nRed(Bob, True)", "line 1: 'Red(Bob, True)' comes before any section header"),
        ("Facts:\nRed(Bob)\nQuery:\nRed(Bob, True)", "line 2: 'Red(Bob)' must end with True or False"),
        ("Facts:\nRed Bob True\nQuery:\nRed(Bob, True)", "line 2: 'Red Bob True' is not an atom"),
        ("Rules:\nRed($x, True) Big($x, True)\nQuery:\nRed(Bob, True)", "line 2: a rule needs '>>>'"),
        ("Facts:\nRed(Bob, True)\n", "exactly one query"),
        ("Facts:\nRed(Bob, True)\nQuery:\nRed($x, True)", "the query must name entities"),
    ],
)
def test_malformed_programs_name_the_problem(text, message):
    with pytest.raises(LogicError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        answer(text, 1.0)


def test_unsafe_rule_is_an_engine_error():
    with pytest.raises(LogicError, match="unsafe"):
        answer(program("Red(Bob, True)", "Red($x, True) >>> Big($y, True)", "Big(Bob, True)"), 1.0)


def test_parse_keeps_structure():
    parsed = parse(
        program("Likes(Cow, Bob, True)", "Likes($x, $y, True) >>> Likes($y, $x, True)", "Likes(Bob, Cow, True)")
    )
    assert parsed.facts[0].arguments == ("Cow", "Bob") and parsed.rules[0].head.arguments == ("$y", "$x")


@pytest.mark.skipif(not DEV.is_file(), reason="shared data not beside this checkout")
def test_gpt4_dev_programs_all_parse_or_are_rejected_with_a_message():
    rows = [json.loads(line) for line in DEV.read_text().splitlines()]
    answered = correct = 0
    for row in rows:
        try:
            result = answer(row["logic_program"], 2.0)
        except LogicError as err:
            assert str(err)  # rejected, with a reason
            continue
        answered += 1
        correct += result == row["answer"]
    print(f"dev programs: {answered}/{len(rows)} answered, {correct / len(rows):.1%} match the gold label")
    assert answered >= 0.95 * len(rows) and correct >= 0.9 * len(rows)
