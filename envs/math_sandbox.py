"""Math environment: runs program-of-thought solutions in a sandbox and checks their answers.

A solution is Python source defining `solution()`; its return value, as a string, is the answer.
Programs run in one long-lived fork server (envs/sandbox_server.py) inside bubblewrap: no network,
no /etc, /home, /root or /work, a PID namespace, all capabilities dropped, and an unprivileged uid
when the host runs as root. The only writable place is a private /tmp of `tmp_mb`, emptied after
every program: bubblewrap's tmpfs lives in the host's shared memory, so files a program leaves
would otherwise pile up there for as long as the executor lives. The server forks once per
program, which costs a fraction of starting an interpreter. A server that dies or stops answering
is replaced, so one hostile program costs its own reward and nothing else.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from envisions_ray.envs.line_server import LineServer, ServerLost
from envisions_ray.errors import UserError
from envisions_ray.leftovers import owned_directory, remove_directory, sweep_orphans
from envisions_ray.types import PARSE_ERROR, Example, Outcome

SERVER_SCRIPT = Path(__file__).with_name("sandbox_server.py")
SERVER_IN_SANDBOX = "/sandbox_server.py"
SCRATCH_IN_SANDBOX = "/tmp"
DIRECTORY_PREFIX = "envisions-math-sandbox-"
MB = 1024 * 1024
SANDBOX_PATH = "/usr/bin:/bin"
# What the interpreter needs, read-only; /etc, /home, /root and /work stay out of sight.
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin", "/sbin")
STARTUP_TIMEOUT_S = 10.0
REPLY_MARGIN_S = 5.0  # beyond the program's timeout: the fork, the cleanup sweep, a busy machine
SNIPPET_CHARS = 200  # of a bad reply, quoted in the error
ANSWER_TOLERANCE = 1e-4
MISSING_BWRAP = (
    "bubblewrap (bwrap) is not installed; install it (apt-get install bubblewrap) "
    "or set env.settings.allow_rlimit_only=true for the weaker rlimit-only mode"
)


@dataclass
class SandboxSettings:
    """`env.settings` of the math domain."""

    # Debian's interpreter: a dropped uid cannot read one under /root (mode 700).
    python: str = "/usr/bin/python3.11"
    timeout_s: float = 2.0
    # One program's memory, all its processes together: each process may use memory_mb / max_processes.
    memory_mb: int = 512
    max_processes: int = 4  # a program's own processes, itself included
    max_file_mb: int = 1
    max_open_files: int = 32
    tmp_mb: int = 16  # the program's /tmp, emptied after each program
    # Without bubblewrap the sandbox refuses to start unless this weaker rlimit-only mode is allowed.
    allow_rlimit_only: bool = False
    # Uid/gid the sandbox drops to when started as root.
    unprivileged_uid: int = 65534
    unprivileged_gid: int = 65534


def is_correct(output: str, answer: str) -> bool:
    """Numbers within ANSWER_TOLERANCE, other text exactly. A solution that prints nan or inf is never
    right: no number is within a tolerance of them, and datasets hold no such answer (envisions_ray/data.py)."""
    try:
        return abs(float(output) - float(answer)) <= ANSWER_TOLERANCE
    except ValueError:  # not numbers: only the exact string comparison counts
        return output.strip() == answer.strip()


def bwrap_command(bwrap: str, python: str, script: Path, tmp_mb: int) -> list[str]:
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
        "--proc", "/proc", "--dev", "/dev", "--size", str(tmp_mb * MB), "--tmpfs", SCRATCH_IN_SANDBOX,
        "--ro-bind", str(script), SERVER_IN_SANDBOX,
        # bwrap's root and /dev are tmpfs too, uncapped: read-only, they leave /tmp the one place to write.
        "--remount-ro", "/dev", "--remount-ro", "/",
        "--clearenv", "--setenv", "PATH", SANDBOX_PATH, "--chdir", SCRATCH_IN_SANDBOX,
        python, "-I", "-S", SERVER_IN_SANDBOX, SCRATCH_IN_SANDBOX,
    ]  # fmt: skip


class MathSandbox:
    Settings = SandboxSettings

    def __init__(self, cfg: SandboxSettings) -> None:
        bwrap = shutil.which("bwrap")
        if bwrap is None and not cfg.allow_rlimit_only:
            raise UserError(MISSING_BWRAP)
        self.cfg = cfg
        # The dropped uid may not be able to read this checkout, so the server runs from a copy.
        self._workdir = owned_directory(DIRECTORY_PREFIX)
        os.chmod(self._workdir, 0o755)
        script = self._workdir / SERVER_SCRIPT.name
        shutil.copyfile(SERVER_SCRIPT, script)
        os.chmod(script, 0o644)
        if bwrap is None:  # rlimit-only: same server, no namespaces, and no cap on the scratch directory
            scratch = self._workdir / "scratch"
            scratch.mkdir()
            os.chmod(scratch, 0o777)
            command = [cfg.python, "-I", "-S", str(script), str(scratch)]
        else:
            command = bwrap_command(bwrap, cfg.python, script, cfg.tmp_mb)
        # As root, bwrap itself runs unprivileged and gets its powers from a user namespace.
        drop = {}
        if os.geteuid() == 0:
            drop = {"user": cfg.unprivileged_uid, "group": cfg.unprivileged_gid, "extra_groups": []}
        self._server = LineServer(
            command, "sandbox server", STARTUP_TIMEOUT_S, cwd=self._workdir, env={"PATH": SANDBOX_PATH}, **drop
        )
        try:
            self._server.start()  # a sandbox that cannot start is a setup problem: say so now
        except ServerLost as err:
            self.close()
            raise UserError(f"the math sandbox failed to start: {err}") from None

    @staticmethod
    def describe(example: Example) -> str:
        return example.question

    def execute(self, solution: str, example: Example) -> Outcome:
        try:  # compiling runs nothing: a program that is not Python is told apart from one that failed
            compile(solution, "<solution>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as err:
            return Outcome(reward=0, error=f"{PARSE_ERROR}{type(err).__name__}: {err}")
        request = {
            "program": solution,
            "timeout_s": self.cfg.timeout_s,
            "memory_mb": self.cfg.memory_mb,
            "max_processes": self.cfg.max_processes,
            "max_file_mb": self.cfg.max_file_mb,
            "max_open_files": self.cfg.max_open_files,
        }
        try:
            reply = self._server.request(request, self.cfg.timeout_s + REPLY_MARGIN_S)
        except ServerLost as err:  # the next call starts a fresh server
            return Outcome(reward=0, error=str(err))
        ok, output, error = reply.get("ok"), reply.get("output"), reply.get("error")
        if not (isinstance(ok, bool) and isinstance(output, str) and isinstance(error, str)):
            self._server.stop()
            return Outcome(reward=0, error=f"sandbox server sent a malformed reply: {reply!r:.{SNIPPET_CHARS}}")
        reward = int(ok and is_correct(output, example.answer))
        return Outcome(reward=reward, output=output, error=error)

    def close(self) -> None:
        self._server.close()
        remove_directory(self._workdir)
        sweep_orphans(DIRECTORY_PREFIX)  # a killed sibling's server, if no sandbox started since

    def __del__(self) -> None:
        if hasattr(self, "_server"):  # __init__ may have refused before acquiring anything
            self.close()
