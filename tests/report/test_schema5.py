"""The report on results schema 5 (and the older files it must still read): each repetition's cost
from its estimator (measure), costs below the timing floor never printed or drawn as numbers, the
timing warnings first among the caveats, the neighbour's steps and rounds, and the dirty_mask
figure. The files are built here, in the shapes host/results.cc, host/timing_check.cc,
host/mode_evidence.cc and host/neighbour_results.cc write."""

import json
import os
import re
import unittest

from test_report import TABLE, Files, results

from report import model
from report.errors import ReportError

KHZ = 2_000_000


def measured(pattern, footprint, net, method="paired", k=1, mode="coherent", floor=40.0, stats=None, evidence=None,
             overhead=9000):
    """A schema 5 cell whose repetitions cost `net` cycles: tsc = ref + net * k, and a tsc_overhead
    that would be wrong to subtract."""
    ref = [100_000 + 7 * i for i in range(len(net))]
    tsc = [r + round(n * k) for r, n in zip(ref, net)]
    c = {"backend": "kvm", "mode": mode, "pattern": pattern, "footprint_bytes": footprint, "tsc": tsc, "tsc_overhead": overhead,
         "status": "ok", "unit": "per-footprint" if footprint else "per-op", "line_bytes": 64, "tsc_khz": KHZ,
         "measure": {"method": method, "k": k, "ops": len(net) * k, "stop": "precise", "ref": ref},
         "mode_evidence": evidence or {"verdict": "confirmed", "source": "no-vfio-file", "summary": "no VFIO file", "run": 0,
                                       "boot": 0, "phase": 0}}
    if floor is not None:
        c["floor_cycles"] = floor
    if stats is not None:
        c["stats"] = stats
    return c


def legacy(pattern, footprint, tsc, overhead):
    return {"backend": "kvm", "mode": "coherent", "pattern": pattern, "footprint_bytes": footprint, "tsc": tsc,
            "tsc_overhead": overhead, "status": "ok", "unit": "per-footprint", "line_bytes": 64, "tsc_khz": KHZ}


def timing_entry(run=0, check="passed", problems=(), emulation=False, tcg=False, floor=40.0):
    cells = [{"cell": "nop/0/coherent", "kvm_emulate_insn": 650000, "expected_exits": 0, "ops": 4096}] if emulation else []
    return {"run": run, "backend": "kvm", "floor_cycles": floor, "floor_source": "nop per op, calibrated at each boot (the widest)",
            "check": check, "problems": list(problems), "emulation": {"detected": emulation, "cells": cells}, "emulated_by_tcg": tcg}


def phase(label, verdict, summary, source="", run=0, boot=0, index=0, mode="coherent"):
    return {"run": run, "boot": boot, "phase": index, "label": label, "mode": mode, "window_ns": [1, 2], "attached": [],
            "kprobes": {"unavailable": "no kprobe PMU"}, "verdict": verdict, "source": source, "summary": summary}


def schema5(cells, timing=(), phases=(), **fb):
    doc = results(cells)
    doc["context"]["flushbench"].update({"schema_version": 5, "run": {"timing": list(timing), "phases": list(phases)}, **fb})
    return doc


def read_md(out):
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        return f.read()


def table_rows(md, first_cell):
    return [line for line in md.splitlines() if line.startswith(f"| {first_cell} | ")]


def caveat_lines(md):
    section = md.split("## Caveats", 1)[1].split("\n## ", 1)[0]
    return [line[2:] for line in section.splitlines() if line.startswith("- ")]


NEGATIVE = re.compile(r"(?<![\w.])-\d")  # a negative number, not a dash or a hyphenated word


