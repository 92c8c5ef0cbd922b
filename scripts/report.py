#!/usr/bin/python3
"""flushbench report: figures and a written report from flushbench results files.

    /usr/bin/python3 scripts/report.py RESULTS.json [RESULTS2.json ...] --out DIR

Writes to DIR, each figure as SVG and PNG:
  cost_vs_footprint  net cost against dirty footprint, log-log, one panel per pattern, one line per
                     host/backend/mode, median with its 95% bootstrap band
  modes_bars         coherent vs noncoherent vs native (and every other series) at chosen footprints
  distributions      every repetition of every cell: violins, the raw points, flagged outliers
  exit_attribution   where the KVM work went (exit reasons, KVM statistics), when the results carry
                     them; otherwise no figure and a note in the report
  ratios             ratio of medians to a baseline series with 95% intervals, when there are two or
                     more series (modes, hosts, runs)
  memtypes           memory-type cells (read_/write_/rflush_ x wb/wc/uc): median net cycles per 64-byte
                     line with 95% intervals, per footprint, one row of panels per backend/mode
  neighbour_timeline a host neighbour's pointer-chase latency and streaming GB/s per time slice, with
                     the guest's paced steps shaded (results of `flushbench run --neighbour`)
  neighbour_slowdown per paced step, the neighbour's slowdown against the guest-idle steps with its 95%
                     interval, significant ones filled
and report.md + report.html: host fingerprints, every caveat, the tables, the figures.

Samples are net TSC cycles (flushbench_cells[].tsc - tsc_overhead), as `flushbench compare` uses.
Paced guest steps (cells with a `pace` object) are not (pattern, footprint) cells: they are left out
of every cell figure and table and appear only in the neighbour figures and section.
Medians and intervals come from a cell's `stats` object when flushbench wrote one, otherwise from a
percentile bootstrap here (2000 resamples, fixed seed, so the report is reproducible).
Needs numpy and matplotlib (Debian: python3-matplotlib); scipy adds Mann-Whitney p-values.
"""

import argparse
import datetime
import html
import json
import math
import os
import sys

PROG = "report.py"


def die(message, status=2):
    print(f"{PROG}: {message}", file=sys.stderr)
    sys.exit(status)


try:
    import numpy as np
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a build machine
    import matplotlib.pyplot as plt
    from matplotlib import ticker
except ImportError as exc:  # one line, with the fix
    die(f"needs numpy and matplotlib ({exc}): apt-get install python3-matplotlib")

try:
    from scipy.stats import mannwhitneyu
except ImportError:
    mannwhitneyu = None

# The pattern table's order (common/patterns.h), so panels read from exits to flushes.
PATTERN_ORDER = ["nop", "cpuid", "pio", "dirty", "wbinvd", "wbnoinvd", "clflush", "clflushopt", "clwb",
                 "read_wb", "read_wc", "read_uc", "write_wb", "write_wc", "write_uc", "rflush_wb", "rflush_wc", "rflush_uc"]
PATTERN_WHAT = {
    "nop": "empty timed region",
    "cpuid": "CPUID: an unconditional VM exit",
    "pio": "OUT to port 0x80: exit round trip through the VMM",
    "dirty": "store one byte per line",
    "wbinvd": "WBINVD after dirtying",
    "wbnoinvd": "WBNOINVD after dirtying",
    "clflush": "CLFLUSH every dirty line",
    "clflushopt": "CLFLUSHOPT every dirty line",
    "clwb": "CLWB every dirty line",
    "read_wb": "sequential read, write-back",
    "read_wc": "sequential read, write-combining",
    "read_uc": "sequential read, uncacheable",
    "write_wb": "sequential write + SFENCE, write-back",
    "write_wc": "sequential write + SFENCE, write-combining",
    "write_uc": "sequential write + SFENCE, uncacheable",
    "rflush_wb": "read after dirty + CLFLUSH, write-back",
    "rflush_wc": "read after dirty + CLFLUSH, write-combining",
    "rflush_uc": "read after dirty + CLFLUSH, uncacheable",
}
# The memory-type group (common/patterns.h, `--patterns memtypes`): OP_TYPE.
MEMTYPE_OPS = ["read", "write", "rflush"]
MEMTYPE_OP_WHAT = {"read": "sequential read", "write": "sequential write + SFENCE", "rflush": "read after dirty + CLFLUSH"}
MEMTYPES = ["wb", "wc", "uc"]
MEMTYPE_WHAT = {"wb": "write-back", "wc": "write-combining", "uc": "uncacheable"}
MEMTYPE_COLOR = {"wb": "#3b6ea5", "wc": "#e3a33b", "uc": "#b23a3a"}
MEASURED = {"ok", "unsupported", "skipped"}
FAILED = {"hung", "crashed", "fault", "corrupt"}
MODE_STYLE = {"coherent": "-", "noncoherent": "--", "native": ":", "both": "-."}
SEED = 0x666C757368626E63  # "flushbnc", the C++ side's kBootstrapSeed
RESAMPLES = 2000
LEVEL = 0.95

plt.rcParams.update({
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 9,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.dpi": 100, "savefig.dpi": 150,
    "axes.grid": True, "grid.alpha": 0.3, "svg.fonttype": "none",
})


# ---- units ---------------------------------------------------------------------------------------

def size_label(b):
    b = int(b)
    if b == 0:
        return "0"
    for shift, suffix in ((30, "G"), (20, "M"), (10, "K")):
        if b >= (1 << shift) and b % (1 << shift) == 0:
            return f"{b >> shift}{suffix}"
    return str(b)


def cycles_label(x):
    if x is None or not math.isfinite(x):
        return "-"
    a = abs(x)
    for limit, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if a >= limit:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.0f}"


def time_label(ns):
    if ns is None or not math.isfinite(ns):
        return "-"
    a = abs(ns)
    if a >= 1e9:
        return f"{ns / 1e9:.3g} s"
    if a >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    if a >= 1e3:
        return f"{ns / 1e3:.3g} µs"
    return f"{ns:.3g} ns"


# ---- statistics (the same estimators as host/statistics.h) --------------------------------------

