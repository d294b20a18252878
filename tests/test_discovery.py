"""nvme_ebs.discover() over fake sysfs trees in the classic and the native-multipath layouts."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from sysfs_fixture import (
    EBS_MODEL,
    EBS_SERIAL,
    INSTANCE_STORE_MODEL,
    INSTANCE_STORE_SERIAL,
    OTHER_MODEL,
    OTHER_SERIAL,
    SysfsTree,
)

import nvme_ebs
from nvme_ebs import NvmeController, VolumeKind

DEV = "/host/dev"
KERNEL_NAME = re.compile(r"nvme[0-9]+(n[0-9]+)?")


@pytest.fixture
def tree(tmp_path: Path) -> SysfsTree:
    return SysfsTree(tmp_path / "sys")


def discover(tree: SysfsTree, dev: str = DEV) -> list[NvmeController]:
    return nvme_ebs.discover(str(tree.root), dev)


def by_controller(devices: list[NvmeController]) -> dict[str, NvmeController]:
    return {d.controller: d for d in devices}


def assert_paths_inside(devices: list[NvmeController], dev: str = DEV) -> None:
    for d in devices:
        for path in (d.controller_path, d.block_device):
            if path is None:
                continue
            assert os.path.dirname(path) == dev, path
            assert os.path.normpath(path) == path, path
            assert KERNEL_NAME.fullmatch(os.path.basename(path)), path


def test_fixture_looks_like_the_kernel(tree: SysfsTree) -> None:
    tree.add_ebs("nvme1")
    tree.add_ebs("nvme3", "vol0fedcba9876543210", multipath_subsystem=2)
    entry = tree.class_dir / "nvme1"
    assert entry.is_symlink()
    assert not os.readlink(entry).startswith("/")
    assert (entry / "model").read_text() == EBS_MODEL.ljust(40) + "\n"
    assert (entry / "serial").read_text() == EBS_SERIAL + "\n"
    assert (entry / "nvme1n1").is_dir()
    assert (tree.class_dir / "nvme3" / "nvme2c3n1").is_dir()
    subsys = tree.subsystem_class_dir / "nvme-subsys2"
    assert subsys.is_symlink()
    assert (subsys / "nvme3").is_symlink()
    assert (subsys / "nvme3").resolve() == (tree.class_dir / "nvme3").resolve()
    assert (subsys / "nvme2n1").is_dir()


def test_classic_layout_classification(tree: SysfsTree) -> None:
    tree.add_other("nvme0")
    tree.add_ebs("nvme1")
    tree.add_instance_store("nvme2")
    devices = discover(tree)
    assert [d.controller for d in devices] == ["nvme0", "nvme1", "nvme2"]
    other, ebs, store = devices

    assert ebs == NvmeController(
        controller="nvme1",
        controller_path="/host/dev/nvme1",
        namespaces=("nvme1n1",),
        block_device="/host/dev/nvme1n1",
        model=EBS_MODEL,
        serial=EBS_SERIAL,
        firmware="1.0",
        kind=VolumeKind.EBS,
        transport="pcie",
    )
    assert ebs.volume_id == "vol-0123456789abcdef0"
    assert ebs.name == "nvme1n1"

    assert store.kind is VolumeKind.INSTANCE_STORE
    assert store.model == INSTANCE_STORE_MODEL
    assert store.serial == INSTANCE_STORE_SERIAL
    assert store.volume_id is None
    assert store.block_device == "/host/dev/nvme2n1"

    assert other.kind is VolumeKind.OTHER
    assert other.model == OTHER_MODEL
    assert other.serial == OTHER_SERIAL
    assert other.firmware == "3B2QGXA7"
    assert other.volume_id is None
    assert other.controller_path == "/host/dev/nvme0"


def test_volume_id_only_for_ebs_models(tree: SysfsTree) -> None:
    tree.add_controller("nvme0", "QEMU NVMe Ctrl", "vol0123456789abcdef0")
    tree.add_controller("nvme1", EBS_MODEL, "vol-0aaaabbbbccccdddd")
    devices = by_controller(discover(tree))
    assert devices["nvme0"].kind is VolumeKind.OTHER
    assert devices["nvme0"].volume_id is None
    assert devices["nvme1"].volume_id == "vol-0aaaabbbbccccdddd"


def test_default_dev_dir(tree: SysfsTree) -> None:
    tree.add_ebs("nvme4")
    (device,) = nvme_ebs.discover(str(tree.root))
    assert device.controller_path == "/dev/nvme4"
    assert device.block_device == "/dev/nvme4n1"


def test_several_namespaces_in_natural_order(tree: SysfsTree) -> None:
    tree.add_ebs("nvme1", namespaces=(10, 2, 1))
    (device,) = discover(tree)
    assert device.namespaces == ("nvme1n1", "nvme1n2", "nvme1n10")
    assert device.block_device == "/host/dev/nvme1n1"


def test_controllers_in_natural_order(tree: SysfsTree) -> None:
    for name in ("nvme10", "nvme2", "nvme1", "nvme0", "nvme11"):
        tree.add_ebs(name, f"vol{int(name[4:]):017x}")
    devices = discover(tree)
    assert [d.controller for d in devices] == ["nvme0", "nvme1", "nvme2", "nvme10", "nvme11"]
    assert [d.block_device for d in devices] == [
        "/host/dev/nvme0n1",
        "/host/dev/nvme1n1",
        "/host/dev/nvme2n1",
        "/host/dev/nvme10n1",
        "/host/dev/nvme11n1",
    ]


def test_controller_without_namespace(tree: SysfsTree) -> None:
    tree.add_ebs("nvme5", namespaces=())
    (device,) = discover(tree)
    assert device.namespaces == ()
    assert device.block_device is None
    assert device.controller_path == "/host/dev/nvme5"
    assert device.name == "nvme5"
    assert device.volume_id == "vol-0123456789abcdef0"


# --- native multipath --------------------------------------------------------------------------


def test_multipath_same_instance_numbers(tree: SysfsTree) -> None:
    tree.add_ebs("nvme1", multipath_subsystem=1)
    (device,) = discover(tree)
    assert device.namespaces == ("nvme1n1",)
    assert device.block_device == "/host/dev/nvme1n1"
    assert device.controller_path == "/host/dev/nvme1"
    assert device.kind is VolumeKind.EBS
    assert device.volume_id == "vol-0123456789abcdef0"


def test_multipath_subsystem_number_differs_from_controller(tree: SysfsTree) -> None:
    # controller nvme3 in nvme-subsys2: head nvme2n1, path node nvme2c3n1, and the reverse
    tree.add_ebs("nvme3", "vol0333", multipath_subsystem=2)
    tree.add_ebs("nvme2", "vol0222", multipath_subsystem=3)
    tree.add_instance_store("nvme0", multipath_subsystem=0)
    devices = by_controller(discover(tree))
    assert devices["nvme3"].namespaces == ("nvme2n1",)
    assert devices["nvme3"].block_device == "/host/dev/nvme2n1"
    assert devices["nvme3"].volume_id == "vol-0333"
    assert devices["nvme2"].namespaces == ("nvme3n1",)
    assert devices["nvme2"].block_device == "/host/dev/nvme3n1"
    assert devices["nvme2"].volume_id == "vol-0222"
    assert devices["nvme0"].block_device == "/host/dev/nvme0n1"
    assert devices["nvme0"].kind is VolumeKind.INSTANCE_STORE


def test_multipath_several_namespaces_natural_order(tree: SysfsTree) -> None:
    tree.add_ebs("nvme3", multipath_subsystem=2, namespaces=(10, 2, 1))
    (device,) = discover(tree)
    assert device.namespaces == ("nvme2n1", "nvme2n2", "nvme2n10")
    assert device.block_device == "/host/dev/nvme2n1"


def test_multipath_two_controllers_share_a_subsystem(tree: SysfsTree) -> None:
    tree.add_ebs("nvme4", multipath_subsystem=4)
    tree.add_ebs("nvme5", multipath_subsystem=4)
    devices = discover(tree)
    assert [(d.controller, d.namespaces) for d in devices] == [("nvme4", ("nvme4n1",)), ("nvme5", ("nvme4n1",))]


def test_multipath_without_subsystem_class_dir_derives_the_head(tree: SysfsTree) -> None:
    tree.add_ebs("nvme3", multipath_subsystem=2, namespaces=(1, 3))
    shutil.rmtree(tree.subsystem_class_dir)
    (device,) = discover(tree)
    assert device.namespaces == ("nvme2n1", "nvme2n3")
    assert device.block_device == "/host/dev/nvme2n1"


def test_mixed_layouts(tree: SysfsTree) -> None:
    tree.add_other("nvme0")
    tree.add_ebs("nvme1", multipath_subsystem=1)
    tree.add_instance_store("nvme2")
    devices = discover(tree)
    assert [(d.controller, d.block_device, d.kind) for d in devices] == [
        ("nvme0", "/host/dev/nvme0n1", VolumeKind.OTHER),
        ("nvme1", "/host/dev/nvme1n1", VolumeKind.EBS),
        ("nvme2", "/host/dev/nvme2n1", VolumeKind.INSTANCE_STORE),
    ]


# --- missing and broken trees ------------------------------------------------------------------


def test_missing_sysfs_root(tmp_path: Path) -> None:
    assert nvme_ebs.discover(str(tmp_path / "nowhere"), DEV) == []


def test_missing_class_dir(tmp_path: Path) -> None:
    (tmp_path / "sys" / "class" / "block").mkdir(parents=True)
    assert nvme_ebs.discover(str(tmp_path / "sys"), DEV) == []


def test_empty_class_dir(tree: SysfsTree) -> None:
    assert discover(tree) == []


def test_class_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "sys" / "class").mkdir(parents=True)
    (tmp_path / "sys" / "class" / "nvme").write_text("not a directory\n")
    assert nvme_ebs.discover(str(tmp_path / "sys"), DEV) == []


def test_missing_attributes_do_not_crash(tree: SysfsTree) -> None:
    tree.add_ebs("nvme1")
    for attr in ("model", "serial", "firmware_rev", "transport"):
        tree.remove_attr("nvme1", attr)
    (device,) = discover(tree)
    assert (device.model, device.serial, device.firmware) == ("", "", "")
    assert device.kind is VolumeKind.OTHER
    assert device.volume_id is None
    assert device.transport == "pcie"
    assert device.block_device == "/host/dev/nvme1n1"


def test_unreadable_attributes_do_not_crash(tree: SysfsTree) -> None:
    tree.add_ebs("nvme1")
    cdir = tree.controller_dir("nvme1")
    (cdir / "model").unlink()
    (cdir / "model").mkdir()  # reading a directory fails with EISDIR
    (cdir / "serial").unlink()
    (cdir / "serial").symlink_to("no-such-file")  # dangling
    tree.set_attr("nvme1", "firmware_rev", b"\xff\xfe\x00bad\n")
    tree.set_attr("nvme1", "transport", "x" * 100_000)
    (device,) = discover(tree)
    assert device.model == ""
    assert device.serial == ""
    assert device.kind is VolumeKind.OTHER
    assert "bad" in device.firmware
    assert 0 < len(device.transport) <= 4096


def test_attribute_padding_trimmed(tree: SysfsTree) -> None:
    tree.add_ebs("nvme1")
    tree.set_attr("nvme1", "model", "  " + EBS_MODEL + " " * 14 + "\n")
    tree.set_attr("nvme1", "serial", EBS_SERIAL + "\n\n")
    tree.set_attr("nvme1", "transport", "tcp\n")
    (device,) = discover(tree)
    assert device.model == EBS_MODEL
    assert device.kind is VolumeKind.EBS
    assert device.serial == EBS_SERIAL
    assert device.volume_id == "vol-0123456789abcdef0"
    assert device.transport == "tcp"


# --- crafted names -----------------------------------------------------------------------------
# A directory entry cannot contain "/", so "nvme0/../../etc" or "../nvme2" can only reach
# discover() as names like the ones below; each must be skipped, and every path returned
# must be a kernel-shaped name directly inside the dev directory.

CRAFTED_CLASS_ENTRIES = [
    "nvme1n1x",
    "nvme1n1",
    "nvme",
    "xnvme3",
    "nvme3x",
    "nvme-subsys0",
    "nvme1 ",
    " nvme1",
    "nvme1\n",
    "nvme1.bak",
    "..nvme2",
    "nvme2..",
    "ng0n1",
    "nvme-fabrics",
    "NVME4",
    "nvme+5",
    "nvme-6",
]
CRAFTED_NAMESPACE_ENTRIES = ["nvme0n", "nvme0n1x", "nvme0n1..", "nvmen1", "nvme0n-1", "nvme0n1 ", "ng0n1", "nvme0c"]


def test_crafted_controller_names_are_ignored(tree: SysfsTree) -> None:
    tree.add_ebs("nvme0")
    for name in CRAFTED_CLASS_ENTRIES:
        entry = tree.class_dir / name
        entry.mkdir()
        (entry / "model").write_text(EBS_MODEL + "\n")
        (entry / "nvme0n1").mkdir()
    devices = discover(tree)
    assert [d.controller for d in devices] == ["nvme0"]
    assert_paths_inside(devices)


def test_crafted_namespace_names_are_ignored(tree: SysfsTree) -> None:
    tree.add_ebs("nvme0", namespaces=())
    for name in CRAFTED_NAMESPACE_ENTRIES:
        (tree.controller_dir("nvme0") / name).mkdir()
    (device,) = discover(tree)
    assert device.namespaces == ()
    assert device.block_device is None
    assert_paths_inside([device])


def test_crafted_subsystem_entries_are_ignored(tree: SysfsTree) -> None:
    tree.add_ebs("nvme3", multipath_subsystem=2)
    sdir = tree.subsystem_dir(2)
    for name in ("nvme2n1x", "..nvme2n2", "nvme2n", "nvme2n3 "):
        (sdir / name).mkdir()
    (device,) = discover(tree)
    assert device.namespaces == ("nvme2n1",)
    assert_paths_inside([device])


def test_crafted_path_node_names_are_ignored_when_deriving(tree: SysfsTree) -> None:
    tree.add_ebs("nvme3", namespaces=())
    for name in ("nvme2c3n", "nvme2c3n1x", "nvme2cn1", "nvme2c3n1 ", "xnvme2c3n1"):
        (tree.controller_dir("nvme3") / name).mkdir()
    (device,) = discover(tree)
    assert device.namespaces == ()
    assert device.block_device is None


def test_symlinked_controller_outside_the_tree_is_not_read(tree: SysfsTree, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "nvme9n1").mkdir(parents=True)
    (elsewhere / "model").write_text(EBS_MODEL + "\n")
    (elsewhere / "serial").write_text("vol0999\n")
    (tree.class_dir / "nvme9").symlink_to(elsewhere)
    tree.add_ebs("nvme1")
    assert [d.controller for d in discover(tree)] == ["nvme1"]


def test_dangling_controller_symlink(tree: SysfsTree) -> None:
    tree.add_ebs("nvme1")
    (tree.class_dir / "nvme7").symlink_to("../../devices/gone/nvme7")
    devices = by_controller(discover(tree))
    assert devices["nvme1"].kind is VolumeKind.EBS
    assert devices["nvme7"].kind is VolumeKind.OTHER
    assert devices["nvme7"].block_device is None


def test_non_ascii_digit_names_are_ignored(tree: SysfsTree) -> None:
    tree.add_ebs("nvme0")
    entry = tree.class_dir / "nvme\u0663"
    entry.mkdir()
    (entry / "model").write_text(EBS_MODEL + "\n")
    (tree.controller_dir("nvme0") / "nvme0n\u0661").mkdir()
    devices = discover(tree)
    assert [d.controller for d in devices] == ["nvme0"]
    assert devices[0].namespaces == ("nvme0n1",)
    assert_paths_inside(devices)


def test_a_fifo_in_a_crafted_tree_does_not_hang_discovery(tree: SysfsTree) -> None:
    tree.add_ebs("nvme0")
    model = tree.controller_dir("nvme0") / "model"
    model.unlink()
    os.mkfifo(model)
    [device] = discover(tree)
    assert device.model == "" and device.kind is VolumeKind.OTHER


# --- Discovery: what a scan reads again -------------------------------------------------------


def _attribute_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the attribute files discovery opens from now on (each read opens one, but a
    steady controller's serial, read through a descriptor kept open)."""
    from nvme_ebs import discovery

    reads: list[str] = []
    real = discovery._open_attr
    monkeypatch.setattr(discovery, "_open_attr", lambda d, name: reads.append(name) or real(d, name))
    return reads


