// The neighbour probe: its chase order, a real run's slices, its refusals, and the window
// analysis on synthetic slices. No assertion depends on how fast this machine is.
#include "host/neighbour/neighbour.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "host/sys/cpus.h"

namespace fb {
namespace {

namespace fs = std::filesystem;

// Follows the chase from line 0; the lines visited, in order, until it returns or loops.
std::vector<size_t> follow_chase(const std::vector<std::byte>& buffer, size_t lines) {
    const auto* base = buffer.data();
    std::vector<size_t> order;
    uintptr_t p = reinterpret_cast<uintptr_t>(base);
    for (size_t step = 0; step <= lines; ++step) {
        auto line = size_t(p - reinterpret_cast<uintptr_t>(base)) / kNeighbourLineBytes;
        if (step > 0 && line == 0) break;
        order.push_back(line);
        p = *static_cast<const uintptr_t*>(static_cast<const void*>(base + line * kNeighbourLineBytes));
    }
    return order;
}

TEST(NeighbourChase, IsOneCycleThroughEveryLine) {
    for (size_t lines : {size_t(2), size_t(3), size_t(64), size_t(1000), size_t(4096)}) {
        std::vector<std::byte> buffer(lines * kNeighbourLineBytes);
        build_chase(buffer.data(), lines);
        auto order = follow_chase(buffer, lines);
        ASSERT_EQ(order.size(), lines) << lines << " lines: the cycle from line 0 must visit all of them";
        std::vector<bool> seen(lines, false);
        for (size_t line : order) {
            ASSERT_LT(line, lines);
            EXPECT_FALSE(seen[line]) << "line " << line << " visited twice";
            seen[line] = true;
        }
    }
}

TEST(NeighbourChase, SameSeedSameOrderOtherSeedOtherOrder) {
    constexpr size_t kLines = 512;
    std::vector<std::byte> a(kLines * kNeighbourLineBytes), b(a.size()), c(a.size());
    build_chase(a.data(), kLines);
    build_chase(b.data(), kLines);
    build_chase(c.data(), kLines, kChaseSeed + 1);
    EXPECT_EQ(follow_chase(a, kLines), follow_chase(b, kLines));
    EXPECT_NE(follow_chase(a, kLines), follow_chase(c, kLines));
}

TEST(NeighbourRun, SlicesAreContiguousAndOnTheRequestedCpu) {
    std::string why;
    int cpu = pick_neighbour_cpu(0, why);
    if (cpu < 0) GTEST_SKIP() << "no CPU besides 0: " << why;
    NeighbourOptions o;
    o.cpu = cpu;
    o.slice = std::chrono::milliseconds(10);
    o.buffer_bytes = 1 << 20;  // the default (half the LLC) can be hundreds of MiB in a VM
    auto n = Neighbour::start(o);
    EXPECT_EQ(n.cpu(), cpu);
    EXPECT_EQ(n.buffer_bytes(), uint64_t(1) << 20);
    EXPECT_EQ(n.slice(), std::chrono::milliseconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto slices = n.take();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    auto rest = n.stop();
    EXPECT_TRUE(n.stop().empty()) << "a second stop has nothing left";
    EXPECT_FALSE(n.capped());
    slices.insert(slices.end(), rest.begin(), rest.end());
    // A loaded 2-CPU VM may starve the thread, but 200 ms hold at least a few 10 ms slices.
    ASSERT_GE(slices.size(), 3u);
    const int64_t slice_ns = 10'000'000;
    for (size_t i = 0; i < slices.size(); ++i) {
        const auto& s = slices[i];
        SCOPED_TRACE(testing::Message() << "slice " << i);
        if (i > 0) {
            EXPECT_EQ(s.start_ns, slices[i - 1].end_ns) << "slices must be back to back";
        }
        EXPECT_LT(s.start_ns, s.end_ns);
        EXPECT_GE(s.end_ns - s.start_ns, slice_ns / 2);
        EXPECT_LE(s.end_ns - s.start_ns, slice_ns * 20);
        EXPECT_GT(s.chase_ns, 0);
        EXPECT_GT(s.chase_loads, 0u);
        EXPECT_GT(s.stream_gbs, 0);
        EXPECT_GT(s.stream_bytes, 0u);
        EXPECT_EQ(s.cpu, cpu);
    }
    std::vector<double> chase, stream;
    size_t preempted = 0;
    for (const auto& s : slices) chase.push_back(s.chase_ns), stream.push_back(s.stream_gbs), preempted += s.preemptions > 0;
    std::cout << "[ info     ] " << slices.size() << " slices on CPU " << cpu << ", 1 MiB buffer: median chase "
              << median(chase) << " ns/load, median stream " << median(stream) << " GB/s, " << preempted << " slice(s) preempted\n";
}

TEST(NeighbourRun, MovedFromIsInertAndMovedToStillStops) {
    std::string why;
    int cpu = pick_neighbour_cpu(0, why);
    if (cpu < 0) GTEST_SKIP() << "no CPU besides 0: " << why;
    NeighbourOptions o;
    o.cpu = cpu;
    o.slice = std::chrono::milliseconds(2);
    o.buffer_bytes = kNeighbourMinBufferBytes;
    auto a = Neighbour::start(o);
    Neighbour b = std::move(a);
    EXPECT_TRUE(a.stop().empty());  // NOLINT(bugprone-use-after-move): moved-from is documented inert
    EXPECT_EQ(b.cpu(), cpu);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    b.stop();
}

TEST(NeighbourRun, BadCpuNamesTheFixOnOneLine) {
    NeighbourOptions o;
    o.buffer_bytes = kNeighbourMinBufferBytes;
    for (int cpu : {4096, 1023, -1}) {
        o.cpu = cpu;
        try {
            Neighbour::start(o);
            ADD_FAILURE() << "CPU " << cpu << " was accepted";
        } catch (const std::runtime_error& e) {
            std::string what = e.what();
            EXPECT_NE(what.find("--neighbour"), std::string::npos) << what;
            EXPECT_NE(what.find("choose one of"), std::string::npos) << what;
            EXPECT_EQ(what.find('\n'), std::string::npos) << what;
        }
    }
}

TEST(NeighbourRun, BadSliceOrBufferIsRefused) {
    auto refused = [](NeighbourOptions o, const char* flag) {
        o.cpu = allowed_cpus().empty() ? 0 : allowed_cpus().front();
        try {
            Neighbour::start(o);
            ADD_FAILURE() << "accepted; expected a refusal naming " << flag;
        } catch (const std::runtime_error& e) {
            EXPECT_NE(std::string(e.what()).find(flag), std::string::npos) << e.what();
        }
    };
    refused({.slice = std::chrono::milliseconds(1)}, "--slice-ms");
    refused({.slice = std::chrono::milliseconds(1001)}, "--slice-ms");
    refused({.buffer_bytes = 4096}, "--neighbour-bytes");
    refused({.buffer_bytes = uint64_t(1) << 50}, "--neighbour-bytes");  // beyond any LLC, or any mmap
}

NeighbourSlice slice_at(int64_t start, int64_t end, double chase_ns = 1, double gbs = 1) {
    NeighbourSlice s;
    s.start_ns = start;
    s.end_ns = end;
    s.chase_ns = chase_ns;
    s.stream_gbs = gbs;
    return s;
}

TEST(NeighbourWindow, KeepsOnlySlicesEntirelyInside) {
    std::vector<NeighbourSlice> all;
    for (int64_t t = 0; t < 100; t += 10) all.push_back(slice_at(t, t + 10));
    auto starts = [](const std::vector<NeighbourSlice>& v) {
        std::vector<int64_t> s;
        for (const auto& x : v) s.push_back(x.start_ns);
        return s;
    };
    EXPECT_EQ(starts(slices_within(all, 20, 50)), (std::vector<int64_t>{20, 30, 40})) << "exact boundaries are inside";
    EXPECT_EQ(starts(slices_within(all, 21, 50)), (std::vector<int64_t>{30, 40})) << "a slice begun before is out";
    EXPECT_EQ(starts(slices_within(all, 20, 49)), (std::vector<int64_t>{20, 30})) << "a slice ending after is out";
    EXPECT_TRUE(slices_within(all, 22, 28).empty()) << "a window inside one slice holds none";
    EXPECT_TRUE(slices_within(all, 50, 20).empty()) << "an inverted window holds none";
    EXPECT_EQ(slices_within(all, -1000, 1000).size(), all.size());
    EXPECT_TRUE(slices_within({}, 0, 100).empty());
}

// n slices whose chase_ns and stream_gbs spread evenly around `chase` and `gbs` (+-10%).
std::vector<NeighbourSlice> synthetic(size_t n, double chase, double gbs) {
    std::vector<NeighbourSlice> v;
    for (size_t i = 0; i < n; ++i) {
        double spread = 0.9 + 0.2 * double((i * 7) % n) / double(n);  // a fixed shuffle of the spread
        v.push_back(slice_at(int64_t(i) * 10, int64_t(i) * 10 + 10, chase * spread, gbs / spread));
    }
    return v;
}

TEST(NeighbourWindow, SameDistributionIsNoEffect) {
    auto base = synthetic(40, 20, 10), window = synthetic(40, 20, 10);
    window[3].preemptions = 2;  // the same slice of each: what is left is still one distribution
    base[3].preemptions = 1;
    auto e = window_effect(window, base);
    EXPECT_EQ(e.preempted, 1u);
    EXPECT_EQ(e.baseline_preempted, 1u);
    EXPECT_EQ(e.slices, 39u) << "preempted slices are left out";
    EXPECT_EQ(e.baseline_slices, 39u);
    EXPECT_DOUBLE_EQ(e.slowdown.estimate, 1);
    EXPECT_LE(e.slowdown.lo, 1);
    EXPECT_GE(e.slowdown.hi, 1);
    EXPECT_LE(e.stream_ratio.lo, 1);
    EXPECT_GE(e.stream_ratio.hi, 1);
    EXPECT_GT(e.chase_test.p, 0.05);
    EXPECT_FALSE(e.significant);
    EXPECT_TRUE(e.note.empty()) << e.note;
}

TEST(NeighbourWindow, DoubledChaseIsASignificantSlowdown) {
    auto base = synthetic(40, 20, 10), window = synthetic(25, 40, 5);
    auto e = window_effect(window, base);
    EXPECT_NEAR(e.slowdown.estimate, 2, 0.1);
    EXPECT_GT(e.slowdown.lo, 1);
    EXPECT_GE(e.slowdown.hi, e.slowdown.estimate);
    EXPECT_NEAR(e.stream_ratio.estimate, 0.5, 0.05);
    EXPECT_LT(e.stream_ratio.hi, 1);
    EXPECT_LT(e.chase_test.p, 0.05);
    EXPECT_TRUE(e.significant);
    EXPECT_NEAR(e.chase.median, 40, 4);
    EXPECT_EQ(e.preempted, 0u);
    auto j = to_json(e);
    EXPECT_EQ(j["significant"], true);
    EXPECT_TRUE(j["slowdown"]["lo"].is_number());
}

TEST(NeighbourWindow, PreemptedSlicesAreLeftOutAndNamed) {
    auto base = synthetic(40, 20, 10), window = synthetic(30, 80, 2);  // a large slowdown, if it counted
    for (auto& s : window) s.preemptions = 1;
    auto e = window_effect(window, base);
    EXPECT_EQ(e.slices, 0u);
    EXPECT_EQ(e.preempted, 30u);
    EXPECT_TRUE(std::isnan(e.slowdown.estimate)) << "a busy CPU is not a slowdown the guest caused";
    EXPECT_FALSE(e.significant);
    EXPECT_NE(e.note.find("30 and 0 more were preempted"), std::string::npos) << e.note;
}

TEST(NeighbourWindow, TooFewSlicesIsNaNNotAFigure) {
    auto base = synthetic(40, 20, 10);
    for (size_t n : {size_t(0), size_t(1), size_t(2)}) {
        auto window = synthetic(n, 40, 5);
        for (auto e : {window_effect(window, base), window_effect(base, window)}) {
            EXPECT_TRUE(std::isnan(e.slowdown.estimate));
            EXPECT_TRUE(std::isnan(e.slowdown.lo));
            EXPECT_TRUE(std::isnan(e.stream_ratio.estimate));
            EXPECT_TRUE(std::isnan(e.chase_test.p));
            EXPECT_FALSE(e.significant);
            EXPECT_NE(e.note.find("not compared"), std::string::npos) << e.note;
            auto j = to_json(e);
            EXPECT_TRUE(j["slowdown"]["estimate"].is_null());
            EXPECT_TRUE(j["chase_test"]["p"].is_null());
            EXPECT_EQ(j["significant"], false);
        }
    }
}

TEST(NeighbourPick, AvoidsTheVcpuCpu) {
    auto allowed = allowed_cpus();
    if (allowed.size() < 2) GTEST_SKIP() << "this process may run on " << allowed.size() << " CPU(s) only";
    std::string why;
    int cpu = pick_neighbour_cpu(allowed.front(), why);
    EXPECT_GE(cpu, 0) << why;
    EXPECT_NE(cpu, allowed.front());
    EXPECT_NE(std::find(allowed.begin(), allowed.end(), cpu), allowed.end());
    std::cout << "[ info     ] pick_neighbour_cpu(" << allowed.front() << ") = " << cpu
              << (why.empty() ? "" : ": " + why) << "\n";
}

// A fake sysfs: CPUs 0-3, SMT pairs {0,2} and {1,3}, one LLC shared by 0-1 and another by 2-3
// (contrived, so the ranks disagree with CPU order).
struct FakeSysfs {
    fs::path root = fs::path(testing::TempDir()) / "neighbour_sysfs";
    FakeSysfs() {
        fs::remove_all(root);
        for (int c = 0; c < 4; ++c) {
            auto cpu = root / ("devices/system/cpu/cpu" + std::to_string(c));
            fs::create_directories(cpu / "topology");
            std::ofstream(cpu / "topology/thread_siblings_list") << (c % 2 == 0 ? "0,2" : "1,3") << "\n";
            fs::create_directories(cpu / "cache/index0");
            std::ofstream(cpu / "cache/index0/level") << "1\n";
            std::ofstream(cpu / "cache/index0/type") << "Data\n";
            std::ofstream(cpu / "cache/index0/shared_cpu_list") << c << "\n";
            fs::create_directories(cpu / "cache/index3");
            std::ofstream(cpu / "cache/index3/level") << "3\n";
            std::ofstream(cpu / "cache/index3/type") << "Unified\n";
            std::ofstream(cpu / "cache/index3/shared_cpu_list") << (c < 2 ? "0-1" : "2-3") << "\n";
        }
    }
    ~FakeSysfs() { fs::remove_all(root); }
};

TEST(NeighbourPick, PrefersSameLlcThenSiblingThenOtherLlc) {
    FakeSysfs sys;
    std::string why;
    std::vector<int> all{0, 1, 2, 3};
    EXPECT_EQ(pick_neighbour_cpu(0, why, all, sys.root.string()), 1) << why;
    EXPECT_TRUE(why.empty()) << why;
    std::vector<int> no_llc_mate{0, 2, 3};
    EXPECT_EQ(pick_neighbour_cpu(0, why, no_llc_mate, sys.root.string()), 2);
    EXPECT_NE(why.find("SMT sibling"), std::string::npos) << why;
    std::vector<int> other_llc{0, 3};
    EXPECT_EQ(pick_neighbour_cpu(0, why, other_llc, sys.root.string()), 3);
    EXPECT_NE(why.find("last-level cache"), std::string::npos) << why;
    std::vector<int> only_vcpu{0};
    EXPECT_EQ(pick_neighbour_cpu(0, why, only_vcpu, sys.root.string()), -1);
    EXPECT_FALSE(why.empty());
    EXPECT_EQ(pick_neighbour_cpu(-1, why, all, sys.root.string()), -1);
    EXPECT_NE(why.find("--vcpu-cpu"), std::string::npos) << why;
    EXPECT_EQ(pick_neighbour_cpu(0, why, all, (sys.root / "missing").string()), 1);
    EXPECT_NE(why.find("not in sysfs"), std::string::npos) << why;
}

}  // namespace
}  // namespace fb
