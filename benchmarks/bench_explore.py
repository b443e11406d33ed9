"""Exploration wall time (generate + stream to executors + execute + record) against generation
alone for the same prompts, both through the same Ray generator actor in one run. Streaming hides
execution behind generation; the goal is a ratio of 1.1 or less. The generator is the
quickstart's: a vLLM engine.

    python benchmarks/bench_explore.py [--model smollm2] [--inputs 16] [--k 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import ray
from tqdm import tqdm

from envisions_ray import driver
from envisions_ray.actors.pool import CandidatePool
from envisions_ray.cluster import connect_ray, start_actors
from envisions_ray.config import load_config
from envisions_ray.run_state import PoolClient, Request
from envisions_ray.stages import recording
from envisions_ray.streaming import describe, stream
from envisions_ray.types import Sampling


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(
            "conf/math_quickstart.yaml",
            [f"run_dir={run_dir}", f"model.path={args.model}", f"data.train_size={args.inputs}"],
        )
        run = driver.prepare(cfg)
        connect_ray(cfg)
        run.pool = PoolClient(ray.remote(CandidatePool).remote(f"{run_dir}/pool.sqlite"))
        start_actors(run)
        problems = describe(run, run.train_set)  # what the model reads for each input
        requests = [Request(x, run.prompts.explore(p, cfg.algorithm.few_shot)) for x, p in zip(run.train_set, problems)]
        sample = run.generators.actors[0].sample
        ray.get(sample.remote([requests[0].prompt], 1, 0.0, 4, False))  # warm-up: weights paged in

        start = time.perf_counter()
        chunk = max(1, cfg.generator.chunk_size // args.k)  # prompts per call, as the driver cuts them
        refs = [
            sample.remote(
                [r.prompt for r in requests[i : i + chunk]],
                args.k,
                cfg.generator.temperature,
                args.max_new_tokens,
                True,
            )
            for i in range(0, len(requests), chunk)
        ]
        for ref in tqdm(refs, desc="generation alone"):
            ray.get(ref)
        generation_only = time.perf_counter() - start
        # Reloading the same weights empties the prefix cache, so the second pass does not find
        # every prompt of the first already cached (untimed).
        ray.get(run.generators.actors[0].load.remote(run.base_model))
        ray.get(sample.remote([requests[0].prompt], 1, 0.0, 4, False))

        start = time.perf_counter()
        stream(
            run,
            requests,
            Sampling(args.k, cfg.generator.temperature, args.max_new_tokens),
            recording(run, 0, "explore"),
        )
        exploration = time.perf_counter() - start

    print(f"generation alone: {generation_only:7.1f} s")
    print(f"exploration (generate + execute + record, streamed): {exploration:7.1f} s")
    print(f"ratio (exploration / generation): {exploration / generation_only:.3f}")


if __name__ == "__main__":
    main()
