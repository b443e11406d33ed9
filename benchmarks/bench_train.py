"""Training step time on CPU: engines, ranks, precision and batching, in one run, on the same batches.

A step is what a training worker does per optimizer step (actors/train_job.py): forward with the
trainer's target-token loss, backward, gradient clipping and AdamW, on a global batch of `--batch`
(prompt, target) rows. The variants (issue 32, part 1), each named ENGINE-RANKSxTHREADS-PRECISION:
- `torch-1x2`: one plain-torch worker on all the cores; `torch-1x2-float32` is the baseline;
- `ddp-2x1`: torch DistributedDataParallel, one rank per core, over gloo;
- `zero0-*`, `zero2-*`: DeepSpeed ZeRO stage 0 and 2 as the trainer configures it (`deepspeed_config`
  with the stage overridden), on one rank with all the cores or one rank per core;
each in float32 and in bf16 autocast (float32 master weights, the trainer's `train.cpu_bf16`). The
cores are the math quickstart's training budget (num_workers x cpus_per_worker, 2). Every variant runs
in fresh processes of its own, so memory is per variant, from the same initial weights on the same
global batches: one rank gets the whole batch, two ranks half each, and each rank's loss is weighted
by its share of the batch's target tokens, so that every variant follows the same loss curve up to
rounding. A variant whose estimated peak memory exceeds what the machine has available is skipped.

The table gives per variant the median s/step of the timed steps (the first step warms up and is
not timed), `× baseline` (the baseline's s/step over the variant's: above 1 is faster), the largest
difference of its loss from the baseline's over all steps, set beside one bf16 ulp of the loss
printed below it, and the peak resident memory of its processes, all ranks summed.

Batches are cut as the trainer cuts them (`grouped_batches`, rows of about one length together);
the padding table sets them against the rows in shuffled order: the share of pad tokens, and the
baseline's s/step on each. The examples are `--examples`, a run's `iter-N/train.jsonl`, or without
it built-in word problems with programs of varied length.

    python benchmarks/bench_train.py [--model smollm2] [--examples FILE] [--steps 6] [--batch 4]
        [--variants NAME,NAME,...] [--no-shuffled-run]

`--variants` takes names from the list the script prints (default: all); the baseline always runs.
`--no-shuffled-run` prints the padding shares without timing the baseline on shuffled batches.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil
from bench_memory import tree_rss

from envisions_ray.config import RunConfig, TrainConfig, load_config
from envisions_ray.cpu import BF16_MATMUL_FLAGS, bf16_matmul_supported, cpu_flags
from envisions_ray.memory import FIT_SHARE, GIB, ModelShape, model_shape
from envisions_ray.memory import estimate as estimate_run
from envisions_ray.model import resolve_model_path
from envisions_ray.prompts import PromptBook
from envisions_ray.tokens import IGNORE, Tokenized, tokenize
from envisions_ray.types import TrainExample
from envisions_ray.word_problems import arithmetic_problem

QUICKSTART = "conf/math_quickstart.yaml"
# x86 flags beside the bf16 ones that decide how fast a bf16 or float32 product runs.
VECTOR_FLAGS = {"avx2", "avx512f", "amx_tile"}
# How often the peak memory of a variant's processes is sampled, in seconds: a step of the 0.5B
# model takes seconds, and its peak (logits, gradients) lasts about as long as a step's backward.
RSS_SAMPLE_SECONDS = 0.2
# Buffers of the engines on top of a replica's parts (envisions_ray/memory.py), read from the
# sources (torch 2's DDP, DeepSpeed 0.19's engine.py and stage_1_and_2.py), not measured:
# - DDP (gradient_as_bucket_view off, as Ray Train's prepare_model leaves it) copies every gradient
#   into its float32 buckets;
# - ZeRO-1/2 keeps a float32 copy of the rank's partition of the weights for its optimizer, which it
#   makes even from float32 weights;
# - DeepSpeed reduces gradients through a bucket of its default reduce_bucket_size, 5e8 elements in
#   float32, or the whole model where that is smaller (ZeRO-2's bucket, stage 0's flattened buffer).
DDP_BUCKET_BYTES = 4
ZERO_MASTER_BYTES = 4
ZERO_BUCKET_ELEMENTS = 500_000_000
ZERO_BUCKET_BYTES = 4
# Built-in examples: programs of 1 to 10 update lines between their first and last, 3 to 12 lines
# in all, so that rows vary in length about as a run's do (the GSM8K programs a 0.5B run trained
# on in its first iteration, on 2026-12-05, had 3 to 11 lines, 6 in the middle).
PROGRAM_UPDATES = (1, 10)
# Enough rows that a run's batches (7 of 4 rows by default) come out of one pass, and a length
# group (length_group 8 batches of 4 rows) has rows enough to sort, as in a run of 64 or more.
BUILTIN_EXAMPLES = 256
PRECISIONS = ("float32", "autocast")
KILLED = -signal.SIGKILL  # a child's return code after SIGKILL: the kernel's OOM killer, or watch()


@dataclass(frozen=True)
class Variant:
    engine: str  # torch | ddp | zero0 | zero2
    ranks: int
    threads: int
    precision: str  # float32 | autocast (bf16 forward, float32 master weights)

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.ranks}x{self.threads}-{self.precision}"

    @property
    def zero_stage(self) -> int | None:
        return int(self.engine[-1]) if self.engine.startswith("zero") else None


def all_variants(cores: int) -> list[Variant]:
    """The matrix on `cores` cores: one rank on all of them, and (not for plain torch) one per core.
    The first is the baseline, one plain-torch worker in float32."""
    shapes = [("torch", 1), ("ddp", cores), ("zero0", 1), ("zero0", cores), ("zero2", 1), ("zero2", cores)]
    return [Variant(engine, ranks, cores // ranks, precision) for engine, ranks in shapes for precision in PRECISIONS]


def builtin_examples() -> list[TrainExample]:
    rng = random.Random(0)
    book = PromptBook.load("conf/prompts/math.yaml")
    examples = []
    for _ in range(BUILTIN_EXAMPLES):
        updates = "".join(f"    total = total + {rng.randint(1, 99)}\n" for _ in range(rng.randint(*PROGRAM_UPDATES)))
        program = f"def solution():\n    total = {rng.randint(1, 99)}\n{updates}    return total"
        examples.append(TrainExample(book.explore(arithmetic_problem(rng)[0]), program, "l1"))
    return examples


def file_examples(path: str) -> list[TrainExample]:
    """The SFT rows of a run's train.jsonl (driver._export); its DPO pairs, if any, are left out."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [TrainExample(row["prompt"], row["target"], row["kind"]) for row in rows if "target" in row]