def test_a_steady_controller_costs_only_its_serial(tree: SysfsTree, monkeypatch: pytest.MonkeyPatch) -> None:
    from nvme_ebs import discovery
    from nvme_ebs.discovery import Discovery

    tree.add_controller("nvme0", EBS_MODEL, EBS_SERIAL)
    tree.add_controller("nvme1", INSTANCE_STORE_MODEL, INSTANCE_STORE_SERIAL)
    scan = Discovery(str(tree.root), DEV)
    first = scan.scan()
    opened = _attribute_reads(monkeypatch)
    preads: list[int] = []
    real = discovery._pread_attr
    monkeypatch.setattr(discovery, "_pread_attr", lambda fd: preads.append(fd) or real(fd))
    again = scan.scan()
    assert again == first and all(a is b for a, b in zip(again, first))
    # Each serial read again through the descriptor kept open: no attribute file opened.
    assert opened == [] and len(preads) == 2 and len(set(preads)) == 2
    scan.close()
    for fd in preads:  # close() gives the descriptors back
        with pytest.raises(OSError):
            os.fstat(fd)


def test_descriptors_of_controllers_that_go_are_closed(tree: SysfsTree) -> None:
    from nvme_ebs.discovery import Discovery

    tree.add_controller("nvme0", EBS_MODEL, EBS_SERIAL)
    scan = Discovery(str(tree.root), DEV)
    before = len(os.listdir("/proc/self/fd"))
    scan.scan()
    assert len(os.listdir("/proc/self/fd")) == before + 1  # nvme0's serial
    (tree.class_dir / "nvme0").unlink()  # the controller goes
    assert scan.scan() == []
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_changed_controller_is_read_again(tree: SysfsTree, monkeypatch: pytest.MonkeyPatch) -> None:
    from nvme_ebs.discovery import Discovery

    cdir = tree.add_controller("nvme0", EBS_MODEL, EBS_SERIAL)
    scan = Discovery(str(tree.root), DEV)
    assert scan.scan()[0].namespaces == ("nvme0n1",)
    (cdir / "nvme0n2").mkdir()  # a namespace appears: the listing differs
    assert scan.scan()[0].namespaces == ("nvme0n1", "nvme0n2")
    (cdir / "serial").write_text("vol0fedcba9876543210\n")  # another volume under the name
    (cdir / "firmware_rev").write_text("2.0\n")
    device = scan.scan()[0]
    assert (device.serial, device.firmware) == ("vol0fedcba9876543210", "2.0")
    reads = _attribute_reads(monkeypatch)
    os.utime(cdir, ns=(1, 1))  # the directory's times moved: everything is read again
    scan.scan()
    assert sorted(reads) == ["firmware_rev", "model", "serial", "transport"]


