// The report package (report/, `python3 -m report`) on a results file the real binary wrote: every
// figure README names is produced (SVG and PNG), with report.md and report.html; unreadable input
// fails with one line; `flushbench report` runs the same package.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

namespace fs = std::filesystem;

const std::string kPython = "/usr/bin/python3";
// As `flushbench report` runs it: the source tree on the import path, the binary for its pattern table.
const std::string kReport = "PYTHONPATH=" + std::string(FLUSHBENCH_SOURCE_DIR) + " FLUSHBENCH_BIN=" +
                            std::string(FLUSHBENCH_BIN) + " " + kPython + " -P -m report";
const std::string kNeedsPython = "/usr/bin/python3 lacks matplotlib or scipy (apt-get install python3-matplotlib python3-scipy)";

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

bool python_ready() { return sh(kPython + " -c 'import matplotlib, numpy, scipy'").status == 0; }

std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

class Report : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (!python_ready()) {
            skip_ = kNeedsPython;
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
    Result r = sh(kReport + " " + results_.string() + " --out " + out.string());
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

TEST_F(Report, FlushbenchReportRunsThePackage) {
    // The same package, through the binary, which puts it on the import path and names itself.
    fs::path out = dir_ / "cli";
    Result r = sh(std::string(FLUSHBENCH_BIN) + " report " + results_.string() + " --out " + out.string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out.rfind("flushbench report: ", 0), 0u) << r.out;
    for (const char* name : kAlways) EXPECT_TRUE(fs::exists(out / (std::string(name) + ".svg"))) << name;
    EXPECT_TRUE(fs::exists(out / "report.md"));
    EXPECT_TRUE(fs::exists(out / "report.html"));
}

TEST_F(Report, TwoRunsAddTheRatiosFigure) {
    // Two files (here the same run twice) are two series: ratios to the first, hosts side by side.
    fs::path copy = dir_ / "again.json", out = dir_ / "plots2";
    fs::copy_file(results_, copy, fs::copy_options::overwrite_existing);
    Result r = sh(kReport + " " + results_.string() + " " + copy.string() + " --out " + out.string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_TRUE(fs::exists(out / "ratios.svg"));
    EXPECT_TRUE(fs::exists(out / "ratios.png"));
    EXPECT_NE(slurp(out / "report.md").find("## Ratios to the baseline series"), std::string::npos);
}

TEST_F(Report, UnreadableInputIsOneLineAndNonZero) {
    fs::path out = dir_ / "bad";
    Result missing = sh(kReport + " " + (dir_ / "no-such.json").string() + " --out " + out.string());
    EXPECT_NE(missing.status, 0);
    EXPECT_EQ(missing.out.rfind("flushbench report: cannot read ", 0), 0u) << missing.out;
    EXPECT_EQ(std::count(missing.out.begin(), missing.out.end(), '\n'), 1) << missing.out;

    fs::path junk = dir_ / "junk.json", plain = dir_ / "plain.json";
    std::ofstream(junk) << "{ not json";
    std::ofstream(plain) << R"({"context": {}, "benchmarks": []})";
    for (const auto& f : {junk, plain}) {
        Result r = sh(kReport + " " + f.string() + " --out " + out.string());
        EXPECT_EQ(r.status, 2) << r.out;
        EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
        EXPECT_NE(r.out.find(f.filename().string()), std::string::npos) << r.out;
    }
}

// The sections that need a run of their own: a host neighbour against paced guest steps, and the
// memory-type cells. Each test runs the real binary into its own directory; exit status 3 means
// this environment cannot run it (no KVM, no second CPU for the neighbour): skipped, reason printed.
class ReportOnARun : public ::testing::Test {
protected:
    void SetUp() override {
        if (!python_ready()) GTEST_SKIP() << kNeedsPython;
        dir_ = fs::temp_directory_path() / ("fb-report-run-" + std::to_string(getpid()) + "-" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override {
        if (!dir_.empty()) fs::remove_all(dir_);
    }
    // `flushbench run ARGS --quiet --out DIR/NAME`; empty with skip_ set when the environment
    // cannot run it. Status 1 (a cell hung or crashed) still writes every cell.
    fs::path run(const std::string& name, const std::string& args) {
        fs::path out = dir_ / name;
        Result r = sh(std::string(FLUSHBENCH_BIN) + " run " + args + " --quiet --out " + out.string());
        if (r.status == 3) {
            skip_ = "this environment cannot run `flushbench run " + args + "`: " + r.out;
            std::printf("skipped: %s\n", skip_.c_str());
            return {};
        }
        EXPECT_TRUE(r.status == 0 || r.status == 1) << r.out;
        EXPECT_TRUE(fs::exists(out)) << r.out;
        return fs::exists(out) ? out : fs::path();
    }
    Result report(const fs::path& results, const fs::path& out) {
        return sh(kReport + " " + results.string() + " --out " + out.string());
    }
    static void expect_figure(const fs::path& out, const std::string& name) {
        for (const char* ext : {".svg", ".png"}) {
            fs::path f = out / (name + ext);
            EXPECT_TRUE(fs::exists(f) && fs::file_size(f) > 1000) << f;
        }
    }
    fs::path dir_;
    std::string skip_;
};

class ReportNeighbour : public ReportOnARun {};
class ReportMemtypes : public ReportOnARun {};

TEST_F(ReportNeighbour, DrawsTheTimelineAndSlowdownAndWritesTheSection) {
    fs::path results = run("nb.json", "--neighbour auto --pace idle:300,wbinvd@max:300,idle:300");
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_FALSE(results.empty());
    auto doc = nlohmann::json::parse(slurp(results));
    ASSERT_TRUE(doc.contains("flushbench_neighbour") && !doc["flushbench_neighbour"].empty()) << "no neighbour in " << results;

    fs::path out = dir_ / "plots";
    Result r = report(results, out);
    ASSERT_EQ(r.status, 0) << r.out;
    expect_figure(out, "neighbour_timeline");
    expect_figure(out, "neighbour_slowdown");
    std::string md = slurp(out / "report.md"), page = slurp(out / "report.html");
    EXPECT_NE(md.find("## Neighbour"), std::string::npos);
    EXPECT_NE(page.find("<h2>Neighbour</h2>"), std::string::npos);
    EXPECT_NE(md.find("neighbour_timeline.svg"), std::string::npos);
    EXPECT_NE(md.find("neighbour_slowdown.svg"), std::string::npos);
    // The guest runs its steps in shuffled rounds, each active step between two idle ones. The
    // step table: one row per step over all its rounds (wbinvd@max as flushbench judged it, with
    // as many rounds as the run has; idle, the baseline). Then every window in the order it ran,
    // with its verdict, a step's window in round N under "STEP:rN" ("wbinvd@max:r0", "idle:r0.0"
    // for the idle before it). A run without rounds (--pace-rounds 0, or a file from before them)
    // has one window per step, named after the step, and no step table.
    EXPECT_NE(md.find("| median ns/load [95% CI] | slowdown [95% CI] | stream ratio [95% CI] | p | verdict |"), std::string::npos) << md;
    bool rounds = false;
    for (const auto& run : doc["flushbench_neighbour"]) {
        rounds = rounds || run.contains("steps");
        std::set<std::string> steps;
        for (const auto& st : run.value("steps", nlohmann::json::array())) {
            steps.insert(st["step"].get<std::string>());
            EXPECT_NE(md.find("\n| " + st["step"].get<std::string>() + " | " + st["mode"].get<std::string>() + " | " +
                              std::to_string(st["rounds"].size()) + " | "),
                      std::string::npos)
                << st.dump() << "\n" << md;
            for (const auto& round : st["rounds"])
                EXPECT_NE(md.find("\n| " + round["label"].get<std::string>() + " | "), std::string::npos) << round.dump() << "\n" << md;
        }
        // flushbench judges the active steps; idle is their baseline (the report's row counts its windows).
        if (run.contains("steps")) {
            EXPECT_EQ(steps, (std::set<std::string>{"wbinvd@max"})) << run["steps"].dump();
        }
        for (const auto& w : run["windows"])
            EXPECT_NE(md.find("\n| " + w["label"].get<std::string>() + " | "), std::string::npos) << w["label"] << "\n" << md;
    }
    if (rounds) {
        EXPECT_NE(md.find("| step | mode | rounds | median slowdown [min, max] | verdict |"), std::string::npos) << md;
        EXPECT_NE(md.find("\n| wbinvd@max:r0 | "), std::string::npos) << md;
        EXPECT_NE(md.find("\n| idle:r0.0 | "), std::string::npos) << md;
    }
    // Either way, a row for the paced step and for idle under the step's own name: the step
    // table's, or (without rounds) the window's.
    EXPECT_NE(md.find("\n| wbinvd@max | "), std::string::npos) << md;
    EXPECT_NE(md.find("\n| idle | "), std::string::npos) << md;
    // The reading names the largest slowdown or says there was none; when flushbench could compare
    // no step at all (a host so busy that the neighbour was preempted in every slice, which are
    // left out), it says that instead of either.
    bool compared = false;
    for (const auto& run : doc["flushbench_neighbour"])
        for (const auto& st : run.value("steps", nlohmann::json::array()))
            compared = compared || (st.contains("slowdown") && st["slowdown"].value("median", nlohmann::json()).is_number());
    if (compared || !doc["flushbench_neighbour"][0].contains("steps")) {
        EXPECT_TRUE(md.find("Largest significant slowdown") != std::string::npos ||
                    md.find("No step slowed the neighbour significantly") != std::string::npos) << md;
    } else {
        EXPECT_NE(md.find("No paced step could be compared with an idle step."), std::string::npos) << md;
    }
    EXPECT_NE(md.find("slices are consecutive, not independent"), std::string::npos);
    if (doc["flushbench_neighbour"][0].value("backend", "") == "qemu-tcg") {
        EXPECT_NE(md.find("emulated (QEMU TCG)"), std::string::npos);
    }
    // --neighbour implies --patterns none: every cell is a paced step, and none of them is a
    // (pattern, footprint) cell, so there is no cell figure, only the note saying why.
    size_t unpaced = 0;
    for (const auto& c : doc["flushbench_cells"])
        if (!c.contains("pace")) ++unpaced;
    if (unpaced == 0) {
        EXPECT_FALSE(fs::exists(out / "cost_vs_footprint.svg"));
        EXPECT_FALSE(fs::exists(out / "distributions.svg"));
        EXPECT_NE(md.find("no cells: these results hold only paced guest steps"), std::string::npos) << md;
    }
}

TEST_F(ReportNeighbour, PacedStepsAreNotCells) {
    // Paced wbinvd@max runs wbinvd at the 64K pace footprint, the same (pattern, footprint) as the
    // real cell: its operations must not be pooled into that cell, nor the idle step become a nop cell.
    fs::path results = run("mixed.json", "--patterns wbinvd --footprints 64K --reps 5 --warmup 1 --pace idle:200,wbinvd@max:200");
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_FALSE(results.empty());
    auto doc = nlohmann::json::parse(slurp(results));
    size_t samples = 0, paced = 0;
    for (const auto& c : doc["flushbench_cells"]) {
        if (c.contains("pace")) ++paced;
        else if (c["pattern"] == "wbinvd" && c["footprint_bytes"] == 65536) samples += c["tsc"].size();
    }
    ASSERT_GT(paced, 0u) << "the run wrote no paced steps";

    fs::path out = dir_ / "plots";
    Result r = report(results, out);
    ASSERT_EQ(r.status, 0) << r.out;
    expect_figure(out, "cost_vs_footprint");
    std::string md = slurp(out / "report.md");
    // The cell table's wbinvd 64K row counts the real cell's repetitions only.
    size_t row = md.find("\n| wbinvd | 64K | ");
    ASSERT_NE(row, std::string::npos) << md;
    std::string line = md.substr(row + 1, md.find('\n', row + 1) - row - 1);
    std::vector<std::string> fields;
    for (size_t at = 0, bar; (bar = line.find(" | ", at)) != std::string::npos; at = bar + 3) fields.push_back(line.substr(at, bar - at));
    ASSERT_GE(fields.size(), 5u) << line;
    EXPECT_EQ(fields[4], std::to_string(samples)) << line;
    EXPECT_EQ(md.find("\n| nop | "), std::string::npos) << "the idle step became a cell:\n" << md;
    EXPECT_NE(md.find(std::to_string(paced) + " paced guest steps"), std::string::npos) << md;
    // No memory-type cells here: no memtypes figure, and a note that says so.
    EXPECT_FALSE(fs::exists(out / "memtypes.svg"));
    EXPECT_NE(md.find("memtypes: no memory-type cells"), std::string::npos);
}

TEST_F(ReportMemtypes, DrawsCostPerLineAndWritesTheSection) {
    fs::path results = run("memtypes.json", "--patterns memtypes --footprints 4K --reps 5 --warmup 1");
    if (!skip_.empty()) GTEST_SKIP() << skip_;
    ASSERT_FALSE(results.empty());
    auto doc = nlohmann::json::parse(slurp(results));

    fs::path out = dir_ / "plots";
    Result r = report(results, out);
    ASSERT_EQ(r.status, 0) << r.out;
    expect_figure(out, "memtypes");
    std::string md = slurp(out / "report.md"), page = slurp(out / "report.html");
    EXPECT_NE(md.find("## Memory types"), std::string::npos);
    EXPECT_NE(page.find("<h2>Memory types</h2>"), std::string::npos);
    EXPECT_NE(md.find("memtypes.svg"), std::string::npos);
    for (const char* op : {"read", "write", "rflush"})
        for (const char* mt : {"WB", "WC", "UC"})
            EXPECT_NE(md.find(std::string("| ") + op + " | " + mt + " | 4K | "), std::string::npos) << op << " " << mt << "\n" << md;
    // Each memory type against write-back, in the pattern table's order.
    EXPECT_NE(md.find("| WC / WB [95% CI] | p | UC / WB [95% CI] | p |"), std::string::npos) << md;
    const auto& fb = doc["context"]["flushbench"];
    if (fb.contains("regime") && fb["regime"].contains("memtype") && fb["regime"]["memtype"].contains("expected")) {
        EXPECT_NE(md.find("expected regime: " + fb["regime"]["memtype"]["expected"].get<std::string>()), std::string::npos) << md;
    }
}

}  // namespace
