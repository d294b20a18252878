"""The fake NVMe controller, driven through real ioctl() calls.

Each scenario runs in a fresh interpreter with LD_PRELOAD set, so these tests
hold whether or not the pytest process itself runs under the preload.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ may not be a package
from fakenvme import CFLAGS, GUARD_BYTE, SOURCE, FakeNvme, build_preload

TESTS_DIR = Path(__file__).resolve().parent
IDENTIFY = {"opcode": 0x06, "cdw10": 1}
LOG_D0 = {"opcode": 0x02, "nsid": 1, "cdw10": 0x03FF00D0}
INVALID_FIELD = 0x4002
PAGE = bytes(i * 7 % 251 for i in range(4096))  # any slice of it is recognisable
IDENT = b"\x0f\x1d\x0f\x1dvol0123456789abcdef0Amazon Elastic Block Store"

# Runs before each client body: `call` opens a device, sends one admin command
# and returns the result as a JSON-friendly dict.
PRELUDE = """
import json, os, sys
from pathlib import Path
from fakenvme import FakeNvme, admin_cmd

fake = FakeNvme(Path(os.environ["T_ROOT"]))

def res(r):
    return {"ret": r.ret, "errno": r.errno, "data": r.data.hex(),
            "tail": r.tail.hex(), "result": r.result}

def call(path, mode=os.O_RDONLY, **kw):
    fd = os.open(path, mode)
    try:
        return res(admin_cmd(fd, **kw))
    finally:
        os.close(fd)
"""


def client_env(preload: Path, fake: FakeNvme, *, root: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKENVME", "LD_PRELOAD"))}
    env.update(LD_PRELOAD=str(preload), PYTHONPATH=str(TESTS_DIR), T_ROOT=str(fake.root))
    if root:
        env.update(fake.env())
    return env


def run_client(preload: Path, fake: FakeNvme, body: str, *, root: bool = True) -> Any:
    """Run body under the preload; it sets `out`, which comes back through JSON."""
    code = PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=client_env(preload, fake, root=root),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def concurrent_log_reads(preload: Path, fake: FakeNvme, each: int, threads: int = 8) -> list[int]:
    """`threads` threads of one client process, each reading log page 0xD0 `each` times on an fd
    of its own: every ioctl's return value."""
    rets: list[int] = run_client(
        preload,
        fake,
        f"""
        import threading
        rets = []
        def worker():
            fd = os.open(fake.dev_path("nvme1"), os.O_RDONLY)
            rets.extend(admin_cmd(fd, **{LOG_D0}).ret for _ in range({each}))
            os.close(fd)
        threads = [threading.Thread(target=worker) for _ in range({threads})]
        for t in threads: t.start()
        for t in threads: t.join()
        out = rets
    """,
    )
    return rets


def untouched(r: dict[str, Any], n: int = 4096) -> bool:
    return bytes.fromhex(r["data"]) == bytes([GUARD_BYTE]) * n


def guard_ok(r: dict[str, Any]) -> bool:
    return bytes.fromhex(r["tail"]) == bytes([GUARD_BYTE]) * 64


@pytest.fixture(scope="module")
def preload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_preload(tmp_path_factory.mktemp("fakenvme-build"))


@pytest.fixture
def fake(tmp_path: Path) -> FakeNvme:
    fake = FakeNvme(tmp_path / "root")
    fake.add("nvme1", IDENT, PAGE)
    return fake


def test_identify_and_log_page_answers(preload: Path, fake: FakeNvme) -> None:
    ident, log = run_client(
        preload,
        fake,
        f"""
        dev = fake.dev_path("nvme1")
        out = [call(dev, **{IDENTIFY}, result=0xFFFFFFFF), call(dev, **{LOG_D0})]
    """,
    )
    assert (ident["ret"], ident["result"]) == (0, 0)
    assert bytes.fromhex(ident["data"]) == IDENT + bytes(4096 - len(IDENT))  # zero-filled
    assert log["ret"] == 0 and bytes.fromhex(log["data"]) == PAGE
    assert guard_ok(ident) and guard_ok(log)


