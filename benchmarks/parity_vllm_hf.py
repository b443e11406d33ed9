"""Do the vllm and hf backends give the same answers on the real model? Two checks, one run:

1. Self-reward. vLLM samples K programs per prompt (the quickstart's temperature and stops) with
   each token's raw logprob; a teacher-forced transformers pass over exactly the same token ids
   gives the reference. Printed: the largest and mean absolute difference of the per-sample mean.
   Below float32 the same teacher-forced pass in float32 is printed too: the dtype's own rounding,
   the scale against which the backends' difference is judged.
2. Greedy eval. Both backends answer the quickstart's eval set (3-shot, greedy) and the math
   sandbox scores every program. Printed: both accuracies and the problems where they differ.

    python benchmarks/parity_vllm_hf.py [--model smollm2] [--dtype float32] [--eval-size 200]
"""

from __future__ import annotations

import argparse

import torch
from tqdm import tqdm

from envisions_ray.actors.hf_backend import HFBackend
from envisions_ray.actors.vllm_backend import VLLMBackend, counted_tokens, samples_from_outputs
from envisions_ray.config import GeneratorConfig, load_config
from envisions_ray.data import load_examples
from envisions_ray.envs import make_env
from envisions_ray.model import load_model_and_tokenizer, resolve_model_path
from envisions_ray.prompts import PromptBook
from envisions_ray.tokens import encode_prompt


def teacher_forced_means(model, prompt_ids: list[int], completions: list[list[int]]) -> list[float]:
    means = []
    for ids in completions:
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prompt_ids + ids])).logits[0].float()
        logprobs = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
        means.append(logprobs[torch.arange(len(ids)), torch.tensor(ids)].mean().item())
    return means


def self_reward_gap(
    backend: VLLMBackend,
    hf: HFBackend,
    prompts: list[str],
    cfg: GeneratorConfig,
    k: int,
    float32_model=None,
) -> tuple[list[float], list[float]]:
    """|vLLM - teacher-forced| per sample, and |teacher-forced - the same in float32| when given."""
    params = backend.vllm.SamplingParams(
        n=k, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens, stop=cfg.stop, logprobs=0
    )
    gaps, rounding = [], []
    for prompt in tqdm(prompts, desc="self-reward against teacher forcing"):
        prompt_ids = encode_prompt(backend.tokenizer, prompt)  # as the backends condition on it
        [output] = backend.llm.generate(
            [backend.vllm.TokensPrompt(prompt_token_ids=prompt_ids)], params, use_tqdm=False
        )
        [samples] = samples_from_outputs([output], cfg.stop, True)
        counted = [list(c.token_ids[: counted_tokens(c)]) for c in output.outputs]
        kept = [(sample, ids) for sample, ids in zip(samples, counted) if ids]
        reference = teacher_forced_means(hf.model, prompt_ids, [ids for _, ids in kept])
        gaps += [abs(sample.self_reward - ref) for (sample, _), ref in zip(kept, reference)]
        if float32_model is not None:
            exact = teacher_forced_means(float32_model, prompt_ids, [ids for _, ids in kept])
            rounding += [abs(ref - value) for ref, value in zip(reference, exact)]
    return gaps, rounding


def greedy_rewards(
    backend, prompts: list[str], examples, env, cfg: GeneratorConfig, name: str
) -> tuple[list[str], list[int]]:
    texts = []
    for start in tqdm(range(0, len(prompts), cfg.chunk_size), desc=f"greedy eval, {name}"):
        texts += [
            group[0].text
            for group in backend.sample(prompts[start : start + cfg.chunk_size], 1, 0.0, cfg.max_new_tokens, False)
        ]
    return texts, [env.execute(text, example).reward for text, example in zip(texts, examples)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompts", type=int, default=16, help="prompts for the self-reward check")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--eval-size", type=int, default=200)
    args = parser.parse_args()

    run = load_config("conf/math_quickstart.yaml", ["run_dir=unused"])
    cfg = run.generator
    path = resolve_model_path(args.model, run.model.cache_dir)
    book = PromptBook.load(run.env.prompt_file)
    train = [book.explore(x.question, 3) for x in load_examples("builtin:arith:train", args.prompts)]
    examples = load_examples("builtin:arith:eval", args.eval_size)
    eval_prompts = [book.explore(x.question, 3) for x in examples]
    env = make_env(run.env)

    vllm = VLLMBackend(cfg, path, args.dtype)
    hf = HFBackend(GeneratorConfig(**{**cfg.__dict__, "backend": "hf"}), path, args.dtype)
    float32_model = None if args.dtype == "float32" else load_model_and_tokenizer(path, "float32")[0]
    gaps, rounding = self_reward_gap(vllm, hf, train, cfg, args.k, float32_model)
    vllm_texts, vllm_rewards = greedy_rewards(vllm, eval_prompts, examples, env, cfg, "vllm")
    vllm.close()
    hf_texts, hf_rewards = greedy_rewards(hf, eval_prompts, examples, env, cfg, "hf")
    env.close()

    print(
        f"self-reward, {len(gaps)} samples ({args.dtype}): |vllm - teacher-forced| "
        f"max {max(gaps):.2e}, mean {sum(gaps) / len(gaps):.2e}"
    )
    if rounding:
        print(
            f"the dtype's own rounding: |teacher-forced {args.dtype} - teacher-forced float32| "
            f"max {max(rounding):.2e}, mean {sum(rounding) / len(rounding):.2e}"
        )
    differ = [i for i, (a, b) in enumerate(zip(vllm_rewards, hf_rewards)) if a != b]
    other_text = sum(a != b for a, b in zip(vllm_texts, hf_texts))
    print(
        f"greedy eval, {len(examples)} problems ({args.dtype}): vllm {sum(vllm_rewards) / len(examples):.1%}, "
        f"hf {sum(hf_rewards) / len(examples):.1%}; {len(differ)} problems scored differently, "
        f"{other_text} programs differ in text"
    )
    for i in differ:
        print(
            f"--- {examples[i].id}: vllm reward {vllm_rewards[i]}, hf reward {hf_rewards[i]}\n"
            f"vllm: {vllm_texts[i]!r}\nhf:   {hf_texts[i]!r}"
        )


if __name__ == "__main__":  # vLLM spawns its engine process, which imports this module again
    main()
