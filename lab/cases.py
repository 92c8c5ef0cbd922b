#!/usr/bin/python3
"""The lab's test cases: which kernel, which snoop control, which steps in one boot each; then
check.py holds what each step must show. Run by ctest (label `lab`), or by hand:

    lab/cases.py                       # every case, results under build/lab-cases/
    lab/cases.py 6.12-off --build build --out-root /tmp/lab
    lab/check.py 6.12-off /tmp/lab/6.12-off   # re-check a case's results without booting

Exit status: 0 every expectation holds, 1 some failed or a boot failed, 77 a prerequisite is missing.

Budget: the three boots take about 1.5 minutes on a 2-core build machine with a warm cache (the
first run also downloads about 180 MB of Debian packages). Several steps share one boot because a
TCG boot of L1 costs 15-30 s and a step costs 1-5 s."""

import argparse
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

LAB = Path(__file__).resolve().parent
SKIP = 77

CELLS = "--patterns nop,wbinvd --footprints 4K --reps 11 --min-reps 11 --warmup 2"
REPS_AND_WARMUP = 13  # WBINVDs one wbinvd cell of CELLS issues (fixed: --min-reps = --reps)


@dataclass
class Step:
    name: str       # check.py's key; flushbench steps write @out/<name>.json
    command: str    # a flushbench-lab --step


@dataclass
class Case:
    kernel: str
    snoop_control: str
    cpus: int
    steps: list = field(default_factory=list)


# A/B/A in one VM with the vCPU pinned to CPU 0: every real WBINVD flushes exactly CPU 0.
BOTH = Step("P", "run --backend kvm --mode both --vfio @vfio-group --patterns nop,cpuid,wbinvd --footprints 4K "
                 "--reps 11 --min-reps 11 --warmup 2 --vcpu-cpu 0 --out @out/P.json")

CASES = {
    # Linux 6.1 asks the group's container whether DMA is coherent: a group KVM is given without
    # one is "coherent", so flushbench must attach a type1 container first.
    "6.1-off": Case("6.1", "off", 2, [BOTH]),
    # Snoop control on: the e1000e's group is coherent, flushbench must refuse to call it
    # non-coherent, and attached as a baseline KVM must see it coherent.
    "6.12-on": Case("6.12", "on", 2, [
        Step("A", f"run --backend kvm --mode both --vfio @vfio-group {CELLS} --out @out/A.json"),
        Step("K", f"run --backend kvm --mode coherent --vfio-baseline @vfio-group {CELLS} --out @out/K.json"),
    ]),
    # Snoop control off, 4 CPUs (dirty-mask widths up to 4), and every bad input in the same boot.
    "6.12-off": Case("6.12", "off", 4, [
        BOTH,
        # QEMU in L1, one boot per mode. q35, not flushbench's default microvm: microvm has no PCI
        # bus without pcie=on, and with pcie=on and a vfio-pci device the L2 vCPU sat halted
        # before its first serial byte in this lab; q35 (SeaBIOS, Multiboot) boots in about 5 s.
        # --vcpu-cpu 0 pins QEMU, so each real WBINVD flushes one CPU.
        Step("Q", f"run --backend qemu-kvm --machine q35 --vfio-pci @vfio-bdf --mode both {CELLS} --vcpu-cpu 0 --out @out/Q.json"),
        Step("M", "run --backend kvm --mode noncoherent --vfio @vfio-group --patterns wbinvd --footprints 4K "
                  "--reps 11 --min-reps 11 --warmup 2 --dirty-mask 1,2,4 --out @out/M.json"),
        Step("X-nonviable", f"run --backend kvm --mode noncoherent --vfio @nonviable-group {CELLS} --out @out/X-nonviable.json"),
        Step("hold", "sh: sleep 600 3<>@vfio-group & echo $! > /tmp/holder"),
        Step("X-busy", f"run --backend kvm --mode noncoherent --vfio @vfio-group {CELLS} --out @out/X-busy.json"),
        Step("release", "sh: kill $(cat /tmp/holder)"),
        Step("unload-type1", "sh: rmmod vfio_iommu_type1"),
        Step("X-notype1", f"run --backend kvm --mode noncoherent --vfio @vfio-group {CELLS} --out @out/X-notype1.json"),
        Step("reload-type1", "sh: modprobe vfio_iommu_type1"),
        Step("X-hostdev", f"run --backend qemu-kvm --machine q35 --vfio-pci @host-bdf --mode noncoherent {CELLS} "
                          "--out @out/X-hostdev.json"),
    ]),
}


def run_case(name, build, out_root):
    case = CASES[name]
    out = out_root / name
    argv = [sys.executable, str(LAB / "flushbench-lab"), "--kernel", case.kernel, "--snoop-control", case.snoop_control,
            "--cpus", str(case.cpus), "--build", str(build), "--out", str(out), "--timeout", "600", "--step-timeout", "180"]
    for s in case.steps:
        argv += ["--step", s.command]
    if out.exists():  # results of an earlier run must not pass for this one's
        shutil.rmtree(out)
    t0 = time.monotonic()
    rc = subprocess.run(argv).returncode
    print(f"cases: {name}: flushbench-lab exit {rc} after {time.monotonic() - t0:.1f}s", flush=True)
    if rc == SKIP:
        return SKIP
    if rc != 0:
        print(f"cases: {name}: FAIL: the lab run failed (see above and {out}/serial.log)")
        return 1
    import check
    return check.check(name, out)


def main(argv):
    p = argparse.ArgumentParser(description="boot the lab's cases and check them")
    p.add_argument("cases", nargs="*", metavar="CASE", help=f"{', '.join(CASES)} (default: all)")
    p.add_argument("--build", default=str(LAB.parent / "build"), help="flushbench build directory")
    p.add_argument("--out-root", help="where each case's results go (default <build>/lab-cases)")
    a = p.parse_args(argv)
    unknown = [c for c in a.cases if c not in CASES]
    if unknown:
        p.error(f"unknown case {unknown[0]}: choose from {', '.join(CASES)}")
    out_root = Path(a.out_root or Path(a.build) / "lab-cases").resolve()
    t0, status = time.monotonic(), 0
    for name in a.cases or list(CASES):
        rc = run_case(name, Path(a.build).resolve(), out_root)
        if rc == SKIP:
            return SKIP
        status = status or rc
    print(f"cases: {'PASS' if status == 0 else 'FAIL'} in {time.monotonic() - t0:.1f}s")
    return status


if __name__ == "__main__":
    sys.path.insert(0, str(LAB))
    sys.exit(main(sys.argv[1:]))
