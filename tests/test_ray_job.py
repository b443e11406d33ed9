"""The cluster path, locally: `ray job submit -- envisions run ...` against a `ray start` head.

The head is a real one (tests/ray_head.py): 2 CPUs, the dashboard's job server, token auth. The
job's driver finds the cluster through the RAY_ADDRESS the job supervisor sets, which is what
`driver.connect_ray` joins; the repository is shipped as the job's working_dir.
"""

import json
import subprocess
import uuid

import pytest
from ray.job_submission import JobStatus
from ray_head import REPO, ray_cli, stop_head, write_tiny_config

from envisions_ray.model import TRAINED_MARKER

JOB_TIMEOUT_S = 420


@pytest.mark.timeout(JOB_TIMEOUT_S + 120)
def test_a_tiny_run_submitted_as_a_ray_job(ray_head, tiny_solver, twelves, twelves_dev, tmp_path):
    run_dir = tmp_path / "run"  # absolute: the job's cwd is its unpacked working_dir
    config = write_tiny_config(tmp_path / "tiny.yaml", tiny_solver, twelves, twelves_dev, run_dir)
    job_id = f"envisions-test-{uuid.uuid4().hex[:8]}"

    submit = [
        *ray_cli(),
        "job",
        "submit",
        "--address",
        ray_head.dashboard_url,
        "--submission-id",
        job_id,
        "--working-dir",
        str(REPO),  # .gitignore'd paths (runs/) are not uploaded
        "--",
        "envisions",
        "run",
        str(config),
    ]
    client = ray_head.client()
    try:  # `submit` streams the job's output until it ends; it exits 1 if the job failed
        done = subprocess.run(submit, env=ray_head.env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        logs = client.get_job_logs(job_id)
        client.stop_job(job_id)
        pytest.fail(f"job {job_id} still running after {JOB_TIMEOUT_S} s; its logs:\n{logs[-8000:]}")
    status = client.get_job_status(job_id)
    if done.returncode != 0 or status != JobStatus.SUCCEEDED:
        pytest.fail(
            f"ray job submit exited {done.returncode}, job {status}: {client.get_job_info(job_id).message}\n"
            f"--- job logs ---\n{client.get_job_logs(job_id)[-8000:]}\n--- submit stderr ---\n{done.stderr[-3000:]}\n"
            f"--- head ---\n{ray_head.output()[-2000:]}"
        )
    assert f"done: {run_dir}" in done.stdout  # the driver's last line, streamed back by `submit`

    # The run directory, written by the job on the head.
    assert (run_dir / "config.yaml").is_file()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["policy"] for line in metrics] == [0, 1]  # the base model's eval, then iteration 1
    assert metrics[1]["iteration"] == 1 and metrics[1]["inputs"] == 6 and set(metrics[1]["eval"]) == {"arith"}
    assert (run_dir / "pool.sqlite").is_file()
    checkpoints = [p.parent for p in (run_dir / "checkpoints").rglob(TRAINED_MARKER)]
    assert checkpoints and all((p / "model.safetensors").is_file() for p in checkpoints)

    # Stopping the head leaves none of its processes behind (raylet, GCS, dashboard, workers).
    leftover = stop_head(ray_head)
    assert leftover == []
    assert not ray_head.processes()
