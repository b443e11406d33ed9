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
from pathlib import Path

import ray
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

from envisions_ray.config import load_config
from envisions_ray.cluster import connect_ray


def train_for_a_while():
    time.sleep(4)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        connect_ray(load_config("conf/math_quickstart.yaml", []))
    else:  # the same local Ray, without the setup hook
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    # The State API finds its cluster by RAY_ADDRESS, else by looking for Ray on this machine; with
    # another Ray there (the suite's own), it would fail some other way than the one this is about.
    own_cluster = {"env_vars": {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}}

    @ray.remote(num_cpus=0, runtime_env=own_cluster)
    def fit():
        TorchTrainer(train_for_a_while, scaling_config=ScalingConfig(num_workers=1)).fit()

    ray.get(fit.remote())
    # Counted in the workers' own log files: Ray forwards them to this output late or not at all
    # when the driver exits right after a job.
    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    print("warnings:", sum(path.read_text(errors="replace").count(sys.argv[2]) for path in logs.glob("worker-*")))
"""


def warnings_in(how: str, tmp_path: Path) -> int:
    script = tmp_path / "train_for_a_while.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), how, WARNING], cwd=REPO, capture_output=True, text=True, timeout=240, check=True
    )
    return int(done.stdout.split("warnings:")[-1])


def test_a_local_runs_training_jobs_do_not_warn_about_the_missing_state_api(tmp_path):
    assert warnings_in("bare", tmp_path) > 0  # what Ray's workers log without the hook
    assert warnings_in("run", tmp_path) == 0
