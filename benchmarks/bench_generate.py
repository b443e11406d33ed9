"""Tokens/s of the generator backends against a plain batched `generate` loop, on the same prompts.

All sample K solutions per prompt with the same settings and stop strings, in this process, one
after another: the plain transformers loop (the baseline), our `hf` backend (the same loop, plus
raw logits and self-rewards), and our `vllm` backend (vLLM's CPU build on a CPU machine), both
with torch.compile and eager, at one or more KV-cache block sizes, KV-cache sizes, dtypes, OpenMP
thread bindings and thread counts: one engine per combination (benchmarks/vllm_matrix.py), each
with one row per chunk size. The vllm rows also give the engine's start time. The baselines run as
the `hf` backend does by default: float32, the quickstart's sequences per call (more made its loop
slower); vLLM may take other chunk sizes.

Beside tokens/s each row gives the GFLOP/s it reached and their share of this machine's matmul
rate, measured in the same run with torch in the row's dtype on the threads of the row's engine
(the roof; unpinned, whatever the row's binding). A generated token costs 2 FLOPs per parameter it
is multiplied through: every parameter but the input embedding, which is a lookup, not a matmul;
the output layer counts, tied or not. Attention over the context is left out (it grows with the
prompt), so the share is a floor.

    python benchmarks/bench_generate.py [--model smollm2|qwen2.5-coder-0.5b] [--prompts 16] [--k 4]
        [--max-new-tokens 96] [--chunks 32,64] [--modes compiled,eager] [--kv-block-sizes 128,32]
        [--dtypes float32,bfloat16] [--kv-cache-gibs 1,2] [--binds nobind auto 0-1] [--threads 1,2]
        [--vllm-only] [--plan]

`--binds` takes values of vLLM's VLLM_CPU_OMP_THREADS_BIND, space-separated (a core list has
commas): `nobind`, our default, runs the engine's worker on OMP_NUM_THREADS threads (`--threads`),
unpinned; `auto` pins one thread per physical core of the first NUMA node, less one core kept for
the scheduler process; a core list (`0-1`, `0,1`) pins one thread per listed core. vLLM sets
OMP_NUM_THREADS itself for the last two, so `--threads` applies to `nobind` only, and the matrix
holds each pinned engine once (benchmarks/vllm_matrix.py says where in vLLM's source).
`--plan` prints the engines and the estimate of their time, and stops.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForCausalLM
from vllm_matrix import (  # benchmarks/vllm_matrix.py, beside this script
    AUTO_BIND,
    GIGA,
    MODES,
    NOBIND,
    Engine,
    auto_bind_threads,
    bind_threads,
    engine_environment,
    engine_matrix,
    estimate_seconds,
    listed,
)

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
ROOF_DTYPES = ("float32", "bfloat16", "float16")  # torch's names, which vLLM takes too
Result = TypeVar("Result")


@dataclass(frozen=True)
class Row:
    """One generator's measurement."""

    name: str
    dtype: str
    threads: int
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
    for _ in tqdm(range(ROOF_REPEATS), desc=f"matmul roof, {dtype}, {threads} thread(s)"):
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


