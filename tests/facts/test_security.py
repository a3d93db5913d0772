"""Root on dm-crypt, Secure Boot and TPM against fake /proc/self/mountinfo, /sys/dev/block, efivars and
/sys/class/tpm trees; the mountinfo parser under hypothesis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from device_agent.facts import security
from device_agent.facts.fact import Fact, Status, Tree
from tests.facts.conftest import Files

ROOT_ON = "36 1 {dev} / / rw,relatime shared:1 - {fs} /dev/x rw\n"
OTHER = "40 36 0:5 / /dev rw - devtmpfs udev rw\n"


def mountinfo(dev: str, fs: str = "ext4") -> dict[str, str]:
    return {"proc/self/mountinfo": OTHER + ROOT_ON.format(dev=dev, fs=fs)}


def block(root: Path, dev: str, name: str, uuid: str | None = None, slaves: tuple[str, ...] = ()) -> None:
    """/sys/dev/block/<dev> as a symlink to the device's folder, as the kernel lays it out."""
    folder = root / "sys/devices/virtual/block" / name
    folder.mkdir(parents=True, exist_ok=True)
    if uuid is not None:
        (folder / "dm").mkdir()
        (folder / "dm/uuid").write_text(uuid + "\n")
    if slaves:
        (folder / "slaves").mkdir()
        for slave in slaves:
            target = root / "sys/devices/virtual/block" / slave
            target.mkdir(parents=True, exist_ok=True)
            (folder / "slaves" / slave).symlink_to(target)
    links = root / "sys/dev/block"
    links.mkdir(parents=True, exist_ok=True)
    (links / dev).symlink_to(folder)


def test_root_on_luks_is_encrypted(tree: Callable[[Files], Tree]):
    t = tree(mountinfo("253:0"))
    block(t.root, "253:0", "dm-0", uuid="CRYPT-LUKS2-0123456789abcdef-root")
    assert security.root_encrypted(t) == Fact.ok(value=True, source="device-mapper")


def test_lvm_on_luks_is_found_through_the_slaves(tree: Callable[[Files], Tree]):
    t = tree(mountinfo("253:1"))
    root = t.root
    block(root, "253:1", "dm-1", uuid="LVM-abcdef", slaves=("dm-0",))
    (root / "sys/devices/virtual/block/dm-0/dm").mkdir()
    (root / "sys/devices/virtual/block/dm-0/dm/uuid").write_text("CRYPT-LUKS2-feed-cafe\n")
    assert security.root_encrypted(t).value is True


def test_a_plain_partition_and_plain_lvm_are_not_encrypted(tree: Callable[[Files], Tree]):
    t = tree(mountinfo("8:2"))
    block(t.root, "8:2", "sda2")
    assert security.root_encrypted(t) == Fact.ok(value=False, source="device-mapper")


def test_an_overlay_root_is_unavailable_not_false(tree: Callable[[Files], Tree]):
    fact = security.root_encrypted(tree(mountinfo("0:31", fs="overlay")))
    assert fact.status is Status.UNAVAILABLE
    assert "overlay" in (fact.reason or "")


def test_a_slave_loop_is_an_error_not_a_hang(tree: Callable[[Files], Tree]):
    t = tree(mountinfo("253:0"))
    root = t.root
    folder = root / "sys/devices/virtual/block/dm-0"
    (folder / "slaves").mkdir(parents=True)
    (folder / "slaves/dm-0").symlink_to(folder)
    (root / "sys/dev/block").mkdir(parents=True)
    (root / "sys/dev/block/253:0").symlink_to(folder)
    assert security.root_encrypted(t).status is Status.ERROR


def test_mountinfo_without_a_root_mount_is_garbage(tree: Callable[[Files], Tree], tmp_path: Path):
    assert security.root_encrypted(tree({"proc/self/mountinfo": OTHER})).status is Status.ERROR
    assert security.root_encrypted(Tree(tmp_path / "none")).status is Status.UNAVAILABLE


