"""The exceptions: picklable whole (in this process and across a process pool), and the
OSError ones OSErrors in every way an `except` clause or a caller of `e.errno` relies on."""

from __future__ import annotations

import errno
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from fakenvme import FakeNvme
from pagesource import stats_page

import nvme_ebs
from nvme_ebs import _native, errors
from nvme_ebs import testing as pg

DEVICE = "/dev/nvme3n1"
ATTRIBUTES = (
    *("device", "what", "hint", "message", "errno", "strerror", "filename", "filename2"),
    *("status", "opcode", "sc", "sct", "dnr", "more", "crd", "model", "check", "detail"),
)
EXAMPLES = [
    errors.NvmeEbsError("something about a device", DEVICE),
    errors.NvmeEbsError("no device involved"),
    errors.DeviceOSError(errno.EIO, DEVICE, "statistics page (log 0xD0)"),
    errors.DeviceOSError(errno.EIO, DEVICE, "identify controller", "a hint of the caller's"),
    errors.DeviceNotFoundError(errno.ENOENT, DEVICE, "identify controller"),
    errors.DevicePermissionError(errno.EACCES, DEVICE, "statistics page (log 0xD0)"),
    errors.NotNvmeDeviceError(errno.ENOTTY, "/tmp/plain-file", "identify controller"),
    errors.DeviceGoneError(errno.ENODEV, DEVICE, "statistics page (log 0xD0)"),
    errors.NvmeStatusError(DEVICE, 0x02, 0x6109, "statistics page (log 0xD0)"),
    errors.NotAnEbsVolumeError("/dev/nvme0", 0x02, 0x4002, "Samsung SSD 980 PRO 1TB"),
    errors.PageFormatError("magic", "unknown magic 0x00000bad", DEVICE),
    errors.PageFormatError("short", "shorter than 4096 bytes"),
]


def _same(a: BaseException, b: BaseException) -> None:
    assert type(a) is type(b)
    assert str(a) == str(b) and repr(a) == repr(b) and a.args == b.args
    assert vars(a) == vars(b)
    for name in ATTRIBUTES:  # OSError's own are slots, not in vars()
        assert getattr(a, name, "absent") == getattr(b, name, "absent"), name


def test_every_exception_class_has_an_example() -> None:
    ours = {c for c in vars(errors).values() if isinstance(c, type) and c.__module__ == errors.__name__}
    assert {c for c in ours if issubclass(c, Exception)} == {type(e) for e in EXAMPLES}


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_pickle_round_trip_keeps_type_message_and_attributes(error: Exception) -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        _same(pickle.loads(pickle.dumps(error, protocol)), error)


def test_attributes_set_after_construction_survive_pickling() -> None:
    error = errors.DevicePermissionError(errno.EPERM, DEVICE, "identify controller")
    error.volume_id = "vol-0123456789abcdef0"  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(error)).volume_id == "vol-0123456789abcdef0"


@pytest.mark.parametrize(
    "err", [errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTTY, errno.ENODEV, errno.ENXIO, errno.EIO]
)
def test_device_os_errors_are_oserrors_as_python_builds_them(err: int) -> None:
    error = errors.error_from_errno(err, DEVICE, "statistics page (log 0xD0)")
    plain = OSError(err, error.strerror, DEVICE)  # Python's own: FileNotFoundError for ENOENT...
    assert isinstance(error, type(plain)) and isinstance(error, errors.DeviceOSError)
    assert error.args == plain.args == (err, error.strerror)
    assert error.args[0] == error.errno == err
    assert (error.filename, error.filename2) == (DEVICE, None)
    # str() is the message people read: one line, the device, the command and the cause.
    message = str(error)
    assert "\n" not in message and message.startswith(f"{DEVICE}: statistics page (log 0xD0) failed: ")
    assert error.strerror in message and errno.errorcode[err] in message
    assert ("CAP_SYS_ADMIN" in message) == (err in (errno.EACCES, errno.EPERM))


def test_oserror_handlers_catch_them() -> None:
    with pytest.raises(FileNotFoundError):
        raise errors.error_from_errno(errno.ENOENT, DEVICE, "identify controller")
    with pytest.raises(PermissionError):
        raise errors.error_from_errno(errno.EACCES, DEVICE, "identify controller")
    try:
        raise errors.error_from_errno(errno.ENODEV, DEVICE, "identify controller")
    except OSError as caught:  # what code that knows nothing of nvme_ebs writes
        assert caught.errno == errno.ENODEV and caught.filename == DEVICE
    # A value of the base class is a ValueError, not an OSError.
    assert not isinstance(errors.PageFormatError("magic", "x"), OSError)


def test_errors_raised_in_a_worker_process_arrive_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each raised by the compiled module in a spawned interpreter, pickled back by the pool."""
    fake = FakeNvme(tmp_path / "fake")
    monkeypatch.setenv("FAKENVME_ROOT", str(fake.root))  # the child inherits it and the preload
    refused = str(fake.add("nvme1", pg.encode_identify("vol0111111111111111"), stats_page(1)))
    fake.fail_errno("nvme1", errno.EACCES)
    failing = str(fake.add("nvme2", pg.encode_identify("vol0222222222222222"), stats_page(2)))
    fake.fail_status("nvme2", 0x2109)
    other = str(fake.add("nvme3", pg.encode_identify("S6B0NL0T123456K", model="Samsung SSD 980 PRO 1TB"), None))
    bad = str(fake.add("nvme4", pg.encode_identify("vol0444444444444444"), stats_page(4, magic=0xBAD)))
    missing = str(tmp_path / "fake" / "dev" / "nvme9")
    calls = [
        (_native.read_stats, refused, errors.DevicePermissionError),
        (_native.identify, failing, errors.NvmeStatusError),
        (nvme_ebs.DeviceNode(other).read_stats, None, errors.NotAnEbsVolumeError),
        (_native.read_stats, bad, errors.PageFormatError),
        (_native.read_stats_page, missing, errors.DeviceNotFoundError),
    ]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(call, *([path] if path else [])) for call, path, _ in calls]
        for future, (call, path, cls) in zip(futures, calls):
            with pytest.raises(cls) as remote:
                future.result(timeout=60)
            with pytest.raises(cls) as local:
                call(*([path] if path else []))
            _same(remote.value, local.value)
