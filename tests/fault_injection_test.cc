// Fault injection on the real backends: a misbehaving guest, a killed QEMU, a killed flushbench,
// a full disk and an unwritable results directory. Each test asserts the outcome README's
// "Bad inputs and faults" table promises, and that nothing already measured is lost.
#include <sys/mount.h>

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "tests/subprocess.h"

namespace fb {
namespace {

using namespace fb::testing;
namespace fs = std::filesystem;
using nlohmann::json;

const std::string kBin = FLUSHBENCH_BIN;
constexpr const char* kPatterns = "nop,cpuid,dirty,wbinvd";
constexpr int kPlannedCells = 2 + 2 * 3;  // nop, cpuid once; dirty, wbinvd at 0, 4K, 64K

class FaultTest : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("flushbench-fault-" + std::to_string(getpid()) + "-" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override {
        for (const auto& m : mounts_) umount2(m.c_str(), MNT_DETACH);
        if (!HasFailure()) fs::remove_all(dir_);
        else std::printf("kept %s\n", dir_.c_str());
    }
    std::vector<std::string> run_args(const std::string& backend, const fs::path& out, std::vector<std::string> extra = {}) {
        std::vector<std::string> a = {kBin, "run", "--backend", backend, "--quick", "--patterns", kPatterns,
                                      "--cell-timeout", "2", "--out", out.string()};
        a.insert(a.end(), extra.begin(), extra.end());
        return a;
    }
    bool mount_tmpfs(const fs::path& where, const std::string& opts, std::string& why) {
        fs::create_directories(where);
        if (mount("tmpfs", where.c_str(), "tmpfs", 0, opts.c_str()) != 0) {
            why = std::string("cannot mount a tmpfs (needs root): ") + strerror(errno);
            return false;
        }
        mounts_.push_back(where.string());
        return true;
    }
    void require(const std::string& backend) {
        std::string why;
        if (backend == "kvm" && !kvm_usable(why)) GTEST_SKIP() << why;
        if (backend != "kvm" && find_on_path("qemu-system-x86_64").empty()) GTEST_SKIP() << "qemu-system-x86_64 not installed";
    }
    fs::path dir_;
    std::vector<std::string> mounts_;
};

using Outcome = std::tuple<std::string, std::string>;  // (pattern/footprint, status)

std::vector<Outcome> outcomes(const json& doc) {
    std::vector<Outcome> v;
    for (const auto& c : doc["flushbench_cells"])
        v.emplace_back(c["pattern"].get<std::string>() + "/" + std::to_string(c["footprint_bytes"].get<uint64_t>()),
                       c["status"].get<std::string>());
    return v;
}

// Cell 3 is dirty/4096: it misbehaves; every other planned cell is still accounted for.
struct Injection {
    const char* inject;
    const char* status;  // what cell 3 must become
    bool later_pattern_cells_skipped;
};

class GuestMisbehaves : public FaultTest, public ::testing::WithParamInterface<std::tuple<std::string, Injection>> {};

TEST_P(GuestMisbehaves, TheCellIsMarkedAndTheRunContinues) {
    auto [backend, inj] = GetParam();
    require(backend);
    fs::path out = dir_ / "r.json";
    auto args = run_args(backend, out, {"--inject", std::string(inj.inject) + "@3"});
    ProcResult r = run_cmd(args, 120s);
    EXPECT_EQ(r.code, 1) << describe(args, r);  // some cells failed
    auto doc = load_json(out);
    ASSERT_TRUE(doc) << describe(args, r);
    EXPECT_FALSE(fs::exists(out.string() + ".partial"));
    auto got = outcomes(*doc);
    ASSERT_EQ(got.size(), size_t(kPlannedCells)) << describe(args, r);
    EXPECT_EQ(got[3], Outcome("dirty/4096", inj.status));
    EXPECT_EQ(std::get<1>(got[4]), inj.later_pattern_cells_skipped ? "skipped" : "ok");
    for (size_t i : {0, 1, 2, 5, 6, 7}) EXPECT_EQ(std::get<1>(got[i]), "ok") << std::get<0>(got[i]);
    const json& cell = (*doc)["flushbench_cells"][3];
    if (std::string(inj.status) != "corrupt") {
        EXPECT_FALSE(cell["last_output"].get<std::string>().empty());
    }
    EXPECT_FALSE(cell["reason"].get<std::string>().empty());
}

INSTANTIATE_TEST_SUITE_P(
    Backends, GuestMisbehaves,
    ::testing::Combine(::testing::Values("kvm", "qemu-tcg"),
                       ::testing::Values(Injection{"hang", "hung", true}, Injection{"triple_fault", "crashed", true},
                                         Injection{"flood", "corrupt", false}, Injection{"panic", "crashed", true})),
    [](const auto& p) { return std::get<0>(p.param).substr(0, 4) + "_" + std::get<1>(p.param).inject; });

// flushbench's QEMU child, found through /proc (other children, e.g. a PCM sidecar, are not it).
std::vector<pid_t> qemu_children_of(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
    std::vector<pid_t> v;
    pid_t c;
    while (in >> c) {
        std::string comm;
        std::ifstream("/proc/" + std::to_string(c) + "/comm") >> comm;
        if (comm.rfind("qemu-system", 0) == 0) v.push_back(c);
    }
    return v;
}

TEST_F(FaultTest, QemuKilledFromOutsideIsACrashedCellAndTheRunGoesOn) {
    require("qemu-tcg");
    fs::path out = dir_ / "q.json";
    auto args = run_args("qemu-tcg", out, {"--reps", "4000"});
    Child child(args);
    ASSERT_TRUE(child.pump_until([](const std::string& err) { return err.find("[   2/") != std::string::npos; }, 60s)) << child.err();
    auto kids = qemu_children_of(child.pid());
    ASSERT_FALSE(kids.empty()) << "no QEMU child found";
    kill(kids.front(), SIGKILL);
    ProcResult r = child.finish(120s);
    EXPECT_EQ(r.code, 1) << describe(args, r);
    auto doc = load_json(out);
    ASSERT_TRUE(doc) << describe(args, r);
    auto got = outcomes(*doc);
    EXPECT_EQ(got.size(), size_t(kPlannedCells));
    size_t crashed = 0;
    for (const auto& [cell, status] : got) crashed += status == "crashed";
    EXPECT_EQ(crashed, 1u) << r.err;
}

TEST_F(FaultTest, SigkilledRunKeepsItsJournalAndResumeCompletesIt) {
    require("kvm");
    fs::path out = dir_ / "k.json";
    auto args = run_args("kvm", out, {"--reps", "1500", "--footprints", "0,4K"});
    const size_t planned = 2 + 2 * 2;
    Child child(args);
    ASSERT_TRUE(child.pump_until([](const std::string& err) { return err.find("[   3/") != std::string::npos; }, 60s)) << child.err();
    child.send(SIGKILL);
    ProcResult r = child.finish(30s);
    ASSERT_TRUE(r.signaled);
    fs::path journal = out.string() + ".partial";
    ASSERT_TRUE(fs::exists(journal));
    EXPECT_FALSE(fs::exists(out));
    // Every line of the journal is intact JSON (a torn last line would be tolerated by --resume).
    std::vector<json> journaled;
    std::ifstream in(journal);
    std::string line;
    while (std::getline(in, line)) {
        json j = json::parse(line, nullptr, false);
        ASSERT_FALSE(j.is_discarded()) << line.substr(0, 200);
        if (j.contains("cell")) journaled.push_back(j["cell"]);
    }
    ASSERT_GE(journaled.size(), 3u);

    std::vector<std::string> resume = {kBin, "run", "--resume", journal.string()};
    ProcResult rr = run_cmd(resume, 120s);
    EXPECT_EQ(rr.code, 0) << describe(resume, rr);
    auto doc = load_json(out);
    ASSERT_TRUE(doc) << describe(resume, rr);
    EXPECT_FALSE(fs::exists(journal));
    ASSERT_EQ((*doc)["flushbench_cells"].size(), planned);
    for (size_t i = 0; i < journaled.size(); ++i)  // the measured samples survive untouched
        EXPECT_EQ((*doc)["flushbench_cells"][i]["tsc"], journaled[i]["tsc"]) << i;
    EXPECT_EQ((*doc)["context"]["flushbench"]["run"]["resumed_cells"].get<size_t>(), journaled.size());
}

TEST_F(FaultTest, DiskFullWhileWritingResultsKeepsTheJournal) {
    require("kvm");
    std::string why;
    fs::path small = dir_ / "small";
    // Room for the journal of a short run but not for the final document (several times larger).
    if (!mount_tmpfs(small, "size=64k", why)) GTEST_SKIP() << why;
    fs::path out = small / "r.json";
    std::vector<std::string> args = {kBin, "run", "--backend", "kvm", "--patterns", "nop,cpuid", "--reps", "200",
                                     "--warmup", "1", "--out", out.string()};
    ProcResult r = run_cmd(args, 60s);
    EXPECT_EQ(r.code, 3) << describe(args, r);
    EXPECT_NE(r.err.find("No space left"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(".partial"), std::string::npos) << "the message names the journal that holds the cells";
    fs::path journal = out.string() + ".partial";
    ASSERT_TRUE(fs::exists(journal));
    size_t cells = 0;
    std::ifstream in(journal);
    std::string line;
    while (std::getline(in, line)) cells += line.rfind("{\"cell\"", 0) == 0;
    EXPECT_EQ(cells, 2u);
}

TEST_F(FaultTest, ReadOnlyResultsDirectoryIsAnEnvironmentError) {
    require("kvm");
    std::string why;
    fs::path ro = dir_ / "ro";
    if (!mount_tmpfs(ro, "ro,size=64k", why)) GTEST_SKIP() << why;
    std::vector<std::string> args = {kBin, "run", "--backend", "kvm", "--quick", "--out", (ro / "r.json").string()};
    ProcResult r = run_cmd(args, 60s);
    EXPECT_EQ(r.code, 3) << describe(args, r);
    EXPECT_NE(r.err.find("not writable"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace fb
