"""One driver at a time on a run directory: a new run claims an empty one, a resumed run one that
holds its pool. The lock is the kernel's (flock), so it goes with a killed driver and --resume works."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from envisions_ray.errors import UserError
from envisions_ray.paths import POOL_FILE

LOCK_FILE = "driver.lock"  # in the run directory; names the driver that holds it


@contextmanager
def claimed_run_dir(run_dir: Path, resume: bool):
    """`run_dir`, held by this driver for the block: a new run's must hold no pool, a resumed run's must."""
    has_pool = (run_dir / POOL_FILE).exists()
    if resume and not has_pool:
        raise nothing_to_resume(run_dir)
    if not resume and has_pool:
        raise existing_run(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = (run_dir / LOCK_FILE).open("a+")
    except OSError as err:
        raise UserError(f"run directory {run_dir} is not writable: {err.strerror}") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise UserError(f"{run_dir} is in use by another driver ({lock.read().strip()}); stop it first") from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        lock.flush()
        yield


def nothing_to_resume(run_dir: Path) -> UserError:
    return UserError(f"nothing to resume in {run_dir}: it has no {POOL_FILE}")


def existing_run(run_dir: Path) -> UserError:
    return UserError(f"{run_dir} already holds a run: resume it with --resume {run_dir}, or set another run_dir")