def bootstrap(stat, samples, seed=SEED):
    """Percentile interval of stat(*resampled) over RESAMPLES replicates; (lo, hi)."""
    rng = np.random.default_rng(seed)
    reps = []
    chunk = max(1, 2_000_000 // max(1, max(len(s) for s in samples)))
    done = 0
    while done < RESAMPLES:
        k = min(chunk, RESAMPLES - done)
        drawn = [s[rng.integers(0, len(s), size=(k, len(s)))] for s in samples]
        reps.append(stat(*drawn))
        done += k
    reps = np.concatenate(reps)
    if not np.all(np.isfinite(reps)):
        return (math.nan, math.nan)
    tail = (1 - LEVEL) / 2 * 100
    return tuple(np.percentile(reps, [tail, 100 - tail]))


def median_ci(x):
    return bootstrap(lambda a: np.median(a, axis=1), [x])


def ratio_ci(a, b):
    def stat(x, y):
        den = np.median(y, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, np.median(x, axis=1) / den, np.nan)
    est = np.median(a) / np.median(b) if np.median(b) > 0 else math.nan
    return est, bootstrap(stat, [a, b])


def difference_ci(a, b):
    est = float(np.median(a) - np.median(b))
    return est, bootstrap(lambda x, y: np.median(x, axis=1) - np.median(y, axis=1), [a, b])


def u_test(a, b):
    if mannwhitneyu is None or len(a) < 2 or len(b) < 2:
        return None
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def outlier_mask(x):
    """Tukey fences or modified z-score > 3.5: flagged, never dropped."""
    q1, q3 = np.percentile(x, [25, 75])
    iqr = q3 - q1
    tukey = (x < q1 - 1.5 * iqr) | (x > q3 + 1.5 * iqr)
    med = np.median(x)
    mad = np.median(np.abs(x - med))
    madz = (0.6745 * np.abs(x - med) / mad > 3.5) if mad > 0 else np.zeros(len(x), bool)
    return tukey | madz


# ---- loading -------------------------------------------------------------------------------------

def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        die(f"cannot read {path}: {exc.strerror or exc}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        die(f"{path} is not JSON ({exc}): pass a results file written by `flushbench run`")
    if not isinstance(doc, dict) or not isinstance(doc.get("flushbench_cells"), list):
        die(f"{path} is not a flushbench results file (no flushbench_cells list); "
            "plain Google Benchmark files carry no raw samples")
    return doc


class Series:
    """One host/backend/mode of one file: a line in the plots, a column in the tables."""

    def __init__(self, index, file_index, host, backend, mode):
        self.index, self.file_index, self.host, self.backend, self.mode = index, file_index, host, backend, mode
        self.emulated = False
        self.tsc_khz = set()
        self.label = ""


class Group:
    """The cells of one series at one (pattern, footprint), pooled (A/B/A repeats a mode)."""

    def __init__(self, series, pattern, footprint):
        self.series, self.pattern, self.footprint = series, pattern, footprint
        self.net = []
        self.cells = []
        self.unit = ""

    @property
    def statuses(self):
        return [c.get("status", "?") for c in self.cells]

    @property
    def status(self):
        bad = [s for s in self.statuses if s != "ok"]
        return bad[0] if bad else "ok"

    def finish(self):
        self.net = np.asarray(self.net, dtype=float)
        self.median = float(np.median(self.net)) if len(self.net) else math.nan
        stats = self.cells[0].get("stats") if len(self.cells) == 1 else None
        if isinstance(stats, dict) and isinstance(stats.get("median_ci"), dict) and stats.get("median") is not None:
            self.median = float(stats["median"])
            lo, hi = stats["median_ci"].get("lo"), stats["median_ci"].get("hi")
            self.ci = (math.nan if lo is None else float(lo), math.nan if hi is None else float(hi))
        elif len(self.net) >= 2:
            self.ci = median_ci(self.net)
        elif len(self.net) == 1:
            self.ci = (self.median, self.median)
        else:
            self.ci = (math.nan, math.nan)
        self.outliers = outlier_mask(self.net) if len(self.net) >= 4 else np.zeros(len(self.net), bool)

    @property
    def has_samples(self):
        return len(self.net) > 0


def cell_title(r, p, f):
    """"wbinvd 4K"; just "cpuid" for a pattern that never takes a footprint."""
    return p if f == 0 and r.footprints(p) == [0] else f"{p} {size_label(f)}"


def pattern_key(p):
    return (PATTERN_ORDER.index(p) if p in PATTERN_ORDER else len(PATTERN_ORDER), p)


class Results:
    def __init__(self, paths):
        self.paths = paths
        self.docs = [load(p) for p in paths]
        self.series = []
        self.groups = {}  # (series index, pattern, footprint) -> Group
        self.paced = []  # (file index, cell): paced guest steps, never (pattern, footprint) cells
        self.neighbour = []  # (file index, run): flushbench_neighbour entries
        for fi, doc in enumerate(self.docs):
            fb = doc.get("context", {}).get("flushbench", {})
            host = fb.get("host", {}).get("hostname") or doc.get("context", {}).get("host_name") or "unknown-host"
            nb = doc.get("flushbench_neighbour")
            if nb is not None and not isinstance(nb, list):
                die(f"{paths[fi]}: flushbench_neighbour is not a list: a damaged results file")
            for run in nb or []:
                if not isinstance(run, dict):
                    die(f"{paths[fi]}: a damaged entry in flushbench_neighbour")
                self.neighbour.append((fi, run))
            for cell in doc["flushbench_cells"]:
                if isinstance(cell, dict) and isinstance(cell.get("pace"), dict):
                    # A paced step (idle, wbinvd@100, ...): its pattern names what it ran, but it is
                    # a window of time for the neighbour, not a cell of the matrix.
                    self.paced.append((fi, cell))
                    continue
                try:
                    backend, mode = str(cell["backend"]), str(cell["mode"])
                    pattern, footprint = str(cell["pattern"]), int(cell["footprint_bytes"])
                    tsc = [float(t) for t in cell.get("tsc", [])]
                    overhead = float(cell.get("tsc_overhead", 0))
                except (KeyError, TypeError, ValueError) as exc:
                    die(f"{paths[fi]}: a damaged cell in flushbench_cells ({exc!r})")
                s = next((s for s in self.series if s.file_index == fi and s.backend == backend and s.mode == mode), None)
                if s is None:
                    s = Series(len(self.series), fi, host, backend, mode)
                    self.series.append(s)
                s.emulated |= bool(cell.get("emulated", False)) or bool(fb.get("emulated", False) and backend == fb.get("backend"))
                if cell.get("tsc_khz"):
                    s.tsc_khz.add(int(cell["tsc_khz"]))
                g = self.groups.setdefault((s.index, pattern, footprint), Group(s, pattern, footprint))
                g.cells.append(cell)
                g.net.extend(t - overhead for t in tsc)
                g.unit = g.unit or cell.get("unit", "")
        for g in self.groups.values():
            g.finish()
        self._label_series()
        self.patterns = sorted({k[1] for k in self.groups}, key=pattern_key)

    def _label_series(self):
        hosts = {s.host for s in self.series}
        for s in self.series:
            label = f"{s.backend} / {s.mode}"
            if len(hosts) > 1:
                label = f"{s.host}: {label}"
            # Two runs of the same host, backend and mode: say which file is which.
            if sum(1 for t in self.series if (t.host, t.backend, t.mode) == (s.host, s.backend, s.mode)) > 1:
                label += f" (run {s.file_index + 1})"
            s.label = label + (" [emulated]" if s.emulated else "")

    def group(self, series, pattern, footprint):
        return self.groups.get((series.index, pattern, footprint))

    def footprints(self, pattern):
        return sorted({k[2] for k in self.groups if k[1] == pattern})

    def tsc_khz(self):
        """The one TSC rate every series shares, or None: a secondary time axis needs one."""
        rates = set().union(*(s.tsc_khz for s in self.series)) if self.series else set()
        if len(rates) == 1:
            return next(iter(rates))
        if rates and max(rates) - min(rates) <= 0.001 * max(rates):
            return int(np.median(sorted(rates)))
        return None


# ---- figures -------------------------------------------------------------------------------------

def color(series):
    return plt.get_cmap("tab10")(series.index % 10)


def save(fig, out, name, written):
    for ext in ("svg", "png"):
        fig.savefig(os.path.join(out, f"{name}.{ext}"), bbox_inches="tight")
    plt.close(fig)
    written.append(name)


def grid(n, ncols):
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def footprint_axis(ax, footprints):
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(ticker.FixedLocator(footprints))
    # Neighbouring powers of two ("1M", "2M") collide at print size: label every tick at least
    # two octaves from the last labelled one, the largest footprint always.
    shown, last = set(), None
    for f in sorted(footprints, reverse=True):
        if last is None or math.log2(last) - math.log2(f) >= 2:
            shown.add(f)
            last = f
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: size_label(v) if int(round(v)) in shown else ""))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlim(min(footprints) / 1.6, max(footprints) * 1.6)
    ax.set_xlabel("dirty footprint [bytes]")


def log_limits(ax, values):
    """Explicit log limits, whole decades: bars start at 0, which would make matplotlib tick down to
    1e-300, and a range inside one decade would get a single labelled tick."""
    v = [x for x in values if x is not None and math.isfinite(x) and x > 0]
    if v:
        ax.set_ylim(10 ** math.floor(math.log10(min(v) / 1.5)), 10 ** math.ceil(math.log10(max(v) * 1.5)))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())


def time_axis(ax, khz):
    """A right-hand axis in µs from the vCPU's TSC rate, so a reader gets time as well as cycles."""
    if not khz:
        return
    per_us = khz / 1e3
    sec = ax.secondary_yaxis("right", functions=(lambda c: np.asarray(c, dtype=float) / per_us,
                                                 lambda us: np.asarray(us, dtype=float) * per_us))
    sec.set_ylabel(f"µs (TSC {khz / 1e6:.2f} GHz)", fontsize=8)
    sec.yaxis.set_minor_formatter(ticker.NullFormatter())


def empty_panel(ax, title, text):
    ax.set_title(title, fontsize=9)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="dimgrey", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def no_samples_text(r, p, fps):
    """One line per (status, reason): a panel has room for a few lines, not one per cell."""
    groups = {}
    for s in r.series:
        for f in fps:
            g = r.group(s, p, f)
            if g and not g.has_samples:
                why = "; ".join(sorted({c.get("reason", "") for c in g.cells if c.get("reason")}))
                fp_set, series = groups.setdefault((g.status, why), (set(), set()))
                fp_set.add(f)
                series.add(s.label)
    lines = []
    for (status, why), (fp_set, series) in groups.items():
        where = ", ".join(size_label(f) for f in sorted(fp_set))
        who = ""
        if 1 < len(r.series) != len(series):
            who = f"\n  ({'; '.join(sorted(series))})" if len(series) <= 2 else f"\n  ({len(series)} of {len(r.series)} series)"
        short = why if len(why) <= 42 else why[:40] + "…"
        lines.append(f"{status} at {where}" + (f":\n  {short}" if short else "") + who)
    return "no samples\n" + "\n".join(lines[:5]) + ("\n…" if len(lines) > 5 else "")


def legend_below(fig, handles, labels, ncol=3):
    # Outside the axes, below the figure: savefig's tight bounding box takes it in.
    fig.legend(handles, labels, loc="upper center", ncol=min(ncol, len(labels)), frameon=False,
               bbox_to_anchor=(0.5, 0.0))


