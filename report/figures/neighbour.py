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
from matplotlib.patches import Patch, Rectangle

from .. import neighbour as nb
from ..labels import num
from .style import legend_below, ticks_125

STEP_CMAPS = ["Reds", "Blues", "Greens", "Purples", "Oranges", "YlOrBr", "BuPu", "GnBu", "RdPu"]
IDLE_SPAN = "#d4d4d4"     # idle steps: the baseline, in grey
IDLE_MARK = "#6e6e6e"     # the same, dark enough for a marker
OUTSIDE = "#b0b0b0"       # slices outside every window (boot, the gaps between steps)
INSIDE = "#1b1b1b"        # slices inside a window
DRIFT = "#c8c8c8"         # the drift between the idle steps beside a round


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
            notes.append(f"neighbour_timeline: {os.path.basename(r.paths[fi])} run {nb.run_number(run)} recorded no slices; left out.")
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
            log_runs.append(f"{os.path.basename(r.paths[fi])} run {nb.run_number(run)}")
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
    rounds = nb.rounds_format(run)
    inside = np.zeros(len(start), bool)
    for w in windows:
        inside |= nb.within(start, end, w)
    # Since rounds, a slice the neighbour was preempted in is left out of every comparison: drawn apart.
    left_out = nb.preempted_mask(run) if rounds else np.zeros(len(start), bool)
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
        h_out = ax.scatter(mid[~inside & ~left_out], y[~inside & ~left_out], s=5, color=OUTSIDE, lw=0, zorder=3)
        keep = inside & ~left_out
        handles["slice inside a guest step"] = ax.scatter(mid[keep], y[keep], s=5, color=INSIDE, lw=0, zorder=3)
        handles["slice outside every step (boot, gaps)"] = h_out
        if left_out.any():
            handles["slice the neighbour was preempted in (left out of the comparisons)"] = ax.scatter(
                mid[left_out], y[left_out], s=9, marker="x", color="#c0504d", lw=0.6, alpha=0.7, zorder=3)
        ax.set_xlim(x0 - pad, x1 + pad)
        ax.grid(axis="x", visible=False)
    idle_baseline(ax_c, ax_s, run, windows, modes, x1 + pad, handles, several_modes)
    log = log_latency(ax_c, chase)
    ax_c.set_ylabel("pointer chase\n[ns per load]" + (", log" if log else ""))
    ax_s.set_ylabel("streaming\n[GB/s]")
    ax_s.set_xlabel("time since the neighbour's first slice [s] (host CLOCK_MONOTONIC)")
    plt.setp(ax_c.get_xticklabels(), visible=False)
    if nb.in_rounds(run):  # many narrow windows: the steps in the legend, each active window's round above it
        tallest = round_labels(ax_c, windows, len(modes) > 1)
        for w in windows:
            name = "idle (the baseline)" if w.get("rate") == "idle" else f"guest step {nb.step_name(w)}"
            handles.setdefault(name, Patch(color=window_color(colors, w), alpha=0.55 if w.get("rate") == "idle" else 0.35))
    else:
        tallest = step_labels(ax_c, windows, len(modes) > 1, (x1 + 2 * pad) - x0, width)
    ax_c.set_title(nb.title(r, fi, run), fontsize=9.5, pad=tallest + 8)
    return log


