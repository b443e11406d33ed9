"""`envisions report RUN_DIR...`: one table of each run's iterations, and an accuracy plot per run.

The full research report (baselines side by side, EA/STB scatter, log-prob margins) builds on this.
"""
from __future__ import annotations

import json
from pathlib import Path

from envisions_ray.errors import UserError

PLOT_NAME = "accuracy.png"


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl: is it a run directory?")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def report(run_dirs: list[Path]) -> str:
    """A Markdown table per run; writes RUN_DIR/accuracy.png beside each run's metrics."""
    sections = []
    for run_dir in run_dirs:
        lines = read_metrics(run_dir)
        names = sorted({name for line in lines for name in line["eval"]})
        # "ran": the share of eval solutions the environment could execute at all, right or wrong.
        header = ["policy", *names, *(f"{name} ran" for name in names), "explored", "pool", "U1", "U2", "loss"]
        rows = [
            [
                "base" if line["policy"] == 0 else f"iter {line['policy']}",
                *(f"{line['eval'].get(name, float('nan')):.1%}" for name in names),
                *(f"{line.get('executable', {}).get(name, float('nan')):.0%}" for name in names),
                *(str(line.get(key, "")) for key in ("explored", "pool_size", "u1", "u2")),
                "" if line.get("train_loss") is None else f"{line['train_loss']:.3f}",
            ]
            for line in lines
        ]
        table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in rows]
        _plot(run_dir, lines, names)
        sections.append(f"## {run_dir}\n\n" + "\n".join(table) + f"\n\nplot: {run_dir / PLOT_NAME}")
    return "\n\n".join(sections)


def _plot(run_dir: Path, lines: list[dict], names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(6, 4))
    for name in names:
        points = [(line["policy"], line["eval"][name]) for line in lines if name in line["eval"]]
        axes.plot([p for p, _ in points], [100 * a for _, a in points], marker="o", label=name)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("iteration (0 = base model)")
    axes.set_ylabel("eval accuracy (%)")
    axes.set_title(run_dir.name)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(run_dir / PLOT_NAME, dpi=120)
    plt.close(figure)
