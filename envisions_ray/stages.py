"""Stages own their bookkeeping. A stage of an iteration runs through `Stages`, which skips what a
resumed run has done, times it and records its result, all in the run's candidate pool
(actors/pool.py), which is all `--resume` needs:

- a sampling stage (explore, refine) commits every executed batch as trajectories; resumed, it
  asks only the requests that have none;
- a stage run once (select, train) is marked done with what it returned; resumed, it is given that;
- a timed stage (a method's examples, handoff, eval) runs again: it is cheap, or must see the policy;
- the record writes the metrics line and marks the iteration finished; resumed, a finished
  iteration is skipped whole.

Each stage's wall time goes to the pool under this driver's session, so that a resumed
iteration's seconds add up.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Callable, TypeVar

from envisions_ray.actors.backend import Sample
from envisions_ray.metrics_line import MetricsLine
from envisions_ray.records import record
from envisions_ray.run_state import Explorer, Generated, Request, Run, Sink
from envisions_ray.streaming import stream
from envisions_ray.types import Outcome, Sampling, Trajectory

FINISHED = "eval"  # the stage marked once an iteration's metrics line is written

Result = TypeVar("Result")


@dataclass
class Stages:
    """Iteration `iteration`'s stages (actors.pool.BASE_MODEL: the base model's eval)."""

    run: Run
    iteration: int
    seconds: dict[str, float] = field(default_factory=dict)  # this driver's wall time per stage

    @property
    def finished(self) -> bool:
        """The iteration's metrics line is written: a resumed run has nothing left of it to do."""
        return self.run.pool.is_done(self.iteration, FINISHED)

    def timed(self, stage: str, work: Callable[[], Result]) -> Result:
        """`work`'s result, timed; run again by a resumed run."""
        with self._clock(stage):
            return work()

    def once(self, stage: str, work: Callable[[], Result | None], kept: type[Result] | None = None) -> Result | None:
        """`work`'s result, run unless a resumed run has done it. The result is marked done with the
        stage, and kept when `kept` names its dataclass, to be given back; a result of None did nothing
        to keep, and the stage runs again on a resume."""
        pool = self.run.pool
        with self._clock(stage):
            if pool.is_done(self.iteration, stage):
                detail = pool.stage_detail(self.iteration, stage) if kept else None
                return None if detail is None else kept(**json.loads(detail))
            result = work()
            if result is not None:
                pool.mark_done(self.iteration, stage, json.dumps(asdict(result)) if kept else None)
            return result

    def sample(
        self, stage: str, requests: list[Request], sampling: Sampling, explorer: Explorer | None = None
    ) -> Generated:
        """Each request answered and executed (`streaming.stream`), committed to the pool as this
        stage's trajectories; a request the pool holds trajectories of is not asked again."""
        with self._clock(stage):
            asked = {(t.example_id, t.parent_id) for t in self.run.pool.trajectories(self.iteration, stage)}
            todo = [request for request in requests if _key(request) not in asked]
            return stream(self.run, todo, sampling, recording(self.run, self.iteration, stage), explorer).generated

    def record(self, line: MetricsLine) -> None:
        """The metrics line written (envisions_ray/records.py), then the iteration marked finished: a
        driver killed in between writes it again, and readers take a policy's last line."""
        record(self.run, line.to_json())
        self.run.pool.mark_done(self.iteration, FINISHED)

    @contextmanager
    def _clock(self, stage: str):
        """Adds the block's wall time to `stage` (select and a method's examples may share one), in
        the pool under this driver's session: a retried call rewrites, never adds twice."""
        start = time.perf_counter()
        yield
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
        self.run.pool.record_seconds(self.iteration, stage, self.run.session, self.seconds[stage])


def recording(run: Run, i: int, source: str) -> Sink:
    """A sink that commits every executed batch to the pool as iteration i's `source` trajectories;
    each request is sampled from a seed of (i, source) and what it asks (`Request.seed`)."""

    def keep(batch: list[tuple[Request, Sample, Outcome]]) -> None:
        # A batch is one request's n samples, in order: the position is each one's `sample` key.
        run.pool.record(
            [_trajectory(request, sample, outcome, i, source, k) for k, (request, sample, outcome) in enumerate(batch)]
        )

    return Sink(source, with_self_reward=True, keep=keep, seeding=(i, source))


def _key(request: Request) -> tuple[str, int | None]:
    """What a request asks, as its trajectories record it: the input, and the refined trajectory."""
    return request.example.id, request.parent.id if request.parent else None


def _trajectory(
    request: Request, sample: Sample, outcome: Outcome, iteration: int, source: str, index: int
) -> Trajectory:
    return Trajectory(
        request.example.id,
        sample.text,
        outcome.reward,
        sample.self_reward,
        iteration,
        source,
        outcome.output,
        outcome.error,
        parent_id=request.parent.id if request.parent else None,
        sample=index,
    )
