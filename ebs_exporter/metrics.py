"""The metric families, named once: both renderers (ours and prometheus_client's) read this table."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.utils import floatToGoString as float_to_go_string

from nvme_ebs import PageKind

MICROS = 1_000_000

# Each page kind gets its own families: instance-store counters mean other limits.
PREFIX = {PageKind.EBS: "ebs_", PageKind.INSTANCE_STORE: "ec2_instance_store_"}


@dataclass(frozen=True)
class CounterSpec:
    suffix: str  # name after the prefix, without _total
    field: str  # EbsStats field
    divisor: int  # 1, or MICROS for microsecond fields (exported in seconds)
    help: str


COUNTERS = (
    CounterSpec("read_ops", "total_read_ops", 1, "Read operations completed since the volume was attached."),
    CounterSpec("write_ops", "total_write_ops", 1, "Write operations completed since the volume was attached."),
    CounterSpec("read_bytes", "total_read_bytes", 1, "Bytes read since the volume was attached."),
    CounterSpec("write_bytes", "total_write_bytes", 1, "Bytes written since the volume was attached."),
    CounterSpec("read_time_seconds", "total_read_time_us", MICROS, "Sum of the latencies of completed reads."),
    CounterSpec("write_time_seconds", "total_write_time_us", MICROS, "Sum of the latencies of completed writes."),
    CounterSpec(
        "volume_performance_exceeded_iops_seconds",
        "ebs_volume_performance_exceeded_iops_us",
        MICROS,
        "Time I/O demand exceeded the volume's IOPS limit.",
    ),
    CounterSpec(
        "volume_performance_exceeded_throughput_seconds",
        "ebs_volume_performance_exceeded_tp_us",
        MICROS,
        "Time I/O demand exceeded the volume's throughput limit.",
    ),
    CounterSpec(
        "instance_performance_exceeded_iops_seconds",
        "ec2_instance_ebs_performance_exceeded_iops_us",
        MICROS,
        "Time I/O demand exceeded the EC2 instance's IOPS limit.",
    ),
    CounterSpec(
        "instance_performance_exceeded_throughput_seconds",
        "ec2_instance_ebs_performance_exceeded_tp_us",
        MICROS,
        "Time I/O demand exceeded the EC2 instance's throughput limit.",
    ),
)

QUEUE_LENGTH = ("volume_queue_length", "I/O operations waiting to be completed, at the time of the read.")
READ_LATENCY = ("read_io_latency_seconds", "Latency of completed reads (bins of the device's histogram).")
WRITE_LATENCY = ("write_io_latency_seconds", "Latency of completed writes (bins of the device's histogram).")

INFO = ("ebs_volume", "Identity of each NVMe volume read; the value is always 1.")
INFO_LABELS = ("volume_id", "device", "block_device_mapping", "model", "firmware", "kind", "serial")
UP = ("ebs_device_up", "1 when the last read of the device succeeded, else 0.")
ERRORS = ("ebs_device_errors", "Failed reads of the device, by reason.")
DEVICES = ("ebs_devices", "NVMe controllers discovered, by kind.")
DURATION = ("ebs_collect_duration_seconds", "Time taken by the last collection (discovery and reads).")
BUILD_INFO = ("ebs_exporter_build", "Version of the exporter; the value is always 1.")


def le_label(upper_us: int) -> str:
    """A bucket's `le` value: the bin's upper bound in seconds, spelled as prometheus_client does."""
    return str(float_to_go_string(upper_us / MICROS))  # type: ignore[no-untyped-call]
