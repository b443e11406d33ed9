"""The schema of a metrics.jsonl line: built once per eval by envisions_ray/records.py, read by the
summary line (envisions_ray/summary.py), a resumed run (envisions_ray/resume.py) and every reader of
the file (best.read_lines, and through it the report).

The base model's line is policy 0; iteration k's is policy k and adds what the iteration explored,
pooled and trained (`IterationFacts`). The JSON keys are the field names. A line carries the
schema's version; one from before it had one reads as version 0, and what such a line lacks reads
as its field's default, as every reader took it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from envisions_ray.errors import UserError

METRICS_VERSION = 1
UNVERSIONED = 0  # a line written before lines carried a version
# Score fields that only some evals make: written only where they did.
OCCASIONAL_SCORES = ("per_task", "eval_refine")
# MetricsLine's fields that are JSON keys as they are, in the order a line writes them.
PLAIN_FIELDS = ("seconds", "tokens", "generation", "env_events", "restarts", "best")


@dataclass
class Scores:
    """A policy's greedy eval per eval set: accuracy ("eval"), its 95 % interval, the shares of its
    solutions that parsed and that ran; for task inputs the accuracy per task; with eval.refine the
    accuracy after one refine pass."""

    eval: dict[str, float] = field(default_factory=dict)
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    parsed: dict[str, float] = field(default_factory=dict)
    executable: dict[str, float] = field(default_factory=dict)
    per_task: dict[str, dict[str, float]] = field(default_factory=dict)
    eval_refine: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {name: value for name, value in asdict(self).items() if value or name not in OCCASIONAL_SCORES}

    @classmethod
    def from_json(cls, line: dict) -> Scores:
        return cls(**{f.name: line[f.name] for f in fields(cls) if f.name in line})


@dataclass(frozen=True)
class IterationFacts:
    """What iteration k explored, pooled and trained. The first fields are in every iteration's line;
    the rest came later."""

    iteration: int  # k, from 1: the policy it trained
    inputs: int
    explored: int  # inputs solved at least once
    positives: int
    pool_size: int
    unique_correct: int
    u1: int
    u2: int
    train_loss: float | None
    method: str | None = None
    generated_parsed: float | None = None  # shares of the explored and refined solutions
    generated_executable: float | None = None
    pairs: int = 0
    dpo_loss: float | None = None
    # Examples (a DPO pair counts once) over train.max_length (tokens.tokenize): trained after a cut
    # prompt, or not at all when the target alone is over it.
    train_prompt_cut: int = 0
    train_dropped_too_long: int = 0
    delta_logp: float | None = None
    ea: float | None = None
    stb: float | None = None
    executors: dict[str, int] = field(default_factory=dict)  # the executor group's size now and at its peak


@dataclass(frozen=True)
class MetricsLine:
    """One line of metrics.jsonl: a policy's eval, what went into it, and the best policy so far."""

    scores: Scores
    iteration: IterationFacts | None = None  # None: the base model's line
    grammar: bool | None = None  # were the policy's programs held to the prompt file's grammar
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    tokens: dict[str, int] = field(default_factory=dict)  # generated per stage
    generation: dict[str, dict[str, float]] = field(default_factory=dict)  # run_state.Generated per stage
    env_events: dict[str, int] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)  # per kind of actor, and of the train worker group
    best: dict | None = None  # the best policy so far (envisions_ray/best.py)
    version: int = METRICS_VERSION

    @property
    def policy(self) -> int:
        return 0 if self.iteration is None else self.iteration.iteration

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "policy": self.policy,
            **({} if self.iteration is None else asdict(self.iteration)),
            "grammar": self.grammar,
            **self.scores.to_json(),
            **{name: getattr(self, name) for name in PLAIN_FIELDS},
        }

    @classmethod
    def from_json(cls, line: dict) -> MetricsLine:
        facts = {f.name: line[f.name] for f in fields(IterationFacts) if f.name in line}
        return cls(
            Scores.from_json(line),
            IterationFacts(**facts) if "iteration" in line else None,
            **{name: line[name] for name in ("grammar", *PLAIN_FIELDS) if name in line},
            version=line.get("version", UNVERSIONED),
        )


def check_line(line: dict, where: str) -> dict:
    """The line, if it has what every reader of metrics takes for granted, in a version this reads."""
    scores, version = line.get("eval"), line.get("version", UNVERSIONED)
    if (
        not isinstance(line.get("policy"), int)
        or not isinstance(scores, dict)
        or not all(isinstance(value, (int, float)) for value in scores.values())
    ):
        raise UserError(
            f"{where}: not a metrics line: it needs 'policy' (an integer) and 'eval' (accuracy by eval set)"
        )
    if not isinstance(version, int) or version > METRICS_VERSION:
        raise UserError(
            f"{where}: written by a newer envisions-ray (metrics version {version!r}; this one reads up to "
            f"{METRICS_VERSION})"
        )
    return line
