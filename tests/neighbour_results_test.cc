// The neighbour's slices in results files: journal chunks back to slices, paced steps to windows,
// idle steps of the same mode as the baseline, and the honest "cannot compare" when there is none.
#include "host/neighbour_results.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

namespace fb {
namespace {

using nlohmann::json;

constexpr int64_t kMs = 1000000;

// Slices of 10 ms from `from_ms` to `to_ms`, pointer chase at `ns` (with a little spread).
std::vector<NeighbourSlice> slices(int64_t from_ms, int64_t to_ms, double ns) {
    std::vector<NeighbourSlice> out;
    for (int64_t t = from_ms; t + 10 <= to_ms; t += 10) {
        double jitter = double((t / 10) % 5) * 0.01 * ns;
        out.push_back({t * kMs, (t + 10) * kMs, ns + jitter, 1000, 8.0 - jitter / ns, 1u << 20});
    }
    return out;
}

Cell step(const std::string& rate, const std::string& pattern, const std::string& mode, int64_t from_ms, int64_t to_ms) {
    Cell c;
    c.pattern = pattern;
    c.mode = mode;
    c.backend = "kvm";
    c.status = CellStatus::ok;
    c.tsc_khz = 1000000;
    c.extra["run"] = 0;
    c.pace = Pace{rate, uint32_t(to_ms - from_ms), true, 10, 0, uint64_t(to_ms - from_ms) * 1000000, from_ms * kMs, to_ms * kMs};
    if (rate != "idle") c.tsc = {100, 110, 120};
    return c;
}

std::vector<json> series_of(const std::vector<NeighbourSlice>& all) {
    // Two chunks, as the journal holds them (one per finished cell).
    size_t half = all.size() / 2;
    return {{{"kind", "neighbour"}, {"run", 0}, {"cpu", 1}, {"vcpu_cpu", 0}, {"slice_ms", 10}, {"buffer_bytes", 1 << 20}},
            neighbour_slices_chunk(0, {all.begin(), all.begin() + long(half)}, false),
            neighbour_slices_chunk(0, {all.begin() + long(half), all.end()}, false)};
}

TEST(NeighbourResults, WindowsAreComparedWithTheIdleStepsOfTheirMode) {
    auto all = slices(0, 1000, 100);  // idle
    auto hit = slices(1000, 2000, 250);  // during WBINVD: 2.5x slower
    auto calm = slices(2000, 3000, 100);  // clflush: no effect
    all.insert(all.end(), hit.begin(), hit.end());
    all.insert(all.end(), calm.begin(), calm.end());
    std::vector<Cell> cells = {step("idle", "nop", "noncoherent", 0, 1000), step("max", "wbinvd", "noncoherent", 1000, 2000),
                               step("max", "clflush", "noncoherent", 2000, 3000)};
    json r = neighbour_results(series_of(all), cells);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0]["cpu"], 1);
    EXPECT_EQ(r[0]["slices"]["start_s"].size(), all.size());
    EXPECT_DOUBLE_EQ(r[0]["slices"]["start_s"][0].get<double>(), 0.0);
    const json& w = r[0]["windows"];
    ASSERT_EQ(w.size(), 3u);
    EXPECT_EQ(w[0]["label"], "idle");
    EXPECT_TRUE(w[0]["baseline"].get<bool>());
    EXPECT_EQ(w[1]["label"], "wbinvd@max");
    EXPECT_NEAR(w[1]["effect"]["slowdown"]["estimate"].get<double>(), 2.5, 0.05);
    EXPECT_TRUE(w[1]["effect"]["significant"].get<bool>());
    EXPECT_EQ(w[1]["verdict"], "slower, beyond idle drift");
    EXPECT_EQ(w[2]["verdict"], "no significant effect");
    EXPECT_NEAR(w[2]["effect"]["slowdown"]["estimate"].get<double>(), 1.0, 1e-9);
    EXPECT_FALSE(w[2]["effect"]["significant"].get<bool>());
    EXPECT_NEAR(w[1]["achieved_hz"].get<double>(), 10.0, 1e-9);  // 10 ops in 1 s of guest TSC
    std::string table = neighbour_summary(r);
    EXPECT_NE(table.find("wbinvd@max"), std::string::npos);
    EXPECT_NE(table.find("slower, beyond idle drift"), std::string::npos) << table;
}

TEST(NeighbourResults, AModeWithoutAnIdleStepSaysSoInsteadOfARatio) {
    auto all = slices(0, 2000, 100);
    std::vector<Cell> cells = {step("idle", "nop", "coherent", 0, 1000), step("max", "wbinvd", "noncoherent", 1000, 2000)};
    json r = neighbour_results(series_of(all), cells);
    const json& e = r[0]["windows"][1]["effect"];
    EXPECT_FALSE(e.contains("slowdown"));
    EXPECT_NE(e["note"].get<std::string>().find("no idle step"), std::string::npos);
}

TEST(NeighbourResults, UnfinishedStepsAndOtherRunsAreLeftOut) {
    auto all = slices(0, 2000, 100);
    Cell broken = step("max", "wbinvd", "coherent", 1000, 2000);
    broken.pace->finished = false;
    broken.status = CellStatus::hung;
    Cell other = step("idle", "nop", "coherent", 0, 1000);
    other.extra["run"] = 1;
    json r = neighbour_results(series_of(all), {step("idle", "nop", "coherent", 0, 1000), broken, other});
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0]["windows"].size(), 1u);
}

TEST(NeighbourResults, ADamagedChunkIsAnErrorNotAGuess) {
    std::vector<json> series = {{{"kind", "neighbour_slices"}, {"run", 0}, {"slices", json::array({json::array({1, 2, 3})})}}};
    EXPECT_THROW(neighbour_results(series, {}), std::runtime_error);
}

TEST(NeighbourResults, NoNeighbourNoSection) { EXPECT_TRUE(neighbour_results({}, {}).empty()); }

}  // namespace
}  // namespace fb
