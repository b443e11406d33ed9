"""Programs per second of the logic executor's environment against the raw engine, same programs.

    python benchmarks/bench_logic.py [--data ../shared/data/proofwriter_dev.jsonl] [--n 600]

The programs are the GPT-4-written `logic_program`s of ProofWriter dev. The baseline is the raw
engine in this process: parse, compile and answer with clingo, nothing else. The executor's
environment (LogicEngine) adds what a run needs on top: a JSON round trip to its worker process,
which holds the grounding backstop and the memory limit.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm import tqdm

from envisions_ray.envs.logic_engine import LogicEngine, LogicSettings
from envisions_ray.envs.logic_program import LogicError, answer
from envisions_ray.types import Example

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "proofwriter_dev.jsonl"


def bench_raw_engine(cfg: LogicSettings, jobs: list[tuple[str, str]]) -> tuple[float, int]:
    start = time.perf_counter()
    correct = 0
    for program, label in tqdm(jobs, desc="raw clingo"):
        try:
            correct += answer(program, cfg.timeout_s) == label
        except LogicError:
            pass
    return len(jobs) / (time.perf_counter() - start), correct


def bench_environment(cfg: LogicSettings, jobs: list[tuple[str, str]]) -> tuple[float, int]:
    env = LogicEngine(cfg)  # the worker starts once, outside the timed loop, as in a run
    try:
        start = time.perf_counter()
        correct = sum(
            env.execute(program, Example("b", "", label)).reward for program, label in tqdm(jobs, desc="LogicEngine")
        )
        return len(jobs) / (time.perf_counter() - start), correct
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEV, help="JSONL with logic_program and answer")
    parser.add_argument("--n", type=int, default=600, help="programs per side (the file is cycled)")
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"no such file: {args.data}")
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    jobs = [(rows[i % len(rows)]["logic_program"], rows[i % len(rows)]["answer"]) for i in range(args.n)]
    cfg = LogicSettings()
    answer(jobs[0][0], cfg.timeout_s)  # import clingo before the baseline's clock starts
    baseline, baseline_correct = bench_raw_engine(cfg, jobs)
    ours, ours_correct = bench_environment(cfg, jobs)
    print(f"raw engine (in process):         {baseline:8.1f} programs/s  ({baseline_correct}/{args.n} correct)")
    print(f"LogicEngine (worker + backstop): {ours:8.1f} programs/s  ({ours_correct}/{args.n} correct)")
    print(f"ratio (ours / baseline):         {ours / baseline:8.2f}x")


if __name__ == "__main__":
    main()
