"""Programs per second of one MathSandbox (one core) against a fresh interpreter per program.

    python benchmarks/bench_sandbox.py [--n 300]

Both sides run the same small program-of-thought solutions, in the same run, one at a time. The
baseline is what a naive executor does: `python3.11 -c` per program, answer read from stdout.
"""

from __future__ import annotations

import argparse
import subprocess
import time

from tqdm import tqdm

from envisions_ray.envs.math_sandbox import MathSandbox, SandboxSettings, is_correct
from envisions_ray.types import Example

# (program, expected answer): the size and flavour of what the model writes for word problems.
PROGRAMS = [
    ("def solution():\n    apples = 23\n    eaten = 7\n    return apples - eaten\n", "16"),
    ("def solution():\n    price = 4.5\n    count = 12\n    return price * count\n", "54"),
    (
        "def solution():\n    total = 0\n    for day in range(1, 31):\n        total += day * 2\n    return total\n",
        "930",
    ),
    ("import math\ndef solution():\n    return math.comb(10, 3)\n", "120"),
    ("def solution():\n    speed = 60\n    hours = 2.5\n    return speed * hours\n", "150"),
    ("from fractions import Fraction\ndef solution():\n    return float(Fraction(3, 4) * 48)\n", "36"),
    ("def solution():\n    cookies = 48\n    friends = 6\n    return cookies // friends\n", "8"),
    ("def solution():\n    return sum(x * x for x in range(10))\n", "285"),
]


def bench_sandbox(cfg: SandboxSettings, jobs: list[tuple[str, str]]) -> tuple[float, int]:
    env = MathSandbox(cfg)  # the server starts once, outside the timed loop, as in a run
    try:
        start = time.perf_counter()
        correct = sum(
            env.execute(program, Example(id="b", question="", answer=answer)).reward
            for program, answer in tqdm(jobs, desc="sandbox")
        )
        return len(jobs) / (time.perf_counter() - start), correct
    finally:
        env.close()


def bench_fresh_process(cfg: SandboxSettings, jobs: list[tuple[str, str]]) -> tuple[float, int]:
    start = time.perf_counter()
    correct = 0
    for program, answer in tqdm(jobs, desc="fresh process"):
        run = subprocess.run(
            [cfg.python, "-c", program + "\nprint(solution())\n"], capture_output=True, text=True, timeout=cfg.timeout_s
        )
        correct += run.returncode == 0 and is_correct(run.stdout, answer)
    return len(jobs) / (time.perf_counter() - start), correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="programs per side")
    args = parser.parse_args()
    cfg = SandboxSettings()
    jobs = [PROGRAMS[i % len(PROGRAMS)] for i in range(args.n)]
    ours, ours_correct = bench_sandbox(cfg, jobs)
    baseline, baseline_correct = bench_fresh_process(cfg, jobs)
    print(f"sandbox (fork server in bwrap): {ours:7.1f} programs/s  ({ours_correct}/{args.n} correct)")
    print(f"fresh python3.11 -c per program: {baseline:7.1f} programs/s  ({baseline_correct}/{args.n} correct)")
    print(f"ratio (ours / baseline):         {ours / baseline:7.2f}x")


if __name__ == "__main__":
    main()