@pytest.mark.parametrize("counts_subdirectories", [True, False])
def test_namespaces_that_come_and_go_under_times_that_stay(
    tree: SysfsTree, monkeypatch: pytest.MonkeyPatch, counts_subdirectories: bool
) -> None:
    """sysfs leaves a directory's times alone when entries come and go: only its link count
    moves. Here the times are held still as sysfs would; without a count of subdirectories
    (nlink 1, as on some filesystems) the directory is listed instead."""
    from nvme_ebs import discovery

    real = discovery._entry

    def sysfs_like(directory: str) -> tuple[int, int, int, int, int] | None:
        entry = real(directory)
        if entry is None:
            return None
        return (entry[0], entry[1], 0, 0, entry[4] if counts_subdirectories else 1)

    monkeypatch.setattr(discovery, "_entry", sysfs_like)
    cdir = tree.add_controller("nvme0", EBS_MODEL, EBS_SERIAL)
    scan = discovery.Discovery(str(tree.root), DEV)
    first = scan.scan()[0]
    assert first.namespaces == ("nvme0n1",) and scan.scan()[0] is first  # steady: kept
    (cdir / "nvme0n2").mkdir()  # one more subdirectory
    assert scan.scan()[0].namespaces == ("nvme0n1", "nvme0n2")
    (cdir / "nvme0n1").rename(cdir / "nvme0n3")  # one namespace for another: the same count
    assert scan.scan()[0].namespaces == ("nvme0n2", "nvme0n3")
    steady = scan.scan()[0]
    assert scan.scan()[0] is steady
