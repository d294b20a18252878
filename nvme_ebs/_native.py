"""The only module that talks to the compiled C core: it turns its results into exceptions
and its structs into the dataclasses of nvme_ebs.model."""

from __future__ import annotations

import dataclasses
import operator
import struct
from typing import Any, Callable, NoReturn, TypeVar

from ._nvme_ebs_c import ffi, lib
from .errors import NvmeStatusError, PageFormatError, error_from_errno
from .layout import COUNTER_FIELDS
from .model import ControllerIdentity, EbsStats, LatencyHistogram, PageKind

PAGE_SIZE: int = lib.NVME_EBS_PAGE_SIZE
OPC_IDENTIFY: int = lib.NVME_EBS_OPC_IDENTIFY
OPC_GET_LOG_PAGE: int = lib.NVME_EBS_OPC_GET_LOG_PAGE
STATS_WHAT = "statistics page (log 0xD0)"
IDENTIFY_WHAT = "identify controller"

_PAGE_KINDS = {lib.NVME_EBS_KIND_EBS: PageKind.EBS, lib.NVME_EBS_KIND_INSTANCE_STORE: PageKind.INSTANCE_STORE}
_HISTOGRAMS = ("read", "write")
T = TypeVar("T")


def _format_error(code: int, out: Any, device: str | None) -> PageFormatError:
    """Names the check that failed, with the offending values."""
    if code == lib.NVME_EBS_ERR_SHORT:
        return PageFormatError("short", f"shorter than {PAGE_SIZE} bytes", device)
    if code == lib.NVME_EBS_ERR_MAGIC:
        return PageFormatError("magic", f"unknown magic {out.magic:#010x}", device)
    hist = out.read_hist if out.error_histogram == 0 else out.write_hist
    name = f"{_HISTOGRAMS[out.error_histogram]} latency histogram"
    if code == lib.NVME_EBS_ERR_NUM_BINS:
        return PageFormatError("num_bins", f"{name}: num_bins {hist.num_bins} exceeds {lib.NVME_EBS_MAX_BINS}", device)
    i = out.error_bin
    lower, upper = hist.lower_us[i], hist.upper_us[i]
    if code == lib.NVME_EBS_ERR_BIN_RANGE:
        return PageFormatError("bin_range", f"{name}: bin {i} has lower {lower} >= upper {upper}", device)
    if code == lib.NVME_EBS_ERR_BIN_ORDER:
        return PageFormatError(
            "bin_order",
            f"{name}: bin {i} starts at {lower}, before bin {i - 1} ends at {hist.upper_us[i - 1]}",
            device,
        )
    return PageFormatError("unknown", f"decoder code {code}", device)


# A device's bin edges hardly ever change: the tuples of edges read last are handed out again
# (cheaper than unpacking them, and callers comparing edges find the same objects), with the
# struct.Struct that unpacks that many counts (faster than ffi.unpack and a tuple of its list).
# Keyed by the raw bytes of num_bins and both edge arrays; bounded, so odd devices cannot grow it.
_BOUNDS_BYTES = ffi.offsetof("struct nvme_ebs_histogram", "count")
_HIST_OFFSETS = (
    ffi.offsetof("struct nvme_ebs_stats", "read_hist"),
    ffi.offsetof("struct nvme_ebs_stats", "write_hist"),
)
_BOUNDS_CACHE_SIZE = 64
_bounds_cache: dict[bytes, tuple[tuple[int, ...], tuple[int, ...], struct.Struct]] = {}


def _frozen(cls: type[T]) -> Callable[..., T]:
    """A constructor of the frozen dataclass `cls` from its field values in order, filling the
    instance's __dict__ at once (its own __init__ sets one field at a time through
    object.__setattr__, which costs more than the rest of a page's decoding). No field of
    these classes has a default, a factory or a __post_init__ to miss."""
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    new = object.__new__

    def make(*values: object) -> T:
        obj = new(cls)
        obj.__dict__.update(zip(names, values))
        return obj

    return make


_new_histogram = _frozen(LatencyHistogram)
_new_stats = _frozen(EbsStats)


def _histogram(hist: Any, raw: Any, offset: int) -> LatencyHistogram:
    """`raw` is a buffer over the whole decoded struct, `offset` where `hist` sits in it."""
    key = raw[offset : offset + _BOUNDS_BYTES]
    bounds = _bounds_cache.get(key)
    if bounds is None:
        n = hist.num_bins
        bounds = (tuple(ffi.unpack(hist.lower_us, n)), tuple(ffi.unpack(hist.upper_us, n)), struct.Struct(f"={n}I"))
        if len(_bounds_cache) >= _BOUNDS_CACHE_SIZE:
            _bounds_cache.clear()
        _bounds_cache[key] = bounds
    return _new_histogram(bounds[0], bounds[1], bounds[2].unpack_from(raw, offset + _BOUNDS_BYTES))


# _stats passes EbsStats' fields by position: make a reordering of the dataclass fail loudly.
_STATS_FIELDS = ("kind", "version", *COUNTER_FIELDS, "read_io_latency_histogram", "write_io_latency_histogram")
if tuple(f.name for f in dataclasses.fields(EbsStats)) != _STATS_FIELDS:
    raise ImportError("nvme_ebs._native is out of step with the fields of EbsStats")


_counters = operator.attrgetter(*COUNTER_FIELDS)  # the struct's counters, in page order, in one call


