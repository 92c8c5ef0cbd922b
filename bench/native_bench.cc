// flushbench-native: the guest's flush patterns, run natively in host user space, so that a guest
// cell and its native twin differ by the virtualization and nothing else.
//
// One benchmark per cell the guest would run: every entry of fb::kPatterns (the one table), over
// the footprints for patterns that use one, named "<pattern>/<footprint_bytes>/native/native"
// like the guest cells in a results file. Patterns user space may not execute are registered
// anyway and report why (Google Benchmark's error_occurred): the table's ring-0 patterns (WBINVD,
// WBNOINVD, port I/O) are privileged here (boot the microkernel bare metal: `flushbench image`),
// and a pattern whose instruction the CPU lacks says so.
//
// Every iteration is one guest bracket: prepare (untimed: dirty the footprint), compiler barrier,
// LFENCE;RDTSC;LFENCE, body, RDTSCP;LFENCE, barrier (common/x86/cpu.h, the guest's own code).
// Google Benchmark gets the bracket as manual time (TSC cycles / the TSC rate), so neither
// prepare nor its own timer calls are timed; each repetition also reports its median bracket
// (tsc_cycles_median), robust to the interrupts a mean absorbs, as the guest's samples are. After the timed loop, an untimed counting pass runs
// the same prepare/body with the host counters (fb::CounterGroup: cycles, instructions,
// LLC-load-misses and the software events) enabled around the body only, minus the cost of an
// empty enable/disable, and reports them per iteration as perf_<event> user counters.
//
// Our own flags (the rest are Google Benchmark's):
//   --patterns LIST    pattern names or all                      (default all)
//   --footprints LIST  bytes with K/M/G, or NxLLC (the guest's parser) (default: `flushbench run`'s)
//   --skip LIST        pattern[:reason],... registered but not run
//   --cpu N            pin to this CPU                           (default: the one we start on)
//   --warmup N         untimed brackets before each timed loop   (default 3)
// Defaults we set unless given: --benchmark_repetitions=11 (so compare.py can test
// significance) and --benchmark_min_time=0.05 (per repetition; enough for the U test, and the
// whole default matrix runs in well under a minute).
//
//   build/bin/flushbench-native --footprints 4K,1M --benchmark_format=json > native.json
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/config.h"
#include "common/patterns.h"
#include "common/x86/cpu.h"
#include "host/native.h"
#include "host/perf_counters.h"
#include "host/runner.h"

namespace {

namespace x86 = fb::x86;

constexpr uint32_t kCalibrationWarmup = 100, kCalibrationReps = 1001;  // as the guest calibrates
constexpr uint64_t kMaxCountedIterations = 1000;  // the counting pass: enough to average, bounded in time
constexpr uint64_t kHugePage = 2ull << 20;

struct Flags {
    std::string patterns = "all";
    std::string footprints = fb::RunOptions{}.footprints;  // the CLI's default list, not a copy of it
    std::string skip;
    int cpu = -1;
    uint32_t warmup = 3;
};

// What every benchmark shares: the arena, the TSC, the bracket's own cost, the counters.
struct Machine {
    volatile uint8_t* arena = nullptr;
    uint64_t arena_bytes = 0;
    uint32_t line = 64;
    bool rdtscp = false;
    double tsc_hz = 0;
    uint64_t overhead = 0;  // median empty bracket, TSC cycles
    uint32_t warmup = 3;
    std::optional<fb::CounterGroup> counters;
    std::vector<double> counter_overhead;    // per event: an empty start/stop, to subtract
    std::vector<std::pair<std::string, std::string>> unopened;  // {event, reason}: the encoder refused it
} g;

[[noreturn]] void usage_error(const std::string& what) {
    fmt::print(stderr, "flushbench-native: {}\n", what);
    std::exit(2);
}

// Takes our flags out of argv (both "--flag value" and "--flag=value"); Google Benchmark gets the rest.
Flags take_flags(int& argc, char** argv) {
    Flags f;
    int out = 1;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&](const char* name) -> std::optional<std::string> {
            std::string flag = std::string("--") + name;
            if (a == flag) {
                if (i + 1 >= argc) usage_error(flag + " needs a value");
                return std::string(argv[++i]);
            }
            if (a.rfind(flag + "=", 0) == 0) return a.substr(flag.size() + 1);
            return std::nullopt;
        };
        auto number = [&](const std::string& s, const char* name) {
            try {
                size_t used = 0;
                long v = std::stol(s, &used);
                if (used != s.size() || v < 0 || v > 100000) throw std::invalid_argument(s);
                return v;
            } catch (const std::exception&) {
                usage_error(fmt::format("--{} takes a number, not '{}'", name, s));
            }
        };
        if (auto v = value("patterns")) f.patterns = *v;
        else if (auto v2 = value("footprints")) f.footprints = *v2;
        else if (auto v3 = value("skip")) f.skip = *v3;
        else if (auto v4 = value("cpu")) f.cpu = int(number(*v4, "cpu"));
        else if (auto v5 = value("warmup")) f.warmup = uint32_t(number(*v5, "warmup"));
        else argv[out++] = argv[i];
    }
    argc = out;
    argv[argc] = nullptr;
    return f;
}