def fig_cost_vs_footprint(r, out, written, notes):
    pats = [p for p in r.patterns if any(f > 0 for f in r.footprints(p))]
    if not pats:
        notes.append("cost_vs_footprint: no pattern was measured at a non-zero footprint; no figure.")
        return
    rows, cols = grid(len(pats), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    khz = r.tsc_khz()
    handles = {}
    dropped = []
    for ax, p in zip(axes.flat, pats):
        fps = [f for f in r.footprints(p) if f > 0]
        unit = "per footprint" if any(r.group(s, p, f) and r.group(s, p, f).unit == "per-footprint" for s in r.series for f in fps) else "one instruction"
        title = f"{p}: {PATTERN_WHAT.get(p, '')}\n({unit})"
        ys = []
        for s in r.series:
            pts = [(f, r.group(s, p, f)) for f in fps]
            pts = [(f, g) for f, g in pts if g and g.has_samples]
            good = [(f, g) for f, g in pts if g.median > 0]
            dropped += [f"{p} {size_label(f)} {s.label}" for f, g in pts if g.median <= 0]
            if not good:
                continue
            x = [f for f, _ in good]
            y = [g.median for _, g in good]
            lo = [g.ci[0] if math.isfinite(g.ci[0]) and g.ci[0] > 0 else g.median for _, g in good]
            hi = [g.ci[1] if math.isfinite(g.ci[1]) else g.median for _, g in good]
            (line,) = ax.plot(x, y, marker="o", ms=4, lw=1.5, color=color(s), ls=MODE_STYLE.get(s.mode, "-"))
            ax.fill_between(x, lo, hi, color=color(s), alpha=0.2, lw=0)
            handles[s.label] = line
            ys += lo + hi
        if not ys:
            empty_panel(ax, title, no_samples_text(r, p, fps))
            continue
        # A cell without samples still belongs on the plot: its status, at its footprint.
        for s in r.series:
            for f in fps:
                g = r.group(s, p, f)
                if g and not g.has_samples:
                    ax.annotate(g.status, (f, 0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                                textcoords="offset points", ha="center", va="bottom", fontsize=7, color=color(s), rotation=90)
        footprint_axis(ax, fps)
        ax.set_yscale("log")
        log_limits(ax, ys)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("net cost per repetition [TSC cycles]")
        time_axis(ax, khz)
    for ax in axes.flat[len(pats):]:
        ax.set_visible(False)
    fig.suptitle("Cost against dirty footprint (median; shaded: 95% bootstrap interval)", fontsize=11)
    fig.tight_layout()
    legend_below(fig, list(handles.values()), list(handles.keys()))
    if dropped:
        notes.append("cost_vs_footprint: medians at or below 0 net cycles cannot be drawn on a log axis and are left out: "
                     + ", ".join(dropped[:8]) + (" ..." if len(dropped) > 8 else ""))
    notes.append("cost_vs_footprint: footprint 0 has no place on a log axis; its cells are in modes_bars and the tables.")
    save(fig, out, "cost_vs_footprint", written)


def chosen_footprints(r, requested):
    if requested:
        return requested
    every = sorted({k[2] for k in r.groups if k[2] > 0})
    if not every:
        return [0]
    picks = {every[0], every[len(every) // 2], every[-1]}
    return sorted(picks)


def fig_modes_bars(r, out, written, notes, requested):
    chosen = chosen_footprints(r, requested)
    panels = []
    for p in r.patterns:
        fps = r.footprints(p)
        use = [f for f in fps if f in chosen] or ([0] if fps == [0] else [])
        if use:
            panels.append((p, use))
    if not panels:
        notes.append("modes_bars: none of the chosen footprints was measured; no figure.")
        return
    rows, cols = grid(len(panels), 3)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.1 * rows), squeeze=False)
    khz = r.tsc_khz()
    handles = {}
    for ax, (p, fps) in zip(axes.flat, panels):
        title = f"{p}: {PATTERN_WHAT.get(p, '')}"
        ys = []
        # Slots only for the series that have this pattern, so bars sit on their footprint.
        present = [s for s in r.series if any(r.group(s, p, f) for f in fps)]
        width = 0.8 / max(1, len(present))
        for i, f in enumerate(fps):
            for j, s in enumerate(present):
                g = r.group(s, p, f)
                if g is None or not g.has_samples or g.median <= 0:
                    continue
                lo, hi = g.ci
                lo = lo if math.isfinite(lo) and lo > 0 else g.median
                hi = hi if math.isfinite(hi) else g.median
                noncoh = s.mode == "noncoherent"
                bar = ax.bar(i - 0.4 + width * (j + 0.5), g.median, width * 0.9, color=color(s),
                             yerr=[[g.median - lo], [hi - g.median]], capsize=2, error_kw={"lw": 0.8},
                             hatch="//" if noncoh else None, edgecolor="black" if noncoh else "none", lw=0.3)
                handles[s.label] = bar
                ys += [lo, hi]
        if not ys:
            empty_panel(ax, title, no_samples_text(r, p, fps))
            continue
        # What has no bar says why: its status (or that the median is at or below the bracket).
        for i, f in enumerate(fps):
            for j, s in enumerate(present):
                g = r.group(s, p, f)
                if g is not None and (not g.has_samples or g.median <= 0):
                    ax.annotate(g.status if not g.has_samples else "≤0", (i - 0.4 + width * (j + 0.5), 0),
                                xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points",
                                ha="center", va="bottom", fontsize=7, rotation=90, color=color(s))
        ax.set_xticks(range(len(fps)))
        ax.set_xticklabels([size_label(f) for f in fps])
        ax.set_xlim(-0.5, len(fps) - 0.5)
        ax.set_xlabel("dirty footprint [bytes]" if fps != [0] else "(no footprint: one instruction)")
        ax.set_yscale("log")
        log_limits(ax, ys)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("median net cost [TSC cycles]")
        ax.grid(axis="x", visible=False)
        time_axis(ax, khz)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Coherent vs non-coherent vs native at chosen footprints (median; whiskers: 95% interval)", fontsize=11)
    fig.tight_layout()
    legend_below(fig, list(handles.values()), list(handles.keys()))
    modes = {s.mode for s in r.series}
    if "noncoherent" not in modes:
        notes.append("modes_bars: no non-coherent cells in these results (they need a VFIO device without IOMMU snoop control).")
    if "native" not in modes:
        notes.append("modes_bars: no native cells in these results (the native baseline was not run).")
    save(fig, out, "modes_bars", written)


def fig_distributions(r, out, written, notes):
    keys = sorted({(k[1], k[2]) for k, g in r.groups.items() if g.has_samples}, key=lambda k: (pattern_key(k[0]), k[1]))
    if not keys:
        notes.append("distributions: no cell has samples; no figure.")
        return
    rows, cols = grid(len(keys), 5)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.3 * rows + 0.8), squeeze=False)
    handles = {}
    outlier_handle = None
    log_scaled = []
    flagged = 0
    for ax, (p, f) in zip(axes.flat, keys):
        present = [s for s in r.series if r.group(s, p, f) and r.group(s, p, f).has_samples]
        for pos, s in enumerate(present):
            g = r.group(s, p, f)
            x = g.net
            if len(x) >= 3 and np.ptp(x) > 0:
                parts = ax.violinplot([x], positions=[pos], widths=0.8, showextrema=False)
                for b in parts["bodies"]:
                    b.set_facecolor(color(s))
                    b.set_alpha(0.35)
            jitter = np.random.default_rng(pos).uniform(-0.12, 0.12, len(x))
            ok = ~g.outliers
            h = ax.scatter(pos + jitter[ok], x[ok], s=6, color=color(s), alpha=0.8, lw=0)
            if g.outliers.any():
                flagged += int(g.outliers.sum())
                ho = ax.scatter(pos + jitter[g.outliers], x[g.outliers], s=16, marker="x", color="crimson", lw=1)
                outlier_handle = ho
            ax.hlines(g.median, pos - 0.3, pos + 0.3, color="black", lw=1.2)
            handles[s.label] = h
        ax.set_xticks([])
        ax.set_xlim(-0.6, len(present) - 0.4)
        ax.set_title(cell_title(r, p, f), fontsize=9)
        # Series a decade or more apart (an emulated backend next to a real one) would flatten
        # each other on a linear axis: log then, when every value allows it.
        meds = [r.group(s, p, f).median for s in present]
        values = np.concatenate([r.group(s, p, f).net for s in present])
        if len(meds) > 1 and np.all(values > 0) and min(meds) > 0 and max(meds) / min(meds) > 10:
            ax.set_yscale("log")
            log_scaled.append(cell_title(r, p, f))
        ax.yaxis.set_major_formatter(ticker.EngFormatter(sep=""))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel("net TSC cycles")
    fig.suptitle("Every repetition of every cell (net TSC cycles; black bar: median)", fontsize=11)
    fig.tight_layout()
    # The median bar, in the legend too, so the black line needs no guessing.
    from matplotlib.lines import Line2D
    if outlier_handle is not None:
        handles["outlier (Tukey or MAD z > 3.5; kept)"] = outlier_handle
    handles["median"] = Line2D([], [], color="black", lw=1.2)
    fig.legend(list(handles.values()), list(handles.keys()), loc="upper center", ncol=4, frameon=False,
               bbox_to_anchor=(0.5, 0.0), markerscale=2.5)
    if log_scaled:
        notes.append("distributions: log y axis where series differ tenfold or more: " + ", ".join(log_scaled) + ".")
    if flagged:
        notes.append(f"distributions: {flagged} repetitions are flagged as outliers (red x) and kept in every statistic.")
    save(fig, out, "distributions", written)


# KVM's binary statistics (Documentation/virt/kvm/api.rst, "KVM_GET_STATS_FD"), named for a reader.
KVM_STAT_NAMES = {
    "insn_emulation": "instructions emulated",
    "insn_emulation_fail": "emulation failures",
    "mmu_pte_write": "guest page-table writes trapped",
    "mmu_pde_zapped": "shadow page directories zapped",
    "mmu_flooded": "shadow pages unsynced (flooded)",
    "fpu_reload": "FPU state reloads",
    "preemption_other": "vCPU preempted (other)",
    "preemption_reported": "vCPU preempted (reported)",
    "req_event": "event requests",
    "hypercalls": "hypercalls",
    "irq_injections": "interrupts injected",
    "host_state_reload": "host state reloads",
    "l1d_flush": "L1D flushes",
    "halt_wakeup": "halt wake-ups",
}


def stat_label(name, scope=""):
    base = name[:-6] if name.endswith("_exits") else name
    if name.endswith("_exits"):
        return f"exits: {base.replace('_', ' ')}"
    nice = KVM_STAT_NAMES.get(name)
    return f"{nice} ({scope}{name})" if nice else f"{scope}{name}"


def exit_components(cell):
    """{component: events} per cell from what the backend recorded, and where it came from."""
    extra = cell.get("extra") or {}
    exits = extra.get("exits") if isinstance(extra.get("exits"), dict) else None
    if exits and exits.get("by_reason"):
        return {k: float(v.get("count", 0)) for k, v in exits["by_reason"].items()}, "exit reasons (kvm:kvm_exit)"
    if exits and exits.get("counts"):
        return {k: float(v) for k, v in exits["counts"].items() if isinstance(v, (int, float))}, "KVM tracepoints"
    stats = extra.get("kvm_stats_delta")
    if isinstance(stats, dict) and stats:
        comp = {}
        vcpu = stats.get("vcpu", {})
        total = float(vcpu.get("exits", 0))
        named = {k: float(v) for k, v in vcpu.items() if k.endswith("_exits") and isinstance(v, (int, float))}
        comp.update({stat_label(k): v for k, v in named.items()})
        if total - sum(named.values()) > 0:
            comp["exits: reason not reported"] = total - sum(named.values())
        for k, v in vcpu.items():
            if k != "exits" and not k.endswith("_exits") and isinstance(v, (int, float)) and v > 0:
                comp[stat_label(k)] = float(v)
        for k, v in stats.get("vm", {}).items():
            if isinstance(v, (int, float)) and v > 0:
                comp[stat_label(k, "vm ")] = float(v)
        return comp, "KVM binary statistics"
    return None, None


