"""The C renderer (csrc/render.c) writes the page families byte for byte as render.py's Python lines do."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pagesource import PageSource, histogram_bins, stats_page
from test_render_parity import BUILD, _families, _registry, _snapshot

from ebs_exporter import native_text
from ebs_exporter.collector import Collector
from ebs_exporter.metrics import LatencyBuckets
from ebs_exporter.render import Renderer
from ebs_exporter.snapshot import Snapshot
from nvme_ebs import testing as pg

MODES = ["all", "coarse", "3", "64", "none"]
U64 = (1 << 64) - 1


def _both(snapshot: Snapshot, buckets: LatencyBuckets, openmetrics: bool, monkeypatch: pytest.MonkeyPatch) -> str:
    """The C renderer's text, checked to be the Python renderer's; the C renderer must have run."""
    calls = []
    real = native_text.chunks
    monkeypatch.setattr(native_text, "chunks", lambda *a: calls.append(1) or real(*a))
    native = Renderer(buckets).render(snapshot, openmetrics, BUILD)
    assert calls, "the C renderer did not run"
    python = Renderer(buckets, native=False).render(snapshot, openmetrics, BUILD)
    assert native == python
    return native


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("openmetrics", [False, True])
@pytest.mark.parametrize("num_bins", [28, 64])
def test_c_lines_are_the_python_lines(
    mode: str, openmetrics: bool, num_bins: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both page kinds, open and closed last bins, an empty histogram, a failed device.
    text = _both(_snapshot(num_bins), LatencyBuckets.parse(mode), openmetrics, monkeypatch)
    assert 'ec2_instance_store_read_ops_total{volume_id="AWS0123456789"' in text


def test_c_lines_match_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families as parse

    snapshot = _snapshot(64)
    ours = _families(parse(_both(snapshot, LatencyBuckets(), False, monkeypatch)))
    assert ours == _families(parse(generate_latest(_registry(snapshot)).decode()))


def test_wrapped_bins_add_their_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    source = PageSource()
    edges = pg.power_of_two_bounds(28)
    near_top = [(lo, hi, (1 << 32) - 1000 + i) for i, (lo, hi) in enumerate(edges)]
    source.add("nvme1", "vol0aaaaaaaaaaaaaaaa", pg.encode_stats_page({"total_read_ops": 1}, near_top, near_top))
    collector = Collector(source)
    collector.collect()
    wrapped = [(lo, hi, 10 * i) for i, (lo, hi) in enumerate(edges)]  # every read bin went past 2^32
    source.find("nvme1").page = pg.encode_stats_page({"total_read_ops": 2}, wrapped, near_top)  # type: ignore[union-attr]
    snapshot = collector.collect()
    assert snapshot.samples[0].offsets, "no bin wrapped"
    text = _both(snapshot, LatencyBuckets(), False, monkeypatch)
    total = sum(c for _, _, c in wrapped) + 28 * (1 << 32)
    assert f'ebs_read_io_latency_seconds_count{{volume_id="vol-0aaaaaaaaaaaaaaaa",device="nvme1n1"}} {total}' in text


# Numbers around every boundary the C code has: 10^15 (its exact-decimal path), 2^53, 2^64.
_EDGES = [0, 1, 9, 10, 99, 100, 999_999, 1_000_000, 10**15 - 1, 10**15, 2**53 - 1, 2**53, 2**53 + 1, U64 - 1, U64]
_values = st.one_of(st.sampled_from(_EDGES), st.integers(0, 10**7), st.integers(0, U64))


@settings(max_examples=300, deadline=None)
@given(counters=st.lists(_values, min_size=len(pg.COUNTER_FIELDS), max_size=len(pg.COUNTER_FIELDS)))
def test_every_number_is_spelled_as_python_spells_it(counters: list[int]) -> None:
    source = PageSource()
    bins = [(lo, hi, c % (1 << 32)) for (lo, hi, _), c in zip(histogram_bins(28), counters * 3)]
    page = pg.encode_stats_page(dict(zip(pg.COUNTER_FIELDS, counters)), bins, bins)
    source.add("nvme1", "vol0bbbbbbbbbbbbbbbb", page)
    snapshot = Collector(source).collect()
    native = Renderer().render(snapshot)
    assert native == Renderer(native=False).render(snapshot)


@pytest.mark.parametrize("size", [1, 100, 4096, 70_000])
def test_the_text_in_pieces_is_the_text_whole(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = _snapshot(64)
    whole = Renderer().render(snapshot, False, BUILD).encode()
    real = native_text.chunks
    pieces: list[bytes] = []

    def small(*args: object) -> Iterator[bytes]:
        for piece in real(*args, size=size):  # type: ignore[arg-type]
            pieces.append(piece)
            yield piece

    monkeypatch.setattr(native_text, "chunks", small)
    assert b"".join(Renderer().chunks(snapshot, False, BUILD)) == whole
    assert len(pieces) > 1
    # Whole pieces only: a histogram's volume block is larger than 4 kB and is never cut.
    if size == 4096:
        assert max(map(len, pieces)) > size
    if size > 64 * 140:  # the largest piece, a 64-bin histogram's lines of one volume, fits
        assert max(map(len, pieces)) <= size and all(p.endswith(b"\n") for p in pieces)


def test_a_page_built_in_python_is_rendered_by_python(monkeypatch: pytest.MonkeyPatch) -> None:
    source = PageSource()
    source.add("nvme1", "vol0cccccccccccccccc", stats_page(2))
    sample = Collector(source).collect().samples[0]
    assert sample.stats.decoded is not None
    # An EbsStats made by hand has no decoded struct: its lines are Python's.
    copied = replace(sample.stats)
    assert copied == sample.stats and copied.decoded is None
    bare = Snapshot([replace(sample, stats=copied)], [], {}, 0.0)
    monkeypatch.setattr(native_text, "chunks", None)
    assert 'ebs_read_ops_total{volume_id="vol-0cccccccccccccccc"' in Renderer().render(bare)


def test_the_exporter_sets_malloc_unless_the_environment_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from ebs_exporter import main
    from nvme_ebs import _native

    assert _native.tune_malloc(main.MALLOC_ARENAS, main.MALLOC_MMAP_THRESHOLD)  # glibc took both
    asked: list[tuple[int, int]] = []
    monkeypatch.setattr(_native, "tune_malloc", lambda *a: asked.append(a) or True)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    main.tune_malloc()
    assert asked == [(2, 256 * 1024)]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")  # the operator's choice stands
    main.tune_malloc()
    assert len(asked) == 1


def test_the_exporter_keeps_what_it_loaded_out_of_the_collectors_sight() -> None:
    import gc

    from ebs_exporter import main

    before = gc.get_threshold()
    try:
        main.tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (main.GC_YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
