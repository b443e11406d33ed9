"""An actor's process id, for the tests that kill an actor or look at its children. Read through
Ray's `__ray_call__`, so the production actors carry no method for it."""

from __future__ import annotations

import os


def actor_pid(actor):
    """An ObjectRef of the process id of the worker that runs `actor`: a restarted actor's is new."""
    return actor.__ray_call__.remote(lambda instance: os.getpid())
