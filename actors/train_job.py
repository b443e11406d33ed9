"""The Ray Train job: L1 + L2 fine-tuning (or the baselines' DPO) under Ray Train's TorchTrainer.

Not an actor: `train` launches one TorchTrainer job from the driver and `train_loop_per_worker` is
what each of its workers runs. Every worker loads the initial model fresh (the base model, or the
last checkpoint when training continually), trains on its shard of the (prompt, target) examples
with AdamW and a warmed-up schedule, and rank 0 writes a safetensors Hugging Face checkpoint that
the generators load. A job reports that one checkpoint at its end; a worker that dies makes Ray
Train (`FailureConfig`) run the job again from its start, so the checkpoint is still written once.
An example over max_length trains after a prompt cut from its start, or not at all when its target
alone is over it (tokens.tokenize); a job left with none trains nothing and reports no checkpoint.
DeepSpeed ZeRO runs the step when it is importable (on CPU over gloo); otherwise plain DDP.
Given `dpo_beta`, the examples are preference pairs and the initial model, frozen, is DPO's
reference.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import tempfile
from contextlib import nullcontext
from dataclasses import asdict
from functools import partial
from pathlib import Path, PurePosixPath

import ray.train
import torch
from ray.train import Checkpoint, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch.utils.data import DataLoader
from tqdm import tqdm

from envisions_ray.actors.restarts import train_workers_started
from envisions_ray.config import TrainConfig
from envisions_ray.cpu import bf16_matmul_supported
from envisions_ray.losses import dpo_loss, sequence_logprobs, target_token_loss
from envisions_ray.model import TRAINED_MARKER, load_model_and_tokenizer, local_copy
from envisions_ray.tokens import IGNORE, Fitting, collate, fitting, tokenize, tokenize_pair
from envisions_ray.trained import Trained
from envisions_ray.types import PreferenceExample, TrainExample


def deepspeed_available() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def attention_implementation(use_gpu: bool) -> str:
    """FlashAttention-2 on GPUs that have the flash-attn package, PyTorch's SDPA otherwise."""
    return "flash_attention_2" if use_gpu and importlib.util.find_spec("flash_attn") is not None else "sdpa"


def train(
    cfg: TrainConfig,
    init_model: str,
    examples: list[TrainExample] | list[PreferenceExample],
    storage_dir: str,
    name: str,
    dpo_beta: float | None = None,
) -> Trained:
    """Run one training job (DPO when `dpo_beta` is given)."""
    workers_before = train_workers_started()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": asdict(cfg),
            "init_model": init_model,
            "examples": [asdict(e) for e in examples],
            "dpo_beta": dpo_beta,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
        ),
        run_config=RunConfig(
            storage_path=cfg.storage_path or str(Path(storage_dir).resolve()),
            name=name,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )
    result = trainer.fit()
    restarts = (train_workers_started() - workers_before) // cfg.num_workers - 1  # worker groups after the first
    if result.checkpoint is None:  # the workers found every example too long
        return Trained(None, None, restarts, dropped_too_long=len(examples))
    checkpoint = result.checkpoint.path
    if "://" in cfg.storage_path:  # Ray gives the path inside the bucket; the generators need the URI
        checkpoint = f"{cfg.storage_path.rstrip('/')}/{name}/{PurePosixPath(checkpoint).name}"
    fit = Fitting(*(result.metrics.get(field, 0) for field in Fitting._fields))  # 0: a report from before
    return Trained(checkpoint, result.metrics["loss"], restarts, *fit)


