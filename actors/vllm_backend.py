"""The `vllm` generator backend: a vLLM engine on one or more GPUs (the `gpu` extra).

Facts from vLLM's source (checked against the 0.27.0 and 0.33.0 wheels) that this file relies on:
- Self-reward needs the policy at temperature 1. With `logprobs_mode="raw_logprobs"` (an engine
  arg since 0.10.0, and its default; vllm/config/model.py) the sampler takes the log-softmax of the
  logits before penalties, temperature or top-p (vllm/v1/sample/sampler.py `Sampler.forward`; the
  V2 runner copies the logits before processing them, vllm/v1/worker/gpu/sample/sampler.py). So the
  logprob vLLM returns for each sampled token is the one we want, from the same pass, as in hf.
- `CompletionOutput.token_ids` (vllm/outputs.py) keeps the tokens up to and including the one that
  completed a stop string, while `text` is cut before the stop string; a final EOS (or stop token
  id) is appended to `token_ids` but never detokenised (vllm/v1/engine/detokenizer.py `update`).
  `logprobs` has one {token_id: Logprob} entry per token id, the sampled token always among them
  (vllm/v1/engine/logprobs.py).
- `RequestOutput.prompt_logprobs` starts with None: the first prompt token has no logprob
  (vllm/logprobs.py `create_prompt_logprobs`). Prompt logprobs come from raw logits too
  (vllm/v1/worker/gpu_model_runner.py `_get_prompt_logprobs_dict`).
"""
from __future__ import annotations

import gc

from actors.generator import Sample
from actors.hf_backend import cut_at_stop
from envisions_ray.config import GeneratorConfig
from envisions_ray.errors import UserError
from envisions_ray.losses import IGNORE, TrainExample, tokenize

# vLLM samples greedily below this temperature (`_SAMPLING_EPS` in vllm/sampling_params.py).
GREEDY_BELOW = 1e-5


def counted_tokens(completion) -> int:
    """Generated tokens up to the stop string or EOS, as hf counts them. A completion that ended on
    EOS (or a stop token id) has it last in token_ids, not in its text: hf masks it, so do we."""
    ended_on_token = completion.finish_reason == "stop" and not isinstance(completion.stop_reason, str)
    if ended_on_token and completion.token_ids:
        return len(completion.token_ids) - 1
    return len(completion.token_ids)


def samples_from_outputs(outputs, stops: list[str], with_self_reward: bool) -> list[list[Sample]]:
    """vLLM RequestOutputs -> Samples. The self-reward is the mean raw logprob of the counted tokens,
    the stop string's tokens included (as in hf); 0.0 for a completion with none (hf's clamp gives 0 too)."""
    groups = []
    for output in outputs:
        samples = []
        for completion in output.outputs:
            count = counted_tokens(completion)
            reward = 0.0
            if with_self_reward and count:
                picked = zip(completion.token_ids[:count], completion.logprobs)
                reward = sum(position[token].logprob for token, position in picked) / count
            samples.append(Sample(cut_at_stop(completion.text, stops), reward, count))
        groups.append(samples)
    return groups


def target_logprob_sums(outputs, prompt_lengths: list[int]) -> list[float]:
    """Sum of the prompt logprobs of the tokens after each prompt (the target and its EOS). The
    first token has no logprob (None), so scoring starts at 1 at the earliest, as in hf."""
    sums = []
    for output, prompt_length in zip(outputs, prompt_lengths):
        ids, positions = output.prompt_token_ids, output.prompt_logprobs
        sums.append(sum(positions[i][ids[i]].logprob for i in range(max(prompt_length, 1), len(ids))))
    return sums


class VLLMBackend:
    def __init__(self, cfg: GeneratorConfig, model_path: str, dtype: str):
        try:
            import vllm
        except ModuleNotFoundError as err:
            if err.name != "vllm":  # vllm is there but broken: its own error says more
                raise
            raise UserError("generator.backend=vllm needs the gpu extra: pip install 'envisions-ray[gpu]'") from None
        self.vllm, self.cfg, self.dtype = vllm, cfg, dtype
        self.llm = None
        self.load(model_path)

    def load(self, model_path: str) -> None:
        if self.llm is not None:
            # vLLM 0.33 has no public LLM.shutdown; this is what collecting the LLM would run. It
            # stops the engine core and its workers and frees their GPU memory before the new engine.
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
            gc.collect()
        self.llm = self.vllm.LLM(
            model=model_path,
            dtype=self.dtype,
            seed=self.cfg.seed,
            tensor_parallel_size=self.cfg.tensor_parallel_size,
            gpu_memory_utilization=self.cfg.gpu_memory_utilization,
            max_model_len=self.cfg.max_model_len,
            logprobs_mode="raw_logprobs",  # the default, pinned: self-reward depends on it
            # Inside our actor's placement group vLLM would pick its "ray" executor, which wants one
            # 1-GPU bundle per worker (vllm/v1/executor/ray_utils.py); the actor already holds all its
            # GPUs (actors/generator.py start_generators), so TP workers are its child processes.
            distributed_executor_backend="mp" if self.cfg.tensor_parallel_size > 1 else None,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def sample(self, prompts, n, temperature, max_new_tokens, with_self_reward) -> list[list[Sample]]:
        # Token ids, not text: vLLM would add BOS, while hf and the trainer tokenise without it.
        ids = [self.tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
        greedy = temperature < GREEDY_BELOW
        params = self.vllm.SamplingParams(
            n=1 if greedy else n,  # vLLM refuses n > 1 when greedy; the n copies are identical anyway
            temperature=temperature,
            top_p=self.cfg.top_p,
            max_tokens=max_new_tokens,
            stop=self.cfg.stop,
            # No per-request seed: a fixed one repeats the same samples on every call for a prompt.
            # The engine's seed makes the run reproducible, as torch.manual_seed does for hf.
            logprobs=0 if with_self_reward else None,  # 0: the sampled token's logprob only
        )
        outputs = self.llm.generate([self.vllm.TokensPrompt(prompt_token_ids=row) for row in ids], params, use_tqdm=False)
        groups = samples_from_outputs(outputs, self.cfg.stop, with_self_reward)
        return [group * n for group in groups] if greedy else groups

    def logprob(self, prompts, targets) -> list[float]:
        """Teacher-forced, tokenised as the trainer tokenises (target + EOS), by one prompt-logprobs pass.
        One token shorter than hf's cut: vLLM needs room for the one token it generates."""
        rows = [tokenize(self.tokenizer, TrainExample(p, t, "score"), self.cfg.max_model_len - 1) for p, t in zip(prompts, targets)]
        params = self.vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate([self.vllm.TokensPrompt(prompt_token_ids=ids) for ids, _ in rows], params, use_tqdm=False)
        return target_logprob_sums(outputs, [labels.count(IGNORE) for _, labels in rows])