bool has_flag(int argc, char** argv, const char* name) {
    std::string flag = std::string("--") + name;
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == flag || std::string(argv[i]).rfind(flag + "=", 0) == 0) return true;
    return false;
}

int pin(int cpu) {
    if (cpu < 0) cpu = sched_getcpu();
    if (cpu < 0 || cpu >= CPU_SETSIZE) usage_error(fmt::format("cannot tell which CPU this is: {}", strerror(errno)));
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        usage_error(fmt::format("cannot pin to CPU {}: {} (see /sys/devices/system/cpu/online)", cpu, strerror(errno)));
    return cpu;
}

// One region for every footprint, as the guest's arena: 2 MiB aligned with transparent huge pages
// asked for (the guest maps 2 MiB pages), written once so no page fault lands in a timed region.
std::string map_arena(uint64_t bytes) {
    bytes = std::max<uint64_t>((bytes + 4095) & ~uint64_t{4095}, 4096);
    void* p = mmap(nullptr, bytes + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) usage_error(fmt::format("cannot map a {} MiB arena: {} (choose smaller --footprints)", bytes >> 20, strerror(errno)));
    auto base = (reinterpret_cast<uintptr_t>(p) + kHugePage - 1) & ~(kHugePage - 1);
    auto* arena = reinterpret_cast<uint8_t*>(base);
    bool thp = madvise(arena, bytes, MADV_HUGEPAGE) == 0;
    std::memset(arena, 0, bytes);
    bool locked = mlock(arena, bytes) == 0;
    g.arena = arena;
    g.arena_bytes = bytes;
    return fmt::format("{} bytes at 2 MiB alignment, pre-faulted; huge pages {}; {}", bytes, thp ? "requested (MADV_HUGEPAGE)" : "not available",
                       locked ? "mlocked" : "not mlocked");
}

// The guest's bracket, statement for statement (guest/main.cc, measure()).
template <bool kRdtscp>
[[gnu::always_inline]] inline uint64_t bracket(const fb::Pattern& p, const fb::Buffer& b) {
    p.prepare(b);
    x86::compiler_barrier();
    uint64_t t0 = x86::tsc_begin();
    p.body(b);
    uint64_t t1 = x86::tsc_end<kRdtscp>();
    x86::compiler_barrier();
    return t1 - t0;
}

template <bool kRdtscp>
uint64_t calibrate_overhead() {
    const fb::Pattern& nop = *fb::find_pattern("nop");
    fb::Buffer none{g.arena, 0, g.line};
    std::vector<uint64_t> v;
    for (uint32_t i = 0; i < kCalibrationWarmup; ++i) bracket<kRdtscp>(nop, none);
    for (uint32_t i = 0; i < kCalibrationReps; ++i) v.push_back(bracket<kRdtscp>(nop, none));
    std::nth_element(v.begin(), v.begin() + long(v.size() / 2), v.end());
    return v[v.size() / 2];
}

