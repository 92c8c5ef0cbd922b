"""ratios: each series' median over its baseline series' (analysis.ratio_rows), with intervals;
drawn when the results hold two or more series (modes, hosts, runs)."""

import math

import matplotlib.pyplot as plt
import numpy as np

from .style import color


def ratios(job, notes):
    r = job.results
    noise = [x for x in job.ratios if x.get("below_floor")]
    if noise:
        notes.append("ratios: left out where a side is below the timing floor (a ratio of noise): "
                     + ", ".join(f"{r.cell_title(x['pattern'], x['footprint'])} {x['series'].label}" for x in noise[:8])
                     + (" ..." if len(noise) > 8 else ""))
    rows = [x for x in job.ratios if not x.get("below_floor") and math.isfinite(x["ratio"]) and x["ratio"] > 0]
    if not rows:
        if len(r.series) > 1:
            notes.append("ratios: no cell was measured in two series with positive medians; no figure.")
        return None
    fig, ax = plt.subplots(figsize=(8.5, 0.26 * len(rows) + 1.6))
    for i, x in enumerate(rows):
        lo, hi = x["ci"]
        c = color(x["series"])
        if math.isfinite(lo) and math.isfinite(hi) and lo > 0:
            ax.plot([lo, hi], [i, i], color=c, lw=2, alpha=0.6)
        sig = x["p"] is not None and x["p"] < 0.05
        ax.plot(x["ratio"], i, "o", color=c, ms=5, mfc=c if sig else "white")
    ax.axvline(1, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(np.arange(len(rows)))
    ax.set_yticklabels([f"{r.cell_title(x['pattern'], x['footprint'])}: {x['series'].label}  ÷  {x['baseline'].label}"
                        for x in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ratio of median net TSC cycles (series ÷ baseline), log; bar: 95% bootstrap interval")
    ax.grid(axis="y", visible=False)
    ax.set_title("Ratios to the baseline series (filled: Mann-Whitney p < 0.05; hollow: not significant)", fontsize=10)
    fig.tight_layout()
    return fig
