"""Training step time on CPU: bfloat16 autocast against float32, in one run, on the same batches.

A step is what the trainer does per optimizer step of the quickstart: forward, target-token loss,
backward and AdamW on micro-batches of quickstart-sized (prompt, program) examples, float32
master weights either way. The losses of the two are printed side by side: bf16 must follow
float32's curve for the switch to be worth anything.

    python benchmarks/bench_train.py [--model smollm2] [--steps 6] [--batch 8]
"""

from __future__ import annotations

import argparse
import random
import time
from contextlib import nullcontext

import torch

from envisions_ray.cpu import bf16_matmul_supported
from envisions_ray.losses import collate, target_token_loss, tokenize
from envisions_ray.model import load_model_and_tokenizer, resolve_model_path
from envisions_ray.prompts import PromptBook
from envisions_ray.types import TrainExample
from envisions_ray.word_problems import arithmetic_problem

PROGRAM = "def solution():\n    apples = 12\n    apples = apples + 7\n    apples = apples - 5\n    return apples"


def run_steps(path: str, batches: list[dict], bf16: bool) -> tuple[list[float], list[float]]:
    """(seconds per step, loss per step), from the same initial weights and batches."""
    torch.manual_seed(0)
    model, _ = load_model_and_tokenizer(path)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    seconds, losses = [], []
    for batch in batches:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = target_token_loss(logits, batch["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seconds.append(time.perf_counter() - start)
        losses.append(loss.item())
    return seconds, losses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()

    path = resolve_model_path(args.model, "~/.cache/envisions-ray")
    _, tokenizer = load_model_and_tokenizer(path)
    tokenizer.padding_side = "right"
    book, rng = PromptBook.load("conf/prompts/math.yaml"), random.Random(0)
    batches = []
    for _ in range(args.steps + 1):  # the first step warms up and is not timed
        rows = [
            tokenize(tokenizer, TrainExample(book.explore(arithmetic_problem(rng)[0]), PROGRAM, "l1"), 512)
            for _ in range(args.batch)
        ]
        batches.append(collate(rows, tokenizer.pad_token_id))
    print(
        f"{torch.get_num_threads()} threads; CPU has native bf16 matmul (AVX512-BF16 or AMX): {bf16_matmul_supported()}"
    )
    f32_seconds, f32_losses = run_steps(path, batches, bf16=False)
    bf16_seconds, bf16_losses = run_steps(path, batches, bf16=True)
    f32_step, bf16_step = sum(f32_seconds[1:]) / args.steps, sum(bf16_seconds[1:]) / args.steps
    print("| precision | seconds per step | × float32 |")
    print("|---|---|---|")
    print(f"| float32 | {f32_step:.2f} | 1.00 |")
    print(f"| bf16 autocast | {bf16_step:.2f} | {f32_step / bf16_step:.2f} |")
    print("losses, float32: " + " ".join(f"{x:.3f}" for x in f32_losses))
    print("losses, bf16:    " + " ".join(f"{x:.3f}" for x in bf16_losses))


if __name__ == "__main__":
    main()
