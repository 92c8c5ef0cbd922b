"""The neighbour's figures (results of `flushbench run --neighbour`): its latency and throughput per
time slice with the guest's paced steps shaded, and its slowdown per step against the idle steps.

A step keeps one colour in both: idle grey, each pattern a sequential colormap (in pattern-table
order of the patterns that ran), darker for a higher rate."""

import math
import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import ticker
from matplotlib.lines import Line2D

from .. import neighbour as nb
from ..labels import num
from .style import legend_below, ticks_125

STEP_CMAPS = ["Reds", "Blues", "Greens", "Purples", "Oranges", "YlOrBr", "BuPu", "GnBu", "RdPu"]
IDLE_SPAN = "#d4d4d4"     # idle steps: the baseline, in grey
IDLE_MARK = "#6e6e6e"     # the same, dark enough for a marker
OUTSIDE = "#b0b0b0"       # slices outside every window (boot, the gaps between steps)
INSIDE = "#1b1b1b"        # slices inside a window


def step_colors(r):
    """{(pattern, rate): colour} over every neighbour window of every run."""
    by_pattern = {}
    for _, run in r.neighbour:
        for w in run.get("windows") or []:
            if w.get("rate") != "idle":
                by_pattern.setdefault(str(w.get("pattern", "?")), set()).add(str(w.get("rate", "?")))
    colors = {}
    for i, p in enumerate(sorted(by_pattern, key=r.table.key)):
        cmap = plt.get_cmap(STEP_CMAPS[i % len(STEP_CMAPS)])
        rates = sorted(by_pattern[p], key=nb.rate_key)
        for k, rate in enumerate(rates):
            if len(rates) == 1:
                level = 0.85 if rate == "max" else 0.6
            else:
                level = 0.4 + 0.5 * k / (len(rates) - 1)
            colors[(p, rate)] = cmap(level)
    return colors


def window_color(colors, w, marker=False):
    if w.get("rate") == "idle":
        return IDLE_MARK if marker else IDLE_SPAN
    return colors.get((str(w.get("pattern", "?")), str(w.get("rate", "?"))), "tab:purple")


def span(w):
    """(start_s, end_s) of a window, or None when either is missing."""
    s, e = num(w.get("start_s")), num(w.get("end_s"))
    return (s, e) if math.isfinite(s) and math.isfinite(e) else None


def timeline(job, notes):
    r = job.results
    runs = [(fi, run) for fi, run in r.neighbour if len(nb.slices(run)[0])]
    for fi, run in r.neighbour:
        if not len(nb.slices(run)[0]):
            notes.append(f"neighbour_timeline: {os.path.basename(r.paths[fi])} run {run.get('run', '?')} recorded no slices; left out.")
    if not runs:
        if r.neighbour:
            notes.append("neighbour_timeline: no neighbour run recorded any slice; no figure.")
        return None
    colors = step_colors(r)
    width = 10.5
    # One subfigure per run: each lays out its own title, step labels and time axis.
    fig = plt.figure(figsize=(width, 5.6 * len(runs)), layout="constrained")
    subs = fig.subfigures(len(runs), 1, squeeze=False, hspace=0.04)[:, 0]
    handles = {}
    log_runs = []
    several_modes = any(len(nb.modes(run)) > 1 for _, run in runs)
    for sub, (fi, run) in zip(subs, runs):
        if timeline_run(sub, r, fi, run, colors, handles, several_modes, width):
            log_runs.append(f"{os.path.basename(r.paths[fi])} run {run.get('run', '?')}")
    fig.suptitle("Host neighbour during the guest's paced steps (one point per slice; shaded: guest step)", fontsize=11)
    legend_below(fig, list(handles.values()), list(handles.keys()), ncol=3)
    if log_runs:
        notes.append("neighbour_timeline: log latency axis (slices differ fourfold or more) for " + ", ".join(log_runs) + ".")
    return fig


def timeline_run(sub, r, fi, run, colors, handles, several_modes, width):
    """One run's two panels (latency over throughput); True when the latency axis went log."""
    ax_c, ax_s = sub.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.15, 1]})
    start, end, chase, stream = nb.slices(run)
    mid = (start + end) / 2
    windows = sorted(run.get("windows") or [], key=lambda w: num(w.get("start_s")))
    modes = nb.modes(run)
    inside = np.zeros(len(start), bool)
    for w in windows:
        inside |= nb.within(start, end, w)
    x0 = float(np.nanmin(start)) if len(start) else 0.0
    x1 = float(np.nanmax(end)) if len(end) else 1.0
    for s, e in filter(None, map(span, windows)):
        x0, x1 = min(x0, s), max(x1, e)
    pad = 0.01 * (x1 - x0 or 1)
    for ax, y in ((ax_c, chase), (ax_s, stream)):
        for w in windows:
            if span(w):
                ax.axvspan(*span(w), color=window_color(colors, w), alpha=0.55 if w.get("rate") == "idle" else 0.35, lw=0, zorder=0)
        ax.plot(mid, y, color=OUTSIDE, lw=0.6, zorder=2)
        h_out = ax.scatter(mid[~inside], y[~inside], s=5, color=OUTSIDE, lw=0, zorder=3)
        handles["slice inside a guest step"] = ax.scatter(mid[inside], y[inside], s=5, color=INSIDE, lw=0, zorder=3)
        handles["slice outside every step (boot, gaps)"] = h_out
        ax.set_xlim(x0 - pad, x1 + pad)
        ax.grid(axis="x", visible=False)
    idle_baseline(ax_c, ax_s, run, windows, modes, x1 + pad, handles, several_modes)
    log = log_latency(ax_c, chase)
    ax_c.set_ylabel("pointer chase\n[ns per load]" + (", log" if log else ""))
    ax_s.set_ylabel("streaming\n[GB/s]")
    ax_s.set_xlabel("time since the neighbour's first slice [s] (host CLOCK_MONOTONIC)")
    plt.setp(ax_c.get_xticklabels(), visible=False)
    tallest = step_labels(ax_c, windows, len(modes) > 1, (x1 + 2 * pad) - x0, width)
    ax_c.set_title(nb.title(r, fi, run), fontsize=9.5, pad=tallest + 8)
    return log


