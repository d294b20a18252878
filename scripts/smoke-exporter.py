#!/usr/bin/env python3
"""Run an installed exporter as the container image runs it, scrape it once, stop it.

    scripts/smoke-exporter.py VENV

VENV is a virtualenv that holds the installed wheel and nothing of the source tree.
From an empty temporary directory (so no source checkout can be imported) this:

1. checks that `nvme_ebs` and `ebs_exporter` are imported from VENV's site-packages;
2. starts the entrypoint, `VENV/bin/ebs-exporter --simulate 1
   --web.listen-address=127.0.0.1:0`, and reads the port from its log line;
3. scrapes /healthz and /metrics once; the page must hold the one simulated volume
   and the installed version, and pass `promtool check metrics` ($PROMTOOL or on PATH);
4. sends SIGTERM and wants exit status 0 after a "shutting down" log line.

Standard library only: it runs under any python3, not only VENV's.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SERVING = re.compile(r"serving .* on (?P<host>\S+):(?P<port>\d+)(?P<path>/\S*)")
START_TIMEOUT_S = 60.0  # a cold start on a loaded CI machine; the wait ends as soon as the line appears
STOP_TIMEOUT_S = 30.0


class SmokeError(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeError(message)


def installed_from(venv: Path, cwd: Path, env: dict[str, str]) -> tuple[list[str], str]:
    code = (
        "import importlib.metadata, nvme_ebs, ebs_exporter;"
        "print(nvme_ebs.__file__); print(ebs_exporter.__file__);"
        "print(importlib.metadata.version('ebs-metrics-exporter'))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    check(out.returncode == 0, f"importing the installed package failed:\n{out.stderr}")
    *files, version = out.stdout.split()
    return files, version


def read_serving_line(proc: subprocess.Popen[str], log: list[str]) -> re.Match[str]:
    assert proc.stderr is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if not ready:
            check(proc.poll() is None, f"ebs-exporter exited with {proc.returncode}:\n{''.join(log)}")
            continue
        line = proc.stderr.readline()
        if not line:
            proc.wait()
            raise SmokeError(f"ebs-exporter exited with {proc.returncode}:\n{''.join(log)}")
        log.append(line)
        match = SERVING.search(line)
        if match:
            return match
    raise SmokeError(f"no 'serving ... on HOST:PORT/PATH' log line within {START_TIMEOUT_S:.0f}s:\n{''.join(log)}")


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read().decode("utf-8")


def check_page(page: str, version: str) -> list[str]:
    samples = [line for line in page.splitlines() if line and not line.startswith("#")]
    up = [line for line in samples if line.startswith("ebs_device_up{")]
    check(len(up) == 1 and up[0].endswith(" 1"), f"want one ebs_device_up sample of value 1, got {up}")
    info = [line for line in samples if line.startswith("ebs_volume_info{")]
    check(len(info) == 1, f"want one ebs_volume_info sample, got {info}")
    build = f'ebs_exporter_build_info{{version="{version}"}} 1'
    check(build in samples, f"no {build!r} sample")
    return samples


def promtool_check(page: str) -> None:
    promtool = shutil.which(os.environ.get("PROMTOOL", "promtool"))
    check(promtool is not None, "promtool not found: install Debian's prometheus package or set $PROMTOOL")
    assert promtool is not None
    out = subprocess.run([promtool, "check", "metrics"], input=page, capture_output=True, text=True, check=False)
    check(out.returncode == 0, f"promtool check metrics failed ({out.returncode}):\n{out.stdout}{out.stderr}")


def smoke(venv: Path) -> str:
    entrypoint = venv / "bin" / "ebs-exporter"
    check(os.access(entrypoint, os.X_OK), f"{entrypoint} is not an executable")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    with tempfile.TemporaryDirectory(prefix="ebs-smoke-") as tmp:
        cwd = Path(tmp)
        files, version = installed_from(venv, cwd, env)
        site = (venv / "lib").resolve()
        for file in files:
            check(Path(file).resolve().is_relative_to(site), f"{file} is not inside {site}")

        cmd = [str(entrypoint), "--simulate", "1", "--web.listen-address=127.0.0.1:0"]
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
        log: list[str] = []
        try:
            serving = read_serving_line(proc, log)
            base = f"http://{serving['host']}:{serving['port']}"
            status, _, _ = get(f"{base}/healthz")
            check(status == 200, f"/healthz answered {status}")
            status, content_type, page = get(f"{base}{serving['path']}")
            check(status == 200, f"{serving['path']} answered {status}")
            check(content_type.startswith("text/plain"), f"unexpected Content-Type {content_type!r}")
            samples = check_page(page, version)
            promtool_check(page)
            proc.send_signal(signal.SIGTERM)
            _, rest = proc.communicate(timeout=STOP_TIMEOUT_S)
            log.append(rest)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        check(proc.returncode == 0, f"ebs-exporter exited with {proc.returncode} on SIGTERM:\n{''.join(log)}")
        check("shutting down" in "".join(log), f"no 'shutting down' log line:\n{''.join(log)}")
    return (
        f"smoke: {entrypoint} {version} from {site}: {len(samples)} samples, "
        "promtool check metrics OK, SIGTERM -> exit 0"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        print(smoke(Path(argv[1])))
    except (SmokeError, OSError, subprocess.SubprocessError) as e:
        print(f"smoke-exporter: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
