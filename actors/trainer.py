"""The trainer: L1 + L2 fine-tuning under Ray Train's TorchTrainer.

Every worker loads the initial model fresh (the base model, or the last checkpoint when training
continually), trains on its shard of the (prompt, target) examples with AdamW and a warmed-up
schedule, and rank 0 writes a safetensors Hugging Face checkpoint that the generators load.
DeepSpeed ZeRO runs the step when it is importable (on CPU over gloo); otherwise plain DDP.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict
from pathlib import Path

import ray.train
import torch
from ray.train import Checkpoint, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from envisions_ray.config import TrainConfig
from envisions_ray.losses import TrainExample, collate, target_token_loss, tokenize
from envisions_ray.model import TRAINED_MARKER, load_model_and_tokenizer


def deepspeed_available() -> bool:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return False
    return True


def train(cfg: TrainConfig, init_model: str, examples: list[TrainExample], storage_dir: str, name: str) -> tuple[str, float]:
    """Run one training job; returns (checkpoint directory, mean training loss)."""
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": asdict(cfg), "init_model": init_model, "examples": [asdict(e) for e in examples]},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(storage_path=str(Path(storage_dir).resolve()), name=name),
    )
    result = trainer.fit()
    return result.checkpoint.path, result.metrics["loss"]


def train_loop_per_worker(config: dict) -> None:
    cfg = TrainConfig(**config["cfg"])
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_model_and_tokenizer(config["init_model"])
    tokenizer.padding_side = "right"
    rows = [tokenize(tokenizer, TrainExample(**e), cfg.max_length) for e in config["examples"]]
    # The sampler pads shards to equal length, so every rank takes the same number of steps.
    sampler = DistributedSampler(rows, num_replicas=world_size, rank=rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(rows, batch_size=cfg.micro_batch_size, sampler=sampler, collate_fn=lambda b: collate(b, tokenizer.pad_token_id))
    accumulation = max(1, cfg.global_batch_size // (cfg.micro_batch_size * world_size))
    total_steps = cfg.epochs * math.ceil(len(loader) / accumulation)
    step = _deepspeed_step if cfg.deepspeed and deepspeed_available() else _ddp_step
    model, advance = step(model, cfg, accumulation, total_steps)

    losses = []
    progress = tqdm(total=cfg.epochs * len(loader), desc="train", disable=rank != 0, unit="batch")
    for epoch in range(cfg.epochs):
        sampler.set_epoch(epoch)
        for index, batch in enumerate(loader):
            device = next(model.parameters()).device
            logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
            loss = target_token_loss(logits, batch["labels"].to(device))
            boundary = (index + 1) % accumulation == 0 or index + 1 == len(loader)
            advance(loss, boundary)
            losses.append(loss.item())
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
    progress.close()
    _save_and_report(model, tokenizer, cfg, rank, sum(losses) / max(1, len(losses)))


def _optimizer_and_schedule(model, cfg: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    return optimizer, get_scheduler(cfg.lr_schedule, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


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
        config={
            "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
            "gradient_accumulation_steps": accumulation,
            "gradient_clipping": cfg.max_grad_norm,
            "zero_optimization": {"stage": cfg.zero_stage},
            "bf16": {"enabled": cfg.use_gpu},
            "steps_per_print": total_steps + 1,  # our own progress bar reports the loss
        },
    )

    def advance(loss: torch.Tensor, boundary: bool) -> None:
        # DeepSpeed counts micro-steps itself and steps the optimizer on its own boundaries.
        engine.backward(loss)
        engine.step()

    return engine, advance


def _save_and_report(model, tokenizer, cfg: TrainConfig, rank: int, mean_loss: float) -> None:
    module = getattr(model, "module", model)
    state = _full_state_dict(module, cfg)
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:
            module.save_pretrained(directory, state_dict=state, safe_serialization=True)
            tokenizer.padding_side = "left"
            tokenizer.save_pretrained(directory)
            (Path(directory) / TRAINED_MARKER).write_text(json.dumps({"trained_on": "zero-shot prompts", "loss": mean_loss}))
            checkpoint = Checkpoint.from_directory(directory)
        ray.train.report({"loss": mean_loss}, checkpoint=checkpoint)


def _full_state_dict(module, cfg: TrainConfig) -> dict:
    """Whole weights on every rank; ZeRO-3 partitions them, so gather first (all ranks must enter)."""
    if cfg.deepspeed and cfg.zero_stage == 3 and deepspeed_available():
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}
    return module.state_dict()
