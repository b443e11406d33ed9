"""Episodes per second of browser executor actors (1, 2, 4) against the raw miniwob loop in one process.

    python benchmarks/bench_browser.py [--episodes 200] [--actors 1 2 4]

Every episode is click-test-2 on a new seed, solved in one click, with screenshots off. The
baseline is miniwob alone in this process: reset, find the button, one CLICK_ELEMENT step. The
actors run what a run runs: the action program is parsed, its element looked up on the rendered
page, and the outcome returned through Ray, one input's episodes per call (K = 4), from the
driver's ExecutorGroup. Browsers start before the clock does, as they do once per run.
"""

from __future__ import annotations

import argparse
import time

import ray
from tqdm import tqdm

from envisions_ray.actors.executor import ExecutorGroup
from envisions_ray.config import EnvConfig
from envisions_ray.data import task_input
from envisions_ray.envs.web_browser import Browser
from envisions_ray.envs.web_miniwob import WebSettings

TASK = "click-test-2"
PROGRAM = 'click_text("ONE")'
K = 4  # episodes per call: one input's candidates


def bench_raw(episodes: int) -> float:
    settings = WebSettings()
    browser = Browser(TASK, settings.chrome_binary, settings.chromedriver, settings.chrome_flags, refresh=False)
    env = browser.env  # miniwob's own gymnasium env, launched with the same Chromium flags
    try:
        env.reset(seed=0, options={"record_screenshots": False})
        start = time.perf_counter()
        for seed in tqdm(range(episodes), desc="raw miniwob"):
            observation, _ = env.reset(seed=seed)
            ref = next(e["ref"] for e in observation["dom_elements"] if e["text"] == "ONE")
            env.step(env.unwrapped.create_action("CLICK_ELEMENT", ref=ref))
        return episodes / (time.perf_counter() - start)
    finally:
        browser.close()


def bench_actors(actors: int, episodes: int) -> tuple[float, int]:
    pool = ExecutorGroup(EnvConfig(name="web", num_executors=actors, resources={"browser": 1}, poll_s=0.01))
    try:
        pool.execute([[(PROGRAM, task_input(TASK, 0))] for _ in range(actors)], [TASK] * actors)  # start the browsers
        calls = [
            [(PROGRAM, task_input(TASK, seed)) for seed in range(start, start + K)] for start in range(0, episodes, K)
        ]
        begin = time.perf_counter()
        results = pool.execute(calls, [TASK] * len(calls))
        rate = len(calls) * K / (time.perf_counter() - begin)
        return rate, sum(outcome.reward for batch in results for outcome in batch)
    finally:
        pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200, help="episodes per measurement (a multiple of 4)")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    baseline = bench_raw(args.episodes)
    ray.init(
        num_cpus=max(args.actors),
        resources={"browser": max(args.actors)},
        include_dashboard=False,
        logging_level="WARNING",
    )
    print(f"raw miniwob, 1 process:   {baseline:6.1f} episodes/s  (1.00x)")
    for actors in args.actors:
        rate, solved = bench_actors(actors, args.episodes)
        print(
            f"{actors} browser actor(s):       {rate:6.1f} episodes/s  ({rate / baseline:.2f}x)  "
            f"solved {solved}/{args.episodes // K * K}"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
