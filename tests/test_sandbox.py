"""Containment tests for the math sandbox: each hostile program fails in a specific way, and the
same sandbox still scores a correct program afterwards."""

import ast
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from envisions_ray.envs.math_sandbox import REPLY_MARGIN_S, MathSandbox, SandboxSettings
from envisions_ray.errors import UserError
from envisions_ray.leftovers import processes_under
from envisions_ray.types import Example

TIMEOUT_S = 1.0
SLACK_S = 1.0  # how far past the timeout a hostile program may hold the caller
TWELVE = Example(id="t", question="What is 3 * 4?", answer="12")
CORRECT = "def solution():\n    return 3 * 4\n"

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


@pytest.fixture(scope="module")
def sandbox():
    if shutil.which("bwrap") is None:
        pytest.skip("needs bubblewrap")
    # One sandbox for the whole module, as in a run: every hostile program must leave it usable.
    env = MathSandbox(SandboxSettings(timeout_s=TIMEOUT_S))
    yield env
    env.close()


def assert_still_works(env: MathSandbox) -> None:
    assert env.execute(CORRECT, TWELVE).reward == 1


def timed(env: MathSandbox, program: str):
    start = time.monotonic()
    outcome = env.execute(program, TWELVE)
    return outcome, time.monotonic() - start


def test_describe_is_the_question(sandbox):
    assert sandbox.describe(TWELVE) == "What is 3 * 4?"


@pytest.mark.parametrize(
    "program, answer, reward",
    [
        (CORRECT, "12", 1),
        (CORRECT, " 12 ", 1),
        (CORRECT, "12.00001", 1),  # within 1e-4
        (CORRECT, "12.001", 0),
        (CORRECT, "13", 0),
        ("def solution():\n    return 0.1 + 0.2\n", "0.3", 1),
        ("def solution():\n    return 'x = 2'\n", "x = 2", 1),
        ("def solution():\n    return 'x = 2'\n", "x = 3", 0),
    ],
)
def test_scores_answers(sandbox, program, answer, reward):
    outcome = sandbox.execute(program, Example(id="a", question="", answer=answer))
    assert outcome.reward == reward
    assert outcome.error == ""


@pytest.mark.parametrize(
    "program, error",
    [
        ("def solution():\n    return open('/etc/passwd').read()\n", "FileNotFoundError"),
        ("def solution():\n    return len(bytearray(10 * 1024**3))\n", "MemoryError"),
        ("import sys\ndef solution():\n    sys.exit(0)\n", "SystemExit"),
        ("import os\ndef solution():\n    os.kill(os.getpid(), 9)\n", "killed by signal 9"),
        ("answer = 12\n", "program did not define solution()"),
        ("def solution(:\n    return 12\n", "SyntaxError"),
        ("def solution():\n    raise ValueError('bad')\n", "ValueError: bad"),
    ],
)
def test_bad_programs_fail_with_their_reason(sandbox, program, error):
    outcome = sandbox.execute(program, TWELVE)
    assert outcome.reward == 0
    assert error in outcome.error
    assert_still_works(sandbox)


def test_sees_only_system_dirs_as_nobody(sandbox):
    program = "import os\ndef solution():\n    return sorted(os.listdir('/')), os.getuid()\n"
    outcome = sandbox.execute(program, TWELVE)
    visible, uid = ast.literal_eval(outcome.output)
    assert not {"etc", "root", "home", "work", "var"} & set(visible)
    if os.geteuid() == 0:
        assert uid == SandboxSettings().unprivileged_uid


def test_cannot_create_user_namespaces(sandbox):
    clone_newuser = 0x10000000
    program = f"import ctypes\ndef solution():\n    return ctypes.CDLL(None).unshare({clone_newuser})\n"
    assert sandbox.execute(program, TWELVE).output == "-1"
    assert_still_works(sandbox)


def test_cannot_reach_host_port(sandbox):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        program = (
            "import socket\ndef solution():\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=0.5).sendall(b'hi')\n"
            "    return 12\n"
        )
        outcome = sandbox.execute(program, TWELVE)
        assert outcome.reward == 0
        assert "Error" in outcome.error
        with pytest.raises(BlockingIOError):  # nothing ever connected
            listener.accept()
    assert_still_works(sandbox)


