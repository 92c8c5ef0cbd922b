"""The report's sections that read a whole kind of run or fact: Timing (each run's floor and
self-check, first), Mode evidence (the kernel's verdict on each phase's label), Memory types (the
pattern table's memtype group, each type against the group's first, usually write-back) and
Neighbour (the host tenant during the guest's paced steps, with flushbench's own verdicts)."""

import math
import os

from .. import evidence
from .. import neighbour as nb
from .. import stats, timing
from ..analysis import lines_of, memtype_groups, per_line
from ..labels import fmt_ci, fmt_interval, fmt_num, fmt_p, num, size_label


def timing_section(d, r):
    """First in the report: what must be said before any number (a failed self-check, emulated
    instructions, TCG), then each run's timing floor and check."""
    d.h(2, "Timing")
    warnings = [f"{os.path.basename(path)}: {w}" for path, doc in zip(r.paths, r.docs) for e in timing.entries(doc) for w in timing.warnings(e)]
    rows = []
    old = []
    for path, doc in zip(r.paths, r.docs):
        why = timing.unchecked(doc)
        if why:
            old.append(f"{os.path.basename(path)}: {why}")
        for e in timing.entries(doc):
            em = e.get("emulation") if isinstance(e.get("emulation"), dict) else {}
            rows.append([os.path.basename(path), timing.who(e), timing.floor_text(e), e.get("floor_source", "?"),
                         e.get("check", "?") + (f" ({len(e['problems'])} problems)" if e.get("problems") else ""),
                         f"yes ({len(em.get('cells') or [])} cells)" if em.get("detected") else "no",
                         "yes" if e.get("emulated_by_tcg") else "no"])
    if warnings:
        d.p("Read this before any number below:")
        d.ul(warnings)
    elif rows:
        d.p("Every run's timing self-check passed or had nothing to check, and no emulation was detected.")
    d.table(["file", "run", "timing floor", "floor source", "self-check", "emulated instructions", "TCG"], rows)
    if rows:
        d.p("Timing floor: how far nop's per-op estimate strays from zero in 95 of 100 repetitions, calibrated at each boot. "
            "Self-check: nop and dirty at 0 bytes measure zero within it, and no cell measures clearly below zero.")
    for line in old:
        d.p(f"{line}; a cost is shown as below floor when its median is at most half its own 95% interval.")


def mode_evidence_section(d, r):
    """The kernel's verdict on each phase's mode label (host/mode_evidence.h)."""
    rows = evidence.rows(r)
    missing = evidence.missing(r)
    if not rows and not missing:
        return
    d.h(2, "Mode evidence")
    d.p("A mode label is a claim: \"noncoherent\" that KVM executed the guest's WBINVDs, \"coherent\" that it skipped them. "
        "confirmed: every source that answered agrees with the label; contradicted: one disagrees; unverified: none could answer. "
        "Unverified and contradicted phases are among the caveats.")
    d.table(["file", "phase", "label", "verdict", "source", "summary"], rows)
    if missing:
        d.p(f"{', '.join(missing)}: no mode evidence (written before schema 4): the labels are what was asked.")


def regimes(r):
    """What each file's host was expected to do with memory types (context.flushbench.regime)."""
    out = []
    for path, doc in zip(r.paths, r.docs):
        regime = doc.get("context", {}).get("flushbench", {}).get("regime")
        if regime is None:
            continue
        items = [("memtype", regime["memtype"])] if isinstance(regime, dict) and "memtype" in regime else \
            (regime.items() if isinstance(regime, dict) else [("", regime)])
        for key, v in items:
            text = str(v.get("expected", "?")) + (f" ({v['reason']})" if v.get("reason") else "") if isinstance(v, dict) else str(v)
            out.append(f"{os.path.basename(path)}: expected regime{f' ({key})' if key and key != 'memtype' else ''}: {text}")
    return out


def memtype_section(d, r):
    grid = r.table.memtype_grid
    groups = memtype_groups(r)
    expected = regimes(r)
    if not groups and not expected:
        return
    d.h(2, "Memory types")
    d.p("Each memory-type cell reads or writes (or reads after dirtying and CLFLUSHing) a buffer the guest maps with the "
        f"memory type its pattern names ({', '.join(mt.upper() for mt in grid.memtypes)}). "
        "Cost per line = median net TSC cycles ÷ (footprint ÷ line size).")
    d.ul(expected)
    if not groups:
        d.p("No memory-type cells in these results.")
        return
    d.table(["operation", "memory type", "footprint", "series", "status", "n", "cycles/line (median)", "95% CI", "ns/line"],
            [memtype_row(*x) for x in groups])
    memtype_ratios(d, r, grid)


