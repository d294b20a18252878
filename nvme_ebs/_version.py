"""The distribution's version, read from its installed metadata (pyproject.toml is the one source),
and the revision it was built from (written into the package by setup.py)."""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "ebs-metrics-exporter"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+source"


def revision() -> str:
    """The commit the package was built from, or "unknown" (an editable install, a bare sdist)."""
    try:
        return (Path(__file__).parent / "REVISION").read_text(encoding="ascii").strip() or "unknown"
    except OSError:
        return "unknown"
