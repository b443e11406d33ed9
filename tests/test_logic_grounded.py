"""Grounded answers: a right answer counts only when the program's own facts and rules reach it
(envs/logic_grounded.py), and the logic env's `grounded_positives` switch turns the rest into 0."""

import pytest

from envisions_ray.envs.logic_engine import LogicEngine, LogicSettings
from envisions_ray.envs.logic_grounded import UNGROUNDED, sentence_key, states, why_ungrounded
from envisions_ray.envs.logic_program import parse
from envisions_ray.types import Example

TIMEOUT_S = 1.0
CONTEXT = "Bob is big. The cat needs the dog. Big people are kind. If someone is kind then they are not cold."


def program(facts: str, rules: str, query: str) -> str:
    return f"Facts:\n{facts}\nRules:\n{rules}\nQuery:\n{query}\n"


def why(text: str, question: str, context: str = CONTEXT) -> str | None:
    return why_ungrounded(parse(text), context, question, TIMEOUT_S)


def test_true_derived_by_a_rule_is_grounded():
    assert why(program("Big(Bob, True)", "Big($x, True) >>> Kind($x, True)", "Kind(Bob, True)"), "Bob is kind.") is None


def test_query_copied_as_a_fact_is_not():
    reason = why(program("Big(Bob, True)\nKind(Bob, True)", "", "Kind(Bob, True)"), "Bob is kind.")
    assert reason is not None and "Kind(Bob, True) is a fact that no rule derives" in reason


def test_a_copy_that_the_rules_also_derive_is_grounded():
    text = program("Big(Bob, True)\nKind(Bob, True)", "Big($x, True) >>> Kind($x, True)", "Kind(Bob, True)")
    assert why(text, "Bob is kind.") is None


def test_a_fact_only_its_own_copy_derives_is_not():
    # The rule needs the copied fact itself: without it nothing reaches Kind(Bob, True).
    assert why(program("Kind(Bob, True)", "Kind($x, True) >>> Kind($x, True)", "Kind(Bob, True)"), "Bob is kind.")


def test_depth_zero_fact_that_the_context_states_is_grounded():
    assert why(program("Big(Bob, True)", "", "Big(Bob, True)"), "Bob is big.") is None
    # False because the context states the negation of the statement: "Bob is big." against "Bob is not big."
    assert why(program("Big(Bob, True)", "", "Big(Bob, False)"), "Bob is not big.") is None
    # A relation, negated with "does not".
    assert why(program("Needs(Cat, Dog, True)", "", "Needs(Cat, Dog, False)"), "The cat does not need the dog.") is None


def test_a_stated_sentence_of_the_other_polarity_does_not_ground_a_copy():
    # The context says Bob is big; the program answers True to "Bob is not big." by copying it.
    assert why(program("Big(Bob, False)", "", "Big(Bob, False)"), "Bob is not big.") is not None


def test_false_derived_by_a_rule_is_grounded():
    rules = "Big($x, True) >>> Kind($x, True)\nKind($x, True) >>> Cold($x, False)"
    assert why(program("Big(Bob, True)", rules, "Cold(Bob, True)"), "Bob is cold.") is None


def test_false_by_a_copied_negation_is_not():
    assert why(program("Cold(Bob, False)", "", "Cold(Bob, True)"), "Bob is cold.") is not None


def test_unknown_with_the_predicate_in_a_rule_is_grounded():
    # The cat is not big, but the program says when something is kind: it tried.
    text = program("Big(Bob, True)", "Big($x, True) >>> Kind($x, True)", "Kind(Cat, True)")
    assert why(text, "The cat is kind.") is None


def test_unknown_with_the_predicate_left_out_is_not():
    reason = why(program("Big(Bob, True)", "", "Kind(Cat, True)"), "The cat is kind.")
    assert reason == "the query's predicate Kind appears in no fact or rule"


def test_unknown_about_what_the_context_never_mentions_is_grounded():
    # Nothing in the context is young: a faithful program has nothing to say about it either.
    assert why(program("Big(Bob, True)", "", "Young(Bob, True)"), "Bob is young.") is None


def test_sentences_compare_by_words_and_polarity():
    assert sentence_key("The cat does not need the dog.") == (True, ("the", "cat", "need", "the", "dog"))
    assert sentence_key("The cat  NEEDS the dog") == (False, ("the", "cat", "need", "the", "dog"))
    assert states(CONTEXT, "The cat does not need the dog.", negated=True)
    assert not states(CONTEXT, "The cat does not need the dog.", negated=False)
    assert not states(CONTEXT, "Bob is kind.", negated=False)  # derived by the theory, not stated in it


@pytest.fixture(scope="module")
def engines():
    off = LogicEngine(LogicSettings(timeout_s=TIMEOUT_S))
    on = LogicEngine(LogicSettings(timeout_s=TIMEOUT_S, grounded_positives=True))
    yield off, on
    off.close()
    on.close()


def test_the_switch_turns_an_ungrounded_right_answer_into_a_negative(engines):
    off, on = engines
    example = Example("p", "Bob is kind.", "True", {"context": CONTEXT})
    copied = program("Kind(Bob, True)", "", "Kind(Bob, True)")
    outcome = off.execute(copied, example)
    assert (outcome.reward, outcome.error) == (1, "")
    outcome = on.execute(copied, example)
    assert (outcome.reward, outcome.output) == (0, "True") and outcome.error.startswith(UNGROUNDED)
    derived = program("Big(Bob, True)", "Big($x, True) >>> Kind($x, True)", "Kind(Bob, True)")
    assert on.execute(derived, example) == off.execute(derived, example)
    assert on.execute(derived, example).reward == 1


def test_the_switch_leaves_wrong_answers_as_they_were(engines):
    off, on = engines
    example = Example("p", "Bob is kind.", "False", {"context": CONTEXT})
    copied = program("Kind(Bob, True)", "", "Kind(Bob, True)")
    assert on.execute(copied, example) == off.execute(copied, example)