class NetCycles(Files):
    def test_measure_gives_the_net_and_tsc_overhead_is_not_subtracted(self):
        net = [-3.0, 2.0, 4.0, 12.0, 7.0]
        cells = [measured("alpha", 4096, net, method="paired"), measured("zeta", 0, [2.0, 2.5, -1.0, 3.0], method="batch", k=8)]
        r = model.read([self.write("r.json", schema5(cells))], None)
        s = r.series[0]
        self.assertEqual(list(r.group(s, "alpha", 4096).net), net)  # signed: below zero stays below zero
        self.assertEqual(list(r.group(s, "zeta", 0).net), [2.0, 2.5, -1.0, 3.0])  # (T(2k) - T(k)) / k

    def test_a_cell_without_measure_subtracts_its_overhead(self):
        r = model.read([self.write("old.json", results([legacy("alpha", 4096, [1100, 1200, 1300], 100)]))], None)
        self.assertEqual(list(r.group(r.series[0], "alpha", 4096).net), [1000.0, 1100.0, 1200.0])

    def test_a_malformed_measure_is_one_error_naming_the_cell(self):
        c = measured("alpha", 4096, [1.0, 2.0, 3.0])
        c["measure"]["ref"] = c["measure"]["ref"][:2]
        with self.assertRaises(ReportError) as err:
            model.read([self.write("bad.json", schema5([c]))], None)
        self.assertIn("alpha/4096", str(err.exception))
        self.assertIn("measure", str(err.exception))


class BelowFloor(Files):
    """A cost below the floor is "below floor (±X cycles)" in every table, never a number, never negative."""

    def cells(self):
        # alpha: median -2, flushbench's stats say below floor (±40). zeta: an older cell (no
        # below_floor, no floor): median 5 with an interval [-20, 30], half width 25 >= 5. scan_*:
        # memory-type cells, one below the floor. The others are real costs.
        below = measured("alpha", 4096, [-6.0, -2.0, -4.0, 1.0, 3.0],
                         stats={"n": 5, "median": -2.0, "median_ci": {"estimate": -2.0, "lo": -6.0, "hi": 3.0},
                                "below_floor": True, "resolution_cycles": 40.0})
        old = legacy("zeta", 4096, [9000 - 20, 9000 + 5, 9000 + 30, 9000 - 3, 9000 + 9], 9000)
        old["stats"] = {"n": 5, "median": 5.0, "median_ci": {"estimate": 5.0, "lo": -20.0, "hi": 30.0}}
        return [below, old, measured("alpha", 65536, [5000.0, 5100.0, 4900.0, 5050.0, 4950.0]),
                measured("scan_wb", 4096, [-1.0, 2.0, 0.5, -0.5, 1.0]),
                measured("scan_uc", 4096, [64000.0, 64100.0, 63900.0, 64050.0, 63950.0])]

    def test_groups_read_below_floor_from_stats_or_from_their_own_interval(self):
        r = model.read([self.write("r.json", schema5(self.cells(), timing=[timing_entry()]))], None)
        s = r.series[0]
        alpha, zeta, big = r.group(s, "alpha", 4096), r.group(s, "zeta", 4096), r.group(s, "alpha", 65536)
        self.assertTrue(alpha.below_floor)
        self.assertEqual(alpha.resolution, 40.0)
        self.assertTrue(zeta.below_floor)  # 5 <= half of [-20, 30]
        self.assertEqual(zeta.resolution, 25.0)
        self.assertFalse(big.below_floor)
        self.assertTrue(r.group(s, "scan_wb", 4096).below_floor)  # no stats: the cell's floor (40) decides

    def test_no_table_prints_a_number_for_a_cost_below_the_floor(self):
        done, out = self.report([self.write("r.json", schema5(self.cells(), timing=[timing_entry()]))], {})
        self.assertEqual(done.returncode, 0, done.stderr)
        md = read_md(out)
        for pattern, bound in (("alpha", "±40 cycles"), ("zeta", "±25 cycles")):
            rows = [row for row in table_rows(md, pattern) if " | 4K | " in row]
            self.assertTrue(rows, md)
            for row in rows:
                self.assertIn(f"below floor ({bound})", row)
                self.assertIsNone(NEGATIVE.search(row), row)
        # The memory-type table: per line, and no ratio over a cost below the floor.
        scan = [row for row in table_rows(md, "scan") if "| WB |" in row]
        self.assertTrue(scan and all("below floor (±0.62 cycles/line)" in row for row in scan), scan)
        ratio = [row for row in md.splitlines() if row.startswith("| scan | 4K | kvm / coherent | ")]
        self.assertTrue(ratio and "n/a (below floor)" in ratio[0], md)
        self.assertIsNone(NEGATIVE.search("\n".join(table_rows(md, "alpha") + table_rows(md, "zeta") + scan)))
        # Drawn at the floor with a legend entry, not left out silently.
        with open(os.path.join(out, "cost_vs_footprint.svg"), encoding="utf-8") as f:
            self.assertIn("below floor: drawn at the floor", f.read())
        self.assertIn("cost_vs_footprint: below the timing floor", md)


