"""Seconds to hand new weights to a vLLM generator: in place (`VLLMBackend.load`: vLLM's
`reload_weights`, the engine keeps running) against a restart (close the engine, start one on the
new checkpoint), for a compiled and an eager engine, in one run. Both include the untied copy a
tied model is served as (actors/vllm_backend.py `ServedWeights`).

The new checkpoint is the model with its weights perturbed, so that greedy answers change. Each
handoff is checked: after an in-place load the engine must answer exactly as an engine started
fresh on the new checkpoint, and differently from before; and it must answer as fast (the last
column: the greedy answers' seconds after an in-place load over those on a fresh engine).

    python benchmarks/bench_handoff.py [--model smollm2] [--prompts 8] [--modes compiled,eager]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from envisions_ray.actors.vllm_backend import VLLMBackend
from envisions_ray.config import GeneratorConfig, load_config
from envisions_ray.data import load_examples
from envisions_ray.model import load_model_and_tokenizer, resolve_model_path
from envisions_ray.prompts import PromptBook

NOISE = 0.05  # relative to each tensor's standard deviation: enough to change greedy answers


def perturbed_copy(path: str, directory: str) -> str:
    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(path)
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.add_(torch.randn_like(tensor) * tensor.std() * NOISE)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def greedy(backend: VLLMBackend, prompts: list[str]) -> tuple[list[str], float]:
    """The greedy answers, and the seconds they took."""
    start = time.perf_counter()
    answers = [group[0].text for group in backend.sample(prompts, 1, 0.0, 48, False)]
    return answers, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--modes", default="compiled,eager", help="engines to measure: compiled, eager or both")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if not set(modes) <= {"compiled", "eager"}:
        parser.error(f"--modes takes compiled and/or eager, got {args.modes}")

    base = resolve_model_path(args.model, "~/.cache/envisions-ray")
    cfg = load_config("conf/math_quickstart.yaml", ["run_dir=unused"]).generator
    book = PromptBook.load("conf/prompts/math.yaml")
    prompts = [book.explore(x.question, 3) for x in load_examples("builtin:arith:eval", args.prompts)]
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        new = perturbed_copy(base, directory)
        for eager in [mode == "eager" for mode in modes]:
            mode = GeneratorConfig(**{**cfg.__dict__, "enforce_eager": eager})
            backend = VLLMBackend(mode, base, "float32")
            before, _ = greedy(backend, prompts)
            start = time.perf_counter()
            backend.load(new)
            in_place = time.perf_counter() - start
            after_load, after_load_s = greedy(backend, prompts)
            start = time.perf_counter()
            backend.close()
            backend = VLLMBackend(mode, new, "float32")
            restart = time.perf_counter() - start
            fresh, fresh_s = greedy(backend, prompts)
            backend.close()
            changed = sum(a != b for a, b in zip(before, fresh))
            name = "eager" if eager else "compiled"
            rows.append((name, in_place, restart, after_load == fresh, changed, after_load_s / fresh_s))

    print(
        "| engine | in-place load | restart | ratio | in-place answers = fresh engine's "
        "| answers the new weights changed | answering time, in place / fresh engine |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, in_place, restart, same, changed, slowdown in rows:
        print(
            f"| {name} | {in_place:.1f} s | {restart:.1f} s | {restart / in_place:.1f}× | {same} "
            f"| {changed} / {len(prompts)} | {slowdown:.2f} |"
        )


if __name__ == "__main__":  # vLLM spawns its engine process, which imports this module again
    main()
