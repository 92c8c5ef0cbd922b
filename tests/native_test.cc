// Native baselines: flushbench-native (host user space, Google Benchmark) and the microkernel booted
// from a GRUB ISO as if on bare metal (native-ring0), both folded into flushbench's results schema.
// Checks that the native program and the guest kernel name the same cells from the one pattern
// table, and that an imported serial log gives a results file compare.py accepts. Skips with the
// reason when flushbench-native, QEMU, GRUB/xorriso or compare.py is missing.
// About 620 lines: one suite for both native paths, sharing their fixtures.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/patterns.h"
#include "common/wire.h"
#include "common/x86/cpu.h"
#include "host/baremetal/import_log.h"
#include "host/baremetal/iso_image.h"
#include "host/run/native.h"
#include "host/qemu/qemu_guest.h"
#include "host/results/record_stream.h"
#include "host/results/results.h"
#include "host/run/runner.h"
#include "host/results/statistics.h"

namespace fb {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace std::chrono_literals;

// flushbench-native is built into the same bin/ directory as flushbench.
std::string native_binary() { return (fs::path(FLUSHBENCH_BIN).parent_path() / "flushbench-native").string(); }

#define REQUIRE_NATIVE()                                                                                             \
    do {                                                                                                             \
        if (access(native_binary().c_str(), X_OK) != 0)                                                              \
            GTEST_SKIP() << native_binary() << " not built (cmake --build build --target flushbench-native)";       \
    } while (0)

#define REQUIRE_QEMU()                                                                                               \
    do {                                                                                                             \
        if (QemuGuest::which("qemu-system-x86_64").empty())                                                         \
            GTEST_SKIP() << "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)";                   \
    } while (0)

#define REQUIRE_GRUB()                                                                                               \
    do {                                                                                                             \
        if (QemuGuest::which("grub-mkrescue").empty() || QemuGuest::which("xorriso").empty() ||                     \
            !fs::exists("/usr/lib/grub/i386-pc"))                                                                    \
            GTEST_SKIP() << "grub-mkrescue, xorriso or GRUB's BIOS modules missing "                                 \
                            "(apt-get install grub-common grub-pc-bin xorriso mtools)";                              \
    } while (0)

struct Proc {
    int status = -1;  // exit status; 128 + signal when killed
    bool timed_out = false;
    std::string out;
};

// Runs argv with stdout captured (stderr to /dev/null unless keep_err), killed at the deadline.
Proc run(const std::vector<std::string>& argv, std::chrono::seconds deadline, bool keep_err = false) {
    int pipefd[2];
    EXPECT_EQ(pipe2(pipefd, O_CLOEXEC), 0);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        dup2(pipefd[1], 1);
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 0);
        if (!keep_err) dup2(devnull, 2);
        std::vector<char*> a;
        for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
        a.push_back(nullptr);
        execvp(a[0], a.data());
        _exit(127);
    }
    close(pipefd[1]);
    fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
    Proc p;
    auto until = std::chrono::steady_clock::now() + deadline;
    char buf[65536];
    int status = 0;
    for (;;) {
        ssize_t n;
        while ((n = read(pipefd[0], buf, sizeof buf)) > 0) p.out.append(buf, size_t(n));
        pid_t done = waitpid(pid, &status, WNOHANG);
        if (done == pid) break;
        if (std::chrono::steady_clock::now() > until) {
            kill(-pid, SIGKILL);
            waitpid(pid, &status, 0);
            p.timed_out = true;
            break;
        }
        std::this_thread::sleep_for(20ms);
    }
    ssize_t n;
    while ((n = read(pipefd[0], buf, sizeof buf)) > 0) p.out.append(buf, size_t(n));
    close(pipefd[0]);
    p.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return p;
}

