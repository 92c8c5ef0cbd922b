"""L1's initramfs: busybox, the lab's /init and the module closure, nothing else.

Everything that changes from run to run (flushbench, QEMU, the L1 scripts, the steps) reaches L1
through the read-only 9p share instead, so this image depends only on the kernel, busybox and
/init, and is built once per combination (named by a hash of those inputs)."""

import gzip
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import cache, modules
from .ui import LabError, say

L1_DIR = Path(__file__).resolve().parent.parent / "l1"
INIT = L1_DIR / "init"


def _stage(kernel, closure, busybox, root):
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    shutil.copy2(INIT, root / "init")
    os.chmod(root / "init", 0o755)
    etc = root / "etc" / "flushbench-lab"
    etc.mkdir(parents=True)
    (etc / "share-modules").write_text("\n".join(modules.SHARE_MODULES) + "\n")
    (etc / "modules").write_text("\n".join(n for n, _ in modules.WANTED) + "\n")

    moddir = root / "lib" / "modules" / kernel.release
    for src in closure.values():
        rel = src.relative_to(kernel.modules)
        dst = moddir / rel.parent / (rel.name.split(".ko")[0] + ".ko")
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(modules.read_module(src))
    for f in ("modules.builtin", "modules.order"):
        if (kernel.modules / f).exists():
            shutil.copy2(kernel.modules / f, moddir / f)
    # busybox depmod writes the modules.dep busybox modprobe reads in L1.
    r = subprocess.run([str(busybox), "depmod", "-b", str(root), kernel.release], capture_output=True, text=True)
    if r.returncode != 0:
        raise LabError(f"busybox depmod failed: {r.stderr.strip()}")


def _pack(busybox, root, out):
    """newc cpio (the format the kernel unpacks), written by busybox cpio, gzip'd."""
    names = []
    for d, dirs, files in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(d, root)
        if rel != ".":
            names.append(rel)
        names += [os.path.normpath(os.path.join(rel, f)) for f in sorted(files)]
    r = subprocess.run([str(busybox), "cpio", "-o", "-H", "newc"], cwd=root, input="\n".join(names).encode() + b"\n",
                       capture_output=True)
    if r.returncode != 0:
        raise LabError(f"busybox cpio failed: {r.stderr.decode(errors='replace').strip()}")
    with gzip.GzipFile(out, "wb", compresslevel=6, mtime=0) as f:
        f.write(r.stdout)


def build(kernel, busybox):
    fp = cache.Fingerprint("initramfs-1").file(INIT).file(busybox).file(Path(modules.__file__))
    fp.text(kernel.release).file(kernel.modules / "modules.builtin", by_content=False)
    closure = modules.closure(kernel.modules)
    for name, src in sorted(closure.items()):
        fp.text(name).file(src, by_content=False)
    out = cache.cache_root() / "initramfs" / f"{kernel.release}-{fp.hex()}.cpio.gz"
    if out.exists():
        say("initramfs", f"{kernel.label}: cached ({out.name})")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".stage-") as tmp:
        root = Path(tmp) / "root"
        _stage(kernel, closure, busybox, root)
        _pack(busybox, root, Path(tmp) / "image")
        cache.publish_file(Path(tmp) / "image", out)
    say("initramfs", f"{kernel.label}: {out.name} ({out.stat().st_size >> 10} KiB, "
                     f"modules: {' '.join(sorted(closure))})")
    return out
