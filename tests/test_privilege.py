"""Least privilege, verified.

- The compiled module can send two commands only, Identify Controller and Get Log Page 0xD0,
  on a read-only descriptor: every entry point is driven against the fake controller, whose
  log must hold nothing else; its C interface and the shared object's symbols offer no other.
- The exporter opens no path but NVMe nodes under its device directory, its sysfs tree and
  Python's own files, whatever names a crafted sysfs or EBS_DEVICE carries (strace).
- The HTTP server answers its documented paths, GET and HEAD only, and refuses oversized heads.
- It serves with a read-only root filesystem and no capability but CAP_SYS_ADMIN.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ci import require_tool, unavailable
from exporter_harness import Exporter, FakeHost, samples, value
from pagesource import stats_page
from reliability import WrappedExporter, capabilities

import nvme_ebs
from ebs_exporter.sources import HostSource
from nvme_ebs import VolumeKind, _native, _nvme_ebs_c, cli
from nvme_ebs import testing as pg
from nvme_ebs._nvme_ebs_c import ffi, lib

REPO = Path(__file__).resolve().parents[1]
WAIT = 30.0  # generous bound for a request or a process to answer
CAP_SYS_ADMIN = 21
NVME_NAME = re.compile(r"nvme[0-9]+(?:n[0-9]+)?")

# The only two commands, field for field as the fake controller logs them.
_ZERO = {"flags": 0, "cdw11": 0, "cdw12": 0, "cdw13": 0, "cdw14": 0, "cdw15": 0, "metadata_len": 0, "timeout_ms": 0}
IDENTIFY = {**_ZERO, "opcode": 0x06, "nsid": 0, "cdw10": 0x1, "data_len": 0x1000, "addr": 1, "access": "rdonly"}
LOG_PAGE_D0 = {
    **_ZERO,
    "opcode": 0x02,
    "nsid": 1,
    "cdw10": 0x03FF00D0,
    "data_len": 0x1000,
    "addr": 1,
    "access": "rdonly",
}
COMMAND_FUNCTIONS = {"nvme_ebs_identify", "nvme_ebs_get_stats_page", "nvme_ebs_read_stats"}
DECODERS = {"nvme_ebs_decode_stats", "nvme_ebs_decode_identity"}
# The kernel's timeout for the two commands, and malloc's parameters of the process: nothing else.
SETTINGS = {"nvme_ebs_set_timeout_ms", "nvme_ebs_tune_malloc"}
# Text from decoded pages, and a decoded page's counts compared with the last: no device, no file.
RENDERER = {"nvme_ebs_render_next", "nvme_ebs_unwrap"}
EXPORTER_TIMEOUT_MS = 2500  # the test's --device.kernel-timeout (off by default), passed to the kernel
# What the shared object may import besides the Python C API: the calls of one open, fstat,
# ioctl and close, and what compilers emit on their own. Nothing that writes or maps.
ALLOWED_IMPORTS = re.compile(
    r"_?Py\w+|open(64)?|__open(64)?(_2)?|close|fstat(64)?|__fxstat(64)?|ioctl|__errno_location"
    r"|mem(set|cpy|move|cmp)|__mem\w+_chk|str(len|nlen|cmp)|__stack_chk_fail"
    r"|__cxa_finalize|__gmon_start__|_ITM_\w+"
    # the renderer's numbers (formatted into memory, read back) and malloc's parameters
    r"|snprintf|__snprintf_chk|strto[dl]|strchr|ldexp|mallopt"
)


def read_only_devices(host: FakeHost) -> None:
    """Four controllers answering differently, so that every code path sends what it sends."""
    host.attach("nvme1", "vol01111111111111111", stats_page(1))
    host.attach("nvme2", "QM0002", None, VolumeKind.OTHER)  # refuses the page: identify follows
    host.fake.fail_status("nvme2", 0x2109)
    host.attach("nvme3", "vol03333333333333333", stats_page(3, magic=0xBAD))
    host.attach("nvme4", "vol04444444444444444", stats_page(4))
    host.fake.fail_errno("nvme4", errno.EACCES)


def _swallow(call: Callable[..., object], *args: object) -> None:
    """Calls an entry point for the commands it sends; the failures are the fake's doing."""
    with contextlib.suppress(nvme_ebs.NvmeEbsError):
        call(*args)


