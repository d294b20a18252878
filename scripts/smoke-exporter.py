#!/usr/bin/env python3
"""Run an installed exporter as the container image runs it, scrape it once, stop it.

    VENV/bin/python -I scripts/smoke-exporter.py VENV

VENV is a virtualenv that holds the installed wheel and nothing of the source tree.
From an empty temporary directory (so no source checkout can be imported) this:

1. checks that `nvme_ebs` and `ebs_exporter` are imported from VENV's site-packages;
2. starts the entrypoint, `VENV/bin/ebs-exporter --simulate 1
   --web.listen-address=127.0.0.1:0`, with the launcher the tests use
   (ebs_exporter.testing, from the installed wheel: hence VENV's python), which
   reads the port from its log line;
3. scrapes /healthz and /metrics once; the page must hold the one simulated volume
   and the installed version, and pass `promtool check metrics` ($PROMTOOL or on PATH);
4. sends SIGTERM and wants exit status 0 after a "shutting down" log line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

STOP_TIMEOUT_S = 30.0
# A cold start on a loaded CI machine; the wait ends as soon as the serving line appears.
START_TIMEOUT_S = 60.0


class SmokeError(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeError(message)


def installed_from(venv: Path, cwd: Path, env: dict[str, str]) -> tuple[list[str], str]:
    code = (
        "import importlib.metadata, os, nvme_ebs, ebs_exporter;"
        # The version is read from the file the build wrote, and it is the metadata's.
        "v = importlib.metadata.version('ebs-metrics-exporter');"
        "assert open(os.path.join(os.path.dirname(nvme_ebs.__file__), 'VERSION')).read().strip() == v, 'VERSION';"
        "assert nvme_ebs.__version__ == v, nvme_ebs.__version__;"
        "print(nvme_ebs.__file__); print(ebs_exporter.__file__);"
        "print(','.join(f'{k}=\"{v}\"' for k, v in ebs_exporter.build_info().items()))"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    check(out.returncode == 0, f"importing the installed package failed:\n{out.stderr}")
    *files, build_labels = out.stdout.split()
    return files, build_labels


def check_page(page: str, build_labels: str) -> list[str]:
    samples = [line for line in page.splitlines() if line and not line.startswith("#")]
    up = [line for line in samples if line.startswith("ebs_device_up{")]
    check(len(up) == 1 and up[0].endswith(" 1"), f"want one ebs_device_up sample of value 1, got {up}")
    info = [line for line in samples if line.startswith("ebs_volume_info{")]
    check(len(info) == 1, f"want one ebs_volume_info sample, got {info}")
    build = f"ebs_exporter_build_info{{{build_labels}}} 1"
    check(build in samples, f"no {build!r} sample")
    check('revision="unknown"' not in build, f"the wheel does not know the commit it was built from: {build}")
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
        files, build_labels = installed_from(venv, cwd, env)
        site = (venv / "lib").resolve()
        for file in files:
            check(Path(file).resolve().is_relative_to(site), f"{file} is not inside {site}")

        try:
            from ebs_exporter import testing
        except ImportError as e:
            raise SmokeError(f"run with {venv}/bin/python: the launcher comes from the installed wheel ({e})") from e
        check(Path(testing.__file__).resolve().is_relative_to(site), f"{testing.__file__} is not inside {site}")
        Exporter = testing.Exporter
        with Exporter(["--simulate", "1"], env, START_TIMEOUT_S, command=[str(entrypoint)], cwd=str(cwd)) as running:
            status, _, _ = running.get("/healthz")
            check(status == 200, f"/healthz answered {status}")
            status, headers, body = running.get(running.path)
            check(status == 200, f"{running.path} answered {status}")
            content_type = headers.get("content-type", "")
            check(content_type.startswith("text/plain"), f"unexpected Content-Type {content_type!r}")
            page = body.decode("utf-8")
            samples = check_page(page, build_labels)
            promtool_check(page)
            returncode = running.stop(signal.SIGTERM, STOP_TIMEOUT_S)
        log = running.log_text()
        check(returncode == 0, f"ebs-exporter exited with {returncode} on SIGTERM:\n{log}")
        check("shutting down" in log, f"no 'shutting down' log line:\n{log}")
    return (
        f"smoke: {entrypoint} ({build_labels}) from {site}: {len(samples)} samples, "
        "promtool check metrics OK, SIGTERM -> exit 0"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        print(smoke(Path(argv[1])))
    except (SmokeError, RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"smoke-exporter: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
