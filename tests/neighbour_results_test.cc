// The neighbour's slices in results files: journal chunks back to slices, paced steps to windows,
// each compared with the idle steps beside it, verdicts only from rounds that agree beyond the
// drift between those idle steps, and the honest "cannot compare" when there is none.
#include "host/neighbour/neighbour_results.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
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

Cell step(const std::string& rate, const std::string& pattern, const std::string& mode, int64_t from_ms, int64_t to_ms,
          int round = -1) {
    Cell c;
    c.pattern = pattern;
    c.mode = mode;
    c.backend = "kvm";
    c.status = CellStatus::ok;
    c.tsc_khz = 1000000;
    c.extra["run"] = 0;
    c.pace = Pace{rate, uint32_t(to_ms - from_ms), true, 10, 0, uint64_t(to_ms - from_ms) * 1000000, from_ms * kMs, to_ms * kMs};
    if (rate != "idle") c.tsc = {100, 110, 120};
    c.pace->round = round;
    c.pace->slot = uint32_t(from_ms / 1000);
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
    EXPECT_EQ(w[1]["compared_with"], json::array({"idle"})) << "the idle step before it; none after";
    EXPECT_EQ(w[2]["verdict"], "no effect beyond idle drift");
    EXPECT_NEAR(w[2]["effect"]["slowdown"]["estimate"].get<double>(), 1.0, 1e-9);
    EXPECT_FALSE(w[2]["effect"]["significant"].get<bool>());
    EXPECT_NEAR(w[1]["achieved_hz"].get<double>(), 10.0, 1e-9);  // 10 ops in 1 s of guest TSC
    // One round cannot confirm an effect: the step's verdict says so.
    const json& steps = r[0]["steps"];
    ASSERT_EQ(steps.size(), 2u);
    std::string table = neighbour_summary(r);
    EXPECT_NE(table.find("wbinvd@max"), std::string::npos);
    EXPECT_NE(table.find("slower in its one round: unconfirmed"), std::string::npos) << table;
}

// Rounds: I A I B I, three times. A slows the neighbour in every round, B in none.
std::pair<std::vector<NeighbourSlice>, std::vector<Cell>> rounds(double a_ns, double b_ns, double idle_trend_per_s) {
    std::vector<NeighbourSlice> all;
    std::vector<Cell> cells;
    int64_t t = 0;
    auto add = [&](const std::string& rate, const std::string& pattern, double ns, int round) {
        // A load that grows steadily all run long: drift, not an effect of any step.
        double base = 100 + idle_trend_per_s * double(t) / 1000;
        auto s = slices(t, t + 500, ns * base / 100);
        all.insert(all.end(), s.begin(), s.end());
        cells.push_back(step(rate, pattern, "noncoherent", t, t + 500, round));
        t += 500;
    };
    for (int r = 0; r < 3; ++r) {
        add("idle", "nop", 100, r);
        add("max", "wbinvd", a_ns, r);
        add("idle", "nop", 100, r);
        add("max", "clflush", b_ns, r);
        add("idle", "nop", 100, r);
    }
    return {all, cells};
}

TEST(NeighbourResults, AnEffectInEveryRoundIsAVerdict) {
    auto [all, cells] = rounds(250, 100, 0);
    json r = neighbour_results(series_of(all), cells);
    std::map<std::string, std::string> verdict;
    for (const auto& st : r[0]["steps"]) verdict[st["step"].get<std::string>()] = st["verdict"].get<std::string>();
    EXPECT_EQ(verdict["wbinvd@max"], "slower, in every round (3 of 3)");
    EXPECT_EQ(verdict["clflush@max"].rfind("no effect beyond idle drift", 0), 0u) << verdict["clflush@max"];
    for (const auto& w : r[0]["windows"])
        if (!w["baseline"].get<bool>()) {
            EXPECT_EQ(w["compared_with"].size(), 2u) << "an idle step on either side";
            EXPECT_NE(w["label"].get<std::string>().find(":r"), std::string::npos) << "one name per round";
        }
}

// Background load that rises all run long (another tenant ramping up) moves every step; each
// step's own idle neighbours carry the same rise, so no step is called slower or faster.
TEST(NeighbourResults, DriftIsNotAVerdict) {
    auto [all, cells] = rounds(100, 100, 20);  // +20% per second: 150% over the run
    json r = neighbour_results(series_of(all), cells);
    for (const auto& st : r[0]["steps"])
        EXPECT_EQ(st["verdict"].get<std::string>().rfind("no effect beyond idle drift", 0), 0u) << st.dump();
}

// Slices the neighbour lost its CPU in time the scheduler, not the caches: left out, and counted.
TEST(NeighbourResults, PreemptedSlicesAreLeftOut) {
    auto [all, cells] = rounds(100, 100, 0);
    for (auto& s : all)
        if ((s.start_ns / kMs) % 500 < 250 && (s.start_ns / kMs) / 500 % 3 == 1) s.chase_ns *= 5, s.preemptions = 3;  // a hog
    json r = neighbour_results(series_of(all), cells);
    size_t preempted = 0;
    for (const auto& w : r[0]["windows"]) preempted += w["preempted_slices"].get<size_t>();
    EXPECT_GT(preempted, 0u);
    for (const auto& st : r[0]["steps"])
        EXPECT_EQ(st["verdict"].get<std::string>().rfind("no effect beyond idle drift", 0), 0u) << st.dump();
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