struct TempDir {
    fs::path path;
    TempDir() {
        std::string t = (fs::temp_directory_path() / "flushbench-native-test-XXXXXX").string();
        path = mkdtemp(t.data());
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

std::set<std::string> names_of(const std::vector<Cell>& cells) {
    std::set<std::string> s;
    for (const auto& c : cells) s.insert(c.pattern + "/" + std::to_string(c.footprint_bytes));
    return s;
}

// ---- flushbench-native ----------------------------------------------------------------------

TEST(NativeBench, JsonHasTheClflushFamilyAtSeveralFootprintsWithCounters) {
    REQUIRE_NATIVE();
    TempDir dir;
    std::string samples_path = (dir.path / "samples.jsonl").string();
    Proc p = run({native_binary(), "--benchmark_format=json", "--patterns", "clflush,clflushopt,clwb", "--footprints", "0,4K,64K",
                  "--reps", "7", "--min-reps", "3", "--budget-ms", "50", "--samples", samples_path},
                 120s);
    ASSERT_FALSE(p.timed_out);
    ASSERT_EQ(p.status, 0);
    json doc = parse_gbench_json(p.out);
    ASSERT_TRUE(doc.contains("context") && doc["benchmarks"].is_array());
    EXPECT_NE(doc["context"].value("tsc_khz", "0"), "0");
    EXPECT_FALSE(doc["context"].value("tsc_khz_source", "").empty());
    std::ifstream sin(samples_path);
    std::string samples((std::istreambuf_iterator<char>(sin)), std::istreambuf_iterator<char>());
    std::map<std::string, json> lines;
    bool calibrated = false;
    for (size_t from = 0; from < samples.size();) {
        size_t nl = samples.find('\n', from);
        json j = json::parse(samples.substr(from, nl - from));
        from = nl + 1;
        if (j.contains("calibration")) calibrated = j["calibration"]["tsc"].size() == j["calibration"]["ref"].size();
        else lines[j["name"].get<std::string>()] = j;
    }
    EXPECT_TRUE(calibrated) << "the timing floor's calibration comes first";

    std::map<std::string, std::vector<json>> runs;
    for (const auto& e : doc["benchmarks"]) runs[e["name"].get<std::string>()].push_back(e);
    for (const char* name : {"clflush", "clflushopt", "clwb"}) {
        const Pattern* pat = find_pattern(name);
        ASSERT_NE(pat, nullptr);
        for (uint64_t fp : {0, 4096, 65536}) {
            std::string bench = native_benchmark_name(name, fp);
            SCOPED_TRACE(bench);
            ASSERT_EQ(runs[bench].size(), 1u) << "one entry per cell: the cell's repetitions are its samples";
            const json& e = runs[bench][0];
            if (!x86::has(pat->needs)) {
                EXPECT_TRUE(e.value("error_occurred", false));
                EXPECT_EQ(e.value("error_message", "").rfind(kCpuLacksPrefix, 0), 0u);
                continue;
            }
            EXPECT_FALSE(e.value("error_occurred", false)) << e.value("error_message", "");
            double n = e.value("n", 0.0);
            EXPECT_GE(n, 3.0);
            EXPECT_LE(n, 7.0);
            EXPECT_EQ(e.value("k", 0.0), 1.0) << "per-footprint patterns are paired, one operation per bracket";
            EXPECT_TRUE(e.contains("cost_cycles") && e.contains("floor_cycles"));
            bool perf = false;
            for (const auto& [k, v] : e.items()) perf |= k.rfind("perf_", 0) == 0;
            std::string label = e.value("label", "");
            // Counters, or the reason there are none; never silent zeros in place of a missing PMU.
            EXPECT_TRUE(perf || label.rfind("counters unavailable: ", 0) == 0) << label;
            ASSERT_TRUE(lines.count(bench));
            EXPECT_EQ(lines[bench]["method"], "paired");
            EXPECT_EQ(lines[bench]["tsc"].size(), size_t(n));
            EXPECT_EQ(lines[bench]["ref"].size(), size_t(n));
        }
    }

    auto cells = native_cells(p.out, samples);
    ASSERT_EQ(cells.size(), 9u);
    for (const auto& c : cells) {
        SCOPED_TRACE(benchmark_name(c));
        EXPECT_EQ(c.backend, "native");
        EXPECT_EQ(c.mode, "native");
        EXPECT_EQ(c.unit, unit_name(find_pattern(c.pattern.c_str())->unit));
        if (c.status == CellStatus::ok) {
            EXPECT_GE(c.tsc.size(), 3u);
            EXPECT_EQ(c.ref.size(), c.tsc.size());
            EXPECT_EQ(c.method, "paired");
            EXPECT_GT(c.tsc_khz, 0u);
            EXPECT_TRUE(std::isfinite(c.floor_cycles));
            EXPECT_FALSE(c.guest_pmu_unavailable.empty());
        } else {
            EXPECT_EQ(c.status, CellStatus::unsupported) << c.reason;
        }
    }
    // The converted cells make a results document in the guest cells' schema.
    json results = ResultsWriter::document(make_context({{"backend", "native"}}), cells);
    EXPECT_FALSE(results["benchmarks"].empty());
}

// The guest kernel (booted under QEMU TCG) and the native program name exactly the same cells,
// both expanding the one table over the same footprints; no list of patterns exists in this test.
TEST(NativeBench, SameCellsAsTheGuestKernelFromTheOneTable) {
    REQUIRE_NATIVE();
    REQUIRE_QEMU();
    const std::string footprints = "0,4K,64K";
    QemuOptions qo;
    qo.image = FLUSHBENCH_GUEST_ELF;
    qo.machine = "microvm";
    qo.mem_mib = 256;
    qo.cmdline = "patterns=all footprints=" + footprints + " reps=2 warmup=0";
    RecordStream stream;
    std::vector<Cell> guest;
    stream.on_cell([&](Cell&& c) { guest.push_back(std::move(c)); });
    QemuGuest q(qo);
    auto outcome = q.run([&](std::string_view b) { stream.feed_bytes(b); }, [](std::chrono::milliseconds s) { return s > 30s; });
    ASSERT_EQ(outcome.kind, QemuOutcome::Kind::exited) << outcome.detail;
    ASSERT_TRUE(stream.finished());

    NativeOptions no;
    no.binary = native_binary();
    no.patterns = "all";
    no.footprints = footprints;
    no.reps = 1;
    no.min_reps = 1;
    no.warmup = 0;
    no.echo_stderr = false;
    NativeResults native = run_native_bench(no);

    Config plan;  // what "all" expands to, by the guest's own parser
    ASSERT_EQ(parse_config(Str(qo.cmdline.c_str()), plan).message, nullptr);
    size_t expected = cells_per_phase(plan);
    EXPECT_EQ(guest.size(), expected);
    EXPECT_EQ(native.cells.size(), expected);
    EXPECT_EQ(names_of(guest), names_of(native.cells));
    for (Cell c : guest) {
        c.backend = kNativeBackend;
        c.mode = kNativeMode;
        EXPECT_EQ(benchmark_name(c), native_benchmark_name(c.pattern, c.footprint_bytes));
    }
    for (const auto& c : native.cells) {
        const Pattern* p = find_pattern(c.pattern.c_str());
        ASSERT_NE(p, nullptr) << c.pattern;
        SCOPED_TRACE(benchmark_name(c));
        if (p->ring0) {
            EXPECT_EQ(c.status, CellStatus::unsupported);
            EXPECT_EQ(c.reason.rfind(kNeedsRing0, 0), 0u) << c.reason;
            EXPECT_NE(c.reason.find("flushbench image"), std::string::npos);
        } else if (!x86::has(p->needs)) {
            EXPECT_EQ(c.status, CellStatus::unsupported);
        } else {
            EXPECT_EQ(c.status, CellStatus::ok) << c.reason;
            EXPECT_EQ(c.tsc.size(), 1u);
            EXPECT_EQ(c.method, p->unit == Unit::per_op ? "batch" : "paired") << "the guest's estimator for this cell";
        }
    }
}

// `flushbench run --backend native`: one results file, the guest's schema.
TEST(NativeBench, RunNativeWritesAResultsFileCompareAccepts) {
    REQUIRE_NATIVE();
    TempDir dir;
    RunOptions o;
    o.backend = Backend::native;
    o.patterns = "nop,clflush,wbinvd";
    o.footprints = "4K";
    o.reps = 3;
    o.warmup = 1;
    o.out = (dir.path / "native.json").string();
    o.command_line = "flushbench run --backend native";
    o.quiet = true;
    ASSERT_EQ(run_benchmark(o), 0);
    json doc = json::parse(std::ifstream(o.out));
    EXPECT_EQ(doc["context"]["flushbench"]["backend"], "native");
    std::set<std::string> names;
    for (const auto& c : doc["flushbench_cells"]) names.insert(c["name"].get<std::string>());
    EXPECT_EQ(names, (std::set<std::string>{"nop/0/native/native", "clflush/4096/native/native", "wbinvd/4096/native/native"}));
    size_t iterations = 0;
    for (const auto& e : doc["benchmarks"])
        if (e["name"] == "clflush/4096/native/native") ++iterations;
    EXPECT_EQ(iterations, 3u);
    const char* compare = "/usr/share/benchmark/compare.py";
    if (!fs::exists(compare)) GTEST_SKIP() << compare << " missing (apt-get install libbenchmark-tools)";
    Proc cmp = run({"/usr/bin/python3", compare, "benchmarks", o.out, o.out}, 120s, true);
    EXPECT_EQ(cmp.status, 0) << cmp.out;
    EXPECT_NE(cmp.out.find("clflush/4096/native/native"), std::string::npos) << cmp.out;
}

TEST(NativeBench, RejectsABadFootprintWithTheGuestParsersMessage) {
    REQUIRE_NATIVE();
    Proc p = run({native_binary(), "--footprints", "4Q"}, 30s);
    EXPECT_EQ(p.status, 2);
}

const std::string kSamples =
    R"({"calibration": {"k": 4096, "tsc": [5000, 5010, 4990], "ref": [5001, 5003, 4995]}, "bracket": 40})" "\n"
    R"({"name": "clflush/4096/native/native", "method": "paired", "k": 1, "ops": 2, "stop": "max_reps", "tsc": [1040, 1141], "ref": [40, 41]})" "\n"
    R"({"name": "nop/0/native/native", "method": "batch", "k": 4096, "ops": 99999, "stop": "budget", "tsc": [7000, 7002], "ref": [7001, 7000]})" "\n";

TEST(NativeCells, ConvertsGoogleBenchmarkJson) {
    json doc = {{"context", {{"tsc_khz", "2000000"}, {"line_bytes", "64"}, {"overhead_cycles", "40"}}},
                {"benchmarks",
                 {{{"name", "clflush/4096/native/native"}, {"run_type", "iteration"}, {"iterations", 1}, {"real_time", 1.0},
                   {"cost_cycles", 1050.0}, {"n", 2}, {"k", 1}, {"perf_cycles", 900.0}, {"perf_task-clock", 400.0}},
                  {{"name", "wbinvd/4096/native/native"}, {"run_type", "iteration"}, {"error_occurred", true},
                   {"error_message", native_refusal_ring0("wbinvd", "WBINVD after dirtying the footprint")}},
                  {{"name", "dirty/0/native/native"}, {"run_type", "iteration"}, {"error_occurred", true},
                   {"error_message", "skipped: not-today"}},
                  {{"name", "nop/0/native/native"}, {"run_type", "iteration"}, {"cost_cycles", 0.0},
                   {"label", "counters unavailable: cycles: no PMU"}}}}};
    auto cells = native_cells(doc.dump(), kSamples);
    ASSERT_EQ(cells.size(), 4u);
    EXPECT_EQ(cells[0].pattern, "clflush");
    EXPECT_EQ(cells[0].unit, "per-footprint");
    EXPECT_EQ(cells[0].tsc, (std::vector<uint64_t>{1040, 1141}));
    EXPECT_EQ(cells[0].ref, (std::vector<uint64_t>{40, 41}));
    EXPECT_EQ(net_cycles(cells[0]), (std::vector<double>{1000, 1100})) << "paired: the pattern's bracket minus the empty one";
    EXPECT_EQ(cells[0].tsc_khz, 2000000u);
    EXPECT_EQ(cells[0].tsc_overhead, 40u);
    EXPECT_TRUE(std::isfinite(cells[0].floor_cycles));
    EXPECT_EQ(cells[0].extra["perf_per_op"]["cycles"], 900.0);
    EXPECT_EQ(cells[1].status, CellStatus::unsupported);
    EXPECT_EQ(cells[2].status, CellStatus::skipped);
    EXPECT_EQ(cells[2].reason, "not-today");
    EXPECT_EQ(cells[3].guest_pmu_unavailable, "cycles: no PMU");
    EXPECT_EQ(cells[3].method, "batch");
    EXPECT_EQ(cells[3].stop, "budget");
    auto nop = net_cycles(cells[3]);
    ASSERT_EQ(nop.size(), 2u);
    EXPECT_DOUBLE_EQ(nop[0], -1.0 / 4096) << "a batch's repetitions may measure below zero: kept, signed";
}

TEST(NativeCells, RefusesWhatIsNotFlushbenchNativeOutput) {
    EXPECT_THROW(native_cells("not json", ""), std::runtime_error);
    EXPECT_THROW(native_cells("{\"context\": {}}", ""), std::runtime_error);
    EXPECT_THROW(native_cells(R"({"benchmarks": [{"name": "BM_Foo", "run_type": "iteration"}]})", ""), std::runtime_error);
    EXPECT_THROW(native_cells(R"({"benchmarks": [{"name": "nosuch/0/native/native", "cost_cycles": 1}]})", ""), std::runtime_error);
    try {
        native_cells(R"({"benchmarks": [{"name": "nop/0/native/native_mean", "run_type": "aggregate"},
                                        {"name": "nop/0/native/native", "run_type": "iteration", "error_occurred": false}]})",
                     "");
        FAIL() << "a measured cell without samples accepted";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("--samples"), std::string::npos) << e.what();
    }
    EXPECT_THROW(native_cells(R"({"benchmarks": [{"name": "nop/0/native/native"}]})",
                              R"({"name": "nop/0/native/native", "method": "batch", "k": 8, "tsc": [1, 2], "ref": [1]})"),
                 std::runtime_error)
        << "value and reference brackets must pair up";
    EXPECT_THROW(native_cells(R"({"benchmarks": []})", "not json\n"), std::runtime_error);
    // Google Benchmark's NaN (a zero counter's cv) is not JSON; it becomes null, strings untouched.
    json j = parse_gbench_json(R"({"a": NaN, "b": -Infinity, "c": "NaN \" Infinity", "d": [1, -NaN]})");
    EXPECT_TRUE(j["a"].is_null());
    EXPECT_TRUE(j["b"].is_null());
    EXPECT_EQ(j["c"], "NaN \" Infinity");
    EXPECT_TRUE(j["d"][1].is_null());
}

