// scripts/report.py on a results file the real binary wrote: every figure README names is produced
// (SVG and PNG), with report.md and report.html; unreadable input fails with one line.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

namespace {

namespace fs = std::filesystem;

const std::string kPython = "/usr/bin/python3";
const std::string kReport = std::string(FLUSHBENCH_SOURCE_DIR) + "/scripts/report.py";

struct Result {
    int status = -1;
    std::string out;  // stdout and stderr
};

Result sh(const std::string& cmd) {
    Result r;
    FILE* p = popen((cmd + " 2>&1").c_str(), "r");
    if (!p) return r;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
    int st = pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

class Report : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (sh(kPython + " -c 'import matplotlib, numpy'").status != 0) {
            skip_ = "/usr/bin/python3 lacks matplotlib (apt-get install python3-matplotlib)";
            return;
        }
        dir_ = fs::temp_directory_path() / ("fb-report-" + std::to_string(getpid()));
        fs::create_directories(dir_);
        results_ = dir_ / "quick.json";
        // Status 1 (a cell hung or crashed, as CLWB does on some KVMs) still writes every cell.
        Result run = sh(std::string(FLUSHBENCH_BIN) + " run --quick --quiet --out " + results_.string());
        if (run.status == 3) skip_ = "this host can run no backend: " + run.out;
        else if (!fs::exists(results_)) skip_ = "flushbench run wrote no results: " + run.out;
    }
    static void TearDownTestSuite() {
        if (!dir_.empty()) fs::remove_all(dir_);
    }
    void SetUp() override {
        if (!skip_.empty()) GTEST_SKIP() << skip_;
    }

    static inline std::string skip_;
    static inline fs::path dir_, results_;
};

// The figures README's "Results" section lists: always these three...
const char* const kAlways[] = {"cost_vs_footprint", "modes_bars", "distributions"};

TEST_F(Report, ProducesEveryFigureFromARealRun) {
    fs::path out = dir_ / "plots";
    Result r = sh(kPython + " " + kReport + " " + results_.string() + " --out " + out.string());
    ASSERT_EQ(r.status, 0) << r.out;
    for (const char* name : kAlways)
        for (const char* ext : {".svg", ".png"}) {
            fs::path f = out / (std::string(name) + ext);
            EXPECT_TRUE(fs::exists(f) && fs::file_size(f) > 1000) << f;
        }
    // ...exit_attribution whenever the results carry KVM statistics or exit counters (the kvm
    // backend records KVM's binary statistics per cell; qemu-* backends carry none)...
    auto doc = nlohmann::json::parse(slurp(results_));
    bool counters = false;
    for (const auto& c : doc["flushbench_cells"])
        if (!c["tsc"].empty() && c.contains("extra") && (c["extra"].contains("kvm_stats_delta") || c["extra"].contains("exits")))
            counters = true;
    EXPECT_EQ(fs::exists(out / "exit_attribution.svg"), counters);
    EXPECT_EQ(fs::exists(out / "exit_attribution.png"), counters);
    // ...and the written report, naming every figure it drew, with the host and the caveats.
    std::string md = slurp(out / "report.md"), page = slurp(out / "report.html");
    for (const char* name : kAlways) {
        EXPECT_NE(md.find(std::string(name) + ".svg"), std::string::npos) << name;
        EXPECT_NE(page.find(std::string(name) + ".svg"), std::string::npos) << name;
    }
    EXPECT_NE(md.find("## Caveats"), std::string::npos);
    EXPECT_NE(md.find(doc["context"]["flushbench"]["host"]["hostname"].get<std::string>()), std::string::npos);
    if (doc["context"]["flushbench"].value("emulated", false)) {
        EXPECT_NE(md.find("emulated"), std::string::npos);
    }
    if (!counters) {
        EXPECT_NE(md.find("exit_attribution: skipped"), std::string::npos);
    }
    EXPECT_NE(page.find("<table>"), std::string::npos);
}

TEST_F(Report, TwoRunsAddTheRatiosFigure) {
    // Two files (here the same run twice) are two series: ratios to the first, hosts side by side.
    fs::path copy = dir_ / "again.json", out = dir_ / "plots2";
    fs::copy_file(results_, copy, fs::copy_options::overwrite_existing);
    Result r = sh(kPython + " " + kReport + " " + results_.string() + " " + copy.string() + " --out " + out.string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_TRUE(fs::exists(out / "ratios.svg"));
    EXPECT_TRUE(fs::exists(out / "ratios.png"));
    EXPECT_NE(slurp(out / "report.md").find("## Ratios to the baseline series"), std::string::npos);
}

TEST_F(Report, UnreadableInputIsOneLineAndNonZero) {
    fs::path out = dir_ / "bad";
    Result missing = sh(kPython + " " + kReport + " " + (dir_ / "no-such.json").string() + " --out " + out.string());
    EXPECT_NE(missing.status, 0);
    EXPECT_EQ(missing.out.rfind("report.py: cannot read ", 0), 0u) << missing.out;
    EXPECT_EQ(std::count(missing.out.begin(), missing.out.end(), '\n'), 1) << missing.out;

    fs::path junk = dir_ / "junk.json", plain = dir_ / "plain.json";
    std::ofstream(junk) << "{ not json";
    std::ofstream(plain) << R"({"context": {}, "benchmarks": []})";
    for (const auto& f : {junk, plain}) {
        Result r = sh(kPython + " " + kReport + " " + f.string() + " --out " + out.string());
        EXPECT_EQ(r.status, 2) << r.out;
        EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
        EXPECT_NE(r.out.find(f.filename().string()), std::string::npos) << r.out;
    }
}

}  // namespace
