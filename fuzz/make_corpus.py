"""Writes the fuzzers' seed corpus: one page for every branch of the decoders' checks.

    .venv/bin/python fuzz/make_corpus.py          # (re)write fuzz/corpus/{stats,identify,render}/
    .venv/bin/python fuzz/make_corpus.py --check  # exit 1 if the committed files differ

A seed's file name is `EXPECTED--what`: EXPECTED is `ok` or the `PageFormatError.check` the
Python API must raise for it (`short`, `magic`, `num_bins`, `bin_range`, `bin_order`); a
`what` that starts with `read-` or `write-` names the histogram the error is about.
tests/test_fuzz.py decodes every seed and holds it to its name. The renderer's seeds
(`render/`) are recipes in fuzz/fuzz_render.c's format, named after what they exercise.
"""

from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

from nvme_ebs import testing

CORPUS = Path(__file__).resolve().parent / "corpus"
U64_MAX = (1 << 64) - 1
PAGE = testing.PAGE_SIZE

Bins = list[tuple[int, int, int]]

# Distinct, byte-rich counter values: a counter decoded from the wrong place shows.
COUNTERS = {name: 0x0101_0101_0101_0101 * (k + 1) + k for k, name in enumerate(testing.COUNTER_FIELDS)}


def aws(num_bins: int = 28, open_last: bool = True) -> Bins:
    """Power-of-two edges as AWS reports them, counts 10, 11, ..."""
    return [(lo, hi, 10 + i) for i, (lo, hi) in enumerate(testing.power_of_two_bounds(num_bins, open_last))]


def with_bin(bins: Bins, index: int, lower: int, upper: int) -> Bins:
    out = list(bins)
    out[index] = (lower, upper, out[index][2])
    return out


def stats_page(read: testing.Bins = (), write: testing.Bins = (), **kwargs: int) -> bytes:
    return testing.encode_stats_page(COUNTERS, read, write, **kwargs)


def garbage_past_num_bins() -> bytes:
    """10 valid bins, then disordered bins and 0xEE in every reserved area: none of it is read."""
    page = bytearray(stats_page(aws(10), aws(10)))
    page[96:512] = b"\xee" * 416
    page[3600:PAGE] = b"\xee" * (PAGE - 3600)
    for base in (testing.READ_HISTOGRAM_OFFSET, testing.WRITE_HISTOGRAM_OFFSET):
        for i in range(10, testing.MAX_BINS):
            struct.pack_into("<QQII", page, base + 8 + 24 * i, 1000 - i, 3, 0xFFFFFFFF, 0xEEEEEEEE)
        for i in range(10):
            struct.pack_into("<I", page, base + 8 + 24 * i + 20, 0xEEEEEEEE)
    return bytes(page)


def stats_seeds() -> dict[str, bytes]:
    valid = stats_page(aws(), aws())
    order_last = aws()
    order_last[27] = (order_last[26][1] - 1, 0, order_last[27][2])
    order_63 = aws(64, open_last=False)
    order_63[63] = (order_63[62][0], order_63[63][1], 1)
    return {
        # accepted
        "ok--ebs-28-bins-aws": valid,
        "ok--ebs-64-bins": stats_page(aws(64), aws(64)),
        "ok--ebs-0-bins": stats_page(),
        "ok--ebs-read-28-write-5": stats_page(aws(), aws(5)),
        "ok--instance-store-28-bins": stats_page(aws(), aws(), magic=testing.MAGIC_INSTANCE_STORE),
        "ok--version-1": stats_page(aws(), aws(), version=1),
        "ok--version-ffffffff": stats_page(aws(), aws(), version=0xFFFFFFFF),
        "ok--open-last-bin-upper-0": stats_page([(0, 10, 1), (10, 20, 2), (20, 0, 3)], aws(3)),
        "ok--open-last-bin-upper-u64max": stats_page([(0, 10, 1), (10, 20, 2), (20, U64_MAX, 3)], aws(3)),
        "ok--closed-last-bin": stats_page(aws(28, open_last=False), aws(28, open_last=False)),
        "ok--single-open-bin-0-0": stats_page([(0, 0, 5)], [(0, U64_MAX, 6)]),
        "ok--last-bin-u64max-u64max": stats_page([(0, U64_MAX, 1), (U64_MAX, U64_MAX, 2)]),
        "ok--garbage-past-num-bins": garbage_past_num_bins(),
        "ok--page-4097-bytes": valid + b"\xff",
        "ok--page-8192-bytes": valid + b"\xee" * PAGE,
        # short
        "short--empty": b"",
        "short--1-byte": valid[:1],
        "short--4095-bytes": valid[: PAGE - 1],
        # magic
        "magic--zero-page": bytes(PAGE),
        "magic--byte-swapped": stats_page(aws(), aws(), magic=0x10B5233C),
        "magic--off-by-one": stats_page(aws(), aws(), magic=testing.MAGIC_EBS + 1),
        # num_bins
        "num_bins--read-65": stats_page(aws(64), aws(), read_num_bins=65),
        "num_bins--write-65": stats_page(aws(), aws(64), write_num_bins=65),
        "num_bins--read-u64max": stats_page(aws(), aws(), read_num_bins=U64_MAX),
        "num_bins--write-2p32-plus-28": stats_page(aws(), aws(), write_num_bins=(1 << 32) + 28),
        # bin_range
        "bin_range--read-bin-0-empty": stats_page(with_bin(aws(3), 0, 0, 0), aws()),
        "bin_range--read-bin-5-inverted": stats_page(with_bin(aws(), 5, 32, 16), aws()),
        "bin_range--write-bin-3-empty": stats_page(aws(), with_bin(aws(), 3, 4, 4)),
        "bin_range--read-open-bin-not-last": stats_page(with_bin(aws(), 10, 512, 0), aws()),
        "bin_range--write-u64max-bin-not-last": stats_page(aws(), with_bin(aws(3), 1, U64_MAX, U64_MAX)),
        "bin_range--write-last-bin-closed-inverted": stats_page(aws(), with_bin(aws(3), 2, 100, 50)),
        # bin_order
        "bin_order--read-bin-1-overlap": stats_page(with_bin(aws(), 1, 0, 2), aws()),
        "bin_order--write-bin-27-open-last": stats_page(aws(), order_last),
        "bin_order--read-bin-63": stats_page(order_63, aws()),
    }


