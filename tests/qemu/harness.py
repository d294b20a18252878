"""Boot a real Linux NVMe driver under QEMU and run the project's code against it.

Host side of the kernel tests (``tests/test_kernel.py``):

* :func:`prepare_image` builds, once, a Debian kernel and a busybox initramfs in
  ``<repo>/build/qemu/kernel-<version>/`` and reuses them while their manifest still
  matches (kernel package, ``init.sh``, busybox, module list).
* :func:`boot` starts QEMU (TCG only, never KVM) with an emulated NVMe controller and the
  host root shared read-only over 9p; the guest chroots into an overlay of it and runs
  ``guest_checks.py`` with this very interpreter.  Results come back as JSON lines
  carrying a per-run prefix on the serial console.

Run by hand: ``python tests/qemu/harness.py [--prepare-only] [--timeout S]``; with a page dump,
``python tests/qemu/harness.py --ebs-pages DIR --scrape OUT`` serves each ``SERIAL.d0`` in DIR
as an emulated EBS controller (tests/nvmetcp) and writes one scrape of the exporter to OUT.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE_DIR = REPO / "build" / "qemu"
INIT_SCRIPT = HERE / "init.sh"
GUEST_SCRIPT = HERE / "guest_checks.py"

CACHE_FORMAT = 1
INITRD_LAYOUT = "2"  # bump whenever _build_initrd changes what goes into the image
# Order matters only for readability: modprobe resolves each one's dependencies.
MODULES = (
    "nvme",
    "9p",
    "9pnet_virtio",
    "virtio_pci",
    "overlay",
    "nvmet",
    "nvmet-tcp",
    "nvme-tcp",
    "nvme-fabrics",
)
QEMU_NVME_SERIAL = "vol0123456789abcdef0"
DISK_BYTES = 64 * 1024 * 1024
DEFAULT_TIMEOUT_S = 240.0
SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"


class HarnessUnavailable(RuntimeError):
    """This host cannot boot the guest (no QEMU, no kernel package, no busybox...)."""


@dataclasses.dataclass(frozen=True)
class GuestImage:
    kernel_version: str
    vmlinuz: Path
    initrd: Path
    modules: tuple[str, ...]
    prepared_seconds: float  # 0.0 when the cache was reused


@dataclasses.dataclass(frozen=True)
class BootResult:
    tag: str
    command: tuple[str, ...]
    returncode: int | None
    timed_out: bool
    wall_seconds: float
    console: str
    console_log: Path
    records: tuple[dict[str, Any], ...]
    garbled: tuple[str, ...]

    @property
    def checks(self) -> dict[str, dict[str, Any]]:
        """The guest's check records by name (the last one wins)."""
        return {r["check"]: r for r in self.records if "check" in r}

    @property
    def events(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "event" in r]

    @property
    def finished(self) -> bool:
        """True when the guest script ran to its end."""
        return any(r.get("event") == "done" for r in self.records)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.console.splitlines()[-lines:])

    def summary(self) -> str:
        state = "timed out" if self.timed_out else f"exit {self.returncode}"
        return (
            f"QEMU boot {self.wall_seconds:.1f} s wall ({state}), "
            f"{len(self.checks)} checks, console log {self.console_log}"
        )


# --------------------------------------------------------------------------- helpers


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=SBIN_PATH)


def _need(name: str, package: str) -> str:
    path = _which(name)
    if path is None:
        raise HarnessUnavailable(f"{name} not found (apt-get install {package})")
    return path


def _clean_env() -> dict[str, str]:
    """Our environment minus test-only interposers (tests/conftest.py preloads a fake NVMe)."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("LD_PRELOAD", "LD_LIBRARY_PATH") and not k.startswith("FAKENVME")
    }


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True, check=False)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_static_elf(path: Path) -> bool:
    """True for an ELF file without a PT_INTERP program header (no dynamic loader)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    for i in range(phnum):
        p_type = int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        if p_type == 3:  # PT_INTERP
            return False
    return True


