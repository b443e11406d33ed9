"""`envisions eval` end to end, engine start included, on the vLLM backend against the hf backend,
each the command a user types, timed from outside.

    python benchmarks/bench_eval.py [--model smollm2] [--dataset builtin:arith:eval] [--size 200]

Both commands run with the default config and no flags but the backend, so the ratio is what a
user gets. The actors are launched before the eval's clock starts; a vLLM engine loads inside its
actor meanwhile and the eval's first call waits for it, so its start counts in the eval seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def timed_eval(model: str, dataset: str, size: int, backend: str) -> tuple[float, dict]:
    """Wall seconds of one `envisions eval`, and its JSON scores."""
    command = ["envisions", "eval", model, dataset, "--size", str(size), f"generator.backend={backend}"]
    start = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if finished.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{finished.stderr[-2000:]}")
    return seconds, json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dataset", default="builtin:arith:eval")
    parser.add_argument("--size", type=int, default=200)
    args = parser.parse_args()

    rows = {backend: timed_eval(args.model, args.dataset, args.size, backend) for backend in ("hf", "vllm")}
    print(f"`envisions eval {args.model} {args.dataset} --size {args.size}`, default config, end to end")
    print(
        "| backend | wall s | Ray and actors launched s | eval s, engine start included | rest s (imports, exit) "
        "| tokens | accuracy | × hf wall |"
    )
    print("|---|---|---|---|---|---|---|---|")
    hf_wall = rows["hf"][0]
    for backend, (wall, scores) in rows.items():
        [accuracy] = scores["accuracy"].values()
        print(
            f"| {backend} | {wall:.0f} | {scores['start_seconds']:.0f} | {scores['seconds']:.0f} | "
            f"{wall - scores['start_seconds'] - scores['seconds']:.0f} | "
            f"{scores['generated_tokens']} | {accuracy:.1%} | {hf_wall / wall:.2f} |"
        )


if __name__ == "__main__":
    main()
