#!/usr/bin/python3
"""check.py CASE OUT: what each step of a lab case (cases.py) must show.

Two sources, independent of each other, are compared:
- the witness: ftrace in L1 (steps/NN.json, l1/witness.sh), i.e. what KVM itself did: whether
  non-coherent DMA was registered, every WBINVD exit, and every CPU each WBINVD really flushed;
- flushbench's own results (@out/<step>.json): exit codes, cells, the phases of
  context.flushbench.run.phases with their CLOCK_MONOTONIC windows, verdicts and kprobe counts, and
  every cell's mode_evidence.

Every expectation is a hard one: a failure fails the case."""

import json
import os
import sys
from pathlib import Path

LAB = Path(__file__).resolve().parent
sys.path.insert(0, str(LAB))
from cases import CASES, REPS_AND_WARMUP  # noqa: E402

FLUSH = ("wbinvd_ipi", "__wbinvd")  # called once per CPU KVM flushes (l1/witness.sh)
REGISTER, UNREGISTER = "kvm_arch_register_noncoherent_dma", "kvm_arch_unregister_noncoherent_dma"
EXIT = "kvm_emulate_wbinvd"
COHERENT_QUESTION = "vfio_file_enforced_coherent"
TS_SLACK_NS = 1000  # trace timestamps are printed in microseconds, rounded down


class Report:
    def __init__(self, case):
        self.case, self.lines, self.failed = case, [], 0
        self.passed = 0

    def _line(self, status, step, what):
        line = f"{status:<28} {step}: {what}"
        self.lines.append(line)
        print(line, flush=True)

    def expect(self, ok, step, what):
        if ok:
            self.passed += 1
            self._line("PASS", step, what)
        else:
            self.failed += 1
            self._line("FAIL", step, what)
        return ok

    def info(self, step, what):
        self._line("INFO", step, what)


class Witness:
    """One step's witness (steps/NN.json)."""

    def __init__(self, path):
        self.d = json.loads(path.read_text())
        self.events = self.d["events"]
        self.exit_code = self.d["exit_code"]

    def _in(self, e, window):
        return window is None or window[0] - TS_SLACK_NS <= e["ts_ns"] <= window[1]

    def count(self, funcs, window=None):
        funcs = (funcs,) if isinstance(funcs, str) else funcs
        return sum(1 for e in self.events if e["func"] in funcs and self._in(e, window))

    def flushes(self, window=None):
        return self.count(FLUSH, window)

    def flushed_cpus(self, window=None):
        return sorted({e["cpu"] for e in self.events if e["func"] in FLUSH and self._in(e, window)})

    def exits(self, window=None):
        return self.count(EXIT, window)

    def first(self, func):
        ts = [e["ts_ns"] for e in self.events if e["func"] == func]
        return min(ts) if ts else None

    def answers(self):
        return [e.get("ret") for e in self.events if e["func"] == COHERENT_QUESTION]

    def summary(self):
        return (f"register {self.count(REGISTER)}, unregister {self.count(UNREGISTER)}, WBINVD exits {self.exits()}, "
                f"flushes {self.flushes()} on CPUs {self.flushed_cpus()}, {COHERENT_QUESTION} returned {self.answers()}")


class Step:
    """A step of the case: its witness, flushbench's results file, its stderr."""

    def __init__(self, out, index, spec):
        self.name, self.spec = spec.name, spec
        base = out / "steps" / f"{index:02d}"
        self.w = Witness(base.with_suffix(".json")) if base.with_suffix(".json").exists() else None
        self.stderr = [l for l in base.with_suffix(".stderr").read_text(errors="replace").splitlines()
                       if l.strip()] if base.with_suffix(".stderr").exists() else []
        self.results_path = out / f"{spec.name}.json"
        self.results = json.loads(self.results_path.read_text()) if self.results_path.exists() else None

    def phases(self):
        run = ((self.results or {}).get("context", {}).get("flushbench", {}) or {}).get("run", {}) or {}
        return run.get("phases")

    def cells(self):
        return (self.results or {}).get("flushbench_cells", [])


