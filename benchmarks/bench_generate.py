"""Tokens/s of our `hf` backend against a plain batched `generate` loop on the same prompts.

Both sample K solutions per prompt with the same settings and stop strings in this process; ours
also keeps the raw logits and computes self-rewards, which is the overhead this measures.

    python benchmarks/bench_generate.py [--model smollm2] [--prompts 16] [--k 4]
"""
from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from actors.hf_backend import HFBackend
from envisions_ray.config import GeneratorConfig
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
                **batch, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, num_return_sequences=k,
                max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id, stop_strings=cfg.stop, tokenizer=tokenizer,
            )
        tokens += int((output[:, batch["input_ids"].shape[1] :] != tokenizer.pad_token_id).sum())
    return tokens


def ours(backend: HFBackend, prompts, cfg: GeneratorConfig, k: int) -> int:
    tokens, chunk = 0, max(1, cfg.chunk_size // k)
    for start in tqdm(range(0, len(prompts), chunk), desc="hf backend"):
        for group in backend.sample(prompts[start : start + chunk], k, cfg.temperature, cfg.max_new_tokens, True):
            tokens += sum(len(backend.tokenizer(s.text, add_special_tokens=False)["input_ids"]) for s in group)
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args()

    cfg = GeneratorConfig(num_cpus=torch.get_num_threads(), max_new_tokens=args.max_new_tokens, stop=["\n\n", "\nQuestion:"])
    path = resolve_model_path(args.model, "~/.cache/envisions-ray")
    book = PromptBook.load("conf/prompts/math.yaml")
    prompts = [book.explore(x.question, 3) for x in load_examples("builtin:arith:train", args.prompts)]
    backend = HFBackend(cfg, path, "float32")
    model, tokenizer = load_model_and_tokenizer(path)

    torch.manual_seed(0)
    start = time.perf_counter()
    base_tokens = plain_loop(model, tokenizer, prompts, cfg, args.k)
    base_rate = base_tokens / (time.perf_counter() - start)
    torch.manual_seed(0)
    start = time.perf_counter()
    our_tokens = ours(backend, prompts, cfg, args.k)
    our_rate = our_tokens / (time.perf_counter() - start)
    print(f"plain batched generate: {base_rate:8.1f} tokens/s ({base_tokens} tokens)")
    print(f"hf backend (+stop, +self-reward): {our_rate:8.1f} tokens/s ({our_tokens} tokens)")
    print(f"ratio (ours / plain): {our_rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
