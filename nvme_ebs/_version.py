"""The distribution's version, read from its installed metadata (pyproject.toml is the one source)."""

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "ebs-metrics-exporter"

try:
    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.0.0+source"
