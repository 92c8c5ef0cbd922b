"""memtypes: the memory-type cells (the pattern table's memtype group) as median net cycles per
cache line with intervals: one panel per operation, one bar per memory type, one row per series.

Operations, memory types and which pattern is which come from the pattern table."""

import math

import matplotlib.pyplot as plt
import numpy as np

from ..analysis import lines_of, memtype_groups, per_line
from ..labels import cycles_label, size_label
from ..timing import bound_text
from .style import (BELOW_FLOOR, BELOW_FLOOR_LABEL, below_floor_handle, below_title, empty_panel, legend_below, log_y,
                    no_minor_ticks, status_mark, ticks_125)

# One colour per memory type, by its place in the pattern table.
PALETTE = ["#3b6ea5", "#e3a33b", "#b23a3a", "#5a9a5a", "#8a5aa5", "#707070"]


def memtypes(job, notes):
    r = job.results
    grid = r.table.memtype_grid
    groups = memtype_groups(r)
    if not groups:
        notes.append(f"memtypes: no memory-type cells ({', '.join(grid.cells.values()) or 'the pattern table has none'}; "
                     "`--patterns memtypes`) in these results; no figure.")
        return None
    series = [s for s in r.series if any(x[0] is s for x in groups)]
    # A series where no memory-type cell ran (native: they need ring 0) says so in a note, not a panel.
    empty = [s for s in series if not any(x[0] is s and x[4].has_samples for x in groups)]
    for s in empty:
        reasons = sorted({c.get("reason", "") for x in groups if x[0] is s for c in x[4].cells if c.get("reason")})
        notes.append(f"memtypes: {s.label}: no memory-type cell ran ({'; '.join(reasons)[:200] or 'no samples'}); no panel.")
    series = [s for s in series if s not in empty]
    groups = [x for x in groups if x[0] in series]
    if not series:
        return None
    ops = [op for op in grid.operations if any(x[1] == op for x in groups)]
    colors = {mt: PALETTE[i % len(PALETTE)] for i, mt in enumerate(grid.memtypes)}
    fig, axes = plt.subplots(len(series), len(ops), figsize=(3.6 * len(ops) + 0.6, 3.1 * len(series)), squeeze=False)
    handles = {}
    nonpositive = []
    for i, s in enumerate(series):
        row = [x for x in groups if x[0] is s]
        ys = [v for x in row for v in per_line(x[4]) if math.isfinite(v) and v > 0]
        ys += [x[4].resolution / (lines_of(x[4]) or 1) for x in row if x[4].has_samples and x[4].below_floor and x[4].resolution > 0]
        for j, op in enumerate(ops):
            title = f"{op}: {', '.join(grid.patterns_of(op))}" + (f"\n{s.label}" if len(series) > 1 else "")
            fps = sorted({x[3] for x in row if x[1] == op})
            if not fps:
                empty_panel(axes[i][j], title, "not measured")
                continue
            operation_panel(axes[i][j], r, s, op, fps, colors, handles, nonpositive)
            axes[i][j].set_title(title, fontsize=9)
            log_y(axes[i][j], ys)
            ticks_125(axes[i][j].yaxis, cycles_label)
            if j == 0:
                axes[i][j].set_ylabel("median net cost per 64-byte line\n[TSC cycles, log]")
    ns_axes(r.tsc_khz(), [axes[i][len(ops) - 1] for i in range(len(series))])
    fig.suptitle("Cost per cache line by memory type (median; whiskers: 95% bootstrap interval)", fontsize=11)
    fig.tight_layout(rect=below_title(fig))
    if nonpositive:
        handles[BELOW_FLOOR_LABEL] = below_floor_handle()
    legend_below(fig, list(handles.values()), list(handles.keys()))
    if nonpositive:
        notes.append("memtypes: below the timing floor, no bar but a hollow triangle at the floor per line: " + ", ".join(nonpositive[:8])
                     + (" ..." if len(nonpositive) > 8 else ""))
    return fig


def operation_panel(ax, r, s, op, fps, colors, handles, nonpositive):
    """One operation of one series: a bar per memory type at each footprint."""
    grid = r.table.memtype_grid
    width = 0.8 / len(grid.memtypes)
    for fi, f in enumerate(fps):
        for k, mt in enumerate(grid.memtypes):
            g = r.group(s, grid.pattern(op, mt), f)
            if g is None:
                continue
            xp = fi - 0.4 + width * (k + 0.5)
            if g.has_samples and g.below_floor:  # at the floor, per line
                lines = lines_of(g) or 1
                if math.isfinite(g.resolution) and g.resolution > 0:
                    ax.plot(xp, g.resolution / lines, color=colors[mt], zorder=4, **BELOW_FLOOR)
                else:
                    status_mark(ax, xp, "below floor", colors[mt])
                nonpositive.append(f"{g.pattern} {size_label(f)} {s.label} ({bound_text(g.resolution / lines, '/line')})")
                continue
            med, lo, hi = per_line(g)
            if not math.isfinite(med) or med <= 0:
                if g.has_samples:
                    nonpositive.append(f"{g.pattern} {size_label(f)} {s.label}")
                status_mark(ax, xp, "≤0" if g.has_samples else g.status, colors[mt])
                continue
            lo = lo if math.isfinite(lo) and lo > 0 else med
            hi = hi if math.isfinite(hi) else med
            handles[mt.upper()] = ax.bar(xp, med, width * 0.9, color=colors[mt], yerr=[[med - lo], [hi - med]], capsize=2,
                                         error_kw={"lw": 0.8})
    ax.set_xticks(range(len(fps)))
    ax.set_xticklabels([size_label(f) for f in fps])
    ax.set_xlim(-0.5, len(fps) - 0.5)
    ax.set_xlabel("buffer footprint [bytes]")
    ax.grid(axis="x", visible=False)


def ns_axes(khz, axes):
    """Per line, ns reads better than the cell figures' µs: a right-hand ns axis on each row."""
    if not khz:
        return
    per_ns = khz / 1e6
    for ax in axes:
        sec = ax.secondary_yaxis("right", functions=(lambda c: np.asarray(c, dtype=float) / per_ns,
                                                     lambda ns: np.asarray(ns, dtype=float) * per_ns))
        sec.set_ylabel(f"ns per line (TSC {khz / 1e6:.2f} GHz)", fontsize=8)
        ticks_125(sec.yaxis)
        no_minor_ticks(sec)
