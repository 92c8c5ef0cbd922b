"""The report package's behaviour on small results files built here: the pattern table comes from
the file (or, for files without one, from FLUSHBENCH_BIN), a pattern the table lacks is still
reported, and intervals are reproducible. Run by ctest (tests/CMakeLists.txt, ReportPackage)."""

import importlib
import json
import os
import subprocess
import sys
import tempfile
import unittest

for dependency in ("numpy", "scipy.stats", "matplotlib"):
    try:
        importlib.import_module(dependency)
    except ImportError as exc:  # report_test.cc says how to install them
        raise unittest.SkipTest(f"needs numpy, scipy and matplotlib: {exc}")

import numpy as np  # noqa: E402

from report import model, stats  # noqa: E402

# Names and words no Python code knows: whatever the report shows of them came from the table.
TABLE = [
    {"name": "zeta", "group": "flush", "memtype": "wb", "operation": "zeta", "what": "zeta: the table's own words"},
    {"name": "alpha", "group": "flush", "memtype": "wb", "operation": "alpha", "what": "alpha, described by the table"},
    {"name": "scan_wb", "group": "memtype", "memtype": "wb", "operation": "scan", "what": "scan a write-back buffer"},
    {"name": "scan_uc", "group": "memtype", "memtype": "uc", "operation": "scan", "what": "scan an uncacheable buffer"},
]


def cell(pattern, footprint=4096, base=1000.0):
    tsc = [base + 10 * i for i in range(8)]
    return {"backend": "kvm", "mode": "coherent", "pattern": pattern, "footprint_bytes": footprint, "tsc": tsc,
            "tsc_overhead": 10, "status": "ok", "unit": "per-footprint", "line_bytes": 64, "tsc_khz": 2000000}


def results(cells, table=TABLE):
    fb = {"host": {"hostname": "testhost"}, "backend": "kvm", "command_line": "flushbench run (test)"}
    if table is not None:
        fb["patterns"] = table
    return {"context": {"flushbench": fb}, "benchmarks": [], "flushbench_cells": cells}


class Files(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def write(self, name, doc):
        path = os.path.join(self.tmp.name, name)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f)
        return path

    def fake_flushbench(self, table):
        """An executable that answers `patterns --json` with table, as flushbench does."""
        path = os.path.join(self.tmp.name, "flushbench")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"#!/bin/sh\n[ \"$1 $2\" = 'patterns --json' ] || exit 1\ncat <<'EOF'\n{json.dumps({'patterns': table})}\nEOF\n")
        os.chmod(path, 0o755)
        return path

    def report(self, paths, env):
        out = os.path.join(self.tmp.name, "out")
        env = {**os.environ, **env}
        done = subprocess.run([sys.executable, "-P", "-m", "report", *paths, "--out", out], capture_output=True, text=True, env=env)
        return done, out


class PatternTable(Files):
    def test_order_follows_the_table_in_the_file(self):
        path = self.write("r.json", results([cell("alpha"), cell("scan_uc"), cell("zeta"), cell("scan_wb")]))
        r = model.read([path], None)
        self.assertEqual(r.patterns, ["zeta", "alpha", "scan_wb", "scan_uc"])
        self.assertEqual(r.table.what("alpha"), "alpha, described by the table")

    def test_a_file_without_the_table_takes_the_binarys(self):
        path = self.write("old.json", results([cell("alpha"), cell("zeta")], table=None))
        r = model.read([path], self.fake_flushbench(list(reversed(TABLE))))
        self.assertEqual(r.patterns, ["alpha", "zeta"])
        self.assertEqual(r.unknown_patterns(), [])

    def test_a_file_without_the_table_and_no_binary_fails_with_the_fix(self):
        path = self.write("old.json", results([cell("alpha")], table=None))
        env = {k: v for k, v in os.environ.items() if k != "FLUSHBENCH_BIN"}
        done = subprocess.run([sys.executable, "-P", "-m", "report", path, "--out", os.path.join(self.tmp.name, "out")],
                              capture_output=True, text=True, env=env)
        self.assertEqual(done.returncode, 2)
        self.assertEqual(done.stderr.count("\n"), 1, done.stderr)
        self.assertTrue(done.stderr.startswith("flushbench report: "), done.stderr)
        self.assertIn("FLUSHBENCH_BIN", done.stderr)
        self.assertIn("flushbench report", done.stderr.split(": ", 1)[1])

    def test_a_binary_that_cannot_answer_fails_in_one_line(self):
        path = self.write("old.json", results([cell("alpha")], table=None))
        done, _ = self.report([path], {"FLUSHBENCH_BIN": os.path.join(self.tmp.name, "no-such-flushbench")})
        self.assertEqual(done.returncode, 2)
        self.assertEqual(done.stderr.count("\n"), 1, done.stderr)
        self.assertIn("patterns --json", done.stderr)


