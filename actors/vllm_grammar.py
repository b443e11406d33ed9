"""The grammar, applied by vLLM after it takes its raw logprobs: a constrained sample's logprobs are
then the unmasked policy's, from the sampling pass itself, and its self-reward needs no second pass.

vLLM's own structured outputs mask the logits before its sampler runs
(vllm/v1/worker/gpu_model_runner.py `apply_grammar_bitmask`), so the logprobs of a constrained
sample come back renormalised over what the grammar allowed. Its sampler takes the raw logprobs
first and runs the logits processors after them (vllm/v1/sample/sampler.py `Sampler.forward`, vLLM
0.32.0). A grammar applied as a logits processor therefore constrains what is sampled and leaves the
logprobs the policy's own, and the prompt stays in the prefix cache: the teacher-forced pass this
replaced could not read it (vLLM skips the cache for a request that asks for prompt logprobs).

The engine loads `GrammarAfterLogprobs` by name (vllm_backend.LOGITS_PROCESSOR) in the process its
worker runs in: a spawned one, or the generator actor's own with `generator.engine_in_process`. A
request opts in with `SamplingParams(extra_args={GRAMMAR_ARG: EBNF})`; vLLM hands each request, and
each of its n samples, its own `GrammarRow`, with the live list of the tokens it has sampled.
"""

from __future__ import annotations

import torch
import xgrammar
from transformers import AutoTokenizer
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from envisions_ray.actors.vllm_backend import GRAMMAR_ARG


class GrammarRow:
    """One sample's matcher: takes in the tokens sampled since its last call, then masks, in place,
    every token the grammar does not allow next (after a complete program, all but EOS)."""

    def __init__(self, compiled):
        self.matcher = xgrammar.GrammarMatcher(compiled)
        self.bitmask = xgrammar.allocate_token_bitmask(1, compiled.tokenizer_info.vocab_size)
        self.accepted = 0

    def __call__(self, sampled: list[int], logits: torch.Tensor) -> torch.Tensor:
        for token in sampled[self.accepted :]:
            self.matcher.accept_token(token)
        self.accepted = len(sampled)
        self.matcher.fill_next_token_bitmask(self.bitmask)
        xgrammar.apply_token_bitmask_inplace(logits.unsqueeze(0), self.bitmask.to(logits.device))
        return logits


class GrammarAfterLogprobs(AdapterLogitsProcessor):
    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool):
        super().__init__(vllm_config, device, is_pin_memory)
        model = vllm_config.model_config
        vocabulary = xgrammar.TokenizerInfo.from_huggingface(
            AutoTokenizer.from_pretrained(model.tokenizer), vocab_size=model.get_vocab_size()
        )
        self.grammars = xgrammar.GrammarCompiler(vocabulary)  # caches each grammar it compiles

    def is_argmax_invariant(self) -> bool:
        return False  # a mask changes what greedy decoding picks

    def new_req_logits_processor(self, params) -> GrammarRow | None:
        grammar = (params.extra_args or {}).get(GRAMMAR_ARG)
        return GrammarRow(self.grammars.compile_grammar(grammar)) if grammar else None
