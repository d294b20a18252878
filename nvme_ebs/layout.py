"""The statistics page's byte layout, for Python code that writes or reads pages without the C decoder.

The counter fields, their order and so the page's header format come from the C struct
(`struct nvme_ebs_stats` in csrc/nvme_ebs.h): a counter added there appears here unchanged.
"""

from __future__ import annotations

import struct

from ._nvme_ebs_c import ffi, lib

PAGE_SIZE: int = lib.NVME_EBS_PAGE_SIZE
MAX_BINS: int = lib.NVME_EBS_MAX_BINS
MAGIC_EBS: int = lib.NVME_EBS_MAGIC_EBS
MAGIC_INSTANCE_STORE: int = lib.NVME_EBS_MAGIC_INSTANCE_STORE

# The page's u64 counters, in page order: the struct's uint64_t members before the histograms.
COUNTER_FIELDS: tuple[str, ...] = tuple(
    name for name, member in ffi.typeof("struct nvme_ebs_stats").fields if member.type.cname == "uint64_t"
)
# magic, version, then the counters (little-endian, unaligned).
HEADER = struct.Struct(f"<II{len(COUNTER_FIELDS)}Q")
COUNTERS_OFFSET = 8
READ_HISTOGRAM_OFFSET = 512
WRITE_HISTOGRAM_OFFSET = 2056
# A histogram: num_bins (u64), then MAX_BINS bins of lower (u64), upper (u64), count (u32), 4 bytes pad.
HISTOGRAM_HEADER = struct.Struct("<Q")
BIN = struct.Struct("<QQI4x")
HISTOGRAM_SIZE = HISTOGRAM_HEADER.size + MAX_BINS * BIN.size
# Identify Controller's vendor-specific area: the block device mapping name EC2 writes.
BDEV_MAPPING_OFFSET = 3072

if HEADER.size > READ_HISTOGRAM_OFFSET:
    raise ImportError("the counters of struct nvme_ebs_stats overrun the read histogram's offset")
