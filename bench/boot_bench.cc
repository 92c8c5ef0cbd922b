// flushbench-boot-bench: what it costs to get a flushbench guest talking, per way in.
//
// A cell's numbers come from inside the guest, but every boot (one per mode on the qemu backends,
// one more after each hung cell) is paid in wall time before the first of them. This measures that
// price, from the host, with Google Benchmark and manual timing:
//
//   BootToFirstRecord/<backend>/<entry>  launch to the guest's first wire record (the hello line),
//       parsed by fb::RecordStream exactly as `flushbench run` parses it, so console text and
//       firmware banners before it do not count as "talking". The guest runs
//       "patterns=nop reps=3 warmup=0 footprints=0", so the boot dominates. Counters:
//         first_serial_ms  qemu only: launch to the first serial byte (SeaBIOS banner on pc)
//         vm_create_ms     kvm only: VmmGuest's constructor (KVM_CREATE_VM, memory, image copy)
//         last_record_ms   launch to the summary record
//         exit_ms          launch to run() returning (QEMU reaped / vCPU thread joined)
//     qemu-tcg  QEMU with TCG: the guest is emulated, no /dev/kvm needed.
//     qemu-kvm  QEMU with -accel kvm; skipped when /dev/kvm cannot be opened.
//     kvm       flushbench's own VMM (fb::VmmGuest), the guest entered directly in long mode;
//               timed from constructing VmmGuest, which creates the VM.
//     multiboot-pc goes through SeaBIOS and QEMU's Multiboot loader, whose real-mode code is
//     costly on KVMs that emulate much of it; pvh-microvm jumps to the PVH entry note with no
//     firmware at all.
//   QuickMatrix/<backend>  wall time of a whole `flushbench run --backend B --quick --quiet` into a
//       temporary results file (removed afterwards); exit_code is its exit status (1 = some cells
//       hung or crashed, which the run records and survives: CLWB and VMMCALL hang on some KVMs).
//       Always one run per repetition and 2 repetitions, whatever --benchmark_repetitions says.
//   DefaultMatrix  wall time of `flushbench run --matrix default` (what ./run.sh runs), report_s the
//       report's, and the repetitions the time budget chose (reps_min/median/max, stop_*), each
//       cell's printed after the benchmarks. kvm only.
//   RunSh  ./run.sh end to end on a built tree, results and plots into a scratch directory.
//
// Each repetition of a boot benchmark is one cold boot (iterations fixed at 1); without
// --benchmark_repetitions the boot benchmarks repeat 3 times. Run from the build tree:
//
//   build/bin/flushbench-boot-bench --benchmark_repetitions=5
//   build/bin/flushbench-boot-bench --benchmark_filter='BootToFirstRecord/(kvm|qemu-kvm)/'
//   build/bin/flushbench-boot-bench --benchmark_out=boot.json --benchmark_out_format=json
//
// The figures are this host's, wall-clock, and include QEMU's own start-up and tear-down; they
// say nothing about flush costs.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/boot.h"
#include "host/vmm/elf_image.h"
#include "host/qemu/qemu_guest.h"
#include "host/results/record_stream.h"
#include "host/vmm/vmm_guest.h"

