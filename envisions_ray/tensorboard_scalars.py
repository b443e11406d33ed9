"""A run's metrics where users look: besides metrics.jsonl, each metrics line's scalars as TensorBoard
event files in RUN_DIR/tensorboard/, at step = its policy (the convention of Ray Train and vLLM);
`tensorboard --logdir RUN_DIR/tensorboard` shows them.

The writer is tensorboard's own `tensorboard.summary.Writer`, not torch's `SummaryWriter`: both need
only the `tensorboard` package (the dev extra), but torch's would load torch into the driver, which
does not otherwise import it (over a second and 200 MiB more). tensorboard marks its writer
experimental; tests/test_tensorboard_scalars.py reads the files back, so a change shows there.
Without tensorboard a run writes no event files and says so once.

Every line writes an event file of its own, and only the points the directory lacks: a driver killed
between writing a metrics line and marking its iteration finished writes the line again when
resumed, and a step written twice would show as two points.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

from envisions_ray.metrics_line import MetricsLine

TENSORBOARD_DIR = "tensorboard"  # in the run directory
# An iteration's facts drawn, by their tags: TensorBoard groups tags by the part before the slash.
FACT_TAGS = {
    "explore/explored": "explored",
    "explore/positives": "positives",
    "explore/ea": "ea",
    "explore/stb": "stb",
    "train/u1": "u1",
    "train/u2": "u2",
    "train/loss": "train_loss",
    "train/dpo_loss": "dpo_loss",
    "train/delta_logp": "delta_logp",
}
ALL_POINTS = 0  # EventAccumulator's size guidance that keeps every point, not a sample of them


def scalars(line: MetricsLine) -> dict[str, float]:
    """A metrics line's points by tag: its accuracy per eval set, what its iteration explored and
    trained, and each stage's wall time; a fact the line does not have (None) is no point."""
    facts = asdict(line.iteration) if line.iteration else {}
    return {
        **{f"eval/{name}": accuracy for name, accuracy in line.scores.eval.items()},
        **{tag: facts[name] for tag, name in FACT_TAGS.items() if facts.get(name) is not None},
        **{f"seconds/{stage}": seconds for stage, seconds in line.seconds.items()},
    }


def write_scalars(run_dir: Path, line: MetricsLine) -> None:
    """The line's points that RUN_DIR/tensorboard lacks, written at step = the line's policy;
    nothing without tensorboard installed."""
    try:
        from tensorboard.summary import Writer
    except ImportError:
        say_tensorboard_missing()
        return
    log_dir = run_dir / TENSORBOARD_DIR
    written = written_points(log_dir)
    points = {tag: value for tag, value in scalars(line).items() if (tag, line.policy) not in written}
    if not points:  # all written before a resume: no empty event file either
        return
    writer = Writer(str(log_dir))
    try:
        for tag, value in points.items():
            writer.add_scalar(tag, value, line.policy)
    finally:
        writer.close()


def written_points(log_dir: Path) -> set[tuple[str, int]]:
    """Every (tag, step) the directory's event files hold."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not log_dir.is_dir():
        return set()
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": ALL_POINTS})
    events.Reload()
    return {(tag, event.step) for tag in events.Tags()["tensors"] for event in events.Tensors(tag)}


@functools.cache  # once per driver
def say_tensorboard_missing() -> None:
    print(
        f"tensorboard is not installed: no event files in RUN_DIR/{TENSORBOARD_DIR}, metrics.jsonl has every "
        "figure (pip install tensorboard, or the dev extra, to have them)",
        flush=True,
    )