def test_answers_change_between_calls_of_a_running_process(preload: Path, fake: FakeNvme) -> None:
    first, second = run_client(
        preload,
        fake,
        f"""
        fd = os.open(fake.dev_path("nvme1"), os.O_RDONLY)
        a = res(admin_cmd(fd, **{LOG_D0}))
        fake.set_log_page("nvme1", b"\\x10\\xb5\\x23\\x3c" + bytes(8))
        out = [a, res(admin_cmd(fd, **{LOG_D0}))]
    """,
    )
    assert bytes.fromhex(first["data"]) == PAGE
    assert bytes.fromhex(second["data"]) == b"\x10\xb5\x23\x3c" + bytes(4092)


@pytest.mark.parametrize("err", [13, 1, 19, 6, 25, 5])
def test_errno(preload: Path, fake: FakeNvme, err: int) -> None:
    fake.fail_errno("nvme1", err)
    (r,) = run_client(preload, fake, f"out = [call(fake.dev_path('nvme1'), **{LOG_D0})]")
    assert (r["ret"], r["errno"]) == (-1, err)
    assert untouched(r) and guard_ok(r)
    assert len(fake.commands("nvme1")) == 1  # a failed command is still logged


@pytest.mark.parametrize("text", ["0x2109\n", "8457", "0X2109"])
def test_status_in_hex_or_decimal(preload: Path, fake: FakeNvme, text: str) -> None:
    (fake.ctl_dir("nvme1") / "status").write_text(text)
    (r,) = run_client(preload, fake, f"out = [call(fake.dev_path('nvme1'), **{LOG_D0})]")
    assert r["ret"] == 0x2109 and untouched(r)


def test_fail_status_helper_then_recovery(preload: Path, fake: FakeNvme) -> None:
    fake.fail_status("nvme1", 0x2109)
    out = run_client(
        preload,
        fake,
        f"""
        dev = fake.dev_path("nvme1")
        a = call(dev, **{LOG_D0})
        fake.fail_status("nvme1", None)
        out = [a, call(dev, **{LOG_D0})]
    """,
    )
    assert [r["ret"] for r in out] == [0x2109, 0]


def test_eintr_counts_down(preload: Path, fake: FakeNvme) -> None:
    fake.set_eintr("nvme1", 2)
    out = run_client(
        preload,
        fake,
        f"""
        out = [call(fake.dev_path("nvme1"), **{LOG_D0}) for _ in range(3)]
    """,
    )
    assert [(r["ret"], r["errno"]) for r in out] == [(-1, 4), (-1, 4), (0, 0)]
    assert bytes.fromhex(out[2]["data"]) == PAGE
    assert (fake.ctl_dir("nvme1") / "eintr").read_text().strip() == "0"
    assert len(fake.commands("nvme1")) == 3


def test_eintr_countdown_is_exact_across_threads(preload: Path, fake: FakeNvme) -> None:
    fake.set_eintr("nvme1", 100)
    out = concurrent_log_reads(preload, fake, 25)
    assert sorted(out) == [-1] * 100 + [0] * 100  # each EINTR taken exactly once


def test_delay_holds_the_call_until_released(preload: Path, fake: FakeNvme) -> None:
    fake.set_delay_ms("nvme1", 600_000)
    code = PRELUDE + f"print(json.dumps(call(fake.dev_path('nvme1'), **{IDENTIFY})))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=client_env(preload, fake),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60  # a guard against hanging, not an assertion
        while not fake.commands("nvme1"):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command never reached the fake"
            time.sleep(0.01)
        # The command came in and is held: the answer is read only on release.
        assert proc.poll() is None
        fake.set_identify("nvme1", b"late answer")
        fake.set_delay_ms("nvme1", None)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, stderr
    r = json.loads(stdout)
    assert r["ret"] == 0 and bytes.fromhex(r["data"]).startswith(b"late answer\0")