#ifndef FB_BENCH_GUEST_IMAGE
#error "FB_BENCH_GUEST_IMAGE (the guest ELF) must be defined by bench/CMakeLists.txt"
#endif
#ifndef FB_BENCH_FLUSHBENCH
#error "FB_BENCH_FLUSHBENCH (the flushbench binary) must be defined by bench/CMakeLists.txt"
#endif

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kGuestImage = FB_BENCH_GUEST_IMAGE;
constexpr const char* kFlushbench = FB_BENCH_FLUSHBENCH;
// One nop cell with three samples: the guest reaches its first record and its exit port with
// almost nothing in between, so what is left is the boot.
constexpr const char* kGuestCmdline = "patterns=nop reps=3 warmup=0 footprints=0";
// What `flushbench run` gives a guest with footprints=0 (it never goes below 256 MiB).
constexpr uint64_t kGuestMemMib = 256;
// SeaBIOS on pc can be quiet for seconds; a guest silent for this long is not booting.
constexpr std::chrono::milliseconds kSilenceLimit{30'000};
constexpr int kDefaultBootRepetitions = 3;

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

benchmark::Counter per_boot(double v) { return benchmark::Counter(v, benchmark::Counter::kAvgIterations); }

// The question KVM users ask first; the reason goes into the benchmark's error line.
std::optional<std::string> kvm_unusable() {
    int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) return std::string("/dev/kvm cannot be opened: ") + std::strerror(errno);
    ::close(fd);
    return std::nullopt;
}

std::optional<std::string> qemu_missing() {
    if (fb::QemuGuest::which("qemu-system-x86_64").empty())
        return std::string("qemu-system-x86_64 not on PATH (apt-get install qemu-system-x86)");
    return std::nullopt;
}

// Wall times of one boot, all from the same origin.
struct BootTimes {
    std::optional<Clock::duration> first_record, last_record;
    uint64_t records = 0;

    // Called as guest output arrives, with the arrival time taken before parsing.
    void note(const fb::RecordStream& stream, Clock::duration at) {
        uint64_t n = stream.health().records;
        if (n == records) return;
        records = n;
        if (!first_record) first_record = at;
        last_record = at;
    }
};

// ---- BootToFirstRecord over QEMU --------------------------------------------------------------

struct QemuWay {
    const char* name;
    const char* machine;  // pc: SeaBIOS + Multiboot; microvm: PVH entry note, no firmware
    bool kvm;
};

constexpr QemuWay kQemuWays[] = {
    {"BootToFirstRecord/qemu-tcg/multiboot-pc", "pc", false},
    {"BootToFirstRecord/qemu-tcg/pvh-microvm", "microvm", false},
    {"BootToFirstRecord/qemu-kvm/multiboot-pc", "pc", true},
    {"BootToFirstRecord/qemu-kvm/pvh-microvm", "microvm", true},
};

void boot_qemu(benchmark::State& state, const QemuWay& way) {
    if (auto why = qemu_missing()) return state.SkipWithError(why->c_str());
    if (way.kvm)
        if (auto why = kvm_unusable()) return state.SkipWithError(why->c_str());
    fb::QemuOptions qo;
    qo.image = kGuestImage;
    qo.machine = way.machine;
    qo.kvm = way.kvm;
    qo.mem_mib = kGuestMemMib;
    qo.cmdline = kGuestCmdline;
    try {
        // The PVH copy of the kernel is written on first use; later boots only re-hash it.
        if (qo.machine == "microvm") fb::QemuGuest::pvh_image(qo.image);
    } catch (const std::exception& e) {
        return state.SkipWithError(e.what());
    }

    double first_serial = 0, last_record = 0, exit = 0, records = 0;
    for (auto _ : state) {
        fb::QemuGuest qemu(qo);
        fb::RecordStream stream;
        BootTimes times;
        fb::QemuOutcome out;
        auto t0 = Clock::now();
        try {
            out = qemu.run(
                [&](std::string_view bytes) {
                    auto at = Clock::now() - t0;
                    stream.feed_bytes(bytes);
                    times.note(stream, at);
                },
                [](std::chrono::milliseconds silent) { return silent > kSilenceLimit; });
        } catch (const std::exception& e) {
            state.SkipWithError(e.what());
            break;
        }
        auto t_exit = Clock::now() - t0;
        if (!times.first_record) {
            std::string why = std::string("no wire record from the guest (") + fb::to_string(out.kind) + "): " + out.detail;
            state.SkipWithError(why.c_str());
            break;
        }
        if (out.kind != fb::QemuOutcome::Kind::exited || out.guest_exit_code != int(fb::boot::ExitCode::done)) {
            std::string why = std::string("guest did not finish cleanly (") + fb::to_string(out.kind) +
                              ", exit code " + std::to_string(out.guest_exit_code) + "): " + out.detail;
            state.SkipWithError(why.c_str());
            break;
        }
        state.SetIterationTime(std::chrono::duration<double>(*times.first_record).count());
        first_serial += std::chrono::duration<double, std::milli>(out.first_output).count();
        last_record += ms(*times.last_record);
        exit += ms(t_exit);
        records += double(times.records);
    }
    state.counters["first_serial_ms"] = per_boot(first_serial);
    state.counters["last_record_ms"] = per_boot(last_record);
    state.counters["exit_ms"] = per_boot(exit);
    state.counters["records"] = per_boot(records);
}