def fig_exit_attribution(r, out, written, notes):
    rows = []
    sources = set()
    reasons = set()
    for (si, p, f), g in sorted(r.groups.items(), key=lambda kv: (kv[0][0], pattern_key(kv[0][1]), kv[0][2])):
        total = {}
        reps = 0
        for cell in g.cells:
            if not cell.get("tsc"):
                continue  # no repetitions to divide by: an unsupported or skipped cell's bookkeeping
            comp, source = exit_components(cell)
            if comp is None:
                why = ((cell.get("extra") or {}).get("exits") or {}).get("unavailable") if isinstance((cell.get("extra") or {}).get("exits"), dict) else None
                if why:
                    reasons.add(why)
                continue
            sources.add(source)
            for k, v in comp.items():
                total[k] = total.get(k, 0) + v
            reps += len(cell.get("tsc", [])) + int(cell.get("warmup", 0))
        if total and reps:
            rows.append((g, {k: v / reps for k, v in total.items()}))
    if not rows:
        why = "; ".join(sorted(reasons)) if reasons else "these results carry no KVM statistics or exit counters (qemu-* backends and native runs do not collect them)"
        notes.append(f"exit_attribution: skipped: {why}.")
        return
    comps = sorted({k for _, c in rows for k in c}, key=lambda k: (-sum(c.get(k, 0) for _, c in rows), k))
    top = comps[:9]
    fig_h = 0.28 * len(rows) + 1.8
    fig, (ax, axt) = plt.subplots(1, 2, figsize=(11, fig_h), gridspec_kw={"width_ratios": [3, 1.2]}, sharey=True)
    cmap = plt.get_cmap("tab20")
    labels = [f"{cell_title(r, g.pattern, g.footprint)}  {g.series.label}" for g, _ in rows]
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for ci, k in enumerate(top + (["other"] if len(comps) > len(top) else [])):
        vals = np.array([sum(v for kk, v in c.items() if kk not in top) if k == "other" else c.get(k, 0) for _, c in rows])
        totals = np.array([sum(c.values()) for _, c in rows])
        share = np.divide(vals, totals, out=np.zeros_like(vals), where=totals > 0)
        ax.barh(y, share * 100, left=left, color=cmap(ci % 20), label=k, height=0.75)
        left += share * 100
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of KVM events in the cell [%]")
    ax.grid(axis="y", visible=False)
    totals = [sum(c.values()) for _, c in rows]
    axt.barh(y, totals, color="grey", height=0.75)
    axt.set_xscale("log")
    axt.set_xlabel("KVM events per repetition\n[count, log]")
    axt.grid(axis="y", visible=False)
    fig.suptitle("Where KVM's work went, per cell (" + ", ".join(sorted(sources)) + "; per repetition incl. warm-up and dirtying)", fontsize=10)
    fig.tight_layout()
    h, l = ax.get_legend_handles_labels()
    legend_below(fig, h, l, ncol=2)
    notes.append("exit_attribution: counts span the whole cell (warm-up, untimed dirtying and timed region) divided by "
                 "its repetitions; they attribute work, not timed cost.")
    save(fig, out, "exit_attribution", written)


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
                est, ci = ratio_ci(g.net, gb.net)
                out.append({"pattern": p, "footprint": f, "series": s, "baseline": b, "ratio": est, "ci": ci,
                            "p": u_test(g.net, gb.net)})
    return out


def fig_ratios(r, out, written, notes, rows):
    rows = [x for x in rows if math.isfinite(x["ratio"]) and x["ratio"] > 0]
    if not rows:
        if len(r.series) > 1:
            notes.append("ratios: no cell was measured in two series with positive medians; no figure.")
        return
    fig_h = 0.26 * len(rows) + 1.6
    fig, ax = plt.subplots(figsize=(8.5, fig_h))
    y = np.arange(len(rows))
    for i, x in enumerate(rows):
        lo, hi = x["ci"]
        c = color(x["series"])
        if math.isfinite(lo) and math.isfinite(hi) and lo > 0:
            ax.plot([lo, hi], [i, i], color=c, lw=2, alpha=0.6)
        sig = x["p"] is not None and x["p"] < 0.05
        ax.plot(x["ratio"], i, "o", color=c, ms=5, mfc=c if sig else "white")
    ax.axvline(1, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{cell_title(r, x['pattern'], x['footprint'])}: {x['series'].label}  ÷  {x['baseline'].label}" for x in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ratio of median net TSC cycles (series ÷ baseline), log; bar: 95% bootstrap interval")
    ax.grid(axis="y", visible=False)
    filled = "filled: Mann-Whitney p < 0.05" if mannwhitneyu else "no p-values: scipy missing"
    ax.set_title(f"Ratios to the baseline series ({filled}; hollow: not significant)", fontsize=10)
    fig.tight_layout()
    save(fig, out, "ratios", written)


# ---- the neighbour: a host tenant's view of the guest's paced steps -----------------------------

STEP_CMAPS = {"wbinvd": "Reds", "wbnoinvd": "Purples", "clflush": "Blues", "clflushopt": "Greens", "clwb": "Oranges"}
OTHER_CMAPS = ["YlOrBr", "BuPu", "GnBu", "RdPu"]
IDLE_SPAN = "#d4d4d4"     # idle steps: the baseline, in grey
IDLE_MARK = "#6e6e6e"     # the same, dark enough for a marker
OUTSIDE = "#b0b0b0"       # slices outside every window (boot, the gaps between steps)
INSIDE = "#1b1b1b"        # slices inside a window


def num(v):
    """A JSON number as float; null (NaN in the C++), missing or junk as NaN: never 0."""
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def fmt_num(x, spec=".3f"):
    return format(x, spec) if x is not None and math.isfinite(x) else "n/a"


def fmt_interval(iv, spec=".3f"):
    """An {estimate, lo, hi} object as "1.093 [1.040, 1.192]"; "n/a" where a figure is NaN."""
    if not isinstance(iv, dict):
        return "n/a"
    est, lo, hi = num(iv.get("estimate")), num(iv.get("lo")), num(iv.get("hi"))
    if not math.isfinite(est):
        return "n/a"
    return f"{est:{spec}} [{fmt_num(lo, spec)}, {fmt_num(hi, spec)}]"


def bytes_iec(b):
    b = int(b or 0)
    for shift, suffix in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if b >= (1 << shift):
            return f"{b / (1 << shift):.3g} {suffix}"
    return f"{b} B"


def rate_key(rate):
    """Numeric rates ascending, then "max"; idle first."""
    if rate == "idle":
        return (0, 0.0)
    if rate == "max":
        return (2, 0.0)
    return (1, num(rate) if math.isfinite(num(rate)) else 0.0)


def window_rate(w):
    """What the step achieved: "99/s", or the rate asked for when nothing was measured."""
    if w.get("rate") == "idle":
        return "idle"
    hz = num(w.get("achieved_hz"))
    if math.isfinite(hz):
        return f"{hz:.3g}/s" if hz < 1000 else f"{hz:,.0f}/s"
    return "n/a"


def window_label(w, with_mode=False):
    label = str(w.get("label", "?"))
    if w.get("rate") != "idle":
        label += f" ({window_rate(w)})"
    if with_mode:
        label += f"\n{w.get('mode', '?')}"
    return label


def step_colors(r):
    """{(pattern, rate): colour} over every neighbour window of every run, so a step has one colour in
    both figures: idle grey, each pattern its own sequential colormap by rate, "max" darkest."""
    by_pattern = {}
    for _, run in r.neighbour:
        for w in run.get("windows") or []:
            if w.get("rate") != "idle":
                by_pattern.setdefault(str(w.get("pattern", "?")), set()).add(str(w.get("rate", "?")))
    colors = {}
    others = iter(OTHER_CMAPS * 4)
    for p in sorted(by_pattern, key=pattern_key):
        cmap = plt.get_cmap(STEP_CMAPS.get(p) or next(others, "Greys"))
        rates = sorted(by_pattern[p], key=rate_key)
        for i, rate in enumerate(rates):
            if len(rates) == 1:
                level = 0.85 if rate == "max" else 0.6
            else:
                level = 0.4 + 0.5 * i / (len(rates) - 1)
            colors[(p, rate)] = cmap(level)
    return colors


def window_color(colors, w, marker=False):
    if w.get("rate") == "idle":
        return IDLE_MARK if marker else IDLE_SPAN
    return colors.get((str(w.get("pattern", "?")), str(w.get("rate", "?"))), "tab:purple")


def run_slices(run):
    """(start_s, end_s, chase_ns, stream_gbs) as float arrays, null as NaN."""
    sl = run.get("slices") or {}
    cols = [np.array([num(v) for v in (sl.get(k) or [])], dtype=float) for k in ("start_s", "end_s", "chase_ns", "stream_gbs")]
    n = min(len(c) for c in cols)
    return [c[:n] for c in cols]


def within(start, end, w):
    """The slices entirely inside a window, as host/neighbour.cc's slices_within."""
    return (start >= num(w.get("start_s"))) & (end <= num(w.get("end_s")))


def idle_medians(run):
    """{mode: (median chase ns, median GB/s)} over the pooled slices of the run's idle steps in each
    mode: the baseline every other step of that mode is compared with."""
    start, end, chase, stream = run_slices(run)
    out = {}
    for mode in sorted({str(w.get("mode", "?")) for w in run.get("windows") or []}):
        mask = np.zeros(len(start), bool)
        for w in run.get("windows") or []:
            if w.get("rate") == "idle" and str(w.get("mode", "?")) == mode:
                mask |= within(start, end, w)
        c, s = chase[mask], stream[mask]
        c, s = c[np.isfinite(c)], s[np.isfinite(s)]
        if len(c) or len(s):
            out[mode] = (float(np.median(c)) if len(c) else math.nan, float(np.median(s)) if len(s) else math.nan)
    return out


def run_modes(run):
    return sorted({str(w.get("mode", "?")) for w in run.get("windows") or []})


def run_title(r, fi, run, short=False):
    modes = run_modes(run)
    where = f"neighbour on CPU {run.get('cpu', '?')}, guest vCPU on CPU {run.get('vcpu_cpu', '?')}"
    what = (f"{run.get('slice_ms', '?')} ms slices, {bytes_iec(run.get('buffer_bytes'))} buffer, "
            f"{run.get('backend', '?')} backend, {', '.join(modes) or 'no'} mode{'s' if len(modes) > 1 else ''}")
    if neighbour_emulated(r, fi, run):
        what += " [emulated]"
    if run.get("capped"):
        what += " [capped]"
    name = f"{os.path.basename(r.paths[fi])} run {run.get('run', '?')}: " if len(r.paths) > 1 or len(r.neighbour) > 1 else ""
    return f"{name}{where}" + (", " if short else "\n") + what


def neighbour_emulated(r, fi, run):
    fb = r.docs[fi].get("context", {}).get("flushbench", {})
    backend = str(run.get("backend", ""))
    return backend == "qemu-tcg" or (bool(fb.get("emulated")) and backend == fb.get("backend"))


def contiguous_modes(windows):
    """[(mode, start_s, end_s)] for each run of consecutive windows in one mode (A/B/A repeats one)."""
    blocks = []
    for w in sorted(windows, key=lambda w: num(w.get("start_s"))):
        mode = str(w.get("mode", "?"))
        s, e = num(w.get("start_s")), num(w.get("end_s"))
        if blocks and blocks[-1][0] == mode:
            blocks[-1][2] = e
        else:
            blocks.append([mode, s, e])
    return blocks