// Opens cycles, instructions, LLC-load-misses and the software events on this thread. A name the
// encoder rejects (a PMU without that event) is left out and said so; the rest still count.
void open_counters() {
    std::vector<std::string> events = {"cycles", "instructions", "LLC-load-misses"};
    for (auto& e : fb::software_events()) events.push_back(e);
    std::vector<std::string> usable;
    for (const auto& e : events) {
        try {
            fb::encode_event(e, fb::Split::all);
            usable.push_back(e);
        } catch (const std::exception& ex) {
            g.unopened.emplace_back(e, ex.what());
        }
    }
    try {
        g.counters = fb::CounterGroup::open(0, usable, fb::Split::all);
    } catch (const std::exception& ex) {
        for (const auto& e : usable) g.unopened.emplace_back(e, ex.what());
        return;
    }
    // What enabling and disabling alone adds to each count (the ioctls' own user/kernel work).
    std::vector<double> sum(usable.size(), 0);
    constexpr int kReps = 200;
    for (int r = 0; r < kReps; ++r) {
        g.counters->start();
        x86::compiler_barrier();
        g.counters->stop();
        auto v = g.counters->read();
        for (size_t i = 0; i < v.size() && i < sum.size(); ++i) sum[i] += v[i].value.value_or(0);
    }
    for (double s : sum) g.counter_overhead.push_back(s / kReps);
}

// "counters unavailable: cycles, instructions: <reason>; LLC-load-misses: <reason>": events that
// share a reason share it once (Google Benchmark counters are numbers, so the label says it).
std::string unavailable_label(const std::vector<std::pair<std::string, std::string>>& missing) {
    std::vector<std::pair<std::string, std::string>> by_reason;  // {names, reason}, first-seen order
    for (const auto& [name, reason] : missing) {
        auto it = std::find_if(by_reason.begin(), by_reason.end(), [&](const auto& r) { return r.second == reason; });
        if (it == by_reason.end()) by_reason.emplace_back(name, reason);
        else it->first += ", " + name;
    }
    std::string label = "counters unavailable: ";
    for (size_t i = 0; i < by_reason.size(); ++i) label += (i ? "; " : "") + by_reason[i].first + ": " + by_reason[i].second;
    return label;
}

// The counting pass: the body alone between enable and disable, prepare outside, iterations bounded.
void count_body(benchmark::State& state, const fb::Pattern& p, const fb::Buffer& b) {
    std::vector<std::pair<std::string, std::string>> missing = g.unopened;
    if (g.counters && g.counters->any_available()) {
        uint64_t k = std::clamp<uint64_t>(uint64_t(state.iterations()), 1, kMaxCountedIterations);
        std::vector<double> sum;
        std::vector<fb::CounterValue> last;
        std::vector<bool> ok;
        for (uint64_t i = 0; i < k; ++i) {
            p.prepare(b);
            g.counters->start();
            x86::compiler_barrier();
            p.body(b);
            x86::compiler_barrier();
            g.counters->stop();
            last = g.counters->read();
            if (sum.empty()) sum.assign(last.size(), 0), ok.assign(last.size(), true);
            for (size_t e = 0; e < last.size(); ++e) {
                if (last[e].value) sum[e] += *last[e].value;
                else ok[e] = false;
            }
        }
        for (size_t e = 0; e < last.size(); ++e) {
            if (!ok[e]) {
                missing.emplace_back(last[e].name, last[e].unavailable.empty() ? "no value" : last[e].unavailable);
                continue;
            }
            double over = e < g.counter_overhead.size() ? g.counter_overhead[e] : 0;
            state.counters["perf_" + last[e].name] = sum[e] / double(k) - over;
            if (last[e].scaling != 1.0) state.counters["perf_" + last[e].name + "_scaling"] = last[e].scaling;
        }
        state.counters["counted_iterations"] = double(k);
    } else if (g.counters) {
        for (const auto& v : g.counters->read())
            missing.emplace_back(v.name, v.unavailable.empty() ? "no value" : v.unavailable);
    }
    if (!missing.empty()) state.SetLabel(unavailable_label(missing));
}

// A repetition's brackets, for its median; past kMaxKept the newest overwrite the oldest.
constexpr size_t kMaxKept = size_t{1} << 20;
std::vector<uint64_t> g_kept;