// ---- BootToFirstRecord on flushbench's own VMM ------------------------------------------------

// Records come one per record-port exit, on the vCPU thread, with the vCPU stopped; BootTimes is
// read only after run() has joined that thread.
struct TimingEvents final : fb::VmmEvents {
    Clock::time_point t0;
    fb::RecordStream stream;
    BootTimes times;
    void on_serial(std::string_view) override {}  // the kernel's console line; records come by port
    void on_record(std::string_view line) override {
        auto at = Clock::now() - t0;
        stream.feed_line(line);
        times.note(stream, at);
    }
};

void boot_kvm_direct(benchmark::State& state) {
    if (auto why = kvm_unusable()) return state.SkipWithError(why->c_str());
    std::optional<fb::ElfImage> image;
    try {
        image = fb::ElfImage::load(kGuestImage);  // reading the file is not part of a boot
    } catch (const std::exception& e) {
        return state.SkipWithError(e.what());
    }
    fb::VmmOptions vo;
    vo.mem_bytes = kGuestMemMib << 20;
    vo.cmdline = kGuestCmdline;

    double vm_create = 0, last_record = 0, exit = 0, records = 0;
    for (auto _ : state) {
        TimingEvents events;
        fb::VmmOutcome out;
        Clock::duration created{}, t_exit{};
        try {
            events.t0 = Clock::now();
            fb::VmmGuest guest(*image, vo, events);
            created = Clock::now() - events.t0;
            out = guest.run(kSilenceLimit);
            t_exit = Clock::now() - events.t0;
        } catch (const std::exception& e) {
            state.SkipWithError(e.what());
            break;
        }
        if (!events.times.first_record) {
            std::string why = std::string("no wire record from the guest (") + fb::to_string(out.kind) + "): " + out.detail;
            state.SkipWithError(why.c_str());
            break;
        }
        if (out.kind != fb::VmmOutcome::Kind::exited || out.exit_code != uint32_t(fb::boot::ExitCode::done)) {
            std::string why = std::string("guest did not finish cleanly (") + fb::to_string(out.kind) + ", exit code " +
                              std::to_string(out.exit_code) + "): " + out.detail;
            state.SkipWithError(why.c_str());
            break;
        }
        state.SetIterationTime(std::chrono::duration<double>(*events.times.first_record).count());
        vm_create += ms(created);
        last_record += ms(*events.times.last_record);
        exit += ms(t_exit);
        records += double(events.times.records);
    }
    state.counters["vm_create_ms"] = per_boot(vm_create);
    state.counters["last_record_ms"] = per_boot(last_record);
    state.counters["exit_ms"] = per_boot(exit);
    state.counters["records"] = per_boot(records);
}

// ---- QuickMatrix: the whole `flushbench run --quick` ------------------------------------------

// Last non-empty line of a file: flushbench's own one-line reason when it gives up.
std::string last_line(const fs::path& path) {
    std::ifstream in(path);
    std::string line, last;
    while (std::getline(in, line))
        if (!line.empty()) last = line;
    return last;
}

