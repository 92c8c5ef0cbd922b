// End-to-end tests of the `flushbench` command line: the real binary, run as a subprocess, with
// its exit code, stdout, stderr and results file checked against what host/runner.h and
// host/results.h promise. Tests that need /dev/kvm, QEMU or Google Benchmark's compare.py skip
// with the reason when this host lacks them. Each test gets its own temporary directory for --out
// (kept, and its path printed, when the test fails).
// Long (about 900 lines) because it is the end-to-end suite of one binary; each TEST reads alone.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/subprocess.h"

namespace fb {
namespace {

using namespace fb::testing;

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const std::string kBin = FLUSHBENCH_BIN;
const std::string kGuest = FLUSHBENCH_GUEST_ELF;
const std::string kPython = "/usr/bin/python3";
const std::string kCompare = "/usr/share/benchmark/compare.py";

// Exit codes from host/runner.h (ExitStatus), repeated here on purpose: they are the CLI's contract.
constexpr int kExitOk = 0, kExitCellsFailed = 1, kExitUsage = 2, kExitEnvironment = 3, kExitInterrupted = 130;

bool qemu_available() { return !find_on_path("qemu-system-x86_64").empty(); }

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::stringstream ss(text);
    std::string line;
    while (std::getline(ss, line)) out.push_back(line);
    return out;
}


std::set<std::string> dir_entries(const fs::path& dir) {
    std::set<std::string> s;
    for (const auto& e : fs::directory_iterator(dir)) s.insert(e.path().filename().string());
    return s;
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// The pattern table, as the binary reports it (so the tests follow the table, not a copy of it).
struct PatternInfo {
    std::string name, unit, feature;
    bool uses_footprint = false;
    std::string group;  // "flush" (selected by patterns=all) or "memtype"
};

std::vector<PatternInfo> patterns_from_binary() {
    ProcResult r = run_cmd({kBin, "patterns", "--json"}, 20s);
    if (r.code != 0) {
        ADD_FAILURE() << describe({kBin, "patterns", "--json"}, r);
        return {};
    }
    json j = json::parse(r.out, nullptr, false);
    std::vector<PatternInfo> out;
    if (j.is_discarded() || !j.contains("patterns")) {
        ADD_FAILURE() << "patterns --json is not the expected JSON: " << r.out.substr(0, 500);
        return out;
    }
    for (const auto& p : j["patterns"])
        out.push_back({p.value("name", ""), p.value("unit", ""), p.value("feature", ""), p.value("uses_footprint", false),
                       p.value("group", "")});
    return out;
}

using CellKey = std::tuple<std::string, uint64_t>;  // (pattern, footprint_bytes)

// One `[ n/N] backend mode pattern footprint B status ...` progress line from stderr.
struct Progress {
    unsigned index = 0, total = 0;
    std::string backend, mode, pattern, status;
    uint64_t footprint = 0;
};

std::vector<Progress> progress_lines(const std::string& err) {
    static const std::regex re(R"(^\[\s*(\d+)/(\d+)\] (\S+)\s+(\S+)\s+(\S+)\s+(\d+) B  (\S+))");
    std::vector<Progress> out;
    for (const auto& line : lines_of(err)) {
        std::smatch m;
        if (std::regex_search(line, m, re))
            out.push_back({unsigned(std::stoul(m[1])), unsigned(std::stoul(m[2])), m[3], m[4], m[5], m[7],
                           std::stoull(m[6])});
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Fixture: a temporary directory per test, removed unless the test failed.

class CliTest : public ::testing::Test {
protected:
    void SetUp() override {
        const char* base = getenv("TMPDIR");
        std::string tmpl = std::string(base && *base ? base : "/tmp") + "/flushbench-cli-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << strerror(errno);
        dir_ = tmpl;
        ASSERT_TRUE(fs::exists(kBin)) << kBin << " not built";
    }
    void TearDown() override {
        if (dir_.empty()) return;
        if (HasFailure()) {
            std::printf("[ cli_test ] kept %s for inspection\n", dir_.c_str());
            return;
        }
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }
    fs::path dir_;
};

#define REQUIRE_KVM()                                                      \
    do {                                                                   \
        std::string why_;                                                  \
        if (!kvm_usable(why_)) GTEST_SKIP() << why_;                       \
    } while (0)
#define REQUIRE_QEMU()                                                                  \
    do {                                                                                \
        if (!qemu_available()) GTEST_SKIP() << "qemu-system-x86_64 not on PATH";        \
    } while (0)

const std::set<std::string> kCellStatuses = {"ok", "unsupported", "skipped", "hung", "crashed"};
const std::set<std::string> kFailedStatuses = {"hung", "crashed", "fault", "corrupt"};
const std::vector<std::string> kEntryKeys = {"name",      "run_name", "run_type",        "repetitions", "real_time",
                                             "cpu_time",  "time_unit", "pattern",        "footprint_bytes", "backend",
                                             "mode",      "status",   "emulated",        "unit"};

// Checks a finished results document against the run's plan. Returns the number of failed cells.
struct Expect {
    std::string backend;
    std::string mode = "coherent";
    bool emulated = false;
    unsigned reps = 11;
    std::vector<uint64_t> footprints = {0, 4096, 65536};
    std::set<std::string> patterns;  // empty: every pattern
};

int check_document(const json& doc, const Expect& ex, const std::vector<PatternInfo>& table, const std::string& err_text) {
    int failed = 0;
    EXPECT_TRUE(doc.is_object());
    EXPECT_TRUE(doc.contains("context") && doc["context"].is_object());
    EXPECT_TRUE(doc.contains("benchmarks") && doc["benchmarks"].is_array());
    EXPECT_TRUE(doc.contains("flushbench_cells") && doc["flushbench_cells"].is_array());
    if (!doc.contains("context") || !doc.contains("benchmarks") || !doc.contains("flushbench_cells")) return -1;

    // Context: Google Benchmark's, with ours under "flushbench".
    const json& ctx = doc["context"];
    EXPECT_TRUE(ctx.contains("date") && ctx.contains("host_name") && ctx.contains("num_cpus")) << ctx.dump().substr(0, 400);
    EXPECT_TRUE(ctx.contains("flushbench") && ctx["flushbench"].is_object());
    const json fbc = ctx.value("flushbench", json::object());
    EXPECT_TRUE(fbc.contains("schema_version") && fbc["schema_version"].is_number_integer() && fbc["schema_version"].get<int>() >= 1)
        << fbc.value("schema_version", json()).dump();
    EXPECT_EQ(fbc.value("backend", ""), ex.backend);
    EXPECT_TRUE(fbc.contains("kvm_flavour") && fbc["kvm_flavour"].is_string() && !fbc["kvm_flavour"].get<std::string>().empty());
    EXPECT_TRUE(fbc.contains("git_commit") && fbc["git_commit"].is_string() && !fbc["git_commit"].get<std::string>().empty());
    EXPECT_TRUE(fbc.contains("command_line") && fbc["command_line"].is_string());
    EXPECT_TRUE(contains(fbc.value("command_line", ""), " run ")) << fbc.value("command_line", "");
    EXPECT_TRUE(fbc.contains("host") && fbc["host"].is_object() && !fbc["host"].empty());
    EXPECT_EQ(fbc.value("emulated", !ex.emulated), ex.emulated);

    std::map<std::string, const PatternInfo*> by_name;
    for (const auto& p : table) by_name[p.name] = &p;

    // Every cell of the plan, exactly once.
    std::map<CellKey, int> expected, seen;
    for (const auto& p : table) {
        if (!ex.patterns.empty() && !ex.patterns.count(p.name)) continue;
        if (ex.patterns.empty() && p.group != "flush") continue;  // patterns=all is the flush group
        if (p.uses_footprint)
            for (uint64_t f : ex.footprints) expected[{p.name, f}] = 1;
        else
            expected[{p.name, 0}] = 1;
    }
    std::map<std::string, const json*> cell_by_name;
    std::map<std::string, size_t> reps_of;
    std::vector<std::string> notable;
    for (const auto& c : doc["flushbench_cells"]) {
        std::string name = c.value("name", ""), status = c.value("status", "");
        ++seen[{c.value("pattern", ""), c.value("footprint_bytes", uint64_t(~0ull))}];
        cell_by_name[name] = &c;
        EXPECT_TRUE(kCellStatuses.count(status)) << name << ": status '" << status << "'";
        EXPECT_EQ(c.value("backend", ""), ex.backend) << name;
        EXPECT_EQ(c.value("mode", ""), ex.mode) << name;
        EXPECT_EQ(c.value("emulated", !ex.emulated), ex.emulated) << name;
        if (kFailedStatuses.count(status)) ++failed;
        if (status == "ok") {
            EXPECT_TRUE(c.contains("tsc") && c["tsc"].is_array()) << name;
            // Adaptive repetitions: at most reps, fewer only when the median was known or the budget spent.
            size_t n = c.value("tsc", json::array()).size();
            std::string stop = c.value("measure", json::object()).value("stop", "");
            EXPECT_LE(n, ex.reps) << name;
            EXPECT_TRUE(n == ex.reps || (n >= std::min(5u, ex.reps) && (stop == "precise" || stop == "budget")))
                << name << ": " << n << " samples, stopped by '" << stop << "'";
            reps_of[name] = n;
        } else {
            EXPECT_FALSE(c.value("reason", "").empty()) << name << " is " << status << " without a reason";
            notable.push_back(name + " " + status + ": " + c.value("reason", "").substr(0, 160));
        }
    }
    for (const auto& [k, n] : expected)
        EXPECT_EQ(seen.count(k) ? seen[k] : 0, 1) << "cell " << std::get<0>(k) << "/" << std::get<1>(k) << " should appear exactly once";
    for (const auto& [k, n] : seen)
        EXPECT_TRUE(expected.count(k)) << "cell " << std::get<0>(k) << "/" << std::get<1>(k) << " was not in the plan";
    for (const auto& s : notable) std::printf("[ cli_test ] %s: %s\n", ex.backend.c_str(), s.c_str());

    // Benchmark entries: Google Benchmark's keys plus ours, names derived from the cell.
    std::map<std::string, int> iterations, aggregates;
    for (const auto& e : doc["benchmarks"]) {
        for (const auto& k : kEntryKeys) EXPECT_TRUE(e.contains(k)) << "entry " << e.value("name", "?") << " lacks " << k;
        std::string rn = e.value("run_name", ""), name = e.value("name", ""), rt = e.value("run_type", "");
        std::string want_rn = e.value("pattern", "") + "/" + std::to_string(e.value("footprint_bytes", uint64_t{0})) + "/" +
                              e.value("backend", "") + "/" + e.value("mode", "");
        EXPECT_EQ(rn, want_rn);
        EXPECT_EQ(e.value("backend", ""), ex.backend) << name;
        EXPECT_EQ(e.value("mode", ""), ex.mode) << name;
        EXPECT_EQ(e.value("emulated", !ex.emulated), ex.emulated) << name;
        EXPECT_EQ(e.value("time_unit", ""), "ns") << name;
        EXPECT_TRUE(e.contains("real_time") && e["real_time"].is_number()) << name;
        EXPECT_TRUE(e.contains("cpu_time") && e["cpu_time"].is_number()) << name;
        EXPECT_TRUE(rt == "iteration" || rt == "aggregate") << name << ": run_type '" << rt << "'";
        if (rt == "iteration") {
            EXPECT_EQ(name, rn);
            ++iterations[rn];
        } else {
            std::string agg = e.value("aggregate_name", "");
            EXPECT_TRUE(agg == "mean" || agg == "median" || agg == "stddev" || agg == "cv") << name;
            EXPECT_EQ(name, rn + "_" + agg);
            ++aggregates[rn];
        }
        auto p = by_name.find(e.value("pattern", ""));
        EXPECT_TRUE(p != by_name.end()) << name << ": unknown pattern";
        if (p != by_name.end()) {
            EXPECT_EQ(e.value("unit", ""), p->second->unit) << name;
        }
        auto c = cell_by_name.find(rn);
        EXPECT_TRUE(c != cell_by_name.end()) << name << " has no cell in flushbench_cells";
        if (c != cell_by_name.end()) {
            EXPECT_EQ(e.value("status", ""), c->second->value("status", "")) << name;
        }
    }
    for (const auto& [name, cp] : cell_by_name) {
        if (cp->value("status", "") == "ok") {
            EXPECT_EQ(iterations[name], int(reps_of[name])) << name << ": one iteration entry per repetition";
            // cv is undefined when the mean cost is 0, stddev for a single repetition: not written then.
            const json& st = cp->value("stats", json::object());
            int defined = 2 + (st.value("stddev", json()).is_number() ? 1 : 0) + (st.value("cv", json()).is_number() ? 1 : 0);
            EXPECT_EQ(aggregates[name], defined) << name << ": mean, median, stddev, cv (those defined)";
        } else {
            EXPECT_EQ(iterations[name], 1) << name << ": one errored entry for a cell without samples";
        }
    }

    // What stderr reported as finished is what the file holds.
    auto prog = progress_lines(err_text);
    EXPECT_EQ(prog.size(), doc["flushbench_cells"].size()) << err_text;
    for (const auto& pl : prog) {
        std::string name = pl.pattern + "/" + std::to_string(pl.footprint) + "/" + pl.backend + "/" + pl.mode;
        auto c = cell_by_name.find(name);
        EXPECT_TRUE(c != cell_by_name.end()) << "stderr reported " << name << " but the file lacks it";
        if (c != cell_by_name.end()) {
            EXPECT_EQ(c->second->value("status", ""), pl.status) << name;
        }
    }
    return failed;
}

// ---------------------------------------------------------------------------------------------
// 1. A quick run on the built-in KVM VMM.

TEST_F(CliTest, KvmQuickRunWritesCompleteGoogleBenchmarkResults) {
    REQUIRE_KVM();
    auto table = patterns_from_binary();
    ASSERT_FALSE(table.empty());
    fs::path out = dir_ / "a.json";
    std::vector<std::string> args = {kBin, "run", "--backend", "kvm", "--quick", "--out", out.string()};
    auto t0 = Clock::now();
    ProcResult r = run_cmd(args, 60s);
    std::printf("[ cli_test ] kvm --quick: exit %d in %.2f s\n", r.code,
                std::chrono::duration<double>(Clock::now() - t0).count());
    ASSERT_TRUE(r.code == kExitOk || r.code == kExitCellsFailed) << describe(args, r);
    ASSERT_TRUE(fs::exists(out)) << describe(args, r);
    EXPECT_FALSE(fs::exists(out.string() + ".partial")) << "the journal must be removed once the results are final";
    EXPECT_EQ(dir_entries(dir_), std::set<std::string>{"a.json"}) << "no temporary files left behind";
    auto doc = load_json(out);
    ASSERT_TRUE(doc) << "results are not valid JSON";
    Expect ex;
    ex.backend = "kvm";
    int failed = check_document(*doc, ex, table, r.err);
    EXPECT_EQ(r.code, failed ? kExitCellsFailed : kExitOk) << "exit 1 exactly when some cell hung or crashed\n" << r.err;
    const json& fbctx = (*doc)["context"]["flushbench"];
    EXPECT_EQ(fbctx.value("command_line", ""), [&] {
        std::string s;
        for (const auto& a : args) s += (s.empty() ? "" : " ") + a;
        return s;
    }());
    std::printf("[ cli_test ] kvm_flavour %s, git_commit %s, %zu cells, %d hung/crashed\n",
                fbctx.value("kvm_flavour", "?").c_str(), fbctx.value("git_commit", "?").c_str(),
                (*doc)["flushbench_cells"].size(), failed);
    // The closing line names the results file; the summary table follows it.
    auto lines = lines_of(r.err);
    EXPECT_TRUE(std::any_of(lines.begin(), lines.end(), [&](const std::string& l) {
        return contains(l, "flushbench: ") && contains(l, " cells (") && contains(l, out.string());
    })) << r.err;
    EXPECT_TRUE(contains(r.err, "median net TSC cycles")) << "the summary table";

    // A label is a claim with evidence: no VFIO file here, so KVM cannot have non-coherent DMA.
    EXPECT_EQ(fbctx["patterns"].size(), table.size()) << "the pattern table travels with the results";
    // One phase per boot (a crashed cell reboots the guest for the rest), each judged on its own.
    const json& phases = fbctx["run"]["phases"];
    ASSERT_EQ(phases.size(), fbctx["run"]["boots"].size()) << fbctx["run"].dump(1).substr(0, 2000);
    for (const auto& ph : phases) {
        EXPECT_EQ(ph.value("mode", ""), "coherent");
        EXPECT_EQ(ph.value("verdict", ""), "confirmed");
        EXPECT_EQ(ph.value("source", "").rfind("no-vfio-file", 0), 0u) << ph.dump();
        EXPECT_TRUE(ph["kprobes"].contains("register") || ph["kprobes"].contains("unavailable")) << ph.dump();
    }
    for (const auto& c : (*doc)["flushbench_cells"]) {
        if (c.value("status", "") != "ok") continue;
        EXPECT_EQ(c["mode_evidence"].value("verdict", ""), "confirmed") << c.value("name", "");
    }
    EXPECT_TRUE(contains(r.err, "mode evidence")) << "the summary table says what the kernel said";
}

// 1b. --dirty-mask: one run per width, the guest hopping through K CPUs before each WBINVD.

TEST_F(CliTest, DirtyMaskRunsOnePerWidthAndHopsBeforeEveryWbinvd) {
    REQUIRE_KVM();
    fs::path out = dir_ / "m.json";
    std::vector<std::string> args = {kBin, "run", "--backend", "kvm", "--patterns", "nop,wbinvd", "--footprints", "4K", "--reps", "5",
                                     "--warmup", "1", "--dirty-mask", "1,2", "--quiet", "--out", out.string()};
    ProcResult r = run_cmd(args, 60s);
    ASSERT_EQ(r.code, kExitOk) << describe(args, r);
    auto doc = load_json(out);
    ASSERT_TRUE(doc);
    std::set<std::string> modes;
    for (const auto& c : (*doc)["flushbench_cells"]) modes.insert(c.value("mode", ""));
    EXPECT_EQ(modes, (std::set<std::string>{"coherent+mask1", "coherent+mask2"}));
    const json& boots = (*doc)["context"]["flushbench"]["run"]["boots"];
    ASSERT_EQ(boots.size(), 2u);
    // Width 1 is pinned (no hops); width 2 hops twice before each of the 6 WBINVDs (5 + 1 warm-up),
    // ending on the CPU it started from, and never before nop.
    EXPECT_EQ(boots[0]["exits"].value("hop", -1), 0);
    EXPECT_EQ(boots[1]["exits"].value("hop", -1), 12);
    EXPECT_EQ(boots[1]["hop_cpus"].size(), 2u);
}

TEST_F(CliTest, DirtyMaskWiderThanTheHostIsRefused) {
    REQUIRE_KVM();
    size_t cpus = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) cpus = size_t(CPU_COUNT(&set));
    if (cpus >= 64) GTEST_SKIP() << "this host has 64 CPUs or more: every width up to the limit fits";
    std::string width = std::to_string(cpus + 1);
    std::vector<std::string> args = {kBin, "run", "--backend", "kvm", "--dirty-mask", width, "--out", (dir_ / "w.json").string()};
    ProcResult r = run_cmd(args, 30s);
    EXPECT_EQ(r.code, kExitEnvironment) << describe(args, r);
    EXPECT_EQ(lines_of(r.err).size(), 1u) << r.err;
    EXPECT_TRUE(contains(r.err, "--dirty-mask " + width) && contains(r.err, "CPUs")) << r.err;
    EXPECT_TRUE(dir_entries(dir_).empty());
}

// 2. qemu-tcg: everything it measures is labelled as emulated.

TEST_F(CliTest, QemuTcgRunIsLabelledEmulated) {
    REQUIRE_QEMU();
    auto table = patterns_from_binary();
    ASSERT_FALSE(table.empty());
    fs::path out = dir_ / "t.json";
    std::vector<std::string> args = {kBin,      "run", "--backend", "qemu-tcg", "--quick", "--patterns", "nop,cpuid,wbinvd,clflush",
                                     "--out", out.string()};
    ProcResult r = run_cmd(args, 60s);
    ASSERT_TRUE(r.code == kExitOk || r.code == kExitCellsFailed) << describe(args, r);
    auto doc = load_json(out);
    ASSERT_TRUE(doc) << describe(args, r);
    EXPECT_FALSE(fs::exists(out.string() + ".partial"));
    Expect ex;
    ex.backend = "qemu-tcg";
    ex.emulated = true;
    ex.patterns = {"nop", "cpuid", "wbinvd", "clflush"};
    int failed = check_document(*doc, ex, table, r.err);
    EXPECT_EQ(r.code, failed ? kExitCellsFailed : kExitOk);
    ASSERT_FALSE((*doc)["benchmarks"].empty());
    for (const auto& e : (*doc)["benchmarks"]) EXPECT_EQ(e.value("emulated", false), true) << e.value("name", "?");
    const json fbctx = (*doc)["context"].value("flushbench", json::object());
    ASSERT_TRUE(fbctx.contains("caveats")) << fbctx.dump().substr(0, 500);
    bool says_emulated = false;
    for (const auto& c : fbctx["caveats"])
        if (c.is_string() && contains(c.get<std::string>(), "emulated")) says_emulated = true;
    EXPECT_TRUE(says_emulated) << fbctx["caveats"].dump();
    EXPECT_TRUE(contains(r.err, "[emulated]")) << "progress lines should flag emulated timings\n" << r.err;
}

// 3. Google Benchmark's own compare.py reads two runs unchanged.

TEST_F(CliTest, CompareDotPyAcceptsTwoKvmRuns) {
    REQUIRE_KVM();
    if (access(kPython.c_str(), X_OK) != 0 || !fs::exists(kCompare))
        GTEST_SKIP() << kCompare << " or " << kPython << " missing (apt-get install libbenchmark-tools)";
    ProcResult deps = run_cmd({kPython, "-c", "import numpy, scipy.stats"}, 30s);
    if (deps.code != 0) GTEST_SKIP() << "compare.py needs numpy and scipy: " << deps.err.substr(0, 200);
    std::vector<std::string> outs;
    for (const char* n : {"A.json", "B.json"}) {
        outs.push_back((dir_ / n).string());
        std::vector<std::string> args = {kBin, "run", "--backend", "kvm", "--quick", "--quiet", "--out", outs.back()};
        ProcResult r = run_cmd(args, 60s);
        ASSERT_TRUE(r.code == kExitOk || r.code == kExitCellsFailed) << describe(args, r);
        ASSERT_TRUE(fs::exists(outs.back()));
    }
    std::vector<std::string> cmp = {kPython, kCompare, "benchmarks", outs[0], outs[1]};
    ProcResult r = run_cmd(cmp, 60s);
    EXPECT_EQ(r.code, 0) << describe(cmp, r);
    EXPECT_TRUE(contains(r.out, "nop/0/kvm/coherent")) << describe(cmp, r);
    EXPECT_TRUE(contains(r.out, "wbinvd/65536/kvm/coherent_median")) << describe(cmp, r);
}

// ---------------------------------------------------------------------------------------------
// 4. Bad input: the documented exit code, one "flushbench:" line, nothing written or lost.

struct BadInput {
    const char* label;
    std::vector<std::string> args;  // after "run"; "@OUT" is replaced by the --out path
    int code;
    std::vector<std::string> mentions;  // substrings the one stderr line must contain
    enum Needs { any_backend, kvm, qemu } needs = any_backend;
    bool empty_path = false;  // run with PATH set to an empty directory
    bool own_out = false;     // args carry their own --out
};

std::ostream& operator<<(std::ostream& os, const BadInput& b) { return os << b.label; }

class CliBadInput : public CliTest, public ::testing::WithParamInterface<BadInput> {};

// A backend that gets past make_plan's backend checks on this host, so later checks are reached.
std::optional<std::string> working_backend() {
    std::string why;
    if (kvm_usable(why)) return "kvm";
    if (qemu_available()) return "qemu-tcg";
    return std::nullopt;
}

TEST_P(CliBadInput, FailsCleanly) {
    const BadInput& b = GetParam();
    std::string why;
    if (b.needs == BadInput::kvm && !kvm_usable(why)) GTEST_SKIP() << why;
    if (b.needs == BadInput::qemu && !qemu_available()) GTEST_SKIP() << "qemu-system-x86_64 not on PATH";
    std::optional<std::string> backend = working_backend();
    if (!backend) GTEST_SKIP() << "neither /dev/kvm nor QEMU: every run stops at the backend check";

    fs::path empty = dir_ / "empty-path";
    fs::create_directory(empty);
    std::map<std::string, std::string> env;
    if (b.empty_path) env["PATH"] = empty.string();

    // Twice: once with nothing at --out (nothing may appear), once over an earlier results
    // file (it must survive byte for byte).
    for (bool previous : {false, true}) {
        if (b.own_out && previous) continue;
        fs::path outdir = dir_ / (previous ? "over" : "fresh");
        fs::create_directory(outdir);
        fs::path out = outdir / "r.json";
        const std::string sentinel = "{\"previous\": \"results that must not be lost\"}\n";
        if (previous) std::ofstream(out) << sentinel;

        std::vector<std::string> args = {kBin, "run"};
        bool has_backend = false;
        for (const auto& a : b.args) {
            args.push_back(a == "@OUT" ? out.string() : a);
            has_backend |= a == "--backend";
        }
        if (!has_backend) args.insert(args.begin() + 2, {"--backend", *backend});
        if (!b.own_out) args.insert(args.end(), {"--out", out.string()});

        ProcResult r = run_cmd(args, 60s, env);
        SCOPED_TRACE(describe(args, r));
        EXPECT_EQ(r.code, b.code);
        EXPECT_TRUE(r.out.empty());
        auto lines = lines_of(r.err);
        EXPECT_EQ(lines.size(), 1u) << "exactly one line on stderr";
        EXPECT_TRUE(!r.err.empty() && r.err.back() == '\n');
        if (!lines.empty()) {
            EXPECT_EQ(lines[0].rfind("flushbench:", 0), 0u) << lines[0];
            for (const auto& m : b.mentions) EXPECT_TRUE(contains(lines[0], m)) << "should mention '" << m << "'";
        }
        if (previous) {
            EXPECT_EQ(read_file(out), sentinel) << "an earlier results file was overwritten";
            EXPECT_EQ(dir_entries(outdir), std::set<std::string>{"r.json"});
        } else if (!b.own_out) {
            EXPECT_TRUE(dir_entries(outdir).empty()) << "nothing may be written for bad input";
        }
    }
}

const BadInput kBadInputs[] = {
    {"noncoherent_without_vfio", {"--backend", "kvm", "--mode", "noncoherent"}, kExitEnvironment, {"--vfio", "snoop control"},
     BadInput::kvm},
    {"vfio_not_a_vfio_file", {"--backend", "kvm", "--vfio", "/dev/null", "--mode", "noncoherent"}, kExitUsage,
     {"not a VFIO", "/dev/null"}, BadInput::kvm},
    {"unknown_pattern", {"--patterns", "bogus"}, kExitUsage, {"'bogus'"}},
    {"bad_footprint_suffix", {"--footprints", "4X"}, kExitUsage, {"4X"}},
    {"footprint_too_large", {"--footprints", "8G"}, kExitUsage, {"--footprints"}},
    {"missing_image", {"--image", "/nonexistent.elf"}, kExitEnvironment, {"/nonexistent.elf"}},
    {"qemu_missing", {"--backend", "qemu-tcg", "--quick"}, kExitEnvironment, {"apt-get install qemu-system-x86"},
     BadInput::any_backend, true},
    {"out_not_writable", {"--quick", "--out", "/proc/forbidden/x.json"}, kExitEnvironment, {"not writable", "/proc/forbidden"},
     BadInput::any_backend, false, true},
    {"both_modes_on_tcg_without_vfio_pci", {"--mode", "both", "--backend", "qemu-tcg", "--quick"}, kExitEnvironment,
     {"--vfio-pci", "snoop control"}, BadInput::qemu},
    {"duplicate_pattern", {"--patterns", "nop,nop"}, kExitUsage, {"'nop'"}},
    {"mem_too_small", {"--patterns", "dirty", "--footprints", "1M", "--mem-mib", "1"}, kExitUsage, {"--mem-mib"}},
    {"vfio_on_qemu_backend", {"--backend", "qemu-tcg", "--vfio", "/dev/null"}, kExitUsage, {"--vfio"}, BadInput::qemu},
    {"vfio_pci_on_kvm_backend", {"--backend", "kvm", "--vfio-pci", "0000:00:01.0"}, kExitUsage, {"--vfio-pci"}, BadInput::kvm},
    {"migrate_on_qemu_backend", {"--backend", "qemu-tcg", "--migrate-ms", "5"}, kExitUsage, {"--migrate-ms"}, BadInput::qemu},
    {"neighbour_on_a_cpu_we_cannot_use", {"--neighbour", "4096"}, kExitUsage, {"--neighbour 4096", "auto"}},
    {"neighbour_without_idle_baseline", {"--neighbour", "auto", "--pace", "wbinvd@10:100"}, kExitUsage, {"idle step"}},
    {"neighbour_with_migration", {"--backend", "kvm", "--neighbour", "auto", "--migrate-ms", "5"}, kExitUsage, {"--migrate-ms"},
     BadInput::kvm},
    {"neighbour_noncoherent_without_vfio", {"--backend", "kvm", "--neighbour", "auto", "--mode", "both"}, kExitEnvironment,
     {"--vfio", "snoop control"}, BadInput::kvm},
    {"patterns_none_without_pace", {"--patterns", "none"}, kExitUsage, {"nothing to run"}},
    {"bad_pace_rate", {"--pace", "wbinvd@fast:100"}, kExitUsage, {"'wbinvd@fast:100'"}},
    {"pace_on_native", {"--backend", "native", "--pace", "idle:100"}, kExitUsage, {"--pace", "guest"}},
    {"dirty_mask_bad_width", {"--backend", "kvm", "--dirty-mask", "1,0"}, kExitUsage, {"--dirty-mask 0", "1,2,4"}, BadInput::kvm},
    {"dirty_mask_on_qemu_backend", {"--backend", "qemu-tcg", "--dirty-mask", "2"}, kExitUsage, {"--dirty-mask", "--backend kvm"},
     BadInput::qemu},
    {"dirty_mask_with_migration", {"--backend", "kvm", "--dirty-mask", "1", "--migrate-ms", "5"}, kExitUsage, {"--migrate-ms"},
     BadInput::kvm},
    {"vfio_pci_in_coherent_mode", {"--backend", "qemu-tcg", "--vfio-pci", "0000:00:01.0"}, kExitUsage, {"--vfio-baseline"},
     BadInput::qemu},
    {"vfio_pci_no_such_device", {"--backend", "qemu-tcg", "--mode", "noncoherent", "--vfio-pci", "0000:7f:1f.7"}, kExitUsage,
     {"0000:7f:1f.7", "no such PCI device"}, BadInput::qemu},
};

INSTANTIATE_TEST_SUITE_P(Run, CliBadInput, ::testing::ValuesIn(kBadInputs),
                         [](const ::testing::TestParamInfo<BadInput>& i) { return std::string(i.param.label); });

// CLI11's own parse errors print more than one line; only the exit code is the contract there.
TEST_F(CliTest, ParseErrorsExitWithUsage) {
    const std::vector<std::vector<std::string>> cases = {
        {kBin},
        {kBin, "frobnicate"},
        {kBin, "run", "--bogus-flag"},
        {kBin, "run", "--backend", "xen"},
        {kBin, "run", "--mode", "sometimes"},
        {kBin, "run", "--reps", "0"},
        {kBin, "run", "--reps", "many"},
        {kBin, "run", "--cell-timeout", "0"},
        {kBin, "run", "--machine", "isapc"},
        {kBin, "probe", "--bogus"},
    };
    for (const auto& args : cases) {
        ProcResult r = run_cmd(args, 20s);
        EXPECT_EQ(r.code, kExitUsage) << describe(args, r);
        EXPECT_FALSE(r.err.empty()) << describe(args, r);
    }
    EXPECT_TRUE(dir_entries(dir_).empty());
    ProcResult v = run_cmd({kBin, "--version"}, 20s);
    EXPECT_EQ(v.code, 0) << describe({kBin, "--version"}, v);
}

// ---------------------------------------------------------------------------------------------
// 5. probe --json.

TEST_F(CliTest, ProbeJsonListsCapabilities) {
    std::vector<std::string> args = {kBin, "probe", "--json"};
    ProcResult r = run_cmd(args, 60s);
    ASSERT_EQ(r.code, 0) << describe(args, r);
    json j = json::parse(r.out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << "probe --json is not JSON:\n" << r.out.substr(0, 1000);
    ASSERT_TRUE(j.contains("capabilities") && j["capabilities"].is_array()) << r.out.substr(0, 1000);
    std::map<std::string, json> caps;
    for (const auto& c : j["capabilities"]) {
        EXPECT_TRUE(c.contains("name") && c["name"].is_string()) << c.dump();
        EXPECT_TRUE(c.contains("available") && c["available"].is_boolean()) << c.dump();
        EXPECT_TRUE(c.contains("detail") && c["detail"].is_string()) << c.dump();
        EXPECT_TRUE(c.contains("fix") && c["fix"].is_string()) << c.dump();
        std::string name = c.value("name", "");
        EXPECT_FALSE(caps.count(name)) << "capability listed twice: " << name;
        caps[name] = c;
        if (c.value("available", true) == false) {
            EXPECT_FALSE(c.value("fix", "").empty() && c.value("detail", "").empty()) << name;
        }
    }
    for (const char* want : {"kvm", "kvm_vfio_device", "vfio", "qemu"}) EXPECT_TRUE(caps.count(want)) << "no capability " << want;
    std::string why;
    if (caps.count("kvm")) {
        EXPECT_EQ(caps["kvm"].value("available", false), kvm_usable(why)) << caps["kvm"].dump();
    }
    if (caps.count("qemu")) {
        EXPECT_EQ(caps["qemu"].value("available", false), qemu_available()) << caps["qemu"].dump();
    }
    std::string facts;
    for (const auto& [name, c] : caps) facts += " " + name + "=" + (c.value("available", false) ? "yes" : "no");
    std::printf("[ cli_test ] probe:%s\n", facts.c_str());
}

// ---------------------------------------------------------------------------------------------
// 6. Ctrl-C mid-run keeps every finished cell and exits 130.

void interrupt_mid_run(const fs::path& dir, const std::string& backend, unsigned reps) {
    auto table = patterns_from_binary();
    ASSERT_FALSE(table.empty());
    fs::path out = dir / "int.json";
    // On this host a 2000-rep TCG run finishes in under a second, too close to the time it takes
    // us to see the first progress line and signal, so TCG runs 20000; a KVM cell streams each
    // repetition through an exit, and 2000 reps already take about a second per cell.
    std::vector<std::string> args = {kBin,         "run",        "--backend", backend, "--reps",
                                     std::to_string(reps), "--footprints", "0,4K,64K,1M", "--patterns", "dirty,clflush,nop",
                                     // every repetition, not the stopping rule's: the interrupt must land mid-run
                                     "--budget-ms", "0", "--target-pct", "0", "--out",      out.string()};
    Child child(args);
    ASSERT_GT(child.pid(), 0);
    bool saw = child.pump_until([](const std::string& e) { return contains(e, "[   1/"); }, 60s);
    ASSERT_TRUE(saw) << "no progress line within 60 s:\n" << child.err();
    auto t0 = Clock::now();
    child.send(SIGINT);
    ProcResult r = child.finish(30s);
    double stop_s = std::chrono::duration<double>(Clock::now() - t0).count();
    auto prog = progress_lines(r.err);
    std::printf("[ cli_test ] %s: SIGINT after %zu finished cell(s); exit %d %.2f s later\n", backend.c_str(), prog.size(),
                r.code, stop_s);
    ASSERT_FALSE(r.timed_out) << describe(args, r);
    EXPECT_EQ(r.code, kExitInterrupted) << describe(args, r);
    EXPECT_FALSE(r.signaled) << "flushbench must catch SIGINT, not die of it";
    ASSERT_TRUE(fs::exists(out)) << describe(args, r);
    EXPECT_FALSE(fs::exists(out.string() + ".partial"));
    auto doc = load_json(out);
    ASSERT_TRUE(doc) << "results after SIGINT are not valid JSON";
    const json& cells = (*doc)["flushbench_cells"];
    int ok_with_samples = 0;
    std::set<std::string> in_file;
    for (const auto& c : cells) {
        in_file.insert(c.value("name", ""));
        if (c.value("status", "") == "ok" && c.value("tsc", json::array()).size() == reps) ++ok_with_samples;
        EXPECT_TRUE(kCellStatuses.count(c.value("status", ""))) << c.value("name", "") << " " << c.value("status", "");
    }
    EXPECT_GE(ok_with_samples, 1) << "at least one ok cell with all its samples";
    EXPECT_LT(cells.size(), 9u) << "the run finished before SIGINT arrived: the test did not test an interruption";
    EXPECT_EQ(prog.size(), cells.size()) << "cells in the file vs progress lines on stderr\n" << r.err;
    for (const auto& p : prog) {
        std::string name = p.pattern + "/" + std::to_string(p.footprint) + "/" + p.backend + "/" + p.mode;
        EXPECT_TRUE(in_file.count(name)) << "stderr reported " << name << " finished, the file lost it";
    }
    const json fbctx = (*doc)["context"].value("flushbench", json::object());
    EXPECT_EQ(fbctx.value("run", json::object()).value("interrupted", false), true) << "run summary should say interrupted";
    EXPECT_TRUE(contains(r.err, "interrupted")) << r.err;
    // The interrupted document is still a complete one: labelled cells, entries only for them.
    for (const auto& c : cells) {
        EXPECT_EQ(c.value("backend", ""), backend);
        EXPECT_EQ(c.value("emulated", false), backend == "qemu-tcg");
        if (c.value("status", "") != "ok")
            std::printf("[ cli_test ] after SIGINT: %s %s\n", c.value("name", "").c_str(), c.value("status", "").c_str());
    }
    for (const auto& e : (*doc)["benchmarks"]) EXPECT_TRUE(in_file.count(e.value("run_name", ""))) << e.value("name", "");
}

TEST_F(CliTest, SigintMidRunOnQemuTcgKeepsFinishedCells) {
    REQUIRE_QEMU();
    interrupt_mid_run(dir_, "qemu-tcg", 20000);
}

TEST_F(CliTest, SigintMidRunOnKvmKeepsFinishedCells) {
    REQUIRE_KVM();
    interrupt_mid_run(dir_, "kvm", 2000);
}

// ---------------------------------------------------------------------------------------------
// 7. patterns --json.

TEST_F(CliTest, PatternsJsonListsEachPatternOnce) {
    std::vector<std::string> args = {kBin, "patterns", "--json"};
    ProcResult r = run_cmd(args, 20s);
    ASSERT_EQ(r.code, 0) << describe(args, r);
    json j = json::parse(r.out, nullptr, false);
    ASSERT_FALSE(j.is_discarded()) << r.out.substr(0, 1000);
    ASSERT_TRUE(j.contains("patterns") && j["patterns"].is_array() && !j["patterns"].empty());
    std::set<std::string> names;
    for (const auto& p : j["patterns"]) {
        ASSERT_TRUE(p.contains("name") && p["name"].is_string()) << p.dump();
        std::string n = p["name"];
        EXPECT_TRUE(names.insert(n).second) << "pattern listed twice: " << n;
        EXPECT_TRUE(p.contains("unit") && (p["unit"] == "per-op" || p["unit"] == "per-footprint")) << p.dump();
        EXPECT_TRUE(p.contains("feature") && p["feature"].is_string() && !p["feature"].get<std::string>().empty()) << p.dump();
        EXPECT_TRUE(p.contains("uses_footprint") && p["uses_footprint"].is_boolean()) << p.dump();
    }
    for (const char* want : {"nop", "cpuid", "wbinvd", "clflush", "clflushopt", "clwb"})
        EXPECT_TRUE(names.count(want)) << "no pattern " << want;

    // The plain listing names the same patterns, one per line.
    ProcResult plain = run_cmd({kBin, "patterns"}, 20s);
    ASSERT_EQ(plain.code, 0);
    std::set<std::string> listed;
    for (const auto& line : lines_of(plain.out)) {
        std::string first = line.substr(0, line.find(' '));
        EXPECT_TRUE(listed.insert(first).second) << "listed twice: " << first;
    }
    EXPECT_EQ(listed, names);
}

// ---------------------------------------------------------------------------------------------
// Regression tests for bugs found while writing these tests.

// An existing file that is not a kernel is refused before anything is written, so an earlier
// results file at --out survives.
TEST_F(CliTest, BadImageDoesNotOverwriteEarlierResults) {
    REQUIRE_KVM();
    fs::path img = dir_ / "not-an-elf.elf", out = dir_ / "r.json";
    std::ofstream(img) << "hello\n";
    const std::string sentinel = "{\"previous\": 1}\n";
    std::ofstream(out) << sentinel;
    std::vector<std::string> args = {kBin, "run", "--backend", "kvm", "--quick", "--image", img.string(), "--out", out.string()};
    ProcResult r = run_cmd(args, 60s);
    EXPECT_EQ(r.code, kExitEnvironment) << describe(args, r);
    EXPECT_EQ(lines_of(r.err).size(), 1u) << describe(args, r);
    EXPECT_EQ(read_file(out), sentinel) << "earlier results overwritten by an empty run";
}

// QEMU's own failure exit (status 1) is never read as a guest verdict: it is an environment error,
// not a run of crashed cells.
TEST_F(CliTest, QemuThatCannotStartIsAnEnvironmentError) {
    REQUIRE_QEMU();
    fs::path img = dir_ / "not-an-elf.elf", out = dir_ / "q.json";
    std::ofstream(img) << "hello\n";
    std::vector<std::string> args = {kBin, "run", "--backend", "qemu-tcg", "--quick", "--image", img.string(), "--out", out.string()};
    ProcResult r = run_cmd(args, 60s);
    EXPECT_EQ(r.code, kExitEnvironment) << describe(args, r);
    EXPECT_FALSE(contains(r.err, "crashed")) << describe(args, r);
}

// Duplicate footprints would give two cells one benchmark name: refused like duplicate patterns.
TEST_F(CliTest, DuplicateFootprintsAreRejected) {
    REQUIRE_KVM();
    fs::path out = dir_ / "d.json";
    std::vector<std::string> args = {kBin, "run", "--backend", "kvm", "--quick", "--patterns", "dirty", "--footprints", "4K,4096",
                                     "--out", out.string()};
    ProcResult r = run_cmd(args, 60s);
    EXPECT_EQ(r.code, kExitUsage) << describe(args, r);
    EXPECT_FALSE(fs::exists(out));
}

// ---------------------------------------------------------------------------------------------
// The host neighbour during paced guest steps (issue: what a guest's flushes cost the rest of
// the host): slices on another CPU, matched to the steps' windows, compared with idle.

TEST_F(CliTest, KvmNeighbourRunMatchesSlicesToPacedSteps) {
    REQUIRE_KVM();
    fs::path out = dir_ / "nb.json";
    std::vector<std::string> args = {kBin, "run", "--backend", "kvm", "--neighbour", "auto", "--pace", "idle:300,wbinvd@100:300,wbinvd@max:300",
                                     "--pace-footprint", "4K", "--out", out.string()};
    ProcResult r = run_cmd(args, 120s);
    ASSERT_EQ(r.code, kExitOk) << describe(args, r);
    auto doc = load_json(out);
    ASSERT_TRUE(doc) << describe(args, r);
    // --neighbour implies --patterns none and three rounds: idle, A, idle, B, idle, shuffled per round.
    const json& cells = (*doc)["flushbench_cells"];
    ASSERT_EQ(cells.size(), 15u);
    std::map<std::string, int> per_step;
    for (size_t i = 0; i < cells.size(); ++i) {
        const json& c = cells[i];
        ASSERT_TRUE(c.contains("pace")) << c.value("name", "?");
        EXPECT_EQ(c.value("status", ""), "ok") << c.value("name", "?");
        EXPECT_TRUE(c["pace"].value("finished", false));
        EXPECT_EQ(c["pace"].value("round", -1), int(i / 5));
        EXPECT_EQ(c["pace"].value("rate", "") == "idle", i % 5 % 2 == 0) << "an idle step on either side of every step";
        ++per_step[c["pace"].value("step", "")];
    }
    EXPECT_EQ(per_step, (std::map<std::string, int>{{"idle", 9}, {"wbinvd@100", 3}, {"wbinvd@max", 3}}));
    for (const auto& c : cells)
        if (c["pace"]["step"] == "wbinvd@100") {
            EXPECT_GT(c["pace"].value("ops", uint64_t{0}), 10u);  // 100/s for 0.3 s: about 30
            EXPECT_LT(c["pace"].value("ops", uint64_t{0}), 60u);
        }
    EXPECT_TRUE(contains((*doc)["benchmarks"][0].value("name", ""), "idle:r0.0/")) << (*doc)["benchmarks"][0].dump();

    ASSERT_TRUE(doc->contains("flushbench_neighbour")) << describe(args, r);
    const json& nb = (*doc)["flushbench_neighbour"];
    ASSERT_EQ(nb.size(), 1u);
    EXPECT_NE(nb[0].value("cpu", -1), nb[0].value("vcpu_cpu", -1));
    EXPECT_LE(nb[0].value("buffer_bytes", uint64_t{0}), 16u << 20);  // half the LLC, at most 16 MiB
    size_t slices = nb[0]["slices"]["start_s"].size();
    EXPECT_GT(slices, 100u);  // 4.5 s of steps in 10 ms slices, plus boot (fewer when preempted)
    const json& windows = nb[0]["windows"];
    ASSERT_EQ(windows.size(), 15u);
    double last_end = 0;
    for (const auto& w : windows) {
        EXPECT_GE(w.value("start_s", -1.0), last_end) << w.dump().substr(0, 300);
        EXPECT_GT(w.value("end_s", 0.0), w.value("start_s", 0.0));
        last_end = w.value("end_s", 0.0);
        if (w.value("baseline", false)) continue;
        EXPECT_EQ(w["compared_with"].size(), 2u) << "the idle steps right before and after";
        const json& e = w["effect"];
        // ~30 whole slices in 300 ms; a loaded host stretches slices, but never to under 3 per window
        int window_slices = e.value("slices", 0) + e.value("preempted_slices", 0);
        EXPECT_GE(window_slices, 3) << w.value("label", "?");
        EXPECT_TRUE(e.contains("slowdown")) << e.dump().substr(0, 300);
        if (e.value("slices", 0) < 3 || e.value("baseline_slices", 0) < 3) {
            // Other tasks had the neighbour's CPU (this machine is busy): the run must say so, not guess.
            EXPECT_TRUE(contains(e.value("note", ""), "preempted")) << e.dump().substr(0, 300);
            std::printf("[ cli_test ] %s: %d of %d slices preempted (busy host): its slowdown is not asserted\n",
                        w.value("label", "?").c_str(), e.value("preempted_slices", 0), window_slices);
            continue;
        }
        EXPECT_TRUE(e["slowdown"]["estimate"].is_number());
    }
    EXPECT_TRUE(windows[0].value("baseline", false));
    const json& steps = nb[0]["steps"];
    ASSERT_EQ(steps.size(), 2u);
    for (const auto& st : steps) {
        EXPECT_EQ(st["rounds"].size(), 3u);
        EXPECT_FALSE(st.value("verdict", "").empty());
    }
    EXPECT_TRUE(contains(r.err, "pointer-chase slowdown against the idle steps beside each step")) << r.err;
    EXPECT_TRUE((*doc)["context"]["flushbench"].contains("regime"));
}

// Background load must not become a verdict: a CPU hog that starts and stops on its own schedule,
// unrelated to the guest's steps, while a coherent run (where WBINVD is a no-op) paces its steps.
TEST_F(CliTest, KvmNeighbourIsNotFooledByAHogThatComesAndGoes) {
    REQUIRE_KVM();
    fs::path out = dir_ / "hog.json";
    std::vector<std::string> args = {kBin, "run", "--backend", "kvm", "--mode", "coherent", "--neighbour", "auto", "--pace",
                                     "idle:200,wbinvd@1000:200,wbinvd@max:200", "--out", out.string(), "--quiet"};
    std::atomic<bool> done{false};
    std::thread hog([&] {  // a third thread, on whatever CPU the scheduler gives it
        volatile uint64_t sink = 0;
        for (int phase = 0; !done.load(); ++phase) {
            auto until = Clock::now() + std::chrono::milliseconds(130 + 70 * (phase % 3));
            if (phase % 2 == 0)
                while (Clock::now() < until && !done.load()) sink = sink + 1;
            else
                std::this_thread::sleep_until(until);
        }
    });
    ProcResult r = run_cmd(args, 120s);
    done = true;
    hog.join();
    ASSERT_EQ(r.code, kExitOk) << describe(args, r);
    auto doc = load_json(out);
    ASSERT_TRUE(doc && doc->contains("flushbench_neighbour")) << describe(args, r);
    for (const auto& st : (*doc)["flushbench_neighbour"][0]["steps"]) {
        std::string v = st.value("verdict", "");
        EXPECT_TRUE(v.rfind("slower, in every round", 0) != 0 && v.rfind("faster, in every round", 0) != 0)
            << st.value("step", "?") << ": " << v << "\n" << st.dump(1);
    }
}

TEST_F(CliTest, QemuTcgRunsPacedStepsAsEmulated) {
    REQUIRE_QEMU();
    fs::path out = dir_ / "tcg-paced.json";
    std::vector<std::string> args = {kBin, "run", "--backend", "qemu-tcg", "--patterns", "none", "--pace", "idle:100,wbinvd@1000:200",
                                     "--out", out.string(), "--quiet"};
    ProcResult r = run_cmd(args, 60s);
    ASSERT_EQ(r.code, kExitOk) << describe(args, r);
    auto doc = load_json(out);
    ASSERT_TRUE(doc);
    ASSERT_EQ((*doc)["flushbench_cells"].size(), 2u);
    const json& w = (*doc)["flushbench_cells"][1];
    EXPECT_TRUE(w.value("emulated", false));
    EXPECT_GT(w["pace"].value("ops", uint64_t{0}), 0u);
    EXPECT_FALSE(doc->contains("flushbench_neighbour"));  // paced steps alone: no neighbour section
}

}  // namespace
}  // namespace fb