def base_mode(label):
    """Phase and cell labels carry placement and repetition (coherent-repeat, coherent+cpu2)."""
    return label.split("+")[0].replace("-repeat", "")


def window(phase):
    w = phase.get("window_ns")
    return (w[0], w[1]) if isinstance(w, list) and len(w) == 2 and w[0] <= w[1] else None


def evidence_phase(cell, phases):
    """The phase a cell's mode_evidence names by (run, boot, phase)."""
    me = cell.get("mode_evidence") or {}
    key = (me.get("run"), me.get("boot"), me.get("phase"))
    found = [p for p in phases if (p.get("run"), p.get("boot"), p.get("phase")) == key]
    return found[0] if len(found) == 1 else None


def check_phase_sources(r, s, idx, phase):
    """flushbench's own evidence for a phase against the witness in the phase's window."""
    win = window(phase)
    label = f"phase {idx} ({phase.get('label', phase.get('mode'))})"
    nc = phase.get("mode") == "noncoherent"
    r.expect(phase.get("verdict") == "confirmed", s.name, f"{label}: verdict confirmed (is {phase.get('verdict')!r}: "
                                                          f"{phase.get('summary', '')})")
    kp = phase.get("kprobes") or {}
    if not r.expect("unavailable" not in kp, s.name, f"{label}: flushbench's kprobes counted ({kp.get('unavailable', 'yes')})"):
        return
    r.expect(kp.get("registered") == nc, s.name, f"{label}: flushbench's kprobes say registered={kp.get('registered')}, "
                                                f"the mode is {phase.get('mode')}")
    if win:
        reg = (s.w.count(REGISTER, win), s.w.count(UNREGISTER, win))
        r.expect((kp.get("register"), kp.get("unregister")) == reg, s.name,
                 f"{label}: flushbench counted {kp.get('register')} registrations and {kp.get('unregister')} "
                 f"unregistrations, the witness {reg[0]} and {reg[1]} in the window")
        r.expect(kp.get("wbinvd_flushes") == s.w.flushes(win), s.name,
                 f"{label}: flushbench counted {kp.get('wbinvd_flushes')} flushes, the witness {s.w.flushes(win)} in the window")
        r.expect(kp.get("wbinvd_exits") == s.w.exits(win), s.name,
                 f"{label}: flushbench counted {kp.get('wbinvd_exits')} WBINVD exits, the witness {s.w.exits(win)} in the window")
        per_cpu = {str(c): sum(1 for e in s.w.events if e["func"] in FLUSH and e["cpu"] == c and s.w._in(e, win))
                   for c in s.w.flushed_cpus(win)}
        got = {k: v for k, v in (kp.get("wbinvd_flushes_per_cpu") or {}).items() if v}
        r.expect(got == per_cpu, s.name, f"{label}: flushes per CPU, flushbench {got}, witness {per_cpu}")


def check_cells_evidence(r, s, phases):
    cells = s.cells()
    bad = []
    for c in cells:
        p = evidence_phase(c, phases)
        if c.get("mode_evidence", {}).get("verdict") != "confirmed" or p is None or p.get("mode") != base_mode(c["mode"]):
            bad.append(c["name"])
    r.expect(cells and not bad, s.name, f"every cell's mode_evidence is confirmed and points at a phase of its mode"
                                        f"{(': not ' + ', '.join(bad[:4])) if bad else ''}")


# ---- Steps ------------------------------------------------------------------------------------------

