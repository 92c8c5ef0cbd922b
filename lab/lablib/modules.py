"""Kernel modules L1 needs, and everything they depend on, read from the modules themselves.

The dependency list is the `depends=` entry of each module's .modinfo section (what depmod reads),
so no depmod over the whole kernel tree is needed on the host: only the closure is staged,
decompressed (busybox's modprobe cannot load .ko.xz), and busybox depmod indexes that."""

import gzip
import lzma
import struct
from pathlib import Path

from .ui import LabError

# What L1 loads, in the order it loads it, and why.
WANTED = (
    ("virtio_pci", "transport of the two 9p shares (built in on 6.12, a module on 6.1)"),
    ("9pnet_virtio", "9p over virtio"),
    ("9p", "the payload and results shares"),
    ("kvm_amd", "L1's KVM: QEMU TCG emulates AMD SVM with nested paging (-cpu EPYC)"),
    ("vfio_iommu_type1", "the container backend QEMU (and flushbench) attach a group to"),
    ("vfio_pci", "claims the e1000e and one bridge e1000 for VFIO"),
    ("e1000", "keeps the other bridge e1000 on a host driver: its IOMMU group is then not viable"),
)
SHARE_MODULES = ("virtio_pci", "9pnet_virtio", "9p")  # loaded by /init before the shares are mounted


def module_name(path):
    return Path(path).name.split(".ko")[0].replace("-", "_")


def read_module(path):
    """The bytes of a .ko, decompressed."""
    path = Path(path)
    if path.name.endswith(".ko"):
        return path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    raise LabError(f"{path}: compression not supported by the lab (Python's standard library has xz and gzip)")


def modinfo(ko_bytes):
    """The key=value strings of an ELF64 module's .modinfo section."""
    if ko_bytes[:4] != b"\x7fELF" or ko_bytes[4] != 2:
        raise LabError("not an ELF64 kernel module")
    shoff, = struct.unpack_from("<Q", ko_bytes, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko_bytes, 0x3A)

    def section(i):
        # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size
        name, _, _, _, off, size = struct.unpack_from("<IIQQQQ", ko_bytes, shoff + i * shentsize)
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        end = ko_bytes.index(b"\0", stroff + name)
        if ko_bytes[stroff + name:end] == b".modinfo":
            entries = ko_bytes[off:off + size].split(b"\0")
            return dict(e.decode(errors="replace").split("=", 1) for e in entries if b"=" in e)
    return {}


def closure(moddir, wanted=tuple(n for n, _ in WANTED)):
    """{name: path} of the wanted modules and their dependencies; built-in ones are left out."""
    moddir = Path(moddir)
    builtin = {module_name(l.strip()) for l in (moddir / "modules.builtin").read_text().splitlines() if l.strip()}
    files = {module_name(p): p for p in (moddir / "kernel").rglob("*.ko*")}
    found, todo = {}, [w for w in wanted if w not in builtin]
    while todo:
        name = todo.pop()
        if name in found or name in builtin:
            continue
        if name not in files:
            raise LabError(f"module {name} is neither built into {moddir.name} nor in {moddir}: the lab needs it")
        found[name] = files[name]
        # depends= spells names as the files do (vfio-pci-core); module names use underscores.
        todo += [module_name(d) for d in modinfo(read_module(files[name])).get("depends", "").split(",") if d]
    return found