def step_batches(lengths: list[int], batch: int, group: int, seed: int, count: int) -> list[list[int]]:
    """`count` global batches of row indices as the trainer draws them for one worker (group 1:
    shuffled), passes over the rows following each other as epochs do."""
    from envisions_ray.actors.train_job import grouped_batches

    passes = (grouped_batches(lengths, batch, 1, group, seed + epoch) for epoch in itertools.count())
    return list(itertools.islice(itertools.chain.from_iterable(passes), count))


def padding_share(rows: list[Tokenized], batches: list[list[int]]) -> float:
    """Pad tokens over all tokens, each global batch padded to its longest row as one worker pads it."""
    real = sum(len(rows[i].input_ids) for batch in batches for i in batch)
    total = sum(len(batch) * max(len(rows[i].input_ids) for i in batch) for batch in batches)
    return 1 - real / total


def estimate_peak(run_cfg: RunConfig, shape: ModelShape, variant: Variant, batch: int, width: int) -> float:
    """Bytes the variant's ranks will hold at their peak: per rank, memory.py's train-worker parts
    (weights, gradients, AdamW moments as ZeRO shares them, activations and logits of its rows at
    the longest batch's width, its process), plus the engine's own buffers."""
    stage = variant.zero_stage
    train = replace(
        run_cfg.train,
        num_workers=variant.ranks,
        micro_batch_size=batch // variant.ranks,
        max_length=width,
        deepspeed=stage is not None,
        zero_stage=stage or 0,
        gradient_checkpointing=False,
    )
    worker = estimate_run(
        replace(run_cfg, train=train), shape, zero=stage is not None, autocast=variant.precision == "autocast"
    ).worker
    extra = shape.params * DDP_BUCKET_BYTES if variant.engine == "ddp" else 0.0
    if stage is not None:
        extra += min(shape.params, ZERO_BUCKET_ELEMENTS) * ZERO_BUCKET_BYTES
    if stage:
        extra += shape.params * ZERO_MASTER_BYTES / variant.ranks
    return variant.ranks * (worker.total + extra)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ranks(variant: Variant, spec_path: Path, work: Path) -> list[subprocess.Popen]:
    """The variant's ranks, each a fresh process of this script, told its rank as torchrun would
    tell it; each writes its output to work/NAME.RANK.log."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(variant.ranks)}
    ranks = []
    for rank in range(variant.ranks):
        with (work / f"{variant.name}.{rank}.log").open("w") as log:  # the child holds its own copy
            ranks.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--child", str(spec_path), "--rank", str(rank)],
                    env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return ranks


def watch(ranks: list[subprocess.Popen]) -> int:
    """Wait for the ranks; their peak resident bytes, summed. A rank that fails takes the others
    down with it, which would otherwise wait for it in a collective until gloo's timeout."""
    peak, watched = 0, [psutil.Process(p.pid) for p in ranks]
    try:
        while any(p.poll() is None for p in ranks):
            peak = max(peak, sum(map(tree_rss, watched)))
            if any(p.returncode not in (None, 0) for p in ranks):
                break
            time.sleep(RSS_SAMPLE_SECONDS)
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()
    return peak


