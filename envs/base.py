"""The environment interface: everything a domain needs to plug into the driver.

An environment turns an input into the text the model sees (`describe`), runs one symbolic
solution against that input and says whether it reached the expected output (`execute`), and
frees what it holds (`close`). Math runs Python in a sandbox, logic runs an engine, web drives a
browser: all three fit these three methods.
"""

from __future__ import annotations

from typing import Protocol

from envisions_ray.types import Example, Outcome


class Environment(Protocol):
    def describe(self, example: Example) -> str:
        """The problem as the model reads it in the prompt. A staticmethod where it needs nothing
        running (math, logic): a run then checks before it starts that every prompt fits the model."""

    def execute(self, solution: str, example: Example) -> Outcome:
        """Run `solution` on `example`; reward is 1 exactly when the outcome equals the answer."""

    def close(self) -> None:
        """Release processes, browsers or files. Safe to call twice."""
