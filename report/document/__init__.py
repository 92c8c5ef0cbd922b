"""report.md and report.html: where the results came from (hosts, guest boots, command lines), every
caveat, the figures, and the tables behind them, from one Doc rendered twice."""

import datetime
import os

from .. import stats
from ..figures import FIGURES
from ..labels import size_label
from .caveats import caveats
from .markup import Doc
from .sections import memtype_section, mode_evidence_section, neighbour_section, timing_section
from .tables import cell_rows, derived_rows, fingerprint_rows, guest_rows, ratio_cells

TITLE = "flushbench report"


def write_report(r, out, written, notes, ratios):
    """Writes both files into out; returns the caveats it listed."""
    d = Doc()
    d.h(1, TITLE)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    d.p(f"Generated {now} by flushbench report from {', '.join(os.path.basename(p) for p in r.paths)}. "
        "Costs are net TSC cycles per repetition as each cell's estimator gives them: (T(2k) - T(k)) / k for batch cells, the "
        "pattern's bracket minus its reference bracket for paired cells; for paced steps and files written before schema 5, the "
        "bracket minus the guest's empty-bracket median. A median within the run's timing floor (or half its own interval) of zero "
        "cannot be told from zero on that host: it reads \"below floor (±X cycles)\", never as a number. "
        f"Medians carry {stats.LEVEL:.0%} percentile-bootstrap intervals ({stats.RESAMPLES} resamples, fixed seed).")
    cav = caveats(r) + notes
    timing_section(d, r)
    d.h(2, "Hosts")
    d.table(["file", "host", "CPU", "microcode", "kernel", "LLC", "KVM flavour", "backend", "emulated", "date", "flushbench"], fingerprint_rows(r))
    d.ul([f"{os.path.basename(p)}: {doc.get('context', {}).get('flushbench', {}).get('command_line', '?')}" for p, doc in zip(r.paths, r.docs)])
    d.h(2, "Guest, per boot")
    d.table(["file", "boot", "entry", "CPU (vendor family/model)", "hypervisor", "features", "TSC kHz", "PMU", "bracket overhead [cycles]", "end"], guest_rows(r))
    mode_evidence_section(d, r)
    d.h(2, "Caveats")
    d.ul(cav if cav else ["none"])
    d.h(2, "Figures")
    for name in written:
        d.img(name, FIGURES[name][1])
    cells_section(d, r)
    if ratios:
        d.h(2, "Ratios to the baseline series")
        d.p("Baseline: the same backend and mode in an earlier file, else the same mode in an earlier file, else the first series "
            "with the cell (as `flushbench compare`).")
        d.table(["pattern", "footprint", "series", "baseline", "ratio", "95% CI", "p (Mann-Whitney)", "significant"],
                [[x["pattern"], size_label(x["footprint"]), x["series"].label, x["baseline"].label,
                  *ratio_cells(x["ratio"], x["ci"], x["p"], x["below_floor"]),
                  "-" if x["below_floor"] else "yes" if x["p"] is not None and x["p"] < 0.05 else "no"] for x in ratios])
    memtype_section(d, r)
    neighbour_section(d, r)
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write(d.markdown())
    with open(os.path.join(out, "report.html"), "w", encoding="utf-8") as f:
        f.write(d.html(TITLE))
    return cav


def cells_section(d, r):
    """The cell table, then the derived comparisons when the results have both sides."""
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