def round_labels(ax, windows, with_mode):
    """"r0", "r1" ... above each active window (and its mode where the run has several); the
    tallest label's height in points."""
    for w in windows:
        if not span(w) or w.get("rate") == "idle":
            continue
        s, e = span(w)
        text = f"r{w.get('round', '?')}" + (f"\n{w.get('mode', '?')}" if with_mode else "")
        ax.annotate(text, ((s + e) / 2, 1), xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=6.5)
    return 9 * (2 if with_mode else 1)


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
    runs = [(fi, run, shown_steps(r, run)) for fi, run in r.neighbour if run.get("windows")]
    if not runs:
        if r.neighbour:
            notes.append("neighbour_slowdown: no neighbour run has a paced step (window); no figure.")
        return None
    colors = step_colors(r)
    nmax = max(max(len(steps), 1) for _, _, steps in runs)
    rmax = max((len(st["rounds"]) for _, _, steps in runs for st in steps), default=1)
    fig = plt.figure(figsize=(max(6.5, (0.75 + 0.12 * rmax) * nmax + 2.5), 5.2 * len(runs)), layout="constrained")
    subs = fig.subfigures(len(runs), 1, squeeze=False, hspace=0.04)[:, 0]
    any_na = False
    log_axes = []
    for sub, (fi, run, steps) in zip(subs, runs):
        na, log = slowdown_run(sub, r, fi, run, steps, colors)
        any_na |= na
        if log:
            log_axes.append(f"run {nb.run_number(run)}")
    fig.suptitle("The neighbour's slowdown per guest step:\neach round against the idle steps beside it (95% bootstrap interval)",
                 fontsize=10.5)
    handles = [Line2D([], [], marker="o", ls="none", color="black", mfc="black", ms=6),
               Line2D([], [], marker="o", ls="none", color="black", mfc="white", mew=1.4, ms=6),
               Line2D([], [], color="black", lw=2.2),
               Patch(color=DRIFT, alpha=0.6),
               Line2D([], [], marker="D", ls="none", color="black", ms=4.5, alpha=0.8),
               Line2D([], [], color="black", lw=0.8)]
    labels = ["a round, filled: slower (or faster) beyond the idle drift beside it", "a round, hollow: within that drift",
              "median over the rounds; * every round agrees (the verdict)", "drift between the idle steps beside the round",
              "streaming ratio per round: interval only, no test", "1 = as fast as during the idle steps"]
    if any(st["idle"] for _, _, steps in runs for st in steps):
        handles.append(Line2D([], [], marker="o", ls="none", color=IDLE_MARK, mfc="white", mew=1.4, ms=6))
        labels.append("grey: idle step against the pooled idle slices (drift check; files before rounds)")
    legend_below(fig, handles, labels, ncol=2)
    if any_na:
        notes.append("neighbour_slowdown: n/a marks a step with no ratio (too few slices, or no idle step beside it).")
    if log_axes:
        notes.append("neighbour_slowdown: log slowdown axis for " + ", ".join(log_axes) + ".")
    return fig


def shown_steps(r, run):
    """The steps the figure draws: every active step, and idle steps only where they carry their
    own comparison (files before rounds, where each idle step was checked against the pool)."""
    return [st for st in nb.steps(run, r.table.key)
            if not st["idle"] or any(isinstance((x["window"].get("effect") or {}).get("slowdown"), dict) for x in st["rounds"])]


def by_mode(steps, modes):
    """The steps grouped by mode (they come in mode order), and their x positions (a gap between modes)."""
    ordered, pos, x = [], [], 0.0
    for mode in modes:
        if ordered:
            x += 0.6
        for st in steps:
            if st["mode"] == mode:
                ordered.append(st)
                pos.append(x)
                x += 1
    return ordered, pos


def step_color(colors, st):
    return IDLE_MARK if st["idle"] else colors.get((st["pattern"], st["rate"]), "tab:purple")


def step_tick(st):
    """"wbinvd@max (3,890/s)": the step and the rate its rounds achieved (their median)."""
    if st["idle"]:
        return st["step"]
    hz = [num(x["window"].get("achieved_hz")) for x in st["rounds"] if x["window"]]
    hz = [h for h in hz if math.isfinite(h)]
    if not hz:
        return st["step"]
    h = float(np.median(hz))
    return f"{st['step']} (" + (f"{h:.3g}/s" if h < 1000 else f"{h:,.0f}/s") + ")"


def slowdown_run(sub, r, fi, run, steps, colors):
    """One run's slowdown (top) and streaming-ratio (bottom) panels; (any n/a, slowdown axis log)."""
    ax, ax2 = sub.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.3, 1]})
    modes = list(dict.fromkeys(st["mode"] for st in steps))
    ordered, pos = by_mode(steps, modes)
    any_na = False
    values = []
    for st, xp in zip(ordered, pos):
        c = step_color(colors, st)
        drawn = rounds_marker(ax, st, xp, "slowdown", c)
        any_na |= drawn is None
        values += drawn or []
        rounds_marker(ax2, st, xp, "stream_ratio", c)
    for panel in (ax, ax2):
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
    ax2.set_xticklabels([step_tick(st) for st in ordered], rotation=30, ha="right", fontsize=8)
    if len(modes) > 1:
        mode_groups(ax, ax2, modes, ordered, pos)
    ax.set_title(nb.title(r, fi, run), fontsize=9, pad=17 if len(modes) > 1 else 6)
    return any_na, log