def test_cannot_delete_host_directory(sandbox):
    victim = tempfile.mkdtemp(dir="/var/tmp")
    try:
        os.chmod(victim, 0o777)  # permissions would allow it: only the sandbox stands in the way
        open(os.path.join(victim, "keep.txt"), "w").close()
        program = f"import shutil\ndef solution():\n    shutil.rmtree({victim!r})\n    return 12\n"
        outcome = sandbox.execute(program, TWELVE)
        assert outcome.reward == 0
        assert "FileNotFoundError" in outcome.error  # the host directory is not even visible
        assert os.path.exists(os.path.join(victim, "keep.txt"))
    finally:
        shutil.rmtree(victim)
    assert_still_works(sandbox)


def test_fork_bomb_is_contained_and_cleaned_up(sandbox):
    bomb = (
        "import os\ndef solution():\n    while True:\n        try:\n            os.fork()\n"
        "        except OSError:\n            pass\n"
    )
    outcome, elapsed = timed(sandbox, bomb)
    assert outcome.reward == 0
    assert outcome.error == f"timeout after {TIMEOUT_S}s"
    assert elapsed < TIMEOUT_S + SLACK_S
    # The PID namespace holds only bwrap (1), the server and the program listing it.
    census = "import os\ndef solution():\n    return sum(p.isdigit() for p in os.listdir('/proc'))\n"
    assert sandbox.execute(census, Example(id="c", question="", answer="3")).reward == 1
    assert_still_works(sandbox)


def test_background_process_is_killed(sandbox):
    daemon = (
        "import os, time\ndef solution():\n    if os.fork() == 0:\n        os.setsid()\n"
        "        time.sleep(60)\n    return 12\n"
    )
    assert sandbox.execute(daemon, TWELVE).reward == 1
    census = "import os\ndef solution():\n    return sum(p.isdigit() for p in os.listdir('/proc'))\n"
    assert sandbox.execute(census, Example(id="c", question="", answer="3")).reward == 1


def test_infinite_loop_times_out(sandbox):
    outcome, elapsed = timed(sandbox, "def solution():\n    while True:\n        pass\n")
    assert outcome.reward == 0
    assert outcome.error == f"timeout after {TIMEOUT_S}s"
    assert elapsed < TIMEOUT_S + SLACK_S
    assert_still_works(sandbox)


def test_huge_stdout_is_harmless(sandbox):
    program = "def solution():\n    for _ in range(100):\n        print('x' * 1_000_000)\n    return 12\n"
    outcome, elapsed = timed(sandbox, program)
    assert outcome.reward == 1 and outcome.output == "12"
    assert elapsed < TIMEOUT_S
    assert_still_works(sandbox)


def test_long_output_is_truncated(sandbox):
    outcome = sandbox.execute("def solution():\n    return 'x' * 10**6\n", TWELVE)
    assert outcome.reward == 0
    assert 0 < len(outcome.output) <= 1000


def test_killing_the_server_costs_one_program(sandbox):
    outcome = sandbox.execute("import os\ndef solution():\n    os.kill(os.getppid(), 9)\n", TWELVE)
    assert outcome.reward == 0
    assert outcome.error.startswith("sandbox server died")
    assert_still_works(sandbox)


def test_wedged_server_is_replaced(sandbox):
    # A stopped server never answers: the caller's own deadline must fire and replace it.
    program = "import os, signal\ndef solution():\n    os.kill(os.getppid(), signal.SIGSTOP)\n"
    outcome, elapsed = timed(sandbox, program)
    assert outcome.reward == 0
    assert "did not reply" in outcome.error
    assert elapsed < TIMEOUT_S + REPLY_MARGIN_S + SLACK_S
    assert_still_works(sandbox)


