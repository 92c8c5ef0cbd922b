"""What every figure shares: the look (rcParams, series colours), axes helpers, and save(), which
writes a figure as SVG and PNG from one layout pass.

Matplotlib runs headless (Agg): figures are files, there is no display on a build machine."""

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from ..labels import cycles_label, size_label  # noqa: E402
from ..timing import bound_text  # noqa: E402

PAD_INCHES = 0.1

plt.rcParams.update({
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 9,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.dpi": 100, "savefig.dpi": 150,
    "axes.grid": True, "grid.alpha": 0.3, "svg.fonttype": "none",
    # Titles just above the axes (plus axes.titlepad). Left to matplotlib (None), every draw of
    # every panel measures its y tick labels to see whether the title must move up: no axis here
    # has ticks or labels on top, and that measuring was a third of saving a many-panel figure.
    "axes.titley": 1.0,
})

MODE_STYLE = {"coherent": "-", "noncoherent": "--", "native": ":", "both": "-."}

# A cost below the timing floor is never a point on a cost axis: a hollow downward triangle at the
# floor level (the bound "below floor (±X cycles)" prints), which says "somewhere under here".
BELOW_FLOOR = dict(marker="v", ms=7, mfc="white", mew=1.4, ls="none")
BELOW_FLOOR_LABEL = "below floor: drawn at the floor (±X cycles), not a cost"


def color(series):
    return plt.get_cmap("tab10")(series.index % 10)


def line_style(series):
    """The mode's line style; a mode with a placement or mask ("noncoherent+mask2") takes its base mode's."""
    return MODE_STYLE.get(series.mode.split("+")[0], "-")


def below_floor_handle():
    return Line2D([], [], color="black", **BELOW_FLOOR)


def below_floor_mark(ax, x, g, color_):
    """A group below the timing floor at x: the marker at its bound, or, without a positive bound,
    the words at the bottom of the panel. Returns the y drawn at (for the axis limits), or None."""
    if math.isfinite(g.resolution) and g.resolution > 0:
        ax.plot(x, g.resolution, color=color_, zorder=4, **BELOW_FLOOR)
        ax.annotate(f"below floor\n({bound_text(g.resolution)})", (x, g.resolution), xytext=(0, -7), textcoords="offset points",
                    ha="center", va="top", fontsize=6, color=color_)
        return g.resolution
    status_mark(ax, x, "below floor", color_)
    return None


def save(fig, out, name):
    """NAME.svg and NAME.png in out.

    The layout engine (tight or constrained) keeps every artist inside the figure; only the legends
    hang below it. So the crop is the figure plus its legends, known without measuring every tick
    label again as savefig's bbox_inches="tight" would, once per file: that measuring costs as much
    as drawing the figure."""
    if fig.get_layout_engine() is not None:
        fig.draw_without_rendering()  # constrained layout places the axes now...
        fig.set_layout_engine(None)  # ...and not again in each savefig
    renderer = fig.canvas.get_renderer()
    legends = [legend.get_window_extent(renderer).transformed(fig.dpi_scale_trans.inverted()).padded(PAD_INCHES)
               for legend in fig.legends]
    crop = Bbox.union([fig.bbox_inches] + legends)
    for ext in ("svg", "png"):
        fig.savefig(os.path.join(out, f"{name}.{ext}"), bbox_inches=crop)
    plt.close(fig)


def below_title(fig, lines=1):
    """tight_layout's rect that leaves the suptitle its own room: tight_layout lays out the axes
    only, and the panels' titles would otherwise run into it."""
    return (0, 0, 1, 1 - (0.06 + 0.18 * lines) / fig.get_figheight())


