"""nvme_ebs through the compiled C module against the fake NVMe controller: real ioctls, real errors."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from fakenvme import FakeNvme
from pagesource import stats_page

import nvme_ebs
from nvme_ebs import _native
from nvme_ebs import testing as pg
from nvme_ebs._nvme_ebs_c import ffi, lib
from nvme_ebs.model import PageKind

SERIAL = "vol0123456789abcdef0"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeNvme:
    fake = FakeNvme(tmp_path / "fake")
    monkeypatch.setenv("FAKENVME_ROOT", str(fake.root))
    return fake


def _ebs(fake: FakeNvme, name: str = "nvme1", page: bytes | None = None) -> str:
    identify = pg.encode_identify(SERIAL, block_device_mapping="/dev/sdf")
    return str(fake.add(name, identify, page if page is not None else stats_page(3)))


def test_get_log_page_is_sent_exactly_as_specified(fake: FakeNvme) -> None:
    path = _ebs(fake)
    stats = nvme_ebs.DeviceNode(path).read_stats()
    assert stats == nvme_ebs.parse_log_page(stats_page(3))
    [cmd] = fake.commands("nvme1")
    assert (cmd["opcode"], cmd["nsid"], cmd["cdw10"], cmd["data_len"]) == (0x02, 1, 0x03FF00D0, 4096)
    assert cmd["access"] == "rdonly"
    assert all(cmd[f"cdw{i}"] == 0 for i in range(11, 16))


def test_identify_is_sent_exactly_as_specified(fake: FakeNvme) -> None:
    path = _ebs(fake)
    identity = nvme_ebs.DeviceNode(path).identify()
    assert identity.volume_id == "vol-0123456789abcdef0"
    assert identity.block_device_mapping == "sdf"
    assert identity.vid == 0x1D0F
    [cmd] = fake.commands("nvme1")
    assert (cmd["opcode"], cmd["nsid"], cmd["cdw10"], cmd["data_len"]) == (0x06, 0, 1, 4096)
    assert cmd["access"] == "rdonly"


def test_command_timeout_is_passed_to_the_kernel(fake: FakeNvme) -> None:
    path = _ebs(fake)
    try:
        nvme_ebs.set_command_timeout(2.5)
        nvme_ebs.DeviceNode(path).read_stats()
        nvme_ebs.DeviceNode(path).identify()
    finally:
        nvme_ebs.set_command_timeout(0)
    nvme_ebs.DeviceNode(path).read_stats()
    assert [c["timeout_ms"] for c in fake.commands("nvme1")] == [2500, 2500, 0]
    with pytest.raises(ValueError, match="out of range"):
        nvme_ebs.set_command_timeout(-1)


def test_raw_page_round_trips(fake: FakeNvme) -> None:
    path = _ebs(fake, page=stats_page(5, 64))
    raw = nvme_ebs.DeviceNode(path).read_stats_page()
    assert raw == stats_page(5, 64)


def test_no_other_command_can_be_sent_from_python() -> None:
    from nvme_ebs import _nvme_ebs_c

    exported = {name for name in dir(_nvme_ebs_c.lib) if callable(getattr(_nvme_ebs_c.lib, name))}
    assert exported == {
        "nvme_ebs_identify",
        "nvme_ebs_get_stats_page",
        "nvme_ebs_read_stats",
        "nvme_ebs_decode_stats",
        "nvme_ebs_decode_identity",
        "nvme_ebs_set_timeout_ms",  # the kernel's timeout for both commands: no command of its own
        "nvme_ebs_render_next",  # writes text from decoded pages: no device involved
        "nvme_ebs_unwrap",  # compares a decoded page's counts with the last ones
        "nvme_ebs_tune_malloc",  # malloc parameters of the process
    }
    # Neither command function takes an opcode, nsid or cdw: there is nothing to choose.
    cdef = (Path(__file__).parents[1] / "csrc" / "nvme_ebs.h").read_text()
    assert "struct nvme_ebs_result nvme_ebs_identify(const char *path, uint8_t *page);" in cdef
    assert "struct nvme_ebs_result nvme_ebs_get_stats_page(const char *path, uint8_t *page);" in cdef


@pytest.mark.parametrize(
    ("err", "cls", "base"),
    [
        (errno.EACCES, nvme_ebs.DevicePermissionError, PermissionError),
        (errno.EPERM, nvme_ebs.DevicePermissionError, PermissionError),
        (errno.ENOTTY, nvme_ebs.NotNvmeDeviceError, OSError),
        (errno.ENODEV, nvme_ebs.DeviceGoneError, OSError),
        (errno.ENXIO, nvme_ebs.DeviceGoneError, OSError),
        (errno.EIO, nvme_ebs.DeviceOSError, OSError),
    ],
)
def test_errno_from_the_ioctl_becomes_its_exception(fake: FakeNvme, err: int, cls: type, base: type) -> None:
    path = _ebs(fake)
    fake.fail_errno("nvme1", err)
    with pytest.raises(cls) as caught:
        nvme_ebs.DeviceNode(path).read_stats()
    assert isinstance(caught.value, base)
    assert isinstance(caught.value, nvme_ebs.NvmeEbsError)
    assert caught.value.errno == err
    assert path in str(caught.value)
    if cls is nvme_ebs.DevicePermissionError:
        assert "CAP_SYS_ADMIN" in str(caught.value)


def test_missing_device_is_file_not_found(fake: FakeNvme) -> None:
    path = _ebs(fake)
    fake.remove("nvme1")
    with pytest.raises(FileNotFoundError) as caught:
        nvme_ebs.DeviceNode(path).read_stats()
    assert isinstance(caught.value, nvme_ebs.DeviceNotFoundError)
    assert path in str(caught.value)


def test_eintr_is_retried(fake: FakeNvme) -> None:
    path = _ebs(fake)
    fake.set_eintr("nvme1", 3)
    assert nvme_ebs.DeviceNode(path).read_stats().total_read_ops > 0
    assert len(fake.commands("nvme1")) == 4


def test_nvme_status_carries_sct_sc_and_opcode(fake: FakeNvme) -> None:
    path = _ebs(fake)
    fake.fail_status("nvme1", 0x2109)
    with pytest.raises(nvme_ebs.NvmeStatusError) as caught:
        nvme_ebs.DeviceNode(path).read_stats()
    e = caught.value
    assert not isinstance(e, nvme_ebs.NotAnEbsVolumeError)  # the model is EBS
    assert (e.status, e.sct, e.sc, e.more, e.dnr, e.opcode) == (0x2109, 1, 0x09, True, False, 0x02)
    assert "0x2109" in str(e) and path in str(e)


def test_refusal_from_a_non_amazon_device_names_its_model(fake: FakeNvme) -> None:
    identify = pg.encode_identify("S6B0NL0T123456K", model="Samsung SSD 980 PRO 1TB", vid=0x144D)
    path = str(fake.add("nvme0", identify, None))  # no page: the fake answers 0x4002 like QEMU
    with pytest.raises(nvme_ebs.NotAnEbsVolumeError) as caught:
        nvme_ebs.DeviceNode(path).read_stats()
    assert caught.value.model == "Samsung SSD 980 PRO 1TB"
    assert caught.value.sc == 0x02 and caught.value.dnr
    assert "Samsung SSD 980 PRO 1TB" in str(caught.value)


def test_bad_page_from_a_device_is_a_format_error(fake: FakeNvme) -> None:
    path = _ebs(fake, page=pg.encode_stats_page(read_bins=[(0, 1, 1)], read_num_bins=65))
    with pytest.raises(nvme_ebs.PageFormatError) as caught:
        nvme_ebs.DeviceNode(path).read_stats()
    assert caught.value.check == "num_bins"
    assert path in str(caught.value)


def _result(call: str, path: str) -> tuple[int, int]:
    page = ffi.new("uint8_t[]", lib.NVME_EBS_PAGE_SIZE)
    if call == "read_stats":
        result = lib.nvme_ebs_read_stats(path.encode(), page, ffi.new("struct nvme_ebs_stats *"))
    else:
        result = getattr(lib, f"nvme_ebs_{call}")(path.encode(), page)
    return (result.kind, result.code)


@pytest.mark.parametrize("call", ["identify", "get_stats_page", "read_stats"])
def test_every_command_result_names_the_space_of_its_code(fake: FakeNvme, call: str) -> None:
    """The same number, 2, as an errno (ENOENT), an NVMe status and a decoder code (bad magic)."""
    path = _ebs(fake, page=stats_page(3, magic=0xBAD))
    decoded = (lib.NVME_EBS_RESULT_DECODE, lib.NVME_EBS_ERR_MAGIC) if call == "read_stats" else None
    assert _result(call, path) == (decoded or (lib.NVME_EBS_RESULT_OK, 0))
    fake.fail_status("nvme1", 0x0002)
    assert _result(call, path) == (lib.NVME_EBS_RESULT_NVME_STATUS, 2)
    fake.fail_status("nvme1", None)
    fake.fail_errno("nvme1", errno.EIO)
    assert _result(call, path) == (lib.NVME_EBS_RESULT_ERRNO, errno.EIO)
    fake.remove("nvme1")
    assert _result(call, path) == (lib.NVME_EBS_RESULT_ERRNO, errno.ENOENT)
    assert errno.ENOENT == lib.NVME_EBS_ERR_MAGIC == 2  # what makes the comparison above tell them apart


def test_a_result_of_no_known_kind_is_an_error_not_a_success() -> None:
    result = ffi.new("struct nvme_ebs_result *", {"kind": 99, "code": 7})[0]
    with pytest.raises(RuntimeError, match=r"/dev/nvme9: .*\(kind 99, code 7\)"):
        _native.raise_for(result, "/dev/nvme9", lib.NVME_EBS_OPC_GET_LOG_PAGE, _native.STATS_WHAT)


def test_histogram_arrays_hold_max_bins() -> None:
    """The decoder refuses num_bins > NVME_EBS_MAX_BINS: that is what keeps the unpacking in bounds."""
    fields = dict(ffi.typeof("struct nvme_ebs_histogram").fields)
    assert [fields[f].type.length for f in ("lower_us", "upper_us", "count")] == [lib.NVME_EBS_MAX_BINS] * 3


def test_instance_store_page(fake: FakeNvme) -> None:
    path = _ebs(fake, page=stats_page(2, magic=pg.MAGIC_INSTANCE_STORE))
    assert nvme_ebs.DeviceNode(path).read_stats().kind is PageKind.INSTANCE_STORE


def test_regular_file_and_fifo_get_no_ioctl(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (plain, fifo):  # a FIFO would block a plain open(); it must not hang here
        with pytest.raises(nvme_ebs.NotNvmeDeviceError):
            nvme_ebs.DeviceNode(str(path)).read_stats()


def test_no_file_descriptor_is_left_open(fake: FakeNvme) -> None:
    path = _ebs(fake)
    before = len(os.listdir("/proc/self/fd"))
    fake.fail_errno("nvme1", errno.EIO)
    for _ in range(50):
        with pytest.raises(nvme_ebs.DeviceOSError):
            nvme_ebs.DeviceNode(path).read_stats()
    fake.fail_errno("nvme1", None)
    for _ in range(50):
        nvme_ebs.DeviceNode(path).read_stats()
    assert len(os.listdir("/proc/self/fd")) == before
