"""Logic environment: answers Logic-LLM programs with clingo and checks True / False / Unknown.

The model reads a ProofWriter theory (`context`) and a statement (`question`), and writes a program
(envs/logic_program.py has the format and the open-world semantics). The program is answered in a
worker process (envs/logic_worker.py) with two limits: clingo's own interrupt after `timeout_s`,
and, for a grounding blow-up that the interrupt cannot reach, the worker is killed once the reply
is `backstop_margin_s` late. The executor actor itself never waits longer than that for the
worker, and lives on. With `grounded_positives` a right answer also has to be grounded
(envs/logic_grounded.py), a check run here, outside the worker's limits: it solves the answered
program again, or less of it (positive programs ground to a subset), so it costs at most about
twice what the worker's solve cost.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from envisions_ray.envs.line_server import LineServer, ServerLost
from envisions_ray.envs.logic_grounded import UNGROUNDED, why_ungrounded
from envisions_ray.envs.logic_program import LogicError, parse
from envisions_ray.envs.logic_worker import OUT_OF_MEMORY
from envisions_ray.errors import UserError
from envisions_ray.types import Example, Outcome

STARTUP_TIMEOUT_S = 30.0  # the interpreter and clingo import, on a busy machine


@dataclass
class LogicSettings:
    """`env.settings` of the logic domain."""

    # clingo's interrupt fires after this; it stops solving but not grounding.
    timeout_s: float = 1.0
    # The worker is killed when a reply is this late past timeout_s: the grounding backstop.
    backstop_margin_s: float = 2.0
    # Address-space limit of the worker process.
    memory_mb: int = 1024
    # A departure from the paper (docs/domains/logic.md "Grounded positives"): a right answer scores 1 only if the
    # program's own facts and rules reach it, so a copied query or a left-out predicate is a negative.
    grounded_positives: bool = False


class LogicEngine:
    Settings = LogicSettings

    def __init__(self, cfg: LogicSettings) -> None:
        self.cfg = cfg
        command = [sys.executable, "-m", "envisions_ray.envs.logic_worker", str(cfg.memory_mb)]
        self._worker = LineServer(command, "logic worker", STARTUP_TIMEOUT_S)
        try:
            self._worker.start()
        except ServerLost as err:
            self._worker.close()
            raise UserError(f"the logic engine failed to start: {err}") from None

    @staticmethod
    def describe(example: Example) -> str:
        context = example.meta.get("context")
        if not context:
            raise UserError(f"logic input '{example.id}' has no 'context' (the theory the question is about)")
        return f"Context: {context}\nQuestion: Is the following statement true, false, or unknown? {example.question}"

    def execute(self, solution: str, example: Example) -> Outcome:
        request = {"program": solution, "timeout_s": self.cfg.timeout_s}
        try:
            reply = self._worker.request(request, self.cfg.timeout_s + self.cfg.backstop_margin_s)
        except ServerLost as err:  # grounding blow-up or a dead worker: the next call starts a new one
            return Outcome(reward=0, error=str(err))
        answer, error = reply.get("answer", ""), reply.get("error", "")
        if error == OUT_OF_MEMORY:
            self._worker.stop()  # the next program gets a worker with a fresh heap
        # Labels as datasets spell them: "True", "true", " TRUE ".
        reward = int(answer.lower() == example.answer.strip().lower())
        if reward and self.cfg.grounded_positives:
            context = example.meta.get("context", "")  # `envisions exec` may give none: it states nothing
            try:
                reason = why_ungrounded(parse(solution), context, example.question, self.cfg.timeout_s)
            except LogicError as err:  # the check's own solve ran out of time
                reason = str(err)
            if reason:
                return Outcome(reward=0, output=answer, error=f"{UNGROUNDED}{reason}")
        return Outcome(reward=reward, output=answer, error=error)

    def close(self) -> None:
        self._worker.close()

    def __del__(self) -> None:
        if hasattr(self, "_worker"):
            self.close()
