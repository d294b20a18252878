"""Build glue for the cffi module and the build's revision; the metadata lives in pyproject.toml."""

import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py


def _revision() -> str:
    """$REVISION (the image build passes it), else the checkout's commit, else unknown."""
    if os.environ.get("REVISION"):
        return os.environ["REVISION"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


class BuildPyWithRevision(build_py):
    """Writes nvme_ebs/REVISION into the built package, for ebs_exporter_build_info."""

    def run(self) -> None:
        super().run()
        target = os.path.join(self.build_lib, "nvme_ebs", "REVISION")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="ascii") as f:
            f.write(_revision() + "\n")


setup(
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    cmdclass={"build_py": BuildPyWithRevision},
    # One wheel per architecture for every CPython >= 3.9 (cffi builds against the limited API).
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
