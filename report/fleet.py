"""A fleet run side by side: one table and one figure from `flushbench compare DIR --json`.

    /usr/bin/python3 -P -m report.fleet fleet_comparison.json --out DIR

`flushbench report results/fleet/<run>` writes the comparison (host/results/fleet.h) and runs this.
The comparison holds every number: groups, baseline, per-row medians, ratios and their intervals;
this module only lays them out. A cost below a host's timing floor has no ratio and is written
"below floor" (never a negative or zero median)."""

import argparse
import html
import json
import math
import os
import sys

PROG = "flushbench report"


def fail(message):
    print(f"{PROG}: {message}", file=sys.stderr)
    sys.exit(2)


try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker
except ImportError as exc:  # one line, with the fix
    fail(f"needs matplotlib ({exc}): apt-get install python3-matplotlib")

from .errors import ReportError  # noqa: E402
from .labels import cycles_label, fmt_ci, fmt_ratio, num, size_label  # noqa: E402


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            cmp = json.load(f)
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read the fleet comparison {path} ({exc}): write it with flushbench compare DIR --json") from None
    if not isinstance(cmp, dict) or not {"groups", "hosts", "rows"} <= cmp.keys():
        raise ReportError(f"{path} is not a fleet comparison (no groups, hosts, rows): write it with flushbench compare DIR --json")
    return cmp


def columns(cmp):
    """Hosts with results, in group order: [(host, group id)]."""
    with_results = {h["name"] for h in cmp["hosts"] if h.get("results")}
    return [(name, g["id"]) for g in cmp["groups"] for name in g["hosts"] if name in with_results]


def median_text(x):
    if x.get("below_floor"):
        return f"below floor (±{cycles_label(num(x.get('resolution_cycles')))})"
    return cycles_label(num(x.get("median")))


def cell_text(cell, group_baseline):
    if cell is None:
        return ""
    s = median_text(cell) if "median" in cell else cell.get("status", "")
    if "median" in cell and cell.get("status") not in (None, "ok"):
        s += f" {cell['status']}"
    if cell.get("in_baseline"):
        return s + (" (in baseline)" if group_baseline else " (baseline)")
    if "ratio" in cell:
        s += f" ×{fmt_ratio(num(cell['ratio']))} {fmt_ci([num(v) for v in cell.get('ratio_ci', [None, None])])}"
        s += "*" if cell.get("significant") else ""
        s += "+" if "baseline_mode" in cell else ""
    elif cell.get("note") and not cell.get("below_floor"):
        s += " (not compared)"
    return s


def row_title(row):
    return f"{row['pattern']} {size_label(row['footprint_bytes'])} {row['backend']}/{row['mode']}"


def table(cmp):
    """Markdown: the groups, the hosts (and why any has none), then one line per row."""
    base = cmp.get("baseline") or {}
    group_baseline = base.get("kind") not in (None, "host")
    cols = columns(cmp)
    out = [f"# Fleet {cmp.get('run') or cmp.get('fleet')}", ""]
    if cmp.get("commit"):
        out += [f"Commit `{cmp['commit'][:12]}`, shipped as {cmp.get('ship')}.", ""]
    if base:
        out += [f"Baseline: {base['kind']} **{base['name']}** ({', '.join(base['hosts'])}); "
                "ratio = host median ÷ baseline median of net TSC cycles, 95% bootstrap interval; "
                f"* Mann-Whitney U p < {cmp.get('alpha', 0.05)}; + against the baseline's coherent cell.", ""]
    out += ["| group | snoop control | kernel | CPU | KVM | hosts | evidence |", "|---|---|---|---|---|---|---|"]
    for g in cmp["groups"]:
        f = g["facets"]
        out.append(f"| {g['id']} | {f['snoop']} | {f['kernel']} ({', '.join(g.get('kernels', []))}) | {f['cpu']} | {f['kvm']} | "
                   f"{', '.join(g['hosts'])} | {'; '.join(g.get('snoop_evidence', []))} |")
    missing = [h for h in cmp["hosts"] if not h.get("results")]
    if missing:
        out += ["", "Hosts without results:", ""]
        out += [f"- {h['name']}: {h.get('unavailable') or h.get('reason')}" for h in missing]
    out += ["", "| pattern | bytes | backend/mode | " + " | ".join(f"{n} [{g}]" for n, g in cols) + " |",
            "|---|---:|---|" + "---|" * len(cols)]
    for row in cmp["rows"]:
        cells = {c["host"]: c for c in row["cells"]}
        out.append(f"| {row['pattern']} | {size_label(row['footprint_bytes'])} | {row['backend']}/{row['mode']} | "
                   + " | ".join(cell_text(cells.get(n), group_baseline) for n, _ in cols) + " |")
    return "\n".join(out) + "\n"