def _pair(result: Any) -> tuple[int, int]:
    return (result.kind, result.code)


def test_only_identify_and_log_page_d0_are_ever_sent(
    tmp_path: Path, fake_host: FakeHost, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    host = fake_host
    read_only_devices(host)
    for key, val in host.fake.env().items():  # the fake answers this process's ioctls too
        monkeypatch.setenv(key, val)
    names = ["nvme1", "nvme2", "nvme3", "nvme4"]
    paths = [str(host.fake.dev_path(n)) for n in names]
    page, out = ffi.new("uint8_t[]", _native.PAGE_SIZE), ffi.new("struct nvme_ebs_stats *")
    calls = 0
    for path in paths:
        # the typed API, the private module and the compiled functions themselves
        for entry in (nvme_ebs.DeviceNode(path),):
            for method in (entry.identify, entry.read_stats, entry.read_stats_page):
                _swallow(method)
                calls += 1
        for function in (_native.identify, _native.read_stats, _native.read_stats_page):
            _swallow(function, path)
            calls += 1
        answers = {  # as the four controllers were told to answer
            (lib.NVME_EBS_RESULT_OK, 0),
            (lib.NVME_EBS_RESULT_ERRNO, errno.EACCES),
            (lib.NVME_EBS_RESULT_NVME_STATUS, 0x2109),
        }
        bad_magic = (lib.NVME_EBS_RESULT_DECODE, lib.NVME_EBS_ERR_MAGIC)
        assert _pair(lib.nvme_ebs_identify(path.encode(), page)) in answers
        assert _pair(lib.nvme_ebs_get_stats_page(path.encode(), page)) in answers
        assert _pair(lib.nvme_ebs_read_stats(path.encode(), page, out)) in {*answers, bad_magic}
        calls += 3
        # the CLI, in process
        cli.main(["stats", path])
        cli.main(["stats", path, "--json"])
        calls += 2
    source = HostSource(str(host.sysfs.root), str(host.dev))
    for device in source.discover():
        _swallow(source.identify, device)
        _swallow(source.read_stats, device)
        calls += 2
    assert cli.main(["list", "--path.sysfs", str(host.sysfs.root), "--path.dev", str(host.dev)]) == 0
    top = ["top", "--path.sysfs", str(host.sysfs.root), "--path.dev", str(host.dev), "--interval", "0.01"]
    assert cli.main([*top, "--count", "1"]) == 0
    assert cli.main(["stats", paths[0], "--interval", "0.01", "--count", "1"]) == 0
    dump = tmp_path / "page.bin"
    dump.write_bytes(_native.read_stats_page(paths[0]))
    assert cli.main(["decode", str(dump)]) == 0
    nvme_ebs.parse_log_page(dump.read_bytes())
    capsys.readouterr()
    # the CLI and the exporter as processes
    env = host.env()
    for argv in (
        [sys.executable, "-m", "nvme_ebs", "list", "--path.sysfs", str(host.sysfs.root), "--path.dev", str(host.dev)],
        [str(Path(sys.executable).with_name("nvme-ebs")), "stats", paths[0], "--json"],
    ):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    with Exporter(host.args(), env) as running:  # by default the kernel's own timeout: timeout_ms 0
        assert value(running.metrics(), "ebs_device_up", device="nvme1n1") == 1
    with Exporter([*host.args(), f"--device.kernel-timeout={EXPORTER_TIMEOUT_MS / 1000:g}"], env) as running:
        assert value(running.metrics(), "ebs_device_up", device="nvme1n1") == 1

    commands = [c for n in names for c in host.fake.commands(n)]
    assert len(commands) >= calls  # the calls reached the fake (a few send two commands)
    assert {c["timeout_ms"] for c in commands} == {0, EXPORTER_TIMEOUT_MS}
    shapes = [{**c, "timeout_ms": 0} for c in commands]
    strays = [c for c in shapes if c not in (IDENTIFY, LOG_PAGE_D0)]
    assert strays == []
    for name in names:  # both shapes were seen on every controller: the comparison is not vacuous
        assert IDENTIFY in host.fake.commands(name) and LOG_PAGE_D0 in host.fake.commands(name), name


def test_compiled_module_offers_no_generic_passthrough() -> None:
    functions = {n for n in dir(lib) if callable(getattr(lib, n))}
    assert functions == COMMAND_FUNCTIONS | DECODERS | SETTINGS | RENDERER
    assert ffi.typeof(lib.nvme_ebs_set_timeout_ms).cname == "void(*)(uint32_t)"
    assert all(isinstance(getattr(lib, n), int) for n in set(dir(lib)) - functions)
    for name in COMMAND_FUNCTIONS:
        ctype = ffi.typeof(getattr(lib, name))
        # a path and output buffers only: no opcode, no command dword, no length to choose
        assert [a.kind for a in ctype.args] == ["pointer"] * len(ctype.args), (name, ctype)
        assert ctype.args[0].cname == "char *"
    with pytest.raises(ffi.error):
        ffi.typeof("struct nvme_passthru_cmd")

    nm = require_tool("nm", "binutils")
    so = _nvme_ebs_c.__file__
    defined = subprocess.run([nm, "-D", "--defined-only", so], capture_output=True, text=True, check=True).stdout
    exported = {f[2] for f in (line.split() for line in defined.splitlines()) if len(f) == 3 and f[1] in "TW"}
    assert exported == {"PyInit__nvme_ebs_c"} | COMMAND_FUNCTIONS | DECODERS | SETTINGS | RENDERER
    undefined = subprocess.run([nm, "-D", "--undefined-only", so], capture_output=True, text=True, check=True).stdout
    imports = {line.split()[-1].split("@")[0] for line in undefined.splitlines() if line.strip()}
    assert {"ioctl", "close"} <= imports
    assert sorted(i for i in imports if not ALLOWED_IMPORTS.fullmatch(i)) == []


# ---------------------------------------------------------------------------------------------
# What the exporter opens, under strace, against a crafted sysfs and crafted EBS_DEVICE names.

# Names that are not device names are refused at start (test below); these pass that check and
# must still lead nowhere but to the discovered controllers.
CRAFTED_EBS_DEVICE = "/etc/nvme1n1,../../nvme9n1,/dev/../etc/nvme8,nvme*"
HOSTILE_EBS_DEVICE = "../../etc/shadow,/etc/passwd,/dev/../etc/passwd,/dev/nvme1n1/../../etc/passwd,*"


@dataclass(frozen=True)
class Open:
    syscall: str
    path: str  # as asked, made absolute with the directory descriptor's path
    flags: str
    result: str  # what the call returned: the descriptor's path, or the error


def _unescape(text: str) -> str:
    return codecs.escape_decode(text.encode())[0].decode("utf-8", "surrogateescape")


_CALL = re.compile(r"(\d+) +(open|openat|openat2|creat|listen)\((.*)$")
_RESUMED = re.compile(r"(\d+) +<\.\.\. (\w+) resumed>(.*)$")
_OPEN_ARGS = re.compile(r'(?:(AT_FDCWD|-?\d+)(?:<([^>]*)>)?, )?"((?:[^"\\]|\\.)*)"(?:, ([A-Z_|0-9]+))?')


def parse_trace(text: str) -> list[Open | None]:
    """The open calls of an `strace -f -y -s 4096` log, in order; None marks listen()."""
    pending: dict[str, str] = {}
    calls: list[Open | None] = []
    for line in text.splitlines():
        resumed = _RESUMED.match(line)
        if resumed:
            if resumed.group(1) not in pending:
                continue
            line = pending.pop(resumed.group(1)) + resumed.group(3)
        call = _CALL.match(line)
        if call is None:
            continue
        if line.endswith("<unfinished ...>"):
            pending[call.group(1)] = line[: -len("<unfinished ...>")]
            continue
        if call.group(2) == "listen":
            calls.append(None)
            continue
        args = _OPEN_ARGS.match(call.group(3))
        assert args is not None, line
        path = _unescape(args.group(3))
        if not path.startswith("/"):
            path = os.path.join(_unescape(args.group(2) or ""), path)
        result = line.rsplit(") = ", 1)[-1] if ") = " in line else ""
        calls.append(Open(call.group(2), path, args.group(4) or "", result))
    return calls


def resolved(result: str) -> str | None:
    """The path strace printed for the descriptor an open returned (-y), None on failure."""
    m = re.fullmatch(r"\d+<(.*)>", result.strip())
    return _unescape(m.group(1)) if m else None


def craft_sysfs(root: Path, host: FakeHost) -> None:
    """Hostile names and links beside one real volume (names with '/' cannot exist at all)."""
    classes = host.sysfs.class_dir
    real = host.sysfs.add_ebs("nvme1", "vol01111111111111111")
    host.fake.add("nvme1", pg.encode_identify("vol01111111111111111"), stats_page(1))
    for name in ("nvme1n1x", "nvme4\n", "nvme\u0663", "nvme 5", "..nvme5", "nvme5\t"):
        d = classes / name
        d.mkdir()
        (d / "model").write_text("Amazon Elastic Block Store\n")
        (d / "serial").write_text("vol0eeeeeeeeeeeeeeee\n")
    os.symlink("/etc", classes / "nvme0")  # a controller entry pointing out of sysfs, absolute
    outside = root / "outside" / "nvme6"
    outside.mkdir(parents=True)
    (outside / "model").write_text("Amazon Elastic Block Store\n")
    (outside / "serial").write_text("vol06666666666666666\n")
    (outside / "nvme6n1").mkdir()
    os.symlink(os.path.relpath(outside, classes), classes / "nvme6")  # ... and relative, with ../
    # namespace entries of the real controller: odd names, and one pointing at /etc/passwd
    for name in ("nvme1n1\n", "nvme1n..", "nvme1n1 ", "nvme1n\u0661", ".nvme1n9"):
        (real / name).mkdir()
    os.symlink("/etc/passwd", real / "nvme1n2")


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeHost, list[Open | None], str]]:
    strace = require_tool("strace", "strace")
    root = tmp_path_factory.mktemp("traced")
    host = FakeHost(root / "host")
    craft_sysfs(root, host)
    log = root / "trace.log"
    prefix = [strace, "-f", "-y", "-s", "4096", "-e", "trace=open,openat,openat2,creat,listen", "-o", str(log)]
    env = {**host.env(), "EBS_DEVICE": CRAFTED_EBS_DEVICE}
    running = WrappedExporter(prefix, host.args(), env)
    try:
        text = running.metrics()
        text = running.metrics()
    finally:
        running.stop(signal.SIGKILL)  # strace would detach on SIGTERM; the trace is complete either way
    yield host, parse_trace(log.read_text()), text