@pytest.mark.parametrize(
    "cmd",
    [
        {"opcode": 0xC0, "cdw10": 1},  # a vendor opcode
        {"opcode": 0x06, "cdw10": 0},  # Identify Namespace
        {"opcode": 0x06, "cdw10": 1, "data_len": 512},  # Identify into a short buffer
        {"opcode": 0x02, "nsid": 1, "cdw10": 0x03FF0002},  # SMART log
        {"opcode": 0x02, "nsid": 1, "cdw10": 0x040000D0},  # NUMD not zero-based: 4100 bytes
        {"opcode": 0x02, "nsid": 1, "cdw10": 0x03FF00D0, "data_len": 512},
    ],
)
def test_other_commands_answer_invalid_field(preload: Path, fake: FakeNvme, cmd: dict[str, int]) -> None:
    (r,) = run_client(preload, fake, f"out = [call(fake.dev_path('nvme1'), **{cmd})]")
    assert r["ret"] == INVALID_FIELD
    assert untouched(r, cmd.get("data_len", 4096)) and guard_ok(r)
    (logged,) = fake.commands("nvme1")
    assert (logged["opcode"], logged["cdw10"]) == (cmd["opcode"], cmd["cdw10"])


def test_missing_answer_file_is_invalid_field(preload: Path, fake: FakeNvme) -> None:
    fake.add("nvme2", IDENT, None)
    ident, log = run_client(
        preload,
        fake,
        f"""
        dev = fake.dev_path("nvme2")
        out = [call(dev, **{IDENTIFY}), call(dev, **{LOG_D0})]
    """,
    )
    assert (ident["ret"], log["ret"]) == (0, INVALID_FIELD)


def test_short_log_read_with_offset_stops_at_data_len(preload: Path, fake: FakeNvme) -> None:
    # 100 bytes (NUMD 24) from byte 512 (LPO): nothing may land past byte 100.
    (r,) = run_client(
        preload,
        fake,
        """
        out = [call(fake.dev_path("nvme1"), opcode=2, nsid=1, cdw10=(24 << 16) | 0xD0,
                    cdw12=512, data_len=100)]
    """,
    )
    assert r["ret"] == 0 and bytes.fromhex(r["data"]) == PAGE[512:612] and guard_ok(r)


def test_answer_file_longer_than_buffer_is_cut(preload: Path, fake: FakeNvme) -> None:
    fake.set_identify("nvme1", b"\xee" * 8192)
    (r,) = run_client(preload, fake, f"out = [call(fake.dev_path('nvme1'), **{IDENTIFY})]")
    assert r["ret"] == 0 and bytes.fromhex(r["data"]) == b"\xee" * 4096 and guard_ok(r)


def test_commands_log_records_each_field(preload: Path, fake: FakeNvme) -> None:
    run_client(
        preload,
        fake,
        f"""
        dev = fake.dev_path("nvme1")
        out = [call(dev, **{LOG_D0}, cdw11=0, cdw14=7, cdw15=9, timeout_ms=2000),
               call(dev, os.O_RDWR, **{IDENTIFY}, metadata_len=16),
               call(dev, os.O_WRONLY, opcode=0x06, cdw10=1, data_len=0, with_buffer=False)]
    """,
    )
    common = {"flags": 0, "cdw11": 0, "cdw12": 0, "cdw13": 0, "timeout_ms": 0}
    assert fake.commands("nvme1") == [
        {
            **common,
            "opcode": 2,
            "nsid": 1,
            "cdw10": 0x03FF00D0,
            "cdw14": 7,
            "cdw15": 9,
            "data_len": 4096,
            "metadata_len": 0,
            "addr": 1,
            "timeout_ms": 2000,
            "access": "rdonly",
        },
        {
            **common,
            "opcode": 6,
            "nsid": 0,
            "cdw10": 1,
            "cdw14": 0,
            "cdw15": 0,
            "data_len": 4096,
            "metadata_len": 16,
            "addr": 1,
            "access": "rdwr",
        },
        {
            **common,
            "opcode": 6,
            "nsid": 0,
            "cdw10": 1,
            "cdw14": 0,
            "cdw15": 0,
            "data_len": 0,
            "metadata_len": 0,
            "addr": 0,
            "access": "wronly",
        },
    ]
    fake.clear_commands("nvme1")
    assert fake.commands("nvme1") == []


