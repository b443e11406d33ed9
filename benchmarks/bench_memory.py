"""A command's peak memory, beside envisions_ray/memory.py's estimate, to check the one against the other.

    python benchmarks/bench_memory.py [--every 0.5] -- envisions run CONFIG [key=value ...]

Every `--every` seconds it sums the resident memory (RSS) of the command's process and all its
descendants: a driver that starts a local Ray is the parent of Ray's GCS and raylet, whose workers
(train workers, generators, executors) and vLLM's engine processes descend from it. It prints the
peak of that sum, and of the machine's used memory (total minus available), when the command ends;
for `envisions run`, the estimate before it starts. RSS counts pages that processes share (torch's
libraries, Ray's object store) once in each, so the sum overstates a little; the machine's used
memory holds everything else on the machine too. A run the estimate refuses is refused by the
command itself, in one line.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import psutil

from envisions_ray.config import load_config
from envisions_ray.errors import UserError
from envisions_ray.memory import GIB, describe, estimate, model_shape
from envisions_ray.model import check_model_path


def tree_rss(root: psutil.Process) -> int:
    """Bytes resident in `root` and its descendants now; processes that end meanwhile count nothing."""
    total = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def estimate_lines(command: list[str]) -> list[str]:
    """The estimate for an `envisions run` command line; [] for any other command."""
    if "run" not in command:
        return []
    args = command[command.index("run") + 1 :]
    overrides = [arg for arg in args if "=" in arg and not arg.startswith("-")]
    if "--resume" in args:
        config = Path(args[args.index("--resume") + 1]) / "config.yaml"
    else:
        config = next((arg for arg in args if "=" not in arg and not arg.startswith("-")), None)
    try:
        cfg = load_config(config, overrides)
        shape = model_shape(check_model_path(cfg.model.path), cfg.model.cache_dir)
    except UserError as err:
        return [f"estimate: {err}"]
    if isinstance(shape, str):
        return [f"estimate: not estimated: {shape}"]
    est = estimate(cfg, shape)
    return [
        f"estimate: {est.peak / GIB:.1f} GiB at peak (training {est.training / GIB:.1f}, "
        f"generating {est.generating / GIB:.1f})",
        *(f"  {line}" for line in describe(est)),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--every", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to measure")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    for line in estimate_lines(command):
        print(line, flush=True)
    machine = psutil.virtual_memory()
    used_before = machine.total - machine.available
    started = time.monotonic()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peak_tree = peak_used = 0
    while child.poll() is None:
        peak_tree = max(peak_tree, tree_rss(root))
        machine = psutil.virtual_memory()
        peak_used = max(peak_used, machine.total - machine.available)
        time.sleep(args.every)
    print(
        f"measured: peak RSS of the command's processes {peak_tree / GIB:.1f} GiB; machine's used memory "
        f"peaked at {peak_used / GIB:.1f} GiB of {machine.total / GIB:.1f} ({used_before / GIB:.1f} before it); "
        f"{time.monotonic() - started:.0f} s, exit code {child.returncode}",
        flush=True,
    )
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
