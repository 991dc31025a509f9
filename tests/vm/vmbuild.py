"""Build the VM rig's guest: a stock Debian kernel and a tiny initramfs, no root needed.

    python tests/vm/vmbuild.py          # fetch/extract/build, print the artefact paths

Steps (see ../../../shared/VMRIG.md for why each is done this way):
  1. `apt-get download linux-image-<ver>` into the cache dir (never installed on the host),
     `dpkg -x` it there (temporarily: only the vmlinux and the needed modules are kept).
  2. Pull the PVH-bootable vmlinux (ELF) out of the bzImage: it is the xz payload after the
     `FD 37 7A 58 5A 00` magic; booting it directly saves ~3 s under TCG.
  3. Collect the needed modules in dependency order, read from each module's `.modinfo`
     `depends=` (the Debian package ships no modules.dep; busybox has no modprobe).
  4. Write a gzip'd newc cpio: busybox-static + applet links, /dev/console and /dev/null as
     device entries, the modules, and /init (INIT_SCRIPT below).

Cache dir: $SCANNERD_VM_CACHE or ~/.cache/scannerd-vm. Kernel: $SCANNERD_VM_KERNEL (e.g.
"6.1.0-56-amd64") or whatever `linux-image-amd64` depends on in the local apt index.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BUSYBOX = "/bin/busybox"

# Modules the guest needs, in load order; their dependencies are inserted before them from
# .modinfo. Gadget modules (usb_f_acm) are requested by name at runtime by the kernel, which
# cannot work without modprobe, so they are listed explicitly.
ROOT_MODULES = [
    # virtio PCI + 9p for the host root and the results share, overlay for a writable view
    "virtio_pci", "9pnet_virtio", "9p", "overlay",
    # input
    "evdev", "uinput",
    # USB host side: xHCI, HID keyboards, FTDI usb-serial, CDC-ACM
    "xhci_pci", "usbhid", "hid_generic", "ftdi_sio", "cdc_acm",
    # USB device side inside the guest: dummy_hcd + g_serial give /dev/ttyACM0 <-> /dev/ttyGS0
    "dummy_hcd", "libcomposite", "usb_f_acm", "g_serial", "usb_f_hid",
]

# Parameters for insmod at boot: two dummy UDCs, one for g_serial, one for a configfs gadget.
MODULE_PARAMS = {"dummy_hcd": "num=3"}  # g_serial, the keyboard gadget, the HID-POS gadget

# Modules loaded only when a scenario asks (so /dev/ttyACM0 appears when the test wants it).
LATE_MODULES = {"usb_f_acm", "g_serial", "usb_f_hid"}

INIT_SCRIPT = r"""#!/bin/sh
# VM rig init: mount host root read-only over 9p + tmpfs overlay, run the guest driver, power off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "vmrig: init at $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
while read m params; do
    case " $LATE_MODULES " in *" $m "*) continue;; esac
    insmod /lib/vmrig/$m.ko $params || echo "vmrig: insmod $m failed" > /dev/console
