"""Math environment: runs program-of-thought solutions in a sandbox and checks their answers.

A solution is Python source defining `solution()`; its return value, as a string, is the answer.
Programs run in one long-lived fork server (envs/sandbox_server.py) inside bubblewrap: no network,
no /etc, /home, /root or /work, a private /tmp and PID namespace, all capabilities dropped, and an
unprivileged uid when the host runs as root. The server forks once per program, which costs a
fraction of starting an interpreter. A server that dies or stops answering is replaced, so one
hostile program costs its own reward and nothing else.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from envisions_ray.config import SandboxConfig
from envisions_ray.errors import UserError
from envisions_ray.types import Example, Outcome

SERVER_SCRIPT = Path(__file__).with_name("sandbox_server.py")
SERVER_IN_SANDBOX = "/sandbox_server.py"
SANDBOX_PATH = "/usr/bin:/bin"
# What the interpreter needs, read-only; /etc, /home, /root and /work stay out of sight.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin", "/sbin")
READY = {"ready": True}
STARTUP_TIMEOUT_S = 10.0
REPLY_MARGIN_S = 5.0  # beyond the program's timeout: the fork, the cleanup sweep, a busy machine
MAX_REPLY_BYTES = 64 * 1024
SNIPPET_CHARS = 200  # of a bad reply, quoted in the error
ANSWER_TOLERANCE = 1e-4
MISSING_BWRAP = (
    "bubblewrap (bwrap) is not installed; install it (apt-get install bubblewrap) "
    "or set env.sandbox.allow_rlimit_only=true for the weaker rlimit-only mode"
)


class ServerLost(Exception):
    """The server died, stopped answering or broke the protocol; the message says which."""


def is_correct(output: str, answer: str) -> bool:
    if output.strip() == answer.strip():
        return True
    try:
        return abs(float(output) - float(answer)) <= ANSWER_TOLERANCE
    except ValueError:  # not numbers: only the exact string comparison counts
        return False


def bwrap_command(bwrap: str, python: str, script: Path) -> list[str]:
    system = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):  # merged-/usr systems: /lib -> usr/lib and friends
            system += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            system += ["--ro-bind", path, path]
    return [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
        # No nested user namespaces: they would hand the program capabilities and kernel surface.
        "--unshare-user", "--disable-userns",
        *system,
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
        "--ro-bind", str(script), SERVER_IN_SANDBOX,
        "--clearenv", "--setenv", "PATH", SANDBOX_PATH, "--chdir", "/tmp",
        python, "-I", "-S", SERVER_IN_SANDBOX,
    ]  # fmt: skip


class MathSandbox:
    def __init__(self, cfg: SandboxConfig) -> None:
        bwrap = shutil.which("bwrap")
        if bwrap is None and not cfg.allow_rlimit_only:
            raise UserError(MISSING_BWRAP)
        self.cfg = cfg
        self._server: subprocess.Popen | None = None
        # The dropped uid may not be able to read this checkout, so the server runs from a copy.
        self._workdir = tempfile.TemporaryDirectory(prefix="math-sandbox-")
        os.chmod(self._workdir.name, 0o755)
        script = Path(self._workdir.name) / SERVER_SCRIPT.name
        shutil.copyfile(SERVER_SCRIPT, script)
        os.chmod(script, 0o644)
        if bwrap is None:  # rlimit-only: same server, no namespaces
            self._command = [cfg.python, "-I", "-S", str(script)]
        else:
            self._command = bwrap_command(bwrap, cfg.python, script)
        self._stderr = tempfile.TemporaryFile()  # the server's last words, for error messages
        self._start()

    # ------------------------------------------------------------------------- Environment

    def describe(self, example: Example) -> str:
        return example.question

    def execute(self, solution: str, example: Example) -> Outcome:
        if self._server is not None and self._server.poll() is not None:
            self._stop()  # died between programs: not this program's fault
        if self._server is None:
            self._start()
        request = {
            "program": solution,
            "timeout_s": self.cfg.timeout_s,
            "memory_mb": self.cfg.memory_mb,
            "max_processes": self.cfg.max_processes,
            "max_file_mb": self.cfg.max_file_mb,
            "max_open_files": self.cfg.max_open_files,
        }
        try:
            self._send(request)
            reply = self._receive(self.cfg.timeout_s + REPLY_MARGIN_S)
            ok, output, error = reply.get("ok"), reply.get("output"), reply.get("error")
            if not (isinstance(ok, bool) and isinstance(output, str) and isinstance(error, str)):
                raise ServerLost(f"sandbox server sent a malformed reply: {reply!r:.{SNIPPET_CHARS}}")
        except ServerLost as err:
            self._stop()  # the next call starts a fresh server
            return Outcome(reward=0, error=str(err))
        reward = int(ok and is_correct(output, example.answer))
        return Outcome(reward=reward, output=output, error=error)

    def close(self) -> None:
        self._stop()
        self._workdir.cleanup()
        self._stderr.close()

    def __del__(self) -> None:
        if hasattr(self, "_stderr"):  # __init__ may have refused before acquiring anything
            self.close()

    # ------------------------------------------------------------------------- the server

    def _start(self) -> None:
        self._stderr.seek(0)
        self._stderr.truncate()
        # As root, bwrap itself runs unprivileged and gets its powers from a user namespace.
        drop = {}
        if os.geteuid() == 0:
            drop = {"user": self.cfg.unprivileged_uid, "group": self.cfg.unprivileged_gid,
                    "extra_groups": []}
        try:
            self._server = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                cwd=self._workdir.name, env={"PATH": SANDBOX_PATH}, **drop,
            )  # fmt: skip
            ready = self._receive(STARTUP_TIMEOUT_S)
        except (OSError, ServerLost) as err:
            self._stop()
            raise UserError(f"the math sandbox failed to start: {err}") from None
        if ready != READY:
            self._stop()
            raise UserError(f"the math sandbox failed to start: bad handshake {ready!r:.{SNIPPET_CHARS}}")

    def _stop(self) -> None:
        if self._server is not None:
            self._server.kill()  # bwrap's --die-with-parent takes the whole sandbox with it
            self._server.wait()
            self._server.stdin.close()
            self._server.stdout.close()
            self._server = None

    def _send(self, request: dict) -> None:
        try:
            self._server.stdin.write((json.dumps(request) + "\n").encode())
            self._server.stdin.flush()
        except BrokenPipeError:
            raise ServerLost(f"sandbox server died: {self._death()}") from None

    def _receive(self, limit_s: float) -> dict:
        """One reply line, within limit_s; a wedged server must never hang the caller."""
        fd = self._server.stdout.fileno()
        deadline = time.monotonic() + limit_s
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise ServerLost(f"sandbox server did not reply within {limit_s}s")
            chunk = os.read(fd, MAX_REPLY_BYTES)
            if not chunk:
                raise ServerLost(f"sandbox server died: {self._death()}")
            data += chunk
            if len(data) > MAX_REPLY_BYTES:
                raise ServerLost("sandbox server sent an oversized reply")
        try:
            reply = json.loads(data)  # two lines at once (a forged reply) fail here too
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise ServerLost(f"sandbox server sent a malformed reply: {data!r:.{SNIPPET_CHARS}}")
        return reply

    def _death(self) -> str:
        """Why the server is gone: its last stderr line, else its exit status."""
        self._server.kill()  # no-op when it already exited; makes the wait below prompt
        status = self._server.wait()
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {status}"
