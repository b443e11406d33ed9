"""A run started on this machine sets up every Ray worker (envisions_ray/ray_workers.py): Ray Train's
placement-group cleaner, which cannot reach the State API of a Ray without the dashboard, no longer
warns once a second through every training job. Each case is a fresh Ray in its own process."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WARNING = "Failed to query Ray Train Controller actor state"

# A training job of a few seconds: the cleaner asks once a second while it runs.
SCRIPT = """
import sys, time

import ray
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

from envisions_ray.config import load_config
from envisions_ray.driver import connect_ray


def train_for_a_while():
    time.sleep(4)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        connect_ray(load_config("conf/math_quickstart.yaml", []))
    else:  # the same local Ray, without the setup hook
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    TorchTrainer(train_for_a_while, scaling_config=ScalingConfig(num_workers=1)).fit()
"""


def output_of(how: str, tmp_path: Path) -> str:
    script = tmp_path / "train_for_a_while.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), how], cwd=REPO, capture_output=True, text=True, timeout=240, check=True
    )
    return done.stdout + done.stderr


def test_a_local_runs_training_jobs_do_not_warn_about_the_missing_state_api(tmp_path):
    assert WARNING in output_of("bare", tmp_path)  # what Ray prints without the hook
    assert WARNING not in output_of("run", tmp_path)
