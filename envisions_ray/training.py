"""An iteration's training: SFT (L1 + L2 for ENVISIONS), then DPO on the pairs from the SFT model,
each a Ray Train job (actors/train_job.py) whose `Trained` the iteration's one `Trained` sums up."""

from __future__ import annotations

from dataclasses import replace

from envisions_ray.methods import Examples
from envisions_ray.run_state import Run
from envisions_ray.trained import Trained


def train(*args, **kwargs) -> Trained:
    """`actors.train_job.train`, imported on first use: it loads torch and Ray Train (about 4 s on 2
    cores), which a command refused for bad input, or an eval, never needs."""
    from envisions_ray.actors.train_job import train as train_on_ray

    return train_on_ray(*args, **kwargs)


def train_policy(run: Run, i: int, examples: Examples) -> Trained:
    """SFT, then DPO from the SFT model, which is also DPO's reference. A job whose every example is
    too long for train.max_length trains nothing; when no job trained, the policy stays, as when
    there is nothing to train."""
    cfg, storage = run.cfg, str(run.run_dir / "checkpoints")
    init = run.base_model if cfg.algorithm.train_from == "base" else run.generators.policy
    sft = dpo = None
    if examples.sft:
        sft = train(cfg.train, init, examples.sft, storage, f"iter-{i}")
    if examples.pairs:
        dpo_cfg = replace(cfg.train, lr=cfg.dpo.lr, warmup_ratio=cfg.dpo.warmup_ratio, epochs=cfg.dpo.epochs)
        start = sft.checkpoint if sft is not None and sft.checkpoint is not None else init
        dpo = train(dpo_cfg, start, examples.pairs, storage, f"iter-{i}-dpo", cfg.dpo.beta)
    jobs = [job for job in (sft, dpo) if job is not None]
    checkpoints = [job.checkpoint for job in jobs if job.checkpoint is not None]
    if not checkpoints:
        print(
            f"[iter {i + 1}] nothing trained: every example's target alone is longer than "
            f"train.max_length={cfg.train.max_length} tokens; the policy stays",
            flush=True,
        )
    return Trained(
        checkpoints[-1] if checkpoints else run.generators.policy,
        loss=_loss(sft),
        restarts=sum(job.restarts for job in jobs),
        dropped_too_long=sum(job.dropped_too_long for job in jobs),
        prompt_cut=sum(job.prompt_cut for job in jobs),
        dpo_loss=_loss(dpo),
    )


def _loss(job: Trained | None) -> float | None:
    """A job's loss, if it ran and trained."""
    return job.loss if job is not None and job.checkpoint is not None else None
