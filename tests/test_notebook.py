"""notebooks/quickstart.ipynb, executed headless against a local `ray start` head.

The kernel is "python3", which jupyter_client starts with this interpreter (sys.executable), in
notebooks/ as Jupyter would. Its environment points the notebook's parameters at a tiny run.
"""

import json

import nbformat
import pytest
from nbclient import NotebookClient
from ray_head import REPO, write_tiny_config

NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"


def outputs(nb, output_type=None):
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output_type is None or output["output_type"] == output_type:
                yield output


@pytest.mark.timeout(600)
def test_quickstart_notebook_runs_a_job_and_plots_it(ray_head, tiny_solver, twelves, twelves_dev, tmp_path):
    run_dir = tmp_path / "run"
    config = write_tiny_config(tmp_path / "tiny.yaml", tiny_solver, twelves, twelves_dev, run_dir)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = ray_head.env(
        RAY_ADDRESS=ray_head.gcs_address,
        ENVISIONS_CONFIG=str(config),
        ENVISIONS_RUN_DIR=str(run_dir),
        ENVISIONS_POLL_S="2",
    )

    client = NotebookClient(
        nb, kernel_name="python3", timeout=480, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    try:
        client.execute(env=env)  # raises CellExecutionError, with the cell's traceback, if a cell fails
    finally:
        nbformat.write(nb, tmp_path / "quickstart.executed.ipynb")  # what ran, outputs and all

    text = "".join(o.get("text", "") for o in outputs(nb, "stream"))
    assert "job SUCCEEDED" in text, text[-5000:]
    # The loop polled while the job ran, and read the pool as it filled.
    progress = [line for line in text.splitlines() if " RUNNING: pool [" in line]
    assert progress, text[-5000:]
    assert any("explore" in line for line in progress), "\n".join(progress)

    images = [o for o in outputs(nb) if "image/png" in o.get("data", {})]
    assert len(images) == 1

    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["policy"] for line in metrics] == [0, 1]
