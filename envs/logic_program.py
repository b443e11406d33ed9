"""Logic-LLM programs (Predicates / Facts / Rules / Query), parsed and answered with clingo.

The format, as the model writes it:

    Predicates:
    Big($x, bool) ::: Is x big?
    Facts:
    Big(Bob, True) ::: Bob is big.
    Rules:
    Big($x, True) && Red($x, False) >>> Kind($x, True) ::: ...
    Query:
    Kind(Bob, True) ::: ...

Every atom ends in a truth value, so `Red(Bob, False)` is a fact about Bob, not negation as
failure: the compiled program is positive and has exactly one model. An entity becomes a clingo
constant, `$x` a variable, `Pred(args, V)` the atom `p_pred(args, v)`. The answer is open-world:
True if the query atom is derived, False if the same atom with the opposite value is derived,
Unknown otherwise. A contradictory theory that derives both answers True, because the queried
atom itself holds (the first check, as Logic-LLM's Pyke runner makes it).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

SECTIONS = ("Predicates", "Facts", "Rules", "Query")
ATOM = re.compile(r"^\s*([A-Za-z_]\w*)\s*\(([^()]*)\)\s*$")
VALUES = {"true": "true", "false": "false"}
OPPOSITE = {"true": "false", "false": "true"}


class LogicError(Exception):
    """A program that cannot be parsed or answered; the message says where and why."""


@dataclass(frozen=True)
class Atom:
    predicate: str
    arguments: tuple[str, ...]  # entities, or variables starting with '$'
    value: str  # "true" or "false"

    def clingo(self, value: str | None = None) -> str:
        terms = [f"V_{a[1:]}" if a.startswith("$") else f"c_{a.lower()}" for a in self.arguments]
        return f"p_{self.predicate.lower()}({', '.join([*terms, value or self.value])})"

    def key(self, value: str | None = None) -> str:
        """The ground atom as clingo prints it in a model (no spaces), to look it up in `derive`'s set."""
        return self.clingo(value).replace(" ", "")


@dataclass(frozen=True)
class Rule:
    body: tuple[Atom, ...]
    head: Atom


@dataclass(frozen=True)
class Program:
    facts: tuple[Atom, ...]
    rules: tuple[Rule, ...]
    query: Atom


def parse(text: str) -> Program:
    """Parse a program, tolerating missing `:::` comments, extra spaces and blank lines."""
    section, facts, rules, queries = None, [], [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(":::", 1)[0].strip()
        if not line:
            continue
        header = line.rstrip(":").strip()
        if line.endswith(":") and header in SECTIONS:
            section = header
            continue
        if section is None:
            raise LogicError(
                f"line {number}: '{line}' comes before any section header ({', '.join(s + ':' for s in SECTIONS)})"
            )
        if section == "Predicates":
            continue  # declarations carry no logic; atoms are checked where they are used
        if section == "Rules":
            if ">>>" not in line:
                raise LogicError(f"line {number}: a rule needs '>>>' between its conditions and its conclusion")
            body, head = line.split(">>>", 1)
            rules.append(Rule(tuple(_atom(part, number) for part in body.split("&&")), _atom(head, number)))
        else:
            (facts if section == "Facts" else queries).append(_atom(line, number))
    if len(queries) != 1:
        raise LogicError(f"a program needs exactly one query under 'Query:', found {len(queries)}")
    return Program(tuple(facts), tuple(rules), queries[0])


def _atom(text: str, number: int) -> Atom:
    match = ATOM.match(text)
    if not match:
        raise LogicError(f"line {number}: '{text.strip()}' is not an atom like Pred(Entity, True)")
    arguments = [a.strip() for a in match.group(2).split(",")]
    value = VALUES.get(arguments[-1].lower())
    if value is None or len(arguments) < 2:
        raise LogicError(f"line {number}: '{text.strip()}' must end with True or False")
    for argument in arguments[:-1]:
        if not re.fullmatch(r"\$?[A-Za-z_]\w*", argument):
            raise LogicError(f"line {number}: '{argument}' is neither an entity nor a $variable")
    return Atom(match.group(1), tuple(arguments[:-1]), value)


def compile_program(program: Program) -> str:
    """The clingo text of the facts and rules (the query is asked of the model afterwards)."""
    lines = [f"{fact.clingo()}." for fact in program.facts]
    lines += [f"{rule.head.clingo()} :- {', '.join(atom.clingo() for atom in rule.body)}." for rule in program.rules]
    return "\n".join(lines)


def answer(text: str, timeout_s: float) -> str:
    """'True', 'False' or 'Unknown' for a program's query; LogicError on a bad program or timeout."""
    program = parse(text)
    if any(a.startswith("$") for a in program.query.arguments):
        raise LogicError("the query must name entities, not $variables")
    return answer_in(program.query, derive(program, timeout_s))


def derive(program: Program, timeout_s: float) -> set[str]:
    """The atoms the facts and rules derive (their one model), as `Atom.key` spells them."""
    import clingo

    messages: list[str] = []
    control = clingo.Control(["--warn=none"], logger=lambda code, message: messages.append(message.strip()))
    try:
        control.add("base", [], compile_program(program))
        # The timer interrupts solving. It cannot stop a grounding blow-up: the logic engine's
        # worker process is killed for that (envs/logic_engine.py).
        timer = threading.Timer(timeout_s, control.interrupt)
        timer.start()
        try:
            control.ground([("base", [])])
            derived: set[str] = set()
            result = control.solve(on_model=lambda model: derived.update(str(s) for s in model.symbols(atoms=True)))
        finally:
            timer.cancel()
    except RuntimeError as err:
        raise LogicError(messages[0].splitlines()[-1] if messages else str(err)) from None
    if result.interrupted:
        raise LogicError(f"timeout after {timeout_s}s")
    return derived


def answer_in(query: Atom, derived: set[str]) -> str:
    """The open-world answer to `query` given the atoms `derive` returned."""
    if query.key() in derived:
        return "True"
    if query.key(OPPOSITE[query.value]) in derived:
        return "False"
    return "Unknown"
