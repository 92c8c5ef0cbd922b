"""Every caveat a reader needs before trusting a number, most important first: whether the timings
hold at all (a failed self-check, emulated instructions, TCG: host/timing_check.h), then the mode
labels the kernel could not confirm, per file (KVM flavour, an interrupted run, reboots, host
load, frequency scaling), per cell (failed, not run, no PMU, no TSC rate, below the timing floor),
the pattern table, and the neighbour's."""

import math
import os

from .. import evidence
from .. import neighbour as nb
from .. import timing
from ..labels import bytes_iec, num, size_label

FAILED = {"hung", "crashed", "fault", "corrupt"}


def caveats(r):
    return timing_caveats(r) + evidence.caveats(r) + file_caveats(r) + cell_caveats(r) + pattern_caveats(r) + neighbour_caveats(r)


def timing_caveats(r):
    """Per file: TCG, a failed timing self-check and emulated instructions (run.timing), in that
    order, each fact once with the runs it holds for; a file without run.timing (before schema 5) that ran on TCG says so from its own flags."""
    out = []
    for fi, (path, doc) in enumerate(zip(r.paths, r.docs)):
        name = os.path.basename(path)
        entries = timing.entries(doc)
        out += [f"{name}: {w}" for w in timing.file_warnings(doc)]
        fb = doc.get("context", {}).get("flushbench", {})
        tcg = fb.get("emulated") or any(s.emulated for s in r.series if s.file_index == fi)
        if tcg and not any(e.get("emulated_by_tcg") for e in entries):
            out.append(f"{name}: EMULATED (TCG): backend {fb.get('backend', '?')} is emulated (QEMU TCG treats WBINVD and CLFLUSH* "
                       "as no-ops): its timings are functional only, not costs.")
        why = timing.unchecked(doc)
        if why:
            out.append(f"{name}: {why}: whether a cost is below what the bracket resolves is judged from each cell's own 95% "
                       "interval alone.")
    return out


def file_caveats(r):
    per_file = {}  # message -> files it applies to, so three files on one host say it once

    def add(name, message):
        per_file.setdefault(message, []).append(name)

    for path, doc in zip(r.paths, r.docs):
        name = os.path.basename(path)
        ctx = doc.get("context", {})
        fb = ctx.get("flushbench", {})
        flavour = fb.get("host", {}).get("kvm_flavour") or fb.get("kvm_flavour")
        if flavour and flavour not in ("vmx", "svm", "none") and not fb.get("emulated"):
            add(name, f"KVM flavour {flavour} is not VMX/SVM: exit and emulation costs differ from hardware-virtualized KVM "
                      "(on kvm_pvm, a nested paging-based KVM, a dirty-line CLFLUSH costs thousands of cycles).")
        run = fb.get("run") or {}
        if run.get("interrupted"):
            add(name, f"the run was interrupted: {run.get('cells', '?')} of {run.get('cells_planned', '?')} cells.")
        if run.get("error"):
            add(name, f"the run ended with an error: {run['error']}")
        boots = run.get("boots") or []
        if len(boots) > 1:
            add(name, f"{len(boots)} guest boots: the guest was rebooted after a hung or crashed cell.")
        load = ctx.get("load_avg")
        cpus = ctx.get("num_cpus") or 1
        if isinstance(load, list) and load and load[0] > 0.5 * cpus:
            add(name, f"host load average {load[0]:.1f} on {cpus} CPUs when the run ended: other work may have disturbed timings.")
        if ctx.get("cpu_scaling_enabled"):
            add(name, "CPU frequency scaling was enabled (governor not 'performance'); TSC cycles are unaffected, core speed is not.")
    return [f"{', '.join(files)}: {message}" for message, files in per_file.items()]


def cell_caveats(r):
    """Cells, grouped by what went wrong."""
    pmu, failed, notrun, unknown_rate = {}, [], {}, []
    for g in r.groups.values():
        for c in g.cells:
            st = c.get("status", "?")
            what = f"{g.pattern} {size_label(g.footprint)} on {g.series.label}"
            if st in FAILED:
                tail = (c.get("last_output") or "").strip().splitlines()[-1:] or [""]
                failed.append(f"cell {what}: {st}" + (f" ({c['reason']})" if c.get("reason") else "")
                              + (f"; last guest output: {tail[0][:120]}" if tail[0] else ""))
            elif st in ("unsupported", "skipped"):
                notrun.setdefault(f"{st}: {c.get('reason') or 'no reason given'}", []).append(what)
            if c.get("tsc") and not c.get("guest_pmu") and c.get("backend") not in ("native", "native-ring0"):
                reason = c.get("guest_pmu_unavailable") or "not reported"
                pmu[reason] = pmu.get(reason, 0) + 1
            if c.get("tsc") and not c.get("tsc_khz"):
                unknown_rate.append(what)
    out = failed
    for why, cells in sorted(notrun.items()):
        out.append(f"{len(cells)} cells {why} ({', '.join(cells[:4])}{' ...' if len(cells) > 4 else ''})")
    for reason, n in sorted(pmu.items()):
        out.append(f"guest PMU counters unavailable in {n} cells: {reason} (cycles, instructions and LLC misses are missing).")
    if unknown_rate:
        out.append(f"{len(unknown_rate)} cells have no TSC rate: their times are TSC cycles only, no ns.")
    below = [g for g in r.groups.values() if g.below_floor]
    if below:
        names = [f"{g.pattern} {size_label(g.footprint)} on {g.series.label}" for g in below]
        out.append(f"{len(below)} cells cost less than this host can resolve (their median is within the timing floor, or half their own "
                   "95% interval, of zero): shown as \"below floor (±X cycles)\" and drawn at the floor, not as numbers ("
                   + ", ".join(names[:6]) + (" ..." if len(names) > 6 else "") + ").")
    return out


