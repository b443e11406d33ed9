"""The `hf` generator backend: transformers `generate` on CPU or one GPU.

Self-reward (ALGORITHM.md "Objects") comes from the same `generate` call: `output_logits=True`
returns the raw logits of every step, before temperature, top-p or any other processing. Their
log-softmax is the policy at temperature 1, whatever the sampling temperature was. The self-reward
of a sample is the mean of those log-probs over the tokens it sampled, up to the stop string or
EOS; that is what vLLM's `cumulative_logprob / len(token_ids)` gives the authors, and it needs no
second forward pass.

A grammar constrains sampling through `GrammarMask`, a logits processor that transformers runs
before temperature and top-p, as vLLM applies its grammar bitmask before sampling; both use
xgrammar. `output_logits` are taken before any processor, so the self-reward of a constrained
sample is still the unmasked policy's.

Seeded requests (`seeds`, see actors/backend.py) cannot use transformers' own sampling: it draws
every row of the batch from torch's one global generator at once, so a row's draw depends on the
rows beside it. A seeded call instead decodes "greedily" over `SeededDraw`, a last logits
processor that draws each row's token from that row's own `torch.Generator` (seed + k for sample
k, as vLLM seeds a request's n children) and leaves only that token possible. It samples what vLLM
samples, temperature then top-p; transformers' unseeded path also applies its default top-k of 50.
"""

from __future__ import annotations

import math

import torch
import xgrammar
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from envisions_ray.actors.backend import Sample, cut_at_stop
from envisions_ray.config import GeneratorConfig
from envisions_ray.losses import sequence_logprobs
from envisions_ray.model import load_model_and_tokenizer
from envisions_ray.tokens import collate, encode_prompt, scored_rows


class StopInGeneratedText(StoppingCriteria):
    """Ends a row once a stop string appears in the text it generated, never in its prompt.

    transformers' own `stop_strings` matches the end of the whole sequence, prompt included: a
    prompt ending in "\n" and a first generated "\n" make "\n\n", and the sample comes back empty.
    vLLM looks only at the generated text; so does this.
    """

    def __init__(self, tokenizer, stops: list[str], prompt_length: int):
        self.tokenizer, self.stops, self.prompt_length = tokenizer, stops, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        return torch.tensor([any(stop in text for stop in self.stops) for text in texts], device=input_ids.device)


class GrammarMask(LogitsProcessor):
    """Masks, per row, the tokens the grammar does not allow next. A row that stopped (on a stop
    string, or on EOS once its program is complete) is then fed padding, which its matcher refuses:
    from there the row is left alone, as transformers discards what it samples."""

    def __init__(self, compiled, rows: int):
        self.matchers = [xgrammar.GrammarMatcher(compiled) for _ in range(rows)]
        self.live = [True] * rows
        self.bitmask = xgrammar.allocate_token_bitmask(rows, compiled.tokenizer_info.vocab_size)
        self.prompt_length: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        elif input_ids.shape[1] > self.prompt_length:  # accept what was sampled last step
            for row, matcher in enumerate(self.matchers):
                if self.live[row] and not matcher.accept_token(int(input_ids[row, -1])):
                    self.live[row] = False
        self.bitmask.fill_(-1)  # all allowed, for rows no longer followed
        for row, matcher in enumerate(self.matchers):
            if self.live[row] and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self.bitmask, row)
        # A copy: transformers keeps the very tensor it passed in as the step's raw logits.
        masked = scores.to("cpu", torch.float32, copy=True)
        xgrammar.apply_token_bitmask_inplace(masked, self.bitmask)
        return masked.to(scores.device, scores.dtype)


class SeededDraw(LogitsProcessor):
    """Draws each row's next token from the row's own generator, seeded with `seeds[row]`, and
    returns scores that are -inf everywhere but there: greedy decoding then takes the drawn token.
    A row draws once per step whatever the other rows do, so its tokens depend on its seed and its
    own probabilities only. Run it last, on the scores temperature and top-p have shaped."""

    def __init__(self, seeds: list[int]):
        self.seeds = seeds
        self.generators: list[torch.Generator] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generators is None:
            self.generators = [torch.Generator(scores.device).manual_seed(seed) for seed in self.seeds]
        probs = torch.softmax(scores.float(), dim=-1)
        drawn = torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, self.generators)])
        return torch.full_like(scores, -math.inf).scatter_(1, drawn.unsqueeze(1), 0.0)


