"""After the boot: L1's results share copied into --out, and one summary line per step.

--out holds what L1 wrote (l1/facts.json, l1/tracepoints/, steps/NN.{json,stdout,stderr}, and
whatever the steps wrote under @out), plus the host's own record: serial.log (L1's console),
qemu.log (QEMU's stderr) and lab.json (what was booted, how, and how long it took)."""

import json
import shutil
from pathlib import Path

from .ui import LabError, say

FLUSH_FUNCS = ("wbinvd_ipi", "__wbinvd")  # one call per CPU KVM flushes (l1/witness.sh)


def collect(rw, out):
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(rw, out, dirs_exist_ok=True)


def witness_line(w):
    t = w.get("totals", {})
    flushes = sum(t.get(f, 0) for f in FLUSH_FUNCS)
    per_cpu = ", ".join(f"cpu{c} {sum(v.get(f, 0) for f in FLUSH_FUNCS)}" for c, v in sorted(w.get("per_cpu", {}).items())
                        if any(f in v for f in FLUSH_FUNCS))
    answers = [e["ret"] for e in w.get("events", []) if e["func"] == "vfio_file_enforced_coherent"]
    line = (f"register {t.get('kvm_arch_register_noncoherent_dma', 0)}, "
            f"unregister {t.get('kvm_arch_unregister_noncoherent_dma', 0)}, "
            f"WBINVD exits {t.get('kvm_emulate_wbinvd', 0)}, flushes {flushes}" + (f" ({per_cpu})" if per_cpu else ""))
    if answers:
        line += f"; vfio_file_enforced_coherent returned {','.join(map(str, answers))}"
    if w.get("overrun"):
        line += f"; TRACE OVERRUN: {w['overrun']} events lost"
    return line


def summarize(out):
    """Prints the per-step summary; returns the steps' witnesses. Raises if L1 did not finish."""
    witnesses = []
    for f in sorted((out / "steps").glob("*.json")):
        w = json.loads(f.read_text())
        witnesses.append(w)
        wall = f"{w['wall_s']:.1f}s" if w.get("wall_s") is not None else "?"
        say("summary", f"step {w['step']}: exit {w['exit_code']} in {wall}  "
                       f"{'sh: ' if w['kind'] == 'sh' else 'flushbench '}{w['command']}")
        say("summary", f"        witness: {witness_line(w)}")
        err = (out / "steps" / f"{f.stem}.stderr")
        if w["exit_code"] != 0 and err.exists():
            last = [l for l in err.read_text(errors="replace").splitlines() if l.strip()][-1:]
            if last:
                say("summary", f"        stderr: {last[0][:200]}")
    if not (out / "l1" / "done").exists():
        raise LabError(f"L1 did not finish its steps: see {out / 'serial.log'}")
    return witnesses