def memtype_row(s, op, mt, f, g):
    if not g.has_samples:
        reason = g.reasons()
        return [op, mt.upper(), size_label(f), s.label, g.status + (f" ({reason})" if reason else ""), 0, "n/a", "n/a", "n/a"]
    if g.below_floor:
        lines = lines_of(g) or 1
        return [op, mt.upper(), size_label(f), s.label, g.status, len(g.net), timing.below_floor_text(g.resolution / lines, "/line"),
                "-", "-"]
    med, lo, hi = per_line(g)
    khz = next(iter(s.tsc_khz)) if len(s.tsc_khz) == 1 else None
    return [op, mt.upper(), size_label(f), s.label, g.status, len(g.net), fmt_num(med, ".1f"),
            f"[{fmt_num(lo, '.1f')}, {fmt_num(hi, '.1f')}]", fmt_num(med * 1e6 / khz, ".2f") if khz else "n/a"]


def memtype_ratios(d, r, grid):
    """Each other memory type over the first (the baseline) at the same operation, footprint and series."""
    base, others = grid.memtypes[0], grid.memtypes[1:]
    rows, significant = [], []
    for s in r.series:
        for op in grid.operations:
            pbase = grid.pattern(op, base)
            for f in r.footprints(pbase) if pbase else []:
                gb = r.group(s, pbase, f)
                if gb is None:
                    continue
                row = [op, size_label(f), s.label]
                for mt in others:
                    g = r.group(s, grid.pattern(op, mt), f) if grid.pattern(op, mt) else None
                    if g is None or len(g.net) < 2 or len(gb.net) < 2:
                        row += ["n/a", "n/a"]
                        continue
                    if g.below_floor or gb.below_floor:
                        row += ["n/a (below floor)", "-"]
                        continue
                    est, ci = stats.ratio_ci(g.net, gb.net)
                    pv = stats.u_test(g.net, gb.net)
                    row += [f"{fmt_num(est)} {fmt_ci(ci) if fmt_ci(ci) != '-' else '[n/a]'}", fmt_p(pv) if pv is not None else "n/a"]
                    if pv is not None and pv < 0.05 and all(math.isfinite(v) for v in ci) and not ci[0] <= 1 <= ci[1]:
                        significant.append(f"{op} {size_label(f)} {mt.upper()}/{base.upper()} ×{est:.3g}")
                rows.append(row)
    if not rows:
        return
    d.p(f"Ratios of medians to {base.upper()} at the same footprint (same operation, same series), with 95% bootstrap "
        "intervals and two-sided Mann-Whitney p.")
    d.table(["operation", "footprint", "series"] + [h for mt in others for h in (f"{mt.upper()} / {base.upper()} [95% CI]", "p")], rows)
    if significant:
        d.p(f"Significantly different from {base.upper()} (p < 0.05, interval excludes 1): " + ", ".join(significant) + ".")
    else:
        d.p(f"No memory type differed significantly from {base.upper()} in these cells: the mapping's memory type made no "
            "measurable difference here.")


def neighbour_section(d, r):
    if not r.neighbour:
        return
    d.h(2, "Neighbour")
    d.p("A host thread pinned to another CPU keeps its buffer cache-resident and probes it in consecutive time slices: half a "
        "slice chasing pointers (ns per dependent load), half streaming (GB/s). Each paced guest step is a window of host time; "
        "its slices are compared with the pooled slices of the idle steps in the same mode. Slowdown = median ns/load ÷ idle "
        "median (above 1: slower); stream ratio = median GB/s ÷ idle median (below 1: slower); p: two-sided Mann-Whitney on "
        "ns/load; significant: p < 0.05 and the slowdown interval excludes 1. A verdict of \"slower\" also needs the whole interval "
        f"beyond the idle steps' own drift. Intervals: {stats.LEVEL:.0%} bootstrap, from flushbench.")
    for path, doc in zip(r.paths, r.docs):
        wb = ((doc.get("context", {}).get("flushbench", {}).get("regime") or {}).get("wbinvd")) or {}
        if isinstance(wb, dict) and wb:
            d.ul([f"{os.path.basename(path)}: guest WBINVD, coherent: {wb.get('coherent', '?')}",
                  f"non-coherent: {wb.get('noncoherent', '?')}",
                  f"non-coherent mode on that host: {'reachable' if wb.get('noncoherent_reachable') else 'not reachable'} ({wb.get('how', '?')})"])
    for fi, run in r.neighbour:
        d.h(3, nb.title(r, fi, run, short=True))
        rows = [neighbour_row(w) for w in sorted(run.get("windows") or [], key=lambda w: num(w.get("start_s")))]
        if rows:
            d.table(["step", "mode", "achieved rate", "ops", "slices", "median ns/load [95% CI]", "slowdown [95% CI]",
                     "stream ratio [95% CI]", "p", "verdict"], rows)
            d.p(neighbour_reading(run))
        else:
            d.p("No paced step finished in this run: nothing to compare.")