// ---- the ISO ---------------------------------------------------------------------------------

TEST(IsoImage, GrubCfgBootsAtOnceOnTheSerialConsoleWithEveryWordQuoted) {
    std::string cfg = grub_cfg("patterns=wbinvd,clflush footprints=0,4K skip=clwb:why$not reps=5");
    EXPECT_NE(cfg.find("serial --unit=0 --speed=115200"), std::string::npos);
    EXPECT_NE(cfg.find("terminal_output serial"), std::string::npos);
    EXPECT_NE(cfg.find("set timeout=0"), std::string::npos);
    EXPECT_NE(cfg.find("multiboot /boot/flushbench-guest.elf 'patterns=wbinvd,clflush' 'footprints=0,4K' 'skip=clwb:why$not' 'reps=5'\n"),
              std::string::npos)
        << cfg;
    EXPECT_NE(cfg.find("    boot\n"), std::string::npos);
}

TEST(IsoImage, RefusesWhatTheGuestOrGrubWouldMisread) {
    EXPECT_THROW(grub_cfg("patterns=nosuch"), std::invalid_argument);
    EXPECT_THROW(grub_cfg("footprints=4Q"), std::invalid_argument);
    EXPECT_THROW(grub_cfg("skip=clwb:it's"), std::invalid_argument);
    EXPECT_THROW(grub_cfg("reps=5\nboot"), std::invalid_argument);
    EXPECT_THROW(build_iso("/nonexistent/guest.elf", "reps=5", "/tmp/x.iso"), std::invalid_argument);
    EXPECT_THROW(build_iso("/etc/hostname", "reps=5", "/tmp/x.iso"), std::invalid_argument);  // no Multiboot header
}

