"""Grounded answers: whether a logic program reached its answer through its own facts and rules.

With three labels, a program that ignores the theory is right a third of the time: it copies the
statement into its facts (True), or never says anything about the statement's predicate (Unknown).
An answer is grounded when:

- **True / False.** The deciding atom (the query atom for True, the same atom with the opposite
  value for False) is derived by the rules without any fact that is that very atom; or it is such
  a fact and the context states the answer: a sentence of the context is the statement (True) or
  its negation (False). ProofWriter's depth-0 statements are sentences of the theory, and then
  the fact is the faithful translation, not a copy of the query.
- **Unknown.** The query's predicate occurs in a fact or a rule (its head or its conditions): the
  program said something about it. A program that names it only in the query left it out, unless
  the context is silent on the statement: a word of the statement occurs nowhere in the context
  ("The cat is young." where nothing is young), so a faithful translation has nothing to say
  about it either (7 of ProofWriter dev's 200 Unknown statements, 27 of train's 1,000).

Sentences are compared as ProofWriter writes them: lower case, words only, "not" and the "does"
of "does not" set aside as the polarity, and each word's final "s" dropped so that "needs" and
"does not need" meet. The facts and rules are positive, so without the deciding facts they ground
to a subset of what already answered: the second solve costs at most as much as the first.
"""

from __future__ import annotations

import re
from dataclasses import replace

from envisions_ray.envs.logic_program import OPPOSITE, Atom, Program, answer_in, derive

UNGROUNDED = "ungrounded: "  # the env's error starts with this when a right answer is not grounded
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"[a-z]+")  # ProofWriter's sentences are plain English words
NEGATION = "not"
NEGATION_AUXILIARY = "does"  # "does not need": set aside with the "not" it comes before


def why_ungrounded(program: Program, context: str, question: str, timeout_s: float) -> str | None:
    """Why the program's answer is not grounded in its facts and rules; None when it is."""
    derived = derive(program, timeout_s)
    result = answer_in(program.query, derived)
    query = program.query
    if result == "Unknown":
        if mentions(program, query.predicate) or silent_on(context, question):
            return None
        return f"the query's predicate {query.predicate} appears in no fact or rule"
    deciding = query if result == "True" else replace(query, value=OPPOSITE[query.value])
    if not any(fact.key() == deciding.key() for fact in program.facts):
        return None  # only rules derive it
    without_copies = replace(program, facts=tuple(f for f in program.facts if f.key() != deciding.key()))
    if deciding.key() in derive(without_copies, timeout_s):
        return None  # the rules reach it without the fact
    if states(context, question, negated=result == "False"):
        return None
    return f"{_spelled(deciding)} is a fact that no rule derives and the context does not state: a copied answer"


def mentions(program: Program, predicate: str) -> bool:
    """Whether a fact or a rule of the program uses the predicate (clingo ignores its case)."""
    atoms = [*program.facts, *(atom for rule in program.rules for atom in (*rule.body, rule.head))]
    return any(atom.predicate.lower() == predicate.lower() for atom in atoms)


def states(context: str, statement: str, negated: bool) -> bool:
    """Whether a sentence of the context is the statement (or, when `negated`, its negation)."""
    polarity, words = sentence_key(statement)
    return (polarity != negated, words) in {sentence_key(s) for s in SENTENCE_END.split(context.strip())}


def silent_on(context: str, statement: str) -> bool:
    """Whether some word of the statement (its polarity set aside) occurs nowhere in the context."""
    _, words = sentence_key(statement)
    return not set(words) <= {_stem(word) for word in WORD.findall(context.lower())}


def sentence_key(sentence: str) -> tuple[bool, tuple[str, ...]]:
    """(negated, words) of a sentence: 'The cat does not need Bob.' -> (True, ('the', 'cat', 'need', 'bob'))."""
    words = WORD.findall(sentence.lower())
    negated = NEGATION in words
    kept = [
        w
        for i, w in enumerate(words)
        if w != NEGATION and not (w == NEGATION_AUXILIARY and words[i + 1 : i + 2] == [NEGATION])
    ]
    return negated, tuple(_stem(word) for word in kept)


def _stem(word: str) -> str:
    """A final "s" dropped: "needs" and the "need" of "does not need" meet."""
    return word.removesuffix("s")


def _spelled(atom: Atom) -> str:
    return f"{atom.predicate}({', '.join([*atom.arguments, atom.value.capitalize()])})"