def train_loop_per_worker(config: dict) -> None:
    cfg = TrainConfig(**config["cfg"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(cfg.seed)
    init_model = local_copy(config["init_model"])
    model, tokenizer = load_model_and_tokenizer(init_model, attn_implementation=attention_implementation(cfg.use_gpu))
    tokenizer.padding_side = "right"
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if config["dpo_beta"] is None:
        tokenized = [tokenize(tokenizer, TrainExample(**e), cfg.max_length) for e in config["examples"]]
    else:
        tokenized = [tokenize_pair(tokenizer, PreferenceExample(**e), cfg.max_length) for e in config["examples"]]
    rows = [row for row in tokenized if row is not None]
    if not rows:  # every example too long: no report, and without a checkpoint `train` knows why
        return
    if config["dpo_beta"] is None:
        collate_rows, batch_loss = partial(collate, pad_id=tokenizer.pad_token_id), _target_loss
        lengths = [len(row.input_ids) for row in rows]
    else:
        reference = (
            load_model_and_tokenizer(init_model)[0].to(ray.train.torch.get_device()).eval().requires_grad_(False)
        )

        # Chosen rows make the first half of a batch, their rejected partners the second.
        def collate_rows(batch):
            return collate([pair.chosen for pair in batch] + [pair.rejected for pair in batch], tokenizer.pad_token_id)

        def batch_loss(model, batch):
            return _dpo_loss(model, reference, batch, config["dpo_beta"])

        lengths = [len(pair.chosen.input_ids) + len(pair.rejected.input_ids) for pair in rows]

    def one_pass(epoch: int) -> DataLoader:
        batches = grouped_batches(lengths, cfg.micro_batch_size, world_size, cfg.length_group, cfg.seed + epoch)
        return DataLoader(rows, batch_sampler=batches[rank::world_size], collate_fn=collate_rows)

    accumulation = accumulation_steps(cfg, world_size)
    plan = step_plan(len(one_pass(0)), accumulation, cfg.epochs, cfg.steps)
    step = _deepspeed_step if cfg.deepspeed and deepspeed_available() else _ddp_step
    model, advance = step(model, cfg, accumulation, sum(plan))

    losses = []
    progress = tqdm(total=len(plan), desc="train", disable=rank != 0, unit="batch")
    passes = itertools.chain.from_iterable(one_pass(epoch) for epoch in itertools.count())
    for boundary, batch in zip(plan, passes):
        with _precision(cfg):
            loss = batch_loss(model, batch)
        advance(loss, boundary)
        losses.append(loss.item())
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.3f}")
    progress.close()
    _save_and_report(model, tokenizer, cfg, rank, sum(losses) / max(1, len(losses)), fitting(tokenized))


def step_plan(batches_per_pass: int, accumulation: int, epochs: int, steps: int | None) -> list[bool]:
    """One entry per micro-batch: whether an optimizer step follows it. By epochs, each pass over
    the data ends with a step, a short last one included. By `steps`, the data is cycled and every
    step takes `accumulation` micro-batches, so methods with more or fewer examples train as long."""
    if steps:
        return [(index + 1) % accumulation == 0 for index in range(steps * accumulation)]
    one_pass = [(index + 1) % accumulation == 0 or index + 1 == batches_per_pass for index in range(batches_per_pass)]
    return one_pass * epochs


def grouped_batches(lengths: list[int], micro_batch: int, world_size: int, group: int, seed: int) -> list[list[int]]:
    """One pass's micro-batches of row indices, rank r's being every world_size-th from r.

    The rows are shuffled; every `group` micro-steps' worth of them (a micro-step is one micro-batch
    on every rank) is sorted by length and cut into micro-steps, so a batch holds rows of about one
    length and little of it is padding (docs/results/2026-12-05-epyc-avx512bf16.md "Speed"); then
    the micro-steps are shuffled, so the pass does not go from short rows to long ones. Rows are
    repeated from the start of the shuffle until every rank has as many full batches as the others,
    as torch's DistributedSampler pads."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    per_step = micro_batch * world_size
    padded = math.ceil(len(order) / per_step) * per_step
    order = list(itertools.islice(itertools.cycle(order), padded))
    steps = []
    for start in range(0, padded, group * per_step):
        rows = sorted(order[start : start + group * per_step], key=lengths.__getitem__)
        steps.extend(rows[i : i + per_step] for i in range(0, len(rows), per_step))
    steps = [steps[i] for i in torch.randperm(len(steps), generator=generator).tolist()]
    return [step[i : i + micro_batch] for step in steps for i in range(0, per_step, micro_batch)]


def _precision(cfg: TrainConfig):
    """bf16 autocast for the forward pass on CPUs that multiply bf16 natively, when asked; else nothing."""
    if cfg.cpu_bf16 and not cfg.use_gpu and bf16_matmul_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def accumulation_steps(cfg: TrainConfig, world_size: int) -> int:
    """Micro-batches per optimizer step, so that every step sees global_batch_size examples."""
    return max(1, cfg.global_batch_size // (cfg.micro_batch_size * world_size))


def deepspeed_config(cfg: TrainConfig, accumulation: int, total_steps: int) -> dict:
    return {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.use_gpu},
        "steps_per_print": total_steps + 1,  # our own progress bar reports the loss
    }


def _forward(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) on the model's device, from the position before the batch's first target
    token on: the prompt's logits add nothing to the loss, and with Qwen's 152k-word vocabulary the
    output layer's logits and their gradient are most of a step's activations."""
    device = next(model.parameters()).device
    first = first_scored_position(batch["labels"])
    keep = batch["labels"].size(1) - first
    logits = model(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        logits_to_keep=keep,
    ).logits
    return logits, batch["labels"][:, first:].to(device)


def first_scored_position(labels: torch.Tensor) -> int:
    """The first position whose logit predicts a target token: the one before the earliest label."""
    targets = (labels != IGNORE).any(dim=0).nonzero()
    return max(0, int(targets[0]) - 1) if len(targets) else 0


def _target_loss(model, batch: dict) -> torch.Tensor:
    return target_token_loss(*_forward(model, batch))


def _dpo_loss(model, reference, batch: dict, beta: float) -> torch.Tensor:
    policy = sequence_logprobs(*_forward(model, batch))
    with torch.no_grad():
        frozen = sequence_logprobs(*_forward(reference, batch))
    half = len(policy) // 2
    return dpo_loss(policy[:half], policy[half:], frozen[:half], frozen[half:], beta)


def _optimizer_and_schedule(model, cfg: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = warmup_steps(cfg.warmup_ratio, total_steps)
    return optimizer, get_scheduler(cfg.lr_schedule, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def warmup_steps(ratio: float, total_steps: int) -> int:
    """Rounded down. A warm-up's first step has learning rate 0 (transformers' schedules start at
    0/warmup), so rounding up, as HF's Trainer does, gave a one-step run one warm-up step and
    left the model untouched (issue 13 part 10); below 1/ratio steps there is no warm-up."""
    return math.floor(ratio * total_steps)


def _ddp_step(model, cfg: TrainConfig, accumulation: int, total_steps: int):
    model = ray.train.torch.prepare_model(model)
    optimizer, schedule = _optimizer_and_schedule(model, cfg, total_steps)

    def advance(loss: torch.Tensor, boundary: bool) -> None:
        (loss / accumulation).backward()
        if boundary:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()

    return model, advance


def _deepspeed_step(model, cfg: TrainConfig, accumulation: int, total_steps: int):
    import deepspeed

    optimizer, schedule = _optimizer_and_schedule(model, cfg, total_steps)
    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=schedule,
        config=deepspeed_config(cfg, accumulation, total_steps),
    )

    def advance(loss: torch.Tensor, boundary: bool) -> None:
        # DeepSpeed counts micro-steps itself and steps the optimizer on its own boundaries.
        engine.backward(loss)
        engine.step()

    return engine, advance


def _save_and_report(model, tokenizer, cfg: TrainConfig, rank: int, mean_loss: float, fit: Fitting) -> None:
    module = getattr(model, "module", model)
    state = _full_state_dict(module, cfg)
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            module.save_pretrained(directory, state_dict=state, safe_serialization=True)
            tokenizer.padding_side = "left"
            tokenizer.save_pretrained(directory)
            (Path(directory) / TRAINED_MARKER).write_text(
                json.dumps({"trained_on": "zero-shot prompts", "loss": mean_loss})
            )
            checkpoint = Checkpoint.from_directory(directory)
        ray.train.report({"loss": mean_loss, **fit._asdict()}, checkpoint=checkpoint)


def _full_state_dict(module, cfg: TrainConfig) -> dict:
    """Whole weights on every rank; ZeRO-3 partitions them, so gather first (all ranks must enter)."""
    if cfg.deepspeed and cfg.zero_stage == 3 and deepspeed_available():
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}
    return module.state_dict()
