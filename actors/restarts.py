"""How often Ray restarted the run's processes, read from Ray's actor table.

Ray restarts a dead generator, executor or pool actor by itself, and Ray Train a training job's
worker group (as new actors), so the driver never sees these faults: the table does. Its public
reader, `ray.util.state`, asks the dashboard, which a local run does not start; this reads the
table from the GCS instead, as that reader's server does.
"""

from __future__ import annotations

from collections import Counter

import ray
from ray._private import state

KINDS = {"Generator": "generator", "Executor": "executor", "CandidatePool": "pool"}
TRAIN_WORKER = "RayTrainWorker"


def _this_jobs_actors() -> list[dict]:
    job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
    return list(state.actors(job_id=job).values())


def actor_restarts() -> Counter:
    """Restarts so far of each kind's actors in this job, the dead ones' included."""
    counts = Counter({kind: 0 for kind in KINDS.values()})
    for actor in _this_jobs_actors():
        if actor["ActorClassName"] in KINDS:
            counts[KINDS[actor["ActorClassName"]]] += actor["NumRestarts"]
    return counts


def train_workers_started() -> int:
    """Ray Train workers started so far in this job: a worker group restarted after a failure is new actors."""
    return sum(actor["ActorClassName"] == TRAIN_WORKER for actor in _this_jobs_actors())
