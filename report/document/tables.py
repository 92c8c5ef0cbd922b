"""The report's tables as rows: hosts, guest boots, cells, and the derived comparisons
(non-coherent / coherent, guest / native with the trap overhead)."""

import os

import numpy as np

from .. import stats
from ..analysis import below_floor, lines_of
from ..labels import cycles_label, fmt_ci, fmt_p, fmt_ratio, size_label, time_label
from ..timing import below_floor_text

NOISE = {"series": "n/a (series below floor)", "baseline": "n/a (baseline below floor)", "both": "n/a (both below floor)"}


def ratio_cells(est, ci, p, below):
    """ratio, interval and p as table cells; a ratio with a side below the timing floor is not a number."""
    if below:
        return [NOISE[below], "-", "-"]
    return [fmt_ratio(est), fmt_ci(ci), fmt_p(p)]


def fingerprint_rows(r):
    rows = []
    for path, doc in zip(r.paths, r.docs):
        ctx = doc.get("context", {})
        fb = ctx.get("flushbench", {})
        host = fb.get("host", {})
        llc = host.get("llc_bytes")
        rows.append([
            os.path.basename(path), host.get("hostname") or ctx.get("host_name", "?"), host.get("cpu_model", "?"),
            host.get("microcode", "?"), host.get("kernel", "?"), size_label(llc) if llc else "?",
            host.get("kvm_flavour", "?"), fb.get("backend", "?"), "yes" if fb.get("emulated") else "no",
            ctx.get("date", "?"), f"{fb.get('version', '?')} ({fb.get('git_commit', '?')})",
        ])
    return rows


def guest_rows(r):
    rows = []
    for path, doc in zip(r.paths, r.docs):
        boots = ((doc.get("context", {}).get("flushbench", {}).get("run")) or {}).get("boots") or []
        for i, b in enumerate(boots):
            g = b.get("guest", {})
            pmu = g.get("pmu", "?") + (f" ({g['pmu_reason']})" if g.get("pmu_reason") else "")
            rows.append([os.path.basename(path), i, g.get("entry", "?"), f"{g.get('vendor', '?')} {g.get('family', '?')}/{g.get('model', '?')}",
                         g.get("hv", "-"), g.get("features", "-"), b.get("tsc_khz", g.get("tsc_khz", "?")), pmu,
                         g.get("overhead", "?"), (b.get("end") or {}).get("detail", "")])
    return rows


def cell_rows(r):
    rows = []
    for p in r.patterns:
        for f in r.footprints(p):
            for s in r.series:
                g = r.group(s, p, f)
                if g is not None:
                    rows.append(cell_row(p, f, s, g))
    return rows


def cell_row(p, f, s, g):
    n = len(g.net)
    if not n:
        reason = g.reasons()
        return [p, size_label(f), s.label, g.status + (f" ({reason})" if reason else ""), 0] + ["-"] * 8
    if g.below_floor:  # a cost this host cannot tell from zero: no number, let alone a negative one
        return [p, size_label(f), s.label, g.status, n, below_floor_text(g.resolution)] + ["-"] * 6 + [int(g.outliers.sum())]
    khz = next(iter(s.tsc_khz)) if len(s.tsc_khz) == 1 else None
    lines = lines_of(g)
    per_line = f"{g.median / lines:.0f}" if lines and g.unit == "per-footprint" else "-"
    ci = f"[{cycles_label(g.ci[0])}, {cycles_label(g.ci[1])}]"
    us = time_label(g.median * 1e6 / khz) if khz else "-"
    mean = float(np.mean(g.net))
    cv = f"{np.std(g.net, ddof=1) / mean:.3f}" if n > 1 and mean != 0 else "-"
    p5, p95 = np.percentile(g.net, [5, 95])
    return [p, size_label(f), s.label, g.status, n, cycles_label(g.median), ci, us, per_line,
            cycles_label(p5), cycles_label(p95), cv, int(g.outliers.sum())]


def derived_rows(r):
    """Noncoherent / coherent in each run, guest / native and the trap overhead (guest - native)."""
    ncc, gn = [], []
    for p in r.patterns:
        for f in r.footprints(p):
            for s in r.series:
                g = r.group(s, p, f)
                if not g or len(g.net) < 2:
                    continue
                if s.mode == "noncoherent":
                    ncc += noncoherent_row(r, p, f, s, g)
                if not s.backend.startswith("native"):
                    gn += guest_native_rows(r, p, f, s, g)
    return ncc, gn


def noncoherent_row(r, p, f, s, g):
    c = next((t for t in r.series if t.file_index == s.file_index and t.backend == s.backend and t.mode == "coherent"), None)
    gc = r.group(c, p, f) if c else None
    if not gc or len(gc.net) < 2:
        return []
    est, ci = stats.ratio_ci(g.net, gc.net)
    return [[p, size_label(f), s.host, s.backend, *ratio_cells(est, ci, stats.u_test(g.net, gc.net), below_floor(g, gc))]]


def guest_native_rows(r, p, f, s, g):
    rows = []
    for t in r.series:
        gt = r.group(t, p, f) if t.backend.startswith("native") and t.host == s.host else None
        if gt and len(gt.net) >= 2:
            est, ci = stats.ratio_ci(g.net, gt.net)
            d, dci = stats.difference_ci(g.net, gt.net)
            below = below_floor(g, gt)
            ratio, ratio_ci, _ = ratio_cells(est, ci, None, below)
            # The trap overhead of a guest cost below the floor is no number either; over a native
            # cost below it, it is the guest's cost.
            trap = ["n/a (guest below floor)", "-"] if g.below_floor else [cycles_label(d), f"[{cycles_label(dci[0])}, {cycles_label(dci[1])}]"]
            rows.append([p, size_label(f), s.label, t.label, ratio, ratio_ci, *trap,
                         "-" if g.below_floor else fmt_p(stats.u_test(g.net, gt.net))])
    return rows
