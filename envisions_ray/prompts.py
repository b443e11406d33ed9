"""Prompts, rendered from a domain's prompt file (YAML).

A prompt file holds an `instruction`, a `query` template, demonstration `shots`, the `refine`
template of paper appendix E, the `judge` template the Self-Rewarding baseline scores with, and the
`grammar` (xgrammar EBNF) of the domain's symbolic language, which constrains generation when
`generator.grammar` is on; a domain without one (math: Python) samples freely.
The exploration prompt with zero shots is the training prompt, so a trained model is always asked
exactly what it was trained on.

A shot may name the `task` it demonstrates (web: one per MiniWoB++ task); the few-shot prompt of
an input of that task then shows that task's shots only, as the paper's same-task 1-shot prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from envisions_ray.errors import UserError


@dataclass(frozen=True)
class Shot:
    problem: str
    solution: str
    task: str = ""


@dataclass(frozen=True)
class PromptBook:
    instruction: str
    query: str  # fields: {problem}
    refine_template: str  # fields: {problem}, {solution}
    shots: tuple[Shot, ...]
    judge_template: str = ""  # fields: {problem}, {solution}, {max_score}
    grammar: str = ""  # EBNF of the solutions; empty: none

    @classmethod
    def load(cls, path: str | Path) -> "PromptBook":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"prompt file not found: {path}")
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        try:
            shots = tuple(Shot(s["problem"], s["solution"].rstrip(), s.get("task", "")) for s in raw.get("shots") or [])
            grammar = raw.get("grammar") or ""
            _check_grammar(path, grammar)
            return cls(raw["instruction"].rstrip(), raw["query"], raw["refine"], shots, raw.get("judge", ""), grammar)
        except (KeyError, TypeError, AttributeError) as err:
            raise UserError(f"prompt file {path} needs instruction, query, refine and shots: missing {err}") from None

    def explore(self, problem: str, shots: int = 0, task: str = "") -> str:
        """The instruction, `shots` demonstrations (of `task`, where shots name one), then the
        problem; shots = 0 is the training prompt."""
        available = self.shots_for(task)
        if shots > len(available):
            raise UserError(
                f"{shots} shots asked for, but the prompt file has {len(available)}"
                + (f" for task '{task}'" if task else "")
            )
        demos = "".join(self.query.format(problem=s.problem) + s.solution + "\n\n" for s in available[:shots])
        return f"{self.instruction}\n\n{demos}{self.query.format(problem=problem)}"

    def shots_for(self, task: str) -> tuple[Shot, ...]:
        if any(shot.task for shot in self.shots):
            return tuple(shot for shot in self.shots if shot.task == task)
        return self.shots

    def refine(self, problem: str, solution: str) -> str:
        """Paper appendix E: repair or keep `solution`; also the L2 prompt, with a negative as `solution`."""
        return self.refine_template.format(problem=problem, solution=solution)

    def judge(self, problem: str, solution: str, max_score: int) -> str:
        """The Self-Rewarding baseline's scoring prompt for one candidate."""
        if not self.judge_template:
            raise UserError("method self_rewarding needs a `judge` template in the prompt file")
        return self.judge_template.format(problem=problem, solution=solution, max_score=max_score)


def _check_grammar(path: Path, grammar: object) -> None:
    """A grammar that does not compile is refused here, in one line, not by a generator mid-run."""
    if not isinstance(grammar, str):
        raise UserError(f"prompt file {path}: grammar must be one EBNF text")
    if grammar:
        import xgrammar  # it loads transformers and torch (about 1.5 s): only a prompt file with a grammar pays it

        try:
            xgrammar.Grammar.from_ebnf(grammar)
        except RuntimeError as err:
            first = next((line for line in str(err).splitlines() if line.strip()), "it does not parse")
            reason = re.sub(r"^\[[^]]*\]\s*\S+:\d+:\s*", "", first)  # xgrammar's time and source line
            raise UserError(f"prompt file {path}: the grammar is not valid EBNF: {reason}") from None
