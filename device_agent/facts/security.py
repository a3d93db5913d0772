"""Security posture: root filesystem on dm-crypt, UEFI Secure Boot, TPM presence and version.

Root on dm-crypt: the root mount's device number comes from /proc/self/mountinfo; /sys/dev/block/<M:m>
is that block device, and a device-mapper device whose dm/uuid starts `CRYPT-` is dm-crypt (LUKS or
plain). LVM on LUKS puts the crypt device below: the walk follows `slaves/` down a few levels.

Secure Boot: the efivars file is 4 bytes of attributes, then the variable; its last byte is 1 when Secure
Boot is on. Without /sys/firmware/efi the device did not boot with UEFI: `unavailable`, not `false`,
because a container or a masked /sys looks the same. With it but no EFI variable visible at all (efivarfs
not mounted, an empty mount point), nothing is known either: `unavailable`. Only when other variables are
visible and SecureBoot is not among them is the firmware without Secure Boot: `false`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from device_agent.facts.fact import Fact, Garbage, Tree, Unreadable, collect

MOUNTINFO = "/proc/self/mountinfo"
MOUNTINFO_MAX_BYTES = 1024 * 1024
MAX_DM_DEPTH = 8
EFI = "/sys/firmware/efi"
EFIVARS = f"{EFI}/efivars"
SECURE_BOOT = f"{EFIVARS}/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
TPM = "/sys/class/tpm"
_DEV = re.compile(r"(\d{1,10}):(\d{1,10})")
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    device: str  # "major:minor"
    mount_point: str
    fs_type: str


def parse_mountinfo(text: str) -> list[Mount]:
    """Mounts in order (proc(5)); lines that do not parse are skipped."""
    mounts: list[Mount] = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, after = head.split(), tail.split()
        if not sep or len(fields) < 5 or not after or not _DEV.fullmatch(fields[2]):  # noqa: PLR2004
            continue
        point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
        mounts.append(Mount(device=fields[2], mount_point=point, fs_type=after[0]))
    return mounts


def root_encrypted(tree: Tree) -> Fact:
    def read() -> Fact:
        mounts = parse_mountinfo(tree.read_text(MOUNTINFO, max_bytes=MOUNTINFO_MAX_BYTES))
        roots = [m for m in mounts if m.mount_point == "/"]
        if not roots:
            raise Garbage(f"{MOUNTINFO} has no mount on /")
        root = roots[-1]  # the last mount on / is the one in use
        block = f"/sys/dev/block/{root.device}"
        if not tree.exists(block):
            raise Unreadable(f"the root filesystem ({root.fs_type[:32]}) is not on a block device")
        return Fact.ok(_on_crypt(tree, block, 0), source="device-mapper")

    return collect(read, name="rootEncrypted")


def _on_crypt(tree: Tree, device: str, depth: int) -> bool:
    if depth > MAX_DM_DEPTH:
        raise Garbage("device-mapper stack deeper than 8 levels")
    if tree.exists(f"{device}/dm/uuid"):
        try:
            uuid = tree.read_text(f"{device}/dm/uuid", max_bytes=1024).strip()
        except Unreadable:
            uuid = ""
        if uuid.startswith("CRYPT-"):
            return True
    if not tree.is_dir(f"{device}/slaves"):
        return False
    return any(
        _on_crypt(tree, f"{device}/slaves/{name}", depth + 1) for name in tree.list_dir(f"{device}/slaves")
    )


def secure_boot(tree: Tree) -> Fact:
    def read() -> Fact:
        if not tree.is_dir(EFI):
            raise Unreadable("not booted with UEFI (no /sys/firmware/efi)")
        try:
            data = tree.read_bytes(SECURE_BOOT, max_bytes=64)
        except Unreadable as problem:
            if not str(problem).endswith("not present"):
                raise
            if not _efi_variables_visible(tree):
                raise Unreadable(f"no EFI variables visible (efivarfs not mounted on {EFIVARS})") from None
            # Variables visible, SecureBoot not among them: the firmware has no Secure Boot at all.
            return Fact.ok(value=False, source="efivars")
        if len(data) < 5:  # noqa: PLR2004 - 4 bytes of attributes and the value
            raise Garbage("the SecureBoot variable is shorter than 5 bytes")
        if data[-1] not in (0, 1):
            raise Garbage("the SecureBoot variable is neither 0 nor 1")
        return Fact.ok(value=data[-1] == 1, source="efivars")

    return collect(read, name="secureBoot")


def _efi_variables_visible(tree: Tree) -> bool:
    """Whether efivars lists any variable: an empty or missing directory means efivarfs is not mounted.
    A directory the reporter may not list stays `unavailable` (the Unreadable goes up)."""
    try:
        return bool(tree.list_dir(EFIVARS, limit=1))
    except Unreadable as problem:
        if str(problem).endswith("not present"):
            return False
        raise


def tpm(tree: Tree) -> Fact:
    def read() -> Fact:
        if not tree.is_dir("/sys/class"):
            raise Unreadable("no /sys/class")
        device = f"{TPM}/tpm0"
        if not tree.exists(device):
            return Fact.ok({"present": False, "version": None}, source="sysfs")
        version: str | None = None
        try:
            major = tree.read_value(f"{device}/tpm_version_major", max_bytes=16)
        except Unreadable:
            major = ""
        if major == "2":
            version = "2.0"
        elif major == "1":
            version = "1.2"
        elif major:
            raise Garbage(f"{device}/tpm_version_major is neither 1 nor 2")
        else:  # kernels before 5.6 have no tpm_version_major; a 1.2 chip lists its caps
            try:
                caps = tree.read_text(f"{device}/device/caps", max_bytes=4096)
            except Unreadable:
                caps = ""
            if "TCG version: 1.2" in caps:
                version = "1.2"
        return Fact.ok({"present": True, "version": version}, source="sysfs")

    return collect(read, name="tpm")
