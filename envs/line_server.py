"""A child process spoken to in JSON lines, which its caller can lose at any moment without hanging.

Environments run work that may never finish, or may take its own process down, in such a child:
the math sandbox runs Python programs in one, the logic engine grounds theories in another. The
child writes a ready line, then answers one request line with one reply line. If it dies, stops
answering within the caller's limit or breaks the protocol, the caller's request raises
`ServerLost`, the child is killed, and the next request starts a fresh one.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import tempfile
import time

READY = {"ready": True}
MAX_REPLY_BYTES = 64 * 1024
SNIPPET_CHARS = 200  # of a bad reply, quoted in the error


class ServerLost(Exception):
    """The child died, stopped answering or broke the protocol; the message says which."""


class LineServer:
    def __init__(self, command: list[str], name: str, startup_timeout_s: float, **popen_options) -> None:
        self.command = command
        self.name = name
        self.startup_timeout_s = startup_timeout_s
        self.popen_options = popen_options
        self._process: subprocess.Popen | None = None
        self._stderr = tempfile.TemporaryFile()  # the child's last words, for error messages

    def request(self, message: dict, limit_s: float) -> dict:
        """Send one request, return its reply; ServerLost (with the child stopped) on any failure."""
        if self._process is not None and self._process.poll() is not None:
            self.stop()  # died between requests: not this request's fault
        if self._process is None:
            self.start()
        try:
            self._send(message)
            return self._receive(limit_s)
        except ServerLost:
            self.stop()
            raise

    def start(self) -> None:
        self._stderr.seek(0)
        self._stderr.truncate()
        try:
            self._process = subprocess.Popen(
                self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                **self.popen_options,
            )  # fmt: skip
            ready = self._receive(self.startup_timeout_s)
        except OSError as err:
            self.stop()
            raise ServerLost(f"{self.name} failed to start: {err}") from None
        except ServerLost:
            self.stop()
            raise
        if ready != READY:
            self.stop()
            raise ServerLost(f"{self.name} failed to start: bad handshake {ready!r:.{SNIPPET_CHARS}}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process.stdin.close()
            self._process.stdout.close()
            self._process = None

    def close(self) -> None:
        self.stop()
        self._stderr.close()

    def _send(self, message: dict) -> None:
        try:
            self._process.stdin.write((json.dumps(message) + "\n").encode())
            self._process.stdin.flush()
        except BrokenPipeError:
            raise ServerLost(f"{self.name} died: {self._death()}") from None

    def _receive(self, limit_s: float) -> dict:
        """One reply line, within limit_s; a wedged child must never hang the caller."""
        fd = self._process.stdout.fileno()
        deadline = time.monotonic() + limit_s
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise ServerLost(f"{self.name} did not reply within {limit_s}s")
            chunk = os.read(fd, MAX_REPLY_BYTES)
            if not chunk:
                raise ServerLost(f"{self.name} died: {self._death()}")
            data += chunk
            if len(data) > MAX_REPLY_BYTES:
                raise ServerLost(f"{self.name} sent an oversized reply")
        try:
            reply = json.loads(data)  # two lines at once (a forged reply) fail here too
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise ServerLost(f"{self.name} sent a malformed reply: {data!r:.{SNIPPET_CHARS}}")
        return reply

    def _death(self) -> str:
        """Why the child is gone: its last stderr line, else its exit status."""
        self._process.kill()  # no-op when it already exited; makes the wait below prompt
        status = self._process.wait()
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit status {status}"