def identify_seeds() -> dict[str, bytes]:
    ebs = testing.encode_identify("vol0123456789abcdef0", block_device_mapping="sdf")
    nul_padded = bytearray(PAGE)
    struct.pack_into("<HH", nul_padded, 0, 0x1D0F, 0x1D0F)
    nul_padded[4:24] = b"vol0aaaabbbbccccdddd"
    nul_padded[24:50] = b"Amazon Elastic Block Store"
    nul_padded[64:67] = b"1.0"
    nul_padded[3072:3081] = b"/dev/xvdb"
    embedded_nul = bytearray(ebs)
    embedded_nul[24:64] = b"Amazon\x00Elastic Block Store".ljust(40, b" ")
    return {
        "ok--ebs-sdf": ebs,
        "ok--ebs-dev-xvdf": testing.encode_identify("vol0fedcba9876543210", block_device_mapping="/dev/xvdf"),
        "ok--instance-store": testing.encode_identify(
            "AWS1A2B3C4D5E6F7A8B9", model="Amazon EC2 NVMe Instance Storage", firmware="0"
        ),
        "ok--nul-padded": bytes(nul_padded),
        "ok--embedded-nul": bytes(embedded_nul),
        "ok--full-width-fields": testing.encode_identify(
            "S" * 20, model="M" * 40, firmware="F" * 8, block_device_mapping="B" * 32
        ),
        "ok--all-spaces": b" " * PAGE,
        "ok--all-ff": b"\xff" * PAGE,
        "ok--zeros": bytes(PAGE),
        "ok--8192-bytes": ebs + b"\xee" * PAGE,
        "short--empty": b"",
        "short--4095-bytes": ebs[: PAGE - 1],
    }


def render_recipe(
    family: int, scale_digits: int, num_bins: int, buckets: int, counters: list[int], labels: bytes, wraps: bool = False
) -> bytes:
    """fuzz_render's input: control, num_bins, buckets, wraps; 11 counters; 64 counts; indices; offsets; labels."""
    head = bytes([family | scale_digits << 2, num_bins, buckets, int(wraps)])
    counts = b"".join(struct.pack("<I", (i * 2654435761) & 0xFFFF_FFFF) for i in range(64))
    index = bytes(range(buckets))
    offsets = bytes(range(1, 65)) if wraps else b""
    return head + struct.pack("<11Q", *counters) + counts + index + offsets + labels


def render_seeds() -> dict[str, bytes]:
    labels = b'volume_id="vol-0123456789abcdef0",device="nvme1n1"'
    times = [0, 1, 10**15 - 1, 10**15, (1 << 53) + 1, U64_MAX, 1_500_000, 99, 100, 5, 7]
    return {
        "integer": render_recipe(0, 0, 28, 27, list(COUNTERS.values()), labels),
        "seconds": render_recipe(1, 6, 28, 27, times, labels),
        "seconds-large": render_recipe(1, 6, 0, 0, [U64_MAX] * 11, labels),
        "histogram-64-bins": render_recipe(2, 6, 64, 63, times, labels),
        "histogram-wrapped": render_recipe(2, 6, 64, 64, times, labels, wraps=True),
        "histogram-coarse": render_recipe(2, 6, 64, 16, times, labels),
        "summary": render_recipe(3, 6, 28, 0, times, labels),
        "num-bins-past-64": render_recipe(2, 6, 200, 64, times, b""),
        "scale-1e19": render_recipe(1, 19, 0, 0, times[::-1], labels),
    }


def seeds() -> dict[str, dict[str, bytes]]:
    return {"stats": stats_seeds(), "identify": identify_seeds(), "render": render_seeds()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the files on disk, write nothing")
    parser.add_argument("--out", type=Path, default=CORPUS, help="corpus root (default: %(default)s)")
    args = parser.parse_args(argv)
    stale = []
    for kind, wanted in seeds().items():
        folder = args.out / kind
        present = {p.name: p.read_bytes() for p in folder.glob("*")} if folder.is_dir() else {}
        if present == wanted:
            continue
        stale.append(kind)
        if args.check:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for name in present.keys() - wanted.keys():
            (folder / name).unlink()
        for name, data in wanted.items():
            (folder / name).write_bytes(data)
    if args.check and stale:
        print(f"corpus out of date: {', '.join(stale)}; run fuzz/make_corpus.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
