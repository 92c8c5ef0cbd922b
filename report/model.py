"""Results files as the report sees them: series (one host/backend/mode of one file), groups (the
pooled cells of a series at one pattern and footprint, with net samples, median and interval),
paced guest steps and neighbour runs, and the pattern table that orders them.

Older schemas are tolerated: a missing key reads as absent, not as an error; only what makes a file
unusable (not JSON, no flushbench_cells, a cell without its identity) fails, with one line."""

import json
import math
import re

import numpy as np

from . import patterns, stats, timing
from .errors import ReportError
from .labels import size_label


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path} is not JSON ({exc}): pass a results file written by `flushbench run`") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("flushbench_cells"), list):
        raise ReportError(f"{path} is not a flushbench results file (no flushbench_cells list); "
                          "plain Google Benchmark files carry no raw samples")
    return doc


def read(paths, exe):
    """Results of the files at paths; exe: the flushbench binary for tables the files lack."""
    docs = [load(p) for p in paths]
    return Results(paths, docs, patterns.table_for(docs, paths, exe))


MASK = re.compile(r"\+mask(\d+)")


def mask_of(mode):
    """("noncoherent", 2) for "noncoherent+mask2" (`run --dirty-mask`); (mode, None) otherwise."""
    m = MASK.search(mode)
    return (mode[:m.start()] + mode[m.end():], int(m.group(1))) if m else (mode, None)


class Series:
    """One host/backend/mode of one file: a line in the plots, a column in the tables."""

    def __init__(self, index, file_index, host, backend, mode):
        self.index, self.file_index, self.host, self.backend, self.mode = index, file_index, host, backend, mode
        self.base_mode, self.mask = mask_of(mode)  # the dirty-mask width K of "noncoherent+maskK"
        self.emulated = False
        self.tsc_khz = set()
        self.label = ""


class Group:
    """The cells of one series at one (pattern, footprint), pooled (A/B/A repeats a mode)."""

    def __init__(self, series, pattern, footprint):
        self.series, self.pattern, self.footprint = series, pattern, footprint
        self.net = []
        self.cells = []
        self.unit = ""

    @property
    def statuses(self):
        return [c.get("status", "?") for c in self.cells]

    @property
    def status(self):
        bad = [s for s in self.statuses if s != "ok"]
        return bad[0] if bad else "ok"

    @property
    def has_samples(self):
        return len(self.net) > 0

    def reasons(self):
        return "; ".join(sorted({c.get("reason", "") for c in self.cells if c.get("reason")}))

    def finish(self):
        """Median and interval: flushbench's own `stats` for a single cell, else a bootstrap here;
        then whether the median is below the timing floor (timing.read_cost)."""
        self.net = np.asarray(self.net, dtype=float)
        self.median = float(np.median(self.net)) if len(self.net) else math.nan
        recorded = self.cells[0].get("stats") if len(self.cells) == 1 else None
        reading = None
        if isinstance(recorded, dict) and isinstance(recorded.get("median_ci"), dict) and recorded.get("median") is not None:
            self.median = float(recorded["median"])
            lo, hi = recorded["median_ci"].get("lo"), recorded["median_ci"].get("hi")
            self.ci = (math.nan if lo is None else float(lo), math.nan if hi is None else float(hi))
            reading = timing.recorded_reading(self.cells[0])
        elif len(self.net) >= 2:
            self.ci = stats.median_ci(self.net)
        elif len(self.net) == 1:
            self.ci = (self.median, self.median)
        else:
            self.ci = (math.nan, math.nan)
        self.floor = timing.floor_of(self.cells)
        computed = timing.read_cost(self.median, self.ci, self.floor)
        if reading is None:  # pooled cells, or a file from before the floor: the same rule here
            reading = computed
        elif not math.isfinite(reading.bound):
            reading = timing.Reading(reading.below_floor, computed.bound)
        self.below_floor = self.has_samples and reading.below_floor
        self.resolution = reading.bound
        self.outliers = stats.outlier_mask(self.net) if len(self.net) >= 4 else np.zeros(len(self.net), bool)

    @property
    def shown(self):
        """The median as a number the report may print and plot: NaN when below the floor."""
        return math.nan if self.below_floor or not self.has_samples else self.median


