"""exit_attribution: where KVM's work went in each cell (exit reasons, tracepoint counts or KVM's
binary statistics, whichever the backend recorded), as shares and as events per repetition."""

import matplotlib.pyplot as plt
import numpy as np

from .style import legend_below

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
SHOWN = 9  # components in the legend; the rest are "other"


def stat_label(name, scope=""):
    if name.endswith("_exits"):
        return f"exits: {name[:-6].replace('_', ' ')}"
    nice = KVM_STAT_NAMES.get(name)
    return f"{nice} ({scope}{name})" if nice else f"{scope}{name}"


def from_kvm_stats(stats):
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
    return comp


def exit_components(cell):
    """({component: events}, source) per cell from what the backend recorded; (None, None) if nothing."""
    extra = cell.get("extra") or {}
    exits = extra.get("exits") if isinstance(extra.get("exits"), dict) else None
    if exits and exits.get("by_reason"):
        return {k: float(v.get("count", 0)) for k, v in exits["by_reason"].items()}, "exit reasons (kvm:kvm_exit)"
    if exits and exits.get("counts"):
        return {k: float(v) for k, v in exits["counts"].items() if isinstance(v, (int, float))}, "KVM tracepoints"
    stats = extra.get("kvm_stats_delta")
    if isinstance(stats, dict) and stats:
        return from_kvm_stats(stats), "KVM binary statistics"
    return None, None


def per_repetition(r):
    """[(group, {component: events per repetition})], the sources seen, and why cells had none."""
    rows, sources, reasons = [], set(), set()
    for (si, p, f), g in sorted(r.groups.items(), key=lambda kv: (kv[0][0], r.table.key(kv[0][1]), kv[0][2])):
        total, reps = {}, 0
        for cell in g.cells:
            if not cell.get("tsc"):
                continue  # no repetitions to divide by: an unsupported or skipped cell's bookkeeping
            comp, source = exit_components(cell)
            if comp is None:
                exits = (cell.get("extra") or {}).get("exits")
                if isinstance(exits, dict) and exits.get("unavailable"):
                    reasons.add(exits["unavailable"])
                continue
            sources.add(source)
            for k, v in comp.items():
                total[k] = total.get(k, 0) + v
            reps += len(cell.get("tsc", [])) + int(cell.get("warmup", 0))
        if total and reps:
            rows.append((g, {k: v / reps for k, v in total.items()}))
    return rows, sources, reasons


def exit_attribution(job, notes):
    r = job.results
    rows, sources, reasons = per_repetition(r)
    if not rows:
        why = "; ".join(sorted(reasons)) if reasons else "these results carry no KVM statistics or exit counters (qemu-* backends and native runs do not collect them)"
        notes.append(f"exit_attribution: skipped: {why}.")
        return None
    comps = sorted({k for _, c in rows for k in c}, key=lambda k: (-sum(c.get(k, 0) for _, c in rows), k))
    top = comps[:SHOWN]
    fig, (ax, axt) = plt.subplots(1, 2, figsize=(11, 0.28 * len(rows) + 1.8), gridspec_kw={"width_ratios": [3, 1.2]}, sharey=True)
    cmap = plt.get_cmap("tab20")
    y = np.arange(len(rows))
    totals = np.array([sum(c.values()) for _, c in rows])
    left = np.zeros(len(rows))
    for ci, k in enumerate(top + (["other"] if len(comps) > len(top) else [])):
        vals = np.array([sum(v for kk, v in c.items() if kk not in top) if k == "other" else c.get(k, 0) for _, c in rows])
        share = np.divide(vals, totals, out=np.zeros_like(vals), where=totals > 0)
        ax.barh(y, share * 100, left=left, color=cmap(ci % 20), label=k, height=0.75)
        left += share * 100
    ax.set_yticks(y)
    ax.set_yticklabels([f"{r.cell_title(g.pattern, g.footprint)}  {g.series.label}" for g, _ in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of KVM events in the cell [%]")
    ax.grid(axis="y", visible=False)
    axt.barh(y, totals, color="grey", height=0.75)
    axt.set_xscale("log")
    axt.set_xlabel("KVM events per repetition\n[count, log]")
    axt.grid(axis="y", visible=False)
    fig.suptitle("Where KVM's work went, per cell (" + ", ".join(sorted(sources)) + "; per repetition incl. warm-up and dirtying)", fontsize=10)
    fig.tight_layout()
    legend_below(fig, *ax.get_legend_handles_labels(), ncol=2)
    notes.append("exit_attribution: counts span the whole cell (warm-up, untimed dirtying and timed region) divided by "
                 "its repetitions; they attribute work, not timed cost.")
    return fig