def figure(cmp, out):
    """Every row's ratios, the hosts side by side (colour: group), on one log axis; baseline hosts
    at 1, cells below the floor named rather than drawn."""
    cols = columns(cmp)
    rows = [r for r in cmp["rows"] if any(c["host"] in dict(cols) for c in r["cells"])]
    if not rows or not cols:
        return False
    group_ids = [g["id"] for g in cmp["groups"]]
    cmap = plt.get_cmap("tab10")
    colour = {n: cmap(group_ids.index(g) % 10) for n, g in cols}
    step = 1.0 / (len(cols) + 1)
    fig, ax = plt.subplots(figsize=(9, 0.22 * len(rows) * max(1, len(cols) / 2) + 1.8))
    ratios = []
    for i, row in enumerate(rows):
        cells = {c["host"]: c for c in row["cells"]}
        for j, (name, _) in enumerate(cols):
            y, c = i + (j + 1) * step - 0.5, cells.get(name)
            if c is None:
                continue
            if c.get("in_baseline"):
                ax.plot(1, y, "D", color=colour[name], ms=3)
            elif "ratio" in c and num(c["ratio"]) > 0:
                r, (lo, hi) = num(c["ratio"]), [num(v) for v in c.get("ratio_ci", [None, None])]
                ratios.append(r)
                if math.isfinite(lo) and math.isfinite(hi) and lo > 0:
                    ax.plot([lo, hi], [y, y], color=colour[name], lw=1.5, alpha=0.6)
                    ratios += [lo, hi]
                ax.plot(r, y, "o", color=colour[name], ms=4, mfc=colour[name] if c.get("significant") else "white")
            elif c.get("below_floor") or (row.get("baseline") or {}).get("below_floor"):
                ax.annotate("below floor", (1, y), fontsize=6, color=colour[name], va="center", ha="left",
                            xytext=(4, 0), textcoords="offset points")
    lo, hi = (min(ratios + [1]), max(ratios + [1])) if ratios else (1, 1)
    ax.set_xscale("log")
    ax.set_xlim(lo / 1.5, hi * 1.5)
    ax.axvline(1, color="black", lw=0.8)
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))  # 2, not 2×10⁰
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([row_title(r) for r in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="y", visible=False)
    base = cmp.get("baseline") or {}
    ax.set_xlabel(f"median net TSC cycles ÷ baseline {base.get('kind', '')} {base.get('name', '')} (log); bar: 95% bootstrap interval")
    ax.set_title("Fleet: hosts side by side (filled: significant; ◆ baseline; 'below floor': no ratio)", fontsize=9)
    handles = [plt.Line2D([], [], marker="o", ls="", color=colour[n], label=f"{n} [{g}]") for n, g in cols]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=7, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    for ext in ("svg", "png"):
        fig.savefig(os.path.join(out, f"fleet.{ext}"))
    plt.close(fig)
    return True


def page(markdown):
    return ("<!doctype html><meta charset=utf-8><title>flushbench fleet</title><img src=fleet.svg alt='fleet figure'>"
            f"<pre>{html.escape(markdown)}</pre>\n")


def run(args):
    cmp = read(args.comparison)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {args.out}: {exc.strerror or exc}: choose another --out") from None
    md = table(cmp)
    with open(os.path.join(args.out, "fleet.md"), "w", encoding="utf-8") as f:
        f.write(md)
    drew = figure(cmp, args.out)
    with open(os.path.join(args.out, "fleet.html"), "w", encoding="utf-8") as f:
        f.write(page(md))
    print(f"{PROG}: fleet.md, fleet.html{' and fleet.svg, fleet.png' if drew else ' (no host has results: no figure)'} in {args.out}")


def main(argv):
    ap = argparse.ArgumentParser(prog=PROG, description="A fleet run's table and figure from its comparison.")
    ap.add_argument("comparison", help="fleet_comparison.json (flushbench compare results/fleet/<run> --json)")
    ap.add_argument("--out", required=True, help="directory for fleet.md, fleet.html, fleet.svg and fleet.png (created)")
    args = ap.parse_args(argv)
    try:
        run(args)
    except ReportError as exc:
        fail(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
