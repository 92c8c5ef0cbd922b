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
    warnings = [f"{os.path.basename(path)}: {w}" for path, doc in zip(r.paths, r.docs) for w in timing.file_warnings(doc)]
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
        "slice chasing pointers (ns per dependent load), half streaming (GB/s). Each paced guest step is a window of host time. "
        "The guest runs its steps in shuffled rounds with an idle step on either side of every active one; each window's slices "
        "(those the neighbour was not preempted in) are compared with the idle windows beside it. Slowdown = median ns/load ÷ idle "
        "median (above 1: slower); stream ratio = median GB/s ÷ idle median (below 1: slower); p: two-sided Mann-Whitney on "
        "ns/load. A round counts as slower (or faster) only when its whole interval lies beyond the drift between the two idle "
        "windows beside it, and a step's verdict reports an effect only when every round agrees. Files written before rounds "
        "compare each step once with the pooled idle steps of its mode: each step there is one round. "
        f"Intervals: {stats.LEVEL:.0%} bootstrap, from flushbench.")
    for path, doc in zip(r.paths, r.docs):
        wb = ((doc.get("context", {}).get("flushbench", {}).get("regime") or {}).get("wbinvd")) or {}
        if isinstance(wb, dict) and wb:
            d.ul([f"{os.path.basename(path)}: guest WBINVD, coherent: {wb.get('coherent', '?')}",
                  f"non-coherent: {wb.get('noncoherent', '?')}",
                  f"non-coherent mode on that host: {'reachable' if wb.get('noncoherent_reachable') else 'not reachable'} ({wb.get('how', '?')})"])
    for fi, run in r.neighbour:
        d.h(3, nb.title(r, fi, run, short=True))
        steps = nb.steps(run, r.table.key)
        if not steps:
            d.p("No paced step finished in this run: nothing to compare.")
            continue
        d.table(["step", "mode", "rounds", "median slowdown [min, max]", "verdict"], [step_row(st) for st in steps])
        d.p(neighbour_reading(run, steps))
        windows = sorted(run.get("windows") or [], key=lambda w: num(w.get("start_s")))
        d.p("Every window, in the order it ran" + (" (compared with: the idle windows beside it; idle drift: how far those two "
                                                   "differ, which an effect must exceed):" if nb.rounds_format(run) else ":"))
        d.table(["window", "mode", "achieved rate", "ops", "slices", "compared with", "idle drift", "median ns/load [95% CI]",
                 "slowdown [95% CI]", "stream ratio [95% CI]", "p", "verdict"], [window_row(run, w) for w in windows])


def step_row(st):
    """One step: its rounds, the median of their slowdowns with the smallest and largest, the verdict."""
    if st["idle"]:
        return [st["step"], st["mode"], len(st["rounds"]), "baseline", st["verdict"]]
    sd = st["slowdown"] if isinstance(st["slowdown"], dict) else {}
    med, lo, hi = num(sd.get("median")), num(sd.get("min")), num(sd.get("max"))
    text = "n/a" if not math.isfinite(med) else f"{med:.3f} [{fmt_num(lo)}, {fmt_num(hi)}]"
    return [st["step"], st["mode"], len(st["rounds"]), text, st["verdict"] or "-"]


