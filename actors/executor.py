"""Environment-executor actors, and the group that feeds them and sizes itself to the queue.

Each executor actor owns one environment instance (a sandbox, a logic engine, a browser) on one
CPU, plus any custom resource the domain asks for (`browser: 1`), which is what makes a cluster's
autoscaler add executor nodes for pending browsers. A dead executor is restarted by Ray
(`max_restarts`) and the call it had in hand is run again (`max_task_retries`), so the driver never
sees the crash, only a slower result.

`ExecutorGroup` lives in the driver. Work waits in its queue, and an executor gets one call at a
time, so the queue shows how long work waits. The group starts with `num_executors`, adds one while
the oldest queued call has waited longer than `grow_after_s` (up to `max_executors`), and retires
executors idle longer than `shrink_after_s` (down to `num_executors`). A call goes preferably to an
idle executor whose last call had the same affinity (web: the same task, so its browser stays).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable

import ray

from envisions_ray.config import EnvConfig
from envisions_ray.envs import make_env
from envisions_ray.leftovers import processes_under
from envisions_ray.types import Example, Outcome


class Executor:
    def __init__(self, cfg: EnvConfig):
        self.env = make_env(cfg)

    def execute(self, jobs: list[tuple[str, Example]]) -> list[Outcome]:
        return [self.env.execute(solution, example) for solution, example in jobs]

    def describe(self, examples: list[Example]) -> list[str]:
        return [self.env.describe(example) for example in examples]

    def events(self) -> dict[str, int]:
        """What the environment counts of its own life (web: browser starts, crashes, restarts)."""
        return dict(getattr(self.env, "events", {}))

    def close(self) -> dict[str, int]:
        """Free what the environment holds (a browser, a worker process) before the actor goes;
        its last `events`."""
        self.env.close()
        return self.events()


def start_executor(cfg: EnvConfig):
    # Restart forever: an environment can crash on any input, and a run must not end for it.
    actor = ray.remote(Executor).options(
        num_cpus=1, resources=dict(cfg.resources), max_restarts=-1, max_task_retries=cfg.max_retries
    )
    return actor.remote(cfg)


def scaling_step(
    size: int,
    minimum: int,
    maximum: int,
    queued: int,
    oldest_wait_s: float,
    idle_for_s: list[float],
    grow_after_s: float,
    shrink_after_s: float,
) -> int:
    """+1: add an executor; -n: retire the n longest-idle ones; 0: hold. Nothing is retired while
    work waits: idle executors are about to get it."""
    if queued:
        return int(oldest_wait_s > grow_after_s and size < maximum)
    retirable = sum(1 for idle in idle_for_s if idle > shrink_after_s)
    return -min(retirable, size - minimum)


@dataclass(frozen=True)
class ExecutorStats:
    """What the group tells of itself for a metrics line."""

    size: int  # executors now
    peak: int  # the most at once, as the group scaled
    peak_processes: int  # the most processes under env.count_processes seen on this node (web: Chromium's)


@dataclass
class _Call:
    tag: object  # the caller's handle for the result
    start: Callable[[object], ray.ObjectRef]  # the executor actor's method, called on the arguments
    affinity: str
    queued_at: float


@dataclass
class _Seat:
    actor: object
    idle_since: float | None  # None while a call runs
    affinity: str = ""


class ExecutorGroup:
    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg = cfg
        self._minimum = cfg.num_executors
        self._maximum = max(cfg.max_executors or cfg.num_executors, cfg.num_executors)
        self._seats: list[_Seat] = [_Seat(start_executor(cfg), time.monotonic()) for _ in range(self._minimum)]
        self._queue: deque[_Call] = deque()
        self._running: dict = {}  # ObjectRef -> (seat, call)
        self._peak = len(self._seats)
        self._retired: list = []  # the `close` calls of retired executors: their last events
        self._peak_processes, self._counted_at = 0, 0.0  # of cfg.count_processes

    @property
    def actors(self) -> list:
        return [seat.actor for seat in self._seats]

    def submit_execution(self, tag: object, jobs: list[tuple[str, Example]], affinity: str = "") -> None:
        """Queue the (solution, example) jobs for one executor; `collect` gives back (tag, outcomes)."""
        self._submit(tag, lambda actor: actor.execute.remote(jobs), affinity)

    def execute(
        self, batches: list[list[tuple[str, Example]]], affinities: list[str] | None = None
    ) -> list[list[Outcome]]:
        """Every batch of (solution, example) jobs executed across the group; the outcomes in order."""
        return self._map([lambda actor, jobs=jobs: actor.execute.remote(jobs) for jobs in batches], affinities)

    def describe(self, batches: list[list[Example]], affinities: list[str] | None = None) -> list[list[str]]:
        """What the model reads for each example of every batch (envs/base.py), across the group."""
        return self._map([lambda actor, batch=batch: actor.describe.remote(batch) for batch in batches], affinities)

    def in_flight(self) -> list:
        return list(self._running)

    @property
    def busy(self) -> bool:
        """Calls queued or running."""
        return bool(self._queue or self._running)

    def collect(self, ref) -> tuple[object, object]:
        """A finished call's (tag, result); its executor takes the next queued call."""
        seat, call = self._running.pop(ref)
        result = ray.get(ref)
        seat.idle_since = time.monotonic()
        self.tick()
        return call.tag, result

    def tick(self) -> None:
        """Hand queued calls to idle executors, then grow or shrink."""
        self._dispatch()
        now = time.monotonic()
        if self.cfg.count_processes and now - self._counted_at > self.cfg.count_every_s:
            self._counted_at = now
            self._peak_processes = max(self._peak_processes, len(processes_under(self.cfg.count_processes)))
        oldest_wait = now - self._queue[0].queued_at if self._queue else 0.0
        idle = sorted((s for s in self._seats if s.idle_since is not None), key=lambda s: s.idle_since)
        change = scaling_step(
            len(self._seats),
            self._minimum,
            self._maximum,
            len(self._queue),
            oldest_wait,
            [now - s.idle_since for s in idle],
            self.cfg.grow_after_s,
            self.cfg.shrink_after_s,
        )
        if change > 0:
            self._seats.append(_Seat(start_executor(self.cfg), now))
            self._peak = max(self._peak, len(self._seats))
            self._dispatch()
        for seat in idle[: -change if change < 0 else 0]:
            self._seats.remove(seat)
            self._retired.append(seat.actor.close.remote())
            seat.actor.__ray_terminate__.remote()  # runs after close: the actor exits once its browser is gone

    def stats(self) -> ExecutorStats:
        return ExecutorStats(len(self._seats), self._peak, self._peak_processes)

    def events(self) -> dict[str, int]:
        """The environments' event counts, summed over every executor this group has had (one that
        Ray restarted counts from its restart). Waits for the executors' calls in hand."""
        total: Counter[str] = Counter()
        for call in self._retired + [actor.events.remote() for actor in self.actors]:
            try:
                total.update(ray.get(call))
            except ray.exceptions.RayError:  # an executor that died before it answered counted nothing we can read
                continue
        return dict(total)

    def close(self) -> None:
        """Close every executor's environment, then end the actors. ray.kill alone would leave
        their browsers running."""
        closing = [seat.actor.close.remote() for seat in self._seats]
        ray.wait(closing, num_returns=len(closing), timeout=self.cfg.close_timeout_s)
        for seat in self._seats:
            ray.kill(seat.actor)
        self._seats, self._queue, self._running = [], deque(), {}

    def _submit(self, tag: object, start: Callable[[object], ray.ObjectRef], affinity: str) -> None:
        self._queue.append(_Call(tag, start, affinity, time.monotonic()))
        self.tick()

    def _map(self, calls: list[Callable[[object], ray.ObjectRef]], affinities: list[str] | None) -> list:
        """Every call run across the group; the results in order."""
        for number, start in enumerate(calls):
            self._submit(number, start, affinities[number] if affinities else "")
        results = [None] * len(calls)
        while self.busy:
            ready, _ = ray.wait(self.in_flight(), num_returns=1, timeout=self.cfg.poll_s)
            if ready:
                number, result = self.collect(ready[0])
                results[number] = result
            else:
                self.tick()
        return results

    def _dispatch(self) -> None:
        while self._queue:
            idle = [s for s in self._seats if s.idle_since is not None]
            if not idle:
                return
            call = self._queue.popleft()
            seat = next((s for s in idle if s.affinity == call.affinity), idle[0])
            seat.affinity, seat.idle_since = call.affinity, None
            self._running[call.start(seat.actor)] = (seat, call)