def offsets(n):
    """x offsets of n rounds within a step's slot."""
    if n <= 1:
        return [0.0]
    half = min(0.3, 0.08 * (n - 1))
    return list(np.linspace(-half, half, n))


def rounds_marker(panel, st, xp, key, c):
    """A step's rounds (estimate and interval for key, "slowdown" or "stream_ratio") side by side
    at xp, each over the drift band of the idle steps beside it, and the median of the rounds
    across them. Returns the values drawn, or None when no round has an estimate (an "n/a" box)."""
    drawn, est_all = [], []
    for dx, x in zip(offsets(len(st["rounds"])), st["rounds"]):
        iv = x[key] if key == "slowdown" else (x["window"].get("effect") or {}).get(key)
        est, lo, hi = nb.interval(iv)
        if not math.isfinite(est):
            continue
        est_all.append(est)
        drawn.append(est)
        if key == "slowdown" and math.isfinite(x["idle_drift"]) and x["idle_drift"] > 0 and not st["idle"]:
            d = x["idle_drift"]
            panel.add_patch(Rectangle((xp + dx - 0.045, 1 - d), 0.09, 2 * d, color=DRIFT, alpha=0.6, lw=0, zorder=1))
            drawn += [1 - d, 1 + d]
        if math.isfinite(lo) and math.isfinite(hi):
            panel.errorbar(xp + dx, est, yerr=[[max(0.0, est - lo)], [max(0.0, hi - est)]], fmt="none", ecolor=c,
                           elinewidth=1.2, capsize=2.5, zorder=3)
            drawn += [lo, hi]
        if key != "slowdown":  # no test on streaming: a marker that claims nothing
            panel.plot(xp + dx, est, "D", ms=4.5, color=c, mfc=c, alpha=0.8, zorder=4)
            continue
        beyond = nb.verdict_direction(x["call"]) is not None if not st["idle"] else bool((x["window"].get("effect") or {}).get("significant"))
        panel.plot(xp + dx, est, "o", ms=6, color=c, mfc=c if beyond else "white", mew=1.4, zorder=4)
    if not est_all:
        panel.annotate("n/a", (xp, 0.5), xycoords=("data", "axes fraction"), ha="center", va="center",
                       fontsize=8, color="dimgrey", fontstyle="italic",
                       bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "lightgrey"})
        return None
    med = float(np.median(est_all))
    if key == "slowdown" and isinstance(st["slowdown"], dict) and math.isfinite(num(st["slowdown"].get("median"))):
        med = num(st["slowdown"]["median"])
    if len(est_all) > 1:  # one round is its own median
        half = abs(offsets(len(st["rounds"]))[0]) + 0.1
        panel.hlines(med, xp - half, xp + half, color="black", lw=2.2, alpha=0.55, zorder=2.5)
    if key == "slowdown" and not st["idle"] and nb.verdict_direction(st["verdict"]):
        top = max(drawn)
        panel.annotate("*", (xp, top), xytext=(0, 1), textcoords="offset points", ha="center", va="bottom", fontsize=12,
                       fontweight="bold", color=c)
    return drawn


def mode_groups(ax, ax2, modes, ordered, pos):
    """The mode above each group of steps, and a dotted line between groups."""
    xs = {mode: [xp for st, xp in zip(ordered, pos) if st["mode"] == mode] for mode in modes}
    for mode in modes:
        ax.annotate(mode, ((min(xs[mode]) + max(xs[mode])) / 2, 1), xycoords=("data", "axes fraction"), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8, fontstyle="italic")
    for mode in modes[1:]:
        for panel in (ax, ax2):
            panel.axvline(min(xs[mode]) - 0.8, color="grey", lw=0.6, ls=":")