// Runs `args` with stdout and stderr into `log` (and `env` added to the environment); the exit
// status (128 + signal when killed), or -errno when it could not start.
struct Spawned {
    int code = 0;
    double seconds = 0;
};
Spawned spawn_and_wait(std::vector<std::string> args, const std::string& log, const std::vector<std::string>& env = {}) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<std::string> env_strings(env);
    for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    // The summary and any complaint go to a log, not between Google Benchmark's lines.
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    auto t0 = Clock::now();
    pid_t pid = -1;
    int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
    int status = 0;
    if (rc == 0)
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    Spawned r;
    r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) r.code = -rc;
    else r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r;
}

// A scratch directory removed with everything in it when the benchmark ends.
struct ScratchDir {
    fs::path path;
    ScratchDir() {
        char t[] = "/tmp/flushbench-boot-bench.XXXXXX";
        if (::mkdtemp(t)) path = t;
    }
    ~ScratchDir() {
        std::error_code ec;
        if (!path.empty()) fs::remove_all(path, ec);
    }
};

// 0: every cell measured; 1: some hung or crashed, recorded as such: both are a full run.
std::optional<std::string> run_failed(const Spawned& r, const std::string& what, const std::string& log) {
    if (r.code < 0) return "cannot start " + what + ": " + std::strerror(-r.code);
    if (r.code > 1) return what + " exited " + std::to_string(r.code) + ": " + last_line(log);
    return std::nullopt;
}

void quick_matrix(benchmark::State& state, const std::string& backend) {
    if (backend != "kvm")
        if (auto why = qemu_missing()) return state.SkipWithError(why->c_str());
    if (backend != "qemu-tcg")
        if (auto why = kvm_unusable()) return state.SkipWithError(why->c_str());
    ScratchDir dir;
    if (dir.path.empty()) return state.SkipWithError((std::string("mkdtemp: ") + std::strerror(errno)).c_str());
    const std::string out = (dir.path / "results.json").string(), log = (dir.path / "flushbench.log").string();
    double exit_code = 0;
    for (auto _ : state) {
        Spawned r = spawn_and_wait({kFlushbench, "run", "--backend", backend, "--quick", "--quiet", "--out", out}, log);
        if (auto why = run_failed(r, "flushbench run", log)) {
            state.SkipWithError(why->c_str());
            break;
        }
        state.SetIterationTime(r.seconds);
        exit_code += r.code;
    }
    state.counters["exit_code"] = per_boot(exit_code);
}

// The repetitions each cell of the last DefaultMatrix run took, and why it stopped, printed after
// the benchmarks: what the time budget chose on this host.
std::vector<std::string> g_reps_lines;