def sampled_mask(tokens: torch.Tensor, end_ids: list[int]) -> torch.Tensor:
    """1 for every generated token before the first EOS or pad: the tokens a sample's self-reward
    averages and its length counts. EOS is left out, as vllm_backend.counted_tokens leaves it out,
    also for a tokenizer whose pad is not its EOS; the tokens of a stop string are in."""
    ended = torch.isin(tokens, torch.tensor(end_ids, device=tokens.device))
    return (~ended).long().cumprod(dim=1)


def mean_sampled_logprob(
    step_logits: tuple[torch.Tensor, ...], tokens: torch.Tensor, end_ids: list[int]
) -> torch.Tensor:
    """Per row: mean over its counted tokens (`sampled_mask`) of log_softmax(raw logits)."""
    logprobs = torch.stack([torch.log_softmax(logits.float(), dim=-1) for logits in step_logits], dim=1)
    picked = logprobs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    sampled = sampled_mask(tokens, end_ids)
    return (picked * sampled).sum(dim=1) / sampled.sum(dim=1).clamp(min=1)


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
        vocabulary = xgrammar.TokenizerInfo.from_huggingface(
            self.tokenizer, vocab_size=self.model.get_output_embeddings().weight.shape[0]
        )
        self.grammars = xgrammar.GrammarCompiler(vocabulary)  # caches each grammar it compiles

    def grammar_mask(self, grammar: str, rows: int) -> list[LogitsProcessor]:
        return [GrammarMask(self.grammars.compile_grammar(grammar), rows)] if grammar else []

    @torch.inference_mode()
    def sample(
        self, prompts, n, temperature, max_new_tokens, with_self_reward, grammar="", seeds=None
    ) -> list[list[Sample]]:
        if temperature == 0 and n > 1:  # transformers refuses n > 1 when greedy; the n copies are identical
            greedy = self.sample(prompts, 1, temperature, max_new_tokens, with_self_reward, grammar)
            return [group * n for group in greedy]
        prompt_rows = [encode_prompt(self.tokenizer, prompt) for prompt in prompts]  # as vllm and the trainer see them
        processors = self.grammar_mask(grammar, len(prompts) * n)
        rows, copies, sampling = prompt_rows, n, {"do_sample": False}
        if seeds is not None and temperature > 0:  # row i * n + k draws from seeds[i] + k (module docstring)
            rows, copies = [row for row in prompt_rows for _ in range(n)], 1
            processors.append(TemperatureLogitsWarper(temperature))
            if self.cfg.top_p < 1.0:
                processors.append(TopPLogitsWarper(self.cfg.top_p))
            processors.append(SeededDraw([seed + k for seed in seeds for k in range(n)]))
        elif temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": self.cfg.top_p}
        batch = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt").to(self.device)
        output = self.model.generate(
            **batch,
            **sampling,
            num_return_sequences=copies,
            max_new_tokens=max_new_tokens,
            stopping_criteria=StoppingCriteriaList(
                [StopInGeneratedText(self.tokenizer, self.cfg.stop, batch["input_ids"].shape[1])]
            ),
            logits_processor=LogitsProcessorList(processors),
            pad_token_id=self.tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_logits=with_self_reward,
        )
        new_tokens = output.sequences[:, batch["input_ids"].shape[1] :]
        end_ids = [self.tokenizer.pad_token_id, self.tokenizer.eos_token_id]
        texts = [
            cut_at_stop(t, self.cfg.stop) for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        ]
        if with_self_reward:
            rewards = mean_sampled_logprob(output.logits, new_tokens, end_ids).tolist()
        else:
            rewards = [0.0] * len(texts)
        lengths = sampled_mask(new_tokens, end_ids).sum(dim=1).tolist()
        samples = [  # row j // n is sample j's prompt; hf keeps no prefix cache
            Sample(text, reward, length, prompt_tokens=len(prompt_rows[j // n]))
            for j, (text, reward, length) in enumerate(zip(texts, rewards, lengths))
        ]
        return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]

    @torch.inference_mode()
    def logprob(self, prompts, targets) -> list[float]:
        """Teacher-forced, tokenised exactly as the trainer tokenises (target + EOS), in chunk_size batches."""
        rows = scored_rows(self.tokenizer, prompts, targets, self.cfg.max_model_len)
        scores = []
        for start in range(0, len(rows), self.cfg.chunk_size):
            batch = collate(rows[start : start + self.cfg.chunk_size], self.tokenizer.pad_token_id)
            logits = self.model(
                input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device)
            ).logits
            scores.extend(sequence_logprobs(logits, batch["labels"].to(self.device)).tolist())
        return scores