def test_concurrent_commands_log_whole_lines(preload: Path, fake: FakeNvme) -> None:
    out = concurrent_log_reads(preload, fake, 50)
    assert out == [0] * 400
    logged = fake.commands("nvme1")
    assert len(logged) == 400
    assert all(len(c) == 14 and c["cdw10"] == 0x03FF00D0 for c in logged)


def test_kernel_checks(preload: Path, fake: FakeNvme) -> None:
    flags, no_buffer = run_client(
        preload,
        fake,
        f"""
        dev = fake.dev_path("nvme1")
        out = [call(dev, **{IDENTIFY}, flags=1), call(dev, **{IDENTIFY}, with_buffer=False)]
    """,
    )
    assert (flags["ret"], flags["errno"]) == (-1, 22)  # EINVAL: flags are refused
    assert (no_buffer["ret"], no_buffer["errno"]) == (-1, 14)  # EFAULT


def test_bad_control_file_fails_loudly(preload: Path, fake: FakeNvme) -> None:
    (fake.ctl_dir("nvme1") / "errno").write_text("EACCES")
    (r,) = run_client(preload, fake, f"out = [call(fake.dev_path('nvme1'), **{IDENTIFY})]")
    assert (r["ret"], r["errno"]) == (-1, 22)


def test_node_without_ctl_dir_is_not_nvme(preload: Path, fake: FakeNvme) -> None:
    (fake.root / "dev" / "sda").touch()
    (r,) = run_client(preload, fake, f"out = [call(fake.dev_path('sda'), **{IDENTIFY})]")
    assert (r["ret"], r["errno"]) == (-1, 25)  # ENOTTY


def test_removed_node(preload: Path, fake: FakeNvme) -> None:
    out = run_client(
        preload,
        fake,
        f"""
        dev = fake.dev_path("nvme1")
        fd = os.open(dev, os.O_RDONLY)
        fake.remove("nvme1")
        gone = res(admin_cmd(fd, **{IDENTIFY}))
        try:
            os.open(dev, os.O_RDONLY)
            reopen = "opened"
        except FileNotFoundError:
            reopen = "ENOENT"
        fake.add("nvme1", b"new volume", None)  # a new volume under the old name
        out = [gone, reopen, res(admin_cmd(fd, **{IDENTIFY})), call(dev, **{IDENTIFY})]
    """,
    )
    gone, reopen, stale, fresh = out
    assert (gone["ret"], gone["errno"], reopen) == (-1, 19, "ENOENT")
    assert (stale["ret"], stale["errno"]) == (-1, 19)  # the old fd stays dead
    assert fresh["ret"] == 0 and bytes.fromhex(fresh["data"]).startswith(b"new volume\0")


def test_inert_without_fakenvme_root(preload: Path, fake: FakeNvme) -> None:
    (r,) = run_client(preload, fake, f"out = [call(fake.dev_path('nvme1'), **{IDENTIFY})]", root=False)
    assert (r["ret"], r["errno"]) == (-1, 25)  # the real ioctl: ENOTTY
    assert untouched(r) and fake.commands("nvme1") == []


