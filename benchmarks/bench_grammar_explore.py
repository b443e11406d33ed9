"""Exploration tokens/s with the prompt file's grammar against without it, on the logic and web
prompts, each domain on one vLLM engine, in one run. The goal (issue 32): with the grammar, at
least 0.8x the tokens/s without it.

The grammar is applied by our logits processor after vLLM has taken its raw logprobs
(actors/vllm_grammar.py), so a constrained sample's self-reward comes from its sampling pass; what
the grammar still costs is its mask, which xgrammar computes for every constrained sequence at
every step.

The prompts are the driver's in iteration 0: each domain's config (CONFIGS) and training inputs,
described by the domain's environment in this process (web: the task's page at the input's seed,
rendered in headless Chromium, which must be installed; the browser closes before the engine
starts), in the base model's few-shot prompt (`Run.shots`). Web inputs come one per task before
any task's second seed. Each prompt is sampled K times with self-reward from the driver's
per-request seeds (the same on both sides), in the config's chunks, with the config's generator
settings and dtype. The sides alternate round by round (free then grammar, grammar then free), each
pass from an empty prefix cache, so neither finds the other's prompts cached; an untimed warm-up
first compiles the grammar, which a run compiles once.

    python benchmarks/bench_grammar_explore.py [--model qwen2.5-coder-0.5b] [--domains logic,web]
        [--inputs 16] [--k 4] [--max-new-tokens 384] [--rounds 2]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from bench_generate import backend_samples, timed
from tqdm import tqdm

from envisions_ray import driver
from envisions_ray.actors.backend import Sample
from envisions_ray.actors.vllm_backend import VLLMBackend
from envisions_ray.config import load_config
from envisions_ray.envs import make_env
from envisions_ray.envs.logic_program import LogicError, parse
from envisions_ray.envs.web_actions import ActionError, parse_program
from envisions_ray.model import resolve_dtype
from envisions_ray.run_state import Request, Run

CONFIGS = {"logic": "conf/logic_quickstart.yaml", "web": "conf/web_miniwob.yaml"}
# Each domain's own parser and the error it raises on a program it refuses.
PARSERS = {"logic": (parse, LogicError), "web": (parse_program, ActionError)}
SIDES = ("free", "grammar")
GOAL = 0.8  # tokens/s with the grammar over tokens/s without it (issue 32)
WARM_UP_TOKENS = 4  # enough to run the grammar's mask; the warm-up is not timed


@dataclass
class Side:
    """One side's totals over its passes."""

    tokens: int = 0
    seconds: float = 0.0
    samples: int = 0
    parsed: int = 0

    def add(self, groups: list[list[Sample]], seconds: float, domain: str) -> None:
        texts = [sample.text for group in groups for sample in group]
        self.tokens += sum(sample.num_tokens for group in groups for sample in group)
        self.seconds += seconds
        self.samples += len(texts)
        self.parsed += sum(parses(domain, text) for text in texts)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


@dataclass
class Domain:
    """One domain's measurement: what was sampled, and each side's totals."""

    name: str
    inputs: int
    k: int
    settings: str
    sides: dict[str, Side] = field(default_factory=lambda: {side: Side() for side in SIDES})


def parses(domain: str, text: str) -> bool:
    parser, refusal = PARSERS[domain]
    try:
        parser(text)
    except refusal:
        return False
    return True


def explore_prompts(run: Run, inputs: int) -> tuple[list[str], list[int] | None]:
    """Iteration 0's exploration prompts for the first `inputs` training inputs, and their seeds
    (None without generator.seeded_requests), as the driver makes them."""
    run.generators.policy = run.base_model  # iteration 0's policy, which Run.shots gives the few-shot prompt
    examples = sorted(run.inputs(0), key=lambda x: x.meta.get("seed", 0))[:inputs]  # stable: tasks keep their order
    env = make_env(run.cfg.env)
    try:
        for x in tqdm(examples, desc=f"{run.cfg.env.name}: describe"):
            run.problems[x.id] = env.describe(x)
    finally:
        env.close()
    requests = [Request(x, run.prompts.explore(run.problems[x.id], run.shots(), x.task)) for x in examples]
    seeds = [r.seed(run.cfg.seed, 0, "explore") for r in requests] if run.cfg.generator.seeded_requests else None
    return [r.prompt for r in requests], seeds


