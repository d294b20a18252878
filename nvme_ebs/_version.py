"""The distribution's version (pyproject.toml is the one source) and the revision it was built
from, both written into the package by setup.py; an installation without them (a source tree
run in place) falls back to the installed metadata."""

import os

DISTRIBUTION = "ebs-metrics-exporter"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _written(name: str) -> str:
    try:
        with open(os.path.join(_HERE, name), encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _metadata_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0+source"


__version__ = _written("VERSION") or _metadata_version()


def revision() -> str:
    """The commit the package was built from, or "unknown" (an editable install, a bare sdist)."""
    return _written("REVISION") or "unknown"
