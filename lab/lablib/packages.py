"""Debian packages for L1, fetched with `apt-get download` and unpacked with `dpkg -x`.

Nothing is ever installed on the host: the lab needs the files of a kernel package and of
busybox-static, not their maintainer scripts. Package names move with security updates
(linux-image-6.1.0-NN-amd64), so they are resolved through the meta packages each time apt can
answer, and the last answer is remembered so that a warm cache works offline."""

import shutil
import subprocess
import tempfile
from pathlib import Path

from . import cache
from .ui import LabError, Skip, say


def _run(argv, cwd=None):
    try:
        return subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise Skip(f"{argv[0]} not found: the lab fetches kernels with apt (a Debian host)") from None


def _last_line(text):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1].strip() if lines else "no message"


def resolve(meta):
    """The package a meta package currently depends on (linux-image-amd64 -> linux-image-6.1.0-NN-amd64)."""
    memo = cache.cache_root() / "debs" / f"{meta}.resolved"
    r = _run(["apt-cache", "depends", meta])
    deps = [l.split(":", 1)[1].strip() for l in r.stdout.splitlines() if l.strip().startswith("Depends:")]
    names = [d for d in deps if d.startswith("linux-image-")]
    if r.returncode == 0 and names:
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(names[0] + "\n")
        return names[0]
    if memo.exists():
        name = memo.read_text().strip()
        say("resolve", f"apt-cache cannot resolve {meta} ({_last_line(r.stderr or r.stdout)}); using {name} from the cache")
        return name
    raise Skip(f"apt-cache cannot resolve {meta}: {_last_line(r.stderr or r.stdout)} "
               f"(no package lists? run apt-get update; 6.12 needs bookworm-security in sources.list)")


def download(package):
    """The .deb of a package in the cache, downloading it if it is not there yet."""
    debs = cache.cache_root() / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    have = sorted(debs.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
    if have:
        say("download", f"{package}: cached ({have[-1].name})")
        return have[-1]
    say("download", f"{package}: apt-get download ...")
    with tempfile.TemporaryDirectory(dir=debs, prefix=".download-") as tmp:
        r = _run(["apt-get", "download", "-q", package], cwd=tmp)
        got = list(Path(tmp).glob(f"{package}_*.deb"))
        if r.returncode != 0 or not got:
            raise Skip(f"apt-get download {package} failed: {_last_line(r.stderr or r.stdout)} "
                       f"(offline or no package lists: run apt-get update, or copy the .deb into {debs})")
        final = cache.publish_file(got[0], debs / got[0].name)
    say("download", f"{package}: {final.name} ({final.stat().st_size / 2**20:.1f} MiB)")
    return final


def extract(deb):
    """`dpkg -x` of a .deb into the cache, once per package file."""
    dest = cache.cache_root() / "extracted" / Path(deb).name[: -len(".deb")]
    if dest.exists():
        say("extract", f"{Path(deb).name}: cached")
        return dest
    if shutil.which("dpkg") is None:
        raise Skip("dpkg not found: the lab unpacks Debian packages with dpkg -x")
    say("extract", f"dpkg -x {Path(deb).name} ...")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".extract-"))
    r = _run(["dpkg", "-x", str(deb), str(tmp)])
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LabError(f"dpkg -x {deb} failed: {_last_line(r.stderr)} (a truncated download? delete it and rerun)")
    return cache.publish_dir(tmp, dest)


def busybox():
    """The static busybox L1 runs on; on the host it also stands in for depmod and cpio, which
    this host does not have (no kmod, no cpio package)."""
    root = extract(download("busybox-static"))
    bb = root / "bin" / "busybox"
    if not bb.exists():
        raise LabError(f"{bb} missing from busybox-static: delete {root} and rerun")
    return bb
