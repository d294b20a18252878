"""ebs-exporter: EBS and instance-store NVMe statistics for Prometheus, on port 8090."""

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("ebs-metrics-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
