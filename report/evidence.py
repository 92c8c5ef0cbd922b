"""A mode label is a claim: what the kernel said about each phase (context.flushbench.run.phases,
host/mode_evidence.h) and about each cell (its mode_evidence), read for the Mode evidence section
and the caveats.

verdict: confirmed (every source that answered agrees with the label), contradicted (one disagrees),
unverified (none could answer). Files written before schema 4 carry none: the section says so."""

import math
import os

from .labels import num

DOUBTFUL = ("unverified", "contradicted")


def phases(doc):
    """The file's phases in run, boot, phase order; [] when it has none."""
    ph = ((doc.get("context", {}).get("flushbench", {}).get("run")) or {}).get("phases")
    if not isinstance(ph, list):
        return []
    ph = [p for p in ph if isinstance(p, dict)]
    return sorted(ph, key=lambda p: tuple(num(p.get(k)) if math.isfinite(num(p.get(k))) else -1 for k in ("run", "boot", "phase")))


def index_text(p):
    """"run 1, boot 1, phase 2": counted from 1, as flushbench prints them."""
    parts = []
    for k in ("run", "boot", "phase"):
        v = num(p.get(k))
        parts.append(f"{k} {int(v) + 1 if math.isfinite(v) else '?'}")
    return ", ".join(parts)


def rows(r):
    """[file, phase, label, verdict, source, summary] for every phase of every file."""
    out = []
    for path, doc in zip(r.paths, r.docs):
        for p in phases(doc):
            out.append([os.path.basename(path), index_text(p), p.get("label", "?"), p.get("verdict", "?"),
                        p.get("source") or "-", p.get("summary") or "-"])
    return out


def caveats(r):
    """One line per unverified or contradicted phase, then per cell whose own evidence contradicts
    a phase that was not (its WBINVDs flushed where the phase said they would not, or not at all)."""
    out = []
    for path, doc in zip(r.paths, r.docs):
        name = os.path.basename(path)
        judged = set()
        for p in phases(doc):
            v = str(p.get("verdict", "?"))
            judged.add((p.get("run"), p.get("boot"), p.get("phase"), v))
            if v in DOUBTFUL:
                out.append(f"{name}: mode evidence: phase {p.get('label', '?')} ({index_text(p)}) is {v.upper()}"
                           + (f" ({p['source']})" if p.get("source") else "") + f": {p.get('summary') or 'no summary'}"
                           + ("; its cells are labelled by what was asked, not by what the kernel confirmed." if v == "unverified"
                              else "; its cells do not measure what their label says."))
        for c in doc.get("flushbench_cells") or []:
            ev = c.get("mode_evidence") if isinstance(c, dict) else None
            if not isinstance(ev, dict) or ev.get("verdict") != "contradicted":
                continue
            if (ev.get("run"), ev.get("boot"), ev.get("phase"), "contradicted") in judged:
                continue
            out.append(f"{name}: mode evidence: cell {c.get('pattern', '?')}/{c.get('footprint_bytes', '?')}/{c.get('mode', '?')} is "
                       f"CONTRADICTED: {ev.get('summary') or 'no summary'}.")
    return out


def missing(r):
    """Files with cells but neither phases nor any cell's evidence: written before schema 4."""
    out = []
    for path, doc in zip(r.paths, r.docs):
        cells = [c for c in doc.get("flushbench_cells") or [] if isinstance(c, dict)]
        if cells and not phases(doc) and not any(isinstance(c.get("mode_evidence"), dict) and c["mode_evidence"] for c in cells):
            out.append(os.path.basename(path))
    return out
