"""What training gives back, one type from a Ray Train job (actors/train_job.py) to an iteration's
record: the iteration's SFT and DPO jobs make one (envisions_ray/training.py), which the candidate
pool keeps as the train stage's detail for a resumed run, and its metrics line reports
(envisions_ray/records.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Trained:
    """One training's result. A detail from before a field was kept reads as the field's default."""

    checkpoint: str | None  # directory, or URI with a remote storage_path; None: nothing trained
    loss: float | None = None  # mean training loss (an iteration's: its SFT job's); None: nothing trained
    restarts: int = 0  # of the worker group, after a worker died (FailureConfig)
    dropped_too_long: int = 0  # examples whose target alone is over train.max_length (losses.Fitting)
    prompt_cut: int = 0  # examples trained after a prompt cut to fit train.max_length
    dpo_loss: float | None = None  # an iteration's DPO job's mean loss; None: no DPO trained