def run_variant(variant: Variant, batches: list[list[dict]], spec: dict, work: Path) -> dict:
    """Run the variant's ranks; their result (seconds and losses per step) and peak RSS, or why not."""
    spec_path, result_path = work / f"{variant.name}.json", work / f"{variant.name}.result.json"
    spec = {**spec, "variant": asdict(variant), "batches": batches, "result": str(result_path)}
    spec_path.write_text(json.dumps(spec))
    ranks = start_ranks(variant, spec_path, work)
    peak = watch(ranks)
    failed = [(rank, p.returncode) for rank, p in enumerate(ranks) if p.returncode != 0]
    failed.sort(key=lambda failure: failure[1] == KILLED)  # a rank's own failure before the kills it caused
    if failed or not result_path.exists():
        rank, code = failed[0] if failed else (0, 0)
        tail = (work / f"{variant.name}.{rank}.log").read_text().strip().splitlines()[-1:] or ["no output"]
        why = "killed (SIGKILL: out of memory?)" if code == KILLED else f"exit {code}: {tail[0][:200]}"
        return {"error": f"rank {rank} {why}", "peak": peak}
    return {**json.loads(result_path.read_text()), "peak": peak}


@dataclass(frozen=True)
class MemoryGuard:
    """What a variant's estimate needs besides the variant: the run's config, the model's shape (or
    why it is unreadable) and the longest batch's width in tokens."""

    run_cfg: RunConfig
    shape: ModelShape | str
    width: int


def guarded_run(variant: Variant, batches: list[list[dict]], spec: dict, work: Path, guard: MemoryGuard) -> dict:
    """Run the variant unless its estimated peak exceeds the memory available now; a line either way."""
    if isinstance(guard.shape, str):  # no estimate: run it anyway
        print(f"{variant.name}: no memory estimate ({guard.shape})", flush=True)
    else:
        need = estimate_peak(guard.run_cfg, guard.shape, variant, spec["batch"], guard.width)
        available = psutil.virtual_memory().available
        if need > FIT_SHARE * available:  # the margin a run keeps: zero2-2x1 at 22.3 of 22.4 GiB was OOM-killed
            reason = f"skipped: estimate {need / GIB:.1f} GiB > {FIT_SHARE:.0%} of {available / GIB:.1f} GiB available"
            print(f"{variant.name}: {reason}", flush=True)
            return {"error": reason, "peak": 0}
        print(f"{variant.name}: estimate {need / GIB:.1f} GiB of {available / GIB:.1f} GiB available", flush=True)
    result = run_variant(variant, batches, spec, work)
    done = result.get("error") or f"{median_step(result):.2f} s/step, peak RSS {result['peak'] / GIB:.1f} GiB"
    print(f"{variant.name}: {done}", flush=True)
    return result


def median_step(result: dict) -> float:
    """Median seconds of the timed steps: the first step warms up (allocations, thread pools)."""
    return statistics.median(result["seconds"][1:])