// Boots the ISO the way a BIOS machine would: SeaBIOS, El Torito, GRUB, Multiboot; no -kernel.
// Returns the serial log and QEMU's exit status (isa-debug-exit: (0x31 << 1) | 1 when done).
Proc boot_iso(const std::string& iso, bool kvm) {
    std::vector<std::string> argv = {"qemu-system-x86_64", "-cdrom", iso, "-M", "pc"};
    if (kvm) argv.insert(argv.end(), {"-accel", "kvm", "-cpu", "host,-arch-capabilities"});
    else argv.insert(argv.end(), {"-accel", "tcg"});
    argv.insert(argv.end(), {"-m", "256M", "-display", "none", "-serial", "stdio", "-no-reboot", "-nodefaults", "-device",
                             "isa-debug-exit,iobase=0xf4,iosize=4"});
    return run(argv, 240s);
}

void boot_iso_and_import(bool kvm) {
    TempDir dir;
    std::string iso = (dir.path / "flushbench.iso").string();
    // Ring-0 patterns included: that is what the ISO is for. No clwb: some KVMs never complete it.
    const std::string cmdline = "patterns=nop,cpuid,pio,dirty,wbinvd,clflush footprints=0,4K reps=5 warmup=1";
    build_iso(FLUSHBENCH_GUEST_ELF, cmdline, iso);
    ASSERT_TRUE(fs::exists(iso));
    Proc p = boot_iso(iso, kvm);
    ASSERT_FALSE(p.timed_out) << p.out.substr(0, 2000);
    EXPECT_EQ(p.status, 99) << p.out.substr(0, 2000);
    std::string log = (dir.path / "serial.log").string();
    std::ofstream(log, std::ios::binary) << p.out;

    ImportResult r = import_serial_log(p.out);
    ASSERT_EQ(r.boots.size(), 1u) << r.facts().dump(1);
    EXPECT_TRUE(r.boots[0].finished);
    EXPECT_TRUE(r.corrupt.empty()) << r.facts().dump(1);
    EXPECT_GT(r.noise_before_first_record, 0u);  // GRUB's banner and the kernel's "booted" line
    EXPECT_EQ(r.boots[0].hello.at("entry"), "multiboot");
    ASSERT_EQ(r.cells.size(), 9u);  // nop, cpuid, pio; dirty, wbinvd, clflush at 2 footprints
    for (const auto& c : r.cells) {
        SCOPED_TRACE(benchmark_name(c));
        EXPECT_EQ(c.backend, "native-ring0");
        EXPECT_EQ(c.mode, "native");
        EXPECT_EQ(c.status, CellStatus::ok) << c.reason;
        EXPECT_EQ(c.tsc.size(), 5u);
        EXPECT_EQ(c.emulated, !kvm);  // the kernel's hello says TCG
    }

    std::string out = (dir.path / "imported.json").string();
    int rc = run_import(log, out, "flushbench import serial.log", ImportOptions{kvm ? 0u : 1000000u});
    EXPECT_EQ(rc, 0);
    json doc = json::parse(std::ifstream(out));
    EXPECT_EQ(doc["context"]["flushbench"]["backend"], "native-ring0");
    EXPECT_EQ(doc["flushbench_cells"].size(), 9u);
    auto cells = r.cells;
    for (auto& c : cells)
        if (!kvm) c.tsc_khz = 1000000;
    EXPECT_EQ(doc["benchmarks"], ResultsWriter::document(doc["context"], cells)["benchmarks"]);

    const char* compare = "/usr/share/benchmark/compare.py";
    if (!fs::exists(compare)) GTEST_SKIP() << compare << " missing (apt-get install libbenchmark-tools)";
    Proc cmp = run({"/usr/bin/python3", compare, "benchmarks", out, out}, 120s, true);
    EXPECT_EQ(cmp.status, 0) << cmp.out;
    EXPECT_NE(cmp.out.find("wbinvd/4096/native-ring0/native"), std::string::npos) << cmp.out;
}