def check_both(r, s, case):
    """kvm backend, A/B/A in one VM, snoop control off, vCPU pinned to CPU 0."""
    w = s.w
    r.expect(w.exit_code == 0, s.name, f"flushbench exits 0 (exit {w.exit_code})")
    # Linux 6.1 answers "coherent" for a group without a container: flushbench attaches one first.
    r.info(s.name, f"witness: {w.summary()}")
    r.expect(w.answers() == [0], s.name, f"KVM asked {COHERENT_QUESTION} once and heard non-coherent (0): {w.answers()}")
    r.expect(w.count(REGISTER) == 1 and w.count(UNREGISTER) == 1, s.name,
             f"non-coherent DMA registered once and unregistered once ({w.count(REGISTER)}/{w.count(UNREGISTER)})")
    r.expect(w.flushes() == REPS_AND_WARMUP, s.name,
             f"{REPS_AND_WARMUP} real WBINVDs (reps + warm-up of the noncoherent wbinvd cell): {w.flushes()}")
    reg, unreg = w.first(REGISTER), w.first(UNREGISTER)
    if reg is not None and unreg is not None:
        r.expect(w.flushes((reg, unreg)) == w.flushes(), s.name, "every flush between registration and unregistration")
    r.expect(w.flushed_cpus() in ([], [0]), s.name, f"only CPU 0 (the vCPU's) flushed: {w.flushed_cpus()}")

    # Exit attribution: each wbinvd cell's own kvm_exit sampling counts SVM exit 0x89 once per WBINVD.
    wb = [c for c in s.cells() if c["pattern"] == "wbinvd"]
    r.expect(len(wb) == 3, s.name, f"three wbinvd cells (coherent, noncoherent, coherent-repeat): {len(wb)}")
    for c in wb:
        ke = (c.get("extra", {}).get("host_counters") or {}).get("kvm_exits") or {}
        by = ke.get("by_reason") or {}
        n = sum(v.get("count", 0) for k, v in by.items() if k.upper() in ("WBINVD", "0X89", "137"))
        r.expect(ke.get("source") == "kvm:kvm_exit" and n == REPS_AND_WARMUP, s.name,
                 f"{c['mode']} wbinvd cell: kvm_exit counts SVM exit 0x89 {REPS_AND_WARMUP} times ({n}, source {ke.get('source')})")

    phases = s.phases() or []
    r.expect([p.get("mode") for p in phases] == ["coherent", "noncoherent", "coherent"], s.name,
             f"three phases coherent, noncoherent, coherent: {[p.get('mode') for p in phases]}")
    for i, p in enumerate(phases):
        win = window(p)
        if not r.expect(win is not None, s.name, f"phase {i} has a window_ns"):
            continue
        want = REPS_AND_WARMUP if p.get("mode") == "noncoherent" else 0
        r.expect(w.flushes(win) == want, s.name, f"phase {i} ({p.get('mode')}): {want} flushes in its window ({w.flushes(win)})",
)
        check_phase_sources(r, s, i, p)
    check_cells_evidence(r, s, phases)


def check_refused_coherent(r, s, case):
    """Snoop control on, --mode both: the group is coherent, flushbench must refuse."""
    r.expect(s.w.exit_code == 3, s.name, f"flushbench refuses --mode both with a coherent group: exit 3 ({s.w.exit_code})")
    r.expect(len(s.stderr) == 1, s.name, f"one line on stderr ({len(s.stderr)}): {s.stderr[:1]}")
    r.expect(s.w.count(REGISTER) == 0, s.name, "nothing registered non-coherent DMA")


def check_baseline(r, s, case):
    """Snoop control on, --mode coherent --vfio-baseline: KVM must see the group coherent."""
    w = s.w
    r.info(s.name, f"witness: {w.summary()}")
    r.expect(w.exit_code == 0, s.name, f"flushbench exits 0 ({w.exit_code})")
    r.expect(w.answers() and all(a == 1 for a in w.answers()), s.name, f"{COHERENT_QUESTION} returned 1 (coherent): {w.answers()}")
    r.expect(w.count(REGISTER) == 0, s.name, f"no non-coherent DMA registered ({w.count(REGISTER)})")
    r.expect(w.flushes() == 0, s.name, f"no real WBINVD ({w.flushes()})")
    phases = s.phases() or []
    r.expect(len(phases) == 1, s.name, f"one phase ({len(phases)})")
    for i, p in enumerate(phases):
        r.expect(p.get("mode") == "coherent", s.name, f"phase {i} is coherent ({p.get('mode')})")
        check_phase_sources(r, s, i, p)
    check_cells_evidence(r, s, phases)