def rank_batch(rows: list[dict], rank: int, ranks: int, pad_id: int):
    """This rank's share of a global batch, collated, and its loss weight: ranks x its share of the
    batch's target tokens, so that the ranks' averaged gradients are those of the whole batch's
    token-mean loss, as one worker computes it."""
    from envisions_ray.tokens import collate

    def targets(row: dict) -> int:  # the tokens the loss scores: labels after the first position
        return sum(label != IGNORE for label in row["labels"][1:])

    per_rank = len(rows) // ranks
    mine = rows[rank * per_rank : (rank + 1) * per_rank]
    weight = ranks * sum(map(targets, mine)) / sum(map(targets, rows))
    return collate([Tokenized(row["input_ids"], row["labels"], False) for row in mine], pad_id), weight


def prepare(variant: Variant, cfg: TrainConfig, spec: dict):
    """(model, advance): the model wrapped as the variant's engine wants it, and its backward and
    optimizer step. AdamW at a constant rate: the trainer's schedule would differ only in the rate."""
    import torch

    from envisions_ray.model import load_model_and_tokenizer

    torch.manual_seed(cfg.seed)
    model, _ = load_model_and_tokenizer(spec["path"])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if variant.zero_stage is not None:
        import deepspeed

        from envisions_ray.actors.train_job import deepspeed_config

        ds_cfg = replace(cfg, micro_batch_size=spec["batch"] // variant.ranks, zero_stage=variant.zero_stage)
        config = deepspeed_config(ds_cfg, 1, len(spec["batches"]))
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)

        def deepspeed_advance(loss: torch.Tensor) -> None:
            engine.backward(loss)
            engine.step()

        return engine, deepspeed_advance
    if variant.engine == "ddp":
        model = torch.nn.parallel.DistributedDataParallel(model)

    def advance(loss: torch.Tensor) -> None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()

    return model, advance


def child_main(spec_path: str, rank: int) -> None:
    """One rank of a variant: its steps, timed; rank 0 writes the seconds and the whole batch's losses."""
    import torch
    import torch.distributed as dist

    from envisions_ray.actors.train_job import _target_loss

    spec = json.loads(Path(spec_path).read_text())
    variant, cfg = Variant(**spec["variant"]), TrainConfig(**spec["cfg"])
    torch.set_num_threads(variant.threads)
    dist.init_process_group("gloo", rank=rank, world_size=variant.ranks)
    model, advance = prepare(variant, cfg, spec)
    seconds, losses = [], []
    for rows in spec["batches"]:
        batch, weight = rank_batch(rows, rank, variant.ranks, spec["pad_id"])
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if variant.precision == "autocast" else nullcontext():
            loss = _target_loss(model, batch) * weight
        advance(loss)
        dist.barrier()  # the step ends when the slowest rank's does
        seconds.append(time.perf_counter() - start)
        whole = loss.detach().clone()
        dist.all_reduce(whole)
        losses.append(whole.item() / variant.ranks)
    if rank == 0:
        Path(spec["result"]).write_text(json.dumps({"seconds": seconds, "losses": losses}))
    dist.destroy_process_group()