TEST(IsoImage, BootsUnderQemuTcgAsBareMetalAndImportsToAResultsFileCompareAccepts) {
    REQUIRE_QEMU();
    REQUIRE_GRUB();
    boot_iso_and_import(false);
}

TEST(IsoImage, BootsUnderQemuKvmAsBareMetal) {
    REQUIRE_QEMU();
    REQUIRE_GRUB();
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) GTEST_SKIP() << "/dev/kvm: " << strerror(errno);
    close(fd);
    boot_iso_and_import(true);
}

// ---- importing hostile captures ---------------------------------------------------------------

std::string rec(wire::Writer& w) {
    Str s = w.finish();
    return std::string(s.p, s.n);
}

std::string hello() {
    return rec(wire::Writer("hello").field("v", 1).field("entry", "multiboot").field("vendor", "GenuineIntel").field("hv", "none")
                   .field("tsc_khz", 3000000).field("llc", 33554432).field("line", 64));
}

std::string config(const char* patterns, const char* footprints, uint64_t cells) {
    return rec(wire::Writer("config").field("patterns", patterns).field("footprints", footprints).field("reps", 2)
                   .field("warmup", 0).field("phases", 1).field("from", 0).field("cells", cells));
}

std::string cell(uint64_t id, const char* pattern, uint64_t fp) {
    const Pattern* p = find_pattern(pattern);
    return rec(wire::Writer("cell").field("id", id).field("phase", 0).field("pattern", pattern).field("footprint", fp)
                   .field("reps", 2).field("warmup", 0).field("unit", unit_name(p->unit)));
}