def window_row(run, w):
    eff = w.get("effect") or {}
    chase = eff.get("chase_ns") if isinstance(eff.get("chase_ns"), dict) else {}
    ci = chase.get("median_ci") if isinstance(chase.get("median_ci"), dict) else {}
    med = num(chase.get("median"))
    med_txt = "n/a" if not math.isfinite(med) else f"{med:.1f} [{fmt_num(num(ci.get('lo')), '.1f')}, {fmt_num(num(ci.get('hi')), '.1f')}]"
    n_slices = eff.get("slices", "n/a")
    if not eff:  # an idle window since rounds: a baseline, with no comparison of its own
        n, m = nb.window_chase(run, w)
        n_slices, med_txt = n, (f"{m:.1f}" if math.isfinite(m) else "n/a")
    test = eff.get("chase_test") if isinstance(eff.get("chase_test"), dict) else {}
    p = num(test.get("p"))
    late = int(num(w.get("late"))) if math.isfinite(num(w.get("late"))) else 0
    pre = num(w.get("preempted_slices"))
    slices = f"{n_slices}" + (f" (+{int(pre)} preempted, left out)" if math.isfinite(pre) and pre > 0 else "")
    # A drift only where the round was compared (flushbench writes 0 where it could not measure one).
    drift = num(w.get("idle_drift")) if math.isfinite(nb.interval(eff.get("slowdown"))[0]) else math.nan
    compared = ", ".join(str(x) for x in w.get("compared_with") or []) or ("pooled idle" if eff and w.get("rate") != "idle" else "-")
    return [w.get("label", "?"), w.get("mode", "?"), nb.window_rate(w), f"{w.get('ops', 'n/a')}" + (f" ({late} late)" if late else ""),
            slices, compared, f"±{drift * 100:.1f}%" if math.isfinite(drift) and w.get("rate") != "idle" else "-",
            med_txt, fmt_interval(eff.get("slowdown")), fmt_interval(eff.get("stream_ratio")),
            fmt_p(p) if math.isfinite(p) else "n/a", w.get("verdict") or nb.old_verdict(w)]


def neighbour_reading(run, steps):
    """In plain English: the largest slowdown every round agrees on, or that there was none."""
    active = [st for st in steps if not st["idle"] and isinstance(st["slowdown"], dict)
              and math.isfinite(num(st["slowdown"].get("median")))]
    if not active:
        why = sorted({st["verdict"] for st in steps if not st["idle"] and st["verdict"]})
        return "No paced step could be compared with an idle step." + (f" flushbench's verdicts: {'; '.join(why)}." if why else "")
    rounds = nb.rounds_format(run)

    def med(st):
        return num(st["slowdown"].get("median"))

    slower = [st for st in active if nb.verdict_direction(st["verdict"]) == "slower"]
    faster = [st for st in active if nb.verdict_direction(st["verdict"]) == "faster"]
    if slower:
        st = max(slower, key=med)
        rs = st["rounds"]
        if len(rs) == 1:
            _, lo, hi = nb.interval(rs[0]["slowdown"])
            spread = f"95% CI {(lo - 1) * 100:+.1f}% to {(hi - 1) * 100:+.1f}%"
        else:
            spread = (f"median of {len(rs)} rounds, which ranged from {(num(st['slowdown'].get('min')) - 1) * 100:+.1f}% to "
                      f"{(num(st['slowdown'].get('max')) - 1) * 100:+.1f}%")
        srs = [nb.interval(x["stream_ratio"])[0] for x in rs]
        srs = [v for v in srs if math.isfinite(v)]
        rate = nb.window_rate(rs[0]["window"]) if rs and rs[0]["window"] else "?"
        text = (f"Largest significant slowdown: during {st['step']} ({st['mode']}, {rate}) the neighbour's dependent loads took "
                f"{(med(st) - 1) * 100:.1f}% longer than while the guest idled ({spread})"
                + (f", and it streamed at {sorted(srs)[len(srs) // 2]:.3f}× its idle rate." if srs else "."))
    else:
        text = "No step slowed the neighbour significantly" + (" in every round, beyond the drift between the idle steps beside it."
                                                              if rounds else " beyond the idle steps' own drift.")
    if faster:
        text += (" Faster than idle" + (" in every round" if rounds else "") + ": "
                 + ", ".join(f"{st['step']} ({st['mode']}, ×{med(st):.3f})" for st in faster)
                 + ": a flush is not expected to speed the neighbour up, so this more likely reflects drift between the steps and "
                 "the idle baseline.")
    unconfirmed = [st for st in active if "unconfirmed" in st["verdict"]]
    if unconfirmed:
        text += (" Seen in a single round only (unconfirmed): " + ", ".join(f"{st['step']} ({st['mode']})" for st in unconfirmed)
                 + "; more rounds (--pace-rounds) would confirm or dismiss it.")
    if not rounds:
        idle = [w for w in run.get("windows") or [] if w.get("rate") == "idle" and (w.get("effect") or {}).get("significant")]
        if idle:
            text += " The idle steps themselves differ significantly from their pooled median (drift): small effects are not trustworthy here."
    return text
