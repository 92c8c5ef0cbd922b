// Statistics of one cell's repetitions, and of two cells side by side. Flush timings are skewed
// and heavy-tailed (an interrupt, a host preemption, a migration lands in one repetition), so
// everything here is built on the median and on ranks, and intervals come from the bootstrap,
// which assumes no distribution. Bootstrap seeds are fixed: a report computed twice from the
// same results file prints the same intervals.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/results/cell.h"

namespace fb {

// "flushbnc": documented so anyone can reproduce a report's intervals bit for bit
// (std::mt19937_64's output is fixed by the C++ standard; index = draw % n).
inline constexpr uint64_t kBootstrapSeed = 0x666c757368626e63ull;
inline constexpr int kBootstrapResamples = 2000;
inline constexpr double kConfidence = 0.95;  // two-sided, percentile bootstrap

// A point estimate and its interval; NaN (null in JSON) where undefined, e.g. a ratio whose
// denominator median is not positive.
struct Interval {
    double estimate = 0, lo = 0, hi = 0;
};

struct Summary {
    size_t n = 0;
    double min = 0, max = 0, median = 0, mean = 0;
    double p5 = 0, p95 = 0, q1 = 0, q3 = 0;  // numpy's default (linear) interpolation
    double mad = 0;         // raw: median(|x - median|)
    double mad_scaled = 0;  // 1.4826 * mad: estimates sigma for normal data (scipy scale='normal')
    double stddev = 0;      // sample standard deviation (n - 1); NaN for n < 2
    double cv = 0;          // stddev / mean; NaN when mean is 0
    Interval median_ci;     // percentile bootstrap, kConfidence
    // Outliers are flagged, never dropped: a slow repetition may be the very effect under study
    // (a WBINVD on another CPU's behalf). Tukey: outside [q1 - 1.5 IQR, q3 + 1.5 IQR].
    // MAD: modified z-score 0.6745 |x - median| / mad > 3.5 (Iglewicz and Hoaglin).
    double tukey_lo = 0, tukey_hi = 0;
    std::vector<size_t> outliers_tukey, outliers_mad;
    std::vector<size_t> outliers;  // union of both rules, ascending sample indices
    uint64_t seed = kBootstrapSeed;
    int resamples = kBootstrapResamples;
};

Summary summarize(std::span<const double> x, uint64_t seed = kBootstrapSeed, int resamples = kBootstrapResamples);
nlohmann::json to_json(const Summary& s);
nlohmann::json to_json(const Interval& i);  // {"estimate", "lo", "hi", "level"}

// numpy.percentile(x, p) with the default linear interpolation; `sorted` must be ascending.
double percentile_sorted(std::span<const double> sorted, double p);
double median(std::span<const double> x);

// median(a) / median(b), e.g. noncoherent over coherent or guest over native, with a percentile
// bootstrap interval that resamples a and b independently (they are separate runs).
Interval ratio_ci(std::span<const double> a, std::span<const double> b, uint64_t seed = kBootstrapSeed,
                  int resamples = kBootstrapResamples);
// median(a) - median(b): the trap overhead is guest minus native, in cycles.
Interval difference_ci(std::span<const double> a, std::span<const double> b, uint64_t seed = kBootstrapSeed,
                       int resamples = kBootstrapResamples);

// Two-sided Mann-Whitney U test with scipy.stats.mannwhitneyu(x, y, alternative='two-sided',
// method='auto') semantics, which is what Google Benchmark's compare.py runs: exact when either
// sample has at most 8 values and there are no ties, otherwise the normal approximation with tie
// correction and continuity correction. (The exact count is capped at ~2e8 steps; beyond it, a
// sample of more than ~1700 values, the normal approximation is used and `exact` says so.)
struct MannWhitney {
    double u1 = 0;  // U statistic of x, as scipy returns it
    double p = 1;   // NaN when either sample is empty
    bool exact = false;
};
MannWhitney mann_whitney_u(std::span<const double> x, std::span<const double> y);

// Per-repetition costs from raw bracket pairs (common/measure.h): (value - ref) / k, signed.
std::vector<double> estimates(std::span<const uint64_t> value, std::span<const uint64_t> ref, uint32_t k);

// The samples every statistic here is computed on: each repetition's cost in TSC cycles as its
// estimator gives it, (T(2k) - T(k)) / k for batch cells and the pattern's bracket minus the empty
// one for paired cells; for paced steps and cells written before flushbench measured in pairs, the
// bracket minus the guest's calibrated empty-bracket median.
std::vector<double> net_cycles(const Cell& c);

// The cell's Summary of net_cycles: the one stored by finalize_summary, else computed now (a cell
// read back from a journal). finalize_summary is called once, when the cell is final.
Summary cell_summary(const Cell& c);
void finalize_summary(Cell& c);

// The timing floor: how far from zero nop's per-op estimate strays in 95 of 100 repetitions
// (the larger of |2.5th| and |97.5th percentile|): bias and spread of the method together. A
// smaller cost cannot be told from zero on this host. NaN for fewer than two samples.
double timing_floor(std::span<const double> nop_estimates);

// Whether a cost is below the floor: its median is at most the larger of the floor and half its
// own interval (then it is shown as "below floor (±bound cycles)", never as a number, let alone a
// negative one).
struct CostReading {
    bool below_floor = false;
    double bound = 0;
};
CostReading read_cost(const Summary& s, double floor);
// The median formatted with `fmt` ("{:.0f}"), or "below floor (±X cycles)".
std::string cost_text(const Summary& s, double floor, const char* fmt = "{:.0f}");

}  // namespace fb
