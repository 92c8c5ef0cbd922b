"""Comparisons the figures and the document both show, computed once: ratios of each series to its
baseline series, and the memory-type cells arranged by the pattern table's operations and types."""

import math

from . import stats


def baseline_of(r, s, p, f):
    """Like `flushbench compare`: same backend and mode in an earlier file, else same mode in an
    earlier file, else the first series with this cell."""
    have = [t for t in r.series if r.group(t, p, f) is not None]
    if not have or have[0] is s:
        return None
    earlier = [t for t in have if t.file_index < s.file_index]
    for t in earlier:
        if t.mode == s.mode and t.backend == s.backend:
            return t
    for t in earlier:
        if t.mode == s.mode:
            return t
    return have[0]


def ratio_rows(r):
    """[{pattern, footprint, series, baseline, ratio, ci, p}] for every cell two series share."""
    out = []
    for p in r.patterns:
        for f in r.footprints(p):
            for s in r.series:
                g = r.group(s, p, f)
                b = baseline_of(r, s, p, f) if g else None
                if b is None:
                    continue
                gb = r.group(b, p, f)
                if len(g.net) < 2 or len(gb.net) < 2:
                    continue
                est, ci = stats.ratio_ci(g.net, gb.net)
                out.append({"pattern": p, "footprint": f, "series": s, "baseline": b, "ratio": est, "ci": ci,
                            "p": stats.u_test(g.net, gb.net), "below_floor": below_floor(g, gb)})
    return out


def below_floor(*groups):
    """Which side of a comparison cannot be told from zero ("series", "baseline", "both"), or "":
    a ratio to (or of) a cost below the timing floor is a ratio of noise, not shown as a number."""
    sides = [name for name, g in zip(("series", "baseline"), groups) if g.below_floor]
    return "both" if len(sides) == 2 else sides[0] if sides else ""


def memtype_groups(r):
    """[(series, operation, memtype, footprint, group)] in series, then table order."""
    grid = r.table.memtype_grid
    out = []
    for s in r.series:
        for op in grid.operations:
            for mt in grid.memtypes:
                p = grid.pattern(op, mt)
                for f in r.footprints(p) if p else []:
                    g = r.group(s, p, f)
                    if g is not None:
                        out.append((s, op, mt, f, g))
    return out


def lines_of(g):
    return g.footprint // int(g.cells[0].get("line_bytes") or 64) if g.footprint and g.cells else 0


def per_line(g):
    """(median, lo, hi) net cycles per cache line; NaN without samples or footprint, and for a
    median below the timing floor (g.resolution / lines is what it can be told from zero by)."""
    lines = lines_of(g)
    if not lines or not g.has_samples or g.below_floor:
        return math.nan, math.nan, math.nan
    return g.median / lines, g.ci[0] / lines, g.ci[1] / lines