def _find_busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file() and _is_static_elf(path):
            return path
    raise HarnessUnavailable("no static busybox (apt-get install busybox-static)")


@contextlib.contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_manifest(kdir: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((kdir / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == CACHE_FORMAT else None


def _write_manifest(kdir: Path, manifest: dict[str, Any]) -> None:
    tmp = kdir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(kdir / "manifest.json")


# --------------------------------------------------------------------------- kernel


def resolve_kernel_version() -> str:
    """The ``<abi>-amd64`` release that Debian's linux-image-amd64 currently points to."""
    apt_cache = _need("apt-cache", "apt")
    proc = _run([apt_cache, "depends", "linux-image-amd64"])
    match = re.search(r"Depends:\s*linux-image-(\S+-amd64)\s*$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise HarnessUnavailable(f"cannot resolve linux-image-amd64: {proc.stderr.strip()[-200:]}")
    return match.group(1)


def _kernel_valid(kdir: Path, manifest: dict[str, Any] | None) -> bool:
    if manifest is None or manifest.get("kernel_version") != kdir.name.removeprefix("kernel-"):
        return False
    vmlinuz = kdir / "vmlinuz"
    if not vmlinuz.is_file() or _sha256(vmlinuz) != manifest.get("vmlinuz_sha256"):
        return False
    if manifest.get("module_names") != list(MODULES):
        return False
    modules = manifest.get("modules")
    return isinstance(modules, list) and all((kdir / "modules" / m).is_file() for m in modules)


def _download_kernel(package: str, workdir: Path) -> Path:
    apt_get = _need("apt-get", "apt")
    proc = _run([apt_get, "download", package], cwd=workdir)
    if proc.returncode != 0:
        _run([apt_get, "update"])  # stale package lists are the usual cause
        proc = _run([apt_get, "download", package], cwd=workdir)
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise HarnessUnavailable(f"apt-get download {package} failed: {proc.stderr.strip()[-300:]}")
    return debs[-1]


def _module_order(root: Path, kernel_version: str) -> list[Path]:
    """The .ko files to insmod, dependencies first, each once."""
    modprobe = _need("modprobe", "kmod")
    order: list[Path] = []
    for name in MODULES:
        proc = _run([modprobe, "-d", str(root), "-S", kernel_version, "--show-depends", name])
        if proc.returncode != 0:
            raise HarnessUnavailable(f"modprobe --show-depends {name}: {proc.stderr.strip()[-200:]}")
        for line in proc.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "insmod":
                path = Path(fields[1])
                if path not in order:
                    order.append(path)
            elif fields and fields[0] != "builtin":
                raise HarnessUnavailable(f"unexpected modprobe output for {name}: {line!r}")
    names = [p.name for p in order]
    if len(set(names)) != len(names):
        raise HarnessUnavailable(f"module file names collide: {names}")
    return order


def _fetch_kernel(kernel_version: str, kdir: Path) -> None:
    dpkg_deb = _need("dpkg-deb", "dpkg")
    depmod = _need("depmod", "kmod")
    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=kdir.parent))
    try:
        deb = _download_kernel(f"linux-image-{kernel_version}", work)
        root = work / "root"
        proc = _run([dpkg_deb, "-x", str(deb), str(root)])
        if proc.returncode != 0:
            raise HarnessUnavailable(f"dpkg-deb -x failed: {proc.stderr.strip()[-200:]}")
        proc = _run([depmod, "-b", str(root), kernel_version])
        if proc.returncode != 0:
            raise HarnessUnavailable(f"depmod failed: {proc.stderr.strip()[-200:]}")
        order = _module_order(root, kernel_version)
        staged = work / "kernel"
        (staged / "modules").mkdir(parents=True)
        vmlinuz = staged / "vmlinuz"
        shutil.copyfile(root / "boot" / f"vmlinuz-{kernel_version}", vmlinuz)
        for ko in order:
            shutil.copyfile(ko, staged / "modules" / ko.name)
        _write_manifest(
            staged,
            {
                "format": CACHE_FORMAT,
                "kernel_version": kernel_version,
                "package": deb.name,
                "vmlinuz_sha256": _sha256(vmlinuz),
                "module_names": list(MODULES),
                "modules": [ko.name for ko in order],
            },
        )
        if kdir.exists():
            shutil.rmtree(kdir)
        staged.rename(kdir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- initramfs


def _initrd_inputs() -> dict[str, str]:
    return {
        "layout": INITRD_LAYOUT,
        "init_sha256": _sha256(INIT_SCRIPT),
        "busybox_sha256": _sha256(_find_busybox()),
    }


def _initrd_valid(kdir: Path, manifest: dict[str, Any]) -> bool:
    initrd = manifest.get("initrd")
    path = kdir / "initrd.img"
    return (
        isinstance(initrd, dict)
        and path.is_file()
        and initrd.get("sha256") == _sha256(path)
        and all(initrd.get(k) == v for k, v in _initrd_inputs().items())
    )


def _build_initrd(kdir: Path, manifest: dict[str, Any]) -> None:
    cpio = _need("cpio", "cpio")
    busybox = _find_busybox()
    work = Path(tempfile.mkdtemp(prefix="initrd-", dir=kdir))
    try:
        tree = work / "tree"
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "etc", "lib/modules", "tmp"):
            (tree / d).mkdir(parents=True)
        shutil.copyfile(busybox, tree / "bin" / "busybox")
        (tree / "bin" / "busybox").chmod(0o755)
        (tree / "bin" / "sh").symlink_to("busybox")  # the interpreter of /init
        shutil.copyfile(INIT_SCRIPT, tree / "init")
        (tree / "init").chmod(0o755)
        for name in manifest["modules"]:
            shutil.copyfile(kdir / "modules" / name, tree / "lib" / "modules" / name)
        (tree / "etc" / "ebsq-modules").write_text("".join(f"{m}\n" for m in manifest["modules"]))
        names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
        image = work / "initrd.img"
        with image.open("wb") as out:
            proc = subprocess.run(
                [cpio, "-o", "-H", "newc", "-R", "0:0", "--quiet"],
                cwd=tree,
                env=_clean_env(),
                input="\n".join(names).encode() + b"\n",
                stdout=out,
                stderr=subprocess.PIPE,
                check=False,
            )
        if proc.returncode != 0:
            raise HarnessUnavailable(f"cpio failed: {proc.stderr.decode(errors='replace')[-200:]}")
        image.replace(kdir / "initrd.img")
        manifest["initrd"] = {"sha256": _sha256(kdir / "initrd.img"), **_initrd_inputs()}
        _write_manifest(kdir, manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cached_versions(cache_dir: Path) -> list[str]:
    found = []
    for kdir in sorted(cache_dir.glob("kernel-*")):
        manifest = _read_manifest(kdir)
        if _kernel_valid(kdir, manifest):
            found.append(kdir.name.removeprefix("kernel-"))
    return found


def prepare_image(cache_dir: Path = CACHE_DIR) -> GuestImage:
    """Kernel + initramfs for the current Debian kernel ABI, built once and cached."""
    _need("qemu-system-x86_64", "qemu-system-x86")
    _find_busybox()
    started = time.monotonic()
    with _locked(cache_dir):
        try:
            kernel_version = resolve_kernel_version()
        except HarnessUnavailable:
            cached = _cached_versions(cache_dir)
            if not cached:
                raise
            kernel_version = cached[-1]  # no apt here: any valid cached kernel will do
        kdir = cache_dir / f"kernel-{kernel_version}"
        rebuilt = False
        if not _kernel_valid(kdir, _read_manifest(kdir)):
            _fetch_kernel(kernel_version, kdir)
            rebuilt = True
        manifest = _read_manifest(kdir)
        assert manifest is not None
        if not _initrd_valid(kdir, manifest):
            _build_initrd(kdir, manifest)
            rebuilt = True
    return GuestImage(
        kernel_version=kernel_version,
        vmlinuz=kdir / "vmlinuz",
        initrd=kdir / "initrd.img",
        modules=tuple(manifest["modules"]),
        prepared_seconds=time.monotonic() - started if rebuilt else 0.0,
    )


# --------------------------------------------------------------------------- boot


def _host_python() -> tuple[str, list[str], list[str]]:
    """The real interpreter running us, our sys.path and the site dirs whose .pth matter."""
    python = os.path.realpath(sys.executable)
    paths = [os.path.abspath(p or os.getcwd()) for p in sys.path]
    paths = [p for p in dict.fromkeys(paths) if os.path.exists(p)]
    site_dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        site_dirs.append(site.getusersitepackages())
    site_dirs += [p for p in paths if p.endswith(("site-packages", "dist-packages"))]
    site_dirs = [p for p in dict.fromkeys(site_dirs) if os.path.isdir(p)]
    return python, paths, site_dirs


def _parse_console(text: str, prefix: str) -> tuple[list[dict[str, Any]], list[str]]:
    records: list[dict[str, Any]] = []
    garbled: list[str] = []
    for line in text.splitlines():
        at = line.find(prefix)
        if at < 0:
            continue
        payload = line[at + len(prefix) :].strip()
        try:
            record = json.loads(payload)
        except ValueError:
            garbled.append(line)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            garbled.append(line)
    return records, garbled


def _check_path(path: Path) -> str:
    text = str(path)
    if re.search(r"[\s,\"']", text):
        raise HarnessUnavailable(f"path unusable on a kernel/QEMU command line: {text!r}")
    return text


def boot(
    image: GuestImage,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    cache_dir: Path = CACHE_DIR,
    guest_options: dict[str, Any] | None = None,
) -> BootResult:
    """Boot once, run guest_checks.py in the guest, return what came back."""
    qemu = _need("qemu-system-x86_64", "qemu-system-x86")
    (cache_dir / "runs").mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=cache_dir / "runs"))
    tag = secrets.token_hex(8)
    prefix = f"@@EBSQ-{tag}@@ "
    python, sys_path, site_dirs = _host_python()
    config = {
        "prefix": prefix,
        "repo": str(REPO),
        "sys_path": sys_path,
        "site_dirs": site_dirs,
        "qemu_serial": QEMU_NVME_SERIAL,
        **(guest_options or {}),
    }
    config_path = run_dir / "config.json"
    config_path.write_text(json.dumps(config, indent=2))
    guest_sh = run_dir / "guest.sh"
    guest_sh.write_text(
        "#!/bin/sh\n"
        f"cd {shlex.quote(str(REPO))} || exit 90\n"
        "exec env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
        "HOME=/root LANG=C.UTF-8 TMPDIR=/tmp "
        f"{shlex.quote(python)} -I -B {shlex.quote(str(GUEST_SCRIPT))} {shlex.quote(str(config_path))}\n"
    )
    disk = run_dir / "nvme0.img"
    with disk.open("wb") as f:
        f.truncate(DISK_BYTES)  # sparse
    console_path = run_dir / "console.log"
    append = " ".join(
        [
            "console=ttyS0",
            "panic=-1",
            "quiet",
            "loglevel=3",
            f"ebsq_tag={tag}",
            f"ebsq_run={_check_path(guest_sh)}",
        ]
    )
    command = (
        qemu,
        "-accel", "tcg",
        "-cpu", "max",
        "-m", "1024",
        "-smp", "1",
        "-nodefaults",
        "-display", "none",
        "-no-reboot",
        "-nic", "none",
        "-serial", f"file:{_check_path(console_path)}",
        "-kernel", _check_path(image.vmlinuz),
        "-initrd", _check_path(image.initrd),
        "-append", append,
        "-drive", f"file={_check_path(disk)},if=none,id=nvm,format=raw",
        "-device", f"nvme,serial={QEMU_NVME_SERIAL},drive=nvm",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    )  # fmt: skip
    qemu_log = run_dir / "qemu.log"
    started = time.monotonic()
    timed_out = False
    with qemu_log.open("wb") as log:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=_clean_env()
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
    wall = time.monotonic() - started
    console = console_path.read_text(errors="replace") if console_path.exists() else ""
    qemu_output = qemu_log.read_text(errors="replace").strip()
    if qemu_output:
        console += f"\n--- qemu output ---\n{qemu_output}\n"
    kept = cache_dir / "last-console.log"
    kept.write_text(console)
    if os.environ.get("EBS_QEMU_KEEP_RUN") != "1":
        shutil.rmtree(run_dir, ignore_errors=True)
    records, garbled = _parse_console(console, prefix)
    return BootResult(
        tag=tag,
        command=command,
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        wall_seconds=wall,
        console=console,
        console_log=kept,
        records=tuple(records),
        garbled=tuple(garbled),
    )


def scrape_page_dump(image: GuestImage, pages: Path, out: Path, timeout: float) -> int:
    """Boot with one emulated controller per SERIAL.d0 in ``pages``; write one scrape to ``out``."""
    result = boot(image, timeout=timeout, guest_options={"ebs_pages": _check_path(pages.resolve())})
    checks = result.checks
    for step in ("emulator", "connect", "scrape"):
        record = checks.get(step)
        if record is None or not record["ok"]:
            if not checks:
                why = "timed out" if result.timed_out else f"no result from the guest ({result.console_log})"
                print(f"harness: boot failed: {why}", file=sys.stderr)
            else:
                why = record["error"]["message"] if record else "not reached"
                print(f"harness: {step} failed: {why} ({result.console_log})", file=sys.stderr)
            return 1
    out.write_text(checks["scrape"]["result"]["text"])
    print(f"{out}: one scrape of {len(list(pages.glob('*.d0')))} emulated volumes; {result.summary()}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare-only", action="store_true", help="build the cached kernel/initramfs")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="hard QEMU timeout (s)")
    parser.add_argument(
        "--ebs-pages",
        type=Path,
        metavar="DIR",
        help="serve one emulated EBS controller per SERIAL.d0 (log page 0xD0 dump) in DIR, "
        "with SERIAL.id as its identify page if present, and scrape the exporter in the guest",
    )
    parser.add_argument("--scrape", type=Path, metavar="OUT", help="with --ebs-pages: where to write the scrape")
    args = parser.parse_args(argv)
    if (args.ebs_pages is None) != (args.scrape is None):
        parser.error("--ebs-pages and --scrape go together")
    if args.ebs_pages is not None and not any(args.ebs_pages.glob("*.d0")):
        print(f"harness: --ebs-pages {args.ebs_pages}: no SERIAL.d0 file", file=sys.stderr)
        return 2
    try:
        image = prepare_image()
    except HarnessUnavailable as exc:
        print(f"unavailable: {exc}", file=sys.stderr)
        return 2
    print(f"kernel {image.kernel_version}, prepared in {image.prepared_seconds:.1f} s", file=sys.stderr)
    if args.prepare_only:
        return 0
    if args.ebs_pages is not None:
        return scrape_page_dump(image, args.ebs_pages, args.scrape, args.timeout)
    result = boot(image, timeout=args.timeout)
    for record in result.records:
        print(json.dumps(record, sort_keys=True))
    print(result.summary(), file=sys.stderr)
    return 0 if result.finished and not result.timed_out else 1


if __name__ == "__main__":
    sys.exit(main())
