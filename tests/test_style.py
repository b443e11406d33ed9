"""The house rules, enforced by the test command: ruff's lint and format at 120 columns
(ruff.toml) and the layer contracts (.importlinter)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    """The console script installed beside this interpreter (the dev extra brings it)."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name) or name


@pytest.mark.parametrize("command", [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["lint-imports"]])
def test_the_tree_keeps_the_house_rules(command):
    done = subprocess.run([tool(command[0]), *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
