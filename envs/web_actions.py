"""The web action language: what the model writes, parsed (never executed as Python) into steps.

One action per line; blank lines and `# comments` are skipped:

    click(ref=12)                 click an element
    click_text("Submit")          the same as click(text="Submit")
    type(ref=5, "hello")          focus an element and type
    press("Enter")                a key, or a combination such as "C-a"; press("ArrowUp", times=3)
    select(ref=7, "Orange")       choose an option of a <select> by its text
    mouse_click(ref=9)            a real mouse click at the element's centre (widgets that ignore
                                  JavaScript clicks, such as spinner arrows)

An element is named by `ref=N` (the number in the observation) or by what it is: `text="…"`
(the whole text; the exact case first, any case when nothing has it), `tag="…"`, `id="…"`,
`cls="…"` (one class), any of them together, and `nth=k` for the k-th match in page order. Names
are looked up on the live page when the step runs, so a step can name an element that an earlier
step made appear.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# The keys `press` accepts, by the name the model writes -> miniwob's name. Letters and digits are
# typed with `type`; a combination with Control is written "C-a".
KEYS = {
    name: f"<{name}>"
    for name in [
        "Enter",
        "Tab",
        "Backspace",
        "Delete",
        "Escape",
        "Space",
        "Home",
        "End",
        "PageUp",
        "PageDown",
        "ArrowUp",
        "ArrowDown",
        "ArrowLeft",
        "ArrowRight",
    ]
} | {f"C-{letter}": f"C-{letter}" for letter in "acvx"}

TARGET_KEYS = ("ref", "text", "tag", "id", "cls", "nth")
# verb -> (takes an element, takes a string after it)
VERBS = {
    "click": (True, False),
    "click_text": (False, True),
    "type": (True, True),
    "press": (False, True),
    "select": (True, True),
    "mouse_click": (True, False),
}
MAX_TIMES = 100  # press(..., times=k): enough to walk a slider end to end

CALL = re.compile(r"^([a-z_]+)\s*\((.*)\)$")
ARGUMENT = re.compile(r"""\s*(?:([a-z_]+)\s*=\s*)?("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|-?\d+)\s*(?:,|$)""")


class ActionError(ValueError):
    """A program that cannot be parsed or run; the message names the line."""


@dataclass(frozen=True)
class Target:
    """Which element a step acts on: a ref, or a description matched on the live page."""

    ref: int | None = None
    text: str | None = None
    tag: str | None = None
    id: str | None = None
    cls: str | None = None
    nth: int = 1

    def __str__(self) -> str:
        parts = [f"{key}={getattr(self, key)!r}" for key in TARGET_KEYS[:-1] if getattr(self, key) is not None]
        return ", ".join(parts + ([f"nth={self.nth}"] if self.nth != 1 else []))


@dataclass(frozen=True)
class Step:
    line: int
    verb: str
    target: Target | None = None
    text: str = ""  # what `type` types, the option `select` picks, the key `press` presses
    times: int = 1


def parse_program(program: str) -> list[Step]:
    steps = []
    for number, raw in enumerate(program.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            steps.append(_parse_line(line, number))
    if not steps:
        raise ActionError("the program has no actions")
    return steps


def _parse_line(line: str, number: int) -> Step:
    call = CALL.match(line)
    if call is None or call.group(1) not in VERBS:
        raise ActionError(f"line {number}: '{line[:60]}' is not an action ({', '.join(VERBS)})")
    verb, body = call.groups()
    positional, named = _arguments(body, number)
    takes_element, takes_text = VERBS[verb]
    if len(positional) != int(takes_text) or not all(isinstance(p, str) for p in positional):
        raise ActionError(f"line {number}: {verb} takes {'one quoted string' if takes_text else 'no quoted string'}")
    text = positional[0] if positional else ""
    times = named.pop("times", 1) if verb == "press" else 1
    if verb == "click_text":
        verb, named = "click", {"text": text, **named}
    target = _target(named, number, verb) if takes_element or verb == "click" else None
    if target is None and named:
        raise ActionError(f"line {number}: {verb} takes no {', '.join(named)}")
    if verb == "press" and text not in KEYS:
        raise ActionError(f"line {number}: unknown key '{text}' (keys: {', '.join(KEYS)})")
    if not isinstance(times, int) or not 1 <= times <= MAX_TIMES:
        raise ActionError(f"line {number}: times must be a number from 1 to {MAX_TIMES}")
    return Step(number, verb, target, "" if verb == "click" else text, times)


def _arguments(body: str, number: int) -> tuple[list, dict]:
    positional, named, position = [], {}, 0
    while position < len(body.strip()):
        match = ARGUMENT.match(body, position)
        if match is None:
            raise ActionError(f"line {number}: cannot read the arguments '{body[:60]}'")
        key, literal = match.groups()
        value = ast.literal_eval(literal)  # a quoted string or an integer, nothing else
        if key is None:
            positional.append(value)
        elif key in named:
            raise ActionError(f"line {number}: {key} is given twice")
        else:
            named[key] = value
        position = match.end()
    return positional, named


def _target(named: dict, number: int, verb: str) -> Target:
    unknown = [key for key in named if key not in TARGET_KEYS]
    if unknown:
        raise ActionError(
            f"line {number}: {verb} has no argument '{unknown[0]}' (an element is named by {', '.join(TARGET_KEYS)})"
        )
    if not any(key in named for key in TARGET_KEYS[:-1]):
        raise ActionError(f'line {number}: {verb} needs an element: ref=N, text="...", tag=, id= or cls=')
    for key, value in named.items():
        wanted = int if key in ("ref", "nth") else str
        if not isinstance(value, wanted):
            raise ActionError(f"line {number}: {key} must be {'a number' if wanted is int else 'a quoted string'}")
    if named.get("nth", 1) < 1:
        raise ActionError(f"line {number}: nth counts from 1")
    return Target(**named)


def matches(target: Target, element, exact_case: bool = True) -> bool:
    """Does a page element (envs/web_dom.Element, text children folded in) fit the target? Text is
    compared whole, spaces trimmed; without `exact_case` also regardless of case."""
    if target.ref is not None and element.ref != target.ref:
        return False
    if target.text is not None:
        wanted, text = target.text.strip(), element.text.strip()
        if (text != wanted) if exact_case else (text.lower() != wanted.lower()):
            return False
    if target.tag is not None and element.tag != target.tag.lower():
        return False
    if target.id is not None and element.id != target.id:
        return False
    return target.cls is None or target.cls in element.classes.split()