def check_qemu(r, s, case):
    """qemu-kvm in L1, --mode both: a coherent boot without the device, a noncoherent boot with it."""
    w = s.w
    r.info(s.name, f"witness: {w.summary()}")
    r.expect(w.exit_code == 0, s.name, f"flushbench exits 0 ({w.exit_code}): {s.stderr[-3:] if w.exit_code else ''}")
    if not r.expect(w.count(REGISTER) == 1 and w.count(UNREGISTER) == 1, s.name,
                    f"only the noncoherent boot attached the device: registered {w.count(REGISTER)}, "
                    f"unregistered {w.count(UNREGISTER)}"):
        return
    # QEMU registers when it realizes vfio-pci and unregisters when it exits: [reg, unreg] is the
    # noncoherent boot. SeaBIOS and the guest's paging set-up issue WBINVDs of their own (3 on q35
    # in this lab), the same in both boots: the coherent boot's exits beyond the cell's count them.
    reg, unreg = w.first(REGISTER), w.first(UNREGISTER)
    before, inside = (0, reg), (reg, unreg)
    boot_wbinvds = w.exits(before) - REPS_AND_WARMUP
    r.expect(w.flushes(before) == 0 and boot_wbinvds >= 0, s.name,
             f"coherent boot: at least {REPS_AND_WARMUP} WBINVD exits ({w.exits(before)}), no flush ({w.flushes(before)})")
    r.expect(w.flushes(inside) == w.exits(inside) == REPS_AND_WARMUP + max(boot_wbinvds, 0), s.name,
             f"noncoherent boot: one flush per WBINVD exit, {REPS_AND_WARMUP} for the wbinvd cell + {max(boot_wbinvds, 0)} "
             f"for the boot's own: {w.flushes(inside)} flushes, {w.exits(inside)} exits")
    phases = s.phases() or []
    r.expect([(p.get("boot"), p.get("mode")) for p in phases] == [(0, "coherent"), (1, "noncoherent")], s.name,
             f"phases: boot 0 coherent, boot 1 noncoherent: {[(p.get('boot'), p.get('mode')) for p in phases]}")
    for i, p in enumerate(phases):
        win = window(p)
        if not r.expect(win is not None, s.name, f"phase {i} has a window_ns"):
            continue
        want = w.flushes(inside) if p.get("mode") == "noncoherent" else 0
        r.expect(w.flushes(win) == want, s.name, f"boot {p.get('boot')} ({p.get('mode')}): {want} flushes in its window "
                                                 f"({w.flushes(win)})")
        check_phase_sources(r, s, i, p)


def check_dirty_mask(r, s, case):
    """--dirty-mask 1,2,4: in each run, every WBINVD exit flushes exactly that many CPUs."""
    w, widths = s.w, (1, 2, 4)
    r.info(s.name, f"witness: {w.summary()}")
    if not r.expect(w.exit_code == 0, s.name, f"flushbench exits 0 ({w.exit_code}): {s.stderr[-1:]}"):
        return
    phases = s.phases() or []
    for run, k in enumerate(widths):
        nc = [p for p in phases if p.get("run") == run and p.get("mode") == "noncoherent"]
        if not r.expect(len(nc) == 1 and window(nc[0]), s.name, f"run {run} (width {k}) has one noncoherent phase with a window"):
            continue
        win = window(nc[0])
        e, f = w.exits(win), w.flushes(win)
        r.expect(e >= REPS_AND_WARMUP and f == k * e, s.name,
                 f"run {run}: {f} flushes for {e} WBINVD exits = {f / e if e else 0:.2f} per exit, want {k}")
        r.expect(len(w.flushed_cpus(win)) == k, s.name, f"run {run}: {k} distinct CPUs flushed: {w.flushed_cpus(win)}")
        check_phase_sources(r, s, phases.index(nc[0]), nc[0])