def test_other_fds_and_requests_reach_the_real_ioctl(preload: Path, fake: FakeNvme, tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"x")
    out = run_client(
        preload,
        fake,
        f"""
        import fcntl, termios, array
        r, w = os.pipe()
        os.write(w, b"hello")
        n = array.array("i", [0])
        fcntl.ioctl(r, termios.FIONREAD, n)  # an ordinary ioctl with a pointer argument
        fd = os.open(fake.dev_path("nvme1"), os.O_RDONLY)
        try:
            fcntl.ioctl(fd, 0x4E40)  # NVME_IOCTL_ID on a fake node: not answered by the fake
            nsid = "answered"
        except OSError as e:
            nsid = e.errno
        out = [n[0], call({str(tmp_path / "plain")!r}, **{IDENTIFY}), nsid]
    """,
    )
    fionread, plain, nsid = out
    assert fionread == 5
    assert (plain["ret"], plain["errno"]) == (-1, 25) and untouched(plain)
    assert nsid == 25 and fake.commands("nvme1") == []


def test_add_makes_a_device_node(fake: FakeNvme) -> None:
    st = fake.dev_path("nvme1").stat()
    # A character device where mknod is allowed, else the documented fallback.
    assert (st.st_mode & 0o170000) in (0o020000, 0o100000)
    assert fake.env() == {"FAKENVME_ROOT": str(fake.root)}


def test_add_falls_back_to_a_plain_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "mknod", refuse)
    path = FakeNvme(tmp_path).add("nvme0", IDENT, None)
    assert path.is_file() and path.stat().st_size == 0


def test_source_compiles_without_warnings(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["cc", *CFLAGS, "-Werror", "-o", str(tmp_path / "x.so"), str(SOURCE), "-ldl"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")


def test_build_preload_rebuilds_only_a_stale_library(tmp_path: Path) -> None:
    lib = build_preload(tmp_path)
    built = lib.stat().st_ino
    assert build_preload(tmp_path).stat().st_ino == built  # up to date: kept
    old = SOURCE.stat().st_mtime_ns - 10**9
    os.utime(lib, ns=(old, old))
    assert build_preload(tmp_path).stat().st_ino != built  # stale: replaced


PROBE = "print('/libfakenvme.so' in open('/proc/self/maps').read())"


def reexec_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKENVME", "LD_PRELOAD"))}
    env.pop("PYTEST_ADDOPTS", None)
    env["PYTHONPATH"] = str(TESTS_DIR)
    return env


@pytest.mark.parametrize(("no_reexec", "mapped"), [(False, "True"), (True, "False")])
def test_ensure_preloaded_reexecs(tmp_path: Path, no_reexec: bool, mapped: str) -> None:
    env = reexec_env() | ({"FAKENVME_NO_REEXEC": "1"} if no_reexec else {})
    code = f"import fakenvme, pathlib; fakenvme.ensure_preloaded(pathlib.Path({str(tmp_path)!r}))\n"
    proc = subprocess.run(
        [sys.executable, "-c", code + PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (proc.returncode, proc.stdout.strip()) == (0, mapped), proc.stderr


@pytest.mark.parametrize("where", ["pytest_configure", "import"])
def test_ensure_preloaded_in_a_pytest_run(tmp_path: Path, where: str) -> None:
    call = f"fakenvme.ensure_preloaded(pathlib.Path({str(tmp_path / 'build')!r}))"
    hook = f"def pytest_configure(config):\n    {call}\n" if where != "import" else call
    (tmp_path / "conftest.py").write_text(f"import fakenvme, pathlib\n{hook}\n")
    (tmp_path / "test_probe.py").write_text(
        "def test_probe():\n    assert '/libfakenvme.so' in open('/proc/self/maps').read()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        env=reexec_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if where == "import":  # conftest import runs under capture: refused, with a hint
        assert proc.returncode != 0 and "pytest_configure" in proc.stdout + proc.stderr
    else:  # the re-exec'd run reports to the terminal the user is watching
        assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