def cpu_line() -> str:
    """The CPU's model name and its flags that decide bf16's speed."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
                break
    except OSError:
        pass
    flags = " ".join(sorted((BF16_MATMUL_FLAGS | VECTOR_FLAGS) & cpu_flags())) or "none"
    return f"CPU: {name}; flags: {flags}; native bf16 matmul (AVX512-BF16, AMX or Arm BF16): {bf16_matmul_supported()}"


def select(variants: list[Variant], names: str | None) -> list[Variant]:
    """The named variants (all when none are named), the baseline (the first) first and always."""
    baseline, by_name = variants[0], {variant.name: variant for variant in variants}
    wanted = names.split(",") if names else list(by_name)
    unknown = [name for name in wanted if name not in by_name]
    if unknown:
        sys.exit(f"unknown variants {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [baseline] + [by_name[name] for name in wanted if name != baseline.name]


# One unit in the last place of a bf16 number near the loss, relative: bf16 keeps 7 mantissa bits,
# so its neighbouring values lie 2^-7 apart at 1.0. A loss curve that stays within this of float32's
# is as close as bf16 arithmetic can be asked to come.
BF16_ULP = 2**-7


def print_tables(variants: list[Variant], results: dict, padding: list[tuple[str, float, dict | None]]) -> None:
    base = results[variants[0].name]
    print("\n| variant | ranks × threads | precision | s/step | × baseline | max \\|loss − float32\\| | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|")
    for variant in variants:
        result, shape = results[variant.name], f"{variant.ranks} × {variant.threads}"
        if "error" in result:
            print(f"| {variant.name} | {shape} | {variant.precision} | {result['error']} | — | — | — |")
            continue
        own = median_step(result)
        ratio = f"{median_step(base) / own:.2f}" if "error" not in base else "—"
        gap = "—" if "error" in base else f"{max(abs(a - b) for a, b in zip(result['losses'], base['losses'])):.5f}"
        peak = result["peak"] / GIB
        print(f"| {variant.name} | {shape} | {variant.precision} | {own:.2f} | {ratio} | {gap} | {peak:.1f} |")
    print("\n| batches | padding share | s/step, baseline |")
    print("|---|---|---|")
    for name, share, result in padding:
        seconds = "not run" if result is None else result.get("error") or f"{median_step(result):.2f}"
        print(f"| {name} | {share:.1%} | {seconds} |")
    if "error" not in base:
        print(
            f"\none bf16 ulp at the baseline's first loss ({base['losses'][0]:.3f}): {base['losses'][0] * BF16_ULP:.5f}"
        )
    for variant in variants:
        if "error" not in results[variant.name]:
            print(f"losses, {variant.name}: " + " ".join(f"{x:.4f}" for x in results[variant.name]["losses"]))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="a packaged model's name or a model directory")
    parser.add_argument("--examples", help="a run's train.jsonl (default: built-in rows of varied length)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps, after one warm-up step")
    parser.add_argument("--batch", type=int, default=4, help="rows per step, over all ranks together")
    parser.add_argument("--variants", help="comma-separated variant names (default: all)")
    parser.add_argument("--no-shuffled-run", action="store_true", help="do not time the baseline on shuffled rows")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a variant's spec: run one rank of it
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        child_main(args.child, args.rank)
        return
    from transformers import AutoTokenizer

    run_cfg = load_config(QUICKSTART, ["run_dir=unused"])
    cfg = run_cfg.train
    cores = int(cfg.num_workers * cfg.cpus_per_worker)  # the quickstart trainer's CPUs
    variants = select(all_variants(cores), args.variants)
    if args.batch % cores:
        sys.exit(f"--batch {args.batch} does not split over {cores} ranks")
    print(cpu_line())
    path = resolve_model_path(args.model, run_cfg.model.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    examples = file_examples(args.examples) if args.examples else builtin_examples()
    rows = [row for row in (tokenize(tokenizer, e, cfg.max_length) for e in examples) if row is not None]
    lengths = [len(row.input_ids) for row in rows]
    grouped = step_batches(lengths, args.batch, cfg.length_group, cfg.seed, args.steps + 1)
    shuffled = step_batches(lengths, args.batch, 1, cfg.seed, args.steps + 1)
    print(
        f"{args.model}: {len(rows)} rows from {args.examples or 'built-in examples'}, {args.batch} a step, "
        f"{args.steps} timed steps after a warm-up, lr {cfg.lr}, {cores} cores, variants: "
        + ", ".join(v.name for v in variants),
        flush=True,
    )

    def as_spec(batches: list[list[int]]) -> list[list[dict]]:
        return [[{"input_ids": rows[i].input_ids, "labels": rows[i].labels} for i in batch] for batch in batches]

    spec = {"path": path, "cfg": asdict(cfg), "pad_id": tokenizer.pad_token_id, "batch": args.batch}
    guard = MemoryGuard(
        run_cfg, model_shape(path, run_cfg.model.cache_dir), max(lengths[i] for batch in grouped for i in batch)
    )
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        results = {v.name: guarded_run(v, as_spec(grouped), spec, work, guard) for v in variants}
        shuffled_result = None
        if not args.no_shuffled_run:  # files of their own: the same variant has run on the grouped batches
            (work / "shuffled").mkdir()
            shuffled_result = guarded_run(variants[0], as_spec(shuffled), spec, work / "shuffled", guard)
    padding = [
        ("shuffled (length_group 1)", padding_share(rows, shuffled), shuffled_result),
        (
            f"length-grouped (length_group {cfg.length_group}, the trainer's)",
            padding_share(rows, grouped),
            results[variants[0].name],
        ),
    ]
    print_tables(variants, results, padding)


if __name__ == "__main__":
    main()
