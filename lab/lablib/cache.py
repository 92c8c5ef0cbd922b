"""The lab's cache: downloaded packages, extracted kernels, initramfs images and the staged payload.

It lives outside the clone (${FLUSHBENCH_LAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flushbench/lab})
because it holds about 170 MB of Debian packages and their extracted trees, none of which belong in
the repository. Every derived artefact is named by a hash of what it was built from, so a changed
input builds a new one and an unchanged one is reused."""

import hashlib
import os
import shutil
from pathlib import Path


def cache_root():
    env = os.environ.get("FLUSHBENCH_LAB_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base).resolve() / "flushbench" / "lab"


class Fingerprint:
    """A content key: feed it bytes, strings and files, get a short hex name."""

    def __init__(self, kind):
        self._h = hashlib.sha256(kind.encode())

    def text(self, s):
        self._h.update(len(s).to_bytes(8, "little") + s.encode())
        return self

    def file(self, path, by_content=True):
        """By content for small inputs we own; by (size, mtime) for large trees we only copy."""
        path = Path(path)
        st = path.stat()
        self.text(str(path))
        if by_content:
            self._h.update(hashlib.sha256(path.read_bytes()).digest())
        else:
            self.text(f"{st.st_size}:{st.st_mtime_ns}")
        return self

    def hex(self, n=16):
        return self._h.hexdigest()[:n]


def publish_dir(tmp, final):
    """Move a fully built directory into place, so a cache entry is either complete or absent."""
    tmp, final = Path(tmp), Path(final)
    if final.exists():  # another run built it meanwhile: same inputs, same content
        shutil.rmtree(tmp, ignore_errors=True)
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, final)
    return final


def publish_file(tmp, final):
    Path(final).parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)
    return Path(final)
