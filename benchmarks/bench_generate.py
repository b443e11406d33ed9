"""Tokens/s of the generator backends against a plain batched `generate` loop, on the same prompts.

All sample K solutions per prompt with the same settings and stop strings, in this process, one
after another: the plain transformers loop (the baseline), our `hf` backend (the same loop, plus
raw logits and self-rewards), and our `vllm` backend (vLLM's CPU build on a CPU machine), both
with torch.compile and eager, at one or more KV-cache block sizes and dtypes. The vllm rows also
give the engine's start time. The baselines run as the `hf` backend does by default: float32,
the quickstart's sequences per call (more made its loop slower); vLLM may take other chunk sizes.

    python benchmarks/bench_generate.py [--model smollm2] [--prompts 16] [--k 4] [--chunks 32,64]
        [--modes compiled,eager] [--kv-block-sizes 128,32] [--dtypes float32,bfloat16] [--vllm-only]
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from envisions_ray.actors.hf_backend import HFBackend
from envisions_ray.actors.vllm_backend import VLLMBackend
from envisions_ray.config import GeneratorConfig, load_config
from envisions_ray.cpu import bf16_matmul_supported
from envisions_ray.data import load_examples
from envisions_ray.model import load_model_and_tokenizer, resolve_model_path
from envisions_ray.prompts import PromptBook


def plain_loop(model, tokenizer, prompts, cfg: GeneratorConfig, k: int) -> int:
    """The baseline: batched sampling with nothing else; returns tokens generated."""
    tokens, chunk = 0, max(1, cfg.chunk_size // k)
    for start in tqdm(range(0, len(prompts), chunk), desc="plain generate"):
        batch = tokenizer(prompts[start : start + chunk], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(
                **batch,
                do_sample=True,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                num_return_sequences=k,
                max_new_tokens=cfg.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                stop_strings=cfg.stop,
                tokenizer=tokenizer,
            )
        tokens += int((output[:, batch["input_ids"].shape[1] :] != tokenizer.pad_token_id).sum())
    return tokens


def backend_tokens(backend, prompts, cfg: GeneratorConfig, k: int, name: str) -> int:
    """Generated tokens, as the backend counts them (up to the stop string or EOS)."""
    tokens, chunk = 0, max(1, cfg.chunk_size // k)
    for start in tqdm(range(0, len(prompts), chunk), desc=name):
        for group in backend.sample(prompts[start : start + chunk], k, cfg.temperature, cfg.max_new_tokens, True):
            tokens += sum(sample.num_tokens for sample in group)
    return tokens


def timed(run) -> tuple[int, float]:
    torch.manual_seed(0)
    start = time.perf_counter()
    tokens = run()
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--chunks", help="vLLM's sequences per generate call to compare (default: the quickstart's)")
    parser.add_argument(
        "--vllm-only", action="store_true", help="skip hf and plain generate (to compare vLLM settings)"
    )
    parser.add_argument("--modes", default="compiled,eager", help="vLLM engines: compiled and/or eager")
    parser.add_argument("--kv-block-sizes", help="vLLM KV-cache block sizes to compare (default: the quickstart's)")
    parser.add_argument("--dtypes", default="float32", help="vLLM engines' dtypes to compare")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if not set(modes) <= {"compiled", "eager"}:
        parser.error(f"--modes takes compiled and/or eager, got {args.modes}")

    quickstart = load_config("conf/math_quickstart.yaml", ["run_dir=unused"]).generator
    threads = torch.get_num_threads()
    cfg = GeneratorConfig(**{**quickstart.__dict__, "num_cpus": threads})
    path = resolve_model_path(args.model, "~/.cache/envisions-ray")
    book = PromptBook.load("conf/prompts/math.yaml")
    examples = load_examples("builtin:arith:train", args.prompts + 2)
    prompts, warm_up = (
        [book.explore(x.question, 3) for x in examples[:-2]],
        [book.explore(x.question, 3) for x in examples[-2:]],
    )
    print(
        f"{len(prompts)} prompts (3-shot) x K={args.k}, temperature {cfg.temperature}, "
        f"{cfg.max_new_tokens} new tokens, "
        f"stops {cfg.stop!r}, {threads} threads; "
        f"CPU has native bf16 matmul (AVX512-BF16 or AMX): {bf16_matmul_supported()}"
    )

    block_sizes = [int(size) for size in args.kv_block_sizes.split(",")] if args.kv_block_sizes else [cfg.kv_block_size]
    rows = []
    chunks = [int(chunk) for chunk in args.chunks.split(",")] if args.chunks else [cfg.chunk_size]
    for mode, block_size, dtype in [(m, b, d) for m in modes for b in block_sizes for d in args.dtypes.split(",")]:
        settings = {**cfg.__dict__, "enforce_eager": mode == "eager", "kv_block_size": block_size}
        start = time.perf_counter()
        backend = VLLMBackend(GeneratorConfig(**settings), path, dtype)
        started = time.perf_counter() - start
        for chunk in chunks:
            # Each row starts as a run does: the shared 3-shot prefix cached, none of its own prompts.
            backend.llm.reset_prefix_cache()
            backend_tokens(backend, warm_up, cfg, args.k, "warm-up")  # first-call allocations too
            name = f"vllm backend, {mode}, KV blocks of {block_size}, {dtype}, {chunk} per call"
            chunked = GeneratorConfig(**{**cfg.__dict__, "chunk_size": chunk})
            rows.append((name, *timed(lambda: backend_tokens(backend, prompts, chunked, args.k, name)), started))
        backend.close()

    if args.vllm_only:
        first_rate = rows[0][1] / rows[0][2]
        for name, tokens, seconds, started in rows:
            print(
                f"{name}: {tokens / seconds:.1f} tokens/s ({tokens} tokens in {seconds:.1f} s, "
                f"{tokens / seconds / first_rate:.2f}x the first row), engine start {started:.0f} s"
            )
        return
    hf = HFBackend(cfg, path, "float32")
    hf_name = f"hf backend (+stop, +self-reward), float32, {cfg.chunk_size} per call"
    hf_row = (hf_name, *timed(lambda: backend_tokens(hf, prompts, cfg, args.k, "hf backend")))
    rows.append((*hf_row, None))
    model, tokenizer = load_model_and_tokenizer(path, "float32")
    rows.append(
        (
            f"plain batched generate, float32, {cfg.chunk_size} per call",
            *timed(lambda: plain_loop(model, tokenizer, prompts, cfg, args.k)),
            None,
        )
    )

    hf_rate = hf_row[1] / hf_row[2]
    print("| generator | tokens | seconds | tokens/s | × hf backend | engine start |")
    print("|---|---|---|---|---|---|")
    for name, tokens, seconds, started in rows:
        start_text = "–" if started is None else f"{started:.0f} s"
        print(
            f"| {name} | {tokens} | {seconds:.1f} | {tokens / seconds:.1f} | "
            f"{tokens / seconds / hf_rate:.2f} | {start_text} |"
        )


if __name__ == "__main__":  # vLLM spawns its engine process, which imports this module again
    main()
