"""Training step time on CPU: bf16 against float32, in one run, on the same batches.

A step is what a quickstart training worker does per optimizer step: forward, target-token loss,
backward and AdamW on a micro-batch of quickstart-sized (prompt, program) examples. Each step runs
two ways: plain PyTorch, and DeepSpeed ZeRO as the trainer configures it (`deepspeed_config`, one
rank over gloo), each in float32, in bf16 autocast (float32 master weights, `train.cpu_bf16`) and,
for DeepSpeed, with its bf16 mode (bf16 weights, float32 master copy in the optimizer). The losses
are printed beside each other: bf16 must follow float32's curve for the switch to be worth anything.

    python benchmarks/bench_train.py [--model smollm2] [--steps 6] [--batch 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from contextlib import nullcontext

import torch
import torch.distributed as dist

from envisions_ray.actors.train_job import deepspeed_config
from envisions_ray.config import TrainConfig, load_config
from envisions_ray.cpu import bf16_matmul_supported
from envisions_ray.losses import target_token_loss
from envisions_ray.model import load_model_and_tokenizer, resolve_model_path
from envisions_ray.prompts import PromptBook
from envisions_ray.tokens import collate, tokenize
from envisions_ray.types import TrainExample
from envisions_ray.word_problems import arithmetic_problem

PROGRAM = "def solution():\n    apples = 12\n    apples = apples + 7\n    apples = apples - 5\n    return apples"
# (engine, precision): precision is float32, autocast (bf16 forward) or weights (bf16 parameters).
VARIANTS = [
    ("torch", "float32"),
    ("torch", "autocast"),
    ("deepspeed", "float32"),
    ("deepspeed", "autocast"),
    ("deepspeed", "weights"),
]


def run_steps(path: str, batches: list[dict], cfg: TrainConfig, engine: str, precision: str):
    """(seconds per step, loss per step), from the same initial weights and batches."""
    torch.manual_seed(0)
    model, _ = load_model_and_tokenizer(path)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    if engine == "deepspeed":
        import deepspeed

        config = deepspeed_config(cfg, 1, len(batches))
        model, *_ = deepspeed.initialize(
            model=model, optimizer=optimizer, config={**config, "bf16": {"enabled": precision == "weights"}}
        )
    seconds, losses = [], []
    for batch in batches:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if precision == "autocast" else nullcontext():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = target_token_loss(logits.float(), batch["labels"])
        if engine == "deepspeed":
            model.backward(loss)
            model.step()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        seconds.append(time.perf_counter() - start)
        losses.append(loss.item())
    return seconds, losses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=4, help="sequences per step (the quickstart's micro-batch)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a quickstart worker has 1 CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # One rank, as torchrun would describe it: DeepSpeed reads these.
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=os.environ.get("MASTER_PORT", "29511"),
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
    )
    dist.init_process_group("gloo", rank=0, world_size=1)

    quickstart = load_config("conf/math_quickstart.yaml", ["run_dir=unused"]).train
    cfg = TrainConfig(**{**quickstart.__dict__, "micro_batch_size": args.batch, "global_batch_size": args.batch})
    path = resolve_model_path(args.model, "~/.cache/envisions-ray")
    _, tokenizer = load_model_and_tokenizer(path)
    tokenizer.padding_side = "right"
    book, rng = PromptBook.load("conf/prompts/math.yaml"), random.Random(0)
    batches = []
    for _ in range(args.steps + 1):  # the first step warms up and is not timed
        rows = [
            tokenize(tokenizer, TrainExample(book.explore(arithmetic_problem(rng)[0]), PROGRAM, "l1"), cfg.max_length)
            for _ in range(args.batch)
        ]
        batches.append(collate(rows, tokenizer.pad_token_id))
    print(
        f"{args.threads} threads, {args.batch} sequences per step, lr {cfg.lr}, ZeRO stage {cfg.zero_stage}; "
        f"CPU has native bf16 matmul (AVX512-BF16 or AMX): {bf16_matmul_supported()}"
    )
    results = {variant: run_steps(path, batches, cfg, *variant) for variant in VARIANTS}
    print("| engine | precision | seconds per step | × float32, same engine | × torch float32 |")
    print("|---|---|---|---|---|")
    step = {variant: sum(seconds[1:]) / args.steps for variant, (seconds, _) in results.items()}
    for engine, precision in VARIANTS:
        own, base = step[(engine, precision)], step[("torch", "float32")]
        print(f"| {engine} | {precision} | {own:.2f} | {step[(engine, 'float32')] / own:.2f} | {base / own:.2f} |")
    for (engine, precision), (_, losses) in results.items():
        print(f"losses, {engine} {precision}: " + " ".join(f"{x:.3f}" for x in losses))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
