"""The wheel installs our folders under our own name, next to PyPI's `envs` and `actors`.

`actors/` and `envs/` stay at the top of the repository, but a top-level `envs` package would
shadow PyPI's `envs` (environment-variable access), or be shadowed by it, in any user's venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPI_ENVS = "envs==1.4"


def build_wheel(out: Path) -> Path:
    """Build from a copy of what git would commit: setuptools' build/ keeps files deleted since."""
    source = out / "source"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        if (REPO / name).exists():  # a deleted file stays listed until the deletion is committed
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, source / name, follow_symlinks=False)
    # No build isolation: setuptools and wheel are already installed, and the test stays quick.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        check=True,
    )
    return next(out.glob("envisions_ray-*.whl"))


def test_the_wheel_has_one_top_level_package(tmp_path):
    names = zipfile.ZipFile(build_wheel(tmp_path)).namelist()
    packages = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert packages == {"envisions_ray"}
    assert "envisions_ray/actors/pool.py" in names
    assert "envisions_ray/envs/sandbox_server.py" in names  # run by path inside the math sandbox


def test_the_installed_wheel_and_pypi_envs_import_side_by_side(tmp_path):
    wheel = build_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # omegaconf is what importing our `envs` package needs; the rest of our dependencies are not.
    # Without PYTHONPATH: a checkout on it would be seen as installed packages by pip too.
    clean = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        env=clean,
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", PYPI_ENVS, "omegaconf"],
        check=True,
        env=clean,
    )
    probe = (
        "import envs, envisions_ray.envs, envisions_ray.actors\n"
        "print(envs.__file__); print(envisions_ray.envs.__file__); print(envisions_ray.actors.__file__)\n"
        "print(hasattr(envs, 'Env'), sorted(envisions_ray.envs.ENVIRONMENTS))\n"
    )
    # Isolated (-I: no PYTHONPATH, no cwd on the path) and outside the repository, whose top-level
    # envs/ would shadow PyPI's: only the venv can supply these packages.
    printed = subprocess.run(
        [str(python), "-I", "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    site_packages = str(venv / "lib")
    pypi_envs, our_envs, our_actors, contents = printed
    assert pypi_envs.startswith(site_packages) and pypi_envs.endswith("/envs/__init__.py")
    assert our_envs.startswith(site_packages) and our_envs.endswith("/envisions_ray/envs/__init__.py")
    assert our_actors.startswith(site_packages)
    assert contents == "True ['logic', 'math', 'web']"