class Report(Files):
    """One report on a file whose table is the only source of pattern facts, with a pattern it lacks."""

    def test_the_table_names_orders_describes_and_groups_and_an_unknown_pattern_stays(self):
        cells = [cell("alpha"), cell("zeta"), cell("mystery"), cell("scan_wb", base=2000.0), cell("scan_uc", base=6000.0)]
        done, out = self.report([self.write("r.json", results(cells))], {})
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
            md = f.read()
        rows = [line.split(" | ")[0][2:] for line in md.splitlines() if line.startswith("| ") and " | 4K | kvm / coherent | " in line]
        # The cell table in table order, the unknown pattern last, not dropped.
        self.assertEqual(rows[:5], ["zeta", "alpha", "scan_wb", "scan_uc", "mystery"])
        self.assertIn("mystery not in flushbench's pattern table", md)
        # The memory-type section groups by the table's operation and memory types.
        self.assertIn("| scan | WB | 4K | kvm / coherent | ok |", md)
        self.assertIn("| scan | UC | 4K | kvm / coherent | ok |", md)
        self.assertIn("| operation | footprint | series | UC / WB [95% CI] | p |", md)
        # Figures carry the table's descriptions (SVG text is kept as text) and the unknown pattern.
        with open(os.path.join(out, "cost_vs_footprint.svg"), encoding="utf-8") as f:
            svg = f.read()
        self.assertIn("alpha, described by the table", svg)
        self.assertIn("mystery: (not in the pattern table)", svg)
        with open(os.path.join(out, "memtypes.svg"), encoding="utf-8") as f:
            self.assertIn("scan: scan_wb, scan_uc", f.read())
        for name in ("cost_vs_footprint", "modes_bars", "distributions", "memtypes"):
            for ext in ("svg", "png"):
                self.assertGreater(os.path.getsize(os.path.join(out, f"{name}.{ext}")), 1000, f"{name}.{ext}")


class Statistics(unittest.TestCase):
    def test_intervals_are_reproducible_and_cover_the_estimate(self):
        rng = np.random.default_rng(1)
        a, b = rng.normal(100, 5, 300), rng.normal(120, 5, 200)
        self.assertEqual(stats.median_ci(a), stats.median_ci(a))
        est, (lo, hi) = stats.ratio_ci(b, a)
        self.assertEqual((est, (lo, hi)), stats.ratio_ci(b, a))
        self.assertLess(lo, est)
        self.assertLess(est, hi)
        self.assertLess(stats.u_test(a, b), 1e-6)

    def test_a_ratio_over_a_zero_median_is_nan_not_an_error(self):
        est, (lo, hi) = stats.ratio_ci(np.array([1.0, 2.0, 3.0]), np.zeros(3))
        self.assertTrue(np.isnan(est) and np.isnan(lo) and np.isnan(hi))


# A fleet comparison as `flushbench compare DIR --json` writes it (host/results/fleet.h), cut down.
FLEET = {
    "run": "demo", "commit": "0123456789abcdef", "ship": "build", "alpha": 0.05,
    "baseline": {"name": "G1", "kind": "group", "hosts": ["sc"]},
    "groups": [{"id": "G1", "facets": {"snoop": "snoop-control", "kernel": "linux6.2-6.16", "cpu": "Intel X", "kvm": "vmx"},
                "snoop_evidence": ["probe: SC=1"], "kernels": ["6.8.0"], "hosts": ["sc"]},
               {"id": "G2", "facets": {"snoop": "no-snoop-control", "kernel": "linux6.2-6.16", "cpu": "Intel X", "kvm": "vmx"},
                "snoop_evidence": ["mode evidence"], "kernels": ["6.8.0"], "hosts": ["nosc"]}],
    "hosts": [{"name": "sc", "results": "sc/results.json"}, {"name": "nosc", "results": "nosc/results.json"},
              {"name": "gone", "results": None, "unavailable": "unreachable at connect: refused"}],
    "rows": [{"pattern": "nop", "footprint_bytes": 0, "backend": "kvm", "mode": "coherent",
              "baseline": {"median": -4, "below_floor": True, "resolution_cycles": 50},
              "cells": [{"host": "sc", "status": "ok", "median": -4, "below_floor": True, "resolution_cycles": 50, "in_baseline": True},
                        {"host": "nosc", "status": "ok", "median": -2, "below_floor": True, "resolution_cycles": 50,
                         "note": "not compared"}]},
             {"pattern": "wbinvd", "footprint_bytes": 4096, "backend": "kvm", "mode": "noncoherent", "baseline": {"median": 1e4},
              "cells": [{"host": "nosc", "status": "ok", "median": 3e4, "ratio": 3.0, "ratio_ci": [2.9, 3.1],
                         "significant": True, "baseline_mode": "coherent"}]}],
}


class Fleet(Files):
    def test_one_table_and_one_figure_with_the_hosts_side_by_side_and_no_negative_cost(self):
        out = os.path.join(self.tmp.name, "fleet")
        done = subprocess.run([sys.executable, "-P", "-m", "report.fleet", self.write("cmp.json", FLEET), "--out", out],
                              capture_output=True, text=True)
        self.assertEqual(done.returncode, 0, done.stderr)
        for name in ("fleet.md", "fleet.html", "fleet.svg", "fleet.png"):
            self.assertTrue(os.path.exists(os.path.join(out, name)), name)
        with open(os.path.join(out, "fleet.md"), encoding="utf-8") as f:
            md = f.read()
        self.assertIn("| sc [G1] | nosc [G2] |", md)
        self.assertIn("below floor (±50)", md)
        self.assertNotIn("-4", md)  # a cost below the floor is never shown negative
        self.assertIn("×3.000 [2.900, 3.100]*+", md)
        self.assertIn("gone: unreachable at connect: refused", md)

    def test_a_file_that_is_not_a_comparison_fails_in_one_line(self):
        done = subprocess.run([sys.executable, "-P", "-m", "report.fleet", self.write("r.json", results([])), "--out", self.tmp.name],
                              capture_output=True, text=True)
        self.assertEqual(done.returncode, 2)
        self.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)
        self.assertIn("flushbench compare DIR --json", done.stderr)


if __name__ == "__main__":
    unittest.main()
