"""The sweep of a dead owner's temporary directory: what runs from it is killed, then it goes."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from envisions_ray.leftovers import alive, owned_directory, remove_directory, sweep_orphans

PREFIX = "envisions-test-leftovers-"


def dead_owners_directory(reap: bool) -> tuple[Path, subprocess.Popen, subprocess.Popen]:
    """A directory named after a process that is gone (a zombie unless reaped), the owner, and a
    process running from the directory. The caller keeps the owner: a dropped Popen reaps it."""
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    directory = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{owner.pid}-"))
    # Its command line names the directory, as Chromium's names its profile.
    survivor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(directory)])
    owner.kill()
    if reap:
        owner.wait()
    else:
        deadline = time.monotonic() + 10
        while alive(owner.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return directory, owner, survivor


def test_a_reaped_owners_directory_and_its_processes_are_swept():
    directory, _, survivor = dead_owners_directory(reap=True)
    sweep_orphans(PREFIX)
    assert survivor.wait(timeout=10) == -9 and not directory.exists()


def test_a_zombie_owner_counts_as_dead():
    directory, owner, survivor = dead_owners_directory(reap=False)
    assert Path(f"/proc/{owner.pid}").exists()  # not reaped: still in /proc
    sweep_orphans(PREFIX)
    assert survivor.wait(timeout=10) == -9 and not directory.exists()


def test_a_live_owners_directory_stays():
    directory = owned_directory(PREFIX)  # this test's own process owns it
    sweep_orphans(PREFIX)
    assert directory.exists()
    remove_directory(directory)
    assert not directory.exists()
