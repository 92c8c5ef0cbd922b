"""L1: the QEMU machine the lab boots on the host, and the boot itself.

    q35 under TCG, -cpu EPYC     TCG emulates AMD SVM with nested paging, so kvm_amd loads in L1
                                 and flushbench's VMM runs its guest as L2 on it. thread=single:
                                 multi-threaded TCG oopsed L1 (an int3 while the kernel patched
                                 its own text) twice in ten boots, single-threaded never, at the
                                 same speed on two host cores.
    intel-iommu                  an emulated VT-d unit whose snoop-control property sets ECAP bit 7:
                                 the one switch between coherent and non-coherent DMA in this lab.
                                 intremap=on: Linux wants interrupt remapping with it.
    e1000e on the root bus       its own IOMMU group, bound to vfio-pci in L1 (@vfio-group)
    pci-bridge + two e1000       a conventional bridge: both devices share its group (@nonviable-group)
    two virtio-9p shares         fbro (read-only payload) and fbout (results), mounted by l1/init

Nothing in L1 talks to the network: each NIC has a restricted user-mode backend only so that QEMU
does not complain about a NIC without a peer."""

import shlex
import subprocess
import threading
import time
from pathlib import Path

from .ui import LabError, say

MEMORY = "2G"


def command(kernel, initrd, ro, rw, serial_log, snoop_control, cpus, timeout_s):
    nics = []
    for i, (model, where) in enumerate((("e1000e", ""), ("e1000", ",bus=lab-bridge,addr=1"), ("e1000", ",bus=lab-bridge,addr=2"))):
        # romfile= : no option ROM BAR; L1 boots with -kernel and nothing in it runs NIC firmware.
        nics += ["-netdev", f"user,id=nic{i},restrict=on", "-device", f"{model},netdev=nic{i},romfile={where}"]
    append = ["console=ttyS0", "intel_iommu=on", "panic=-1", "quiet", "loglevel=4",
              # L1 powers itself off a little before the host would kill it (l1/init).
              f"flushbench_lab.timeout={max(timeout_s - 20, 10)}"]
    return ["qemu-system-x86_64", "-M", "q35", "-accel", "tcg,thread=single", "-cpu", "EPYC",
            "-smp", str(cpus), "-m", MEMORY, "-nodefaults", "-vga", "none", "-display", "none",
            "-device", f"intel-iommu,intremap=on,snoop-control={snoop_control}",
            "-device", "pci-bridge,id=lab-bridge,chassis_nr=1",
            *nics,
            "-virtfs", f"local,path={ro},mount_tag=fbro,security_model=none,readonly=on",
            "-virtfs", f"local,path={rw},mount_tag=fbout,security_model=none",
            "-serial", f"file:{serial_log}", "-monitor", "none", "-no-reboot",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", " ".join(append)]


class _SerialFollower(threading.Thread):
    """Echoes L1's `lab:` lines from the serial log while QEMU runs, with the boot's elapsed time."""

    def __init__(self, path, t0):
        super().__init__(daemon=True)
        self.path, self.t0, self.stop = Path(path), t0, threading.Event()
        self.init_at = None

    def run(self):
        pos, partial = 0, b""
        while True:
            stopping = self.stop.is_set()
            if self.path.exists():
                with open(self.path, "rb") as f:
                    f.seek(pos)
                    data = f.read()
                pos += len(data)
                *lines, partial = (partial + data).split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").strip()
                    if line.startswith("lab: "):
                        if self.init_at is None and line.startswith("lab: init"):
                            self.init_at = time.monotonic() - self.t0
                        say("boot", f"{time.monotonic() - self.t0:6.1f}s  L1 {line[5:]}")
            if stopping:
                return
            self.stop.wait(0.5)


def boot(argv, serial_log, timeout_s, qemu_log):
    """Runs L1 to its power-off; returns (wall seconds, seconds to L1's /init or None)."""
    say("boot", "qemu " + " ".join(shlex.quote(a) for a in argv[1:]))
    t0 = time.monotonic()
    follower = _SerialFollower(serial_log, t0)
    follower.start()
    with open(qemu_log, "wb") as err:
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT, timeout=timeout_s)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = None
    follower.stop.set()
    follower.join()
    wall = time.monotonic() - t0
    if rc is None:
        raise LabError(f"L1 did not power off within {timeout_s}s (serial log {serial_log}): raise --timeout, "
                       f"or look for the step that hung")
    if rc != 0:
        tail = Path(qemu_log).read_text(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise LabError(f"qemu-system-x86_64 exited with status {rc}: {tail[0]}")
    return wall, follower.init_at