template <bool kRdtscp>
void run_cell(benchmark::State& state, const fb::Pattern* p, uint64_t footprint) {
    fb::Buffer b{g.arena, footprint, g.line};
    for (uint32_t i = 0; i < g.warmup; ++i) bracket<kRdtscp>(*p, b);
    size_t cap = std::clamp<size_t>(size_t(state.max_iterations), 1, kMaxKept);
    if (g_kept.size() < cap) g_kept.resize(cap);
    uint64_t sum = 0, min = ~uint64_t{0}, n = 0;
    for (auto _ : state) {
        uint64_t c = bracket<kRdtscp>(*p, b);
        sum += c;
        min = std::min(min, c);
        g_kept[n++ % cap] = c;
        state.SetIterationTime(double(c) / g.tsc_hz);
    }
    size_t kept = size_t(std::min<uint64_t>(n, cap));
    if (!kept) return;
    std::nth_element(g_kept.begin(), g_kept.begin() + long(kept / 2), g_kept.begin() + long(kept));
    double median = double(g_kept[kept / 2]), mean = double(sum) / double(n);
    state.counters["tsc_cycles_median"] = median;
    state.counters["tsc_cycles_mean"] = mean;
    state.counters["tsc_cycles_min"] = double(min);
    state.counters["overhead_cycles"] = double(g.overhead);
    state.counters["net_cycles"] = median - double(g.overhead);
    uint64_t lines = footprint / g.line;
    if (p->unit == fb::Unit::per_footprint && lines) state.counters["net_cycles_per_line"] = (median - double(g.overhead)) / double(lines);
    count_body(state, *p, b);
}

void refuse(benchmark::State& state, const std::string& why) {
    state.SkipWithError(why.c_str());
    for (auto _ : state) {
    }
}

// Wraps a reporter and drops the "/manual_time" Google Benchmark appends to names, so entries are
// named exactly "<pattern>/<footprint_bytes>/native/native", as guest cells are.
class CellNames final : public benchmark::BenchmarkReporter {
public:
    explicit CellNames(benchmark::BenchmarkReporter* inner) : inner_(inner) {}
    bool ReportContext(const Context& c) override {
        sync();
        return inner_->ReportContext(c);
    }
    void ReportRuns(const std::vector<Run>& runs) override {
        std::vector<Run> renamed = runs;
        for (auto& r : renamed) r.run_name.time_type.clear();
        sync();
        inner_->ReportRuns(renamed);
    }
    void Finalize() override {
        sync();
        inner_->Finalize();
    }

private:
    void sync() {
        inner_->SetOutputStream(&GetOutputStream());
        inner_->SetErrorStream(&GetErrorStream());
    }
    benchmark::BenchmarkReporter* inner_;
};

