"""Whether the timings can be trusted, as flushbench says it: each repetition's net cost from its
estimator, the timing floor below which a cost cannot be told from zero, and each run's self-check
and emulation verdict (context.flushbench.run.timing, host/timing_check.h).

- net cost: schema 5 cells carry `measure` {method, k, ref}: a repetition costs (tsc - ref) / k,
  signed (it may be below zero). Older cells, and paced steps, subtract the guest's empty-bracket
  median (`tsc_overhead`). host/statistics.h net_cycles.
- below floor: a median at most max(floor, half its own 95% interval) is shown as
  "below floor (±X cycles)", never as a number (host/statistics.h read_cost); so is any median at
  or below zero. Files written before the floor use the cell's own interval alone."""

import math
from dataclasses import dataclass

from .errors import ReportError
from .labels import num

METHODS = ("batch", "paired")


def net_cycles(cell, where):
    """The cell's per-repetition costs in TSC cycles; where names the cell in an error."""
    tsc = [float(t) for t in cell.get("tsc") or []]
    m = cell.get("measure")
    if m is None:
        overhead = float(cell.get("tsc_overhead", 0) or 0)
        return [t - overhead for t in tsc]
    try:
        method, k, ref = m["method"], int(m.get("k", 1)), [float(x) for x in m.get("ref") or []]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ReportError(f"{where}: malformed measure ({exc!r}): a damaged results file") from None
    if method not in METHODS or k < 1 or len(ref) != len(tsc):
        raise ReportError(f"{where}: malformed measure (method {method!r}, k {k}, {len(ref)} references for {len(tsc)} "
                          "repetitions): a damaged results file")
    return [(t - r) / k for t, r in zip(tsc, ref)]


@dataclass
class Reading:
    """A median as the report may show it: below_floor, and the bound that "±X cycles" prints."""

    below_floor: bool
    bound: float


def read_cost(median, ci, floor=math.nan):
    """host/statistics.h read_cost: below floor when median <= max(floor, half the interval's
    width); a median at or below zero always is (its bound at least |median|: a cost is never
    negative, so the method erred by that much)."""
    if not math.isfinite(median):
        return Reading(False, math.nan)
    half = (ci[1] - ci[0]) / 2 if all(math.isfinite(v) for v in ci) else math.nan
    bounds = [b for b in (floor, half) if math.isfinite(b)]
    if median <= 0 and not bounds:
        bounds = [abs(median)]
    bound = max(bounds) if bounds else math.nan
    return Reading(median <= 0 or (math.isfinite(bound) and median <= bound), bound)


def recorded_reading(cell):
    """The cell's own stats.below_floor and resolution_cycles (schema 5), or None."""
    st = cell.get("stats")
    if not isinstance(st, dict) or "below_floor" not in st:
        return None
    return Reading(bool(st["below_floor"]) or num(st.get("median")) <= 0, num(st.get("resolution_cycles")))


def bound_text(bound, per=""):
    """"±12 cycles", with as many decimals as a small bound needs (statistics.h cost_text)."""
    if not math.isfinite(bound):
        return "±? cycles" + per
    decimals = 0 if bound >= 10 else 1 if bound >= 1 else (1 - math.floor(math.log10(bound)) if bound > 0 else 1)
    return f"±{bound:.{decimals}f} cycles{per}"


def below_floor_text(bound, per=""):
    return f"below floor ({bound_text(bound, per)})"


def floor_of(cells):
    """The widest timing floor of these cells (each carries its boot's), NaN without one."""
    floors = [num(c.get("floor_cycles")) for c in cells]
    floors = [f for f in floors if math.isfinite(f)]
    return max(floors) if floors else math.nan


def entries(doc):
    """context.flushbench.run.timing of one file: a list (empty before schema 5)."""
    t = ((doc.get("context", {}).get("flushbench", {}).get("run")) or {}).get("timing")
    return [e for e in t if isinstance(e, dict)] if isinstance(t, list) else []


