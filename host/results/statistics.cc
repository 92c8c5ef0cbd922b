#include "host/results/statistics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

namespace fb {
using nlohmann::json;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// 1 / Phi^-1(3/4): turns the MAD into a consistent estimate of sigma for normal data.
constexpr double kMadToSigma = 1.482602218505602;
// Phi^-1(3/4): the modified z-score's constant (Iglewicz and Hoaglin, 1993).
constexpr double kModifiedZ = 0.6745;
constexpr double kModifiedZLimit = 3.5;

// Median of v, reordering it: the bootstrap calls this thousands of times, so no full sort.
double median_inplace(std::vector<double>& v) {
    size_t n = v.size();
    if (n == 0) return kNaN;
    auto mid = v.begin() + std::ptrdiff_t(n / 2);
    std::nth_element(v.begin(), mid, v.end());
    double hi = *mid;
    if (n % 2) return hi;
    double lo = *std::max_element(v.begin(), mid);
    return lo + (hi - lo) / 2;
}

// One bootstrap replicate of x into out: n draws with replacement. `% n` has a bias of at most
// n / 2^64, far below anything a percentile of 2000 replicates can resolve.
void resample(std::span<const double> x, std::mt19937_64& rng, std::vector<double>& out) {
    out.resize(x.size());
    for (auto& v : out) v = x[rng() % x.size()];
}

Interval percentile_interval(double estimate, std::vector<double>& replicates) {
    std::sort(replicates.begin(), replicates.end());
    double tail = (1 - kConfidence) / 2 * 100;
    return {estimate, percentile_sorted(replicates, tail), percentile_sorted(replicates, 100 - tail)};
}

// Resamples a and b independently and applies stat(median(a*), median(b*)).
template <typename Stat>
Interval two_sample_ci(std::span<const double> a, std::span<const double> b, uint64_t seed, int resamples, Stat stat,
                       bool& all_defined) {
    all_defined = true;
    double estimate = stat(median(a), median(b));
    if (a.empty() || b.empty() || resamples <= 0) return {estimate, kNaN, kNaN};
    std::mt19937_64 rng(seed);
    std::vector<double> ra, rb, reps;
    reps.reserve(size_t(resamples));
    for (int i = 0; i < resamples; ++i) {
        resample(a, rng, ra);
        resample(b, rng, rb);
        double v = stat(median_inplace(ra), median_inplace(rb));
        if (!std::isfinite(v)) all_defined = false;
        reps.push_back(v);
    }
    if (!all_defined) return {estimate, kNaN, kNaN};
    return percentile_interval(estimate, reps);
}

double normal_sf(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

// P(U <= k) counts for sample sizes m (the smaller) and n, by placing the m values one sorted
// position at a time: a value of the first sample at position t, after j of its own, has t - j
// values of the second sample below it and so adds t - j to U. Returns the count of placements
// with U <= k divided by C(m + n, m).
double exact_cdf(size_t m, size_t n, size_t k) {
    size_t N = m + n, umax = m * n;
    std::vector<std::vector<double>> dp(m + 1, std::vector<double>(umax + 1, 0));
    dp[0][0] = 1;
    for (size_t t = 0; t < N; ++t)
        for (size_t j = std::min(m, t + 1); j-- > 0;) {
            if (t < j) continue;
            size_t add = t - j;
            if (add > n) continue;
            for (size_t u = umax - add + 1; u-- > 0;)
                if (dp[j][u] != 0) dp[j + 1][u + add] += dp[j][u];
        }
    double below = 0, total = 0;
    for (size_t u = 0; u <= umax; ++u) {
        total += dp[m][u];
        if (u <= k) below += dp[m][u];
    }
    return below / total;
}

}  // namespace

double percentile_sorted(std::span<const double> sorted, double p) {
    size_t n = sorted.size();
    if (n == 0) return kNaN;
    double h = (double(n) - 1) * std::clamp(p, 0.0, 100.0) / 100;
    size_t lo = size_t(std::floor(h));
    if (lo + 1 >= n) return sorted[n - 1];
    double t = h - double(lo), a = sorted[lo], b = sorted[lo + 1];
    // numpy's _lerp: from the nearer end, so the result never overshoots b.
    return t < 0.5 ? a + (b - a) * t : b - (b - a) * (1 - t);
}

double median(std::span<const double> x) {
    std::vector<double> v(x.begin(), x.end());
    return median_inplace(v);
}

Summary summarize(std::span<const double> x, uint64_t seed, int resamples) {
    Summary s;
    s.n = x.size();
    s.seed = seed;
    s.resamples = resamples;
    if (x.empty()) {
        s.min = s.max = s.median = s.mean = s.p5 = s.p95 = s.q1 = s.q3 = s.mad = s.mad_scaled = s.stddev = s.cv = kNaN;
        s.tukey_lo = s.tukey_hi = kNaN;
        s.median_ci = {kNaN, kNaN, kNaN};
        return s;
    }
    std::vector<double> sorted(x.begin(), x.end());
    std::sort(sorted.begin(), sorted.end());
    s.min = sorted.front();
    s.max = sorted.back();
    s.median = percentile_sorted(sorted, 50);
    s.p5 = percentile_sorted(sorted, 5);
    s.p95 = percentile_sorted(sorted, 95);
    s.q1 = percentile_sorted(sorted, 25);
    s.q3 = percentile_sorted(sorted, 75);
    s.mean = std::accumulate(x.begin(), x.end(), 0.0) / double(s.n);
    double ss = 0;
    for (double v : x) ss += (v - s.mean) * (v - s.mean);
    s.stddev = s.n > 1 ? std::sqrt(ss / double(s.n - 1)) : kNaN;
    s.cv = s.mean != 0 ? s.stddev / s.mean : kNaN;

    std::vector<double> dev;
    dev.reserve(s.n);
    for (double v : x) dev.push_back(std::fabs(v - s.median));
    s.mad = median_inplace(dev);
    s.mad_scaled = kMadToSigma * s.mad;

    double iqr = s.q3 - s.q1;
    s.tukey_lo = s.q1 - 1.5 * iqr;
    s.tukey_hi = s.q3 + 1.5 * iqr;
    for (size_t i = 0; i < s.n; ++i) {
        bool tukey = x[i] < s.tukey_lo || x[i] > s.tukey_hi;
        // With MAD = 0 (over half the samples identical) the score is undefined: flag nothing
        // rather than everything that differs from the median.
        bool mad = s.mad > 0 && kModifiedZ * std::fabs(x[i] - s.median) / s.mad > kModifiedZLimit;
        if (tukey) s.outliers_tukey.push_back(i);
        if (mad) s.outliers_mad.push_back(i);
        if (tukey || mad) s.outliers.push_back(i);
    }

    if (resamples > 0) {
        std::mt19937_64 rng(seed);
        std::vector<double> r, reps;
        reps.reserve(size_t(resamples));
        for (int i = 0; i < resamples; ++i) {
            resample(x, rng, r);
            reps.push_back(median_inplace(r));
        }
        s.median_ci = percentile_interval(s.median, reps);
    } else {
        s.median_ci = {s.median, kNaN, kNaN};
    }
    return s;
}

json to_json(const Interval& i) {
    return {{"estimate", i.estimate}, {"lo", i.lo}, {"hi", i.hi}, {"level", kConfidence}};
}

json to_json(const Summary& s) {
    return {{"n", s.n}, {"min", s.min}, {"max", s.max}, {"median", s.median}, {"mean", s.mean},
            {"p5", s.p5}, {"p95", s.p95}, {"q1", s.q1}, {"q3", s.q3},
            {"mad", s.mad}, {"mad_scaled", s.mad_scaled}, {"stddev", s.stddev}, {"cv", s.cv},
            {"median_ci", to_json(s.median_ci)},
            {"tukey_fences", {s.tukey_lo, s.tukey_hi}},
            {"outliers", s.outliers}, {"outliers_tukey", s.outliers_tukey}, {"outliers_mad", s.outliers_mad},
            {"bootstrap", {{"method", "percentile"}, {"resamples", s.resamples}, {"seed", s.seed}, {"rng", "mt19937_64"}}},
            {"notes", "mad is raw (median absolute deviation); mad_scaled = 1.4826 * mad; stddev is the sample (n-1) "
                      "deviation; percentiles use linear interpolation; outliers are flagged, not removed"}};
}

Interval ratio_ci(std::span<const double> a, std::span<const double> b, uint64_t seed, int resamples) {
    // A ratio to a median that is not positive (an empty bracket's net cost, say) has no meaning.
    auto ratio = [](double x, double y) { return y > 0 ? x / y : kNaN; };
    bool defined = true;  // false: some replicate's denominator was not positive, so no interval
    return two_sample_ci(a, b, seed, resamples, ratio, defined);
}

Interval difference_ci(std::span<const double> a, std::span<const double> b, uint64_t seed, int resamples) {
    bool defined = true;
    return two_sample_ci(a, b, seed, resamples, [](double x, double y) { return x - y; }, defined);
}

MannWhitney mann_whitney_u(std::span<const double> x, std::span<const double> y) {
    MannWhitney r;
    size_t n1 = x.size(), n2 = y.size(), n = n1 + n2;
    if (n1 == 0 || n2 == 0) {
        r.p = kNaN;
        return r;
    }
    // Average ranks over the pooled sample (scipy.stats.rankdata's default), and the tie term.
    std::vector<std::pair<double, size_t>> pooled;
    pooled.reserve(n);
    for (size_t i = 0; i < n1; ++i) pooled.push_back({x[i], i});
    for (size_t i = 0; i < n2; ++i) pooled.push_back({y[i], n1 + i});
    std::sort(pooled.begin(), pooled.end());
    double r1 = 0, tie_term = 0;
    bool ties = false;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && pooled[j + 1].first == pooled[i].first) ++j;
        double rank = (double(i) + double(j)) / 2 + 1, t = double(j - i + 1);
        if (j > i) ties = true, tie_term += t * t * t - t;
        for (size_t k = i; k <= j; ++k)
            if (pooled[k].second < n1) r1 += rank;
        i = j + 1;
    }
    r.u1 = r1 - double(n1) * double(n1 + 1) / 2;
    double u2 = double(n1) * double(n2) - r.u1;
    double u = std::max(r.u1, u2);

    size_t small = std::min(n1, n2), large = std::max(n1, n2);
    bool exact = !(n1 > 8 && n2 > 8) && !ties;
    // Cost of exact_cdf: positions x first-sample values x U range.
    if (exact && double(n) * double(small) * double(small) * double(large) > 2e8) exact = false;
    if (exact) {
        r.exact = true;
        // Two-sided: twice P(U >= u); the null distribution is symmetric, so P(U <= mn - u).
        double k = double(n1) * double(n2) - u;
        r.p = 2 * exact_cdf(small, large, size_t(std::llround(std::floor(k))));
    } else {
        double mu = double(n1) * double(n2) / 2, nn = double(n);
        double s = std::sqrt(double(n1) * double(n2) / 12 * ((nn + 1) - tie_term / (nn * (nn - 1))));
        // Continuity correction: U is discrete, the normal is not.
        r.p = s > 0 ? 2 * normal_sf((u - mu - 0.5) / s) : 1;
    }
    r.p = std::clamp(r.p, 0.0, 1.0);
    return r;
}

