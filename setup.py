"""Build glue for the cffi module and the build's revision; the metadata lives in pyproject.toml."""

import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

REVISION_FILE = os.path.join("nvme_ebs", "REVISION")
VERSION_FILE = os.path.join("nvme_ebs", "VERSION")


def _revision() -> str:
    """$REVISION (the image build passes it), else the checkout's commit, else what the sdist
    this is built from recorded, else unknown."""
    if os.environ.get("REVISION"):
        return os.environ["REVISION"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open(REVISION_FILE, encoding="ascii") as f:
            return f.read().strip() or "unknown"
    except OSError:
        return "unknown"


def _write(root: str, name: str, text: str) -> None:
    target = os.path.join(root, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w", encoding="ascii") as f:
        f.write(text + "\n")


def _write_revision(root: str) -> None:
    _write(root, REVISION_FILE, _revision())


class BuildPyWithRevision(build_py):
    """Writes nvme_ebs/REVISION (for ebs_exporter_build_info) and nvme_ebs/VERSION into the
    built package: the version is then read from a file at run time, not through the package
    metadata (importlib.metadata and what it imports cost the exporter about 0.7 MiB)."""

    def run(self) -> None:
        super().run()
        _write_revision(self.build_lib)
        _write(self.build_lib, VERSION_FILE, self.distribution.get_version())
        if getattr(self, "editable_mode", False):  # an editable install runs the source tree itself
            _write(".", VERSION_FILE, self.distribution.get_version())


class SdistWithRevision(sdist):
    """Records the commit in the sdist, where there is no git to ask."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        _write_revision(base_dir)


setup(
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    cmdclass={"build_py": BuildPyWithRevision, "sdist": SdistWithRevision},
    # One wheel per architecture for every CPython >= 3.9 (cffi builds against the limited API).
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