def unchecked(doc):
    """Why a file with measured cells has no run.timing: a sentence, or None when it has one (or
    measured nothing a check could be about)."""
    if entries(doc) or not any(isinstance(c, dict) and c.get("tsc") and not isinstance(c.get("pace"), dict)
                               for c in doc.get("flushbench_cells") or []):
        return None
    run = (doc.get("context", {}).get("flushbench", {}).get("run")) or {}
    if "timing" in run:
        return "no timing floor or self-check recorded for its runs"
    return "no timing floor or self-check (written before schema 5)"


def who(e):
    return f"run {int(num(e.get('run'))) + 1 if math.isfinite(num(e.get('run'))) else '?'} ({e.get('backend', '?')})"


def floor_text(e):
    f = num(e.get("floor_cycles"))
    return bound_text(f) if math.isfinite(f) else "unavailable"


def facts(e):
    """[(kind, text, cells)]: what must be said before any number of this run, in the order
    flushbench prints it (host/timing_check.cc timing_warnings): TCG, a failed self-check, emulated
    instructions; without the run's name, which file_warnings adds once for every run a fact holds
    for. cells: the emulated cells, for EMULATED INSTRUCTIONS."""
    out = []
    if e.get("emulated_by_tcg"):
        out.append(("EMULATED (TCG)", "TCG treats WBINVD and CLFLUSH* as no-ops; timings are functional only.", []))
    if e.get("check") == "failed":
        problems = [str(p) for p in e.get("problems") or []] or ["no reason recorded"]
        out += [("TIMING CHECK FAILED", p, []) for p in problems]
    em = e.get("emulation") if isinstance(e.get("emulation"), dict) else {}
    if em.get("detected"):
        cells = [c for c in em.get("cells") or [] if isinstance(c, dict)]
        out.append(("EMULATED INSTRUCTIONS", emulation_text(cells), cells))
    return out


def emulation_text(cells):
    first = cells[0] if cells else {}
    return ("this KVM emulates guest instructions that never exit on VMX/SVM "
            + (f"({first.get('cell', '?')}: {first.get('kvm_emulate_insn', '?')} kvm_emulate_insn for "
               f"{first.get('expected_exits', '?')} expected exits; {len(cells)} cells)" if first else "")
            + ": costs include KVM's emulator, the TSC bracket and all.")


KINDS = ("EMULATED (TCG)", "TIMING CHECK FAILED", "EMULATED INSTRUCTIONS")


def file_warnings(doc):
    """One file's warnings, one line per fact: a warning several runs share names them together
    ("runs 1, 2, 3 (kvm)") instead of being repeated per run; emulated instructions are one fact
    of the host's KVM however many runs saw them, counted over all their cells. In flushbench's
    order: TCG, failed self-checks, emulated instructions."""
    runs = {}  # (kind, text) -> [entries]
    emulated, cells = [], []
    for e in entries(doc):
        for kind, text, em_cells in facts(e):
            if kind == "EMULATED INSTRUCTIONS":
                emulated.append(e)
                cells += em_cells
            else:
                runs.setdefault((kind, text), []).append(e)
    if emulated:
        runs[("EMULATED INSTRUCTIONS", emulation_text(cells))] = emulated
    return [f"{kind}, {who_all(es)}: {text}" for (kind, text), es in sorted(runs.items(), key=lambda kv: KINDS.index(kv[0][0]))]


def who_all(es):
    """"run 2 (kvm)", "runs 1, 2, 3 (kvm)", or "run 1 (kvm), run 2 (qemu-tcg)" when backends differ."""
    if len(es) == 1:
        return who(es[0])
    backends = {e.get("backend", "?") for e in es}
    if len(backends) > 1:
        return ", ".join(who(e) for e in es)
    numbers = [who(e).split(" ", 2)[1] for e in es]
    return f"runs {', '.join(numbers)} ({backends.pop()})"