std::vector<double> estimates(std::span<const uint64_t> value, std::span<const uint64_t> ref, uint32_t k) {
    std::vector<double> v;
    size_t n = std::min(value.size(), ref.size());
    v.reserve(n);
    // Differences of unsigned TSC deltas, taken signed: a repetition may well measure below zero.
    for (size_t i = 0; i < n; ++i) v.push_back(double(int64_t(value[i] - ref[i])) / double(k ? k : 1));
    return v;
}

std::vector<double> net_cycles(const Cell& c) {
    if (!c.method.empty() && c.ref.size() == c.tsc.size()) return estimates(c.tsc, c.ref, c.batch);
    std::vector<double> v;
    v.reserve(c.tsc.size());
    for (uint64_t t : c.tsc) v.push_back(double(t) - double(c.tsc_overhead));
    return v;
}

Summary cell_summary(const Cell& c) { return c.net_summary ? *c.net_summary : summarize(net_cycles(c)); }

void finalize_summary(Cell& c) {
    c.net_summary.reset();  // its samples may have changed since (a culprit's are cleared)
    if (!c.tsc.empty()) c.net_summary = std::make_shared<const Summary>(summarize(net_cycles(c)));
}

double timing_floor(std::span<const double> nop) {
    if (nop.size() < 2) return std::numeric_limits<double>::quiet_NaN();
    std::vector<double> v(nop.begin(), nop.end());
    std::sort(v.begin(), v.end());
    return std::max(std::fabs(percentile_sorted(v, 2.5)), std::fabs(percentile_sorted(v, 97.5)));
}

CostReading read_cost(const Summary& s, double floor) {
    double own = (s.median_ci.hi - s.median_ci.lo) / 2;
    double bound = std::isfinite(floor) ? std::max(floor, own) : own;
    return {s.n > 0 && s.median <= bound, bound};
}

std::string cost_text(const Summary& s, double floor, const char* fmt) {
    CostReading r = read_cost(s, floor);
    if (r.below_floor) {
        int decimals = r.bound >= 10 ? 0 : r.bound >= 1 ? 1 : r.bound > 0 ? 1 - int(std::floor(std::log10(r.bound))) : 1;
        return fmt::format("below floor (±{:.{}f} cycles)", r.bound, decimals);
    }
    return fmt::format(fmt::runtime(fmt), s.median);
}

}  // namespace fb
