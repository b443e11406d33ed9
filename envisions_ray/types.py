"""The plain data that flows between generators, environments, the pool and the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Example:
    """One input x with its expected output y. `id` is stable across iterations."""

    id: str
    question: str
    answer: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    origin: str = field(default="", compare=False, hash=False)  # where it was read (file:line, or its spec)

    @property
    def task(self) -> str:
        """The group the input belongs to (web: its MiniWoB++ task); empty for a dataset's problems."""
        return self.meta.get("task", "")


# An environment's error starts with this when the solution is not a program of its language at
# all, as against a program that ran and failed: the parse share counts the difference.
PARSE_ERROR = "parse error: "


@dataclass(frozen=True)
class Outcome:
    """What an environment says about one solution: binary reward b, what it produced, why not."""

    reward: int
    output: str = ""
    error: str = ""


@dataclass(frozen=True)
class Trajectory:
    """T = (x, y, a, b, r) plus bookkeeping (ALGORITHM.md, "Objects")."""

    example_id: str
    solution: str
    reward: int
    self_reward: float
    iteration: int
    source: str  # "explore" or "refine"
    output: str = ""
    error: str = ""
    id: int | None = None  # row id once the candidate pool has stored it
    parent_id: int | None = None  # for a refined trajectory: the id of the one it refined
    # Which of the n samples drawn for one prompt. With iteration, source, example and parent it
    # is the trajectory's stable key: a batch delivered twice (a retried call) is stored once.
    sample: int = 0


@dataclass(frozen=True)
class TrainExample:
    prompt: str
    target: str
    kind: str  # "l1" or "l2", kept for per-loss reporting
    example_id: str = ""  # the input's id (a pool example's); empty for a row scored, not trained on


@dataclass(frozen=True)
class PreferenceExample:
    """One DPO pair: the same prompt with a preferred and a rejected target."""

    prompt: str
    chosen: str
    rejected: str
    example_id: str = ""  # the input's id


@dataclass(frozen=True)
class Sampling:
    """How to sample: n solutions per prompt, at this temperature (0: greedy), up to this many tokens."""

    n: int
    temperature: float
    max_new_tokens: int