std::string samples(uint64_t id, uint64_t a, uint64_t b) {
    uint64_t v[2] = {a, b};
    return rec(wire::Writer("samples").field("id", id).field("seq", 0).list("tsc", v, 2));
}

std::string end(uint64_t id) {
    return rec(wire::Writer("end").field("id", id).field("status", "ok").field("n", 2).field("warmup", 0).field("overhead", 30));
}

std::string crlf(std::string line) {
    line.insert(line.size() - 1, "\r");
    return line;
}

TEST(ImportLog, SurvivesAHostileCaptureAndLosesNothing) {
    // Plan: nop, wbinvd/0, wbinvd/4096, clflush/0, clflush/4096 (ids 0-4).
    std::string log;
    log += "\x1b[2J\x1b[H\x1b[1;1H  GNU GRUB  version 2.06\r\n";
    log += "\xe2\x94\x8c\xe2\x94\x80\xe2\x94\x80\xe2\x94\x90 *flushbench guest kernel\r\n";
    log += crlf(hello());
    log += crlf(config("nop,wbinvd,clflush", "0,4096", 5));
    log += crlf(cell(0, "nop", 0));
    log += "garbage\x01\x02 " + crlf(samples(0, 40, 41));  // junk before a record on its line
    log += crlf(end(0));
    log += crlf(cell(1, "wbinvd", 0));
    std::string wrapped = samples(1, 5000, 5100);  // a logger wrapped it at 40 columns
    log += wrapped.substr(0, 40) + "\r\n" + crlf(wrapped.substr(40));
    log += "\x1b[0m" + crlf(end(1));  // an escape sequence in front
    log += crlf(cell(2, "wbinvd", 4096));
    std::string bad = samples(2, 7000, 7100);
    bad[bad.find("7000")] = '9';  // a flipped byte: CRC mismatch
    log += crlf(bad);
    log += crlf(end(2));
    log += crlf(cell(3, "clflush", 0));
    log += crlf(samples(3, 90, 91));  // and then the machine went quiet: cell 3 hangs, cell 4 never ran

    ImportResult r = import_serial_log(log);
    ASSERT_EQ(r.boots.size(), 1u);
    EXPECT_FALSE(r.boots[0].finished);
    EXPECT_EQ(r.resynced, 1u);
    EXPECT_EQ(r.rejoined, 1u);
    EXPECT_GT(r.repaired_bytes, 0u);
    EXPECT_EQ(r.noise_before_first_record, 2u);
    ASSERT_EQ(r.corrupt.size(), 1u);
    EXPECT_EQ(r.corrupt[0].line, 13u);
    EXPECT_EQ(r.corrupt[0].error, "bad_checksum");
    std::map<std::string, Cell> by;
    for (const auto& c : r.cells) {
        EXPECT_EQ(c.backend, "native-ring0");
        EXPECT_EQ(c.mode, "native");
        by[c.pattern + "/" + std::to_string(c.footprint_bytes)] = c;
    }
    ASSERT_EQ(r.cells.size(), 5u);
    EXPECT_EQ(by["nop/0"].status, CellStatus::ok);
    EXPECT_EQ(by["nop/0"].tsc, (std::vector<uint64_t>{40, 41}));
    EXPECT_EQ(by["nop/0"].tsc_khz, 3000000u);
    EXPECT_EQ(by["wbinvd/0"].status, CellStatus::ok);
    EXPECT_EQ(by["wbinvd/0"].tsc, (std::vector<uint64_t>{5000, 5100}));
    EXPECT_EQ(by["wbinvd/4096"].status, CellStatus::corrupt);
    EXPECT_EQ(by["clflush/0"].status, CellStatus::hung);
    EXPECT_FALSE(by["clflush/0"].last_output.empty());
    EXPECT_EQ(by["clflush/4096"].status, CellStatus::crashed);
    EXPECT_NE(by["clflush/4096"].reason.find("never ran"), std::string::npos);
    json facts = r.facts();
    EXPECT_EQ(facts["corrupt_lines"].size(), 1u);
    EXPECT_EQ(facts["boots"][0]["guest"]["vendor"], "GenuineIntel");
    EXPECT_FALSE(r.warnings.empty());  // no summary
}