def pattern_caveats(r):
    unknown = r.unknown_patterns()
    if not unknown:
        return []
    return [f"pattern{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} not in flushbench's pattern table: reported under "
            "the raw name, after the known patterns, without a description."]


def neighbour_caveats(r):
    if not r.neighbour:
        return []
    out = ["neighbour: slices are consecutive, not independent: one flush burst can slow several in a row, so the "
           "intervals and p-values are optimistic for bursty effects; they rank the steps, they are not exact error rates."]
    for fi, run in r.neighbour:
        out += run_caveats(f"{os.path.basename(r.paths[fi])} neighbour run {nb.run_number(run)}", r, fi, run)
    # Paced steps that did not finish (or failed) have no window: say which.
    for fi, c in r.paced:
        pace = c.get("pace") or {}
        if c.get("status", "ok") != "ok" or not pace.get("finished", True):
            out.append(f"{os.path.basename(r.paths[fi])}: paced step {pace.get('label', c.get('pattern', '?'))} ({c.get('mode', '?')}) "
                       f"{c.get('status', '?')}{', unfinished' if not pace.get('finished', True) else ''}"
                       + (f" ({c['reason']})" if c.get("reason") else "") + ": not among the neighbour's windows.")
    return out


def count(v):
    return int(num(v)) if math.isfinite(num(v)) else 0


def run_caveats(name, r, fi, run):
    out = []
    if nb.emulated(r, fi, run):
        out.append(f"{name}: backend {run.get('backend', '?')} is emulated (QEMU TCG): the guest's WBINVD and CLFLUSH are "
                   "no-ops there, so the neighbour sees no flush; the figures show the method, not an effect.")
    if run.get("capped"):
        out.append(f"{name}: capped: the neighbour stopped slicing when too many slices were held; later steps have no slices.")
    windows = run.get("windows") or []
    if windows and not any(w.get("rate") == "idle" for w in windows):
        out.append(f"{name}: no idle step, so no baseline: add idle:MS to --pace.")
    late = {}  # (step, mode) -> [late, ops, windows]
    notes = {}  # note -> windows
    for w in windows:
        eff = w.get("effect") or {}
        n = count(w.get("late"))
        if n > 0:
            x = late.setdefault((nb.step_name(w), str(w.get("mode", "?"))), [0, 0, []])
            x[0] += n
            x[1] += count(w.get("ops"))
            x[2].append(str(w.get("label", "?")))
        if eff.get("note") and not isinstance(eff.get("slowdown"), dict):
            notes.setdefault(str(eff["note"]), []).append(f"{w.get('label', '?')} ({w.get('mode', '?')})")
    for (step, mode), (n, ops, labels) in late.items():
        where = f" (in {', '.join(labels)})" if len(labels) > 1 or labels != [step] else ""
        out.append(f"{name}: step {step} ({mode}): {n} of {ops} operations started late{where}: the guest could not keep the asked "
                   "rate; see the achieved rate.")
    for note, labels in notes.items():
        out.append(f"{name}: {', '.join(labels)}: {note}")
    pre = nb.preempted(run)
    if pre:
        total = sum(n for _, n, _ in pre)
        listed = ", ".join(f"{label}: {n}" for label, n, _ in pre[:6]) + (f", and {len(pre) - 6} more windows" if len(pre) > 6 else "")
        if nb.rounds_format(run):
            every = nb.preempted_mask(run)
            busy = (f" That is {int(every.sum())} of the run's {len(every)} slices: the host was too busy for the neighbour to "
                    "measure anything; run it on a quiet host." if len(every) and every.mean() > 0.5 else "")
            out.append(f"{name}: {total} slices had the neighbour preempted by the host scheduler and were left out of the "
                       f"comparisons ({listed}).{busy}")
        else:
            out.append(f"{name}: {total} slices had the neighbour preempted by the host scheduler: kept, but their time includes "
                       f"time off the CPU ({listed}).")
    slow = {m: v[0] for m, v in nb.idle_medians(run).items() if math.isfinite(v[0]) and v[0] > 100}
    if slow:
        out.append(f"{name}: the idle pointer chase takes {', '.join(f'{v:.0f} ns ({m})' for m, v in slow.items())} per load, "
                   "typical of memory rather than of a last-level-cache hit (tens of ns): the neighbour's buffer "
                   f"({bytes_iec(run.get('buffer_bytes'))}) is not cache-resident, so a flush has little of it to evict; "
                   "a smaller --neighbour-bytes would show flushes more clearly.")
    return out