def check_bad_input(r, s, case):
    """A bad input: exit 2 or 3, one line naming the fix, nothing written that claims results."""
    w = s.w
    r.expect(w.exit_code in (2, 3), s.name, f"exit 2 or 3 ({w.exit_code})")
    r.expect(len(s.stderr) == 1, s.name, f"one line on stderr ({len(s.stderr)} lines): {s.stderr[:1]}")
    partial = s.results_path.with_name(s.results_path.name + ".partial")
    claimed = bool(s.results or (partial.exists() and '"pattern"' in partial.read_text(errors="replace")))
    r.expect(not s.results_path.exists() and not claimed, s.name,
             f"no results file ({s.results_path.name} {'exists' if s.results_path.exists() else 'absent'})")
    r.expect(w.count(REGISTER) == 0 and w.flushes() == 0, s.name,
             f"nothing was measured as non-coherent (register {w.count(REGISTER)}, flushes {w.flushes()})")


def check_helper(r, s, case):
    r.expect(s.w.exit_code == 0, s.name, f"shell step exits 0 ({s.w.exit_code}): {s.stderr[:1]}")


CHECKS = {"P": check_both, "A": check_refused_coherent, "K": check_baseline, "Q": check_qemu, "M": check_dirty_mask,
          "X-nonviable": check_bad_input, "X-busy": check_bad_input, "X-notype1": check_bad_input,
          "X-hostdev": check_bad_input, "hold": check_helper, "release": check_helper, "unload-type1": check_helper,
          "reload-type1": check_helper}


def check_l1(r, case, out):
    facts = json.loads((out / "l1" / "facts.json").read_text()) if (out / "l1" / "facts.json").exists() else {}
    r.expect((out / "l1" / "done").exists(), "L1", "L1 ran every step and powered off")
    r.expect(str(facts.get("kernel", "")).startswith(case.kernel + "."), "L1", f"kernel {facts.get('kernel')} is a {case.kernel}")
    units = facts.get("iommus", [])
    want = 1 if case.snoop_control == "on" else 0
    r.expect(units and all(u["snoop_control"] == want for u in units), "L1",
             f"VT-d ECAP bit 7 (snoop control) is {want}: {[(u['name'], u['ecap']) for u in units]}")
    ph = facts.get("placeholders", {})
    r.expect(all(k in ph for k in ("@vfio-group", "@vfio-bdf", "@nonviable-group", "@host-bdf")), "L1",
             f"every placeholder has a value: {ph}")
    fmt = out / "l1" / "tracepoints" / "kvm_exit.format"
    text = fmt.read_text() if fmt.exists() else ""
    r.expect("exit_reason;" in text and "isa;" in text, "L1", "kvm_exit's format file was copied (exit_reason, isa)")


def check(case_name, out):
    case, out = CASES[case_name], Path(out)
    r = Report(case_name)
    print(f"check: case {case_name} in {out}", flush=True)
    check_l1(r, case, out)
    for i, spec in enumerate(case.steps, 1):
        s = Step(out, i, spec)
        if not r.expect(s.w is not None, s.name, f"step {i} ran and left its witness"):
            continue
        CHECKS[spec.name](r, s, case)
    r._line("FAIL" if r.failed else "PASS", case_name, f"{r.passed} passed, {r.failed} failed")
    (out / "check.txt").write_text("\n".join(r.lines) + "\n")
    return 1 if r.failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in CASES:
        print(f"usage: check.py CASE OUT   (CASE: {', '.join(CASES)})", file=sys.stderr)
        sys.exit(2)
    sys.exit(check(sys.argv[1], sys.argv[2]))