class Results:
    def __init__(self, paths, docs, table):
        self.paths, self.docs, self.table = paths, docs, table
        self.series = []
        self.groups = {}  # (series index, pattern, footprint) -> Group
        self.paced = []  # (file index, cell): paced guest steps, never (pattern, footprint) cells
        self.neighbour = []  # (file index, run): flushbench_neighbour entries
        for fi, doc in enumerate(docs):
            self._read_neighbour(fi, doc)
            for cell in doc["flushbench_cells"]:
                if isinstance(cell, dict) and isinstance(cell.get("pace"), dict):
                    # A paced step (idle, wbinvd@100, ...): its pattern names what it ran, but it is
                    # a window of time for the neighbour, not a cell of the matrix.
                    self.paced.append((fi, cell))
                else:
                    self._add_cell(fi, doc, cell)
        for g in self.groups.values():
            g.finish()
        self._label_series()
        self.patterns = sorted({k[1] for k in self.groups}, key=table.key)

    def _read_neighbour(self, fi, doc):
        nb = doc.get("flushbench_neighbour")
        if nb is not None and not isinstance(nb, list):
            raise ReportError(f"{self.paths[fi]}: flushbench_neighbour is not a list: a damaged results file")
        for run in nb or []:
            if not isinstance(run, dict):
                raise ReportError(f"{self.paths[fi]}: a damaged entry in flushbench_neighbour")
            self.neighbour.append((fi, run))

    def _add_cell(self, fi, doc, cell):
        fb = doc.get("context", {}).get("flushbench", {})
        try:
            backend, mode = str(cell["backend"]), str(cell["mode"])
            pattern, footprint = str(cell["pattern"]), int(cell["footprint_bytes"])
            net = timing.net_cycles(cell, f"{self.paths[fi]}: cell {pattern}/{footprint}/{backend}/{mode}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportError(f"{self.paths[fi]}: a damaged cell in flushbench_cells ({exc!r})") from None
        s = next((s for s in self.series if s.file_index == fi and s.backend == backend and s.mode == mode), None)
        if s is None:
            host = fb.get("host", {}).get("hostname") or doc.get("context", {}).get("host_name") or "unknown-host"
            s = Series(len(self.series), fi, host, backend, mode)
            self.series.append(s)
        s.emulated |= bool(cell.get("emulated", False)) or bool(fb.get("emulated", False) and backend == fb.get("backend"))
        if cell.get("tsc_khz"):
            s.tsc_khz.add(int(cell["tsc_khz"]))
        g = self.groups.setdefault((s.index, pattern, footprint), Group(s, pattern, footprint))
        g.cells.append(cell)
        g.net.extend(net)
        g.unit = g.unit or cell.get("unit", "")

    def _label_series(self):
        hosts = {s.host for s in self.series}
        for s in self.series:
            label = f"{s.backend} / {s.mode}"
            if len(hosts) > 1:
                label = f"{s.host}: {label}"
            # Two runs of the same host, backend and mode: say which file is which.
            if sum(1 for t in self.series if (t.host, t.backend, t.mode) == (s.host, s.backend, s.mode)) > 1:
                label += f" (run {s.file_index + 1})"
            s.label = label + (" [emulated]" if s.emulated else "")

    def masked(self):
        """The series of dirty-mask cells (`run --dirty-mask`: "noncoherent+mask2")."""
        return [s for s in self.series if s.mask is not None]

    def group(self, series, pattern, footprint):
        return self.groups.get((series.index, pattern, footprint))

    def footprints(self, pattern):
        return sorted({k[2] for k in self.groups if k[1] == pattern})

    def cell_title(self, pattern, footprint):
        """"wbinvd 4K"; just "cpuid" for a pattern that never takes a footprint."""
        if footprint == 0 and self.footprints(pattern) == [0]:
            return pattern
        return f"{pattern} {size_label(footprint)}"

    def unknown_patterns(self):
        """Patterns of cells and paced steps that the pattern table does not list."""
        names = {k[1] for k in self.groups} | {str(c.get("pattern", "?")) for _, c in self.paced}
        return sorted(n for n in names if not self.table.knows(n))

    def tsc_khz(self):
        """The one TSC rate every series shares, or None: a secondary time axis needs one."""
        rates = set().union(*(s.tsc_khz for s in self.series)) if self.series else set()
        if len(rates) == 1:
            return next(iter(rates))
        if rates and max(rates) - min(rates) <= 0.001 * max(rates):
            return int(np.median(sorted(rates)))
        return None
