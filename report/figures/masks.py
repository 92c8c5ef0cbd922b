"""dirty_mask: the cost of a whole-cache flush against the number of pCPUs KVM flushes for it
(`flushbench run --dirty-mask 1,2,4`: cells labelled "noncoherent+maskK"), one line per mode and
footprint, with the flushes per WBINVD the kernel really did (mode_evidence) beside each point.

Which patterns flush the whole cache is the pattern table's `whole_cache`; a table without the key
(flushbench before schema 5) leaves every pattern measured under a mask in."""

import math

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
from matplotlib.lines import Line2D

from ..labels import num, size_label
from ..timing import bound_text
from .style import MODE_STYLE, below_title, grid, legend_below, log_y, time_axis

BELOW = dict(marker="v", ms=8, mfc="white", mew=1.5, ls="none")


def whole_cache(r, p):
    flag = r.table.entries.get(p, {}).get("whole_cache")
    return flag is None or bool(flag)


def mask_lines(r):
    """{pattern: {(file index, host, backend, base mode, footprint): {width: group}}} over the
    dirty-mask cells of whole-cache patterns."""
    out = {}
    for (si, p, f), g in r.groups.items():
        s = r.series[si]
        if s.mask is None or not whole_cache(r, p):
            continue
        key = (s.file_index, s.host, s.backend, s.base_mode, f)
        out.setdefault(p, {}).setdefault(key, {})[s.mask] = g
    return {p: lines for p, lines in sorted(out.items(), key=lambda kv: r.table.key(kv[0]))}


def flushes_per_wbinvd(g):
    """The kernel's flushes per WBINVD exit over the group's cells (mode_evidence), NaN without."""
    flushes = exits = 0.0
    direct = []
    for c in g.cells:
        ev = c.get("mode_evidence") if isinstance(c.get("mode_evidence"), dict) else {}
        f, e = num(ev.get("wbinvd_flushes")), num(ev.get("wbinvd_exits"))
        if math.isfinite(f) and math.isfinite(e) and e > 0:
            flushes, exits = flushes + f, exits + e
        elif math.isfinite(num(ev.get("flushes_per_wbinvd"))):
            direct.append(num(ev.get("flushes_per_wbinvd")))
    if exits > 0:
        return flushes / exits
    return float(np.mean(direct)) if direct else math.nan


def dirty_mask(job, notes):
    r = job.results
    by_pattern = mask_lines(r)
    if not by_pattern:
        if r.masked():
            notes.append("dirty_mask: the dirty-mask cells measure no whole-cache pattern (the pattern table's whole_cache); no figure.")
        return None
    rows, cols = grid(len(by_pattern), 2)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 3.9 * rows), squeeze=False)
    handles = {}
    hosts = len({s.host for s in r.series}) > 1
    annotated = below = False
    for ax, (p, lines) in zip(axes.flat, by_pattern.items()):
        a, b = mask_panel(ax, r, p, lines, handles, hosts)
        annotated, below = annotated or a, below or b
    for ax in axes.flat[len(by_pattern):]:
        ax.set_visible(False)
    fig.suptitle("Whole-cache flush cost against the dirty-mask width\n(pCPUs KVM flushes per WBINVD; median, whiskers: 95% interval)",
                 fontsize=10)
    fig.tight_layout(rect=below_title(fig, lines=2))
    if below:
        handles["below floor (at the floor, ±X cycles)"] = Line2D([], [], color="black", **BELOW)
    legend_below(fig, list(handles.values()), list(handles.keys()), ncol=2)
    if annotated:
        notes.append("dirty_mask: beside each point, the flushes per WBINVD the kernel counted (kprobes) in that cell.")
    else:
        notes.append("dirty_mask: the kernel's flushes per WBINVD were not counted (no kprobes): the widths are what was asked.")
    return fig


def mask_panel(ax, r, p, lines, handles, hosts):
    """One pattern: a line per (mode, footprint) through its medians at each width; (annotated, any below floor)."""
    widths = sorted({w for line in lines.values() for w in line})
    ys = []
    annotated = below = False
    said = set()  # (width, bound) whose "below floor" is written already: one text for points at one level
    n = len(lines)
    for i, (key, line) in enumerate(sorted(lines.items(), key=lambda kv: kv[0])):
        fi, host, backend, mode, f = key
        c = plt.get_cmap("tab10")(i % 10)
        # Lines side by side around each width, so that points at one level (the floor) stay apart.
        dodge = 2 ** (0.05 * (i - (n - 1) / 2))
        label = (f"{host}: " if hosts else "") + f"{backend} / {mode}, {size_label(f)}" + (f" (file {fi + 1})" if len(r.paths) > 1 else "")
        pts = sorted(line.items())
        shown = [(w, g) for w, g in pts if g.has_samples and not g.below_floor]
        if shown:
            x = [w * dodge for w, _ in shown]
            y = [g.median for _, g in shown]
            lo = [g.median - g.ci[0] if math.isfinite(g.ci[0]) and g.ci[0] > 0 else 0 for _, g in shown]
            hi = [g.ci[1] - g.median if math.isfinite(g.ci[1]) else 0 for _, g in shown]
            handles[label] = ax.errorbar(x, y, yerr=[lo, hi], color=c, marker="o", ms=5, lw=1.5, capsize=3,
                                         ls=MODE_STYLE.get(mode.split("+")[0].split("-")[0], "-"))
            ys += [g.median for _, g in shown] + [g.ci[0] for _, g in shown] + [g.ci[1] for _, g in shown]
            if shown[0][0] == 1:
                prop = [shown[0][1].median * w for w in widths]
                ax.plot(widths, prop, color="grey", ls=":", lw=1, zorder=1)
                handles["cost proportional to the width (from width 1)"] = Line2D([], [], color="grey", ls=":", lw=1)
                ys += prop
        for w, g in pts:
            if g.has_samples and g.below_floor and math.isfinite(g.resolution) and g.resolution > 0:
                ax.plot(w * dodge, g.resolution, color=c, **BELOW)
                if (w, bound_text(g.resolution)) not in said:
                    said.add((w, bound_text(g.resolution)))
                    ax.annotate(f"below floor\n({bound_text(g.resolution)})", (w * dodge, g.resolution), xytext=(0, -10),
                                textcoords="offset points", ha="center", va="top", fontsize=6.5, color=c)
                ys.append(g.resolution)
                below = True
                handles.setdefault(label, Line2D([], [], color=c, marker="o"))
            fpw = flushes_per_wbinvd(g)
            y = g.median if g.has_samples and not g.below_floor else g.resolution
            if math.isfinite(fpw) and math.isfinite(y) and y > 0:
                ax.annotate(f"{fpw:.2g} flush{'es' if fpw != 1 else ''}/WBINVD", (w * dodge, y), xytext=(5, 4), textcoords="offset points",
                            fontsize=6.5, color=c)
                annotated = True
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(ticker.FixedLocator(widths))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlim(min(widths) / 1.4, max(widths) * 1.6)
    ax.set_xlabel("dirty-mask width K [pCPUs flushed per WBINVD]")
    ax.set_ylabel("net cost per WBINVD [TSC cycles]")
    ax.set_title(f"{p}: {r.table.what(p) or '(not in the pattern table)'}", fontsize=9)
    log_y(ax, ys)
    time_axis(ax, r.tsc_khz())
    return annotated, below
