"""The command line: `flushbench report` runs this (same arguments, one-line errors, exit status 2
for bad input or a missing dependency, 0 otherwise).

    /usr/bin/python3 -P -m report RESULTS.json [MORE.json ...] --out DIR [--footprints 4K,1M]

FLUSHBENCH_BIN names the flushbench binary whose pattern table stands in for files written before
results carried one (`flushbench report` sets it)."""

import argparse
import importlib
import os
import sys

PROG = "flushbench report"


def fail(message):
    print(f"{PROG}: {message}", file=sys.stderr)
    sys.exit(2)


for dependency in ("numpy", "scipy.stats", "matplotlib"):
    try:
        importlib.import_module(dependency)
    except ImportError as exc:  # one line, with the fix
        fail(f"needs numpy, scipy and matplotlib ({exc}): apt-get install python3-matplotlib python3-scipy")

from . import analysis, figures, model  # noqa: E402
from .document import write_report  # noqa: E402
from .errors import ReportError  # noqa: E402


def parse_sizes(text):
    out = []
    for item in text.split(","):
        item = item.strip()
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(item[-1:].upper(), 1)
        digits = item[:-1] if mult > 1 else item
        if not digits.isdigit():
            raise ReportError(f"bad footprint '{item}' in --footprints: use bytes with an optional K/M/G suffix")
        out.append(int(digits) * mult)
    return out


def output_dir(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {path}: {exc.strerror or exc}") from None
    if not os.access(path, os.W_OK):
        raise ReportError(f"{path} is not writable: choose another --out")


def paced_note(r):
    return (f"{len(r.paced)} paced guest steps (cells with a pace object) are not (pattern, footprint) cells: "
            "left out of the cell figures and tables" + ("; see the Neighbour section." if r.neighbour else
                                                         "; without a neighbour (--neighbour) nothing compares them."))


def no_cells_note(r):
    return (", ".join(figures.CELL_FIGURES) + ": no cells"
            + (f": these results hold only paced guest steps ({len(r.paced)}), which are not (pattern, footprint) cells"
               if r.paced else "") + "; no figures.")


def run(args):
    r = model.read(args.results, os.environ.get("FLUSHBENCH_BIN"))
    footprints = parse_sizes(args.footprints) if args.footprints else None
    output_dir(args.out)
    ratios = analysis.ratio_rows(r) if r.groups and len(r.series) > 1 else []
    names = ((list(figures.CELL_FIGURES) if r.groups else []) + (list(figures.MASK_FIGURES) if r.masked() else [])
             + list(figures.NEIGHBOUR_FIGURES))
    drawn = figures.render(figures.Job(r, args.out, footprints, ratios), names)
    notes = [n for name, _, ns in drawn if name not in figures.NEIGHBOUR_FIGURES for n in ns]
    notes += [] if r.groups else [no_cells_note(r)]
    notes += [paced_note(r)] if r.paced and r.groups else []
    notes += [n for name, _, ns in drawn if name in figures.NEIGHBOUR_FIGURES for n in ns]
    written = [name for name, ok, _ in drawn if ok]
    cav = write_report(r, args.out, written, notes, ratios)
    print(f"{PROG}: {len(written)} figures ({', '.join(written)}) and report.md, report.html in {args.out}; {len(cav)} caveats")


def main(argv):
    ap = argparse.ArgumentParser(prog=PROG, description="Figures and report.md/report.html from flushbench results files.")
    ap.add_argument("results", nargs="+", help="results files written by `flushbench run` (several: hosts or runs side by side)")
    ap.add_argument("--out", required=True, help="directory for the figures and the report (created)")
    ap.add_argument("--footprints", help="footprints for modes_bars, e.g. 4K,1M (default: smallest, middle and largest measured)")
    args = ap.parse_args(argv)
    try:
        run(args)
    except ReportError as exc:
        fail(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