def test_tmp_is_emptied_after_every_program_and_capped(sandbox):
    # bwrap's tmpfs is host shared memory: what a program leaves must not outlive it.
    litter = (
        "import os\ndef solution():\n    os.makedirs('/tmp/d/e')\n    open('/tmp/d/e/f', 'w').write('x')\n"
        "    os.chmod('/tmp/d', 0)\n    open('/tmp/g', 'w').write('y' * 1000)\n    return 12\n"
    )
    assert sandbox.execute(litter, TWELVE).reward == 1
    listing = "import os\ndef solution():\n    return os.listdir('/tmp')\n"
    assert sandbox.execute(listing, TWELVE).output == "[]"
    # max_file_mb caps each file, tmp_mb all of them: 1 MB files until the tmpfs is full.
    fill = (
        "def solution():\n    written = 0\n    try:\n        for i in range(1000):\n"
        "            with open(f'/tmp/{i}', 'wb') as f:\n                f.write(b'x' * (1024 * 1024 - 1))\n"
        "            written += 1\n    except OSError as err:\n        return f'{written} {err.errno}'\n"
    )
    written, errno = sandbox.execute(fill, TWELVE).output.split()
    assert int(written) <= SandboxSettings().tmp_mb and errno == "28"  # ENOSPC
    assert_still_works(sandbox)


def test_tmp_is_the_only_writable_place(sandbox):
    probe = (
        "def solution():\n    refused = []\n    for d in ('/', '/dev', '/dev/shm', '/usr'):\n        try:\n"
        "            open(d.rstrip('/') + '/probe', 'w')\n        except OSError:\n"
        "            refused.append(d)\n    return refused\n"
    )
    assert sandbox.execute(probe, TWELVE).output == "['/', '/dev', '/dev/shm', '/usr']"


@needs_bwrap
def test_memory_is_bounded_per_program_not_per_process():
    # Seven processes of 40 MB each would take 280 MB; the program has 256 MB in all.
    settings = SandboxSettings(timeout_s=5.0, memory_mb=256)
    program = (
        "import os, time\ndef solution():\n    held = 0\n    for _ in range(6):\n        r, w = os.pipe()\n"
        "        try:\n            pid = os.fork()\n        except OSError:\n            break\n"
        "        if pid == 0:\n            try:\n                block = bytearray(40 * 1024 * 1024)\n"
        "                os.write(w, b'1')\n            except MemoryError:\n                os.write(w, b'0')\n"
        "            time.sleep(60)\n        held += 40 * int(os.read(r, 1))\n    try:\n"
        "        block = bytearray(40 * 1024 * 1024)\n        held += 40\n    except MemoryError:\n"
        "        pass\n    return held\n"
    )
    env = MathSandbox(settings)
    try:
        held = env.execute(program, TWELVE)
        assert held.error == "" and 0 < int(held.output) <= settings.memory_mb
        assert_still_works(env)
    finally:
        env.close()


@needs_bwrap
def test_a_killed_executors_sandbox_directory_is_swept():
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from envisions_ray.envs.math_sandbox import MathSandbox, SandboxSettings\n"
            "env = MathSandbox(SandboxSettings())\nprint(env._workdir, flush=True)\nimport time; time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    workdir = Path(owner.stdout.readline().strip())
    owner.kill()  # SIGKILL: close() never runs
    owner.wait()
    assert workdir.is_dir()
    env = MathSandbox(SandboxSettings(timeout_s=TIMEOUT_S))
    try:
        assert not workdir.exists() and not processes_under(str(workdir))
        assert_still_works(env)
    finally:
        env.close()
    assert not env._workdir.exists()


@needs_bwrap
def test_close_is_idempotent():
    env = MathSandbox(SandboxSettings(timeout_s=TIMEOUT_S))
    assert_still_works(env)
    env.close()
    env.close()


def test_refuses_to_start_without_bwrap(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(UserError, match="allow_rlimit_only"):
        MathSandbox(SandboxSettings())


def test_rlimit_only_mode_when_allowed(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    env = MathSandbox(SandboxSettings(timeout_s=TIMEOUT_S, allow_rlimit_only=True))
    try:
        assert_still_works(env)
        if os.geteuid() == 0:
            uid = env.execute("import os\ndef solution():\n    return os.getuid()\n", TWELVE)
            assert uid.output == str(SandboxSettings().unprivileged_uid)
        outcome, elapsed = timed(env, "def solution():\n    while True:\n        pass\n")
        assert outcome.error == f"timeout after {TIMEOUT_S}s"
        assert elapsed < TIMEOUT_S + SLACK_S
        memory = env.execute("def solution():\n    return len(bytearray(10 * 1024**3))\n", TWELVE)
        assert "MemoryError" in memory.error
        assert_still_works(env)
    finally:
        env.close()