// `flushbench run --matrix default` (what ./run.sh runs), then `flushbench report` on its file.
// Manual time: the run; report_s: the report; reps_*: the repetitions cells took; stop_*: how many
// cells stopped because their median was known to the target (precise), their budget was spent, or
// they reached --reps.
void default_matrix(benchmark::State& state) {
    if (auto why = kvm_unusable()) return state.SkipWithError(why->c_str());
    ScratchDir dir;
    if (dir.path.empty()) return state.SkipWithError((std::string("mkdtemp: ") + std::strerror(errno)).c_str());
    const std::string out = (dir.path / "default.json").string(), log = (dir.path / "flushbench.log").string();
    for (auto _ : state) {
        Spawned run = spawn_and_wait({kFlushbench, "run", "--matrix", "default", "--quiet", "--out", out}, log);
        if (auto why = run_failed(run, "flushbench run --matrix default", log)) return state.SkipWithError(why->c_str());
        state.SetIterationTime(run.seconds);
        Spawned report = spawn_and_wait({kFlushbench, "report", out, "--out", (dir.path / "plots").string()}, log);
        if (report.code != 0) return state.SkipWithError(("flushbench report exited " + std::to_string(report.code) + ": " + last_line(log)).c_str());
        state.counters["report_s"] = report.seconds;
    }
    std::ifstream in(out);
    nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
    if (doc.is_discarded()) return state.SkipWithError("the default matrix's results file is not JSON");
    std::vector<double> reps;
    std::map<std::string, int> stops;
    g_reps_lines.clear();
    for (const auto& c : doc.value("flushbench_cells", nlohmann::json::array())) {
        if (!c.contains("measure") || !c["tsc"].is_array()) continue;
        std::string stop = c["measure"].value("stop", "?");
        reps.push_back(double(c["tsc"].size()));
        ++stops[stop];
        g_reps_lines.push_back(fmt::format("  {:<12} {:>10} B  {:<8} {:<16} {:>5} reps  ({})", c.value("pattern", "?"),
                                           c.value("footprint_bytes", uint64_t{0}), c.value("backend", "?"), c.value("mode", "?"),
                                           c["tsc"].size(), stop));
    }
    std::sort(reps.begin(), reps.end());
    state.counters["cells"] = double(reps.size());
    if (!reps.empty()) {
        state.counters["reps_min"] = reps.front();
        state.counters["reps_median"] = reps[reps.size() / 2];
        state.counters["reps_max"] = reps.back();
    }
    for (const char* s : {"precise", "budget", "max_reps"}) state.counters[std::string("stop_") + s] = stops[s];
}

// ./run.sh end to end on an already built tree (its install and build steps find nothing to do),
// with results/ and plots/ in a scratch directory (FLUSHBENCH_OUT_DIR) rather than the checkout.
void run_sh(benchmark::State& state) {
    if (auto why = kvm_unusable()) return state.SkipWithError(why->c_str());
    ScratchDir dir;
    if (dir.path.empty()) return state.SkipWithError((std::string("mkdtemp: ") + std::strerror(errno)).c_str());
    const std::string log = (dir.path / "run.sh.log").string();
    for (auto _ : state) {
        Spawned r = spawn_and_wait({std::string(FB_BENCH_SOURCE_DIR) + "/run.sh"}, log, {"FLUSHBENCH_OUT_DIR=" + dir.path.string()});
        if (auto why = run_failed(r, "./run.sh", log)) return state.SkipWithError(why->c_str());
        state.SetIterationTime(r.seconds);
    }
}

}  // namespace

int main(int argc, char** argv) {
    // A per-benchmark Repetitions() overrides --benchmark_repetitions, so the default is set only
    // when the flag is absent.
    bool reps_flag = false;
    for (int i = 1; i < argc; ++i)
        if (std::string_view(argv[i]).starts_with("--benchmark_repetitions")) reps_flag = true;

    auto boot = [&](benchmark::internal::Benchmark* b) {
        b->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(1);
        if (!reps_flag) b->Repetitions(kDefaultBootRepetitions);
    };
    for (const auto& way : kQemuWays) boot(benchmark::RegisterBenchmark(way.name, boot_qemu, way));
    boot(benchmark::RegisterBenchmark("BootToFirstRecord/kvm/direct", boot_kvm_direct));
    for (const char* backend : {"kvm", "qemu-kvm", "qemu-tcg"})
        benchmark::RegisterBenchmark((std::string("QuickMatrix/") + backend).c_str(), quick_matrix, std::string(backend))
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond)
            ->Iterations(1)
            ->Repetitions(2);
    benchmark::RegisterBenchmark("DefaultMatrix", default_matrix)->UseManualTime()->Unit(benchmark::kSecond)->Iterations(1);
    benchmark::RegisterBenchmark("RunSh", run_sh)->UseManualTime()->Unit(benchmark::kSecond)->Iterations(1);

    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    if (!g_reps_lines.empty()) {
        fmt::print("DefaultMatrix: the repetitions each cell took (the budget's choice on this host):\n");
        for (const auto& line : g_reps_lines) fmt::print("{}\n", line);
    }
    benchmark::Shutdown();
    return 0;
}
