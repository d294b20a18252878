"""Runs the real exporter process against a fake host: a fixture sysfs tree plus the fake NVMe
controller, so every scrape goes discovery -> open -> ioctl -> C decoder -> HTTP."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from fakenvme import FakeNvme
from pagesource import MODELS
from sysfs_fixture import SysfsTree

from nvme_ebs import VolumeKind
from nvme_ebs import testing as pg

SERVING = re.compile(r"serving .* on (\S*):(\d+)/")


class FakeHost:
    def __init__(self, root: Path) -> None:
        self.sysfs = SysfsTree(root / "sys")
        self.fake = FakeNvme(root / "fake")
        self.dev = self.fake.root / "dev"
        self.dev.mkdir(parents=True, exist_ok=True)

    def attach(
        self,
        controller: str,
        serial: str,
        page: bytes | None,
        kind: VolumeKind = VolumeKind.EBS,
        mapping: str = "sdf",
        multipath_subsystem: int | None = None,
    ) -> None:
        model = MODELS[kind]
        self.sysfs.add_controller(controller, model, serial, multipath_subsystem=multipath_subsystem)
        self.fake.add(controller, pg.encode_identify(serial, model, "2.0", mapping), page)

    def detach(self, controller: str) -> None:
        os.unlink(self.sysfs.controller_dir(controller))
        self.fake.remove(controller)

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.fake.env()}

    def args(self) -> list[str]:
        return [f"--path.sysfs={self.sysfs.root}", f"--path.dev={self.dev}"]


class Exporter:
    """`python -m ebs_exporter` on a free loopback port; stderr is kept for log assertions.

    `prefix` runs it as the last arguments of another command (which must exec it);
    `python_args` replace `-m ebs_exporter`."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        timeout: float = 20,
        prefix: Sequence[str] = (),
        python_args: Sequence[str] = ("-m", "ebs_exporter"),
    ) -> None:
        cmd = [*prefix, sys.executable, *python_args, "--web.listen-address=127.0.0.1:0", *args]
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self._port = threading.Event()
        self.port = 0
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self._port.wait(timeout):
            self.stop()
            raise RuntimeError("exporter did not start:\n" + "".join(self.log))

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            m = SERVING.search(line)
            if m and not self.port:
                self.port = int(m.group(2))
                self._port.set()

    def get(self, path: str = "/metrics", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def metrics(self) -> str:
        status, _, body = self.get()
        assert status == 200, body
        return body.decode()

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Polls until predicate() is truthy; returns its value or raises after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            if not value:
                raise AssertionError(f"condition not met within {timeout} s")
            return value
        time.sleep(interval)
