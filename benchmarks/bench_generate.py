"""Tokens/s of the generator backends against a plain batched `generate` loop, on the same prompts.

All sample K solutions per prompt with the same settings and stop strings, in this process, one
after another: the plain transformers loop (the baseline), our `hf` backend (the same loop, plus
raw logits and self-rewards), and our `vllm` backend (vLLM's CPU build on a CPU machine), both
with torch.compile and eager, at one or more KV-cache block sizes and dtypes. The vllm rows also
give the engine's start time. The baselines run as the `hf` backend does by default: float32,
the quickstart's sequences per call (more made its loop slower); vLLM may take other chunk sizes.

Beside tokens/s each row gives the GFLOP/s it reached and their share of this machine's matmul
rate, measured in the same run with torch on the engine's threads in the row's dtype (the roof).
A generated token costs 2 FLOPs per parameter it is multiplied through: every parameter but the
input embedding, which is a lookup, not a matmul; the output layer counts, tied or not. Attention
over the context is left out (it grows with the prompt), so the share is a floor.

    python benchmarks/bench_generate.py [--model smollm2|qwen2.5-coder-0.5b] [--prompts 16] [--k 4]
        [--max-new-tokens 96] [--chunks 32,64] [--modes compiled,eager] [--kv-block-sizes 128,32]
        [--dtypes float32,bfloat16] [--vllm-only]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForCausalLM

from envisions_ray.actors.backend import Sample
from envisions_ray.actors.hf_backend import HFBackend
from envisions_ray.actors.vllm_backend import VLLMBackend
from envisions_ray.config import GeneratorConfig, load_config
from envisions_ray.cpu import bf16_matmul_supported
from envisions_ray.data import load_examples
from envisions_ray.model import load_model_and_tokenizer, resolve_model_path
from envisions_ray.prompts import PromptBook

# The roof: square matmuls of this size, big enough that BLAS reaches its peak (its packing and
# thread start-up amortised; 2 x 2048^3 = 17 GFLOP, a fraction of a second per float32 product on
# two cores), small enough to time in seconds. A decode step's products are skinny and bound by memory instead.
ROOF_SIZE = 2048
ROOF_REPEATS = 5  # best of: noise on a shared machine only ever adds time
GIGA = 1e9
ROOF_DTYPES = ("float32", "bfloat16", "float16")  # torch's names, which vLLM takes too
Result = TypeVar("Result")


@dataclass(frozen=True)
class Row:
    """One generator's measurement."""

    name: str
    dtype: str
    tokens: int
    seconds: float
    started: float | None = None  # the engine's start time, for vllm rows

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def matmul_gflops(dtype: str, threads: int) -> float:
    """This machine's matmul rate in `dtype` on `threads` threads: best of ROOF_REPEATS products."""
    torch.set_num_threads(threads)
    a, b = (torch.randn(ROOF_SIZE, ROOF_SIZE).to(getattr(torch, dtype)) for _ in range(2))
    torch.mm(a, b)  # untimed: the first call sets up the kernel and its buffers
    best = float("inf")
    for _ in tqdm(range(ROOF_REPEATS), desc=f"matmul roof, {dtype}"):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * ROOF_SIZE**3 / best / GIGA


def matmul_parameters(path: str) -> int:
    """Parameters a generated token is multiplied through: all but the input embedding (a lookup),
    the output layer once whether or not it is tied to it (vLLM serves a tied one untied anyway)."""
    with torch.device("meta"):  # the model's own parameters, without reading or holding its weights
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embedding and p is not head) + head.numel()


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


def achieved(row: Row, flops_per_token: int, roofs: dict[str, float]) -> tuple[float, float]:
    """The GFLOP/s a row reached, and their share of the matmul roof in its dtype."""
    gflops = row.rate * flops_per_token / GIGA
    return gflops, gflops / roofs[row.dtype]