def _python_roots() -> list[str]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *sysconfig.get_paths().values()}
    roots |= {str(REPO / "ebs_exporter"), str(REPO / "nvme_ebs")}
    return sorted(os.path.realpath(r) + "/" for r in roots) + sorted(r + "/" for r in roots)


def test_only_nvme_nodes_sysfs_and_python_files_are_opened(traced: tuple[FakeHost, list[Open | None], str]) -> None:
    host, calls, text = traced
    assert None in calls, "no listen() in the trace"
    serving = calls[calls.index(None) + 1 :]
    dev = str(host.dev) + "/"
    allowed = [
        str(host.sysfs.root) + "/",
        str(host.fake.root / "ctl") + "/",  # the fake controller (the LD_PRELOAD test double) itself
        "/proc/self/",  # prometheus_client's process metrics
        "/etc/localtime",  # libc, for the log's timestamps
        "/usr/share/zoneinfo/",
        *_python_roots(),
    ]
    device_opens = []
    for call in serving:
        assert call is not None
        if "O_PATH" in call.flags.split("|"):  # a location handle (discovery resolves links): nothing is opened
            assert call.path.startswith(str(host.sysfs.root)), call
            continue
        assert ".." not in call.path.split("/"), call
        if call.path.startswith(dev):
            device_opens.append(call)
            assert NVME_NAME.fullmatch(call.path[len(dev) :]), call
            assert set(call.flags.split("|")) == {"O_RDONLY", "O_NONBLOCK", "O_CLOEXEC"}, call
            assert resolved(call.result) in (None, call.path), call  # no link out of the device directory
        else:
            assert any(call.path.startswith(a) or call.path == a for a in allowed), call
    opened = {c.path[len(dev) :] for c in device_opens}
    assert "nvme1" in opened  # the real volume was read: the trace covers the scrape
    assert opened <= {"nvme0", "nvme1", "nvme6"}  # the controllers discovery found, nothing named
    everything = [c for c in calls if c is not None]
    for secret in ("/etc/passwd", "/etc/shadow"):
        assert not [c for c in everything if c.path == secret or resolved(c.result) == secret], secret

    parsed = samples(text)
    assert value(text, "ebs_device_up", device="nvme1n1") == 1
    devices = {dict(k[1])["device"] for k in parsed if "device" in dict(k[1])}
    assert {d for d in devices if not NVME_NAME.fullmatch(d)} == set()
    for named in ("nvme9n1", "nvme8"):  # named, not discovered: reported, never opened
        assert value(text, "ebs_device_up", device=named) == 0


