"""Milliseconds per generated token that xgrammar spends on each domain's grammar mask, as shipped
against the same grammar with its bounded repetitions (`{0,N}`, `{1,N}`) made unbounded, in one run.

    python benchmarks/bench_grammar.py [--model smollm2] [--repeats 20]

vLLM computes the mask of every constrained sequence at every decode step, in the engine's
scheduler, one sequence after another: a batch of B sequences pays B masks a step. A bounded
repetition is counted state that xgrammar cannot cache a mask for, so each of its steps checks the
vocabulary at run time. The program walked token by token is a typical one per domain: the logic
demonstration of conf/prompts/logic.yaml, and a web program that types a sentence.
"""

from __future__ import annotations

import argparse
import re
import time

import xgrammar
from transformers import AutoTokenizer

from envisions_ray.model import resolve_model_path
from envisions_ray.prompts import PromptBook

WEB_PROGRAM = 'click(ref=4)\ntype(ref=4, "Tomorrow I will go to the market with Anna")\npress("Enter")\n'


def unbounded(grammar: str) -> str:
    return re.sub(r"\{1,\d+\}", "+", re.sub(r"\{0,\d+\}", "*", grammar))


def mask_ms_per_token(
    compiler, tokenizer_info, grammar: str, token_ids: list[int], repeats: int
) -> tuple[float, float]:
    """(compile ms, mean ms of one mask) over every token of the program, `repeats` times."""
    start = time.perf_counter()
    compiled = compiler.compile_grammar(grammar)
    compile_ms = 1000 * (time.perf_counter() - start)
    bitmask = xgrammar.allocate_token_bitmask(1, tokenizer_info.vocab_size)
    spent, steps = 0.0, 0
    for _ in range(repeats):
        matcher = xgrammar.GrammarMatcher(compiled)
        for token in token_ids:
            start = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask)
            spent += time.perf_counter() - start
            steps += 1
            if not matcher.accept_token(token):
                raise SystemExit(f"the grammar refuses the benchmark program at token {token}: {grammar[:80]}...")
    return compile_ms, 1000 * spent / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2", help="whose tokenizer the masks are over")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model, "~/.cache/envisions-ray"))
    tokenizer_info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    compiler = xgrammar.GrammarCompiler(tokenizer_info, cache_enabled=False)
    logic = PromptBook.load("conf/prompts/logic.yaml")
    programs = {
        "logic": (logic.grammar, logic.shots[0].solution),
        "web": (PromptBook.load("conf/prompts/web.yaml").grammar, WEB_PROGRAM),
    }

    print("| grammar | tokens | as shipped: mask | unbounded: mask | ratio | compile as shipped / unbounded |")
    print("|---|---|---|---|---|---|")
    for name, (grammar, program) in programs.items():
        token_ids = tokenizer(program, add_special_tokens=False)["input_ids"]
        shipped_compile, shipped = mask_ms_per_token(compiler, tokenizer_info, grammar, token_ids, args.repeats)
        free_compile, free = mask_ms_per_token(compiler, tokenizer_info, unbounded(grammar), token_ids, args.repeats)
        print(
            f"| {name} | {len(token_ids)} | {shipped:.3f} ms | {free:.3f} ms | {shipped / free:.1f}× "
            f"| {shipped_compile:.0f} / {free_compile:.0f} ms |"
        )


if __name__ == "__main__":
    main()