def backend_samples(
    backend, prompts, cfg: GeneratorConfig, k: int, name: str, grammar: str = "", seeds: list[int] | None = None
) -> list[list[Sample]]:
    """K self-rewarded samples per prompt, in calls of cfg.chunk_size sequences as the driver cuts them."""
    groups, chunk = [], max(1, cfg.chunk_size // k)
    for start in tqdm(range(0, len(prompts), chunk), desc=name):
        part_seeds = None if seeds is None else seeds[start : start + chunk]
        part = prompts[start : start + chunk]
        groups += backend.sample(part, k, cfg.temperature, cfg.max_new_tokens, True, grammar, part_seeds)
    return groups


def backend_tokens(backend, prompts, cfg: GeneratorConfig, k: int, name: str) -> int:
    """Generated tokens, as the backend counts them (up to the stop string or EOS)."""
    return sum(sample.num_tokens for group in backend_samples(backend, prompts, cfg, k, name) for sample in group)


def timed(run: Callable[[], Result]) -> tuple[Result, float]:
    torch.manual_seed(0)
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, help="default: the quickstart's")
    parser.add_argument("--chunks", help="vLLM's sequences per generate call to compare (default: the quickstart's)")
    parser.add_argument(
        "--vllm-only", action="store_true", help="skip hf and plain generate (to compare vLLM settings)"
    )
    parser.add_argument("--modes", default="compiled,eager", help="vLLM engines: compiled and/or eager")
    parser.add_argument("--kv-block-sizes", help="vLLM KV-cache block sizes to compare (default: the quickstart's)")
    parser.add_argument("--dtypes", default="float32", help="vLLM engines' dtypes to compare")
    args = parser.parse_args()
    modes, dtypes = args.modes.split(","), args.dtypes.split(",")
    if not set(modes) <= {"compiled", "eager"}:
        parser.error(f"--modes takes compiled and/or eager, got {args.modes}")
    if not set(dtypes) <= set(ROOF_DTYPES):
        parser.error(f"--dtypes takes {', '.join(ROOF_DTYPES)}, got {args.dtypes}")

    quickstart = load_config("conf/math_quickstart.yaml", ["run_dir=unused"]).generator
    threads = torch.get_num_threads()
    cfg = GeneratorConfig(
        **{
            **quickstart.__dict__,
            "num_cpus": threads,
            "max_new_tokens": args.max_new_tokens or quickstart.max_new_tokens,
        }
    )
    path = resolve_model_path(args.model, "~/.cache/envisions-ray")
    book = PromptBook.load("conf/prompts/math.yaml")
    examples = load_examples("builtin:arith:train", args.prompts + 2)
    prompts, warm_up = (
        [book.explore(x.question, 3) for x in examples[:-2]],
        [book.explore(x.question, 3) for x in examples[-2:]],
    )
    # Measured before any engine starts, on the threads the engine gets (num_cpus), in each dtype a
    # row runs: the vllm rows' and, unless --vllm-only, the float32 of hf and plain generate.
    baseline_dtypes = [] if args.vllm_only else ["float32"]
    roofs = {dtype: matmul_gflops(dtype, cfg.num_cpus) for dtype in dict.fromkeys(dtypes + baseline_dtypes)}
    parameters = matmul_parameters(path)
    flops_per_token = 2 * parameters
    print(
        f"{len(prompts)} prompts (3-shot) x K={args.k}, temperature {cfg.temperature}, "
        f"{cfg.max_new_tokens} new tokens, "
        f"stops {cfg.stop!r}, {threads} threads; "
        f"CPU has native bf16 matmul (AVX512-BF16 or AMX): {bf16_matmul_supported()}"
    )
    print(
        f"matmul roof ({ROOF_SIZE}x{ROOF_SIZE} products, best of {ROOF_REPEATS}, {cfg.num_cpus} threads): "
        + ", ".join(f"{dtype} {gflops:.1f} GFLOP/s" for dtype, gflops in roofs.items())
        + f"; {flops_per_token / GIGA:.3f} GFLOP per generated token (2 x {parameters:,} parameters)"
    )

    block_sizes = [int(size) for size in args.kv_block_sizes.split(",")] if args.kv_block_sizes else [cfg.kv_block_size]
    rows = []
    chunks = [int(chunk) for chunk in args.chunks.split(",")] if args.chunks else [cfg.chunk_size]
    for mode, block_size, dtype in [(m, b, d) for m in modes for b in block_sizes for d in dtypes]:
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
            rows.append(
                Row(name, dtype, *timed(lambda: backend_tokens(backend, prompts, chunked, args.k, name)), started)
            )
        backend.close()

    if args.vllm_only:
        first_rate = rows[0].rate
        for row in rows:
            gflops, share = achieved(row, flops_per_token, roofs)
            print(
                f"{row.name}: {row.rate:.1f} tokens/s ({row.tokens} tokens in {row.seconds:.1f} s, "
                f"{row.rate / first_rate:.2f}x the first row), {gflops:.1f} GFLOP/s = {share:.1%} of the "
                f"{row.dtype} roof, engine start {row.started:.0f} s"
            )
        return
    hf = HFBackend(cfg, path, "float32")
    hf_name = f"hf backend (+stop, +self-reward), float32, {cfg.chunk_size} per call"
    hf_row = Row(hf_name, "float32", *timed(lambda: backend_tokens(hf, prompts, cfg, args.k, "hf backend")))
    rows.append(hf_row)
    model, tokenizer = load_model_and_tokenizer(path, "float32")
    rows.append(
        Row(
            f"plain batched generate, float32, {cfg.chunk_size} per call",
            "float32",
            *timed(lambda: plain_loop(model, tokenizer, prompts, cfg, args.k)),
        )
    )

    print(
        "| generator | tokens | seconds | tokens/s | GFLOP/s | share of the matmul roof | × hf backend | engine start |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        start_text = "–" if row.started is None else f"{row.started:.0f} s"
        gflops, share = achieved(row, flops_per_token, roofs)
        print(
            f"| {row.name} | {row.tokens} | {row.seconds:.1f} | {row.rate:.1f} | {gflops:.1f} | {share:.1%} | "
            f"{row.rate / hf_row.rate:.2f} | {start_text} |"
        )


if __name__ == "__main__":  # vLLM spawns its engine process, which imports this module again
    main()
