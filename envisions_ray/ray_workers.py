"""What every Ray worker of a run started on this machine does first: `connect_ray` names `setup`
as ray.init's worker_process_setup_hook. Runs joined to a cluster keep the cluster's settings."""

from __future__ import annotations

import logging

# Ray Train's placement-group cleaner asks the State API once a second whether the training
# controller still lives. The State API is served by the dashboard, which a run started here goes
# without, so the cleaner warned every second of every training job that it could not ask. It can
# do nothing without that answer either way; what is left of a job ends with its run's Ray.
PLACEMENT_GROUP_CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"


def setup() -> None:
    logging.getLogger(PLACEMENT_GROUP_CLEANER_LOGGER).setLevel(logging.ERROR)