class Caveats(Files):
    def test_timing_and_emulation_come_first_and_at_the_top(self):
        cells = [measured("alpha", 4096, [900.0, 1000.0, 1100.0, 950.0, 1050.0])]
        timing = [timing_entry(check="failed", problems=["nop/0/coherent measures 812.0 cycles, not zero within ±40.0"],
                               emulation=True, tcg=True)]
        phases = [phase("coherent", "unverified", "no kernel answer: no kprobe PMU")]
        doc = schema5(cells, timing=timing, phases=phases)
        doc["context"]["flushbench"]["run"].update({"interrupted": True, "cells": 1, "cells_planned": 4})
        doc["context"].update({"load_avg": [9.0, 9.0, 9.0], "num_cpus": 2})
        done, out = self.report([self.write("r.json", doc)], {})
        self.assertEqual(done.returncode, 0, done.stderr)
        md = read_md(out)
        cav = caveat_lines(md)
        kinds = ["EMULATED (TCG)", "TIMING CHECK FAILED", "EMULATED INSTRUCTIONS", "UNVERIFIED", "interrupted", "load average"]
        where = [next((i for i, c in enumerate(cav) if k in c), None) for k in kinds]
        self.assertNotIn(None, where, cav)
        self.assertEqual(where, sorted(where), cav)
        self.assertEqual(where[:3], [0, 1, 2], cav)
        self.assertIn("812.0 cycles", cav[1])
        # At the top of the report, before the hosts: the warnings and each run's floor.
        top = md.split("## Hosts", 1)[0]
        for k in kinds[:3]:
            self.assertIn(k, top)
        self.assertIn("| r.json | run 1 (kvm) | ±40 cycles | nop per op", top)
        with open(os.path.join(out, "report.html"), encoding="utf-8") as f:
            page = f.read()
        self.assertLess(page.index("TIMING CHECK FAILED"), page.index("<h2>Hosts</h2>"))
        # Mode evidence: the phase in its own table, and the caveat with its summary.
        self.assertIn("| r.json | run 1, boot 1, phase 1 | coherent | unverified | - | no kernel answer: no kprobe PMU |", md)
        self.assertIn("no kernel answer: no kprobe PMU", cav[3])

    def test_a_fact_several_runs_share_is_one_line_naming_them(self):
        cells = [measured("alpha", 4096, [900.0, 1000.0, 1100.0, 950.0, 1050.0])]
        timing = [timing_entry(run=0, emulation=True, tcg=True), timing_entry(run=1, emulation=True, tcg=True),
                  timing_entry(run=2, check="failed", problems=["nop/0/coherent measures 812.0 cycles, not zero within ±40.0"])]
        done, out = self.report([self.write("r.json", schema5(cells, timing=timing))], {})
        self.assertEqual(done.returncode, 0, done.stderr)
        cav = caveat_lines(read_md(out))
        for kind in ("EMULATED (TCG)", "TIMING CHECK FAILED", "EMULATED INSTRUCTIONS"):
            self.assertEqual(sum(kind in c for c in cav), 1, cav)
        self.assertTrue(cav[0].startswith("r.json: EMULATED (TCG), runs 1, 2 (kvm): "), cav)
        self.assertTrue(cav[1].startswith("r.json: TIMING CHECK FAILED, run 3 (kvm): nop/0/coherent measures 812.0"), cav)
        self.assertTrue(cav[2].startswith("r.json: EMULATED INSTRUCTIONS, runs 1, 2 (kvm): "), cav)
        self.assertIn("2 cells", cav[2])

    def test_a_clean_run_has_no_timing_warning_and_an_old_file_says_it_has_no_check(self):
        cells = [measured("alpha", 4096, [900.0, 1000.0, 1100.0, 950.0, 1050.0])]
        done, out = self.report([self.write("new.json", schema5(cells, timing=[timing_entry()],
                                                                phases=[phase("coherent", "confirmed", "ok", "no-vfio-file")])),
                                 self.write("old.json", results([legacy("alpha", 4096, [1100, 1200, 1300], 100)]))], {})
        self.assertEqual(done.returncode, 0, done.stderr)
        md = read_md(out)
        self.assertNotIn("TIMING CHECK FAILED", md)
        self.assertNotIn("EMULATED", md)
        cav = caveat_lines(md)
        self.assertTrue(cav[0].startswith("old.json: no timing floor or self-check"), cav)
        self.assertFalse(any("UNVERIFIED" in c for c in cav), cav)


