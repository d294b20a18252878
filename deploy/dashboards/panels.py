"""The views of the EBS volumes dashboards, once, for Grafana and for the OpenShift console.

Every selector filters with the dashboard variables: $node, $volume and, through the shipped
recording rule ebs_volume_pvc_info (kube-state-metrics), $namespace and $pvc. The percentages
are the PrometheusRule's 5-minute recordings; everything else is computed at query time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NODE = 'node=~"$node"'
VOLUME = f'{NODE}, volume_id=~"$volume"'
CLAIM = 'namespace=~"$namespace", persistentvolumeclaim=~"$pvc", volume_id=~"$volume"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # timeseries, heatmap, table or stat
    unit: str
    description: str
    queries: tuple[Query, ...]
    width: int = 12  # of 24 columns


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    grafana_query: str  # label_values(selector, label) or query_result(expression)
    console_query: str  # label_values(expression, label): the console counts by the label
    regex: str = ""  # for query_result: the capture group is the value


def _exceeded(scope: str, limit: str, what: str) -> Panel:
    record = f"ebs_{scope}_performance_exceeded_{limit}_percent"
    if scope == "volume":
        query = Query(f"{record}{{{VOLUME}}}", "{{node}} {{volume_id}}")
    else:  # the instance's limit is the node's: one line per node
        query = Query(f"max by (node) ({record}{{{NODE}}})", "{{node}}")
    return Panel(
        f"{what} limit exceeded",
        "timeseries",
        "percent",
        f"Share of wall-clock time (5-minute window) I/O was held back by the {what[0].lower() + what[1:]} limit.",
        (query,),
        width=6,
    )


def _per_volume(counter: str) -> str:
    return f"sum by (node, volume_id) (rate({counter}{{{VOLUME}}}[$__rate_interval]))"


def _read_write(
    template: str,  # OP stands for read or write
    unit: str,
    title: str,
    description: str,
) -> Panel:
    queries = tuple(Query(template.replace("OP", op), f"{{{{volume_id}}}} {op}") for op in ("read", "write"))
    return Panel(title, "timeseries", unit, description, queries)


def _average_latency() -> Panel:
    queries = tuple(
        Query(
            f"{_per_volume(f'ebs_{op}_time_seconds_total')} / {_per_volume(f'ebs_{op}_ops_total')}",
            f"{{{{volume_id}}}} {op}",
        )
        for op in ("read", "write")
    )
    return Panel("Average latency", "timeseries", "s", "Total I/O time over I/O operations completed.", queries)


def _quantiles(op: str) -> Panel:
    buckets = f"sum by (node, volume_id, le) (rate(ebs_{op}_io_latency_seconds_bucket{{{VOLUME}}}[$__rate_interval]))"
    queries = tuple(
        Query(f"histogram_quantile({q}, {buckets})", f"{{{{volume_id}}}} p{round(q * 100)}") for q in (0.5, 0.9, 0.99)
    )
    return Panel(
        f"{op.capitalize()} latency percentiles",
        "timeseries",
        "s",
        f"p50, p90 and p99 of {op} latency, from the device's own latency histogram.",
        queries,
    )


def _heatmap(op: str) -> Panel:
    expr = f"sum by (le) (increase(ebs_{op}_io_latency_seconds_bucket{{{VOLUME}}}[$__rate_interval]))"
    return Panel(
        f"{op.capitalize()} latency heatmap",
        "heatmap",
        "s",
        f"Completed {op}s per latency bucket of the selected volumes.",
        (Query(expr, "{{le}}"),),
    )


def _by_claim(limit: str) -> Panel:
    return Panel(
        f"Volume {limit} limit exceeded, by claim",
        "timeseries",
        "percent",
        f"The volume {limit} percentage per PersistentVolumeClaim (EBS CSI volumes only).",
        (
            Query(
                f"ebs_volume_performance_exceeded_{limit}_percent:by_pvc{{{CLAIM}}}",
                "{{namespace}}/{{persistentvolumeclaim}}",
            ),
        ),
    )


def _instance_store(counter: str, title: str, unit: str, scale: str = "") -> Panel:
    expr = f"{scale}sum by (node, device) (rate(ec2_instance_store_{counter}{{{NODE}}}[$__rate_interval]))"
    return Panel(
        title, "timeseries", unit, f"Instance-store volumes: {title.lower()}.", (Query(expr, "{{node}} {{device}}"),), 8
    )


VARIABLES = (
    Variable(
        "node",
        "Node",
        "label_values(ebs_volume_info, node)",
        "label_values(ebs_volume_info, node)",
    ),
    Variable(
        "namespace",
        "Namespace",
        "label_values(ebs_volume_pvc_info, namespace)",
        "label_values(ebs_volume_pvc_info, namespace)",
    ),
    Variable(
        "pvc",
        "PersistentVolumeClaim",
        'label_values(ebs_volume_pvc_info{namespace=~"$namespace"}, persistentvolumeclaim)',
        'label_values(ebs_volume_pvc_info{namespace=~"$namespace"}, persistentvolumeclaim)',
    ),
    # The EBS volumes of the chosen nodes, less those claimed outside the chosen namespaces and
    # claims: volumes without a claim (root volumes, static attachments) stay listed.
    Variable(
        "volume",
        "Volume",
        'query_result(max by (volume_id) (ebs_volume_info{node=~"$node", kind="ebs"})'
        ' unless on (volume_id) ebs_volume_pvc_info{namespace!~"$namespace"}'
        ' unless on (volume_id) ebs_volume_pvc_info{persistentvolumeclaim!~"$pvc"})',
        'label_values(ebs_volume_info{node=~"$node", kind="ebs"}'
        ' unless on (volume_id) ebs_volume_pvc_info{namespace!~"$namespace"}'
        ' unless on (volume_id) ebs_volume_pvc_info{persistentvolumeclaim!~"$pvc"}, volume_id)',
        regex='/volume_id="([^"]+)"/',
    ),
)

ROWS = (
    Row(
        "Time held back by a limit",
        (
            _exceeded("volume", "iops", "Volume IOPS"),
            _exceeded("volume", "throughput", "Volume throughput"),
            _exceeded("instance", "iops", "Instance IOPS"),
            _exceeded("instance", "throughput", "Instance throughput"),
        ),
    ),
    Row(
        "I/O",
        (
            _read_write(
                _per_volume("ebs_OP_ops_total"),
                "iops",
                "IOPS",
                "Completed read and write operations per second.",
            ),
            _read_write(
                _per_volume("ebs_OP_bytes_total"),
                "binBps",
                "Throughput",
                "Bytes read and written per second.",
            ),
            _average_latency(),
            Panel(
                "Queue length",
                "timeseries",
                "short",
                "I/O operations waiting to be completed, at the time of each read.",
                (Query(f"ebs_volume_queue_length{{{VOLUME}}}", "{{node}} {{volume_id}}"),),
            ),
        ),
    ),
    Row("Latency", (_quantiles("read"), _quantiles("write"), _heatmap("read"), _heatmap("write"))),
    Row(
        "Claims",
        (
            Panel(
                "Volumes and their claims",
                "table",
                "short",
                "EBS CSI volumes of the selection with their PersistentVolume and claim (kube-state-metrics).",
                (
                    Query(
                        f'max by (node, volume_id, device) (ebs_volume_info{{{VOLUME}, kind="ebs"}})'
                        " * on (volume_id) group_left (namespace, persistentvolumeclaim, persistentvolume)"
                        ' ebs_volume_pvc_info{namespace=~"$namespace", persistentvolumeclaim=~"$pvc"}',
                        "",
                    ),
                ),
                width=24,
            ),
            _by_claim("iops"),
            _by_claim("throughput"),
        ),
    ),
    Row(
        "Devices",
        (
            Panel(
                "Devices failing",
                "stat",
                "short",
                "NVMe devices whose last read failed (ebs_device_up == 0).",
                (Query(f"sum(1 - ebs_device_up{{{NODE}}})", ""),),
                width=6,
            ),
            Panel(
                "NVMe devices by kind",
                "stat",
                "short",
                "Controllers discovered: EBS, instance store and others.",
                (Query(f"sum by (kind) (ebs_devices{{{NODE}}})", "{{kind}}"),),
                width=6,
            ),
            Panel(
                "Read errors by reason",
                "timeseries",
                "short",
                "Failed reads of a device per second, by node, device and reason.",
                (
                    Query(
                        f"sum by (node, device, reason) (rate(ebs_device_errors_total{{{NODE}}}[$__rate_interval]))",
                        "{{node}} {{device}} {{reason}}",
                    ),
                ),
            ),
            Panel(
                "Device read status",
                "timeseries",
                "short",
                "1 when the last read of the device succeeded, else 0.",
                (Query(f"ebs_device_up{{{NODE}}}", "{{node}} {{device}}"),),
            ),
            Panel(
                "Collection time",
                "timeseries",
                "s",
                "Time the exporter took to discover and read the node's devices.",
                (Query(f"ebs_collect_duration_seconds{{{NODE}}}", "{{node}}"),),
            ),
        ),
    ),
    Row(
        "Instance store",
        (
            _instance_store("read_ops_total", "Instance-store read IOPS", "iops"),
            _instance_store("write_ops_total", "Instance-store write IOPS", "iops"),
            _instance_store(
                "volume_performance_exceeded_iops_seconds_total",
                "Instance-store IOPS limit exceeded",
                "percent",
                "100 * ",
            ),
        ),
    ),
)
