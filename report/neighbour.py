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


def preempted_mask(run):
    """Per slice (as slices() returns them): True where the neighbour lost its CPU during the slice.
    Since rounds, flushbench leaves those out of every comparison; before, it kept them."""
    n = len(slices(run)[0])
    pre = (run.get("slices") or {}).get("preemptions") or []
    mask = np.array([num(v) > 0 for v in pre[:n]], dtype=bool)
    return np.concatenate([mask, np.zeros(n - len(mask), bool)])


def compared(run):
    """The slices flushbench compares: all of them before rounds, the unpreempted ones since."""
    n = len(slices(run)[0])
    return ~preempted_mask(run) if rounds_format(run) else np.ones(n, bool)


def window_chase(run, w):
    """(slices, median ns/load) of a window's compared slices: what an idle window, which carries
    no effect of its own since rounds, was as a baseline."""
    start, end, chase, _ = slices(run)
    c = chase[within(start, end, w) & compared(run)]
    c = c[np.isfinite(c)]
    return len(c), (float(np.median(c)) if len(c) else math.nan)


def within(start, end, w):
    """The slices entirely inside a window, as host/neighbour.cc's slices_within."""
    return (start >= num(w.get("start_s"))) & (end <= num(w.get("end_s")))


def modes(run):
    return sorted({str(w.get("mode", "?")) for w in run.get("windows") or []})


def idle_medians(run):
    """{mode: (median chase ns, median GB/s)} over the pooled slices of the run's idle steps in each
    mode: the baseline every other step of that mode is compared with."""
    start, end, chase, stream = slices(run)
    keep = compared(run)
    out = {}
    for mode in modes(run):
        mask = np.zeros(len(start), bool)
        for w in run.get("windows") or []:
            if w.get("rate") == "idle" and str(w.get("mode", "?")) == mode:
                mask |= within(start, end, w)
        mask &= keep
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


def run_number(run):
    """The run as flushbench prints it, counted from 1 (the file counts from 0)."""
    n = num(run.get("run"))
    return str(int(n) + 1) if math.isfinite(n) else "?"


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
    name = f"{os.path.basename(r.paths[fi])} run {run_number(run)}: " if len(r.paths) > 1 or len(r.neighbour) > 1 else ""
    return f"{name}{where}" + (", " if short else "\n") + what


# Steps and rounds. Since schema 5 the guest runs its paced steps in shuffled rounds with an idle
# step on either side of every active one: a window is one step in one round ("wbinvd@max:r2",
# "idle:r2.4"), compared with the idle windows beside it (compared_with, idle_drift), and each run
# lists its steps with their rounds and a verdict from the rounds together (steps[]). Files from
# before have one window per step, compared with the pooled idle steps: each is read here as a
# step of one round, so the report reads both the same way.

def rounds_format(run):
    """True for a run written with rounds (windows with a step, or a steps list)."""
    return isinstance(run.get("steps"), list) or any("step" in w for w in run.get("windows") or [])


def in_rounds(run):
    """True when the steps ran in rounds (pace_rounds > 0): a window's round is 0 or more; -1 (or
    none) when the steps ran once, as listed."""
    return any(isinstance(w.get("round"), int) and w["round"] >= 0 for w in run.get("windows") or [])


def step_name(w):
    """The step a window belongs to: "wbinvd@max" for "wbinvd@max:r2", "idle" for "idle:r2.4"."""
    if w.get("step"):
        return str(w["step"])
    if w.get("rate") == "idle":
        return "idle"
    return str(w.get("label", "?"))


def interval(v):
    """An {estimate, lo, hi} object as floats (NaN where absent)."""
    v = v if isinstance(v, dict) else {}
    return num(v.get("estimate")), num(v.get("lo")), num(v.get("hi"))


def _round_of(w, recorded=None):
    eff = w.get("effect") or {}
    rec = recorded or {}
    return {"round": w.get("round", rec.get("round")), "label": str(w.get("label", rec.get("label", "?"))),
            "slowdown": rec.get("slowdown") if isinstance(rec.get("slowdown"), dict) else eff.get("slowdown"),
            "stream_ratio": eff.get("stream_ratio"), "idle_drift": num(rec.get("idle_drift", w.get("idle_drift"))),
            "call": str(rec.get("call") or w.get("verdict") or ""), "significant": bool(eff.get("significant")),
            "window": w}


def _summary(rounds):
    est = [interval(x["slowdown"])[0] for x in rounds]
    est = [e for e in est if math.isfinite(e)]
    if not est:
        return None
    return {"median": float(np.median(est)), "min": min(est), "max": max(est)}


