"""Numbers as the report writes them: sizes, cycles, times, intervals and p-values.

Shared by figures and document so that a value reads the same on an axis and in a table."""

import math


def num(v):
    """A JSON number as float; null (NaN in the C++), missing or junk as NaN: never 0."""
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def size_label(b):
    b = int(b)
    if b == 0:
        return "0"
    for shift, suffix in ((30, "G"), (20, "M"), (10, "K")):
        if b >= (1 << shift) and b % (1 << shift) == 0:
            return f"{b >> shift}{suffix}"
    return str(b)


def bytes_iec(b):
    b = int(b or 0)
    for shift, suffix in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if b >= (1 << shift):
            return f"{b / (1 << shift):.3g} {suffix}"
    return f"{b} B"


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
    for limit, scale, suffix in ((1e9, 1e9, "s"), (1e6, 1e6, "ms"), (1e3, 1e3, "µs")):
        if abs(ns) >= limit:
            return f"{ns / scale:.3g} {suffix}"
    return f"{ns:.3g} ns"


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


def fmt_ratio(x):
    return f"{x:.3f}" if x is not None and math.isfinite(x) else "-"


def fmt_ci(ci):
    return f"[{fmt_ratio(ci[0])}, {fmt_ratio(ci[1])}]" if all(math.isfinite(v) for v in ci) else "-"


def fmt_p(p):
    if p is None:
        return "-"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"
