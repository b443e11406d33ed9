"""benchmarks/bench_train.py on the tiny random Llama: the baseline and a two-rank DDP variant, each in
processes of its own, on the same batches, print one table whose float32 rows follow one loss curve."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# float32 DDP sums its two ranks' gradients in another order than one worker does: the losses
# agree to float32 rounding, far inside this.
LOSS_TOLERANCE = 1e-4


def table_rows(stdout: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell."""
    rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [cell.strip() for cell in cells] for cells in rows}


def test_baseline_and_ddp_run_apart_and_agree(tiny_model):
    command = [sys.executable, "benchmarks/bench_train.py", "--model", tiny_model, "--steps", "2"]
    command += ["--variants", "ddp-2x1-float32", "--no-shuffled-run"]  # two variants' processes: about a minute
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = table_rows(done.stdout)
    baseline, ddp = rows["torch-1x2-float32"], rows["ddp-2x1-float32"]
    assert baseline[1:3] == ["1 × 2", "float32"] and ddp[1:3] == ["2 × 1", "float32"]
    assert baseline[4] == "1.00" and float(baseline[5]) == 0
    assert float(ddp[3]) > 0 and float(ddp[5]) < LOSS_TOLERANCE
    assert float(baseline[6]) > 0 and float(ddp[6]) > 0  # peak RSS sampled
    grouped = next(cells for name, cells in rows.items() if name.startswith("length-grouped"))
    shuffled = rows["shuffled (length_group 1)"]
    assert float(grouped[1].rstrip("%")) < float(shuffled[1].rstrip("%"))
    assert float(grouped[2]) == float(baseline[3]) and shuffled[2] == "not run"
