"""Writes a snapshot in the Prometheus text format (0.0.4) or OpenMetrics, directly, from metrics.py's table.

Why not prometheus_client's renderer: at 128 volumes with two 64-bin histograms (about 18,000
samples) its generate_latest costs tens of times more per scrape (`make bench` has the figures),
which under the DaemonSet's 100m CPU limit becomes wall time. Everything in a line but its number
is built once: the `le` texts once per bin layout (shared by every volume with those bins), the
name-and-labels heads once per volume. A scrape converts each distinct number of a histogram once
and joins; the text leaves here encoded, in pieces (`Renderer.chunks`) that the server sends as
they come, so that no scrape holds its whole body. `client_families.py` yields the same samples
through prometheus_client, and the parity test holds the two to the same output.
"""

from __future__ import annotations

import io
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import accumulate
from typing import TypeVar

from nvme_ebs import LatencyHistogram, PageKind

from . import metrics, native_text
from .metrics import Family
from .snapshot import DeviceHealth, Snapshot, VolumeSample
from .volumes import VolumeState

Emit = Callable[[bytes], object]
_LAYOUTS_KEPT = 64  # bin layouts remembered, whatever the devices report
_DEVICE_LABELS_KEPT = 4096


K = TypeVar("K")
V = TypeVar("V")


def _remembered(cache: dict[K, V], key: K, make: Callable[[], V], kept: int) -> V:
    """cache[key], made on a miss; a full cache starts over, so odd devices cannot grow it."""
    value = cache.get(key)
    if value is None:
        if len(cache) >= kept:
            cache.clear()
        value = cache[key] = make()
    return value


def escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else repr(value)


def _header(emit: Emit, family: Family, openmetrics: bool, kind: PageKind = PageKind.EBS, type_: str = "") -> None:
    name = family.full_name(kind)
    type_ = type_ or family.type
    if not openmetrics:  # the text format has no info type, and names a counter with its _total
        if type_ == "counter":
            name += "_total"
        elif type_ == "info":
            name, type_ = name + "_info", "gauge"
    emit(f"# HELP {name} {family.help}\n# TYPE {name} {type_}\n".encode())


class _Layout:
    """A histogram family's lines for one set of bucket bounds, less the labels and the numbers.

    `parts` holds [line head, text before the number, number] per line, ending in a newline; the
    heads (name and labels) and the numbers are left empty. Shared by every volume with the same
    bounds: the per-volume part is only the few head strings (see `_VolumeText.heads`).
    """

    __slots__ = ("bounds", "buckets", "closed", "kept", "parts")

    def __init__(self, hist: LatencyHistogram, buckets: metrics.LatencyBuckets) -> None:
        self.bounds = hist.upper_us
        closed = hist.upper_us[:-1] if hist.open_ended else hist.upper_us
        self.closed = len(closed)
        # Indices of the finite edges served; None when every one is (the common case, no copy).
        self.kept = None if buckets.merge == 1 else tuple(buckets.kept(self.closed))
        self.buckets = len(closed) if self.kept is None else len(self.kept)
        parts: list[str | None] = []
        for i in range(self.closed) if self.kept is None else self.kept:
            parts += [None, f',le="{metrics.le_label(closed[i])}"}} ', None]
        if not buckets.as_summary:
            parts += [None, ',le="+Inf"} ', None]
        parts += [None, "} ", None, None, "} ", None, "\n"]
        self.parts = parts


class _VolumeText:
    """The text of one volume that does not change between scrapes: its labels and line heads."""

    __slots__ = ("histograms", "info", "labels", "native")

    def __init__(self, state: VolumeState) -> None:
        self.labels = f'volume_id="{escape_label(state.volume_id)}",device="{escape_label(state.name)}"'
        self.native: native_text.VolumeLabels | None = None  # the labels as the C renderer takes them
        self.histograms: dict[str, tuple[_Layout, list[str]]] = {}  # by family name
        self.info: tuple[object, bytes] | None = None  # (the identity it was made from, the line)

    def heads(self, name: str, buckets: int) -> list[str]:
        """Line heads for `_Layout.parts` (`buckets` counts +Inf's): each writes the newline that
        ends the line before."""
        bucket = f"\n{name}_bucket{{{self.labels}"
        heads = [*[bucket] * buckets, f"\n{name}_count{{{self.labels}", f"\n{name}_sum{{{self.labels}"]
        heads[0] = heads[0][1:]
        return heads