TEST(ImportLog, KeepsEveryBootOfALogThatHoldsSeveral) {
    std::string boot1 = hello() + config("nop", "0", 1) + cell(0, "nop", 0) + samples(0, 40, 41);  // reset mid-cell
    std::string boot2 = "SeaBIOS (version 1.16)\n" + hello() + config("nop", "0", 1) + cell(0, "nop", 0) + samples(0, 42, 43) +
                        end(0) + rec(wire::Writer("summary").field("cells", 1).field("ok", 1));
    ImportResult r = import_serial_log(boot1 + boot2);
    ASSERT_EQ(r.boots.size(), 2u);
    EXPECT_FALSE(r.boots[0].finished);
    EXPECT_TRUE(r.boots[1].finished);
    ASSERT_EQ(r.cells.size(), 2u);
    EXPECT_EQ(r.cells[0].status, CellStatus::hung);
    EXPECT_NE(r.cells[0].reason.find("restarted"), std::string::npos);
    EXPECT_EQ(r.cells[1].status, CellStatus::ok);
    EXPECT_EQ(r.cells[1].extra["boot"], 1);
}

// Random damage to a real record stream: whatever survives is a cell with the right identity,
// and every line that starts like a record and fails is listed; nothing throws or hangs.
TEST(ImportLog, RandomDamageNeverCrashesAndIsAlwaysAccountedFor) {
    std::string clean = hello() + config("nop,dirty", "0,4096", 3) + cell(0, "nop", 0) + samples(0, 40, 41) + end(0) +
                        cell(1, "dirty", 0) + samples(1, 50, 51) + end(1) + cell(2, "dirty", 4096) + samples(2, 60, 61) + end(2) +
                        rec(wire::Writer("summary").field("cells", 3).field("ok", 3));
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    auto next = [&] { return seed = seed * 6364136223846793005ull + 1442695040888963407ull, seed >> 33; };
    for (int round = 0; round < 300; ++round) {
        std::string log = clean;
        for (int k = int(next() % 6); k > 0; --k) {
            size_t at = next() % log.size();
            switch (next() % 4) {
                case 0: log[at] = char(next()); break;                       // flip
                case 1: log.erase(at, next() % 40); break;                   // drop bytes (a BMC lost them)
                case 2: log.insert(at, "\x1b[2J\r\n"); break;              // escapes, a stray line break
                case 3: log.insert(at, std::string(next() % 3000, 'F')); break;  // a flood
            }
        }
        ImportResult r = import_serial_log(log);
        EXPECT_LE(r.cells.size(), 6u);
        for (const auto& c : r.cells) {
            EXPECT_EQ(c.backend, "native-ring0");
            EXPECT_NE(find_pattern(c.pattern.c_str()), nullptr);
            if (c.status == CellStatus::ok) {
                EXPECT_EQ(c.tsc.size(), 2u);
            }
        }
    }
}

TEST(ImportLog, ALogWithoutRecordsSaysSo) {
    ImportResult r = import_serial_log("SeaBIOS\r\nBooting from DVD/CD...\r\n\x1b[2Jerror: no such device\r\n");
    EXPECT_TRUE(r.boots.empty());
    EXPECT_TRUE(r.cells.empty());
    ASSERT_FALSE(r.warnings.empty());
    EXPECT_NE(r.warnings[0].find("no flushbench records"), std::string::npos);
    ImportResult garbage = import_serial_log(std::string(1 << 20, '\0') + "FB1 \xff\xff" + std::string(5000, 'x'));
    EXPECT_TRUE(garbage.cells.empty());
    EXPECT_EQ(garbage.corrupt.size(), 1u);
}

}  // namespace
}  // namespace fb
