"""Starts an exporter process and talks to it: for the tests, the benchmarks and the check of an
installed wheel (scripts/smoke-exporter.py). Not on the runtime path: the exporter never imports it.

    with Exporter(["--simulate=2"]) as running:
        status, headers, body = running.get("/metrics")

The process listens on a free loopback port it picks itself (`--web.listen-address=127.0.0.1:0`);
the port is read from its "serving ... on HOST:PORT/PATH" log line, and every stderr line is kept
in `log`. Standard library only.
"""

from __future__ import annotations

import http.client
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

__all__ = ["PYTHON_MODULE", "SERVING", "Exporter"]

SERVING = re.compile(r"serving .* on (?P<host>\S+):(?P<port>\d+)(?P<path>/\S*)")
PYTHON_MODULE: tuple[str, ...] = ("-m", "ebs_exporter")


class Exporter:
    """An exporter process on a loopback port.

    `command` is what starts it (default: this interpreter with `python_args`, `-m ebs_exporter`);
    `prefix` runs that as the last arguments of another command (strace, unshare: it must exec it).
    Raises RuntimeError, with the log, when no serving line comes within `timeout` seconds.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 20,
        prefix: Sequence[str] = (),
        python_args: Sequence[str] = PYTHON_MODULE,
        *,
        command: Sequence[str] | None = None,
        cwd: str | None = None,
    ) -> None:
        start = list(command) if command is not None else [sys.executable, *python_args]
        cmd = [*prefix, *start, "--web.listen-address=127.0.0.1:0", *args]
        self.proc = subprocess.Popen(
            cmd,
            env=None if env is None else dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self.host = "127.0.0.1"
        self.port = 0
        self.path = "/metrics"
        self._serving = threading.Event()
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._serving.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError(f"{cmd[0]} did not start (exit status {self.proc.poll()}):\n{self.log_text()}")

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            match = SERVING.search(line)
            if match and not self._serving.is_set():
                self.host, self.port, self.path = match["host"], int(match["port"]), match["path"]
                self._serving.set()
        self._serving.set()  # the process exited: no serving line will come

    def log_text(self) -> str:
        return "".join(self.log)

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        """A new (kept-alive) connection to the exporter."""
        if not self.port:
            raise RuntimeError(f"the exporter is not serving:\n{self.log_text()}")
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(
        self, path: str = "/metrics", headers: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a connection of its own: status, headers (lower-case names), body."""
        conn = self.connection()
        try:
            conn.request("GET", path, headers=dict(headers or {}))
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def metrics(self) -> str:
        status, _, body = self.get(self.path)
        if status != 200:
            raise AssertionError(f"{self.path} answered {status}: {body[:500]!r}")
        return body.decode()

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        """Signals the process (unless it has exited) and returns its exit status; kills it after timeout."""
        if self.proc.poll() is None:
            self.send_signal(sig)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._reader.join(timeout)  # the log is complete once stderr is drained
        return status

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