def panel_layout(fig, left, right, top, bottom, wgap, hgap):
    """Places a grid of panels by margins and gaps in inches (subplots_adjust) instead of
    tight_layout. The figures of many panels know what surrounds each panel (tick labels at one
    font size, a label, a title of one or two lines, a µs axis on the right), and tight_layout's
    measuring of every tick label of every panel, twice, was a third of drawing them. top leaves
    the suptitle its room; the legends hang below the figure (save() takes them in)."""
    w, h = fig.get_size_inches()
    if fig._suptitle is not None:  # its top 0.12 in below the figure's, whatever the figure's height
        fig._suptitle.set(y=1 - 0.12 / h, va="top")
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h, wspace=0, hspace=0)
    gs = fig.axes[0].get_subplotspec().get_gridspec() if fig.axes else None
    if gs is None:
        return
    rows, cols = gs.get_geometry()
    panel_w = (w - left - right - wgap * (cols - 1)) / cols
    panel_h = (h - top - bottom - hgap * (rows - 1)) / rows
    fig.subplots_adjust(wspace=wgap / panel_w, hspace=hgap / panel_h)


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


def log_y(ax, values):
    """A log y axis with explicit limits, whole decades: bars start at 0, which would make matplotlib
    tick down to 1e-300, and a range inside one decade would get a single labelled tick. Minor ticks
    at 2 and 5: over the many decades a panel spans, 2 to 9 would be a band, and ticks are most of
    the time matplotlib spends laying a figure out."""
    ax.set_yscale("log")
    v = [x for x in values if x is not None and math.isfinite(x) and x > 0]
    if v:
        ax.set_ylim(10 ** math.floor(math.log10(min(v) / 1.5)), 10 ** math.ceil(math.log10(max(v) * 1.5)))
    ax.yaxis.set_minor_locator(ticker.LogLocator(base=10, subs=(2, 5)))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: plain_label(v)))


def plain_label(v):
    """"10k", "1M", "0.01": as the tables write numbers, and without mathtext, whose parsing of
    every "10^{n}" label is a good part of drawing a figure of many panels."""
    return cycles_label(v) if v >= 1 else f"{v:g}"


def time_axis(ax, khz):
    """A right-hand axis in µs from the vCPU's TSC rate, so a reader gets time as well as cycles."""
    if not khz:
        return
    per_us = khz / 1e3
    sec = ax.secondary_yaxis("right", functions=(lambda c: np.asarray(c, dtype=float) / per_us,
                                                 lambda us: np.asarray(us, dtype=float) * per_us))
    sec.set_ylabel(f"µs (TSC {khz / 1e6:.2f} GHz)", fontsize=8)
    sec.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: plain_label(v)))
    no_minor_ticks(sec)


def no_minor_ticks(secondary):
    """A secondary axis restates the left one in other units: its labelled ticks are what a reader
    uses. Minor ticks there would double the figure's tick count, and ticks are most of the time
    matplotlib spends laying a figure out."""
    secondary.yaxis.set_minor_locator(ticker.NullLocator())


def ticks_125(axis, label=lambda v: f"{v:g}"):
    """1, 2, 5 per decade, labelled: a log axis spanning less than a decade otherwise gets one label."""
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 5)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: label(v)))
    axis.set_minor_formatter(ticker.NullFormatter())


def empty_panel(ax, title, text):
    ax.set_title(title, fontsize=9)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="dimgrey", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def status_mark(ax, x, text, color_):
    """Why a cell has no point or bar (its status, or "≤0"), upright at the bottom of the panel."""
    ax.annotate(text, (x, 0), xycoords=("data", "axes fraction"), xytext=(0, 3), textcoords="offset points",
                ha="center", va="bottom", fontsize=7, rotation=90, color=color_)


def no_samples_text(r, p, fps):
    """One line per (status, reason): a panel has room for a few lines, not one per cell."""
    groups = {}
    for s in r.series:
        for f in fps:
            g = r.group(s, p, f)
            if g and not g.has_samples:
                fp_set, series = groups.setdefault((g.status, g.reasons()), (set(), set()))
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


def legend_below(fig, handles, labels, ncol=3, **kw):
    # Outside the axes, below the figure: the crop in save() takes it in.
    fig.legend(handles, labels, loc="upper center", ncol=min(ncol, len(labels)), frameon=False,
               bbox_to_anchor=(0.5, 0.0), **kw)
