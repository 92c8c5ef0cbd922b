// Comparing results: runs against runs (`flushbench compare A.json B.json ...`), hosts against
// hosts (one with IOMMU snoop control, one without), and within one run the ratios the study is
// about (noncoherent over coherent, guest over native, and the trap overhead guest minus native).
// Every figure is a ratio of medians of net TSC cycles with a bootstrap interval, and a two-sided
// Mann-Whitney U p-value, the same test Google Benchmark's compare.py runs.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/results/cell.h"

namespace fb {

inline constexpr double kSignificance = 0.05;

// Rows are (pattern, footprint); columns are (file, host, backend, mode), so several hosts merge
// into one comparison side by side. Each column of a row is compared with a baseline column:
// the same backend and mode in an earlier file (what compare.py matches by name), else the same
// mode in an earlier file (another host or backend), else the row's first column (within one
// file: noncoherent against coherent). Cells repeated within a file (the two coherent phases of an
// A/B/A run) are pooled. Samples are flushbench_cells[].tsc - tsc_overhead, never the Google
// Benchmark entries. `sources` (optional) names the files in the output.
//
// {"alpha", "statistic", "test", "bootstrap", "columns": [{index, label, file, source, host, backend,
//   mode, emulated, fingerprint}], "rows": [{pattern, footprint_bytes, unit, "cells": [{column, name,
//   status, reason, n, median, median_ci: [lo, hi], cells_pooled}], "comparisons": [{column, baseline,
//   ratio, ratio_ci: [lo, hi], difference, difference_ci, p_value, exact, significant, note}]}]}
// Throws std::runtime_error naming the file when a document is not a flushbench results file.
nlohmann::json compare_results(const std::vector<nlohmann::json>& files, const std::vector<std::string>& sources = {},
                               double alpha = kSignificance);

// x against its baseline samples: {ratio, ratio_ci: [lo, hi], difference, difference_ci, p_value,
// u, exact, n: [x, base], significant}, or {note, significant: false, p_value: null} when a side
// has fewer than two samples. The one comparison behind compare_results() and fleet comparisons.
nlohmann::json compare_samples(const std::vector<double>& x, const std::vector<double>& base, double alpha = kSignificance);

// How the comparison tables write a footprint (4K, 16M) and a cost in cycles (12.3k, 1.2M; "-" when
// not a number), the same in `compare` and in fleet comparisons.
std::string footprint_label(uint64_t bytes);
std::string cycles_label(const nlohmann::json& cycles);

// A terminal table of compare_results(): the columns with their hosts, then one line per
// comparison with both medians, the ratio, its interval, the p-value and a '*' when significant.
std::string format_compare_table(const nlohmann::json& comparison);

// Within one run: noncoherent/coherent per (pattern, footprint, backend), and guest/native with the
// trap overhead (guest - native, cycles) where native cells exist. [{kind, pattern,
// footprint_bytes, backend, numerator, denominator, ratio: {estimate, lo, hi, level}, difference,
// p_value, significant}]
nlohmann::json derived_ratios(const std::vector<Cell>& cells, double alpha = kSignificance);

}  // namespace fb