def neighbour_doc(rounds):
    """A neighbour run in both shapes: idle and wbinvd@max (and wbinvd@1000), 3 shuffled rounds with
    idle windows either side (schema 5), or one window per step against the pooled idle (before)."""
    slice_s, t = 0.01, 0.0
    start, end, chase, stream, pre = [], [], [], [], []
    windows, steps = [], {}
    plan = []
    if rounds:
        for rnd, order in enumerate([("wbinvd@max", "wbinvd@1000"), ("wbinvd@1000", "wbinvd@max"), ("wbinvd@max", "wbinvd@1000")]):
            plan += [("idle", rnd, 0), (order[0], rnd, 1), ("idle", rnd, 2), (order[1], rnd, 3), ("idle", rnd, 4)]
    else:
        plan = [("idle", None, 0), ("wbinvd@1000", None, 1), ("wbinvd@max", None, 2), ("idle", None, 3)]
    for step, rnd, slot in plan:
        w0 = t
        slow = {"idle": 1.0, "wbinvd@1000": 1.01, "wbinvd@max": 1.5}[step]
        for i in range(30):
            start.append(t)
            end.append(t + slice_s)
            chase.append(40.0 * slow + (i % 3) * 0.1)
            stream.append(24.0 / slow)
            pre.append(1 if i == 0 else 0)
            t += slice_s
        idle = step == "idle"
        label = step if rnd is None else (f"idle:r{rnd}.{slot}" if idle else f"{step}:r{rnd}")
        rate = "idle" if idle else step.split("@")[1]
        w = {"label": label, "mode": "coherent", "pattern": "nop" if idle else "wbinvd", "rate": rate, "ms": 300,
             "footprint_bytes": 4096, "start_s": w0 - 1e-6, "end_s": t + 1e-6, "ops": 0 if idle else 300, "late": 0,
             "baseline": idle, "achieved_hz": 0.0 if idle else 1000.0}
        sd = {"estimate": slow, "lo": slow - 0.02, "hi": slow + 0.02, "level": 0.95}
        eff = {"slices": 29, "slowdown": sd, "stream_ratio": {"estimate": 1 / slow, "lo": 0.9 / slow, "hi": 1.1 / slow, "level": 0.95},
               "chase_ns": {"median": 40.0 * slow, "median_ci": {"lo": 40.0 * slow - 0.1, "hi": 40.0 * slow + 0.1}},
               "chase_test": {"p": 1e-9 if slow > 1.02 else 0.4}, "significant": slow > 1.02}
        if rounds:
            w.update({"step": step, "round": rnd, "preempted_slices": 1})
            if idle:
                w["verdict"] = "baseline (idle)"
            else:
                call = "slower, beyond idle drift" if slow > 1.02 else "no effect beyond idle drift"
                w.update({"compared_with": [f"idle:r{rnd}.{slot - 1}", f"idle:r{rnd}.{slot + 1}"], "idle_drift": 0.004,
                          "effect": eff, "verdict": call})
                steps.setdefault(step, []).append({"round": rnd, "label": label, "slowdown": sd, "idle_drift": 0.004, "call": call})
        else:
            eff["preempted_slices"] = 1  # kept, before rounds
            if idle:
                eff = dict(eff, slowdown={"estimate": 1.0, "lo": 0.99, "hi": 1.01, "level": 0.95}, significant=False)
            w.update({"effect": eff, "idle_drift": 0.004,
                      "verdict": "baseline (idle)" if idle else "slower, beyond idle drift" if slow > 1.02 else "within idle drift (+-0.4%)"})
        windows.append(w)
    run = {"run": 0, "backend": "kvm", "cpu": 1, "vcpu_cpu": 0, "slice_ms": 10, "buffer_bytes": 1 << 20, "capped": False,
           "t0_ns": 0, "clock": "CLOCK_MONOTONIC",
           "slices": {"start_s": start, "end_s": end, "chase_ns": chase, "stream_gbs": stream, "preemptions": pre},
           "windows": windows}
    if rounds:
        run["steps"] = [{"step": st, "mode": "coherent", "rounds": rs,
                         "slowdown": {"median": rs[1]["slowdown"]["estimate"], "min": rs[0]["slowdown"]["estimate"],
                                      "max": rs[2]["slowdown"]["estimate"]},
                         "verdict": "slower, in every round (3 of 3)" if st == "wbinvd@max"
                         else "no effect beyond idle drift (0 slower, 0 faster, 3 neither, of 3 rounds)"}
                        for st, rs in sorted(steps.items())]
    paced = [{"backend": "kvm", "mode": "coherent", "pattern": w["pattern"], "footprint_bytes": w["footprint_bytes"], "tsc": [],
              "status": "ok", "pace": {"label": w["label"], "rate": w["rate"], "ms": 300, "finished": True}} for w in windows]
    table = TABLE + [{"name": "nop", "group": "flush", "what": "empty timed region"},
                     {"name": "wbinvd", "group": "flush", "whole_cache": True, "what": "WBINVD after dirtying"}]
    doc = schema5(paced, patterns=table) if rounds else results(paced, table=table)
    doc["flushbench_neighbour"] = [run]
    return doc


