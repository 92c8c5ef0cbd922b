// `flushbench compare` (host/compare.h): a known shift is flagged, identical distributions are not,
// hosts merge side by side, and the verdicts agree with Google Benchmark's compare.py U test on
// the very same files.
#include "tests/synthetic_samples.h"
#include "host/results/compare.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <sstream>
#include <string>

#include "host/results/results.h"

namespace fb {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kComparePy = "/usr/share/benchmark/compare.py";

using test::samples;

Cell make_cell(const std::string& pattern, uint64_t fp, std::vector<uint64_t> tsc, const std::string& mode = "coherent",
               const std::string& backend = "kvm") {
    Cell c;
    c.pattern = pattern;
    c.footprint_bytes = fp;
    c.backend = backend;
    c.mode = mode;
    c.unit = "per-op";
    c.tsc = std::move(tsc);
    c.tsc_overhead = 100;  // the same bracket on both sides, as compare.py cannot subtract it
    c.tsc_khz = 2600000;
    c.guest_pmu_unavailable = "test";
    return c;
}

json document(const std::string& host, const std::vector<Cell>& cells) {
    json ctx = {{"date", "2024-01-01T00:00:00+00:00"}, {"host_name", host}, {"executable", "flushbench"}, {"num_cpus", 2},
                {"library_build_type", "release"},
                {"flushbench", {{"schema_version", kResultsSchemaVersion}, {"emulated", false},
                                {"host", {{"hostname", host}, {"cpu_model", "Test CPU"}, {"kernel", "6.1"}}}}}};
    return ResultsWriter::document(ctx, cells);
}

const json* find_comparison(const json& cmp, const std::string& pattern, uint64_t fp, size_t column) {
    for (const auto& row : cmp["rows"])
        if (row["pattern"] == pattern && row["footprint_bytes"] == fp)
            for (const auto& c : row["comparisons"])
                if (c["column"] == column) return &c;
    return nullptr;
}

TEST(Compare, KnownShiftIsSignificantAndIdenticalIsNot) {
    auto base = samples(1, 31, 10000, 300);
    std::vector<uint64_t> shifted;
    for (auto v : base) shifted.push_back(v + 1500);  // +15%: the effect under study is far larger
    auto same = base;
    std::reverse(same.begin(), same.end());  // the same values in another order
    json a = document("hostA", {make_cell("wbinvd", 4096, base), make_cell("clflush", 4096, base)});
    json b = document("hostA", {make_cell("wbinvd", 4096, shifted), make_cell("clflush", 4096, same)});
    json cmp = compare_results({a, b}, {"a.json", "b.json"});
    ASSERT_EQ(cmp["columns"].size(), 2u);
    EXPECT_EQ(cmp["columns"][0]["label"], "hostA/kvm/coherent@1");
    EXPECT_EQ(cmp["columns"][1]["label"], "hostA/kvm/coherent@2");

    const json* w = find_comparison(cmp, "wbinvd", 4096, 1);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ((*w)["baseline"], 0);
    EXPECT_TRUE((*w)["significant"].get<bool>());
    EXPECT_LT((*w)["p_value"].get<double>(), 1e-6);
    double ratio = (*w)["ratio"].get<double>();
    EXPECT_NEAR(ratio, (10000 + 1500 - 100.0) / (10000 - 100.0), 0.03);  // net cycles: overhead subtracted
    EXPECT_LT((*w)["ratio_ci"][0].get<double>(), ratio);
    EXPECT_GT((*w)["ratio_ci"][1].get<double>(), ratio);

    const json* c = find_comparison(cmp, "clflush", 4096, 1);
    ASSERT_NE(c, nullptr);
    EXPECT_FALSE((*c)["significant"].get<bool>());
    EXPECT_DOUBLE_EQ((*c)["p_value"].get<double>(), 1.0);
    EXPECT_DOUBLE_EQ((*c)["ratio"].get<double>(), 1.0);

    std::string table = format_compare_table(cmp);
    EXPECT_NE(table.find("wbinvd"), std::string::npos) << table;
    EXPECT_NE(table.find(" *"), std::string::npos) << table;
    EXPECT_NE(table.find("1 of 2 comparisons significant"), std::string::npos) << table;
}

TEST(Compare, HostsMergeSideBySideAndModesFindTheirBaseline) {
    // Host A has snoop control (coherent only); host B has none and runs A/B/A (coherent twice).
    auto a_coh = samples(2, 21, 5000, 100);
    json a = document("snoop-host", {make_cell("wbinvd", 1 << 20, a_coh)});
    json b = document("nosnoop-host", {make_cell("wbinvd", 1 << 20, samples(3, 21, 5000, 100)),
                                       make_cell("wbinvd", 1 << 20, samples(4, 21, 900000, 20000), "noncoherent"),
                                       make_cell("wbinvd", 1 << 20, samples(5, 21, 5000, 100))});
    json c = document("third-host", {make_cell("wbinvd", 1 << 20, samples(6, 21, 5000, 100), "coherent", "qemu-kvm")});
    json cmp = compare_results({a, b, c});
    ASSERT_EQ(cmp["columns"].size(), 4u);
    EXPECT_EQ(cmp["columns"][0]["label"], "snoop-host/kvm/coherent");
    EXPECT_EQ(cmp["columns"][1]["label"], "nosnoop-host/kvm/coherent");
    EXPECT_EQ(cmp["columns"][2]["label"], "nosnoop-host/kvm/noncoherent");
    EXPECT_EQ(cmp["columns"][3]["label"], "third-host/qemu-kvm/coherent");
    ASSERT_EQ(cmp["rows"].size(), 1u);
    const json& row = cmp["rows"][0];
    EXPECT_EQ(row["cells"][1]["cells_pooled"], 2);  // the two coherent phases are one population
    EXPECT_EQ(row["cells"][1]["n"], 42);
    // Host B coherent vs host A coherent; B noncoherent vs A coherent (no noncoherent earlier);
    // the third host's qemu-kvm vs A's kvm, by mode.
    const json* bc = find_comparison(cmp, "wbinvd", 1 << 20, 1);
    const json* bn = find_comparison(cmp, "wbinvd", 1 << 20, 2);
    const json* cq = find_comparison(cmp, "wbinvd", 1 << 20, 3);
    ASSERT_TRUE(bc && bn && cq);
    EXPECT_EQ((*bc)["baseline"], 0);
    EXPECT_EQ((*bn)["baseline"], 0);
    EXPECT_EQ((*cq)["baseline"], 0);
    EXPECT_TRUE((*bn)["significant"].get<bool>());
    EXPECT_GT((*bn)["ratio"].get<double>(), 100);
}

TEST(Compare, DerivedRatiosWithinOneRun) {
    std::vector<Cell> cells = {make_cell("wbinvd", 4096, samples(7, 31, 2000, 50)),
                               make_cell("wbinvd", 4096, samples(8, 31, 200000, 5000), "noncoherent"),
                               make_cell("wbinvd", 4096, samples(9, 31, 1100, 30), "native", "native-ring0")};
    json d = derived_ratios(cells);
    std::map<std::string, json> by;
    for (const auto& e : d) by[e["kind"].get<std::string>() + " " + e["numerator"].get<std::string>()] = e;
    ASSERT_TRUE(by.count("noncoherent/coherent noncoherent"));
    EXPECT_NEAR(by["noncoherent/coherent noncoherent"]["ratio"]["estimate"].get<double>(), (200000 - 100.0) / (2000 - 100.0), 3);
    ASSERT_TRUE(by.count("guest/native kvm/coherent"));
    const json& trap = by["guest/native kvm/coherent"]["difference"];
    EXPECT_NEAR(trap["estimate"].get<double>(), 900, 40);  // trap overhead: guest - native, cycles
    EXPECT_LT(trap["lo"].get<double>(), trap["estimate"].get<double>());
    EXPECT_TRUE(by["guest/native kvm/coherent"]["significant"].get<bool>());
}

TEST(Compare, RejectsWhatIsNotAResultsFile) {
    try {
        compare_results({json{{"benchmarks", json::array()}}}, {"plain-gbench.json"});
        FAIL() << "no error";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("plain-gbench.json is not a flushbench results file"), std::string::npos);
    }
}

