"""Environment-executor actors, and the pool that feeds them and sizes itself to the queue.

Each executor actor owns one environment instance (a sandbox, a logic engine, a browser) on one
CPU, plus any custom resource the domain asks for (`browser: 1`), which is what makes a cluster's
autoscaler add executor nodes for pending browsers. A dead executor is restarted by Ray
(`max_restarts`) and the call it had in hand is run again (`max_task_retries`), so the driver never
sees the crash, only a slower result.

`ExecutorPool` lives in the driver. Work waits in its queue, and an executor gets one call at a
time, so the queue shows how long work waits. The pool starts with `num_executors`, adds one while
the oldest queued call has waited longer than `grow_after_s` (up to `max_executors`), and retires
executors idle longer than `shrink_after_s` (down to `num_executors`). A call goes preferably to an
idle executor whose last call had the same affinity (web: the same task, so its browser stays).
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from dataclasses import dataclass

import ray

from envisions_ray.config import EnvConfig
from envisions_ray.envs import make_env
from envisions_ray.envs.leftovers import processes_under
from envisions_ray.types import Example, Outcome


class Executor:
    def __init__(self, cfg: EnvConfig):
        self.env = make_env(cfg)

    def execute(self, jobs: list[tuple[str, Example]]) -> list[Outcome]:
        return [self.env.execute(solution, example) for solution, example in jobs]

    def describe(self, examples: list[Example]) -> list[str]:
        return [self.env.describe(example) for example in examples]

    def pid(self) -> int:
        """The worker process id, so a crash can be provoked and watched."""
        return os.getpid()

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


@dataclass
class _Call:
    tag: object  # the caller's handle for the result
    method: str
    args: tuple
    affinity: str
    queued_at: float


@dataclass
class _Seat:
    actor: object
    idle_since: float | None  # None while a call runs
    affinity: str = ""


class ExecutorPool:
    def __init__(self, cfg: EnvConfig) -> None:
        self.cfg = cfg
        self.minimum = cfg.num_executors
        self.maximum = max(cfg.max_executors or cfg.num_executors, cfg.num_executors)
        self.seats: list[_Seat] = [_Seat(start_executor(cfg), time.monotonic()) for _ in range(self.minimum)]
        self.queue: deque[_Call] = deque()
        self.running: dict = {}  # ObjectRef -> (seat, call)
        self.peak = len(self.seats)
        self.retired: list = []  # the `close` calls of retired executors: their last events
        self.peak_processes, self.counted_at = 0, 0.0  # of cfg.count_processes

    @property
    def actors(self) -> list:
        return [seat.actor for seat in self.seats]

    def submit(self, tag, method: str, args: tuple, affinity: str = "") -> None:
        self.queue.append(_Call(tag, method, args, affinity, time.monotonic()))
        self.tick()

    def in_flight(self) -> list:
        return list(self.running)

    @property
    def busy(self) -> bool:
        """Calls queued or running."""
        return bool(self.queue or self.running)

    def collect(self, ref) -> tuple[object, object]:
        """A finished call's (tag, result); its executor takes the next queued call."""
        seat, call = self.running.pop(ref)
        result = ray.get(ref)
        seat.idle_since = time.monotonic()
        self.tick()
        return call.tag, result

    def tick(self) -> None:
        """Hand queued calls to idle executors, then grow or shrink."""
        self._dispatch()
        now = time.monotonic()
        if self.cfg.count_processes and now - self.counted_at > self.cfg.count_every_s:
            self.counted_at = now
            self.peak_processes = max(self.peak_processes, len(processes_under(self.cfg.count_processes)))
        oldest_wait = now - self.queue[0].queued_at if self.queue else 0.0
        idle = sorted((s for s in self.seats if s.idle_since is not None), key=lambda s: s.idle_since)
        change = scaling_step(
            len(self.seats),
            self.minimum,
            self.maximum,
            len(self.queue),
            oldest_wait,
            [now - s.idle_since for s in idle],
            self.cfg.grow_after_s,
            self.cfg.shrink_after_s,
        )
        if change > 0:
            self.seats.append(_Seat(start_executor(self.cfg), now))
            self.peak = max(self.peak, len(self.seats))
            self._dispatch()
        for seat in idle[: -change if change < 0 else 0]:
            self.seats.remove(seat)
            self.retired.append(seat.actor.close.remote())
            seat.actor.__ray_terminate__.remote()  # runs after close: the actor exits once its browser is gone

    def map(self, method: str, batches: list[tuple], affinities: list[str] | None = None) -> list:
        """Run `method` on every batch of arguments across the pool; the results in order."""
        for number, args in enumerate(batches):
            self.submit(number, method, args, affinities[number] if affinities else "")
        results = [None] * len(batches)
        while self.busy:
            ready, _ = ray.wait(self.in_flight(), num_returns=1, timeout=self.cfg.poll_s)
            if ready:
                number, result = self.collect(ready[0])
                results[number] = result
            else:
                self.tick()
        return results

    def events(self) -> dict[str, int]:
        """The environments' event counts, summed over every executor this pool has had (one that
        Ray restarted counts from its restart). Waits for the executors' calls in hand."""
        total: Counter[str] = Counter()
        for call in self.retired + [actor.events.remote() for actor in self.actors]:
            try:
                total.update(ray.get(call))
            except ray.exceptions.RayError:  # an executor that died before it answered counted nothing we can read
                continue
        return dict(total)

    def close(self) -> None:
        """Close every executor's environment, then end the actors. ray.kill alone would leave
        their browsers running."""
        closing = [seat.actor.close.remote() for seat in self.seats]
        ray.wait(closing, num_returns=len(closing), timeout=self.cfg.close_timeout_s)
        for seat in self.seats:
            ray.kill(seat.actor)
        self.seats, self.queue, self.running = [], deque(), {}

    def _dispatch(self) -> None:
        while self.queue:
            idle = [s for s in self.seats if s.idle_since is not None]
            if not idle:
                return
            call = self.queue.popleft()
            seat = next((s for s in idle if s.affinity == call.affinity), idle[0])
            seat.affinity, seat.idle_since = call.affinity, None
            self.running[getattr(seat.actor, call.method).remote(*call.args)] = (seat, call)