@given(st.text(max_size=3000))
def test_the_mountinfo_parser_never_raises(text: str):
    for mount in security.parse_mountinfo(text):
        assert ":" in mount.device


def test_mount_points_with_escaped_spaces_are_decoded():
    [mount] = security.parse_mountinfo("1 0 8:1 / /mnt/my\\040disk rw - ext4 /dev/sda1 rw\n")
    assert mount.mount_point == "/mnt/my disk"


VARIABLE = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


def test_secure_boot_reads_the_last_byte(tree: Callable[[Files], Tree]):
    assert security.secure_boot(tree({VARIABLE: b"\x06\x00\x00\x00\x01"})) == Fact.ok(
        value=True, source="efivars"
    )


def test_secure_boot_off_and_a_missing_variable_among_visible_ones_are_false(tmp_path: Path):
    from tests.facts.conftest import write_tree  # noqa: PLC0415

    assert (
        security.secure_boot(write_tree(tmp_path / "a", {VARIABLE: b"\x06\x00\x00\x00\x00"})).value is False
    )
    # Other EFI variables are visible and SecureBoot is not among them: firmware without Secure Boot.
    boot_order = "sys/firmware/efi/efivars/BootOrder-8be4df61-93ca-11d2-aa0d-00e098032b8c"
    other = write_tree(tmp_path / "b", {boot_order: b"\x07\x00\x00\x00\x01\x00"})
    assert security.secure_boot(other) == Fact.ok(value=False, source="efivars")


def test_secure_boot_is_unavailable_when_no_efi_variable_is_visible(tmp_path: Path):
    """UEFI, but efivarfs not mounted (an empty mount point) or no efivars directory: nothing is known,
    so nothing is guessed."""
    (tmp_path / "empty/sys/firmware/efi/efivars").mkdir(parents=True)
    (tmp_path / "absent/sys/firmware/efi").mkdir(parents=True)
    reason = "no EFI variables visible (efivarfs not mounted on /sys/firmware/efi/efivars)"
    assert security.secure_boot(Tree(tmp_path / "empty")) == Fact.unavailable(reason)
    assert security.secure_boot(Tree(tmp_path / "absent")) == Fact.unavailable(reason)


def test_no_uefi_is_unavailable_and_garbage_is_an_error(tree: Callable[[Files], Tree], tmp_path: Path):
    assert security.secure_boot(Tree(tmp_path / "none")).status is Status.UNAVAILABLE
    assert security.secure_boot(tree({VARIABLE: b"\x06"})).status is Status.ERROR
    assert security.secure_boot(tree({VARIABLE: b"\x06\x00\x00\x00\x07"})).status is Status.ERROR


def test_tpm_versions(tmp_path: Path):
    from tests.facts.conftest import write_tree  # noqa: PLC0415

    two = write_tree(tmp_path / "2", {"sys/class/tpm/tpm0/tpm_version_major": "2\n"})
    old = write_tree(
        tmp_path / "1", {"sys/class/tpm/tpm0/device/caps": "Manufacturer: 0x1\nTCG version: 1.2\n"}
    )
    unknown = write_tree(tmp_path / "u", {"sys/class/tpm/tpm0/dev": "10:224\n"})
    none = write_tree(tmp_path / "n", {"sys/class/net/lo/address": "00:00:00:00:00:00\n"})
    bad = write_tree(tmp_path / "b", {"sys/class/tpm/tpm0/tpm_version_major": "7\n"})
    assert security.tpm(two) == Fact.ok({"present": True, "version": "2.0"}, source="sysfs")
    assert security.tpm(old).value == {"present": True, "version": "1.2"}
    assert security.tpm(unknown).value == {"present": True, "version": None}
    assert security.tpm(none).value == {"present": False, "version": None}
    assert security.tpm(bad).status is Status.ERROR
    assert security.tpm(Tree(tmp_path / "empty")).status is Status.UNAVAILABLE
