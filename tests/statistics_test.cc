// The estimators of host/statistics.h against reference values from numpy 1.24 / scipy 1.10
// (Debian 12's python3-numpy, python3-scipy). The reference values were computed with:
//
//   import numpy as np, scipy.stats as st
//   def show(x):
//       x = np.asarray(x, float); med = np.median(x); mad = np.median(abs(x - med))
//       q1, q3 = np.percentile(x, [25, 75]); iqr = q3 - q1
//       print(len(x), x.min(), x.max(), med, x.mean(), np.percentile(x, 5), np.percentile(x, 95), q1, q3,
//             mad, st.median_abs_deviation(x, scale='normal'), x.std(ddof=1), x.std(ddof=1) / x.mean(),
//             [i for i, v in enumerate(x) if v < q1 - 1.5 * iqr or v > q3 + 1.5 * iqr],
//             [i for i, v in enumerate(x) if mad > 0 and 0.6745 * abs(v - med) / mad > 3.5])
//   show([2, 4, 4, 4, 5, 5, 7, 9]); show([10, 11, 12, 11, 10, 13, 11, 12, 50, 11, 10])
//   show([3.7, 1.2, 9.9, 4.4, 0.5, 6.1, 2.2])
//   r = st.mannwhitneyu(x, y, alternative='two-sided', method='auto'); print(r.statistic, r.pvalue)
//
//   # bootstrap references (percentile method, 100000 resamples, so only Monte Carlo noise differs)
//   n = 101; q = (np.arange(n) + 0.5) / n
//   x = 1000 + 50 * st.norm.ppf(q); y = 2000 + 80 * st.norm.ppf(q)
//   st.bootstrap((x,), np.median, method='percentile', n_resamples=100000, random_state=1, vectorized=True, axis=-1)
//   st.bootstrap((y, x), lambda a, b, axis=-1: np.median(a, axis=axis) / np.median(b, axis=axis), ...)
//   st.bootstrap((y, x), lambda a, b, axis=-1: np.median(a, axis=axis) - np.median(b, axis=axis), ...)
#include "host/results/statistics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace fb {
namespace {

// The normal quantile function, so the bootstrap data set is the same deterministic one as in
// the Python snippet above (scipy.stats.norm.ppf) without shipping 101 literals.
double norm_ppf(double p) {
    // Bisection on the CDF: slow, exact to double precision, and obviously right.
    double lo = -10, hi = 10;
    for (int i = 0; i < 200; ++i) {
        double mid = (lo + hi) / 2;
        (0.5 * std::erfc(-mid / std::sqrt(2.0)) < p ? lo : hi) = mid;
    }
    return (lo + hi) / 2;
}

std::vector<double> normal_quantiles(size_t n, double mean, double sigma) {
    std::vector<double> v;
    for (size_t i = 0; i < n; ++i) v.push_back(mean + sigma * norm_ppf((double(i) + 0.5) / double(n)));
    return v;
}

TEST(Statistics, SummaryMatchesNumpyOnAClassicDataSet) {
    std::vector<double> a = {2, 4, 4, 4, 5, 5, 7, 9};
    Summary s = summarize(a);
    EXPECT_EQ(s.n, 8u);
    EXPECT_DOUBLE_EQ(s.min, 2);
    EXPECT_DOUBLE_EQ(s.max, 9);
    EXPECT_DOUBLE_EQ(s.median, 4.5);
    EXPECT_DOUBLE_EQ(s.mean, 5);
    EXPECT_NEAR(s.p5, 2.7, 1e-12);
    EXPECT_NEAR(s.p95, 8.299999999999999, 1e-12);
    EXPECT_DOUBLE_EQ(s.q1, 4);
    EXPECT_DOUBLE_EQ(s.q3, 5.5);
    EXPECT_DOUBLE_EQ(s.mad, 0.5);
    EXPECT_NEAR(s.mad_scaled, 0.741301109252801, 1e-12);
    EXPECT_NEAR(s.stddev, 2.138089935299395, 1e-12);
    EXPECT_NEAR(s.cv, 0.427617987059879, 1e-12);
    EXPECT_EQ(s.outliers_tukey, std::vector<size_t>{7});
    EXPECT_EQ(s.outliers_mad, std::vector<size_t>{7});
    EXPECT_EQ(s.outliers, std::vector<size_t>{7});
}

TEST(Statistics, OutlierIsFlaggedNotDropped) {
    std::vector<double> b = {10, 11, 12, 11, 10, 13, 11, 12, 50, 11, 10};
    Summary s = summarize(b);
    EXPECT_EQ(s.n, b.size());
    EXPECT_DOUBLE_EQ(s.max, 50);  // still there
    EXPECT_NEAR(s.mean, 14.636363636363637, 1e-12);
    EXPECT_DOUBLE_EQ(s.median, 11);
    EXPECT_DOUBLE_EQ(s.p5, 10);
    EXPECT_NEAR(s.p95, 31.5, 1e-12);
    EXPECT_DOUBLE_EQ(s.q1, 10.5);
    EXPECT_DOUBLE_EQ(s.q3, 12);
    EXPECT_DOUBLE_EQ(s.mad, 1);
    EXPECT_NEAR(s.mad_scaled, 1.482602218505602, 1e-12);
    EXPECT_NEAR(s.stddev, 11.766670958879807, 1e-12);
    EXPECT_NEAR(s.cv, 0.8039340406688067, 1e-12);
    EXPECT_EQ(s.outliers, std::vector<size_t>{8});
}

TEST(Statistics, OddSampleWithoutOutliers) {
    std::vector<double> c = {3.7, 1.2, 9.9, 4.4, 0.5, 6.1, 2.2};
    Summary s = summarize(c);
    EXPECT_DOUBLE_EQ(s.median, 3.7);
    EXPECT_NEAR(s.mean, 4.000000000000001, 1e-12);
    EXPECT_NEAR(s.p5, 0.71, 1e-12);
    EXPECT_NEAR(s.p95, 8.759999999999998, 1e-12);
    EXPECT_NEAR(s.q1, 1.7, 1e-12);
    EXPECT_NEAR(s.q3, 5.25, 1e-12);
    EXPECT_NEAR(s.mad, 2.4, 1e-12);
    EXPECT_NEAR(s.mad_scaled, 3.558245324413444, 1e-12);
    EXPECT_NEAR(s.stddev, 3.235222815613581, 1e-12);
    EXPECT_NEAR(s.cv, 0.808805703903395, 1e-12);
    EXPECT_TRUE(s.outliers.empty());
}

TEST(Statistics, DegenerateSamplesAreNaNNotCrashes) {
    Summary empty = summarize(std::vector<double>{});
    EXPECT_EQ(empty.n, 0u);
    EXPECT_TRUE(std::isnan(empty.median));
    Summary one = summarize(std::vector<double>{42});
    EXPECT_DOUBLE_EQ(one.median, 42);
    EXPECT_TRUE(std::isnan(one.stddev));  // numpy: std(ddof=1) of one value is nan
    EXPECT_DOUBLE_EQ(one.median_ci.lo, 42);
    EXPECT_DOUBLE_EQ(one.median_ci.hi, 42);
    // Over half the values identical: MAD is 0 and the MAD rule flags nothing.
    Summary flat = summarize(std::vector<double>{5, 5, 5, 5, 5, 6, 100});
    EXPECT_DOUBLE_EQ(flat.mad, 0);
    EXPECT_TRUE(flat.outliers_mad.empty());
    EXPECT_EQ(flat.outliers_tukey, std::vector<size_t>{6});  // fences [4.25, 6.25]
    // JSON: NaN becomes null, never an invalid number.
    std::string text = to_json(one).dump();
    EXPECT_NE(text.find("\"stddev\":null"), std::string::npos) << text;
}

TEST(Statistics, BootstrapMedianIntervalMatchesScipy) {
    auto x = normal_quantiles(101, 1000, 50);
    Summary s = summarize(x);
    EXPECT_NEAR(s.median, 1000, 1e-9);
    // scipy (100000 resamples): [987.4607408625882, 1012.5392591374118]. The bootstrap median
    // only takes sample values; neighbouring order statistics here are ~1.25 apart, so allow two.
    EXPECT_NEAR(s.median_ci.lo, 987.4607408625882, 2.6);
    EXPECT_NEAR(s.median_ci.hi, 1012.5392591374118, 2.6);
    EXPECT_EQ(s.resamples, kBootstrapResamples);
    // Reproducible: the same seed gives the same interval, another seed a (slightly) different one.
    Summary again = summarize(x);
    EXPECT_EQ(again.median_ci.lo, s.median_ci.lo);
    EXPECT_EQ(again.median_ci.hi, s.median_ci.hi);
    auto j = to_json(s);
    EXPECT_EQ(j["bootstrap"]["seed"].get<uint64_t>(), kBootstrapSeed);
    EXPECT_EQ(j["median_ci"]["level"].get<double>(), 0.95);
}

TEST(Statistics, RatioAndDifferenceOfMediansMatchScipy) {
    auto x = normal_quantiles(101, 1000, 50), y = normal_quantiles(101, 2000, 80);
    Interval r = ratio_ci(y, x);
    EXPECT_NEAR(r.estimate, 2.0, 1e-9);
    // scipy: [1.9691756964948406, 2.031706603369184]
    EXPECT_NEAR(r.lo, 1.9691756964948406, 0.004);
    EXPECT_NEAR(r.hi, 2.031706603369184, 0.004);
    Interval d = difference_ci(y, x);
    EXPECT_NEAR(d.estimate, 1000, 1e-9);
    // scipy: [977.0079296121874, 1023.03211180969]
    EXPECT_NEAR(d.lo, 977.0079296121874, 3);
    EXPECT_NEAR(d.hi, 1023.03211180969, 3);
}

TEST(Statistics, RatioToANonPositiveMedianIsUndefined) {
    std::vector<double> a = {10, 11, 12}, zero = {-1, 0, 0, 1};
    Interval r = ratio_ci(a, zero);
    EXPECT_TRUE(std::isnan(r.estimate));
    EXPECT_TRUE(std::isnan(r.lo));
}

struct MwuCase {
    std::vector<double> x, y;
    double u1, p;
    bool exact;
};

TEST(Statistics, MannWhitneyMatchesScipy) {
    const MwuCase cases[] = {
        // exact (no ties, both small)
        {{1.1, 2.3, 3.5, 4.2, 5.0}, {2.9, 6.1, 7.4, 8.8, 9.3, 10.2}, 3.0, 0.030303030303030304, true},
        // exact: one sample of 8, fully separated
        {{1, 2, 3, 4, 5, 6, 7, 8}, {9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}, 0.0, 1.5876796062554575e-05, true},
        // 9 vs 9 without ties: normal approximation
        {{1, 2, 3, 4, 5, 6, 7, 8, 9}, {3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5, 11.5}, 21.0, 0.0933976745287926, false},
        // small with ties: normal approximation with tie correction
        {{1, 2, 2, 3, 3, 3, 4, 5}, {2, 3, 4, 4, 5, 6, 6, 7}, 13.0, 0.04859743569452557, false},
        // 11 vs 11 with ties and an outlier (like TSC cycles)
        {{10, 11, 12, 11, 10, 13, 11, 12, 50, 11, 10}, {12, 13, 14, 12, 13, 15, 13, 14, 12, 13, 16}, 19.0, 0.006236692878169624, false},
        // all tied: no evidence at all
        {{5, 5, 5}, {5, 5, 5}, 4.5, 1.0, false},
        // exact, p clipped at 1 is not reached
        {{1.5, 2.5}, {3.5, 4.5, 0.5}, 2.0, 0.8, true},
    };
    for (const auto& c : cases) {
        MannWhitney m = mann_whitney_u(c.x, c.y);
        EXPECT_DOUBLE_EQ(m.u1, c.u1);
        EXPECT_NEAR(m.p, c.p, 1e-12 + 1e-9 * c.p) << "x[0]=" << c.x[0];
        EXPECT_EQ(m.exact, c.exact) << "x[0]=" << c.x[0];
    }
    EXPECT_TRUE(std::isnan(mann_whitney_u(std::vector<double>{}, std::vector<double>{1.0}).p));
}

TEST(Statistics, NetCyclesSubtractTheMeasuredBracket) {
    Cell c;
    c.tsc = {1000, 1100, 900};
    c.tsc_overhead = 100;
    EXPECT_EQ(net_cycles(c), (std::vector<double>{900, 1000, 800}));
}

}  // namespace
}  // namespace fb
