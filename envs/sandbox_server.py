"""Fork server that runs untrusted solution programs, one at a time, inside the sandbox.

Started by envs/math_sandbox.py as `python3.11 -I -S sandbox_server.py SCRATCH_DIR`, under
bubblewrap, so it uses the standard library only. It writes one READY line, then answers requests:

    stdin:  {"program": str, "timeout_s": float, "memory_mb": int, "max_processes": int,
             "max_file_mb": int, "max_open_files": int}            one JSON object per line
    stdout: {"ok": bool, "output": str, "error": str}               one JSON object per line

Each program runs in a forked child: forking this small, already started interpreter is what
makes a program cheap. The child confines itself with rlimits, runs `solution()` and writes its
result to a pipe; the server waits on that pipe with a wall-clock deadline, then kills and reaps
every process the program left behind and empties the scratch directory (the sandbox's /tmp), so the
next program starts from a clean sandbox. A scratch directory it cannot empty ends the server: the
next request starts a fresh sandbox, with a fresh /tmp.

Memory is bounded per program, not per process: a program may run `max_processes` processes
(RLIMIT_NPROC, which the kernel counts per user namespace, so per sandbox), each of at most
memory_mb / max_processes of address space.
"""

import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

READY = {"ready": True}
WARMUP_PROGRAM = "def solution():\n    return 1 + 1\n"
MAX_TEXT_CHARS = 1000  # output and error are cut to this so a reply stays one short line
MAX_RESULT_BYTES = 64 * 1024  # a child writing more than this has not written a result
CPU_GRACE_S = 1  # CPU limit above the wall timeout: the wall clock reports a busy loop first
MB = 1024 * 1024

# prctl(2) options, from <linux/prctl.h>.
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def write_line(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- the child


def set_limit(kind: int, value: int) -> None:
    # An unprivileged process cannot raise its hard limit, only lower it.
    _, hard = resource.getrlimit(kind)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(kind, (value, value))


def processes_of_this_user() -> int:
    """Processes of our uid that the kernel counts against RLIMIT_NPROC before the program starts:
    bubblewrap's init, this server and the program itself."""
    uid = str(os.getuid())
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():  # "self" and "thread-self" would count the caller again
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                uids = next(line for line in f if line.startswith("Uid:")).split()
        except (OSError, StopIteration):  # exited since listdir
            continue
        count += uids[1] == uid
    return count


def confine(request: dict) -> None:
    """Own process group (a kill(0) hits only the program), rlimits, /dev/null for stdio."""
    os.setpgid(0, 0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    set_limit(resource.RLIMIT_AS, request["memory_mb"] * MB // request["max_processes"])
    set_limit(resource.RLIMIT_CPU, int(request["timeout_s"]) + CPU_GRACE_S)
    # The program's processes come on top of those already running, itself counted among them.
    set_limit(resource.RLIMIT_NPROC, processes_of_this_user() - 1 + request["max_processes"])
    set_limit(resource.RLIMIT_FSIZE, request["max_file_mb"] * MB)
    set_limit(resource.RLIMIT_NOFILE, request["max_open_files"])


def describe(err: BaseException) -> str:
    message = str(err)
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def solve(program: str) -> dict:
    namespace = {"__name__": "__main__"}
    exec(compile(program, "<solution>", "exec"), namespace)
    if not callable(namespace.get("solution")):
        return {"ok": False, "output": "", "error": "program did not define solution()"}
    return {"ok": True, "output": str(namespace["solution"]())[:MAX_TEXT_CHARS], "error": ""}


def run_program(request: dict) -> dict:
    try:
        confine(request)
        return solve(request["program"])
    except BaseException as err:  # SystemExit and KeyboardInterrupt are the program's failures too
        return {"ok": False, "output": "", "error": describe(err)[:MAX_TEXT_CHARS]}


# ----------------------------------------------------------------------------- the server


def read_result(fd: int, deadline: float) -> tuple[bytes, bool]:
    """What the child wrote up to its first newline (or EOF), and whether the deadline passed first.

    Reading stops at the newline rather than EOF: processes the program forked keep the pipe open.
    """
    data = b""
    while b"\n" not in data and len(data) <= MAX_RESULT_BYTES:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return data, True
        chunk = os.read(fd, MAX_RESULT_BYTES)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0], False


def descendants() -> list[int]:
    """Every process below this server. As a subreaper it inherits orphans, so none can escape the
    tree; inside the PID namespace that is every pid but 1 (bwrap) and this server."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:  # exited since listdir
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may contain ")"
        children.setdefault(parent, []).append(int(name))
    found, frontier = [], [os.getpid()]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


def kill_everything(child: int) -> int:
    """SIGKILL and reap every descendant until none is left; returns the child's wait status.

    Zombies count against RLIMIT_NPROC, so all of them are reaped, not only the child.
    """
    status = 0
    while pids := descendants():
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # A non-empty tree has a direct child, just killed, so this blocking wait returns promptly.
        options = 0
        while True:
            try:
                pid, pid_status = os.waitpid(-1, options)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == child:
                status = pid_status
            options = os.WNOHANG
    return status


def empty_directory(path: str) -> None:
    """Remove everything in `path`; the program may have made parts of it unreadable (same uid)."""
    for name in os.listdir(path):
        entry = os.path.join(path, name)
        if os.path.isdir(entry) and not os.path.islink(entry):
            os.chmod(entry, 0o700)
            empty_directory(entry)
            os.rmdir(entry)
        else:
            os.unlink(entry)


def no_result(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by signal {-code}"
    return f"program exited with status {code} without a result"


def handle(request: dict) -> dict:
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        try:
            os.write(write_fd, (json.dumps(run_program(request)) + "\n").encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    data, timed_out = read_result(read_fd, time.monotonic() + request["timeout_s"])
    os.close(read_fd)
    status = kill_everything(child)
    if timed_out:
        return {"ok": False, "output": "", "error": f"timeout after {request['timeout_s']}s"}
    try:
        result = json.loads(data)
        return {
            "ok": result["ok"] is True,
            "output": str(result["output"])[:MAX_TEXT_CHARS],
            "error": str(result["error"])[:MAX_TEXT_CHARS],
        }
    except (ValueError, KeyError, TypeError):  # nothing, or a partial line, before the child died
        return {"ok": False, "output": "", "error": no_result(status)}


def main() -> None:
    scratch = sys.argv[1]
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    # Not dumpable: a program (same uid) can neither ptrace the server nor open its /proc fds.
    prctl(PR_SET_DUMPABLE, 0)
    # The compiler initialises itself lazily; doing it here, once, spares every fork about 1 ms.
    solve(WARMUP_PROGRAM)
    write_line(READY)
    for line in sys.stdin.buffer:
        reply = handle(json.loads(line))
        try:
            empty_directory(scratch)
        except (OSError, RecursionError):  # too deep or too strange: a fresh sandbox is cleaner
            write_line(reply)
            sys.exit(f"could not empty {scratch}")
        write_line(reply)


if __name__ == "__main__":
    main()
