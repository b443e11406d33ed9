"""`envisions eval` end to end, engine start included, on the vLLM backend against the hf backend,
each the command a user types, timed from outside; then where the vLLM engine's start goes.

    python benchmarks/bench_eval.py [--model smollm2] [--dataset builtin:arith:eval] [--size 200]

Both commands run with the default config and no flags but the backend, so the ratio is what a
user gets. The engine's start is read from vLLM's own log lines (weight loading, the KV cache
and warm-up), printed at INFO level for the vLLM run only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

# vLLM 0.32.0's start-up log lines that carry a duration (vllm/v1/worker, vllm/v1/engine/core.py).
START_LINES = re.compile(r"(Loading weights took|Model loading took|init engine .* took|Memory profiling takes).*")


def timed_eval(model: str, dataset: str, size: int, backend: str) -> tuple[float, dict, list[str]]:
    """Wall seconds of one `envisions eval`, its JSON scores, and vLLM's start-up lines."""
    command = ["envisions", "eval", model, dataset, "--size", str(size), f"generator.backend={backend}"]
    environment = {**os.environ, "VLLM_LOGGING_LEVEL": "INFO"}
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True, env=environment)
    seconds = time.perf_counter() - start
    if finished.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{finished.stderr[-2000:]}")
    scores = json.loads(finished.stdout.strip().splitlines()[-1])
    output = finished.stdout + finished.stderr
    return seconds, scores, [match.group(0) for match in START_LINES.finditer(output)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dataset", default="builtin:arith:eval")
    parser.add_argument("--size", type=int, default=200)
    args = parser.parse_args()

    rows = {backend: timed_eval(args.model, args.dataset, args.size, backend) for backend in ("hf", "vllm")}
    print(f"`envisions eval {args.model} {args.dataset} --size {args.size}`, default config, end to end")
    print(
        "| backend | wall s | start s (Ray, actors, engine) | eval s | rest s (imports, exit) "
        "| tokens | accuracy | × hf wall |"
    )
    print("|---|---|---|---|---|---|---|---|")
    hf_wall = rows["hf"][0]
    for backend, (wall, scores, _) in rows.items():
        [accuracy] = scores["accuracy"].values()
        print(
            f"| {backend} | {wall:.0f} | {scores['start_seconds']:.0f} | {scores['seconds']:.0f} | "
            f"{wall - scores['start_seconds'] - scores['seconds']:.0f} | "
            f"{scores['generated_tokens']} | {accuracy:.1%} | {hf_wall / wall:.2f} |"
        )
    print("vLLM engine start, from its log:")
    for line in rows["vllm"][2]:
        print(f"  {line}")


if __name__ == "__main__":
    main()
