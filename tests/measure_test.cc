// The estimators and the stopping rule of common/measure.h, against synthetic timings with known
// answers: brackets that cost far more than the operations, with a spread of thousands, and drift.
// The host's statistics (timing floor, "below floor") on the same data.
#include "common/measure.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "host/results/statistics.h"

namespace fb {
namespace {

using measure::Method;
using measure::Stop;

// A host whose bracket costs `bracket` cycles with a uniform spread of +-spread, drifting by `drift`
// cycles per bracket, around operations of `op` cycles and loop iterations of `loop` cycles.
struct SyntheticHost {
    double bracket = 20000, spread = 3000, drift = 0, op = 100, loop = 7;
    uint32_t k = 64;
    std::mt19937_64 rng{42};
    double now_tsc = 0;
    uint64_t brackets = 0;
    std::vector<char> order;  // 'v' value, 'r' reference: the order the brackets ran in

    uint64_t time_of(double work) {
        std::uniform_real_distribution<double> u(-spread, spread);
        double t = bracket + drift * double(brackets++) + u(rng) + work;
        now_tsc += t;
        return uint64_t(std::llround(t));
    }
    // measure::run's Env
    void prepare() {}
    uint64_t batch(bool doubled) {
        order.push_back(doubled ? 'v' : 'r');
        double iterations = k / measure::kUnroll;
        return time_of((doubled ? 2.0 : 1.0) * k * op + iterations * loop);
    }
    uint64_t value() {
        order.push_back('v');
        return time_of(op);
    }
    uint64_t reference() {
        order.push_back('r');
        return time_of(0);
    }
    void counters_before() {}
    void counters_after(int32_t) {}
    void tick(uint32_t) {}
    uint64_t now() { return uint64_t(now_tsc); }
};

struct Measured {
    measure::Outcome outcome;
    std::vector<double> estimates;
};

Measured run(SyntheticHost& h, Method method, measure::StopRule stop, uint32_t warmup = 2) {
    static std::vector<uint64_t> value(100000), ref(100000);
    static std::vector<int64_t> scratch(100000);
    measure::Plan plan{method, method == Method::batch ? h.k : 1, warmup, stop};
    measure::Samples s{value.data(), ref.data(), scratch.data(), uint32_t(value.size())};
    Measured r;
    r.outcome = measure::run(plan, s, h);
    r.estimates = estimates(std::span(value.data(), r.outcome.n), std::span(ref.data(), r.outcome.n), plan.k);
    return r;
}

measure::StopRule fixed(uint32_t reps) { return {reps, reps, 0, 0}; }

TEST(Batch, TheBracketAndTheLoopCancelEvenWhenTheBracketDwarfsTheOperation) {
    SyntheticHost h;  // a 20,000-cycle bracket +-3,000 around 100-cycle operations
    h.k = 2048;
    Measured r = run(h, Method::batch, fixed(201));
    Summary s = summarize(r.estimates);
    EXPECT_NEAR(s.median, 100.0, 2.0) << "N vs 2N: (T(2k) - T(k)) / k is the operation alone";
    EXPECT_LE(s.median_ci.lo, 100.0);
    EXPECT_GE(s.median_ci.hi, 100.0);
    // The loop's 7 cycles per iteration would have been 7/8 of a cycle per op had it not cancelled.
    EXPECT_LT(std::fabs(s.median - 100.0), 7.0 / measure::kUnroll);
}

TEST(Batch, NopMeasuresZeroWhateverTheBracketCosts) {
    SyntheticHost h;
    h.op = 0;
    h.k = measure::kMaxBatch;
    Measured r = run(h, Method::batch, fixed(101));
    Summary s = summarize(r.estimates);
    EXPECT_NEAR(s.median, 0.0, 1.0);
    double floor = timing_floor(r.estimates);
    EXPECT_LE(std::fabs(s.median), floor) << "nop is zero within the floor it defines";
    EXPECT_LT(floor, 3.0) << "a 3,000-cycle bracket spread over 4,096 operations is about a cycle";
}

TEST(Batch, OperationsIssuedAreCountedThreePerKPerRepetition) {
    SyntheticHost h;
    h.k = 64;
    Measured r = run(h, Method::batch, fixed(10), 3);
    EXPECT_EQ(r.outcome.n, 10u);
    EXPECT_EQ(r.outcome.ops, 13u * 3 * 64) << "T(k) and T(2k), warm-up included";
}

TEST(Paired, DriftCancelsRepetitionByRepetition) {
    SyntheticHost h;
    h.op = 500;
    h.drift = 50;  // the bracket grows by 50 cycles per bracket: 40,000 cycles over the run
    Measured r = run(h, Method::paired, fixed(401));
    Summary s = summarize(r.estimates);
    EXPECT_NEAR(s.median, 500.0, 250.0) << "each repetition's own reference carries the drift away";
    // One overhead calibrated up front and subtracted later, as before, would be off by the drift.
    double calibrated_once = h.bracket;
    double late_value = h.bracket + h.drift * 800 + 500;
    EXPECT_GT(late_value - calibrated_once, 10 * 500.0);
}

TEST(Paired, TheOrderAlternatesSoOrderEffectsCancel) {
    SyntheticHost h;
    run(h, Method::paired, fixed(4), 0);
    EXPECT_EQ(std::string(h.order.begin(), h.order.end()), "vrrvvrrv");
    SyntheticHost b;
    run(b, Method::batch, fixed(2), 0);
    EXPECT_EQ(std::string(b.order.begin(), b.order.end()), "vrrv");
}

TEST(StoppingRule, StopsOnceTheMedianIsKnownButNeverBeforeTheMinimum) {
    SyntheticHost h;
    h.spread = 10;  // a quiet host: 100 +- a few cycles per op after cancellation
    h.k = 256;
    Measured r = run(h, Method::batch, {5, 1000, 10, 0});
    EXPECT_EQ(r.outcome.stop, Stop::precise);
    EXPECT_GE(r.outcome.n, 5u);
    EXPECT_LT(r.outcome.n, 1000u);
}

TEST(StoppingRule, AHopelessCellSpendsItsBudgetAndStops) {
    SyntheticHost h;
    h.op = 0;  // a zero cost is never known to 1% of itself
    Measured r = run(h, Method::paired, {5, 100000, 10, 2'000'000});
    EXPECT_EQ(r.outcome.stop, Stop::budget);
    EXPECT_GE(r.outcome.n, 5u);
    // The budget counts measured repetitions: two warm-up repetitions before it, one past it at most.
    EXPECT_LE(h.now_tsc, 2'000'000 + 3 * 2 * (h.bracket + h.spread)) << "stops within a repetition of its budget";
}

TEST(StoppingRule, WithoutTargetOrBudgetItRunsEveryRepetition) {
    SyntheticHost h;
    Measured r = run(h, Method::paired, {5, 37, 0, 0});
    EXPECT_EQ(r.outcome.stop, Stop::max_reps);
    EXPECT_EQ(r.outcome.n, 37u);
}

TEST(StoppingRule, TheMedianIntervalIsTheOrderStatisticsOfTheBinomial) {
    std::vector<int64_t> x(100);
    for (int i = 0; i < 100; ++i) x[size_t(i)] = i;
    auto m = measure::median_interval(x.data(), 100);
    EXPECT_EQ(m.median, 50);
    EXPECT_EQ(m.lo, 40);  // 50 -+ ceil(0.98 sqrt(100)) = 50 -+ 10
    EXPECT_EQ(m.hi, 60);
    auto small = measure::median_interval(x.data(), 5);
    EXPECT_EQ(small.lo, 0);
    EXPECT_EQ(small.hi, 4) << "five samples: the whole range";
    EXPECT_TRUE(measure::precise_enough({990, 1000, 1005}, 20));
    EXPECT_FALSE(measure::precise_enough({990, 1000, 1005}, 10));
    EXPECT_FALSE(measure::precise_enough({-1, 0, 1}, 1000)) << "zero is never known to a fraction of itself";
    EXPECT_EQ(measure::isqrt(1u << 20), 1024u);
    EXPECT_EQ(measure::isqrt(99), 9u);
}

// Coverage of the order-statistics interval on normal data: about 95 of 100 contain the median.
TEST(StoppingRule, TheIntervalCoversTheTrueMedianAboutNinetyFivePercentOfTheTime) {
    std::mt19937_64 rng(7);
    std::normal_distribution<double> d(1000, 100);
    int covered = 0, trials = 2000;
    for (int t = 0; t < trials; ++t) {
        std::vector<int64_t> x(51);
        for (auto& v : x) v = int64_t(std::llround(d(rng)));
        measure::sort(x.data(), 51);
        auto m = measure::median_interval(x.data(), 51);
        covered += m.lo <= 1000 && 1000 <= m.hi;
    }
    EXPECT_GT(covered, trials * 93 / 100);
    EXPECT_LT(covered, trials * 99 / 100);
}

TEST(ChooseBatch, PutsTheBracketAtOnePercentOfTheBatch) {
    uint64_t ops = 0;
    std::vector<int64_t> scratch(16);
    auto batch_of = [](double op) {
        return [op](uint32_t iterations, bool doubled) {
            return uint64_t(20000 + (doubled ? 2 : 1) * double(iterations * measure::kUnroll) * op);
        };
    };
    EXPECT_EQ(measure::choose_batch(batch_of(1000), 20000, scratch.data(), ops), 2000u);  // 100 x 20000 / 1000
    EXPECT_EQ(ops, uint64_t(measure::kPilotReps) * 3 * measure::kUnroll);
    EXPECT_EQ(measure::choose_batch(batch_of(0), 20000, scratch.data(), ops), measure::kMaxBatch) << "nothing to time: the most";
    EXPECT_EQ(measure::choose_batch(batch_of(1e7), 20000, scratch.data(), ops), measure::kMinBatch);
    EXPECT_EQ(measure::choose_batch(batch_of(700), 20000, scratch.data(), ops) % measure::kUnroll, 0u) << "whole loop iterations";
}

TEST(MethodFor, BatchOnlyWhereOperationsCanRunBackToBack) {
    EXPECT_EQ(measure::method_for(*find_pattern("cpuid"), 0, 1), Method::batch);
    EXPECT_EQ(measure::method_for(*find_pattern("nop"), 0, 1), Method::batch);
    EXPECT_EQ(measure::method_for(*find_pattern("wbinvd"), 0, 1), Method::batch);
    EXPECT_EQ(measure::method_for(*find_pattern("wbinvd"), 4096, 1), Method::paired) << "each WBINVD needs its footprint dirtied";
    EXPECT_EQ(measure::method_for(*find_pattern("wbinvd"), 0, 2), Method::paired) << "each WBINVD needs its hops first";
    EXPECT_EQ(measure::method_for(*find_pattern("dirty"), 0, 1), Method::paired);
    EXPECT_EQ(measure::method_for(*find_pattern("clflush"), 4096, 1), Method::paired);
    EXPECT_TRUE(measure::reference_at_zero(*find_pattern("clflush")));
    EXPECT_FALSE(measure::reference_at_zero(*find_pattern("wbinvd")));
}

TEST(Floor, CostsBelowItAreSaidSoNeverPrintedNegative) {
    std::vector<double> around_zero = {-40, -10, 5, 12, -3, 8, -25, 30, 1, -7, 2};
    Summary s = summarize(around_zero);
    std::string text = cost_text(s, 50);
    EXPECT_EQ(text, "below floor (±50 cycles)");
    EXPECT_TRUE(read_cost(s, 50).below_floor);
    Summary big = summarize(std::vector<double>{6100, 6000, 6050, 6075, 6020});
    EXPECT_EQ(cost_text(big, 50), "6050");
    EXPECT_FALSE(read_cost(big, 50).below_floor);
    // A small cost with a wide interval of its own is below its own resolution, whatever the floor.
    Summary wide = summarize(std::vector<double>{-900, 300, 2000, -50, 1200, 100, 40});
    EXPECT_TRUE(read_cost(wide, 1).below_floor);
    EXPECT_EQ(cost_text(summarize(std::vector<double>{-0.02, 0.01, 0.0, 0.005}), 0.03), "below floor (±0.030 cycles)");
    // Every negative median is below the floor, whatever the floor.
    EXPECT_TRUE(read_cost(summarize(std::vector<double>{-5, -6, -5, -4}), 0).below_floor);
}

}  // namespace
}  // namespace fb
