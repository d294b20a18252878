"""ebs-exporter: EBS and instance-store NVMe statistics for Prometheus, on port 8090."""

import platform

from nvme_ebs import __version__
from nvme_ebs._version import revision

__all__ = ["__version__", "build_info"]


def build_info() -> dict[str, str]:
    """The labels of ebs_exporter_build_info."""
    return {"version": __version__, "revision": revision(), "python_version": platform.python_version()}