def steps(run, pattern_key=lambda p: (0, p)):
    """[{step, mode, pattern, rate, idle, rounds: [{round, label, slowdown, stream_ratio, idle_drift,
    call, significant, window}], slowdown: {median, min, max} or None, verdict}] in mode order (as
    the run went), then idle, then pattern-table order and rising rate."""
    windows = sorted(run.get("windows") or [], key=lambda w: num(w.get("start_s")))
    by_label = {str(w.get("label")): w for w in windows}
    mode_order = list(dict.fromkeys(str(w.get("mode", "?")) for w in windows))
    out = {}
    recorded = run.get("steps") if isinstance(run.get("steps"), list) else None
    for st in recorded or []:
        if not isinstance(st, dict):
            continue
        rounds = [_round_of(by_label.get(str(x.get("label")), {}), x) for x in st.get("rounds") or [] if isinstance(x, dict)]
        first = rounds[0]["window"] if rounds else {}
        out[(str(st.get("mode", "?")), str(st.get("step", "?")))] = {
            "step": str(st.get("step", "?")), "mode": str(st.get("mode", "?")), "pattern": str(first.get("pattern", "?")),
            "rate": str(first.get("rate", "?")), "idle": False, "rounds": rounds,
            "slowdown": st.get("slowdown") if isinstance(st.get("slowdown"), dict) else _summary(rounds),
            "verdict": str(st.get("verdict") or "")}
    for w in windows:
        key = (str(w.get("mode", "?")), step_name(w))
        idle = w.get("rate") == "idle"
        if recorded is not None and not idle:
            continue  # flushbench's own steps (above); a window not in them has no comparison
        st = out.setdefault(key, {"step": key[1], "mode": key[0], "pattern": str(w.get("pattern", "?")), "rate": str(w.get("rate", "?")),
                                  "idle": idle, "rounds": [], "slowdown": None, "verdict": ""})
        st["rounds"].append(_round_of(w))
    for st in out.values():
        if st["idle"]:
            st["verdict"] = idle_verdict(run, st)
        elif recorded is None:  # one window, one round: its own verdict
            st["slowdown"] = _summary(st["rounds"])
            st["verdict"] = st["rounds"][0]["call"] or old_verdict(st["rounds"][0]["window"])
    return sorted(out.values(), key=lambda s: (mode_order.index(s["mode"]) if s["mode"] in mode_order else len(mode_order),
                                               not s["idle"], pattern_key(s["pattern"]), rate_key(s["rate"]), s["step"]))


def old_verdict(w):
    """A verdict for a window written without one (before flushbench weighed the idle drift)."""
    eff = w.get("effect") or {}
    sd = interval(eff.get("slowdown"))[0]
    if not math.isfinite(sd):
        return "n/a" + (f": {eff['note']}" if eff.get("note") else "")
    if eff.get("significant"):
        return "significant" + (" (faster than idle)" if sd < 1 else "")
    return "no significant effect"


def idle_verdict(run, st):
    """The idle step's row: the baseline, and how far apart the idle windows beside each step were
    (drift), which an effect must exceed."""
    mode = st["mode"]
    # Only rounds that were compared: flushbench writes a drift of 0 where it had no idle slices to measure one.
    drifts = [num(w.get("idle_drift")) for w in run.get("windows") or []
              if str(w.get("mode", "?")) == mode and w.get("rate") != "idle" and "compared_with" in w
              and math.isfinite(interval((w.get("effect") or {}).get("slowdown"))[0])]
    drifts = [d for d in drifts if math.isfinite(d)]
    if drifts:
        return (f"baseline (idle): the idle windows beside a step differ by {np.median(drifts) * 100:.1f}% (median), "
                f"at most {max(drifts) * 100:.1f}%")
    w = st["rounds"][0]["window"] if st["rounds"] else {}
    eff = w.get("effect") or {}
    drift = num(w.get("idle_drift"))
    text = "baseline (idle)" + (f": the idle steps differ by up to {drift * 100:.1f}%" if math.isfinite(drift) else "")
    if isinstance(eff.get("slowdown"), dict):  # before rounds: each idle step against the pooled idle slices
        text += "; drift check: " + ("significant drift" if eff.get("significant") else "no significant drift")
    return text


def verdict_direction(verdict):
    """"slower" or "faster" when a step's verdict reports an effect every round agrees on (or, for
    a file from before rounds, a significant one), else None."""
    v = str(verdict)
    for d in ("slower", "faster"):
        if v.startswith(f"{d}, in every round") or v.startswith(f"{d}, beyond idle drift"):
            return d
    if v == "significant":
        return "slower"
    if v == "significant (faster than idle)":
        return "faster"
    return None


def preempted(run):
    """[(window label, preempted slices left out, slices)] where the neighbour lost its CPU."""
    out = []
    for w in run.get("windows") or []:
        eff = w.get("effect") or {}
        n = num(next((v for v in (w.get("preempted_slices"), eff.get("preempted_slices"), eff.get("preempted")) if v is not None), None))
        if math.isfinite(n) and n > 0:
            out.append((str(w.get("label", "?")), int(n), eff.get("slices", "?")))
    return out
