"""ebs-exporter: EBS and instance-store NVMe statistics for Prometheus, on port 8090."""

from nvme_ebs import __version__

__all__ = ["__version__"]