def test_sysfs_links_out_of_the_tree_are_not_followed(traced: tuple[FakeHost, list[Open | None], str]) -> None:
    host, calls, _ = traced
    serving = calls[calls.index(None) + 1 :]
    root = os.path.realpath(host.sysfs.root) + "/"
    escaped = [
        c
        for c in serving
        if c is not None
        and "O_PATH" not in c.flags.split("|")  # resolving where a link leads is how it is refused
        and c.path.startswith(str(host.sysfs.root) + "/")
        and not (resolved(c.result) or root).startswith(root)
    ]
    assert escaped == []


def test_a_name_given_twice_in_ebs_device_is_one_series(fake_host: FakeHost) -> None:
    host = fake_host
    host.attach("nvme1", "vol01111111111111111", stats_page(1))
    env = {**host.env(), "EBS_DEVICE": "/etc/nvme7n1,/dev/../nvme7n1,nvme1n1,/dev/nvme1n1"}
    with Exporter(host.args(), env) as running:
        running.metrics()
        text = running.metrics()
    lines = [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert sorted({line for line in lines if lines.count(line) > 1}) == []
    assert value(text, "ebs_device_errors_total", device="nvme7n1", reason="not_found") == 2  # one per scrape


def test_names_that_are_not_device_names_are_refused_at_start(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    env = {**host.env(), "EBS_DEVICE": HOSTILE_EBS_DEVICE}
    result = subprocess.run(
        [sys.executable, "-m", "ebs_exporter", *host.args()], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.startswith("ebs-exporter: invalid value ") and "for EBS_DEVICE (environment)" in result.stderr
    assert result.stderr.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# The HTTP surface of the real exporter process.


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    host = FakeHost(tmp_path_factory.mktemp("served"))
    host.attach("nvme1", "vol01111111111111111", stats_page(1))
    with Exporter(host.args(), host.env()) as running:
        yield running


def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends `data` as is, reads until the server closes: status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
    return int(status_line.split(" ")[1]), headers, body


def request(port: int, method: str, target: str, extra: str = "") -> tuple[int, dict[str, str], bytes]:
    return raw_request(port, f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode())


@pytest.mark.parametrize(
    ("target", "kind"), [("/", "text/html"), ("/healthz", "text/plain"), ("/metrics", "text/plain")]
)
def test_documented_paths_answer(served: Exporter, target: str, kind: str) -> None:
    status, got, body = request(served.port, "GET", target)
    assert status == 200 and got["content-type"].startswith(kind) and body
    status, headers, body = request(served.port, "HEAD", target)
    # HEAD: the framing a GET gets (/metrics is sent as it is written: chunked), and no body.
    framing = {k: v for k, v in got.items() if k in ("content-length", "transfer-encoding")}
    assert status == 200 and body == b"" and framing
    assert {k: v for k, v in headers.items() if k in framing} == framing


@pytest.mark.parametrize(
    "target",
    [
        "/metrics/",
        "/metrics/../etc/passwd",
        "/..%2f..%2fetc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "//etc/passwd",
        "/etc/passwd",
        "/./metrics",
        "/METRICS",
        "/metrics%00",
        "/healthz/",
        "/etc/",
        "/ebs_exporter/",
        "/tests/",
        "/.git/config",
        "/proc/self/environ",
        "/index.html",
        "/favicon.ico",
        "/debug/pprof/",
        "http://127.0.0.1/etc/passwd",
        "*",
    ],
)
def test_anything_else_is_404_without_content(served: Exporter, target: str) -> None:
    status, _, body = request(served.port, "GET", target)
    assert status == 404
    assert len(body) < 200 and b"root:" not in body and b"<a " not in body and b"Index of" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "CONNECT"])
def test_methods_other_than_get_and_head_are_405(served: Exporter, method: str) -> None:
    status, headers, _ = request(served.port, method, "/metrics")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, _, _ = request(served.port, method, "/metrics", "Content-Length: 5\r\n")
    assert status == 405


@pytest.mark.parametrize(
    "data",
    [
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
        + b"\r\n",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 9000 + b"\r\n\r\n",
    ],
    ids=["request-line", "many-headers", "one-long-header"],
)
def test_oversized_request_heads_are_431(served: Exporter, data: bytes) -> None:
    assert raw_request(served.port, data)[0] == 431
    assert request(served.port, "GET", "/healthz")[0] == 200  # and the server goes on


# ---------------------------------------------------------------------------------------------
# A read-only root filesystem and one capability.

# Inside a private mount namespace: a tmpfs (stays writable) receives a copy of the fake host,
# then / is remounted read-only and the exporter runs with the capabilities setpriv leaves it.
NAMESPACE_SCRIPT = """set -e
mount -t tmpfs -o mode=0755 ebs-exporter-test "$RW"
cp -a "$SRC"/. "$RW"/
mount -o remount,bind,ro /
exec setpriv --bounding-set="$BOUNDING" --inh-caps=-all -- "$@"
"""


def _mount_options(pid: int, mount_point: str) -> tuple[str, set[str]]:
    """(fstype, per-mount options) of the mount at mount_point, as the process sees it."""
    with open(f"/proc/{pid}/mountinfo", encoding="ascii", errors="replace") as f:
        for line in reversed(f.read().splitlines()):  # the last mount on a point is the visible one
            fields = line.split()
            if fields[4] == mount_point:
                return fields[fields.index("-") + 1], set(fields[5].split(","))
    raise AssertionError(f"{mount_point} is not a mount point for pid {pid}")


@pytest.mark.parametrize(("bounding", "caps"), [("-all,+sys_admin", 1 << CAP_SYS_ADMIN), ("-all", 0)])
def test_serves_on_a_read_only_root_with_only_cap_sys_admin(tmp_path: Path, bounding: str, caps: int) -> None:
    for tool, package in (("unshare", "util-linux"), ("setpriv", "util-linux"), ("mount", "mount")):
        require_tool(tool, package)
    if os.geteuid() != 0:
        unavailable("mount namespaces and setpriv need root")
    src, rw = tmp_path / "host", tmp_path / "rw"
    rw.mkdir()
    host = FakeHost(src)
    host.attach("nvme1", "vol01111111111111111", stats_page(1))
    args = [f"--path.sysfs={rw}/sys", f"--path.dev={rw}/fake/dev"]
    env = {**host.env(), "FAKENVME_ROOT": f"{rw}/fake", "SRC": str(src), "RW": str(rw), "BOUNDING": bounding}
    prefix = ["unshare", "--mount", "--propagation", "private", "sh", "-c", NAMESPACE_SCRIPT, "sh"]
    with WrappedExporter(prefix, args, env) as running:
        pid = running.pid
        assert pid == running.proc.pid  # unshare, sh and setpriv each exec'd the next
        got = capabilities(pid)
        assert {k: got[k] for k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == {
            "CapInh": 0,
            "CapPrm": caps,
            "CapEff": caps,
            "CapBnd": caps,
            "CapAmb": 0,
        }
        assert "ro" in _mount_options(pid, "/")[1]
        fstype, options = _mount_options(pid, str(rw))
        assert fstype == "tmpfs" and "rw" in options
        text = running.metrics()
        assert value(text, "ebs_device_up", device="nvme1n1") == 1  # the fake does not check capabilities
        assert value(text, "ebs_read_ops_total", volume_id="vol-01111111111111111", device="nvme1n1") == (
            nvme_ebs.parse_log_page(stats_page(1)).total_read_ops
        )
        assert running.get("/healthz")[0] == 200
    assert not [line for line in running.log if "Traceback" in line or "level=error" in line], running.log
