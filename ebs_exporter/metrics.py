"""Every metric family the exporter serves, declared once.

The direct renderer (render.py), the prometheus_client families (client_families.py) and the
README's metric table (scripts/metric_table.py, checked by a test) all read this table. A
counter added to the page needs its field in the C struct and decoder, and one row here.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.utils import floatToGoString as float_to_go_string

from nvme_ebs import PageKind

MICROS = 1_000_000

# Each page kind gets its own families: instance-store counters mean other limits.
PREFIX = {PageKind.EBS: "ebs_", PageKind.INSTANCE_STORE: "ec2_instance_store_"}
VOLUME_LABELS = ("volume_id", "device")


@dataclass(frozen=True)
class Family:
    """One family. Volume families (`per_volume`) are named after the page kind's prefix."""

    name: str  # without the prefix of a volume family, without _total or _info
    type: str  # counter, gauge, histogram or info
    help: str
    unit: str = ""  # for the README: what one unit of the value is
    field: str = ""  # the EbsStats field the value comes from, for page families
    scale: int = 1  # the field is divided by this: MICROS turns the page's microseconds into seconds
    labels: tuple[str, ...] = VOLUME_LABELS
    sum_field: str = ""  # the EbsStats field of a histogram's _sum
    per_volume: bool = True

    def full_name(self, kind: PageKind = PageKind.EBS) -> str:
        return PREFIX[kind] + self.name if self.per_volume else self.name

    def exposed_name(self, kind: PageKind = PageKind.EBS) -> str:
        """The name on a sample line (either format): counters end in _total, info in _info."""
        name = self.full_name(kind)
        if self.type == "counter":
            return name + "_total"
        if self.type == "info":
            return name + "_info"
        return name


def _counter(name: str, field: str, unit: str, help_text: str) -> Family:
    return Family(name, "counter", help_text, unit, field, MICROS if field.endswith("_us") else 1)


# Read from the statistics page, one series per volume.
PAGE_FAMILIES = (
    _counter("read_ops", "total_read_ops", "operations", "Read operations completed since the volume was attached."),
    _counter("write_ops", "total_write_ops", "operations", "Write operations completed since the volume was attached."),
    _counter("read_bytes", "total_read_bytes", "bytes", "Bytes read since the volume was attached."),
    _counter("write_bytes", "total_write_bytes", "bytes", "Bytes written since the volume was attached."),
    _counter("read_time_seconds", "total_read_time_us", "seconds", "Sum of the latencies of completed reads."),
    _counter("write_time_seconds", "total_write_time_us", "seconds", "Sum of the latencies of completed writes."),
    _counter(
        "volume_performance_exceeded_iops_seconds",
        "ebs_volume_performance_exceeded_iops_us",
        "seconds",
        "Time I/O demand exceeded the volume's IOPS limit.",
    ),
    _counter(
        "volume_performance_exceeded_throughput_seconds",
        "ebs_volume_performance_exceeded_tp_us",
        "seconds",
        "Time I/O demand exceeded the volume's throughput limit.",
    ),
    _counter(
        "instance_performance_exceeded_iops_seconds",
        "ec2_instance_ebs_performance_exceeded_iops_us",
        "seconds",
        "Time I/O demand exceeded the EC2 instance's IOPS limit.",
    ),
    _counter(
        "instance_performance_exceeded_throughput_seconds",
        "ec2_instance_ebs_performance_exceeded_tp_us",
        "seconds",
        "Time I/O demand exceeded the EC2 instance's throughput limit.",
    ),
    Family(
        "volume_queue_length",
        "gauge",
        "I/O operations waiting to be completed, at the time of the read.",
        "operations",
        "volume_queue_length",
    ),
    Family(
        "read_io_latency_seconds",
        "histogram",
        "Latency of completed reads (bins of the device's histogram).",
        "seconds",
        "read_io_latency_histogram",
        MICROS,
        sum_field="total_read_time_us",
    ),
    Family(
        "write_io_latency_seconds",
        "histogram",
        "Latency of completed writes (bins of the device's histogram).",
        "seconds",
        "write_io_latency_histogram",
        MICROS,
        sum_field="total_write_time_us",
    ),
)
SCALARS = tuple(f for f in PAGE_FAMILIES if f.type != "histogram")
HISTOGRAMS = tuple(f for f in PAGE_FAMILIES if f.type == "histogram")

INFO_LABELS = ("volume_id", "device", "block_device_mapping", "model", "firmware", "kind", "serial")
VOLUME_INFO = Family(
    "ebs_volume",
    "info",
    "Identity of each NVMe volume read; the value is always 1.",
    labels=INFO_LABELS,
    per_volume=False,
)
DEVICE_UP = Family(
    "ebs_device_up",
    "gauge",
    "1 when the last read of the device succeeded, else 0.",
    labels=("device",),
    per_volume=False,
)
DEVICE_ERRORS = Family(
    "ebs_device_errors",
    "counter",
    "Failed reads of the device, by reason.",
    "errors",
    labels=("device", "reason"),
    per_volume=False,
)
DEVICES = Family(
    "ebs_devices",
    "gauge",
    "NVMe controllers discovered, by kind.",
    "controllers",
    labels=("kind",),
    per_volume=False,
)
COLLECT_DURATION = Family(
    "ebs_collect_duration_seconds",
    "gauge",
    "Time taken by the last collection (discovery and reads).",
    "seconds",
    labels=(),
    per_volume=False,
)
BUILD_INFO = Family(
    "ebs_exporter_build",
    "info",
    "Version of the exporter, the commit it was built from and its Python; the value is always 1.",
    labels=("version", "revision", "python_version"),
    per_volume=False,
)
# About the exporter and the devices rather than read from a page, in the order served.
EXPORTER_FAMILIES = (VOLUME_INFO, DEVICE_UP, DEVICE_ERRORS, DEVICES, COLLECT_DURATION, BUILD_INFO)
FAMILIES = PAGE_FAMILIES + EXPORTER_FAMILIES


@dataclass(frozen=True)
class LatencyBuckets:
    """Which of a device histogram's bins become buckets (--collector.latency-buckets).

    `merge` adjacent bins become one bucket: the cumulative count at every `merge`-th upper edge
    is exact, since those edges are the device's own. `merge` 1 keeps every bin; 0 keeps none,
    and the histogram is then served as a summary of its `_sum` and `_count` alone (a histogram
    without buckets is not valid exposition).
    """

    merge: int = 1

    @property
    def as_summary(self) -> bool:
        return self.merge == 0

    def kept(self, closed: int) -> range:
        """Indices, among a histogram's `closed` finite upper edges, of the edges kept."""
        if self.merge == 0:
            return range(0)
        return range(self.merge - 1, closed, self.merge)

    @classmethod
    def parse(cls, text: str) -> LatencyBuckets:
        """`all`, `coarse` (4 bins to a bucket), `none`, or a number of bins to merge (1-64)."""
        named = {"all": 1, "coarse": 4, "none": 0}
        if text in named:
            return cls(named[text])
        if text.isdigit() and 1 <= int(text) <= 64:
            return cls(int(text))
        raise ValueError("want all, coarse, none, or a number of adjacent bins to merge (1 to 64)")


ALL_BUCKETS = LatencyBuckets()


def le_label(upper_us: int) -> str:
    """A bucket's `le` value: the bin's upper bound in seconds, spelled as prometheus_client does."""
    return str(float_to_go_string(upper_us / MICROS))  # type: ignore[no-untyped-call]