def fig_neighbour_timeline(r, out, written, notes):
    runs = [(fi, run) for fi, run in r.neighbour if len(run_slices(run)[0])]
    for fi, run in r.neighbour:
        if not len(run_slices(run)[0]):
            notes.append(f"neighbour_timeline: {os.path.basename(r.paths[fi])} run {run.get('run', '?')} recorded no slices; left out.")
    if not runs:
        if r.neighbour:
            notes.append("neighbour_timeline: no neighbour run recorded any slice; no figure.")
        return
    from matplotlib.lines import Line2D
    colors = step_colors(r)
    width = 10.5
    # One subfigure per run: each lays out its own title, step labels and time axis.
    fig = plt.figure(figsize=(width, 5.6 * len(runs)), layout="constrained")
    subs = fig.subfigures(len(runs), 1, squeeze=False, hspace=0.04)[:, 0]
    handles = {}
    log_runs = []
    several_modes = any(len(run_modes(run)) > 1 for _, run in runs)
    for k, (fi, run) in enumerate(runs):
        ax_c, ax_s = subs[k].subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.15, 1]})
        start, end, chase, stream = run_slices(run)
        mid = (start + end) / 2
        windows = sorted(run.get("windows") or [], key=lambda w: num(w.get("start_s")))
        modes = run_modes(run)
        inside = np.zeros(len(start), bool)
        for w in windows:
            inside |= within(start, end, w)
        x0 = float(np.nanmin(start)) if len(start) else 0.0
        x1 = float(np.nanmax(end)) if len(end) else 1.0
        for w in windows:
            s, e = num(w.get("start_s")), num(w.get("end_s"))
            if math.isfinite(s) and math.isfinite(e):
                x0, x1 = min(x0, s), max(x1, e)
        pad = 0.01 * (x1 - x0 or 1)
        for ax, y, unit in ((ax_c, chase, "ns"), (ax_s, stream, "GB/s")):
            for w in windows:
                s, e = num(w.get("start_s")), num(w.get("end_s"))
                if math.isfinite(s) and math.isfinite(e):
                    ax.axvspan(s, e, color=window_color(colors, w), alpha=0.55 if w.get("rate") == "idle" else 0.35, lw=0, zorder=0)
            ax.plot(mid, y, color=OUTSIDE, lw=0.6, zorder=2)
            h_out = ax.scatter(mid[~inside], y[~inside], s=5, color=OUTSIDE, lw=0, zorder=3)
            h_in = ax.scatter(mid[inside], y[inside], s=5, color=INSIDE, lw=0, zorder=3)
            handles["slice inside a guest step"] = h_in
            handles["slice outside every step (boot, gaps)"] = h_out
            ax.set_xlim(x0 - pad, x1 + pad)
            ax.grid(axis="x", visible=False)
        # The idle baseline: a dashed line at its median, over each stretch of its mode.
        base = idle_medians(run)
        for mode, s, e in contiguous_modes(windows) if len(modes) > 1 else [(modes[0] if modes else "?", None, None)]:
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
                ax.annotate(f"idle {v:.3g} {unit}" + (f" ({mode})" if len(modes) > 1 else ""), (x1 + pad if s is None else e, v),
                            xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom", fontsize=7, zorder=5,
                            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
            handles["median of the idle steps' slices" + (" (of the step's mode)" if several_modes else "")] = Line2D([], [], color="black", ls="--", lw=0.9)
        finite = chase[np.isfinite(chase) & (chase > 0)]
        if len(finite) and finite.max() / finite.min() > 4:
            # A burst of memory-latency slices would flatten the baseline on a linear axis.
            ax_c.set_yscale("log")
            ticks_125(ax_c.yaxis)
            # From the 1-2-5 tick under the fastest slice, so the baseline has a labelled tick near it.
            floor = 10 ** math.floor(math.log10(finite.min() / 1.05))
            floor = max(m * floor for m in (1, 2, 5) if m * floor <= finite.min() / 1.05)
            ax_c.set_ylim(floor, finite.max() * 1.3)
            log_runs.append(f"{os.path.basename(r.paths[fi])} run {run.get('run', '?')}")
        ax_c.set_ylabel("pointer chase\n[ns per load]" + (", log" if ax_c.get_yscale() == "log" else ""))
        ax_s.set_ylabel("streaming\n[GB/s]")
        ax_s.set_xlabel("time since the neighbour's first slice [s] (host CLOCK_MONOTONIC)")
        plt.setp(ax_c.get_xticklabels(), visible=False)
        # Step labels above the top panel: flat where the step is wide enough, else upright.
        axes_pt = width * 0.8 * 72
        span = (x1 + 2 * pad) - x0
        tallest = 0
        for w in windows:
            s, e = num(w.get("start_s")), num(w.get("end_s"))
            if not (math.isfinite(s) and math.isfinite(e)):
                continue
            text = str(w.get("label", "?")) + (f"\n{w.get('mode', '?')}" if len(modes) > 1 else "")
            text_pt = max(len(t) for t in text.split("\n")) * 7 * 0.6
            upright = text_pt > (e - s) / span * axes_pt * 0.95
            tallest = max(tallest, text_pt if upright else 9 * (text.count("\n") + 1))
            ax_c.annotate(text, ((s + e) / 2, 1), xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points",
                          ha="center", va="bottom", rotation=90 if upright else 0, fontsize=7)
        ax_c.set_title(run_title(r, fi, run), fontsize=9.5, pad=tallest + 8)
    fig.suptitle("Host neighbour during the guest's paced steps (one point per slice; shaded: guest step)", fontsize=11)
    legend_below(fig, list(handles.values()), list(handles.keys()), ncol=3)
    if log_runs:
        notes.append("neighbour_timeline: log latency axis (slices differ fourfold or more) for " + ", ".join(log_runs) + ".")
    save(fig, out, "neighbour_timeline", written)


def fig_neighbour_slowdown(r, out, written, notes):
    runs = [(fi, run) for fi, run in r.neighbour if run.get("windows")]
    if not runs:
        if r.neighbour:
            notes.append("neighbour_slowdown: no neighbour run has a paced step (window); no figure.")
        return
    from matplotlib.lines import Line2D
    colors = step_colors(r)
    nmax = max(len(run["windows"]) for _, run in runs)
    width = max(6.5, 0.85 * nmax + 2.5)
    fig = plt.figure(figsize=(width, 5.2 * len(runs)), layout="constrained")
    subs = fig.subfigures(len(runs), 1, squeeze=False, hspace=0.04)[:, 0]
    any_na = False
    log_axes = []
    for k, (fi, run) in enumerate(runs):
        ax, ax2 = subs[k].subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.3, 1]})
        modes = run_modes(run)
        # Grouped by mode, in run order within a mode; a gap between modes.
        ordered, pos, x = [], [], 0.0
        for mode in modes:
            ws = [w for w in run["windows"] if str(w.get("mode", "?")) == mode]
            if ordered:
                x += 0.6
            for w in ws:
                ordered.append(w)
                pos.append(x)
                x += 1
        values = []
        for panel, key in ((ax, "slowdown"), (ax2, "stream_ratio")):
            for w, xp in zip(ordered, pos):
                eff = w.get("effect") or {}
                iv = eff.get(key) if isinstance(eff.get(key), dict) else {}
                est, lo, hi = num(iv.get("estimate")), num(iv.get("lo")), num(iv.get("hi"))
                c = window_color(colors, w, marker=True)
                if not math.isfinite(est):
                    panel.annotate("n/a", (xp, 0.5), xycoords=("data", "axes fraction"), ha="center", va="center",
                                   fontsize=8, color="dimgrey", fontstyle="italic",
                                   bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "lightgrey"})
                    any_na = True
                    continue
                if math.isfinite(lo) and math.isfinite(hi):
                    panel.errorbar(xp, est, yerr=[[max(0.0, est - lo)], [max(0.0, hi - est)]], fmt="none", ecolor=c,
                                   elinewidth=1.4, capsize=4, zorder=3)
                    values += [lo, hi] if panel is ax else []
                sig = bool(eff.get("significant")) and key == "slowdown"
                if key == "slowdown":
                    panel.plot(xp, est, "o", ms=7, color=c, mfc=c if sig else "white", mew=1.5, zorder=4)
                else:  # no test on streaming: a marker that claims nothing
                    panel.plot(xp, est, "D", ms=5, color=c, mfc=c, alpha=0.8, zorder=4)
                if panel is ax:
                    values.append(est)
                if sig:
                    top = hi if math.isfinite(hi) else est
                    panel.annotate("*", (xp, top), xytext=(0, 1), textcoords="offset points", ha="center",
                                   va="bottom", fontsize=12, fontweight="bold", color=c)
            panel.axhline(1.0, color="black", lw=0.8, zorder=2)
            panel.set_xlim(-0.6, (pos[-1] if pos else 0) + 0.6)
            panel.grid(axis="x", visible=False)
        v = [y for y in values if math.isfinite(y) and y > 0]
        if v and max(v) / min(v) > 4:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 5)))
            ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda y, _: f"{y:g}"))
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            log_axes.append(f"run {run.get('run', '?')}")
        # Headroom for the stars.
        lo_y, hi_y = ax.get_ylim()
        if ax.get_yscale() == "linear":
            ax.set_ylim(lo_y, hi_y + 0.08 * (hi_y - lo_y))
        ax.set_ylabel("slowdown: median ns/load\n÷ idle median")
        ax2.set_ylabel("streaming: median GB/s\n÷ idle median (no test)")
        ax2.set_xticks(pos)
        ax2.set_xticklabels([window_label(w) for w in ordered], rotation=30, ha="right", fontsize=8)
        if len(modes) > 1:
            # The mode under each group, between the panels' frames.
            for mode in modes:
                xs = [xp for w, xp in zip(ordered, pos) if str(w.get("mode", "?")) == mode]
                ax.annotate(mode, ((min(xs) + max(xs)) / 2, 1), xycoords=("data", "axes fraction"), xytext=(0, 3),
                            textcoords="offset points", ha="center", va="bottom", fontsize=8, fontstyle="italic")
            for i in range(1, len(modes)):
                b = [xp for w, xp in zip(ordered, pos) if str(w.get("mode", "?")) == modes[i]]
                for panel in (ax, ax2):
                    panel.axvline(min(b) - 0.8, color="grey", lw=0.6, ls=":")
        ax.set_title(run_title(r, fi, run), fontsize=9, pad=17 if len(modes) > 1 else 6)
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
    save(fig, out, "neighbour_slowdown", written)


# ---- memory types ---------------------------------------------------------------------------------