done < /modules.order
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro hostroot /lower || { echo "vmrig: 9p hostroot failed"; poweroff -f; }
mount -t tmpfs -o size=512m tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || { echo "vmrig: overlay failed"; poweroff -f; }
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs tmpfs /newroot/run
# No tmpfs over /tmp: the checkout and its venv may live there (CI clones into a fresh folder);
# the overlay's tmpfs upper layer already makes /tmp writable.
mkdir -p /newroot/run/vmrig /newroot/run/vmrig-modules
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 results /newroot/run/vmrig || { echo "vmrig: 9p results failed"; poweroff -f; }
for m in $LATE_MODULES; do cp /lib/vmrig/$m.ko /newroot/run/vmrig-modules/; done
echo "vmrig: chroot at $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
chroot /newroot /bin/sh /run/vmrig/guest.sh > /newroot/run/vmrig/guest-console.log 2>&1
echo "vmrig: guest driver exited $? at $(cut -d' ' -f1 /proc/uptime)s" > /dev/console
sync
umount /newroot/run/vmrig
poweroff -f
"""


def cache_dir() -> Path:
    d = Path(os.environ.get("SCANNERD_VM_CACHE") or Path.home() / ".cache" / "scannerd-vm")
    d.mkdir(parents=True, exist_ok=True)
    return d


class BuildError(RuntimeError):
    """The guest could not be built (no kernel package, no busybox-static...)."""


@dataclass(frozen=True)
class Guest:
    kernel: Path  # PVH vmlinux (ELF)
    initrd: Path
    version: str
    modules: tuple[str, ...]


# --- kernel package -------------------------------------------------------------------------

def kernel_version() -> str:
    env = os.environ.get("SCANNERD_VM_KERNEL")
    if env:
        return env.removeprefix("linux-image-")
    try:
        out = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, timeout=60,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    m = re.search(r"Depends:\s*linux-image-(\d\S*-amd64)\b", out)
    if m:
        return m.group(1)
    # No apt index: use the newest kernel already in the cache.
    cached = sorted(cache_dir().glob("linux-image-*-amd64_*.deb"))
    if cached:
        return cached[-1].name.split("_")[0].removeprefix("linux-image-")
    raise BuildError("cannot tell which linux-image to use: no apt index (apt-get update) and nothing cached; set SCANNERD_VM_KERNEL")


def download_kernel(version: str) -> Path:
    """The cached linux-image-<version> .deb, fetched with `apt-get download` when missing."""
    cache = cache_dir()
    pkg = f"linux-image-{version}"
    debs = sorted(cache.glob(f"{pkg}_*.deb"))
    if not debs:
        try:
            r = subprocess.run(["apt-get", "download", pkg], cwd=cache, capture_output=True, text=True, timeout=600,
                               check=False)
            err = r.stderr.strip()[-400:]
        except (OSError, subprocess.TimeoutExpired) as e:
            err = str(e)
        debs = sorted(cache.glob(f"{pkg}_*.deb"))
        if not debs:
            raise BuildError(f"apt-get download {pkg} failed (apt-get update first?): {err}")
    return debs[-1]


def prepare_kernel(version: str) -> tuple[Path, dict[str, Path]]:
    """(vmlinux, module index) from the cache; on a miss, unpack the .deb (dpkg -x), extract the
    vmlinux, keep only the modules the guest needs (~3 MB of the 400 MB tree), drop the rest."""
    cache = cache_dir()
    vmlinux = cache / f"vmlinux-{version}"
    mods = cache / f"modules-{version}"
    stamp = mods / ".roots"
    want = " ".join(ROOT_MODULES)
    if not (vmlinux.exists() and stamp.exists() and stamp.read_text() == want):
        deb = download_kernel(version)
        tmp = cache / f".unpack-{version}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            subprocess.run(["dpkg", "-x", str(deb), str(tmp)], check=True, timeout=600)
            extract_vmlinux(tmp / "boot" / f"vmlinuz-{version}", vmlinux)
            index = module_index(tmp)
            order = module_order(index, ROOT_MODULES)
            shutil.rmtree(mods, ignore_errors=True)
            mods.mkdir()
            for m in order:
                shutil.copyfile(index[m], mods / f"{m}.ko")
            stamp.write_text(want)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # A new kernel version replaces the old one: the cache must not grow with every update.
        for old in cache.iterdir():
            if version not in old.name and old.name.startswith(("linux-image-", "vmlinux-", "modules-", "initramfs-")):
                shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
    return vmlinux, {p.name[:-3]: p for p in mods.glob("*.ko")}


def extract_vmlinux(bzimage: Path, out: Path) -> Path:
    """The ELF vmlinux inside a bzImage (xz payload): bootable by QEMU as a PVH kernel."""
    if out.exists():
        return out
    data = bzimage.read_bytes()
    magic = b"\xfd7zXZ\x00"
    off = data.find(magic)
    while off >= 0:
        try:
            d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            elf = d.decompress(data[off:])
        except lzma.LZMAError:
            elf = b""
        if elf.startswith(b"\x7fELF"):
            tmp = out.with_suffix(".tmp")
            tmp.write_bytes(elf)
            tmp.rename(out)
            return out
        off = data.find(magic, off + 1)
    raise BuildError(f"no xz-compressed ELF payload in {bzimage}")


# --- modules --------------------------------------------------------------------------------

def modinfo(path: Path) -> dict[str, list[str]]:
    """Fields of a .ko's .modinfo section (pure-Python ELF64 section reader)."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise BuildError(f"{path}: not an ELF64 module (compressed?)")
    e_shoff, = struct.unpack_from("<Q", data, 0x28)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, e_shoff + i * e_shentsize)
        return name, offset, size

    _, stroff, _ = section(e_shstrndx)
    fields: dict[str, list[str]] = {}
    for i in range(e_shnum):
        name, offset, size = section(i)
        end = data.index(b"\0", stroff + name)
        if data[stroff + name:end] == b".modinfo":
            for item in data[offset:offset + size].split(b"\0"):
                if b"=" in item:
                    k, _, v = item.decode(errors="replace").partition("=")
                    fields.setdefault(k, []).append(v)
    return fields


