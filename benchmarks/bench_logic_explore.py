"""The base policy on ProofWriter before any training, per label: its greedy answers, and how often
exploration finds a right program, and a grounded one (envs/logic_grounded.py), for a prompt with
one demonstration against one per label.

    python benchmarks/bench_logic_explore.py [--model qwen2.5-coder-0.5b] [--eval 200:400] \
        [--explore 60] [--shots 1,3]

Everything else is conf/logic_quickstart.yaml's: the grammar, K, the temperature and the token
budgets. Exploration samples the first --explore problems of the eval slice, with the grounded
check on, so a right answer whose program copied the statement or left its predicate out shows
as right but not grounded; eval counts answers as the paper does.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter

from envisions_ray import driver
from envisions_ray.cluster import connect_ray, start_actors, stop_actors
from envisions_ray.config import load_config
from envisions_ray.metrics import accuracy_interval
from envisions_ray.run_state import Request, Sink
from envisions_ray.streaming import describe, stream
from envisions_ray.types import Outcome, Sampling

DEV = "../shared/data/proofwriter_dev.jsonl"
LABELS = ("True", "False", "Unknown")
NO_ANSWER = "none"  # the program did not parse or run


def answered(outcome: Outcome) -> str:
    return outcome.output if outcome.output in LABELS else NO_ANSWER


def eval_table(shots: int, expected: list[str], outcomes: list[Outcome]) -> list[str]:
    rewards = [int(answered(o) == label) for o, label in zip(outcomes, expected)]
    low, high = accuracy_interval(rewards)
    answers = Counter(answered(o) for o in outcomes)
    lines = [
        f"greedy, {shots} shot(s): accuracy {sum(rewards) / len(rewards):.1%} [{low:.1%}, {high:.1%}] on "
        f"{len(rewards)}; answered {1 - answers[NO_ANSWER] / len(outcomes):.0%}; "
        "answers " + ", ".join(f"{label} {answers[label]}" for label in (*LABELS, NO_ANSWER)),
        "| gold label | items | recall |",
        "|---|---|---|",
    ]
    for label in LABELS:
        hits = [r for r, gold in zip(rewards, expected) if gold == label]
        lines.append(f"| {label} | {len(hits)} | {sum(hits) / max(1, len(hits)):.1%} |")
    return lines


def explore_table(shots: int, k: int, expected: list[str], outcomes: list[Outcome]) -> list[str]:
    lines = [
        f"exploration, {shots} shot(s), K = {k}:",
        "| gold label | inputs | with a right program | with a grounded one | right samples | grounded samples |",
        "|---|---|---|---|---|---|",
    ]
    for label in (*LABELS, "all"):
        inputs = [i for i, gold in enumerate(expected) if label in (gold, "all")]
        per_input = [outcomes[i * k : (i + 1) * k] for i in inputs]
        right = [[answered(o) == expected[i] for o in group] for i, group in zip(inputs, per_input)]
        grounded = [[o.reward == 1 for o in group] for group in per_input]
        samples = max(1, len(inputs) * k)
        lines.append(
            f"| {label} | {len(inputs)} | {sum(map(any, right)) / max(1, len(inputs)):.1%} | "
            f"{sum(map(any, grounded)) / max(1, len(inputs)):.1%} | {sum(map(sum, right)) / samples:.1%} | "
            f"{sum(map(sum, grounded)) / samples:.1%} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--eval", default="200:400", help="slice of ProofWriter dev answered greedily")
    parser.add_argument("--explore", type=int, default=60, help="the eval slice's first N problems, explored K times")
    parser.add_argument("--shots", default="1,3", help="demonstrations in the prompt: 1, or 3 (one per label)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as run_dir:
        cfg = load_config(
            "conf/logic_quickstart.yaml",
            [
                f"run_dir={run_dir}",
                f"model.path={args.model}",
                f"data.train={DEV}[:1]",  # unused: the run's checks want a training set apart from eval
                "data.eval_size=100000",
                f"data.eval.dev={DEV}[{args.eval}]",
                "env.settings.grounded_positives=true",
            ],
        )
        del cfg.data.eval["proofwriter"]
        run = driver.prepare(cfg)
        connect_ray(cfg)
        start_actors(run)
        try:
            [eval_set] = run.eval_sets.values()
            problems = dict(zip([x.id for x in eval_set], describe(run, eval_set)))
            explored_set = eval_set[: args.explore]
            greedy = Sampling(1, 0.0, cfg.eval.max_new_tokens)
            explore = Sampling(cfg.algorithm.k, cfg.generator.temperature, cfg.generator.max_new_tokens)
            lines = []
            for shots in [int(s) for s in args.shots.split(",")]:
                requests = [Request(x, run.prompts.explore(problems[x.id], shots)) for x in eval_set]
                evaluated = stream(run, requests, greedy, Sink(f"eval, {shots} shot(s)"))
                lines += eval_table(shots, [x.answer for x in eval_set], evaluated.outcomes)
                requests = [Request(x, run.prompts.explore(problems[x.id], shots)) for x in explored_set]
                explored = stream(run, requests, explore, Sink(f"explore, {shots} shot(s)", seeding=(0, "explore")))
                lines += explore_table(shots, cfg.algorithm.k, [x.answer for x in explored_set], explored.outcomes)
                lines.append(
                    f"{explored.generated.tokens} tokens explored in {explored.generated.seconds:.0f} s "
                    f"({explored.generated.tokens / max(1, cfg.algorithm.k * len(explored_set)):.0f} a program)"
                )
        finally:
            stop_actors(run)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