class Neighbour(Files):
    def check(self, md, out):
        for name in ("neighbour_timeline", "neighbour_slowdown"):
            for ext in ("svg", "png"):
                self.assertGreater(os.path.getsize(os.path.join(out, f"{name}.{ext}")), 1000, f"{name}.{ext}")
        self.assertIn("| step | mode | rounds | median slowdown [min, max] | verdict |", md)
        self.assertIn("| median ns/load [95% CI] | slowdown [95% CI] | stream ratio [95% CI] | p | verdict |", md)
        self.assertTrue(table_rows(md, "idle")[0].startswith("| idle | coherent | "), md)
        self.assertIn("Largest significant slowdown: during wbinvd@max (coherent", md)

    def test_rounds_one_row_per_step_and_every_window(self):
        done, out = self.report([self.write("nb.json", neighbour_doc(rounds=True))], {})
        self.assertEqual(done.returncode, 0, done.stderr)
        md = read_md(out)
        self.check(md, out)
        self.assertIn("| wbinvd@max | coherent | 3 | 1.500 [1.500, 1.500] | slower, in every round (3 of 3) |", md)
        self.assertIn("| wbinvd@1000 | coherent | 3 | 1.010 [1.010, 1.010] | no effect beyond idle drift", md)
        self.assertIn("| idle | coherent | 9 | baseline | baseline (idle): the idle windows beside a step differ by 0.4%", md)
        self.assertEqual(len(table_rows(md, "wbinvd@max:r1")), 1)
        self.assertIn("| idle:r1.2 | coherent | idle | 0 | 29 (+1 preempted, left out) |", md)
        self.assertIn("median of 3 rounds", md)
        self.assertIn("slices had the neighbour preempted by the host scheduler and were left out", md)
        with open(os.path.join(out, "neighbour_timeline.svg"), encoding="utf-8") as f:
            svg = f.read()
        self.assertIn("guest step wbinvd@max", svg)  # shaded by step, in the legend
        self.assertIn("left out of the comparisons", svg)
        with open(os.path.join(out, "neighbour_slowdown.svg"), encoding="utf-8") as f:
            svg = f.read()
        self.assertIn("wbinvd@max (1,000/s)", svg)
        self.assertIn("median over the rounds", svg)

    def test_a_file_from_before_rounds_still_reads(self):
        done, out = self.report([self.write("old.json", neighbour_doc(rounds=False))], {})
        self.assertEqual(done.returncode, 0, done.stderr)
        md = read_md(out)
        self.check(md, out)
        self.assertIn("| wbinvd@max | coherent | 1 | 1.500 [1.500, 1.500] | slower, beyond idle drift |", md)
        self.assertIn("| wbinvd@1000 | coherent | 1 | 1.010 [1.010, 1.010] | within idle drift (+-0.4%) |", md)
        self.assertIn("| wbinvd@max | coherent | 1,000/s | 300 | 29 | pooled idle | ±0.4% |", md)
        self.assertIn("95% CI +48.0% to +52.0%", md)
        self.assertIn("preempted by the host scheduler: kept", md)