def ticks_125(axis, label=lambda v: f"{v:g}"):
    """1, 2, 5 per decade, labelled: a log axis spanning less than a decade otherwise gets one label."""
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 5)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: label(v)))
    axis.set_minor_formatter(ticker.NullFormatter())


def memtype_of(pattern):
    """("read", "wb") for read_wb; None for a pattern outside the memory-type group."""
    op, _, mt = pattern.rpartition("_")
    return (op, mt) if op in MEMTYPE_OPS and mt in MEMTYPES else None


def memtype_groups(r):
    """[(series, op, memtype, footprint, group)] in a fixed order."""
    out = []
    for s in r.series:
        for op in MEMTYPE_OPS:
            for mt in MEMTYPES:
                p = f"{op}_{mt}"
                for f in r.footprints(p):
                    g = r.group(s, p, f)
                    if g is not None:
                        out.append((s, op, mt, f, g))
    return out


def per_line(g):
    """(median, lo, hi) net cycles per cache line; NaN without samples or footprint."""
    lines = g.footprint // int(g.cells[0].get("line_bytes") or 64) if g.footprint else 0
    if not lines or not g.has_samples:
        return math.nan, math.nan, math.nan
    return g.median / lines, g.ci[0] / lines, g.ci[1] / lines


def fig_memtypes(r, out, written, notes):
    groups = memtype_groups(r)
    if not groups:
        notes.append("memtypes: no memory-type cells (read_/write_/rflush_ x wb/wc/uc; `--patterns memtypes`) in these results; no figure.")
        return
    series = [s for s in r.series if any(x[0] is s for x in groups)]
    # A series where no memory-type cell ran (native: they need ring 0) says so in a note, not a panel.
    empty = [s for s in series if not any(x[0] is s and x[4].has_samples for x in groups)]
    for s in empty:
        reasons = sorted({c.get("reason", "") for x in groups if x[0] is s for c in x[4].cells if c.get("reason")})
        notes.append(f"memtypes: {s.label}: no memory-type cell ran ({'; '.join(reasons)[:200] or 'no samples'}); no panel.")
    series = [s for s in series if s not in empty]
    groups = [x for x in groups if x[0] in series]
    if not series:
        return
    ops = [op for op in MEMTYPE_OPS if any(x[1] == op for x in groups)]
    fig, axes = plt.subplots(len(series), len(ops), figsize=(3.6 * len(ops) + 0.6, 3.1 * len(series)), squeeze=False)
    handles = {}
    nonpositive = []
    for i, s in enumerate(series):
        row = [x for x in groups if x[0] is s]
        ys = []
        for x in row:
            med, lo, hi = per_line(x[4])
            ys += [v for v in (med, lo, hi) if math.isfinite(v) and v > 0]
        for j, op in enumerate(ops):
            ax = axes[i][j]
            fps = sorted({x[3] for x in row if x[1] == op})
            title = f"{op}: {MEMTYPE_OP_WHAT[op]}" + (f"\n{s.label}" if len(series) > 1 else "")
            if not fps:
                empty_panel(ax, title, "not measured")
                continue
            width = 0.8 / len(MEMTYPES)
            for fi_, f in enumerate(fps):
                for k, mt in enumerate(MEMTYPES):
                    g = r.group(s, f"{op}_{mt}", f)
                    xp = fi_ - 0.4 + width * (k + 0.5)
                    if g is None:
                        continue
                    med, lo, hi = per_line(g)
                    if not math.isfinite(med) or med <= 0:
                        why = g.status if not g.has_samples else "≤0"
                        if g.has_samples:
                            nonpositive.append(f"{op}_{mt} {size_label(f)} {s.label}")
                        ax.annotate(why, (xp, 0), xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points",
                                    ha="center", va="bottom", fontsize=7, rotation=90, color=MEMTYPE_COLOR[mt])
                        continue
                    lo = lo if math.isfinite(lo) and lo > 0 else med
                    hi = hi if math.isfinite(hi) else med
                    bar = ax.bar(xp, med, width * 0.9, color=MEMTYPE_COLOR[mt], yerr=[[med - lo], [hi - med]], capsize=2,
                                 error_kw={"lw": 0.8})
                    handles[f"{mt.upper()}: {MEMTYPE_WHAT[mt]}"] = bar
            ax.set_xticks(range(len(fps)))
            ax.set_xticklabels([size_label(f) for f in fps])
            ax.set_xlim(-0.5, len(fps) - 0.5)
            ax.set_xlabel("buffer footprint [bytes]")
            ax.set_yscale("log")
            log_limits(ax, ys)
            ticks_125(ax.yaxis, cycles_label)
            ax.set_title(title, fontsize=9)
            ax.grid(axis="x", visible=False)
            if j == 0:
                ax.set_ylabel("median net cost per 64-byte line\n[TSC cycles, log]")
    khz = r.tsc_khz()
    if khz:
        # Per line, ns reads better than the cell figures' µs.
        per_ns = khz / 1e6
        for i in range(len(series)):
            sec = axes[i][len(ops) - 1].secondary_yaxis("right", functions=(lambda c: np.asarray(c, dtype=float) / per_ns,
                                                                             lambda ns: np.asarray(ns, dtype=float) * per_ns))
            sec.set_ylabel(f"ns per line (TSC {khz / 1e6:.2f} GHz)", fontsize=8)
            ticks_125(sec.yaxis)
    fig.suptitle("Cost per cache line by memory type (median; whiskers: 95% bootstrap interval)", fontsize=11)
    fig.tight_layout()
    legend_below(fig, list(handles.values()), list(handles.keys()))
    if nonpositive:
        notes.append("memtypes: medians at or below 0 net cycles have no bar on a log axis: " + ", ".join(nonpositive[:8])
                     + (" ..." if len(nonpositive) > 8 else ""))
    save(fig, out, "memtypes", written)


# ---- the written report --------------------------------------------------------------------------

class Doc:
    """Blocks rendered twice: Markdown and HTML from the same content."""

    def __init__(self):
        self.blocks = []

    def h(self, level, text):
        self.blocks.append(("h", level, text))

    def p(self, text):
        self.blocks.append(("p", text))

    def ul(self, items):
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, head, rows):
        if rows:
            self.blocks.append(("table", head, rows))

    def img(self, name, alt):
        self.blocks.append(("img", name, alt))

    def markdown(self):
        out = []
        cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {i}" for i in b[1]))
            elif b[0] == "table":
                out.append("| " + " | ".join(map(cell, b[1])) + " |")
                out[-1] += "\n|" + "|".join("---" for _ in b[1]) + "|"
                out[-1] += "".join("\n| " + " | ".join(map(cell, row)) + " |" for row in b[2])
            elif b[0] == "img":
                out.append(f"![{b[2]}]({b[1]}.svg)")
        return "\n\n".join(out) + "\n"

    def html(self, title):
        e = html.escape
        out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{e(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.4}"
               "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}td,th{border:1px solid #bbb;padding:2px 6px;"
               "text-align:left}th{background:#eee}td.n{text-align:right}img{max-width:100%;border:1px solid #ddd}"
               "li{margin:0.2em 0}</style></head><body>"]
        num = lambda v: isinstance(v, (int, float)) or (isinstance(v, str) and v[:1].isdigit())
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{e(b[1])}</p>")
            elif b[0] == "ul":
                out.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "table":
                head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
                body = "".join("<tr>" + "".join(f"<td{' class=n' if num(v) else ''}>{e(str(v))}</td>" for v in row) + "</tr>" for row in b[2])
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b[0] == "img":
                out.append(f"<figure><a href=\"{e(b[1])}.svg\"><img src=\"{e(b[1])}.svg\" alt=\"{e(b[2])}\"></a>"
                           f"<figcaption>{e(b[2])}</figcaption></figure>")
        out.append("</body></html>\n")
        return "\n".join(out)


FIGURE_CAPTIONS = {
    "cost_vs_footprint": "Net cost against dirty footprint, per pattern (log-log; shaded: 95% bootstrap interval of the median).",
    "modes_bars": "Coherent vs non-coherent vs native at chosen footprints (median; bars: 95% interval).",
    "distributions": "Every repetition of every cell; red x: flagged outliers (kept).",
    "exit_attribution": "Where KVM's work went in each cell.",
    "ratios": "Ratio of medians to the baseline series with 95% intervals.",
    "memtypes": "Cost per 64-byte line by memory type (WB, WC, UC) for reads, writes and reads after CLFLUSH (median; bars: 95% interval).",
    "neighbour_timeline": "The host neighbour's pointer-chase latency and streaming throughput per slice, with the guest's paced steps shaded; dashed: median over the idle steps.",
    "neighbour_slowdown": "The neighbour's slowdown per guest step against the idle steps (95% interval); filled and starred: significant.",
}


def fingerprint_rows(r):
    rows = []
    for path, doc in zip(r.paths, r.docs):
        ctx = doc.get("context", {})
        fb = ctx.get("flushbench", {})
        host = fb.get("host", {})
        boots = (fb.get("run") or {}).get("boots") or []
        guest = boots[0].get("guest", {}) if boots else {}
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