std::string run(const std::string& cmd) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    pclose(p);
    return out;
}

std::string compare_py_command(const fs::path& dir) {
    return std::string("/usr/bin/python3 ") + kComparePy + " --no-color --display_aggregates_only benchmarks " +
           (dir / "a.json").string() + " " + (dir / "b.json").string() + " 2>&1";
}

TEST(Compare, AgreesWithGoogleBenchmarkComparePy) {
    if (!fs::exists(kComparePy)) GTEST_SKIP() << kComparePy << " not installed (apt-get install libbenchmark-tools)";
    if (run("/usr/bin/python3 -c 'import scipy' 2>&1 && echo ok").find("ok") == std::string::npos)
        GTEST_SKIP() << "compare.py needs python3-scipy";
    // Shifts from none to large, sizes from exact (5 a side) to asymptotic with ties.
    struct Spec {
        const char* pattern;
        size_t n;
        double shift;
    } specs[] = {{"nop", 11, 0}, {"cpuid", 11, 0.005}, {"pio", 11, 0.02}, {"dirty", 11, 0.05}, {"wbinvd", 31, 0.01},
                 {"wbnoinvd", 31, 0.2}, {"clflush", 5, 0.0}, {"clflushopt", 5, 0.3}, {"clwb", 9, 0.03}};
    std::vector<Cell> a, b;
    uint64_t seed = 100;
    for (const auto& s : specs) {
        a.push_back(make_cell(s.pattern, 4096, samples(seed++, s.n, 20000, 400)));
        b.push_back(make_cell(s.pattern, 4096, samples(seed++, s.n, 20000 * (1 + s.shift), 400)));
    }
    fs::path dir = fs::temp_directory_path() / ("fb-compare-" + std::to_string(getpid()));
    fs::create_directories(dir);
    std::ofstream(dir / "a.json") << document("h", a).dump();
    std::ofstream(dir / "b.json") << document("h", b).dump();
    std::string out = run(compare_py_command(dir));
    fs::remove_all(dir);

    // compare.py prints "<name>_pvalue  <time p>  <cpu p>  U Test, ..." per benchmark.
    std::map<std::string, double> py;
    std::regex line(R"(^(\S+)_pvalue\s+([0-9.]+)\s+([0-9.]+))");
    std::smatch m;
    std::istringstream in(out);
    for (std::string l; std::getline(in, l);)
        if (std::regex_search(l, m, line)) py[m[1]] = std::stod(m[3]);
    ASSERT_EQ(py.size(), std::size(specs)) << out;

    json cmp = compare_results({document("h", a), document("h", b)});
    size_t differ = 0;
    for (const auto& s : specs) {
        std::string name = std::string(s.pattern) + "/4096/kvm/coherent";
        ASSERT_TRUE(py.count(name)) << name << "\n" << out;
        const json* c = find_comparison(cmp, s.pattern, 4096, 1);
        ASSERT_NE(c, nullptr);
        double ours = (*c)["p_value"].get<double>();
        EXPECT_NEAR(ours, py[name], 5e-5) << name;  // compare.py prints 4 decimals
        EXPECT_EQ((*c)["significant"].get<bool>(), py[name] < 0.05) << name << " p=" << ours << " compare.py " << py[name];
        differ += (*c)["significant"].get<bool>();
    }
    // The set is only a test if it has both verdicts.
    EXPECT_GT(differ, 0u);
    EXPECT_LT(differ, std::size(specs));
}

}  // namespace
}  // namespace fb
