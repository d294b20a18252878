# Types of the compiled cffi module (built from csrc/ by csrc/build_ffi.py).
from typing import Any

ffi: Any

class _Result:
    """A `struct nvme_ebs_result` cdata: `code` is read in the space `kind` names."""

    kind: int
    code: int

class _Lib:
    NVME_EBS_PAGE_SIZE: int
    NVME_EBS_MAX_BINS: int
    NVME_EBS_MAGIC_EBS: int
    NVME_EBS_MAGIC_INSTANCE_STORE: int
    NVME_EBS_OPC_GET_LOG_PAGE: int
    NVME_EBS_OPC_IDENTIFY: int
    NVME_EBS_KIND_EBS: int
    NVME_EBS_KIND_INSTANCE_STORE: int
    NVME_EBS_OK: int
    NVME_EBS_ERR_SHORT: int
    NVME_EBS_ERR_MAGIC: int
    NVME_EBS_ERR_NUM_BINS: int
    NVME_EBS_ERR_BIN_RANGE: int
    NVME_EBS_ERR_BIN_ORDER: int
    NVME_EBS_RESULT_OK: int
    NVME_EBS_RESULT_ERRNO: int
    NVME_EBS_RESULT_NVME_STATUS: int
    NVME_EBS_RESULT_DECODE: int
    def nvme_ebs_identify(self, path: bytes, page: Any) -> _Result: ...
    def nvme_ebs_get_stats_page(self, path: bytes, page: Any) -> _Result: ...
    def nvme_ebs_decode_stats(self, page: Any, len: int, out: Any) -> int: ...
    def nvme_ebs_decode_identity(self, page: Any, len: int, out: Any) -> int: ...
    def nvme_ebs_read_stats(self, path: bytes, page: Any, out: Any) -> _Result: ...
    def nvme_ebs_set_timeout_ms(self, timeout_ms: int) -> None: ...
    def nvme_ebs_render_next(
        self, out: Any, cap: int, families: Any, nfamilies: int, volumes: Any, n: int, pos: Any
    ) -> int: ...
    def nvme_ebs_unwrap(self, now: Any, histogram_offset: int, last: Any, offsets: Any) -> int: ...
    def nvme_ebs_tune_malloc(self, arena_max: int, mmap_threshold: int) -> int: ...

lib: _Lib
