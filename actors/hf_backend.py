"""The `hf` generator backend: transformers `generate` on CPU or one GPU.

Self-reward (ALGORITHM.md "Objects"): after sampling, each solution is scored in one
teacher-forced forward pass over prompt + solution + EOS. The log-softmax of the raw logits is
the policy at temperature 1, whatever temperature and top-p the sampling used; the self-reward is
the mean of those log-probs over the solution tokens and the closing EOS, which is what vLLM's
`cumulative_logprob / len(token_ids)` gives the authors. Scoring the stored text (not the sampled
token ids) keeps the score consistent with what the trainer later fits.
"""
from __future__ import annotations

import torch

from actors.generator import Sample
from envisions_ray.config import GeneratorConfig
from envisions_ray.losses import TrainExample, collate, sequence_logprobs, tokenize
from envisions_ray.model import load_model_and_tokenizer


def cut_at_stop(text: str, stops: list[str]) -> str:
    """The text before the earliest stop string, without trailing whitespace."""
    end = min((text.find(stop) for stop in stops if stop in text), default=len(text))
    return text[:end].rstrip()


class HFBackend:
    def __init__(self, cfg: GeneratorConfig, model_path: str, dtype: str):
        self.cfg, self.dtype = cfg, dtype
        # Ray pins OMP threads to the actor's CPUs; torch must agree or it oversubscribes.
        torch.set_num_threads(max(1, int(cfg.num_cpus)))
        torch.manual_seed(cfg.seed)
        self.device = "cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.load(model_path)

    def load(self, model_path: str) -> None:
        self.model, self.tokenizer = load_model_and_tokenizer(model_path, self.dtype)
        self.model.to(self.device).eval()

    @torch.inference_mode()
    def sample(self, prompts, n, temperature, max_new_tokens, with_self_reward) -> list[list[Sample]]:
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": self.cfg.top_p} if temperature > 0 else {"do_sample": False}
        output = self.model.generate(
            **batch,
            **sampling,
            num_return_sequences=n,
            max_new_tokens=max_new_tokens,
            stop_strings=self.cfg.stop,
            tokenizer=self.tokenizer,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        texts = [cut_at_stop(t, self.cfg.stop) for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        prompt_per_text = [prompt for prompt in prompts for _ in range(n)]
        rewards = self.self_rewards(prompt_per_text, texts) if with_self_reward else [0.0] * len(texts)
        samples = [Sample(text, reward) for text, reward in zip(texts, rewards)]
        return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]

    @torch.inference_mode()
    def self_rewards(self, prompts: list[str], solutions: list[str]) -> list[float]:
        rewards = []
        for start in range(0, len(prompts), self.cfg.score_batch_size):
            pairs = zip(prompts[start : start + self.cfg.score_batch_size], solutions[start : start + self.cfg.score_batch_size])
            # Tokenised exactly as the trainer tokenises a (prompt, target) example.
            rows = [tokenize(self.tokenizer, TrainExample(p, s, "score"), self.model.config.max_position_embeddings) for p, s in pairs]
            batch = collate(rows, self.tokenizer.pad_token_id)
            logits = self.model(input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device)).logits
            total, count = sequence_logprobs(logits, batch["labels"].to(self.device))
            rewards.extend((total / count).tolist())
        return rewards