def measure(name: str, args: argparse.Namespace) -> Domain:
    # Nothing is written to the run directory: prepare only checks that one could be made.
    overrides = ["run_dir=unused", f"model.path={args.model}", f"data.train_size={args.inputs}"]
    if args.max_new_tokens:
        overrides.append(f"generator.max_new_tokens={args.max_new_tokens}")
    cfg = load_config(CONFIGS[name], overrides)
    run = driver.prepare(cfg)
    prompts, seeds = explore_prompts(run, args.inputs)
    k, gen, dtype = args.k or cfg.algorithm.k, cfg.generator, resolve_dtype(cfg.model.dtype)
    grammars = {"free": "", "grammar": run.prompts.grammar}
    settings = (
        f"{run.shots()}-shot, temperature {gen.temperature}, {gen.max_new_tokens} new tokens, {gen.chunk_size} "
        f"sequences per call, {dtype}, {gen.num_cpus:g} threads, {'eager' if gen.enforce_eager else 'compiled'}"
    )
    domain = Domain(name, len(prompts), k, settings)
    backend = VLLMBackend(gen, run.base_model, dtype)
    try:
        for grammar in grammars.values():  # first-call allocations, and the grammar compiled once, as in a run
            backend.sample(prompts[:1], 1, 0.0, WARM_UP_TOKENS, False, grammar)
        for round_ in range(args.rounds):
            for side in SIDES if round_ % 2 == 0 else reversed(SIDES):
                backend.llm.reset_prefix_cache()  # as a run's exploration starts: none of its prompts cached
                label = f"{name}: {side}, round {round_ + 1}"
                groups, seconds = timed(lambda: backend_samples(backend, prompts, gen, k, label, grammars[side], seeds))
                domain.sides[side].add(groups, seconds, name)
    finally:
        backend.close()
    return domain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="the configs' model, or another")
    parser.add_argument("--domains", default="logic,web")
    parser.add_argument("--inputs", type=int, default=16, help="training inputs per domain")
    parser.add_argument("--k", type=int, help="samples per input (default: the config's algorithm.k)")
    parser.add_argument("--max-new-tokens", type=int, help="default: the config's generator.max_new_tokens")
    parser.add_argument("--rounds", type=int, default=2, help="passes per side, in alternating order")
    args = parser.parse_args()
    names = args.domains.split(",")
    if not set(names) <= set(CONFIGS):
        parser.error(f"--domains takes {', '.join(CONFIGS)}, got {args.domains}")

    domains = [measure(name, args) for name in names]
    for domain in domains:
        print(f"{domain.name} ({CONFIGS[domain.name]}, {args.model}): {domain.settings}")
    print("| domain | inputs × K × rounds | sampling | tokens | seconds | tokens/s | tokens a sample | parsed |")
    print("|---|---|---|---|---|---|---|---|")
    for domain in domains:
        for side_name, side in domain.sides.items():
            print(
                f"| {domain.name} | {domain.inputs} × {domain.k} × {args.rounds} | {side_name} | {side.tokens} | "
                f"{side.seconds:.1f} | {side.rate:.1f} | {side.tokens / side.samples:.0f} | "
                f"{side.parsed / side.samples:.0%} |"
            )
    for domain in domains:
        ratio = domain.sides["grammar"].rate / domain.sides["free"].rate
        verdict = "meets" if ratio >= GOAL else "misses"
        print(f"{domain.name}: grammar / free = {ratio:.2f}x tokens/s ({verdict} the goal of {GOAL}x)")


if __name__ == "__main__":  # vLLM spawns its engine process, which imports this module again
    main()
