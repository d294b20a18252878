"""The compiled decoders (nvme_ebs.parse_log_page / parse_identify) on buffers alone.

Pages come from nvme_ebs.testing and, so that the encoder and the decoder cannot share a
mistake, from struct calls at the literal offsets of the reference table.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nvme_ebs
from nvme_ebs import testing

U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
MAGIC_EBS = 0x3C23B510
MAGIC_INSTANCE_STORE = 0xEC2C0D7E

# Byte offset of each counter in the page, as the reference table lists them.
COUNTER_OFFSETS = {
    "total_read_ops": 8,
    "total_write_ops": 16,
    "total_read_bytes": 24,
    "total_write_bytes": 32,
    "total_read_time_us": 40,
    "total_write_time_us": 48,
    "ebs_volume_performance_exceeded_iops_us": 56,
    "ebs_volume_performance_exceeded_tp_us": 64,
    "ec2_instance_ebs_performance_exceeded_iops_us": 72,
    "ec2_instance_ebs_performance_exceeded_tp_us": 80,
    "volume_queue_length": 88,
}
HISTOGRAM_OFFSETS = {"read": 512, "write": 2056}
HISTOGRAM_ATTRS = {"read": "read_io_latency_histogram", "write": "write_io_latency_histogram"}

Bin = tuple[int, int, int]


def aws_bins(num_bins: int = 28) -> list[Bin]:
    """Power-of-two edges with an open last bin, counts 100, 101, ..."""
    return [(lo, hi, 100 + i) for i, (lo, hi) in enumerate(testing.power_of_two_bounds(num_bins))]


def hand_page(
    counters: dict[str, int],
    read_bins: Sequence[Bin],
    write_bins: Sequence[Bin],
    *,
    magic: int = MAGIC_EBS,
    version: int = 0,
    reserved: int = 0xFFFFFFFF,
) -> bytes:
    """A statistics page written field by field at the table's offsets, without nvme_ebs.testing.

    Each bin's reserved u32 is set (to all ones by default): the decoder must not read it.
    """
    page = bytearray(4096)
    struct.pack_into("<I", page, 0, magic)
    struct.pack_into("<I", page, 4, version)
    for name, offset in COUNTER_OFFSETS.items():
        struct.pack_into("<Q", page, offset, counters.get(name, 0))
    for base, bins in ((512, read_bins), (2056, write_bins)):
        struct.pack_into("<Q", page, base, len(bins))
        for i, (lower, upper, count) in enumerate(bins):
            bin_at = base + 8 + 24 * i
            struct.pack_into("<Q", page, bin_at, lower)
            struct.pack_into("<Q", page, bin_at + 8, upper)
            struct.pack_into("<I", page, bin_at + 16, count)
            struct.pack_into("<I", page, bin_at + 20, reserved)
    return bytes(page)


def bins_of(hist: nvme_ebs.LatencyHistogram) -> list[Bin]:
    return [(b.lower_us, b.upper_us, b.count) for b in hist]


def decode_error(page: bytes, device: str | None = None) -> nvme_ebs.PageFormatError:
    with pytest.raises(nvme_ebs.PageFormatError) as info:
        nvme_ebs.parse_log_page(page, device)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, nvme_ebs.NvmeEbsError)
    return info.value


# --- counters and header -------------------------------------------------------------------


def test_hand_built_page_every_counter_at_its_offset() -> None:
    # Distinct values with every byte non-zero and different: a counter read from a wrong
    # offset, with the wrong width or the wrong byte order gives another number.
    counters = {name: 0x0102030405060708 * (k + 1) + k for k, name in enumerate(COUNTER_OFFSETS)}
    read = [(0, 1, 7), (1, 2, 8), (2, 4, 9), (4, 0, 10)]
    write = [(0, 10, 70), (10, 100, 80), (250, 1000, 90)]
    stats = nvme_ebs.parse_log_page(hand_page(counters, read, write, version=3))
    assert stats.kind is nvme_ebs.PageKind.EBS
    assert stats.version == 3
    for name, value in counters.items():
        assert getattr(stats, name) == value, name
    assert bins_of(stats.read_io_latency_histogram) == read
    assert bins_of(stats.write_io_latency_histogram) == write
    assert stats.read_io_latency_histogram.open_ended
    assert not stats.write_io_latency_histogram.open_ended


def test_each_counter_alone_lands_in_its_own_field() -> None:
    for name, offset in COUNTER_OFFSETS.items():
        page = bytearray(hand_page({}, [], []))
        struct.pack_into("<Q", page, offset, 0xA5A5_0000_0000_0001)
        stats = nvme_ebs.parse_log_page(bytes(page))
        for other in COUNTER_OFFSETS:
            assert getattr(stats, other) == (0xA5A5_0000_0000_0001 if other == name else 0), (name, other)


def test_encoder_and_hand_built_page_agree() -> None:
    counters = {name: 1000 + k for k, name in enumerate(COUNTER_OFFSETS)}
    assert set(counters) == set(testing.COUNTER_FIELDS)
    bins = aws_bins()
    assert testing.encode_stats_page(counters, bins, bins[:5]) == hand_page(counters, bins, bins[:5], reserved=0)


def test_counters_at_u64_max() -> None:
    counters = dict.fromkeys(testing.COUNTER_FIELDS, U64_MAX)
    stats = nvme_ebs.parse_log_page(testing.encode_stats_page(counters))
    for name in testing.COUNTER_FIELDS:
        assert getattr(stats, name) == U64_MAX


def test_bin_counts_at_u32_max() -> None:
    bins = [(0, 1, U32_MAX), (1, 2, U32_MAX - 1), (2, U64_MAX, U32_MAX)]
    stats = nvme_ebs.parse_log_page(hand_page({}, bins, bins))
    assert stats.read_io_latency_histogram.counts == (U32_MAX, U32_MAX - 1, U32_MAX)
    assert stats.write_io_latency_histogram.counts == (U32_MAX, U32_MAX - 1, U32_MAX)


@pytest.mark.parametrize("version", [1, 2, 0xFFFFFFFF])
def test_non_zero_version_is_reported_not_rejected(version: int) -> None:
    stats = nvme_ebs.parse_log_page(testing.encode_stats_page({"total_read_ops": 9}, version=version))
    assert stats.version == version
    assert stats.total_read_ops == 9


def test_instance_store_magic() -> None:
    page = hand_page({"total_write_ops": 42}, aws_bins(), aws_bins(), magic=MAGIC_INSTANCE_STORE)
    stats = nvme_ebs.parse_log_page(page)
    assert stats.kind is nvme_ebs.PageKind.INSTANCE_STORE
    assert stats.total_write_ops == 42


def test_magic_is_compared_on_32_bits_only() -> None:
    # The u32 at offset 4 is `version`; the magic check must not look at it.
    page = hand_page({}, [], [], version=0xFFFFFFFF)
    assert nvme_ebs.parse_log_page(page).kind is nvme_ebs.PageKind.EBS


def test_page_longer_than_4096_is_accepted_and_the_tail_ignored() -> None:
    base = testing.encode_stats_page({"total_read_ops": 5}, aws_bins(), aws_bins())
    longer = base + b"\xff" * 4096
    assert nvme_ebs.parse_log_page(longer) == nvme_ebs.parse_log_page(base)


def test_reserved_areas_are_ignored() -> None:
    base = hand_page({"total_read_ops": 5}, aws_bins(), aws_bins(10))
    page = bytearray(base)
    counters_end = max(COUNTER_OFFSETS.values()) + 8
    page[counters_end:512] = b"\xee" * (512 - counters_end)
    page[3600:4096] = b"\xee" * 496
    # bins past num_bins are not looked at either
    page[2056 + 8 + 24 * 10 : 3600] = b"\xee" * (3600 - 2056 - 8 - 24 * 10)
    assert nvme_ebs.parse_log_page(bytes(page)) == nvme_ebs.parse_log_page(base)


# --- histograms ----------------------------------------------------------------------------


@pytest.mark.parametrize("num_bins", [0, 1, 28, 64])
def test_histogram_sizes(num_bins: int) -> None:
    bins = aws_bins(num_bins)
    stats = nvme_ebs.parse_log_page(testing.encode_stats_page({}, bins, bins[: num_bins // 2]))
    assert bins_of(stats.read_io_latency_histogram) == bins
    assert bins_of(stats.write_io_latency_histogram) == bins[: num_bins // 2]
    assert len(stats.read_io_latency_histogram) == num_bins


def test_aws_28_bins_edges() -> None:
    hist = nvme_ebs.parse_log_page(testing.encode_stats_page({}, aws_bins())).read_io_latency_histogram
    assert len(hist) == 28
    assert hist[0] == nvme_ebs.LatencyBin(0, 1, 100)
    assert hist[1] == nvme_ebs.LatencyBin(1, 2, 101)
    assert hist[26] == nvme_ebs.LatencyBin(33554432, 67108864, 126)
    assert hist[27] == nvme_ebs.LatencyBin(67108864, 0, 127)
    assert hist.open_ended


def test_empty_histogram_is_not_open_ended() -> None:
    hist = nvme_ebs.parse_log_page(testing.encode_stats_page()).read_io_latency_histogram
    assert len(hist) == 0
    assert list(hist) == []
    assert not hist.open_ended


@pytest.mark.parametrize("which", ["read", "write"])
def test_num_bins_65_rejected(which: str) -> None:
    good = aws_bins()
    kwargs = {f"{which}_num_bins": 65}
    err = decode_error(testing.encode_stats_page({}, good, good, **kwargs), "/dev/nvme1n1")
    assert err.check == "num_bins"
    assert f"{which} latency histogram" in str(err)
    assert "65" in str(err)
    assert str(err).startswith("/dev/nvme1n1: ")
    assert err.device == "/dev/nvme1n1"


def test_num_bins_huge_rejected_without_reading_past_the_page() -> None:
    page = bytearray(testing.encode_stats_page())
    struct.pack_into("<Q", page, 2056, U64_MAX)
    err = decode_error(bytes(page))
    assert err.check == "num_bins"
    assert "write latency histogram" in str(err)


@pytest.mark.parametrize("magic", [0, 0xDEADBEEF, 0x3C23B511, 0x10B5233C])
def test_bad_magic(magic: int) -> None:
    err = decode_error(testing.encode_stats_page(magic=magic))
    assert err.check == "magic"
    assert f"{magic:#010x}" in str(err)
    assert err.device is None


@pytest.mark.parametrize("length", [0, 1, 95, 4095])
def test_short_buffer(length: int) -> None:
    err = decode_error(testing.encode_stats_page({}, aws_bins())[:length], "dump.bin")
    assert err.check == "short"
    assert "4096" in str(err)
    assert "dump.bin" in str(err)


def test_short_identify_buffer() -> None:
    with pytest.raises(nvme_ebs.PageFormatError) as info:
        nvme_ebs.parse_identify(testing.encode_identify("vol0123456789abcdef0")[:4095])
    assert info.value.check == "short"


@pytest.mark.parametrize("which", ["read", "write"])
@pytest.mark.parametrize("upper", [4, 3])  # lower == upper and lower > upper
def test_bin_range_on_a_middle_bin(which: str, upper: int) -> None:
    bins = aws_bins()
    bins[3] = (4, upper, 1)  # was [4, 8)
    read, write = (bins, aws_bins()) if which == "read" else (aws_bins(), bins)
    err = decode_error(hand_page({}, read, write))
    assert err.check == "bin_range"
    assert f"{which} latency histogram" in str(err)
    assert "bin 3" in str(err)


@pytest.mark.parametrize("which", ["read", "write"])
def test_bin_order(which: str) -> None:
    bins = aws_bins()
    bins[5] = (15, 32, 1)  # bin 4 is [8, 16): bin 5 starts inside it
    read, write = (bins, aws_bins()) if which == "read" else (aws_bins(), bins)
    err = decode_error(hand_page({}, read, write))
    assert err.check == "bin_order"
    assert f"{which} latency histogram" in str(err)
    assert "bin 5" in str(err)
    assert "15" in str(err) and "16" in str(err)


def test_gaps_between_bins_are_allowed() -> None:
    bins = [(0, 10, 1), (20, 30, 2), (1000, 2000, 3)]
    stats = nvme_ebs.parse_log_page(hand_page({}, bins, bins))
    assert bins_of(stats.read_io_latency_histogram) == bins


@pytest.mark.parametrize("upper", [0, U64_MAX])
def test_open_ended_last_bin_accepted(upper: int) -> None:
    bins = [(0, 1, 1), (1, 2, 2), (2, upper, 3)]
    stats = nvme_ebs.parse_log_page(hand_page({}, bins, bins))
    for hist in (stats.read_io_latency_histogram, stats.write_io_latency_histogram):
        assert hist[-1] == nvme_ebs.LatencyBin(2, upper, 3)
        assert hist.open_ended


def test_single_open_bin_covering_everything() -> None:
    stats = nvme_ebs.parse_log_page(hand_page({}, [(0, 0, 5)], [(U64_MAX, U64_MAX, 6)]))
    assert bins_of(stats.read_io_latency_histogram) == [(0, 0, 5)]
    assert bins_of(stats.write_io_latency_histogram) == [(U64_MAX, U64_MAX, 6)]


@pytest.mark.parametrize("which", ["read", "write"])
@pytest.mark.parametrize(("lower", "upper"), [(2, 1), (2, 2), (U64_MAX - 1, U64_MAX - 1), (U64_MAX, 1)])
def test_last_bin_lower_not_below_an_upper_that_is_not_open_rejected(which: str, lower: int, upper: int) -> None:
    bins = [(0, 1, 1), (1, 2, 2), (lower, upper, 3)]
    read, write = (bins, aws_bins()) if which == "read" else (aws_bins(), bins)
    err = decode_error(hand_page({}, read, write))
    assert err.check == "bin_range"
    assert "bin 2" in str(err)
    assert f"{which} latency histogram" in str(err)


def test_open_upper_only_allowed_on_the_last_bin() -> None:
    err = decode_error(hand_page({}, [(0, 1, 1), (1, 0, 2), (2, 4, 3)], []))
    assert err.check == "bin_range"
    assert "bin 1" in str(err)


def test_open_last_bin_must_still_start_after_the_previous_one() -> None:
    err = decode_error(hand_page({}, [(0, 10, 1), (5, 0, 2)], []))
    assert err.check == "bin_order"
    assert "bin 1" in str(err)


# --- LatencyHistogram as a Sequence ----------------------------------------------------------


def test_latency_histogram_is_a_sequence_of_bins() -> None:
    hist = nvme_ebs.parse_log_page(testing.encode_stats_page({}, aws_bins(5))).read_io_latency_histogram
    assert isinstance(hist, Sequence)
    expected = [
        nvme_ebs.LatencyBin(0, 1, 100),
        nvme_ebs.LatencyBin(1, 2, 101),
        nvme_ebs.LatencyBin(2, 4, 102),
        nvme_ebs.LatencyBin(4, 8, 103),
        nvme_ebs.LatencyBin(8, 0, 104),
    ]
    assert len(hist) == 5
    assert list(hist) == expected
    assert [hist[i] for i in range(5)] == expected
    assert hist[-1] == expected[-1]
    assert hist[-5] == expected[0]
    assert list(hist[1:3]) == expected[1:3]
    assert list(hist[::-1]) == expected[::-1]
    assert list(hist[::2]) == expected[::2]
    assert list(hist[10:]) == []
    assert list(reversed(hist)) == expected[::-1]
    assert nvme_ebs.LatencyBin(2, 4, 102) in hist
    assert nvme_ebs.LatencyBin(2, 4, 999) not in hist
    assert hist.index(nvme_ebs.LatencyBin(4, 8, 103)) == 3
    assert hist.lower_us == (0, 1, 2, 4, 8)
    assert hist.upper_us == (1, 2, 4, 8, 0)
    assert hist.counts == (100, 101, 102, 103, 104)
    with pytest.raises(IndexError):
        hist[5]
    with pytest.raises(IndexError):
        hist[-6]


# --- identify --------------------------------------------------------------------------------


def hand_identify(serial: bytes, model: bytes, firmware: bytes, mapping: bytes, vid: int = 0x1D0F) -> bytes:
    page = bytearray(4096)
    struct.pack_into("<H", page, 0, vid)
    struct.pack_into("<H", page, 2, 0x1D0F)
    page[4 : 4 + len(serial)] = serial
    page[24 : 24 + len(model)] = model
    page[64 : 64 + len(firmware)] = firmware
    page[3072 : 3072 + len(mapping)] = mapping
    page[3104:3200] = b"Z" * 96  # vendor bytes after the mapping field must not leak into it
    return bytes(page)


def test_identify_hand_built() -> None:
    page = hand_identify(
        b"vol0123456789abcdef0",
        b"Amazon Elastic Block Store".ljust(40, b" "),
        b"2.0     ",
        b"/dev/xvdf".ljust(32, b" "),
        vid=0x1D0F,
    )
    ident = nvme_ebs.parse_identify(page)
    assert ident.vid == 0x1D0F
    assert ident.ssvid == 0x1D0F
    assert ident.serial == "vol0123456789abcdef0"
    assert ident.model == "Amazon Elastic Block Store"
    assert ident.firmware == "2.0"
    assert ident.block_device_mapping == "xvdf"
    assert ident.volume_id == "vol-0123456789abcdef0"
    assert ident.kind is nvme_ebs.VolumeKind.EBS


def test_identify_full_width_fields_do_not_run_into_each_other() -> None:
    page = hand_identify(b"S" * 20, b"M" * 40, b"F" * 8, b"D" * 32, vid=0x144D)
    ident = nvme_ebs.parse_identify(page)
    assert ident.vid == 0x144D
    assert ident.serial == "S" * 20
    assert ident.model == "M" * 40
    assert ident.firmware == "F" * 8
    assert ident.block_device_mapping == "D" * 32


def test_identify_nul_padded_mapping() -> None:
    page = hand_identify(b"vol0123456789abcdef0", b"Amazon Elastic Block Store", b"1.0", b"sdf" + b"\0" * 29)
    assert nvme_ebs.parse_identify(page).block_device_mapping == "sdf"


@pytest.mark.parametrize("mapping", [b"", b" " * 32, b"\0" * 32, b"/dev/".ljust(32, b" ")])
def test_identify_empty_mapping_is_none(mapping: bytes) -> None:
    page = hand_identify(b"vol0123456789abcdef0", b"Amazon Elastic Block Store", b"1.0", mapping)
    assert nvme_ebs.parse_identify(page).block_device_mapping is None


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [("sdf", "sdf"), ("/dev/sdf", "sdf"), ("xvdba", "xvdba"), ("/dev/xvdf", "xvdf"), ("", None)],
)
def test_identify_mapping_through_the_encoder(mapping: str, expected: str | None) -> None:
    ident = nvme_ebs.parse_identify(testing.encode_identify("vol0123456789abcdef0", block_device_mapping=mapping))
    assert ident.block_device_mapping == expected


@pytest.mark.parametrize(
    ("serial", "volume_id"),
    [
        ("vol0123456789abcdef0", "vol-0123456789abcdef0"),
        ("vol-0123456789abcdef", "vol-0123456789abcdef"),
        ("vol0abc", "vol-0abc"),
        ("AWS1234567890ABCDEF", None),
        ("S6B0NL0T123456", None),
        ("vol", None),
        ("", None),
    ],
)
def test_identify_volume_id(serial: str, volume_id: str | None) -> None:
    ident = nvme_ebs.parse_identify(testing.encode_identify(serial))
    assert ident.serial == serial
    assert ident.volume_id == volume_id
    assert nvme_ebs.volume_id_from_serial(serial) == volume_id


def test_identify_instance_store_and_other_models() -> None:
    store = nvme_ebs.parse_identify(testing.encode_identify("AWS1234567890ABCDEF", "Amazon EC2 NVMe Instance Storage"))
    assert store.kind is nvme_ebs.VolumeKind.INSTANCE_STORE
    other = nvme_ebs.parse_identify(testing.encode_identify("S6B0", "Samsung SSD 980 PRO 1TB", vid=0x144D))
    assert other.kind is nvme_ebs.VolumeKind.OTHER
    assert other.vid == 0x144D


def test_identify_longer_page_accepted() -> None:
    page = testing.encode_identify("vol0123456789abcdef0", firmware="1.5", block_device_mapping="sdb")
    assert nvme_ebs.parse_identify(page + b"x" * 100) == nvme_ebs.parse_identify(page)


def test_identify_non_ascii_does_not_raise() -> None:
    page = hand_identify(b"vol\xff\xfe", b"Amazon\x80", b"\xc3\xa9", b"sd\xff")
    ident = nvme_ebs.parse_identify(page)
    assert ident.serial.startswith("vol")
    assert ident.model.startswith("Amazon")


# --- properties ------------------------------------------------------------------------------

u64 = st.integers(0, U64_MAX)
u32 = st.integers(0, U32_MAX)


@st.composite
def valid_bins(draw: st.DrawFn, max_bins: int = 64) -> list[Bin]:
    """Ordered bins: lower < upper <= next lower; the last one may be open-ended."""
    n = draw(st.integers(0, max_bins))
    bins: list[Bin] = []
    edge = 0
    for _ in range(n):
        # 64 bins of at most 2 * 2**56 each stay below 2**64
        lower = edge + draw(st.integers(0, 1 << 56))
        upper = lower + draw(st.integers(1, 1 << 56))
        bins.append((lower, upper, draw(u32)))
        edge = upper
    open_last = draw(st.booleans())
    if bins and open_last:
        lower, _, count = bins[-1]
        bins[-1] = (lower, draw(st.sampled_from([0, U64_MAX])), count)
    return bins


counters_strategy = st.fixed_dictionaries({name: u64 for name in testing.COUNTER_FIELDS})


@st.composite
def noisy_pages(draw: st.DrawFn) -> bytes:
    """Arbitrary bytes, often behind a real magic so the histogram checks get exercised."""
    if draw(st.booleans()):
        data = draw(st.binary(min_size=4096, max_size=5000))
    else:
        data = draw(st.binary(min_size=0, max_size=4095))
    head = draw(st.sampled_from([b"", struct.pack("<I", MAGIC_EBS), struct.pack("<I", MAGIC_INSTANCE_STORE)]))
    if head and len(data) >= 4:
        data = head + data[4:]
    if len(data) >= 4096 and draw(st.booleans()):
        # small bin counts make it likely that the bin checks, not num_bins, decide
        page = bytearray(data)
        struct.pack_into("<Q", page, 512, draw(st.sampled_from([0, 1]) | st.integers(0, 66)))
        struct.pack_into("<Q", page, 2056, draw(st.sampled_from([0, 1]) | st.integers(0, 66)))
        if draw(st.booleans()):  # a first bin [0, 1) gives the order check something to fail
            struct.pack_into("<QQ", page, 520, 0, 1)
        data = bytes(page)
    return data


@settings(max_examples=400, deadline=None)
@given(noisy_pages())
def test_arbitrary_bytes_decode_or_raise_page_format_error(data: bytes) -> None:
    try:
        stats = nvme_ebs.parse_log_page(data)
    except nvme_ebs.PageFormatError as e:
        assert e.check in {"short", "magic", "num_bins", "bin_range", "bin_order"}
        assert isinstance(e, ValueError)
        return
    assert len(data) >= 4096
    assert stats.kind in (nvme_ebs.PageKind.EBS, nvme_ebs.PageKind.INSTANCE_STORE)
    for hist in (stats.read_io_latency_histogram, stats.write_io_latency_histogram):
        assert 0 <= len(hist) <= 64
        for i in range(1, len(hist)):
            assert hist[i].lower_us >= hist[i - 1].upper_us


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=5000))
def test_arbitrary_bytes_identify_decodes_or_raises_short(data: bytes) -> None:
    try:
        ident = nvme_ebs.parse_identify(data)
    except nvme_ebs.PageFormatError as e:
        assert e.check == "short"
        assert len(data) < 4096
        return
    assert len(ident.serial) <= 20
    assert len(ident.model) <= 40
    assert len(ident.firmware) <= 8
    assert ident.block_device_mapping is None or 0 < len(ident.block_device_mapping) <= 32


@settings(max_examples=200, deadline=None)
@given(
    counters=counters_strategy,
    read=valid_bins(),
    write=valid_bins(),
    magic=st.sampled_from([MAGIC_EBS, MAGIC_INSTANCE_STORE]),
    version=u32,
)
def test_round_trip(counters: dict[str, int], read: list[Bin], write: list[Bin], magic: int, version: int) -> None:
    for page in (
        testing.encode_stats_page(counters, read, write, magic=magic, version=version),
        hand_page(counters, read, write, magic=magic, version=version),
    ):
        stats = nvme_ebs.parse_log_page(page)
        expected_kind = nvme_ebs.PageKind.EBS if magic == MAGIC_EBS else nvme_ebs.PageKind.INSTANCE_STORE
        assert stats.kind is expected_kind
        assert stats.version == version
        assert {name: getattr(stats, name) for name in testing.COUNTER_FIELDS} == counters
        assert bins_of(stats.read_io_latency_histogram) == read
        assert bins_of(stats.write_io_latency_histogram) == write


@st.composite
def broken_histogram(draw: st.DrawFn) -> tuple[list[Bin], int | None, str, int]:
    """A histogram with exactly one fault: (bins, num_bins to write, expected check, bad bin)."""
    bins = draw(valid_bins())
    kinds = ["num_bins"]
    if len(bins) >= 2:
        kinds += ["bin_range", "bin_order"]
    if bins:
        kinds.append("last_range")
    kind = draw(st.sampled_from(kinds))
    if kind == "num_bins":
        return bins, draw(st.integers(65, U64_MAX)), "num_bins", -1
    if kind == "bin_range":  # a bin that is not the last with upper <= lower
        i = draw(st.integers(0, len(bins) - 2))
        lower, _, count = bins[i]
        bins[i] = (lower, draw(st.integers(0, lower)), count)
        return bins, None, "bin_range", i
    if kind == "last_range":  # the last bin with 0 < upper <= lower: not an open bound
        lower, _, count = bins[-1]
        lower = max(lower, 1)  # lower < 2**63 here, so upper is never all ones
        bins[-1] = (lower, draw(st.integers(1, lower)), count)
        return bins, None, "bin_range", len(bins) - 1
    i = draw(st.integers(1, len(bins) - 1))  # bin_order: starts before the previous bin ends
    lower, upper, count = bins[i]
    prev_upper = bins[i - 1][1]
    bins[i] = (draw(st.integers(0, prev_upper - 1)), upper, count)
    return bins, None, "bin_order", i


@settings(max_examples=300, deadline=None)
@given(broken=broken_histogram(), which=st.sampled_from(["read", "write"]), good=valid_bins())
def test_invalid_histograms_raise_the_right_check(
    broken: tuple[list[Bin], int | None, str, int], which: str, good: list[Bin]
) -> None:
    bins, num_bins, check, bad_bin = broken
    if which == "read":
        page = testing.encode_stats_page({}, bins, good, read_num_bins=num_bins)
    else:
        page = testing.encode_stats_page({}, good, bins, write_num_bins=num_bins)
    err = decode_error(page)
    assert err.check == check
    assert f"{which} latency histogram" in str(err)
    if bad_bin >= 0:
        assert f"bin {bad_bin} " in str(err)


def test_bytearray_and_memoryview_decode_like_bytes() -> None:
    page = testing.encode_stats_page({"total_read_ops": 7}, [(0, 1, 3)], [])
    for data in (bytearray(page), memoryview(page)):
        assert nvme_ebs.parse_log_page(data).total_read_ops == 7  # type: ignore[arg-type]
    identify = testing.encode_identify("vol0123456789abcdef0")
    assert nvme_ebs.parse_identify(bytearray(identify)).serial == "vol0123456789abcdef0"  # type: ignore[arg-type]
