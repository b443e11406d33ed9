"""Host memory a run will need, estimated before anything starts, so a run that cannot fit is
refused in one line instead of being killed an hour in.

Pure arithmetic on the model's shape (its config.json and safetensors headers, or a known table for
the packaged models not yet converted) and the run's config: no torch, no Ray. The parts:
- each train worker: float32 weights, gradients and AdamW's two moments (ZeRO shares them among the
  workers), the activations kept for the backward pass, the logits, and its process;
- each CPU generator: its weights in the engine's dtype, its KV cache, its processes;
- the driver, Ray's own processes and the executors.
Ray Train's workers exist only while a job trains; the generators stay up through training unless
the driver stops them for it (it does for GPU generators only), so the peak is the larger of the
training phase and the generation phase.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import struct
from dataclasses import dataclass, fields
from pathlib import Path

from envisions_ray.config import RunConfig
from envisions_ray.cpu import bf16_matmul_supported
from envisions_ray.errors import UserError
from envisions_ray.methods import METHODS
from envisions_ray.model import PACKAGED_MODELS, model_directory  # imports no torch at load time

GIB = 1 << 30

# --- The constants, in one place -------------------------------------------------------------
# Bytes per parameter of one training replica: the trainer loads float32 weights (bf16 autocast, when
# on, keeps them float32 and casts in the forward pass), float32 gradients, and AdamW's exp_avg and
# exp_avg_sq in float32.
WEIGHT_BYTES = 4
GRADIENT_BYTES = 4
ADAMW_BYTES = 8
# The logits of a micro-batch in float32, three times: the logits, their log-softmax (cross-entropy
# keeps it for the backward pass), and the gradient flowing back into them.
LOGIT_COPIES = 3
LOGIT_BYTES = 4
# Activations saved for the backward pass, per token and layer: bytes per unit of hidden_size and of
# intermediate_size, counted from the tensors a Llama / Qwen2 decoder layer keeps (two RMSNorms'
# float32 inputs and outputs, the inputs of q/k/v/o and the three MLP projections, q, k, v and the
# attention output, the MLP's gate, SiLU, up and product; SDPA's CPU kernel keeps no seq x seq
# scores). Under bf16 autocast each projection's input is a bf16 copy and the MLP's four
# intermediate_size tensors are bf16; in float32 the projections share their float32 inputs and the
# MLP's tensors are twice as wide. The float32 counts are not measured.
ACTIVATION_BYTES = {"bf16": (46, 8), "float32": (50, 16)}  # (per hidden unit, per intermediate unit)
# The counts above scaled to a measurement: a plain torch replica of Qwen2.5-Coder-0.5B (630M
# parameters, untied head), float32 weights, AdamW, bf16 autocast, 4 sequences of 384 tokens, 2
# threads, peaked at 15.5 GiB RSS, and 13.1 GiB with gradient checkpointing. With 0.91 this module
# gives 15.5 and 13.2 GiB for that case (tests/test_memory.py holds it there). The figures were
# reported as "GB"; read as 10^9 bytes the checkpointed one would lie below the weights, optimizer
# and logits alone (13.0 GiB), so they are taken as GiB.
ACTIVATION_CALIBRATION = 0.91
# With gradient checkpointing every layer keeps only its input, the float32 residual stream, and one
# layer's activations are rebuilt at a time in the backward pass.
CHECKPOINT_BYTES_PER_HIDDEN = 4
# Where config.json gives no intermediate_size: the classic transformer MLP's width.
DEFAULT_MLP_RATIO = 4
# A train worker's process: Python, torch, transformers and the Ray Train worker around them
# (about 1 GiB resident before the model loads).
TRAIN_PROCESS_GIB = 1.0
# A vLLM CPU generator is two processes with torch loaded, the Ray actor and vLLM's engine core,
# about 1 GiB each before weights and KV cache; an hf generator is one.
ENGINE_PROCESS_GIB = {"vllm": 2.0, "hf": 1.0}
# The driver, Ray's GCS and raylet, and the pool actor; then each executor, a Ray worker process
# (a web executor's browser comes on top and is not counted). Orders of magnitude, not measured.
DRIVER_AND_RAY_GIB = 1.0
EXECUTOR_GIB = 0.2
# While a job trains, Ray Train's own actors (its controller, dataset manager, autoscaling
# coordinator, preemption watcher, placement-group cleaner and synchronization actor) hold 0.2-0.4
# GiB each: 1.6 GiB summed on 2026-12-05, in the 0.5B GSM8K recipe whose engine Ray's memory
# monitor then killed (the estimate had left them out).
RAY_TRAIN_GIB = 1.6
# What the parts above miss while a job trains, in float32 copies of the weights per worker:
# conf/math_gsm8k_qwen_quick.yaml on 2026-12-05 peaked at 20.1 GiB of machine memory in use
# (benchmarks/bench_memory.py) against 17.2 estimated from the parts, 2.9 GiB more, 1.25 times
# its 2.35 GiB of float32 weights. Unexplained so far (candidates: the state dict the checkpoint's
# save copies, the weights loaded before they are moved into the model); counted in proportion to
# the weights so that a run is refused before it reaches Ray's memory monitor.
UNACCOUNTED_WEIGHT_COPIES = 1.25
# A run is refused when its estimate exceeds this share of the machine's memory: the kernel, page
# cache and the estimate's own error need the rest.
FIT_SHARE = 0.9
# The packaged models' shapes, read from their GGUF headers, for a dry run before the first run has
# converted them (model.py). qwen2.5-coder-0.5b's GGUF has its own output.weight: 630,167,424
# parameters, where the hub's tied model has 494M.
PACKAGED_CONFIGS = {
    "smollm2": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
    },
    "qwen2.5-coder-0.5b": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": False,
    },
}


@dataclass(frozen=True)
class ModelShape:
    params: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    vocab_size: int
    tied: bool  # the output layer shares the input embedding

    @classmethod
    def from_config(cls, config: dict, params: int | None = None) -> ModelShape:
        """From a config.json mapping; `params` (from the weights' headers) or counted from the
        dimensions, for a Llama-like decoder (Qwen2's q/k/v biases included)."""
        config = config.get("text_config") or config
        missing = [key for key in ("hidden_size", "num_hidden_layers", "vocab_size") if key not in config]
        if missing:
            raise ValueError(f"config.json has no {', '.join(missing)}")
        hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
        mlp = config.get("intermediate_size") or DEFAULT_MLP_RATIO * hidden
        tied = bool(config.get("tie_word_embeddings", True))  # transformers' default
        if params is None:
            heads = config.get("num_attention_heads") or 1
            head_dim = config.get("head_dim") or hidden // heads
            q, kv = heads * head_dim, (config.get("num_key_value_heads") or heads) * head_dim
            bias = q + 2 * kv if config.get("attention_bias", config.get("model_type") == "qwen2") else 0
            layer = hidden * (q + 2 * kv) + q * hidden + bias + 3 * hidden * mlp + 2 * hidden
            params = vocab * hidden * (1 if tied else 2) + layers * layer + hidden
        return cls(params, hidden, mlp, layers, vocab, tied)


@dataclass(frozen=True)
class WorkerMemory:
    """One train worker's bytes."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    logits: float
    reference: float  # DPO's frozen reference model
    process: float

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class EngineMemory:
    """One generator's bytes."""

    weights: float
    kv_cache: float
    process: float
    dtype: str

    @property
    def total(self) -> float:
        return self.weights + self.kv_cache + self.process


@dataclass(frozen=True)
class MemoryEstimate:
    worker: WorkerMemory
    workers: int
    zero_stage: int  # 0: plain DDP, every worker a whole replica
    engine: EngineMemory | None  # None: the generators are not in this machine's memory (GPU engines)
    engines: int
    engines_stopped_for_training: bool
    rest: float  # driver, Ray, executors
    ray_train: float  # Ray Train's own actors, while a job trains
    unaccounted: float  # measured while training, beyond the parts

    @property
    def generators(self) -> float:
        return self.engines * self.engine.total if self.engine else 0.0

    @property
    def training(self) -> float:
        generators = 0.0 if self.engines_stopped_for_training else self.generators
        return self.workers * self.worker.total + generators + self.rest + self.ray_train + self.unaccounted

    @property
    def generating(self) -> float:
        return self.generators + self.rest

    @property
    def peak(self) -> float:
        return max(self.training, self.generating)


def zero_available() -> bool:
    """Whether the trainer will run DeepSpeed ZeRO: as actors/train_job.py decides, without importing it."""
    return importlib.util.find_spec("deepspeed") is not None


def engine_dtype(dtype: str) -> str:
    """model.dtype as a CPU generator on this machine resolves it (model.resolve_dtype, without torch)."""
    if dtype == "auto":
        return "bfloat16" if bf16_matmul_supported() else "float32"
    return dtype


def estimate(
    cfg: RunConfig, shape: ModelShape, zero: bool | None = None, autocast: bool | None = None
) -> MemoryEstimate:
    """The run's memory. `zero`: DeepSpeed importable; `autocast`: the workers' forward in bf16; both
    read from this machine when None."""
    train, gen = cfg.train, cfg.generator
    zero = train.deepspeed and (zero_available() if zero is None else zero)
    if autocast is None:
        autocast = train.cpu_bf16 and not train.use_gpu and bf16_matmul_supported()
    stage = train.zero_stage if zero else 0
    n = train.num_workers
    # A DPO job holds a frozen float32 reference model per worker, and a batch of pairs is twice as
    # many sequences.
    dpo = METHODS[cfg.method].dpo
    sequences = train.micro_batch_size * (2 if dpo else 1)  # a pair's chosen and rejected rows
    tokens = sequences * train.max_length
    per_hidden, per_mlp = ACTIVATION_BYTES["bf16" if autocast else "float32"]
    layer = (per_hidden * shape.hidden_size + per_mlp * shape.intermediate_size) * ACTIVATION_CALIBRATION
    if train.gradient_checkpointing:
        activations = tokens * (shape.num_layers * CHECKPOINT_BYTES_PER_HIDDEN * shape.hidden_size + layer)
    else:
        activations = tokens * shape.num_layers * layer
    worker = WorkerMemory(
        weights=shape.params * WEIGHT_BYTES / (n if stage >= 3 else 1),
        gradients=shape.params * GRADIENT_BYTES / (n if stage >= 2 else 1),
        optimizer=shape.params * ADAMW_BYTES / (n if stage >= 1 else 1),
        activations=activations,
        logits=tokens * shape.vocab_size * LOGIT_BYTES * LOGIT_COPIES,
        reference=shape.params * WEIGHT_BYTES if dpo else 0.0,
        process=TRAIN_PROCESS_GIB * GIB,
    )
    engine = None
    if gen.num_gpus == 0:
        dtype = engine_dtype(cfg.model.dtype)
        served = shape.params
        if gen.backend == "vllm" and shape.tied:  # served as an untied copy (actors/vllm_backend.py)
            served += shape.vocab_size * shape.hidden_size
        engine = EngineMemory(
            weights=served * (4 if dtype == "float32" else 2),
            kv_cache=gen.kv_cache_gib * GIB if gen.backend == "vllm" else 0.0,  # hf's cache grows per batch
            process=ENGINE_PROCESS_GIB.get(gen.backend, 1.0) * GIB,
            dtype=dtype,
        )
    executors = max(cfg.env.max_executors or 0, cfg.env.num_executors)
    return MemoryEstimate(
        worker=worker,
        workers=n,
        zero_stage=stage,
        engine=engine,
        engines=gen.num_actors,
        # As run_iteration decides: the generators give way to the trainer when they hold GPUs, or
        # when generator.stop_while_training says so.
        engines_stopped_for_training=gen.num_gpus > 0 or gen.stop_while_training,
        rest=(DRIVER_AND_RAY_GIB + executors * EXECUTOR_GIB) * GIB,
        ray_train=RAY_TRAIN_GIB * GIB,
        unaccounted=n * UNACCOUNTED_WEIGHT_COPIES * shape.params * WEIGHT_BYTES,
    )


def safetensors_params(directory: Path) -> int | None:
    """Parameters stored in the directory's safetensors files, from their headers alone; None without any."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        total += sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")
    return total


def model_shape(model: str, cache_dir: str) -> ModelShape | str:
    """The shape of `model` (a checked model path: a packaged model's name, a directory or a hub id),
    or why it cannot be read here."""
    directory = model_directory(model, cache_dir)
    if model in PACKAGED_MODELS and not (directory / "config.json").is_file():
        return ModelShape.from_config(PACKAGED_CONFIGS[model]) if model in PACKAGED_CONFIGS else "not converted yet"
    if not (directory / "config.json").is_file():
        return f"no config.json readable for {model}"
    try:
        return ModelShape.from_config(
            json.loads((directory / "config.json").read_text()), safetensors_params(directory)
        )
    except (OSError, ValueError, KeyError, struct.error) as err:
        return f"{directory}: {err}"


def machine_memory() -> int | None:
    """This machine's memory in bytes (MemTotal); None where /proc/meminfo is not."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def on_cluster(cfg: RunConfig) -> bool:
    """Trainers or generators elsewhere than this machine's memory: not checked against it."""
    return bool(os.environ.get("RAY_ADDRESS")) or cfg.train.use_gpu


def _gib(value: float) -> str:
    return f"{value / GIB:.1f}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _worker_parts(w: WorkerMemory) -> str:
    parts = [("weights", w.weights), ("grads", w.gradients), ("optimizer", w.optimizer)]
    parts += [("activations", w.activations), ("logits", w.logits), ("DPO reference", w.reference)]
    return " + ".join(f"{name} {_gib(value)}" for name, value in [*parts, ("process", w.process)] if value)


def _engine_parts(e: EngineMemory) -> str:
    return f"weights {_gib(e.weights)} ({e.dtype}) + KV {_gib(e.kv_cache)} + processes {_gib(e.process)}"


def describe(est: MemoryEstimate) -> list[str]:
    """The parts in GiB, one line each: a train worker, a generator, the rest."""
    zero = f" (ZeRO-{est.zero_stage})" if est.zero_stage else ""
    lines = [f"{_count(est.workers, 'train worker')}{zero} x {_gib(est.worker.total)}: {_worker_parts(est.worker)}"]
    if est.engine is not None:
        up = "stopped" if est.engines_stopped_for_training else "up"
        lines.append(
            f"{_count(est.engines, 'generator')} x {_gib(est.engine.total)}: {_engine_parts(est.engine)}; "
            f"{up} while training"
        )
    else:
        lines.append("generators on GPUs: not counted")
    lines.append(
        f"driver, Ray and executors {_gib(est.rest)}; while training, Ray Train's actors {_gib(est.ray_train)} "
        f"and {_gib(est.unaccounted)} measured beyond the parts"
    )
    return lines


def check_memory(cfg: RunConfig, model: str) -> list[str]:
    """The plan's memory lines; a one-line UserError when the run would not fit this machine. `model`
    is a checked model path (model.check_model_path or resolve_model_path)."""
    shape = model_shape(model, cfg.model.cache_dir)
    if isinstance(shape, str):
        return [f"not estimated: {shape}"]
    est = estimate(cfg, shape)
    total = machine_memory()
    phase = "training" if est.training >= est.generating else "generating"
    head = f"~{_gib(est.peak)} GiB at peak ({phase})"
    if total is None:
        return [f"{head}; this machine's memory is unknown", *describe(est)]
    if on_cluster(cfg):
        return [f"{head}; on a cluster: not checked against this machine's {_gib(total)} GiB", *describe(est)]
    if est.peak > FIT_SHARE * total:
        raise UserError(
            f"memory: this run would peak at about {_gib(est.peak)} GiB, over {FIT_SHARE:.0%} of this machine's "
            f"{_gib(total)} GiB: {'; '.join(describe(est))}. Try {_advice(cfg, est)}"
        )
    return [f"{head} of {_gib(total)} GiB here (refused above {FIT_SHARE:.0%})", *describe(est)]


def _advice(cfg: RunConfig, est: MemoryEstimate) -> str:
    train = cfg.train
    knobs = []
    if not train.gradient_checkpointing:
        knobs.append("train.gradient_checkpointing=true")
    if est.workers > 1:
        knobs.append("train.num_workers=1")
        if est.zero_stage and est.zero_stage < 3:
            knobs.append("train.zero_stage=3")
    if train.micro_batch_size > 1:
        knobs.append("a smaller train.micro_batch_size")
    knobs.append("a smaller train.max_length (every sequence is counted that long)")
    return ", ".join(knobs)
