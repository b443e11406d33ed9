"""The executor group grows with queued work and shrinks when idle, within its bounds."""

import time

from envisions_ray.actors.executor import ExecutorGroup, scaling_step
from envisions_ray.config import EnvConfig
from envisions_ray.types import Example

SLOW_PROGRAM = "def solution():\n    import time\n    time.sleep(0.3)\n    return {n}"


def test_scaling_step_by_hand():
    bounds = dict(minimum=1, maximum=3, grow_after_s=2.0, shrink_after_s=30.0)
    assert scaling_step(1, queued=5, oldest_wait_s=2.5, idle_for_s=[], **bounds) == 1  # work waited too long
    assert scaling_step(1, queued=5, oldest_wait_s=1.5, idle_for_s=[], **bounds) == 0  # not long enough yet
    assert scaling_step(3, queued=5, oldest_wait_s=9.0, idle_for_s=[], **bounds) == 0  # at max_executors
    assert scaling_step(3, queued=0, oldest_wait_s=0.0, idle_for_s=[40.0, 31.0, 5.0], **bounds) == -2
    assert (
        scaling_step(2, queued=0, oldest_wait_s=0.0, idle_for_s=[40.0, 31.0], **bounds) == -1
    )  # never below num_executors
    assert scaling_step(1, queued=0, oldest_wait_s=0.0, idle_for_s=[99.0], **bounds) == 0
    assert (
        scaling_step(3, queued=1, oldest_wait_s=0.0, idle_for_s=[40.0, 31.0], **bounds) == 0
    )  # work is coming: keep them


def test_the_pool_grows_while_work_waits_and_shrinks_when_idle(ray_session):
    cfg = EnvConfig(
        num_executors=1, max_executors=3, grow_after_s=0.3, shrink_after_s=1.0, poll_s=0.05, settings={"timeout_s": 5.0}
    )
    pool = ExecutorGroup(cfg)
    batches = [[(SLOW_PROGRAM.format(n=n), Example(str(n), "", str(n)))] for n in range(12)]
    results = pool.execute(batches)
    assert [outcome.reward for [outcome] in results] == [1] * 12  # every call answered, in order
    assert pool.stats().peak == 3 and pool.stats().size == 3
    time.sleep(1.2)
    pool.tick()
    assert pool.stats().size == 1  # back to num_executors
    assert [o.reward for [o] in pool.execute(batches[:2])] == [1, 1]
    pool.close()


def test_a_fixed_pool_never_grows(ray_session):
    pool = ExecutorGroup(EnvConfig(num_executors=2, grow_after_s=0.0, poll_s=0.05, settings={"timeout_s": 5.0}))
    pool.execute([[(SLOW_PROGRAM.format(n=1), Example("1", "", "1"))] for _ in range(6)])
    assert pool.stats().peak == 2
    pool.close()