def _stats(out: Any) -> EbsStats:
    """`out` must come from ffi.new (zero-filled): the bounds cache keys on the unused bins too."""
    raw = ffi.buffer(out)
    # Positional, in EbsStats' field order: keywords cost more than the rest of the call.
    stats = _new_stats(
        _PAGE_KINDS[out.kind],
        out.version,
        *_counters(out),
        _histogram(out.read_hist, raw, _HIST_OFFSETS[0]),
        _histogram(out.write_hist, raw, _HIST_OFFSETS[1]),
    )
    object.__setattr__(stats, "decoded", out)  # frozen: set as the dataclass's own __init__ does
    return stats


# EbsStats fields that struct nvme_ebs_stats spells otherwise.
_STRUCT_FIELDS = {"read_io_latency_histogram": "read_hist", "write_io_latency_histogram": "write_hist"}


def stats_offset(field: str) -> int:
    """Where an EbsStats field sits in struct nvme_ebs_stats (EbsStats.decoded)."""
    return int(ffi.offsetof("struct nvme_ebs_stats", _STRUCT_FIELDS.get(field, field)))


def tune_malloc(arena_max: int, mmap_threshold: int) -> bool:
    """glibc's malloc: at most `arena_max` arenas, blocks from `mmap_threshold` bytes mapped on
    their own (returned to the system when freed). False where the C library refused."""
    return bool(lib.nvme_ebs_tune_malloc(arena_max, mmap_threshold))


def _identity(out: Any) -> ControllerIdentity:
    mapping = ffi.string(out.bdev_mapping).decode("ascii", "replace").strip()
    if mapping.startswith("/dev/"):
        mapping = mapping[len("/dev/") :]
    return ControllerIdentity(
        vid=out.vid,
        ssvid=out.ssvid,
        serial=ffi.string(out.serial).decode("ascii", "replace").strip(),
        model=ffi.string(out.model).decode("ascii", "replace").strip(),
        firmware=ffi.string(out.firmware).decode("ascii", "replace").strip(),
        block_device_mapping=mapping or None,
    )


def raise_for(result: Any, device: str, opcode: int, what: str, out: Any = None) -> NoReturn:
    """Raises the exception for a command's `struct nvme_ebs_result` that is not OK; `out` is the
    struct the decoder filled, for a DECODE result."""
    kind, code = result.kind, result.code
    if kind == lib.NVME_EBS_RESULT_ERRNO:
        raise error_from_errno(code, device, what)
    if kind == lib.NVME_EBS_RESULT_NVME_STATUS:
        raise NvmeStatusError(device, opcode, code, what)
    if kind == lib.NVME_EBS_RESULT_DECODE and out is not None:
        raise _format_error(code, out, device)
    raise RuntimeError(f"{device}: {what}: unexpected result from the C core (kind {kind}, code {code})")


def _decoded(ctype: str, decode: Any, data: bytes, device: str | None) -> Any:
    """A fresh (zero-filled) struct that `decode` filled from `data`, or the check that failed."""
    out = ffi.new(ctype)
    rc = decode(ffi.from_buffer(data), len(data), out)
    if rc != lib.NVME_EBS_OK:
        raise _format_error(rc, out, device)
    return out


def parse_log_page(data: bytes, device: str | None = None) -> EbsStats:
    return _stats(_decoded("struct nvme_ebs_stats *", lib.nvme_ebs_decode_stats, data, device))


def parse_identify(data: bytes, device: str | None = None) -> ControllerIdentity:
    return _identity(_decoded("struct nvme_ebs_identity *", lib.nvme_ebs_decode_identity, data, device))


def set_command_timeout(seconds: float) -> None:
    """Let the kernel abort each later command after ``seconds`` (0: its own default, 60 s).

    Passed in the passthrough command, so a device that never answers costs the calling
    thread about this long instead of the kernel's admin timeout."""
    if not 0 <= seconds <= 0xFFFFFFFF / 1000:
        raise ValueError(f"command timeout {seconds!r} s is out of range")
    lib.nvme_ebs_set_timeout_ms(int(seconds * 1000))


def _path_bytes(path: str) -> bytes:
    if "\0" in path:
        raise ValueError(f"device path contains a NUL byte: {path!r}")
    return path.encode()


def identify(path: str) -> ControllerIdentity:
    page = ffi.new("uint8_t[]", PAGE_SIZE)
    result = lib.nvme_ebs_identify(_path_bytes(path), page)
    if result.kind != lib.NVME_EBS_RESULT_OK:
        raise_for(result, path, OPC_IDENTIFY, IDENTIFY_WHAT)
    return parse_identify(ffi.buffer(page)[:], path)


def read_stats_page(path: str) -> bytes:
    """The raw 4096-byte statistics page, undecoded (for dumps)."""
    page = ffi.new("uint8_t[]", PAGE_SIZE)
    result = lib.nvme_ebs_get_stats_page(_path_bytes(path), page)
    if result.kind != lib.NVME_EBS_RESULT_OK:
        raise_for(result, path, OPC_GET_LOG_PAGE, STATS_WHAT)
    return bytes(ffi.buffer(page))


def read_stats(path: str) -> EbsStats:
    """Reads and decodes the statistics page in one C call."""
    page = ffi.new("uint8_t[]", PAGE_SIZE)
    out = ffi.new("struct nvme_ebs_stats *")
    result = lib.nvme_ebs_read_stats(_path_bytes(path), page, out)
    if result.kind != lib.NVME_EBS_RESULT_OK:
        raise_for(result, path, OPC_GET_LOG_PAGE, STATS_WHAT, out)
    return _stats(out)
