"""Writes a snapshot in the Prometheus text format (0.0.4) or OpenMetrics, directly.

Why not prometheus_client's renderer: at 128 volumes with two 64-bin histograms (about
18,000 samples) its generate_latest takes over 100 ms per scrape, which under the DaemonSet's
100m CPU limit is about a second of wall time. Label strings and bucket prefixes are built
once per volume here, so a scrape only formats numbers. `families.py` yields the same samples
through prometheus_client, and the parity test holds the two to the same output.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate

from nvme_ebs import LatencyHistogram, PageKind

from . import spec
from .collector import Snapshot, VolumeSample, VolumeState, escape_label


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(value)


def _header(out: list[str], name: str, kind: str, help_text: str, openmetrics: bool) -> None:
    """HELP and TYPE lines; `name` is the family name without _total / _info."""
    if kind == "counter" and not openmetrics:
        name += "_total"
    elif kind == "info" and not openmetrics:
        name, kind = name + "_info", "gauge"
    out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")


class _BucketLines:
    """Everything in a histogram's lines but the numbers, built once per volume and bin layout."""

    __slots__ = ("bounds", "count", "inf", "open_last", "prefixes", "sum")

    def __init__(self, name: str, labels: str, hist: LatencyHistogram) -> None:
        self.bounds = hist.upper_us
        self.open_last = hist.open_ended
        closed = hist.upper_us[:-1] if self.open_last else hist.upper_us
        self.prefixes = [f'{name}_bucket{{{labels},le="{spec.le_label(u)}"}} ' for u in closed]
        self.inf = f'{name}_bucket{{{labels},le="+Inf"}} '
        self.count = f"{name}_count{{{labels}}} "
        self.sum = f"{name}_sum{{{labels}}} "


def _bucket_lines(state: VolumeState, name: str, hist: LatencyHistogram) -> _BucketLines:
    cached = state.render_cache.get(name)
    if not isinstance(cached, _BucketLines) or cached.bounds != hist.upper_us:
        cached = state.render_cache[name] = _BucketLines(name, state.labels, hist)
    return cached


def _histogram(out: list[str], name: str, samples: list[VolumeSample], write: bool) -> None:
    for s in samples:
        hist = s.stats.write_io_latency_histogram if write else s.stats.read_io_latency_histogram
        counts = s.write_counts if write else s.read_counts
        time_us = s.stats.total_write_time_us if write else s.stats.total_read_time_us
        lines = _bucket_lines(s.state, name, hist)
        cumulative = list(accumulate(counts))
        total = cumulative[-1] if cumulative else 0
        out.extend([p + str(c) + "\n" for p, c in zip(lines.prefixes, cumulative)])
        out.append(f"{lines.inf}{total}\n{lines.count}{total}\n{lines.sum}{_number(time_us / spec.MICROS)}\n")


def _by_kind(samples: list[VolumeSample]) -> Iterator[tuple[str, list[VolumeSample]]]:
    for kind in PageKind:
        chosen = [s for s in samples if s.stats.kind is kind]
        if chosen:
            yield spec.PREFIX[kind], chosen


def _volume_families(out: list[str], samples: list[VolumeSample], openmetrics: bool) -> None:
    for prefix, chosen in _by_kind(samples):
        for c in spec.COUNTERS:
            name = prefix + c.suffix
            _header(out, name, "counter", c.help, openmetrics)
            total = name + "_total{"
            if c.divisor == 1:
                out.extend([f"{total}{s.state.labels}}} {getattr(s.stats, c.field)}\n" for s in chosen])
            else:
                out.extend([f"{total}{s.state.labels}}} {getattr(s.stats, c.field) / c.divisor!r}\n" for s in chosen])
        name = prefix + spec.QUEUE_LENGTH[0]
        _header(out, name, "gauge", spec.QUEUE_LENGTH[1], openmetrics)
        out.extend([f"{name}{{{s.state.labels}}} {s.stats.volume_queue_length}\n" for s in chosen])
        for (suffix, help_text), write in ((spec.READ_LATENCY, False), (spec.WRITE_LATENCY, True)):
            name = prefix + suffix
            _header(out, name, "histogram", help_text, openmetrics)
            _histogram(out, name, chosen, write)


def info_labels(state: VolumeState) -> dict[str, str]:
    identity = state.identity
    device = state.device
    # Identify's answer when there is one; sysfs (read without privilege) until then.
    return {
        "volume_id": state.volume_id,
        "device": state.name,
        "block_device_mapping": (identity.block_device_mapping if identity else None) or "",
        "model": identity.model if identity else device.model,
        "firmware": identity.firmware if identity else device.firmware,
        "kind": device.kind.value,
        "serial": state.serial,
    }


def _info_line(state: VolumeState) -> str:
    cached = state.render_cache.get("info")
    if not isinstance(cached, tuple) or cached[0] is not state.identity:
        labels = ",".join(f'{k}="{escape_label(v)}"' for k, v in info_labels(state).items())
        cached = state.render_cache["info"] = (state.identity, f"{spec.INFO[0]}_info{{{labels}}} 1\n")
    return str(cached[1])


def render(snapshot: Snapshot, openmetrics: bool = False, version: str | None = None) -> str:
    """The exporter's own families (process metrics come from prometheus_client's registry)."""
    out: list[str] = []
    _volume_families(out, snapshot.samples, openmetrics)
    if snapshot.samples:
        _header(out, spec.INFO[0], "info", spec.INFO[1], openmetrics)
        out.extend([_info_line(s.state) for s in snapshot.samples])
    if snapshot.health:
        _header(out, spec.UP[0], "gauge", spec.UP[1], openmetrics)
        out.extend([f'{spec.UP[0]}{{device="{escape_label(h.name)}"}} {int(h.up)}\n' for h in snapshot.health])
    errors = [(h.name, r, n) for h in snapshot.health for r, n in sorted(h.errors.items())]
    if errors:
        _header(out, spec.ERRORS[0], "counter", spec.ERRORS[1], openmetrics)
        out.extend([f'{spec.ERRORS[0]}_total{{device="{escape_label(d)}",reason="{r}"}} {n}\n' for d, r, n in errors])
    _header(out, spec.DEVICES[0], "gauge", spec.DEVICES[1], openmetrics)
    out.extend([f'{spec.DEVICES[0]}{{kind="{k}"}} {n}\n' for k, n in snapshot.devices_by_kind.items()])
    _header(out, spec.DURATION[0], "gauge", spec.DURATION[1], openmetrics)
    out.append(f"{spec.DURATION[0]} {snapshot.duration_seconds!r}\n")
    if version is not None:
        _header(out, spec.BUILD_INFO[0], "info", spec.BUILD_INFO[1], openmetrics)
        out.append(f'{spec.BUILD_INFO[0]}_info{{version="{escape_label(version)}"}} 1\n')
    return "".join(out)