def verdict(w, eff):
    """flushbench's own verdict (which also weighs the idle steps' drift), else one from the effect."""
    if w.get("verdict"):
        return w["verdict"]
    sd = num(eff["slowdown"].get("estimate")) if isinstance(eff.get("slowdown"), dict) else math.nan
    if not math.isfinite(sd):
        return "n/a" + (f": {eff['note']}" if eff.get("note") else "")
    if w.get("rate") == "idle":
        return "idle (drift check): " + ("significant drift" if eff.get("significant") else "no significant drift")
    if eff.get("significant"):
        return "significant" + (" (faster than idle)" if sd < 1 else "")
    return "no significant effect"


def neighbour_row(w):
    eff = w.get("effect") or {}
    chase = eff.get("chase_ns") if isinstance(eff.get("chase_ns"), dict) else {}
    ci = chase.get("median_ci") if isinstance(chase.get("median_ci"), dict) else {}
    med = num(chase.get("median"))
    med_txt = "n/a" if not math.isfinite(med) else f"{med:.1f} [{fmt_num(num(ci.get('lo')), '.1f')}, {fmt_num(num(ci.get('hi')), '.1f')}]"
    test = eff.get("chase_test") if isinstance(eff.get("chase_test"), dict) else {}
    p = num(test.get("p"))
    late = int(num(w.get("late"))) if math.isfinite(num(w.get("late"))) else 0
    return [w.get("label", "?"), w.get("mode", "?"), nb.window_rate(w), f"{w.get('ops', 'n/a')}" + (f" ({late} late)" if late else ""),
            eff.get("slices", "n/a"), med_txt, fmt_interval(eff.get("slowdown")), fmt_interval(eff.get("stream_ratio")),
            fmt_p(p) if math.isfinite(p) else "n/a", verdict(w, eff)]


def neighbour_reading(run):
    """One line in plain English: the largest significant slowdown, or that there was none."""
    steps = [w for w in run.get("windows") or [] if w.get("rate") != "idle" and isinstance((w.get("effect") or {}).get("slowdown"), dict)]
    if not steps:
        return "No paced step could be compared with an idle step."

    def sd(w, k="estimate"):
        return num(w["effect"]["slowdown"].get(k))

    def beyond(w, direction):  # flushbench's verdict counts an effect only beyond the idle steps' drift
        if "verdict" in w:
            return str(w["verdict"]).startswith(direction)
        return w["effect"].get("significant") and math.isfinite(sd(w)) and (sd(w) > 1) == (direction == "slower")
    slower = [w for w in steps if beyond(w, "slower")]
    faster = [w for w in steps if beyond(w, "faster")]
    if slower:
        w = max(slower, key=sd)
        sr = num((w["effect"].get("stream_ratio") or {}).get("estimate"))
        text = (f"Largest significant slowdown: during {w.get('label', '?')} ({w.get('mode', '?')}, {nb.window_rate(w)}) the neighbour's "
                f"dependent loads took {(sd(w) - 1) * 100:.1f}% longer than while the guest idled "
                f"(95% CI {(sd(w, 'lo') - 1) * 100:+.1f}% to {(sd(w, 'hi') - 1) * 100:+.1f}%)"
                + (f", and it streamed at {sr:.3f}× its idle rate." if math.isfinite(sr) else "."))
    else:
        text = "No step slowed the neighbour significantly" + (" beyond the idle steps' own drift." if any("verdict" in w for w in steps) else ".")
    if faster:
        text += (" Significantly faster than idle: " + ", ".join(f"{w.get('label', '?')} (×{sd(w):.3f})" for w in faster)
                 + ": a flush is not expected to speed the neighbour up, so this more likely reflects drift between the steps and the idle baseline.")
    idle = [w for w in run.get("windows") or [] if w.get("rate") == "idle" and (w.get("effect") or {}).get("significant")]
    if idle:
        text += " The idle steps themselves differ significantly from their pooled median (drift): small effects are not trustworthy here."
    return text
