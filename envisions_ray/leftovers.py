"""Temporary directories named after their owner's pid, and the sweep that removes a dead owner's.

A SIGKILLed executor cannot clean up: its browser, or its sandbox server in rlimit-only mode, keeps
running and its directory stays in /tmp; nor can a SIGKILLed generator remove its untied weights.
Whoever makes the next directory of the same kind first kills what still runs from the dead owner's
directories, then removes them; so does whoever closes one, since a run's last executor may make no
new directory after a sibling died.

Both the environments (envs/) and the actors (actors/) use it, so it lives beside them in the
package and imports neither (.importlinter).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path


def owned_directory(prefix: str) -> Path:
    """A fresh directory `{prefix}{pid}-XXXX` in the temp dir, after sweeping dead owners' ones."""
    sweep_orphans(prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def remove_directory(directory: Path) -> None:
    """Kill what still runs from `directory`, then remove it."""
    kill(processes_under(str(directory)))
    shutil.rmtree(directory, ignore_errors=True)


def sweep_orphans(prefix: str) -> None:
    for directory in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        owner = directory.name.removeprefix(prefix).split("-")[0]
        if owner.isdigit() and not alive(int(owner)):
            remove_directory(directory)


def alive(pid: int) -> bool:
    """Running: a killed owner stays a zombie in /proc until its parent reaps it."""
    try:
        return not is_zombie(Path(f"/proc/{pid}"))
    except OSError:
        return False


def is_zombie(entry: Path) -> bool:
    return (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def processes_under(directory: str) -> list[int]:
    """Live (not zombie) processes whose command line or environment mentions `directory`.

    chromedriver is found by its environment (TMPDIR), Chromium and its helpers and the sandbox
    server by their command line (--user-data-dir, the wrapper or the server script's path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if is_zombie(entry):
                continue
            if (
                directory.encode() in (entry / "cmdline").read_bytes()
                or directory.encode() in (entry / "environ").read_bytes()
            ):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found