class Renderer:
    """Keeps the text that repeats from scrape to scrape; one per exporter. Scrapes may share it
    from several threads: each cache step is one dict operation, and a lost entry costs a rebuild."""

    def __init__(self, buckets: metrics.LatencyBuckets = metrics.ALL_BUCKETS, native: bool = True) -> None:
        self.buckets = buckets
        # The C renderer writes the page families of pages that carry their decoded struct.
        self.native = native
        self._native_families: dict[tuple[PageKind, bool], native_text.FamilyTexts] = {}
        self._layout_texts: dict[tuple[int, ...], native_text.LayoutText] = {}
        self._layouts: dict[tuple[int, ...], _Layout] = {}
        # Dropped with the volume's state: a replaced volume never keeps its predecessor's text.
        self._volumes: weakref.WeakKeyDictionary[VolumeState, _VolumeText] = weakref.WeakKeyDictionary()
        self._device_labels: dict[str, str] = {}
        self._error_text: dict[str, tuple[Mapping[str, int], bytes]] = {}

    def chunks(
        self, snapshot: Snapshot, openmetrics: bool = False, build: Mapping[str, str] | None = None
    ) -> Iterator[bytes]:
        """The exporter's own families, encoded, in pieces: the page families (the C renderer's
        pieces of at most native_text.CHUNK_BYTES, or a block per family from Python), then one
        block with the rest."""
        texts = [self._volume_text(s.state) for s in snapshot.samples]
        for kind in PageKind:
            chosen = [(s, t) for s, t in zip(snapshot.samples, texts) if s.stats.kind is kind]
            if chosen:
                yield from self._page_families(kind, chosen, openmetrics)
        blocks: list[bytes] = []
        emit = blocks.append
        if snapshot.samples:
            _header(emit, metrics.VOLUME_INFO, openmetrics)
            emit(b"".join([self._info_line(s.state, t) for s, t in zip(snapshot.samples, texts)]))
        self._health(emit, snapshot.health, openmetrics)
        family = metrics.DEVICES
        _header(emit, family, openmetrics)
        emit("".join([f'{family.name}{{kind="{k}"}} {n}\n' for k, n in snapshot.devices_by_kind.items()]).encode())
        family = metrics.COLLECT_DURATION
        _header(emit, family, openmetrics)
        emit(f"{family.name} {snapshot.duration_seconds!r}\n".encode())
        if build is not None:
            family = metrics.BUILD_INFO
            _header(emit, family, openmetrics)
            labels = ",".join(f'{k}="{escape_label(build[k])}"' for k in family.labels)
            emit(f"{family.exposed_name()}{{{labels}}} 1\n".encode())
        yield b"".join(blocks)

    def write(
        self, out: io.BytesIO, snapshot: Snapshot, openmetrics: bool = False, build: Mapping[str, str] | None = None
    ) -> None:
        """Appends the exporter's own families to `out`, encoded."""
        for chunk in self.chunks(snapshot, openmetrics, build):
            out.write(chunk)

    def render(self, snapshot: Snapshot, openmetrics: bool = False, build: Mapping[str, str] | None = None) -> str:
        """The exporter's own families as text (process metrics come from prometheus_client's registry)."""
        return b"".join(self.chunks(snapshot, openmetrics, build)).decode()

    def _volume_text(self, state: VolumeState) -> _VolumeText:
        text = self._volumes.get(state)
        if text is None:
            text = self._volumes[state] = _VolumeText(state)
        return text

    def _page_families(
        self, kind: PageKind, chosen: Sequence[tuple[VolumeSample, _VolumeText]], openmetrics: bool
    ) -> Iterator[bytes]:
        if self.native and all(s.stats.decoded is not None for s, _ in chosen):
            labelled = [(s, t.native or self._native_labels(t)) for s, t in chosen]
            vols = native_text.volumes(labelled, self._native_layout)
            yield from native_text.chunks(self._family_texts(kind, openmetrics), vols, len(labelled))
            return
        for family in metrics.SCALARS:
            blocks: list[bytes] = []
            _header(blocks.append, family, openmetrics, kind)
            head = family.exposed_name(kind) + "{"
            field, scale = family.field, family.scale
            if scale == 1:
                lines = [f"{head}{t.labels}}} {getattr(s.stats, field)}\n" for s, t in chosen]
            else:
                lines = [f"{head}{t.labels}}} {getattr(s.stats, field) / scale!r}\n" for s, t in chosen]
            blocks.append("".join(lines).encode())
            yield b"".join(blocks)
        for family in metrics.HISTOGRAMS:
            blocks = []
            _header(blocks.append, family, openmetrics, kind, "summary" if self.buckets.as_summary else "")
            self._histogram(blocks.append, family, family.full_name(kind), chosen)
            yield b"".join(blocks)

    def _family_texts(self, kind: PageKind, openmetrics: bool) -> native_text.FamilyTexts:
        texts = self._native_families.get((kind, openmetrics))
        if texts is None:
            made = []
            for family in metrics.PAGE_FAMILIES:
                header: list[bytes] = []
                summary = family.type == "histogram" and self.buckets.as_summary
                _header(header.append, family, openmetrics, kind, "summary" if summary else "")
                slot = metrics.HISTOGRAMS.index(family) if family in metrics.HISTOGRAMS else 0
                made.append(native_text.FamilyText(family, kind, b"".join(header), slot))
            texts = self._native_families[(kind, openmetrics)] = native_text.FamilyTexts(made)
        return texts

    @staticmethod
    def _native_labels(text: _VolumeText) -> native_text.VolumeLabels:
        labels = text.native = native_text.VolumeLabels(text.labels)
        return labels

    def _native_layout(
        self, labels: native_text.VolumeLabels, slot: int, hist: LatencyHistogram
    ) -> native_text.LayoutText:
        cached = labels.layouts[slot]
        if cached is not None and (cached.bounds is hist.upper_us or cached.bounds == hist.upper_us):
            return cached
        shared = _remembered(
            self._layout_texts, hist.upper_us, lambda: native_text.LayoutText(hist, self.buckets), _LAYOUTS_KEPT
        )
        labels.layouts[slot] = shared
        return shared

    def _layout(self, text: _VolumeText, name: str, hist: LatencyHistogram) -> tuple[_Layout, list[str]]:
        cached = text.histograms.get(name)
        if cached is not None:
            layout = cached[0]
            if layout.bounds is hist.upper_us or layout.bounds == hist.upper_us:
                return cached
        shared = _remembered(self._layouts, hist.upper_us, lambda: _Layout(hist, self.buckets), _LAYOUTS_KEPT)
        served = shared.buckets + (0 if self.buckets.as_summary else 1)
        cached = text.histograms[name] = (shared, text.heads(name, served))
        return cached

    def _histogram(
        self, emit: Emit, family: Family, name: str, chosen: Sequence[tuple[VolumeSample, _VolumeText]]
    ) -> None:
        field, sum_field, scale = family.field, family.sum_field, family.scale
        for s, t in chosen:
            hist: LatencyHistogram = getattr(s.stats, field)
            layout, heads = self._layout(t, name, hist)
            cumulative = list(accumulate(s.histogram_counts[field]))
            total = cumulative[-1] if cumulative else 0
            count = str(total)
            picked = cumulative[: layout.closed] if layout.kept is None else [cumulative[i] for i in layout.kept]
            # From the first bucket that holds every I/O on, the numbers repeat: convert them once.
            full = picked.index(total) if picked and picked[-1] == total else len(picked)
            numbers = list(map(str, picked[:full]))
            numbers += [count] * (len(picked) - full)
            if not self.buckets.as_summary:
                numbers.append(count)  # +Inf
            numbers += (count, _number(getattr(s.stats, sum_field) / scale))
            parts = layout.parts.copy()
            parts[0:-1:3] = heads
            parts[2::3] = numbers
            emit("".join(parts).encode())  # type: ignore[arg-type]  # every None was replaced

    def _info_line(self, state: VolumeState, text: _VolumeText) -> bytes:
        cached = text.info
        if cached is None or cached[0] is not state.identity:
            labels = ",".join(f'{k}="{escape_label(v)}"' for k, v in state.info_labels().items())
            cached = text.info = (state.identity, f"{metrics.VOLUME_INFO.exposed_name()}{{{labels}}} 1\n".encode())
        return cached[1]

    def _device(self, name: str) -> str:
        return _remembered(self._device_labels, name, lambda: f'device="{escape_label(name)}"', _DEVICE_LABELS_KEPT)

    def _health(self, emit: Emit, health: list[DeviceHealth], openmetrics: bool) -> None:
        if health:
            family = metrics.DEVICE_UP
            _header(emit, family, openmetrics)
            emit("".join([f"{family.name}{{{self._device(h.name)}}} {int(h.up)}\n" for h in health]).encode())
        errors = [self._error_lines(h) for h in health if h.errors]
        if errors:
            _header(emit, metrics.DEVICE_ERRORS, openmetrics)
            emit(b"".join(errors))

    def _error_lines(self, health: DeviceHealth) -> bytes:
        """A device's error counter lines, rewritten only when its counts are another dict (a
        volume's state replaces its counts when one moves, see VolumeState.errors)."""
        cached = self._error_text.get(health.name)
        if cached is not None and (cached[0] is health.errors or cached[0] == health.errors):
            return cached[1]
        head = metrics.DEVICE_ERRORS.exposed_name()
        device = self._device(health.name)
        text = "".join([f'{head}{{{device},reason="{r}"}} {n}\n' for r, n in sorted(health.errors.items())]).encode()
        if len(self._error_text) >= _DEVICE_LABELS_KEPT:
            self._error_text.clear()
        self._error_text[health.name] = (health.errors, text)
        return text


def render(snapshot: Snapshot, openmetrics: bool = False, build: Mapping[str, str] | None = None) -> str:
    """One-off rendering (tests, tools): the exporter itself keeps a Renderer across scrapes."""
    return Renderer().render(snapshot, openmetrics, build)
