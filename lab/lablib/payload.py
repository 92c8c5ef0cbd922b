"""The read-only 9p share L1 runs everything from: flushbench's build, QEMU, their libraries, the
firmware QEMU needs for `-M microvm` PVH boots, the L1 scripts and this run's steps.

Layout (L1 mounts it at /lab/ro; l1/sysroot.sh links the library directories into place):
    fb/bin/flushbench, fb/guest/flushbench-guest.elf  flushbench finds its guest beside its binary
    sysroot/<path ldd gave>                           the dynamic loader and shared libraries
    sysroot/usr/bin/qemu-system-x86_64                flushbench's qemu-kvm backend, run inside L1
    sysroot/usr/share/qemu/<firmware>                 found relative to QEMU's binary (../share/qemu)
    l1/*.sh, steps, config                            this run's session

The binaries and libraries (about 40 MB) are staged once per content in the cache; each run gets a
directory of hard links to them plus its own small files, so runs never share mutable state."""

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import cache
from .ui import LabError, Skip

L1_DIR = Path(__file__).resolve().parent.parent / "l1"
QEMU = "qemu-system-x86_64"
QEMU_DATA = Path("/usr/share/qemu")
# Debian's QEMU looks for firmware in these, in this order (its --firmwarepath).
QEMU_FIRMWARE_PATH = (QEMU_DATA, Path("/usr/share/seabios"))
# What a `-M microvm -kernel` boot with -accel kvm reads from QEMU's data directory: the qboot
# firmware (bios-microvm.bin, a link to qboot.rom: copied dereferenced) and the option ROM that
# enters a PVH kernel. For `--machine pc|q35`: SeaBIOS (bios-256k.bin), the option ROMs that enter
# a -kernel (linuxboot_dma.bin, multiboot_dma.bin) and kvmvapic.bin.
QEMU_FIRMWARE = ("bios-microvm.bin", "pvh.bin", "bios-256k.bin", "linuxboot_dma.bin", "multiboot_dma.bin", "kvmvapic.bin")
KEEP_STAGED = 3  # payload copies kept in the cache (each rebuild of flushbench stages a new one)


def shared_libraries(binary):
    """Absolute paths `ldd` resolves for a binary, the dynamic loader included."""
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if r.returncode != 0:
        raise LabError(f"ldd {binary} failed: {r.stderr.strip() or r.stdout.strip()}")
    libs = []
    for line in r.stdout.splitlines():
        if "not found" in line:
            raise LabError(f"{binary}: {line.strip()} (install the library on this host)")
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def find_build(build_dir):
    build = Path(build_dir).resolve()
    fb, guest = build / "bin" / "flushbench", build / "guest" / "flushbench-guest.elf"
    for f in (fb, guest):
        if not f.exists():
            raise LabError(f"{f} missing: build flushbench first "
                           f"(cmake -S . -B {build_dir} -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build {build_dir} --target flushbench)")
    return fb, guest


def _stage_binaries(fb, guest, qemu):
    """{path inside the share: host file} for everything heavy."""
    files = {"fb/bin/flushbench": fb, "fb/guest/flushbench-guest.elf": guest,
             "sysroot/usr/bin/" + QEMU: Path(qemu)}
    for binary in (fb, qemu):
        for lib in shared_libraries(binary):
            files["sysroot" + str(lib)] = lib
    for name in QEMU_FIRMWARE:
        found = [d / name for d in QEMU_FIRMWARE_PATH if (d / name).exists()]
        if found:  # all in one directory in L1: QEMU's data directory beside its binary
            files[f"sysroot{QEMU_DATA}/{name}"] = found[0]
    return files


def _staged(files):
    """The cached directory holding copies of these files (dereferenced: 9p would show links)."""
    fp = cache.Fingerprint("payload-1")
    for rel, src in sorted(files.items()):
        fp.text(rel).file(Path(src).resolve(), by_content=False)
    dest = cache.cache_root() / "payload" / fp.hex()
    if dest.exists():
        os.utime(dest)  # recently used: the last to be pruned
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".stage-"))
    for rel, src in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(src).resolve(), tmp / rel)
    cache.publish_dir(tmp, dest)
    # Keep the most recently used few. A run using an older one holds hard links to its files,
    # which outlive the cache entry.
    for old in sorted(dest.parent.iterdir(), key=lambda p: p.stat().st_mtime)[:-KEEP_STAGED]:
        if not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    return dest


def _link_tree(src, dst):
    for d, _, names in os.walk(src):
        out = Path(dst) / os.path.relpath(d, src)
        out.mkdir(parents=True, exist_ok=True)
        for n in names:
            try:
                os.link(Path(d) / n, out / n)
            except OSError:  # another file system: a copy does the same
                shutil.copy2(Path(d) / n, out / n)


def build(run_dir, build_dir, steps_text, config):
    """Assemble <run_dir>/ro for one boot; returns its path."""
    qemu = shutil.which(QEMU)
    if not qemu:
        raise Skip(f"{QEMU} not on PATH (apt-get install qemu-system-x86): it boots L1, and runs inside L1 too")
    fb, guest = find_build(build_dir)
    ro = Path(run_dir) / "ro"
    _link_tree(_staged(_stage_binaries(fb, guest, qemu)), ro)
    shutil.copytree(L1_DIR, ro / "l1", ignore=shutil.ignore_patterns("init"))
    (ro / "steps").write_text(steps_text)
    (ro / "config").write_text("".join(f"{k}={v}\n" for k, v in config.items()))
    return ro