def caveats(r):
    per_file = {}  # message -> files it applies to, so three files on one host say it once

    def add(name, message):
        per_file.setdefault(message, []).append(name)

    for fi, (path, doc) in enumerate(zip(r.paths, r.docs)):
        name = os.path.basename(path)
        ctx = doc.get("context", {})
        fb = ctx.get("flushbench", {})
        if fb.get("emulated") or any(s.emulated for s in r.series if s.file_index == fi):
            add(name, f"backend {fb.get('backend', '?')} is emulated (QEMU TCG treats WBINVD and CLFLUSH* as no-ops): "
                      "its timings are functional only, not costs.")
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
            add(name, f"CPU frequency scaling was enabled (governor not 'performance'); TSC cycles are unaffected, core speed is not.")
    out = [f"{', '.join(files)}: {message}" for message, files in per_file.items()]
    # Cells, grouped by what went wrong.
    pmu = {}
    failed, notrun = [], {}
    unknown_rate = []
    for g in r.groups.values():
        for c in g.cells:
            st = c.get("status", "?")
            what = f"{g.pattern} {size_label(g.footprint)} on {g.series.label}"
            if st in FAILED:
                tail = (c.get("last_output") or "").strip().splitlines()[-1:] or [""]
                failed.append(f"{what}: {st}" + (f" ({c['reason']})" if c.get("reason") else "") + (f"; last guest output: {tail[0][:120]}" if tail[0] else ""))
            elif st in ("unsupported", "skipped"):
                notrun.setdefault(f"{st}: {c.get('reason') or 'no reason given'}", []).append(what)
            if c.get("tsc") and not c.get("guest_pmu") and c.get("backend") not in ("native", "native-ring0"):
                reason = c.get("guest_pmu_unavailable") or "not reported"
                pmu.setdefault(reason, 0)
                pmu[reason] += 1
            if c.get("tsc") and not c.get("tsc_khz"):
                unknown_rate.append(what)
    for f in failed:
        out.append("cell " + f)
    for why, cells in sorted(notrun.items()):
        out.append(f"{len(cells)} cells {why} ({', '.join(cells[:4])}{' ...' if len(cells) > 4 else ''})")
    for reason, n in sorted(pmu.items()):
        out.append(f"guest PMU counters unavailable in {n} cells: {reason} (cycles, instructions and LLC misses are missing).")
    if unknown_rate:
        out.append(f"{len(unknown_rate)} cells have no TSC rate: their times are TSC cycles only, no ns.")
    for g in r.groups.values():
        if g.has_samples and g.median <= 0:
            out.append(f"{g.pattern} {size_label(g.footprint)} on {g.series.label}: median net cost {g.median:.0f} cycles, at or below the "
                       "measured empty bracket: below what this bracket resolves.")
    out += neighbour_caveats(r)
    if mannwhitneyu is None:
        out.append("scipy is not installed: no Mann-Whitney p-values in this report (apt-get install python3-scipy).")
    return out


def cell_rows(r):
    rows = []
    for p in r.patterns:
        for f in r.footprints(p):
            for s in r.series:
                g = r.group(s, p, f)
                if g is None:
                    continue
                khz = next(iter(s.tsc_khz)) if len(s.tsc_khz) == 1 else None
                n = len(g.net)
                reason = "; ".join(sorted({c.get("reason", "") for c in g.cells if c.get("reason")}))
                if not n:
                    rows.append([p, size_label(f), s.label, g.status + (f" ({reason})" if reason else ""), 0] + ["-"] * 8)
                    continue
                lines = f // int(g.cells[0].get("line_bytes") or 64) if f else 0
                per_line = f"{g.median / lines:.0f}" if lines and g.unit == "per-footprint" else "-"
                ci = f"[{cycles_label(g.ci[0])}, {cycles_label(g.ci[1])}]"
                us = time_label(g.median * 1e6 / khz) if khz else "-"
                mean = float(np.mean(g.net))
                cv = f"{np.std(g.net, ddof=1) / mean:.3f}" if n > 1 and mean != 0 else "-"
                p5, p95 = np.percentile(g.net, [5, 95])
                rows.append([p, size_label(f), s.label, g.status, n, cycles_label(g.median), ci, us, per_line,
                             cycles_label(p5), cycles_label(p95), cv, int(g.outliers.sum())])
    return rows


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
                    c = next((t for t in r.series if t.file_index == s.file_index and t.backend == s.backend and t.mode == "coherent"), None)
                    gc = r.group(c, p, f) if c else None
                    if gc and len(gc.net) >= 2:
                        est, ci = ratio_ci(g.net, gc.net)
                        pv = u_test(g.net, gc.net)
                        ncc.append([p, size_label(f), s.host, s.backend, fmt_ratio(est), fmt_ci(ci), fmt_p(pv)])
                if s.backend.startswith("native"):
                    continue
                for t in r.series:
                    if t.backend.startswith("native") and t.host == s.host:
                        gt = r.group(t, p, f)
                        if gt and len(gt.net) >= 2:
                            est, ci = ratio_ci(g.net, gt.net)
                            d, dci = difference_ci(g.net, gt.net)
                            gn.append([p, size_label(f), s.label, t.label, fmt_ratio(est), fmt_ci(ci), cycles_label(d),
                                       f"[{cycles_label(dci[0])}, {cycles_label(dci[1])}]", fmt_p(u_test(g.net, gt.net))])
    return ncc, gn


def fmt_ratio(x):
    return f"{x:.3f}" if x is not None and math.isfinite(x) else "-"


def fmt_ci(ci):
    return f"[{fmt_ratio(ci[0])}, {fmt_ratio(ci[1])}]" if all(math.isfinite(v) for v in ci) else "-"


def fmt_p(p):
    if p is None:
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def neighbour_caveats(r):
    out = []
    if not r.neighbour:
        return out
    out.append("neighbour: slices are consecutive, not independent: one flush burst can slow several in a row, so the "
               "intervals and p-values are optimistic for bursty effects; they rank the steps, they are not exact error rates.")
    for fi, run in r.neighbour:
        name = f"{os.path.basename(r.paths[fi])} neighbour run {run.get('run', '?')}"
        if neighbour_emulated(r, fi, run):
            out.append(f"{name}: backend {run.get('backend', '?')} is emulated (QEMU TCG): the guest's WBINVD and CLFLUSH are "
                       "no-ops there, so the neighbour sees no flush; the figures show the method, not an effect.")
        if run.get("capped"):
            out.append(f"{name}: capped: the neighbour stopped slicing when too many slices were held; later steps have no slices.")
        windows = run.get("windows") or []
        if windows and not any(w.get("rate") == "idle" for w in windows):
            out.append(f"{name}: no idle step, so no baseline: add idle:MS to --pace.")
        for w in windows:
            eff = w.get("effect") or {}
            late, ops = int(num(w.get("late")) if math.isfinite(num(w.get("late"))) else 0), w.get("ops", "?")
            if late > 0:
                out.append(f"{name}: step {w.get('label', '?')} ({w.get('mode', '?')}): {late} of {ops} operations started late: "
                           "the guest could not keep the asked rate; see the achieved rate.")
            pre = int(num(eff.get("preempted"))) if math.isfinite(num(eff.get("preempted"))) else 0
            if pre > 0:
                out.append(f"{name}: step {w.get('label', '?')}: {pre} of {eff.get('slices', '?')} slices had the neighbour preempted "
                           "by the host scheduler: kept, but their time includes time off the CPU.")
            if eff.get("note") and not isinstance(eff.get("slowdown"), dict):
                out.append(f"{name}: step {w.get('label', '?')} ({w.get('mode', '?')}): {eff['note']}")
        base = idle_medians(run)
        slow = {m: v[0] for m, v in base.items() if math.isfinite(v[0]) and v[0] > 100}
        if slow:
            out.append(f"{name}: the idle pointer chase takes {', '.join(f'{v:.0f} ns ({m})' for m, v in slow.items())} per load, "
                       "typical of memory rather than of a last-level-cache hit (tens of ns): the neighbour's buffer "
                       f"({bytes_iec(run.get('buffer_bytes'))}) is not cache-resident, so a flush has little of it to evict; "
                       "a smaller --neighbour-bytes would show flushes more clearly.")
    # Paced steps that did not finish (or failed) have no window: say which.
    for fi, c in r.paced:
        pace = c.get("pace") or {}
        if c.get("status", "ok") != "ok" or not pace.get("finished", True):
            out.append(f"{os.path.basename(r.paths[fi])}: paced step {pace.get('label', c.get('pattern', '?'))} ({c.get('mode', '?')}) "
                       f"{c.get('status', '?')}{', unfinished' if not pace.get('finished', True) else ''}"
                       + (f" ({c['reason']})" if c.get("reason") else "") + ": not among the neighbour's windows.")
    return out