class DirtyMask(Files):
    def mask_cells(self):
        cells = []
        for width, cost in ((1, 20000.0), (2, 41000.0), (4, 79000.0)):
            ev = {"verdict": "confirmed", "source": "kprobes", "summary": "registered", "run": 0, "boot": 0, "phase": 1,
                  "wbinvd_exits": 40, "wbinvd_flushes": 40 * width, "flushes_per_wbinvd": float(width)}
            cells.append(measured("alpha", 4096, [cost * f for f in (0.99, 1.0, 1.01, 1.0, 0.995)], mode=f"noncoherent+mask{width}",
                                  evidence=ev))
        return cells

    def test_the_figure_comes_with_mask_cells_only(self):
        plain = [measured("alpha", 4096, [900.0, 1000.0, 1100.0, 950.0, 1050.0])]
        done, out = self.report([self.write("plain.json", schema5(plain))], {})
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertFalse(os.path.exists(os.path.join(out, "dirty_mask.svg")))
        self.assertNotIn("dirty_mask", read_md(out))

        table = [dict(e, whole_cache=e["name"] == "alpha") for e in TABLE]
        done, out = self.report([self.write("mask.json", schema5(self.mask_cells() + plain, patterns=table))], {})
        self.assertEqual(done.returncode, 0, done.stderr)
        for ext in ("svg", "png"):
            self.assertGreater(os.path.getsize(os.path.join(out, f"dirty_mask.{ext}")), 1000)
        md = read_md(out)
        self.assertIn("dirty_mask.svg", md)
        with open(os.path.join(out, "dirty_mask.svg"), encoding="utf-8") as f:
            svg = f.read()
        self.assertIn("kvm / noncoherent, 4K", svg)  # one line per mode and footprint
        for width in (1, 2, 4):
            self.assertIn(f"{width} flush{'es' if width > 1 else ''}/WBINVD", svg)

    def test_a_pattern_the_table_says_is_not_whole_cache_stays_out(self):
        table = [dict(e, whole_cache=False) for e in TABLE]
        done, out = self.report([self.write("mask.json", schema5(self.mask_cells(), patterns=table))], {})
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertFalse(os.path.exists(os.path.join(out, "dirty_mask.svg")))


if __name__ == "__main__":
    unittest.main()