def achieved(row: Row, flops_per_token: int, roofs: dict[tuple[str, int], float]) -> tuple[float, float]:
    """The GFLOP/s a row reached, and their share of the matmul roof in its dtype on its threads."""
    gflops = row.rate * flops_per_token / GIGA
    return gflops, gflops / roofs[(row.dtype, row.threads)]


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


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--kv-cache-gibs", help="vLLM KV-cache sizes in GiB to compare (default: the quickstart's)")
    parser.add_argument("--dtypes", default="float32", help="vLLM engines' dtypes to compare")
    parser.add_argument(
        "--binds",
        nargs="+",
        default=[NOBIND],
        help="VLLM_CPU_OMP_THREADS_BIND values, space-separated (a core list has commas): nobind auto 0-1 0,1",
    )
    parser.add_argument("--threads", help="OMP_NUM_THREADS of nobind engines (default: torch's, this machine's)")
    parser.add_argument("--plan", action="store_true", help="print the engines and the estimate, and stop")
    args = parser.parse_args()
    args.modes, args.dtypes = listed(args.modes, str), listed(args.dtypes, str)
    if not args.modes or not set(args.modes) <= set(MODES):
        parser.error(f"--modes takes compiled and/or eager, got {','.join(args.modes)}")
    if not args.dtypes or not set(args.dtypes) <= set(ROOF_DTYPES):
        parser.error(f"--dtypes takes {', '.join(ROOF_DTYPES)}, got {','.join(args.dtypes)}")
    for bind in args.binds:
        try:
            bind_threads(bind, 1, 1)
        except ValueError as err:
            parser.error(f"--binds: {err}")
    args.threads = listed(args.threads, int) if args.threads else None
    if args.threads is not None and (not args.threads or min(args.threads) < 1):
        parser.error("--threads takes counts of 1 or more")
    return args


def plan(args: argparse.Namespace, cfg: GeneratorConfig, flops_per_token: int) -> tuple[list[Engine], list[int]]:
    """The engines the options ask for and the chunk sizes each runs, with a line saying how many
    engines start and roughly how long they take."""
    threads = args.threads or [cfg.num_cpus]
    auto_threads = auto_bind_threads() if AUTO_BIND in args.binds else 0
    engines = engine_matrix(
        args.modes,
        listed(args.kv_block_sizes, int) if args.kv_block_sizes else [cfg.kv_block_size],
        listed(args.kv_cache_gibs, float) if args.kv_cache_gibs else [cfg.kv_cache_gib],
        args.dtypes,
        args.binds,
        threads,
        auto_threads,
    )
    chunks = listed(args.chunks, int) if args.chunks else [cfg.chunk_size]
    tokens_per_row = (args.prompts + 2) * args.k * cfg.max_new_tokens  # the row's prompts and its warm-up
    estimate = estimate_seconds(engines, len(chunks), tokens_per_row, flops_per_token)
    print(
        f"{len(engines)} vLLM engines to start, {len(engines) * len(chunks)} rows; "
        f"roughly {estimate / 60:.0f} min at most, without the roofs and the baselines"
    )
    for engine in engines:
        print(f"  {engine.name}")
    return engines, chunks


def measure_engine(engine: Engine, chunks: list[int], cfg: GeneratorConfig, args, prompts, warm_up) -> list[Row]:
    """One engine started under its environment, and one row per chunk size."""
    settings = {
        **cfg.__dict__,
        "enforce_eager": engine.mode == "eager",
        "kv_block_size": engine.block_size,
        "kv_cache_gib": engine.kv_cache_gib,
        "num_cpus": engine.threads,
    }
    rows = []
    with engine_environment(engine):
        start = time.perf_counter()
        backend = VLLMBackend(GeneratorConfig(**settings), args.path, engine.dtype)
        started = time.perf_counter() - start
        for chunk in chunks:
            # Each row starts as a run does: the shared 3-shot prefix cached, none of its own prompts.
            backend.llm.reset_prefix_cache()
            backend_tokens(backend, warm_up, cfg, args.k, "warm-up")  # first-call allocations too
            name = f"{engine.name}, {chunk} per call"
            chunked = GeneratorConfig(**{**cfg.__dict__, "chunk_size": chunk})
            measured = timed(lambda: backend_tokens(backend, prompts, chunked, args.k, name))
            rows.append(Row(name, engine.dtype, engine.threads, *measured, started))
        backend.close()
    return rows


def baseline_rows(cfg: GeneratorConfig, args, prompts) -> list[Row]:
    """The hf backend's row, then plain batched generate's, both float32 on cfg.num_cpus threads."""
    torch.set_num_threads(cfg.num_cpus)  # the roofs left torch on their last thread count
    hf = HFBackend(cfg, args.path, "float32")
    hf_name = f"hf backend (+stop, +self-reward), float32, {cfg.chunk_size} per call"
    hf_row = Row(
        hf_name, "float32", cfg.num_cpus, *timed(lambda: backend_tokens(hf, prompts, cfg, args.k, "hf backend"))
    )
    model, tokenizer = load_model_and_tokenizer(args.path, "float32")
    plain = timed(lambda: plain_loop(model, tokenizer, prompts, cfg, args.k))
    return [hf_row, Row(f"plain batched generate, float32, {cfg.chunk_size} per call", "float32", cfg.num_cpus, *plain)]


def print_table(rows: list[Row], reference: Row, reference_name: str, flops_per_token: int, roofs) -> None:
    print(
        f"| generator | tokens | seconds | tokens/s | GFLOP/s | share of the matmul roof | × {reference_name} "
        "| engine start |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        start_text = "–" if row.started is None else f"{row.started:.0f} s"
        gflops, share = achieved(row, flops_per_token, roofs)
        print(
            f"| {row.name} | {row.tokens} | {row.seconds:.1f} | {row.rate:.1f} | {gflops:.1f} | {share:.1%} | "
            f"{row.rate / reference.rate:.2f} | {start_text} |"
        )


def main() -> None:
    args = parse_args()
    quickstart = load_config("conf/math_quickstart.yaml", ["run_dir=unused"]).generator
    threads = torch.get_num_threads()
    cfg = GeneratorConfig(
        **{
            **quickstart.__dict__,
            "num_cpus": threads,
            "max_new_tokens": args.max_new_tokens or quickstart.max_new_tokens,
        }
    )
    args.path = resolve_model_path(args.model, "~/.cache/envisions-ray")
    parameters = matmul_parameters(args.path)
    flops_per_token = 2 * parameters
    engines, chunks = plan(args, cfg, flops_per_token)
    if args.plan:
        return
    book = PromptBook.load("conf/prompts/math.yaml")
    examples = load_examples("builtin:arith:train", args.prompts + 2)
    prompts = [book.explore(x.question, 3) for x in examples[:-2]]
    warm_up = [book.explore(x.question, 3) for x in examples[-2:]]
    # Measured before any engine starts, in each dtype on each thread count a row runs: the vllm
    # rows', and, unless --vllm-only, the float32 on num_cpus of hf and plain generate.
    baselines = [] if args.vllm_only else [("float32", cfg.num_cpus)]
    wanted = dict.fromkeys([(engine.dtype, engine.threads) for engine in engines] + baselines)
    roofs = {(dtype, count): matmul_gflops(dtype, count) for dtype, count in wanted}
    print(
        f"{len(prompts)} prompts (3-shot) x K={args.k}, temperature {cfg.temperature}, {cfg.max_new_tokens} new "
        f"tokens, stops {cfg.stop!r}, {threads} threads here; "
        f"CPU has native bf16 matmul (AVX512-BF16 or AMX): {bf16_matmul_supported()}"
    )
    print(
        f"matmul roof ({ROOF_SIZE}x{ROOF_SIZE} products, best of {ROOF_REPEATS}): "
        + ", ".join(f"{dtype} on {count} thread(s) {gflops:.1f} GFLOP/s" for (dtype, count), gflops in roofs.items())
        + f"; {flops_per_token / GIGA:.3f} GFLOP per generated token (2 x {parameters:,} parameters)"
    )
    rows = [row for engine in engines for row in measure_engine(engine, chunks, cfg, args, prompts, warm_up)]
    if args.vllm_only:
        print_table(rows, rows[0], "the first row", flops_per_token, roofs)
        return
    baseline = baseline_rows(cfg, args, prompts)
    print_table(rows + baseline, baseline[0], "hf backend", flops_per_token, roofs)


if __name__ == "__main__":  # vLLM spawns its engine process, which imports this module again
    main()