def neighbour_rows(run):
    rows = []
    for w in sorted(run.get("windows") or [], key=lambda w: num(w.get("start_s"))):
        eff = w.get("effect") or {}
        chase = eff.get("chase_ns") if isinstance(eff.get("chase_ns"), dict) else {}
        ci = chase.get("median_ci") if isinstance(chase.get("median_ci"), dict) else {}
        med = num(chase.get("median"))
        med_txt = "n/a" if not math.isfinite(med) else f"{med:.1f} [{fmt_num(num(ci.get('lo')), '.1f')}, {fmt_num(num(ci.get('hi')), '.1f')}]"
        test = eff.get("chase_test") if isinstance(eff.get("chase_test"), dict) else {}
        p = num(test.get("p"))
        sd = num((eff.get("slowdown") or {}).get("estimate")) if isinstance(eff.get("slowdown"), dict) else math.nan
        if not isinstance(eff.get("slowdown"), dict) or not math.isfinite(sd):
            verdict = "n/a" + (f": {eff['note']}" if eff.get("note") else "")
        elif w.get("rate") == "idle":
            verdict = "idle (drift check): " + ("significant drift" if eff.get("significant") else "no significant drift")
        elif eff.get("significant"):
            verdict = "significant" + (" (faster than idle)" if sd < 1 else "")
        else:
            verdict = "no significant effect"
        verdict = w.get("verdict") or verdict  # flushbench's own, which also weighs the idle steps' drift
        late = int(num(w.get("late"))) if math.isfinite(num(w.get("late"))) else 0
        rows.append([w.get("label", "?"), w.get("mode", "?"), window_rate(w), f"{w.get('ops', 'n/a')}" + (f" ({late} late)" if late else ""),
                     eff.get("slices", "n/a"), med_txt, fmt_interval(eff.get("slowdown")), fmt_interval(eff.get("stream_ratio")),
                     fmt_p(p) if math.isfinite(p) else "n/a", verdict])
    return rows


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
        text = (f"Largest significant slowdown: during {w.get('label', '?')} ({w.get('mode', '?')}, {window_rate(w)}) the neighbour's "
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


def neighbour_section(d, r):
    if not r.neighbour:
        return
    d.h(2, "Neighbour")
    d.p("A host thread pinned to another CPU keeps its buffer cache-resident and probes it in consecutive time slices: half a "
        "slice chasing pointers (ns per dependent load), half streaming (GB/s). Each paced guest step is a window of host time; "
        "its slices are compared with the pooled slices of the idle steps in the same mode. Slowdown = median ns/load ÷ idle "
        "median (above 1: slower); stream ratio = median GB/s ÷ idle median (below 1: slower); p: two-sided Mann-Whitney on "
        f"ns/load; significant: p < 0.05 and the slowdown interval excludes 1. A verdict of \"slower\" also needs the whole interval "
        f"beyond the idle steps' own drift. Intervals: {LEVEL:.0%} bootstrap, from flushbench.")
    for path, doc in zip(r.paths, r.docs):
        wb = ((doc.get("context", {}).get("flushbench", {}).get("regime") or {}).get("wbinvd")) or {}
        if isinstance(wb, dict) and wb:
            d.ul([f"{os.path.basename(path)}: guest WBINVD, coherent: {wb.get('coherent', '?')}",
                  f"non-coherent: {wb.get('noncoherent', '?')}",
                  f"non-coherent mode on that host: {'reachable' if wb.get('noncoherent_reachable') else 'not reachable'} ({wb.get('how', '?')})"])
    for fi, run in r.neighbour:
        d.h(3, run_title(r, fi, run, short=True))
        rows = neighbour_rows(run)
        if rows:
            d.table(["step", "mode", "achieved rate", "ops", "slices", "median ns/load [95% CI]", "slowdown [95% CI]",
                     "stream ratio [95% CI]", "p", "verdict"], rows)
            d.p(neighbour_reading(run))
        else:
            d.p("No paced step finished in this run: nothing to compare.")


def memtype_section(d, r):
    regimes = []
    for path, doc in zip(r.paths, r.docs):
        regime = doc.get("context", {}).get("flushbench", {}).get("regime")
        if regime is None:
            continue
        items = [("memtype", regime["memtype"])] if isinstance(regime, dict) and "memtype" in regime else \
            (regime.items() if isinstance(regime, dict) else [("", regime)])
        for key, v in items:
            if isinstance(v, dict):
                text = str(v.get("expected", "?")) + (f" ({v['reason']})" if v.get("reason") else "")
            else:
                text = str(v)
            regimes.append(f"{os.path.basename(path)}: expected regime{f' ({key})' if key and key != 'memtype' else ''}: {text}")
    groups = memtype_groups(r)
    if not groups and not regimes:
        return
    d.h(2, "Memory types")
    d.p("Each memory-type cell reads or writes (or reads after dirtying and CLFLUSHing) a buffer the guest maps write-back (WB), "
        "write-combining (WC) or uncacheable (UC). Cost per line = median net TSC cycles ÷ (footprint ÷ line size).")
    d.ul(regimes)
    if not groups:
        d.p("No memory-type cells in these results.")
        return
    rows = []
    for s, op, mt, f, g in groups:
        med, lo, hi = per_line(g)
        khz = next(iter(s.tsc_khz)) if len(s.tsc_khz) == 1 else None
        if not g.has_samples:
            reason = "; ".join(sorted({c.get("reason", "") for c in g.cells if c.get("reason")}))
            rows.append([op, mt.upper(), size_label(f), s.label, g.status + (f" ({reason})" if reason else ""), 0, "n/a", "n/a", "n/a"])
            continue
        rows.append([op, mt.upper(), size_label(f), s.label, g.status, len(g.net), fmt_num(med, ".1f"),
                     f"[{fmt_num(lo, '.1f')}, {fmt_num(hi, '.1f')}]", fmt_num(med * 1e6 / khz, ".2f") if khz else "n/a"])
    d.table(["operation", "memory type", "footprint", "series", "status", "n", "cycles/line (median)", "95% CI", "ns/line"], rows)
    ratios, significant = [], []
    for s in r.series:
        for op in MEMTYPE_OPS:
            for f in r.footprints(f"{op}_wb"):
                gwb = r.group(s, f"{op}_wb", f)
                if gwb is None:
                    continue
                row = [op, size_label(f), s.label]
                for mt in ("uc", "wc"):
                    g = r.group(s, f"{op}_{mt}", f)
                    if g is None or len(g.net) < 2 or len(gwb.net) < 2:
                        row += ["n/a", "n/a"]
                        continue
                    est, ci = ratio_ci(g.net, gwb.net)
                    pv = u_test(g.net, gwb.net)
                    row += [f"{fmt_num(est)} {fmt_ci(ci) if fmt_ci(ci) != '-' else '[n/a]'}", fmt_p(pv) if pv is not None else "n/a"]
                    if pv is not None and pv < 0.05 and all(math.isfinite(v) for v in ci) and not ci[0] <= 1 <= ci[1]:
                        significant.append(f"{op} {size_label(f)} {mt.upper()}/WB ×{est:.3g}")
                ratios.append(row)
    if ratios:
        d.p("Ratios of medians to write-back at the same footprint (same operation, same series), with 95% bootstrap intervals "
            "and two-sided Mann-Whitney p.")
        d.table(["operation", "footprint", "series", "UC / WB [95% CI]", "p", "WC / WB [95% CI]", "p"], ratios)
        if significant:
            d.p("Significantly different from write-back (p < 0.05, interval excludes 1): " + ", ".join(significant) + ".")
        else:
            d.p("No memory type differed significantly from write-back in these cells: the mapping's memory type made no "
                "measurable difference here.")


def write_report(r, out, written, notes, ratios):
    d = Doc()
    title = "flushbench report"
    d.h(1, title)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    d.p(f"Generated {now} by scripts/report.py from {', '.join(os.path.basename(p) for p in r.paths)}. "
        "Costs are net TSC cycles per repetition: the measured bracket minus the guest's empty-bracket median. "
        f"Medians carry {LEVEL:.0%} percentile-bootstrap intervals ({RESAMPLES} resamples, fixed seed).")
    d.h(2, "Hosts")
    d.table(["file", "host", "CPU", "microcode", "kernel", "LLC", "KVM flavour", "backend", "emulated", "date", "flushbench"], fingerprint_rows(r))
    cmdlines = [f"{os.path.basename(p)}: {doc.get('context', {}).get('flushbench', {}).get('command_line', '?')}" for p, doc in zip(r.paths, r.docs)]
    d.ul(cmdlines)
    d.h(2, "Guest, per boot")
    d.table(["file", "boot", "entry", "CPU (vendor family/model)", "hypervisor", "features", "TSC kHz", "PMU", "bracket overhead [cycles]", "end"], guest_rows(r))
    d.h(2, "Caveats")
    cav = caveats(r) + notes
    d.ul(cav if cav else ["none"])
    d.h(2, "Figures")
    for name in written:
        d.img(name, FIGURE_CAPTIONS.get(name, name))
    d.h(2, "Cells")
    if not r.groups:
        d.p("No (pattern, footprint) cells in these results" + (": only paced guest steps, which are in the Neighbour section." if r.paced else "."))
    d.table(["pattern", "footprint", "series", "status", "n", "median [cycles]", "95% CI", "median time", "cycles/line",
             "p5", "p95", "CV", "outliers"], cell_rows(r))
    ncc, gn = derived_rows(r)
    if ncc:
        d.h(2, "Non-coherent / coherent")
        d.table(["pattern", "footprint", "host", "backend", "ratio", "95% CI", "p (Mann-Whitney)"], ncc)
    if gn:
        d.h(2, "Guest / native and trap overhead")
        d.p("Trap overhead = median guest cost - median native cost, in TSC cycles.")
        d.table(["pattern", "footprint", "guest", "native", "ratio", "95% CI", "trap overhead", "95% CI", "p (Mann-Whitney)"], gn)
    if ratios:
        d.h(2, "Ratios to the baseline series")
        d.p("Baseline: the same backend and mode in an earlier file, else the same mode in an earlier file, else the first series "
            "with the cell (as `flushbench compare`).")
        d.table(["pattern", "footprint", "series", "baseline", "ratio", "95% CI", "p (Mann-Whitney)", "significant"],
                [[x["pattern"], size_label(x["footprint"]), x["series"].label, x["baseline"].label, fmt_ratio(x["ratio"]), fmt_ci(x["ci"]),
                  fmt_p(x["p"]), "yes" if x["p"] is not None and x["p"] < 0.05 else "no"] for x in ratios])
    memtype_section(d, r)
    neighbour_section(d, r)
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write(d.markdown())
    with open(os.path.join(out, "report.html"), "w", encoding="utf-8") as f:
        f.write(d.html(title))
    return cav


def parse_sizes(text):
    out = []
    for item in text.split(","):
        item = item.strip()
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(item[-1:].upper(), 1)
        digits = item[:-1] if mult > 1 else item
        if not digits.isdigit():
            die(f"bad footprint '{item}' in --footprints: use bytes with an optional K/M/G suffix")
        out.append(int(digits) * mult)
    return out


def main(argv):
    ap = argparse.ArgumentParser(prog=PROG, description="Figures and report.md/report.html from flushbench results files.")
    ap.add_argument("results", nargs="+", help="results files written by `flushbench run` (several: hosts or runs side by side)")
    ap.add_argument("--out", required=True, help="directory for the figures and the report (created)")
    ap.add_argument("--footprints", help="footprints for modes_bars, e.g. 4K,1M (default: smallest, middle and largest measured)")
    args = ap.parse_args(argv)
    r = Results(args.results)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        die(f"cannot create {args.out}: {exc.strerror or exc}")
    if not os.access(args.out, os.W_OK):
        die(f"{args.out} is not writable: choose another --out")
    written, notes = [], []
    ratios = []
    if r.groups:
        fig_cost_vs_footprint(r, args.out, written, notes)
        fig_modes_bars(r, args.out, written, notes, parse_sizes(args.footprints) if args.footprints else None)
        fig_distributions(r, args.out, written, notes)
        fig_exit_attribution(r, args.out, written, notes)
        ratios = ratio_rows(r) if len(r.series) > 1 else []
        fig_ratios(r, args.out, written, notes, ratios)
        fig_memtypes(r, args.out, written, notes)
    else:
        notes.append("cost_vs_footprint, modes_bars, distributions, exit_attribution, ratios, memtypes: no cells"
                     + (f": these results hold only paced guest steps ({len(r.paced)}), which are not (pattern, footprint) cells"
                        if r.paced else "") + "; no figures.")
    if r.paced and r.groups:
        notes.append(f"{len(r.paced)} paced guest steps (cells with a pace object) are not (pattern, footprint) cells: "
                     "left out of the cell figures and tables" + ("; see the Neighbour section." if r.neighbour else
                                                                  "; without a neighbour (--neighbour) nothing compares them."))
    fig_neighbour_timeline(r, args.out, written, notes)
    fig_neighbour_slowdown(r, args.out, written, notes)
    cav = write_report(r, args.out, written, notes, ratios)
    print(f"{PROG}: {len(written)} figures ({', '.join(written)}) and report.md, report.html in {args.out}; {len(cav)} caveats")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