def module_index(tree: Path) -> dict[str, Path]:
    idx: dict[str, Path] = {}
    for ko in (tree / "lib" / "modules").glob("*/kernel/**/*.ko"):
        idx[ko.name[:-3].replace("-", "_")] = ko
    if not idx:
        raise BuildError(f"no .ko modules under {tree}/lib/modules (compressed modules are not supported)")
    return idx


def module_order(index: dict[str, Path], roots: list[str]) -> list[str]:
    """Roots and their depends= closure, each module after everything it depends on."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        if name in chain:
            raise BuildError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        if name not in index:
            raise BuildError(f"module {name} not found in the kernel package (built in? renamed?)")
        deps = [d for v in modinfo(index[name]).get("depends", []) for d in v.split(",") if d]
        for d in deps:
            visit(d, chain + (name,))
        seen.add(name)
        order.append(name)

    for r in roots:
        visit(r, ())
    return order


# --- initramfs ------------------------------------------------------------------------------

class Cpio:
    """A newc ("070701") cpio archive writer."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        nb = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        self.buf.write(nb)
        self.buf.write(b"\0" * (-(110 + len(nb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | mode, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self.buf.write(b"\0" * (-self.buf.tell() % 512))
        return self.buf.getvalue()


def busybox_applets(busybox: str) -> list[str]:
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True, timeout=30).stdout
    return [a for a in out.split() if a and "/" not in a and a != "busybox"]


def is_static_elf(path: str) -> bool:
    """True for an ELF executable without a PT_INTERP program header (statically linked)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, e_phoff + i * e_phentsize)[0] != 3 for i in range(e_phnum))


def build_initramfs(index: dict[str, Path], order: list[str], out: Path) -> Path:
    if not is_static_elf(BUSYBOX):
        raise BuildError(f"{BUSYBOX} is missing or not static (apt install busybox-static)")
    bb = Path(BUSYBOX).read_bytes()
    init = INIT_SCRIPT.replace("$LATE_MODULES", " ".join(m for m in order if m in LATE_MODULES))
    key = hashlib.sha256(bb + init.encode() + repr((MODULE_PARAMS, [str(index[m]) for m in order])).encode()).hexdigest()[:16]
    target = out.with_name(f"{out.name.removesuffix('.cpio.gz')}-{key}.cpio.gz")
    if target.exists():
        return target
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "lib", "lib/vmrig", "tmp", "run"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3, 0o666)
    c.file("bin/busybox", bb, 0o755)
    for applet in busybox_applets(BUSYBOX):
        c.symlink(f"bin/{applet}", "busybox")
    for m in order:
        c.file(f"lib/vmrig/{m}.ko", index[m].read_bytes())
    c.file("modules.order", "".join(f"{m} {MODULE_PARAMS.get(m, '')}\n" for m in order).encode())
    c.file("init", init.encode(), 0o755)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(c.finish(), compresslevel=1))
    tmp.rename(target)
    for stale in target.parent.glob(out.name.removesuffix(".cpio.gz") + "-*.cpio.gz"):
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


def build() -> Guest:
    version = kernel_version()
    with open(cache_dir() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions sharing a cache build one after the other
        vmlinux, index = prepare_kernel(version)
        order = module_order(index, ROOT_MODULES)
        initrd = build_initramfs(index, order, cache_dir() / f"initramfs-{version}.cpio.gz")
    return Guest(kernel=vmlinux, initrd=initrd, version=version, modules=tuple(order))


if __name__ == "__main__":
    import time

    t0 = time.monotonic()
    try:
        g = build()
    except BuildError as e:
        sys.exit(f"vmbuild: {e}")
    print(f"kernel  {g.kernel}\ninitrd  {g.initrd}\nversion {g.version}\nmodules {' '.join(g.modules)}")
    print(f"built in {time.monotonic() - t0:.2f}s")
