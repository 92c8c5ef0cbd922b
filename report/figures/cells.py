"""The figures of (pattern, footprint) cells: cost against footprint, the modes side by side at
chosen footprints, and every repetition of every cell.

Panels follow the pattern table's order and carry its descriptions; a pattern the table lacks gets a
panel under its raw name."""

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..labels import size_label
from ..timing import bound_text
from .style import (BELOW_FLOOR_LABEL, below_floor_handle, below_floor_mark, color, empty_panel, footprint_axis,
                    grid, legend_below, line_style, log_y, no_samples_text, panel_layout, status_mark, time_axis)

# Above this many repetitions a cell's points are one raster image in the SVG: thousands of vector
# dots add nothing a reader can see.
MANY = 400


def pattern_title(r, p):
    return f"{p}: {r.table.what(p) or '(not in the pattern table)'}"


def cost_vs_footprint(job, notes):
    r = job.results
    pats = [p for p in r.patterns if any(f > 0 for f in r.footprints(p))]
    if not pats:
        notes.append("cost_vs_footprint: no pattern was measured at a non-zero footprint; no figure.")
        return None
    rows, cols = grid(len(pats), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    khz = r.tsc_khz()
    handles = {}
    dropped = []
    for ax, p in zip(axes.flat, pats):
        cost_panel(ax, r, p, khz, handles, dropped)
    for ax in axes.flat[len(pats):]:
        ax.set_visible(False)
    fig.suptitle("Cost against dirty footprint (median; shaded: 95% bootstrap interval)", fontsize=11)
    # Around each panel: cycles and their label on the left, µs on the right, a two-line title.
    panel_layout(fig, left=0.8, right=0.75, top=0.95, bottom=0.5, wgap=1.55, hgap=0.95)
    if dropped:
        handles[BELOW_FLOOR_LABEL] = below_floor_handle()
    legend_below(fig, list(handles.values()), list(handles.keys()))
    if dropped:
        notes.append("cost_vs_footprint: below the timing floor, drawn as a hollow triangle at the floor and left out of the lines: "
                     + ", ".join(dropped[:8]) + (" ..." if len(dropped) > 8 else ""))
    notes.append("cost_vs_footprint: footprint 0 has no place on a log axis; its cells are in modes_bars and the tables.")
    return fig


def cost_panel(ax, r, p, khz, handles, dropped):
    """One pattern: a line per series through its medians at each non-zero footprint, with its band."""
    fps = [f for f in r.footprints(p) if f > 0]
    per_footprint = any(r.group(s, p, f) and r.group(s, p, f).unit == "per-footprint" for s in r.series for f in fps)
    title = f"{pattern_title(r, p)}\n({'per footprint' if per_footprint else 'one instruction'})"
    ys = []
    for s in r.series:
        pts = [(f, r.group(s, p, f)) for f in fps]
        pts = [(f, g) for f, g in pts if g and g.has_samples]
        good = [(f, g) for f, g in pts if not g.below_floor and g.median > 0]
        for f, g in pts:
            if g.below_floor:
                dropped.append(f"{p} {size_label(f)} {s.label} ({bound_text(g.resolution)})")
                y = below_floor_mark(ax, f, g, color(s))
                ys += [y] if y else []
                handles.setdefault(s.label, Line2D([], [], marker="o", ms=4, lw=1.5, color=color(s), ls=line_style(s)))
        if not good:
            continue
        x = [f for f, _ in good]
        y = [g.median for _, g in good]
        lo = [g.ci[0] if math.isfinite(g.ci[0]) and g.ci[0] > 0 else g.median for _, g in good]
        hi = [g.ci[1] if math.isfinite(g.ci[1]) else g.median for _, g in good]
        (line,) = ax.plot(x, y, marker="o", ms=4, lw=1.5, color=color(s), ls=line_style(s))
        ax.fill_between(x, lo, hi, color=color(s), alpha=0.2, lw=0)
        handles[s.label] = line
        ys += lo + hi
    if not ys:
        empty_panel(ax, title, no_samples_text(r, p, fps))
        return
    # A cell without samples still belongs on the plot: its status, at its footprint.
    for s in r.series:
        for f in fps:
            g = r.group(s, p, f)
            if g and not g.has_samples:
                status_mark(ax, f, g.status, color(s))
    footprint_axis(ax, fps)
    log_y(ax, ys)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("net cost per repetition [TSC cycles]")
    time_axis(ax, khz)


def chosen_footprints(r, requested):
    if requested:
        return requested
    every = sorted({k[2] for k in r.groups if k[2] > 0})
    if not every:
        return [0]
    return sorted({every[0], every[len(every) // 2], every[-1]})


def modes_bars(job, notes):
    r = job.results
    chosen = chosen_footprints(r, job.footprints)
    panels = []
    for p in r.patterns:
        fps = r.footprints(p)
        use = [f for f in fps if f in chosen] or ([0] if fps == [0] else [])
        if use:
            panels.append((p, use))
    if not panels:
        notes.append("modes_bars: none of the chosen footprints was measured; no figure.")
        return None
    rows, cols = grid(len(panels), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.1 * rows), squeeze=False)
    khz = r.tsc_khz()
    handles = {}
    below = []
    for ax, (p, fps) in zip(axes.flat, panels):
        bars_panel(ax, r, p, fps, khz, handles, below)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Coherent vs non-coherent vs native at chosen footprints (median; whiskers: 95% interval)", fontsize=11)
    panel_layout(fig, left=0.8, right=0.75, top=0.75, bottom=0.5, wgap=1.55, hgap=0.8)
    if below:
        handles[BELOW_FLOOR_LABEL] = below_floor_handle()
        notes.append("modes_bars: no bar below the timing floor, a hollow triangle at the floor instead: " + ", ".join(below[:8])
                     + (" ..." if len(below) > 8 else ""))
    legend_below(fig, list(handles.values()), list(handles.keys()))
    modes = {s.mode.split("+")[0] for s in r.series}
    if "noncoherent" not in modes:
        notes.append("modes_bars: no non-coherent cells in these results (they need a VFIO device without IOMMU snoop control).")
    if "native" not in modes:
        notes.append("modes_bars: no native cells in these results (the native baseline was not run).")
    return fig


def bars_panel(ax, r, p, fps, khz, handles, below):
    """One pattern: a bar per series at each chosen footprint; what has no bar says why."""
    title = pattern_title(r, p)
    # Slots only for the series that have this pattern, so bars sit on their footprint.
    present = [s for s in r.series if any(r.group(s, p, f) for f in fps)]
    width = 0.8 / max(1, len(present))
    slots = [(i - 0.4 + width * (j + 0.5), f, s, r.group(s, p, f)) for i, f in enumerate(fps) for j, s in enumerate(present)]
    ys = []
    if all(g is None or not g.has_samples for _, _, _, g in slots):
        empty_panel(ax, title, no_samples_text(r, p, fps))
        return
    for x, f, s, g in slots:
        if g is not None and g.has_samples and g.below_floor:
            y = below_floor_mark(ax, x, g, color(s))
            ys += [y] if y else []
            below.append(f"{r.cell_title(p, f)} {s.label} ({bound_text(g.resolution)})")
            handles.setdefault(s.label, Line2D([], [], color=color(s), lw=6))
            continue
        if g is None or not g.has_samples or g.median <= 0:
            continue
        lo, hi = g.ci
        lo = lo if math.isfinite(lo) and lo > 0 else g.median
        hi = hi if math.isfinite(hi) else g.median
        noncoh = s.mode.split("+")[0] == "noncoherent"
        handles[s.label] = ax.bar(x, g.median, width * 0.9, color=color(s), yerr=[[g.median - lo], [hi - g.median]], capsize=2,
                                  error_kw={"lw": 0.8}, hatch="//" if noncoh else None,
                                  edgecolor="black" if noncoh else "none", lw=0.3)
        ys += [lo, hi]
    for x, f, s, g in slots:
        if g is not None and not g.has_samples:
            status_mark(ax, x, g.status, color(s))
    ax.set_xticks(range(len(fps)))
    ax.set_xticklabels([size_label(f) for f in fps])
    ax.set_xlim(-0.5, len(fps) - 0.5)
    ax.set_xlabel("dirty footprint [bytes]" if fps != [0] else "(no footprint: one instruction)")
    log_y(ax, ys)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("median net cost [TSC cycles]")
    ax.grid(axis="x", visible=False)
    time_axis(ax, khz)


def distributions(job, notes):
    r = job.results
    keys = sorted({(k[1], k[2]) for k, g in r.groups.items() if g.has_samples}, key=lambda k: (r.table.key(k[0]), k[1]))
    if not keys:
        notes.append("distributions: no cell has samples; no figure.")
        return None
    rows, cols = grid(len(keys), 5)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows + 0.8), squeeze=False)
    handles = {}
    outlier = None
    log_scaled = []
    flagged = 0
    for ax, (p, f) in zip(axes.flat, keys):
        present = [s for s in r.series if r.group(s, p, f) and r.group(s, p, f).has_samples]
        for pos, s in enumerate(present):
            g = r.group(s, p, f)
            handles[s.label] = repetitions(ax, pos, g, color(s))
            if g.outliers.any():
                flagged += int(g.outliers.sum())
                outlier = ax.scatter(pos + jitter(pos, len(g.net))[g.outliers], g.net[g.outliers], s=16, marker="x",
                                     color="crimson", lw=1)
        ax.set_xticks([])
        ax.set_xlim(-0.6, len(present) - 0.4)
        ax.set_title(r.cell_title(p, f), fontsize=9)
        # Series a decade or more apart (an emulated backend next to a real one) would flatten
        # each other on a linear axis: log then, when every value allows it.
        meds = [r.group(s, p, f).median for s in present]
        values = np.concatenate([r.group(s, p, f).net for s in present])
        if len(meds) > 1 and np.all(values > 0) and max(meds) / min(meds) > 10:
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(ticker.NullLocator())  # a panel this small has no room for them; ticks cost time
            log_scaled.append(r.cell_title(p, f))
        ax.yaxis.set_major_formatter(ticker.EngFormatter(sep=""))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("net TSC cycles")
    fig.suptitle("Every repetition of every cell (net TSC cycles; black bar: median)", fontsize=11)
    # No x ticks; the y label on the first column only.
    panel_layout(fig, left=0.7, right=0.15, top=0.7, bottom=0.15, wgap=0.5, hgap=0.4)
    # The median bar, in the legend too, so the black line needs no guessing.
    if outlier is not None:
        handles["outlier (Tukey or MAD z > 3.5; kept)"] = outlier
    handles["median"] = Line2D([], [], color="black", lw=1.2)
    below = [r.cell_title(p, f) + f" {s.label}" for (p, f) in keys for s in r.series
             if r.group(s, p, f) and r.group(s, p, f).has_samples and r.group(s, p, f).below_floor]
    if below:
        handles["below floor: no median, grey band ±X cycles around 0"] = Patch(color="grey", alpha=0.3)
        notes.append("distributions: repetitions are signed (a repetition may measure below zero); cells below the timing floor have "
                     "no median bar: " + ", ".join(below[:8]) + (" ..." if len(below) > 8 else ""))
    legend_below(fig, list(handles.values()), list(handles.keys()), ncol=4, markerscale=2.5)
    if log_scaled:
        notes.append("distributions: log y axis where series differ tenfold or more: " + ", ".join(log_scaled) + ".")
    if flagged:
        notes.append(f"distributions: {flagged} repetitions are flagged as outliers (red x) and kept in every statistic.")
    return fig


def jitter(pos, n):
    return np.random.default_rng(pos).uniform(-0.12, 0.12, n)


def repetitions(ax, pos, g, c):
    """One series' violin, its repetitions as points (outliers are drawn apart) and its median bar."""
    x = g.net
    if len(x) >= 3 and np.ptp(x) > 0:
        parts = ax.violinplot([x], positions=[pos], widths=0.8, showextrema=False)
        for b in parts["bodies"]:
            b.set_facecolor(c)
            b.set_alpha(0.35)
    ok = ~g.outliers
    points = ax.scatter(pos + jitter(pos, len(x))[ok], x[ok], s=6, color=c, alpha=0.8, lw=0, rasterized=len(x) > MANY)
    if g.below_floor:
        # No median bar: the cost is not told from zero. The band it cannot be told from zero in.
        if math.isfinite(g.resolution) and g.resolution > 0:
            ax.fill_between([pos - 0.35, pos + 0.35], -g.resolution, g.resolution, color="grey", alpha=0.3, lw=0, zorder=0)
        ax.annotate("below\nfloor", (pos, 1), xycoords=("data", "axes fraction"), xytext=(0, -2), textcoords="offset points",
                    ha="center", va="top", fontsize=6.5, color="dimgrey")
    else:
        ax.hlines(g.median, pos - 0.3, pos + 0.3, color="black", lw=1.2)
    return points
