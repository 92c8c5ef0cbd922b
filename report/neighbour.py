"""Reading a neighbour run (flushbench_neighbour[]): its time slices, the guest's paced steps as
windows of host time, and the idle baseline each step is compared with.

Shared by the neighbour figures and the Neighbour section; the comparisons themselves (slowdown,
intervals, p, verdict) are flushbench's, read from each window's `effect`."""

import math
import os

import numpy as np

from .labels import bytes_iec, num


def slices(run):
    """(start_s, end_s, chase_ns, stream_gbs) as float arrays, null as NaN."""
    sl = run.get("slices") or {}
    cols = [np.array([num(v) for v in (sl.get(k) or [])], dtype=float) for k in ("start_s", "end_s", "chase_ns", "stream_gbs")]
    n = min(len(c) for c in cols)
    return [c[:n] for c in cols]


def within(start, end, w):
    """The slices entirely inside a window, as host/neighbour.cc's slices_within."""
    return (start >= num(w.get("start_s"))) & (end <= num(w.get("end_s")))


def modes(run):
    return sorted({str(w.get("mode", "?")) for w in run.get("windows") or []})


def idle_medians(run):
    """{mode: (median chase ns, median GB/s)} over the pooled slices of the run's idle steps in each
    mode: the baseline every other step of that mode is compared with."""
    start, end, chase, stream = slices(run)
    out = {}
    for mode in modes(run):
        mask = np.zeros(len(start), bool)
        for w in run.get("windows") or []:
            if w.get("rate") == "idle" and str(w.get("mode", "?")) == mode:
                mask |= within(start, end, w)
        c, s = chase[mask], stream[mask]
        c, s = c[np.isfinite(c)], s[np.isfinite(s)]
        if len(c) or len(s):
            out[mode] = (float(np.median(c)) if len(c) else math.nan, float(np.median(s)) if len(s) else math.nan)
    return out


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


def window_label(w):
    label = str(w.get("label", "?"))
    return label + (f" ({window_rate(w)})" if w.get("rate") != "idle" else "")


def emulated(r, fi, run):
    fb = r.docs[fi].get("context", {}).get("flushbench", {})
    backend = str(run.get("backend", ""))
    return backend == "qemu-tcg" or (bool(fb.get("emulated")) and backend == fb.get("backend"))


def title(r, fi, run, short=False):
    """Where the neighbour and the vCPU ran and how it sliced; two lines unless short."""
    ms = modes(run)
    where = f"neighbour on CPU {run.get('cpu', '?')}, guest vCPU on CPU {run.get('vcpu_cpu', '?')}"
    what = (f"{run.get('slice_ms', '?')} ms slices, {bytes_iec(run.get('buffer_bytes'))} buffer, "
            f"{run.get('backend', '?')} backend, {', '.join(ms) or 'no'} mode{'s' if len(ms) > 1 else ''}")
    if emulated(r, fi, run):
        what += " [emulated]"
    if run.get("capped"):
        what += " [capped]"
    name = f"{os.path.basename(r.paths[fi])} run {run.get('run', '?')}: " if len(r.paths) > 1 or len(r.neighbour) > 1 else ""
    return f"{name}{where}" + (", " if short else "\n") + what
