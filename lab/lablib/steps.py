"""Steps: what L1 runs, in order, each one witnessed (l1/steps.sh runs them).

A step is a flushbench command line (`run --backend kvm --mode both --vfio @vfio-group ...`, with
or without a leading `flushbench`) or `sh: COMMAND`, a busybox shell command in L1. Placeholders
are substituted in L1, where their values exist:
    @vfio-group       /dev/vfio/N of the e1000e bound to vfio-pci (its own IOMMU group)
    @vfio-bdf         that e1000e's PCI address
    @nonviable-group  /dev/vfio/N of the bridge group: one e1000 on vfio-pci, the other on e1000
    @host-bdf         the bridge e1000 bound to the host's e1000 driver
    @out              the results share (the step's working directory too)"""

from dataclasses import dataclass

from .ui import LabError

PLACEHOLDERS = ("@vfio-group", "@vfio-bdf", "@nonviable-group", "@host-bdf", "@out")
DEFAULT = ("run --backend kvm --mode both --vfio @vfio-group --patterns nop,cpuid,wbinvd "
           "--footprints 4K --reps 11 --warmup 2",)


@dataclass
class Step:
    kind: str      # "fb" (flushbench arguments) or "sh" (shell command)
    command: str

    def __str__(self):
        return f"sh: {self.command}" if self.kind == "sh" else f"flushbench {self.command}"


def parse(text):
    text = text.strip()
    if not text:
        raise LabError("--step '': empty step")
    if "\n" in text or "\t" in text:
        raise LabError(f"--step {text!r}: one line without tabs, please (L1 reads one step per line)")
    if text.startswith("sh:"):
        return Step("sh", text[3:].strip())
    if text.startswith("flushbench "):
        text = text[len("flushbench "):].strip()
    return Step("fb", text)


def serialize(steps):
    """/lab/ro/steps: one `KIND<TAB>COMMAND` line per step."""
    return "".join(f"{s.kind}\t{s.command}\n" for s in steps)
