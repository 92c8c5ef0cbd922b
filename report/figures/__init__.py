"""The figures, each written as NAME.svg and NAME.png, drawn in parallel processes.

A figure is a function (job, notes) -> matplotlib Figure, or None when the results hold nothing for
it; either way it appends to notes what a reader should know (what was left out and why). Drawing
is most of a report's time and the figures are independent, so render() draws them in forked
worker processes, one figure each."""

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from . import cells, kvm, masks, memtypes, neighbour, ratios, style

# name: (function, caption in the report). Drawn only when the results hold cells:
CELL_FIGURES = {
    "cost_vs_footprint": (cells.cost_vs_footprint, "Net cost against dirty footprint, per pattern (log-log; shaded: 95% bootstrap interval of the median)."),
    "modes_bars": (cells.modes_bars, "Coherent vs non-coherent vs native at chosen footprints (median; bars: 95% interval)."),
    "distributions": (cells.distributions, "Every repetition of every cell; red x: flagged outliers (kept)."),
    "exit_attribution": (kvm.exit_attribution, "Where KVM's work went in each cell."),
    "ratios": (ratios.ratios, "Ratio of medians to the baseline series with 95% intervals."),
    "memtypes": (memtypes.memtypes, "Cost per 64-byte line by memory type, one panel per operation of the pattern table's memory-type group (median; bars: 95% interval)."),
}
# ...when the results hold dirty-mask cells (`run --dirty-mask`, modes like "noncoherent+mask2"):
MASK_FIGURES = {
    "dirty_mask": (masks.dirty_mask, "Whole-cache flush cost against the dirty-mask width (pCPUs KVM flushes per WBINVD), one line per mode and footprint, with the kernel's flushes per WBINVD (median; whiskers: 95% interval)."),
}
# ...and whenever there is a neighbour run:
NEIGHBOUR_FIGURES = {
    "neighbour_timeline": (neighbour.timeline, "The host neighbour's pointer-chase latency and streaming throughput per slice, with the guest's paced steps shaded; dashed: median over the idle steps."),
    "neighbour_slowdown": (neighbour.slowdown, "The neighbour's slowdown per guest step against the idle steps (95% interval); filled and starred: significant."),
}
FIGURES = {**CELL_FIGURES, **MASK_FIGURES, **NEIGHBOUR_FIGURES}


@dataclass
class Job:
    """What the figures draw from: the results, the output directory, modes_bars' footprints (None:
    chosen from the results) and the ratio rows (analysis.ratio_rows) that ratios draws."""

    results: object
    out: str
    footprints: list
    ratios: list


_job = None  # the job, in a worker process


def _adopt(job):
    global _job
    _job = job


def _draw(name):
    """In a worker: draw and save one figure; (drawn, notes)."""
    notes = []
    fig = FIGURES[name][0](_job, notes)
    if fig is not None:
        style.save(fig, _job.out, name)
    return fig is not None, notes


def render(job, names):
    """Draws the named figures; [(name, written, notes)] in the order of names.

    Workers are forked, so they share the loaded results instead of receiving a copy."""
    workers = max(1, min(len(names), os.cpu_count() or 1))
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_adopt,
                             initargs=(job,)) as pool:
        futures = [pool.submit(_draw, name) for name in names]
        return [(name, *future.result()) for name, future in zip(names, futures)]