// --benchmark_out's reporter, renamed like the display's; null for csv (deprecated upstream), which
// Google Benchmark then writes itself, names suffixed "/manual_time".
std::unique_ptr<benchmark::BenchmarkReporter> file_reporter_for(int argc, char** argv) {
    std::string format = "json";
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a.rfind("--benchmark_out_format=", 0) == 0) format = a.substr(23);
    }
    if (format == "console") return std::make_unique<benchmark::ConsoleReporter>(benchmark::ConsoleReporter::OO_None);
    if (format == "json") return std::make_unique<benchmark::JSONReporter>();
    return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
    Flags flags = take_flags(argc, argv);
    // Our defaults for Google Benchmark's flags, unless given: argv gets them before parsing.
    std::vector<char*> args(argv, argv + argc);
    std::string reps = "--benchmark_repetitions=11", min_time = "--benchmark_min_time=0.05";
    if (!has_flag(argc, argv, "benchmark_repetitions")) args.push_back(reps.data());
    if (!has_flag(argc, argv, "benchmark_min_time")) args.push_back(min_time.data());
    int nargs = int(args.size());
    args.push_back(nullptr);
    benchmark::Initialize(&nargs, args.data());
    if (benchmark::ReportUnrecognizedArguments(nargs, args.data())) return 2;

    // The guest's parser checks patterns, footprints and skips exactly as the guest would.
    std::string cmdline = fmt::format("patterns={} footprints={}", flags.patterns, flags.footprints);
    if (!flags.skip.empty()) cmdline += " skip=" + flags.skip;
    fb::Config config;
    fb::ConfigError err = fb::parse_config(fb::Str(cmdline.c_str()), config);
    if (err.message) usage_error(fmt::format("{}: '{}'", err.message, std::string(err.token.p, err.token.n)));

    int cpu = pin(flags.cpu);
    g.line = x86::clflush_line_bytes();
    g.rdtscp = x86::has(x86::Feature::rdtscp);
    g.warmup = flags.warmup;
    uint64_t llc = x86::llc_bytes(), largest = 0;
    struct Planned {
        const fb::Pattern* p;
        uint64_t footprint;
        bool resolved;
    };
    std::vector<Planned> plan;
    for (size_t i = 0; i < config.pattern_count; ++i) {
        const fb::Pattern& p = fb::kPatterns[config.pattern_order[i]];
        if (!p.uses_footprint) {
            plan.push_back({&p, 0, true});
            continue;
        }
        for (size_t f = 0; f < config.footprint_count; ++f) {
            bool ok;
            uint64_t bytes = fb::resolve_footprint(config.footprints[f], llc, ok);
            plan.push_back({&p, bytes, ok});
            if (ok) largest = std::max(largest, bytes);
        }
    }
    std::string arena = map_arena(largest);
    fb::TscRate rate = fb::native_tsc_rate();
    g.tsc_hz = double(rate.khz) * 1000.0;
    g.overhead = g.rdtscp ? calibrate_overhead<true>() : calibrate_overhead<false>();
    open_counters();

    for (const auto& c : plan) {
        std::string name = fb::native_benchmark_name(c.p->name, c.footprint);
        size_t index = size_t(c.p - fb::kPatterns);
        std::string why;
        if (config.skipped[index]) why = std::string(fb::kSkippedPrefix) + config.skip_reason[index];
        else if (c.p->ring0) why = fb::native_refusal_ring0(c.p->name, c.p->what);
        else if (!x86::has(c.p->needs)) why = std::string(fb::kCpuLacksPrefix) + x86::feature_name(c.p->needs);
        else if (!c.resolved) why = fb::kLlcUnknown;
        if (!why.empty()) {
            benchmark::RegisterBenchmark(name.c_str(), [why](benchmark::State& s) { refuse(s, why); });
            continue;
        }
        auto fn = g.rdtscp ? run_cell<true> : run_cell<false>;
        benchmark::RegisterBenchmark(name.c_str(), fn, c.p, c.footprint)->UseManualTime();
    }

    auto hv = x86::hypervisor_vendor();
    benchmark::AddCustomContext("flushbench_version", std::string(FLUSHBENCH_VERSION) + " (" + FLUSHBENCH_GIT_COMMIT + ")");
    benchmark::AddCustomContext("flushbench_backend", fb::kNativeBackend);
    benchmark::AddCustomContext("tsc_khz", std::to_string(rate.khz));
    benchmark::AddCustomContext("tsc_khz_source", rate.source);
    benchmark::AddCustomContext("invariant_tsc", x86::has(x86::Feature::invtsc) ? "yes" : "no: the TSC rate may follow the core clock");
    benchmark::AddCustomContext("bracket", g.rdtscp ? "prepare | lfence;rdtsc;lfence | body | rdtscp;lfence (guest's, common/x86/cpu.h)"
                                                    : "prepare | lfence;rdtsc;lfence | body | lfence;rdtsc;lfence (no RDTSCP)");
    benchmark::AddCustomContext("timing", "manual time: TSC cycles of each bracket / tsc_khz, prepare untimed (real_time is their mean); "
                                          "tsc_cycles_median: median bracket of the repetition (of its last 2^20 at most), "
                                          "the figure results files carry, like the guest's per-bracket samples");
    benchmark::AddCustomContext("overhead_cycles", std::to_string(g.overhead));
    benchmark::AddCustomContext("line_bytes", std::to_string(g.line));
    benchmark::AddCustomContext("llc_bytes", std::to_string(llc));
    benchmark::AddCustomContext("cpu", std::to_string(cpu));
    benchmark::AddCustomContext("hypervisor", hv.s[0] ? std::string(hv.s) + ": this \"native\" host is itself a virtual machine" : "none");
    benchmark::AddCustomContext("arena", arena);
    benchmark::AddCustomContext("warmup", std::to_string(g.warmup));
    benchmark::AddCustomContext("patterns", flags.patterns);
    benchmark::AddCustomContext("footprints", flags.footprints);
    std::string counters = "perf_event on this thread, user+kernel (Split::all), body only, per iteration, minus an empty enable/disable;";
    if (g.counters)
        for (const auto& v : g.counters->read()) counters += " " + v.name + (v.value ? "" : "(unavailable)");
    for (const auto& u : g.unopened) counters += " " + u.first + "(unavailable)";
    benchmark::AddCustomContext("counters", counters);

    CellNames display(benchmark::CreateDefaultDisplayReporter());
    auto file_inner = has_flag(argc, argv, "benchmark_out") ? file_reporter_for(argc, argv) : nullptr;
    if (file_inner) {
        CellNames file(file_inner.get());
        benchmark::RunSpecifiedBenchmarks(&display, &file);
    } else {
        benchmark::RunSpecifiedBenchmarks(&display);
    }
    benchmark::Shutdown();
    return 0;
}
