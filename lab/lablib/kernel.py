"""Which kernel L1 boots: a named Debian kernel, a linux-image .deb, or a vmlinuz with its modules."""

import re
from dataclasses import dataclass
from pathlib import Path

from . import packages
from .ui import LabError

# The two kernels the lab knows by name. They differ where it matters: Linux 6.1 asks a VFIO group's
# container whether DMA is coherent (and answers "coherent" for a group without one), 6.12 asks the
# device's IOMMU directly.
NAMED = {
    "6.1": "linux-image-amd64",        # Debian 12's own kernel
    "6.12": "linux-image-6.12-amd64",  # bookworm-security
}
DEFAULT = ("6.1", "6.12")


@dataclass
class Kernel:
    label: str      # short name for directories and summaries: 6.1, 6.12, or the release
    release: str    # `uname -r` in L1: the /lib/modules directory name
    vmlinuz: Path
    modules: Path   # .../lib/modules/<release>
    source: str     # where it came from, for the record


def _from_tree(root, label, source):
    mods = sorted((root / "lib" / "modules").glob("*"))
    if len(mods) != 1:
        raise LabError(f"{source}: expected one lib/modules/<release> directory, found {len(mods)}")
    release = mods[0].name
    vmlinuz = root / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.exists():
        raise LabError(f"{source}: no boot/vmlinuz-{release} in the package")
    return Kernel(label or release, release, vmlinuz, mods[0], source)


def resolve(spec):
    if spec in NAMED:
        package = packages.resolve(NAMED[spec])
        if not re.match(rf"linux-image-{re.escape(spec)}[.\-]", package):
            raise LabError(f"{NAMED[spec]} now depends on {package}, not a {spec} kernel: pass the .deb you want instead")
        return _from_tree(packages.extract(packages.download(package)), spec, package)
    if spec.endswith(".deb"):
        deb = Path(spec).expanduser().resolve()
        if not deb.exists():
            raise LabError(f"--kernel {spec}: no such file")
        return _from_tree(packages.extract(deb), None, str(deb))
    if ":" in spec:
        vmlinuz, modules = (Path(p).expanduser().resolve() for p in spec.split(":", 1))
        if not vmlinuz.is_file():
            raise LabError(f"--kernel {spec}: {vmlinuz} is not a file")
        if not (modules / "modules.builtin").exists():
            raise LabError(f"--kernel {spec}: {modules} is not a /lib/modules/<release> tree (no modules.builtin)")
        return Kernel(modules.name, modules.name, vmlinuz, modules, spec)
    raise LabError(f"--kernel {spec}: expected {' or '.join(NAMED)}, a linux-image .deb, or VMLINUZ:MODULES_DIR")