def idle_baseline(ax_c, ax_s, run, windows, modes, right, handles, several_modes):
    """A dashed line at the idle steps' median, over each stretch of their mode, with its value."""
    base = nb.idle_medians(run)
    stretches = nb.contiguous_modes(windows) if len(modes) > 1 else [(modes[0] if modes else "?", None, None)]
    for mode, s, e in stretches:
        if mode not in base:
            continue
        for ax, v, unit in ((ax_c, base[mode][0], "ns"), (ax_s, base[mode][1], "GB/s")):
            if not math.isfinite(v):
                continue
            if s is None:
                ax.axhline(v, color="black", ls="--", lw=0.9, zorder=4)
            else:
                ax.hlines(v, s, e, color="black", ls="--", lw=0.9, zorder=4)
            # Its value, at the right end of the line, clear of the points.
            ax.annotate(f"idle {v:.3g} {unit}" + (f" ({mode})" if len(modes) > 1 else ""), (right if s is None else e, v),
                        xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom", fontsize=7, zorder=5,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
        handles["median of the idle steps' slices" + (" (of the step's mode)" if several_modes else "")] = \
            Line2D([], [], color="black", ls="--", lw=0.9)


def log_latency(ax, chase):
    """A burst of memory-latency slices would flatten the baseline on a linear axis: log then."""
    finite = chase[np.isfinite(chase) & (chase > 0)]
    if not len(finite) or finite.max() / finite.min() <= 4:
        return False
    ax.set_yscale("log")
    ticks_125(ax.yaxis)
    # From the 1-2-5 tick under the fastest slice, so the baseline has a labelled tick near it.
    floor = 10 ** math.floor(math.log10(finite.min() / 1.05))
    floor = max(m * floor for m in (1, 2, 5) if m * floor <= finite.min() / 1.05)
    ax.set_ylim(floor, finite.max() * 1.3)
    return True


def step_labels(ax, windows, with_mode, span_s, width):
    """Step names above the panel: flat where the step is wide enough, else upright. Returns the
    tallest label's height in points, for the title to clear."""
    axes_pt = width * 0.8 * 72
    tallest = 0
    for w in windows:
        if not span(w):
            continue
        s, e = span(w)
        text = str(w.get("label", "?")) + (f"\n{w.get('mode', '?')}" if with_mode else "")
        text_pt = max(len(t) for t in text.split("\n")) * 7 * 0.6
        upright = text_pt > (e - s) / span_s * axes_pt * 0.95
        tallest = max(tallest, text_pt if upright else 9 * (text.count("\n") + 1))
        ax.annotate(text, ((s + e) / 2, 1), xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", rotation=90 if upright else 0, fontsize=7)
    return tallest


def slowdown(job, notes):
    r = job.results
    runs = [(fi, run) for fi, run in r.neighbour if run.get("windows")]
    if not runs:
        if r.neighbour:
            notes.append("neighbour_slowdown: no neighbour run has a paced step (window); no figure.")
        return None
    colors = step_colors(r)
    nmax = max(len(run["windows"]) for _, run in runs)
    fig = plt.figure(figsize=(max(6.5, 0.85 * nmax + 2.5), 5.2 * len(runs)), layout="constrained")
    subs = fig.subfigures(len(runs), 1, squeeze=False, hspace=0.04)[:, 0]
    any_na = False
    log_axes = []
    for sub, (fi, run) in zip(subs, runs):
        na, log = slowdown_run(sub, r, fi, run, colors)
        any_na |= na
        if log:
            log_axes.append(f"run {run.get('run', '?')}")
    fig.suptitle("The neighbour's slowdown per guest step against the guest-idle steps (95% bootstrap interval)", fontsize=11)
    handles = [Line2D([], [], marker="o", ls="none", color="black", mfc="black", ms=7),
               Line2D([], [], marker="o", ls="none", color="black", mfc="white", mew=1.5, ms=7),
               Line2D([], [], marker="o", ls="none", color=IDLE_MARK, mfc="white", mew=1.5, ms=7),
               Line2D([], [], marker="D", ls="none", color="black", ms=5, alpha=0.8),
               Line2D([], [], color="black", lw=0.8)]
    labels = ["slowdown, filled, *: significant (Mann-Whitney p < 0.05 and interval excludes 1)", "slowdown, hollow: no significant effect",
              "grey: idle step against the pooled idle slices (drift check)", "streaming ratio: interval only, no test",
              "1 = as fast as during the idle steps"]
    legend_below(fig, handles, labels, ncol=2)
    if any_na:
        notes.append("neighbour_slowdown: n/a marks a step with no ratio (too few slices, or no idle step in its mode).")
    if log_axes:
        notes.append("neighbour_slowdown: log slowdown axis for " + ", ".join(log_axes) + ".")
    return fig


def by_mode(run, modes):
    """The run's windows grouped by mode, in run order within a mode, and their x positions (a gap
    between modes)."""
    ordered, pos, x = [], [], 0.0
    for mode in modes:
        if ordered:
            x += 0.6
        for w in run["windows"]:
            if str(w.get("mode", "?")) == mode:
                ordered.append(w)
                pos.append(x)
                x += 1
    return ordered, pos


def slowdown_run(sub, r, fi, run, colors):
    """One run's slowdown (top) and streaming-ratio (bottom) panels; (any n/a, slowdown axis log)."""
    ax, ax2 = sub.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.3, 1]})
    modes = nb.modes(run)
    ordered, pos = by_mode(run, modes)
    any_na = False
    values = []
    for panel, key in ((ax, "slowdown"), (ax2, "stream_ratio")):
        for w, xp in zip(ordered, pos):
            shown = effect_marker(panel, w, xp, key, window_color(colors, w, marker=True))
            any_na |= shown is None
            if panel is ax and shown:
                values += shown
        panel.axhline(1.0, color="black", lw=0.8, zorder=2)
        panel.set_xlim(-0.6, (pos[-1] if pos else 0) + 0.6)
        panel.grid(axis="x", visible=False)
    v = [y for y in values if math.isfinite(y) and y > 0]
    log = bool(v) and max(v) / min(v) > 4
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    else:  # headroom for the stars
        lo_y, hi_y = ax.get_ylim()
        ax.set_ylim(lo_y, hi_y + 0.08 * (hi_y - lo_y))
    ax.set_ylabel("slowdown: median ns/load\n÷ idle median")
    ax2.set_ylabel("streaming: median GB/s\n÷ idle median (no test)")
    ax2.set_xticks(pos)
    ax2.set_xticklabels([nb.window_label(w) for w in ordered], rotation=30, ha="right", fontsize=8)
    if len(modes) > 1:
        mode_groups(ax, ax2, modes, ordered, pos)
    ax.set_title(nb.title(r, fi, run), fontsize=9, pad=17 if len(modes) > 1 else 6)
    return any_na, log


def effect_marker(panel, w, xp, key, c):
    """A step's estimate and interval for key ("slowdown" or "stream_ratio"): the values drawn, or
    None where there is no estimate (an "n/a" box instead)."""
    eff = w.get("effect") or {}
    iv = eff.get(key) if isinstance(eff.get(key), dict) else {}
    est, lo, hi = num(iv.get("estimate")), num(iv.get("lo")), num(iv.get("hi"))
    if not math.isfinite(est):
        panel.annotate("n/a", (xp, 0.5), xycoords=("data", "axes fraction"), ha="center", va="center",
                       fontsize=8, color="dimgrey", fontstyle="italic",
                       bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "lightgrey"})
        return None
    drawn = [est]
    if math.isfinite(lo) and math.isfinite(hi):
        panel.errorbar(xp, est, yerr=[[max(0.0, est - lo)], [max(0.0, hi - est)]], fmt="none", ecolor=c,
                       elinewidth=1.4, capsize=4, zorder=3)
        drawn += [lo, hi]
    if key != "slowdown":  # no test on streaming: a marker that claims nothing
        panel.plot(xp, est, "D", ms=5, color=c, mfc=c, alpha=0.8, zorder=4)
        return drawn
    sig = bool(eff.get("significant"))
    panel.plot(xp, est, "o", ms=7, color=c, mfc=c if sig else "white", mew=1.5, zorder=4)
    if sig:
        panel.annotate("*", (xp, hi if math.isfinite(hi) else est), xytext=(0, 1), textcoords="offset points",
                       ha="center", va="bottom", fontsize=12, fontweight="bold", color=c)
    return drawn


def mode_groups(ax, ax2, modes, ordered, pos):
    """The mode above each group of steps, and a dotted line between groups."""
    xs = {mode: [xp for w, xp in zip(ordered, pos) if str(w.get("mode", "?")) == mode] for mode in modes}
    for mode in modes:
        ax.annotate(mode, ((min(xs[mode]) + max(xs[mode])) / 2, 1), xycoords=("data", "axes fraction"), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8, fontstyle="italic")
    for mode in modes[1:]:
        for panel in (ax, ax2):
            panel.axvline(min(xs[mode]) - 0.8, color="grey", lw=0.6, ls=":")
