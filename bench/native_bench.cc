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
// Each cell is measured by the guest's own code (common/measure.h): the same bracket, the same
// estimators (batch for per-op patterns, paired with the empty bracket for the rest), the same
// stopping rule, the same timing-floor calibration. Google Benchmark runs each cell once
// (Iterations(1), manual time: the time its repetitions took); the cell's figures are user
// counters (cost_cycles: the median per-repetition cost; n, k, ops, floor_cycles) and its raw
// per-repetition brackets go to the --samples file, one JSON object per line, for flushbench to
// turn into cells. After the timed repetitions, an untimed counting pass runs the same
// prepare/body with the host counters (fb::CounterGroup: cycles, instructions, LLC-load-misses and
// the software events) enabled around the body only, minus the cost of an empty enable/disable, and
// reports them per operation as perf_<event> user counters.
//
// Our own flags (the rest are Google Benchmark's):
//   --patterns LIST    pattern names or all                      (default all)
//   --footprints LIST  bytes with K/M/G, or NxLLC (the guest's parser) (default: `flushbench run`'s)
//   --skip LIST        pattern[:reason],... registered but not run
//   --cpu N            pin to this CPU                           (default: the one we start on)
//   --warmup N, --reps N, --min-reps N, --target-pct P, --budget-ms B   the stopping rule, as `flushbench run`'s
//   --samples FILE     where the per-repetition brackets go (JSON lines; default: none written)
//
//   build/bin/flushbench-native --footprints 4K,1M --samples s.jsonl --benchmark_format=json > native.json
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/cell_plan.h"
#include "common/config.h"
#include "common/measure.h"
#include "common/patterns.h"
#include "common/x86/cpu.h"
#include "host/run/native.h"
#include "host/sys/cpus.h"
#include "host/counters/perf_counters.h"
#include "host/run/runner.h"
#include "host/results/statistics.h"

namespace {

namespace x86 = fb::x86;
namespace measure = fb::measure;

constexpr uint32_t kBracketReps = 101, kCalibrationReps = 31;  // as the guest calibrates
constexpr uint64_t kCountedOps = 200;  // the counting pass: enough to average, bounded in time
constexpr uint64_t kHugePage = 2ull << 20;

struct Flags {
    std::string patterns = "all";
    std::string footprints = fb::RunOptions{}.footprints;  // the CLI's default list, not a copy of it
    std::string skip;
    int cpu = -1;
    fb::RunOptions stop;  // warmup, reps, min_reps, target_permille, budget_ms: `flushbench run`'s defaults
    std::string samples;
};

// What every benchmark shares: the arena, the TSC, the calibration, the counters, the samples file.
struct Machine {
    volatile uint8_t* arena = nullptr;
    uint64_t arena_bytes = 0;
    uint32_t line = 64;
    bool rdtscp = false;
    double tsc_hz = 0;
    uint64_t empty_bracket = 0;  // median empty bracket, TSC cycles
    double floor_cycles = 0;
    fb::Config stop;             // the stopping rule, as the guest would parse it
    std::optional<fb::CounterGroup> counters;
    std::vector<double> counter_overhead;    // per event: an empty start/stop, to subtract
    std::vector<std::pair<std::string, std::string>> unopened;  // {event, reason}: the encoder refused it
    std::unique_ptr<std::ofstream> samples;
    std::vector<uint64_t> value, ref;
    std::vector<int64_t> scratch;
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
        auto number = [&](const std::string& s, const char* name, long max) {
            try {
                size_t used = 0;
                long v = std::stol(s, &used);
                if (used != s.size() || v < 0 || v > max) throw std::invalid_argument(s);
                return v;
            } catch (const std::exception&) {
                usage_error(fmt::format("--{} takes a number up to {}, not '{}'", name, max, s));
            }
        };
        if (auto v = value("patterns")) f.patterns = *v;
        else if (auto v2 = value("footprints")) f.footprints = *v2;
        else if (auto v3 = value("skip")) f.skip = *v3;
        else if (auto v4 = value("cpu")) f.cpu = int(number(*v4, "cpu", CPU_SETSIZE - 1));
        else if (auto v5 = value("warmup")) f.stop.warmup = uint32_t(number(*v5, "warmup", fb::Config::kMaxWarmup));
        else if (auto v6 = value("reps")) f.stop.reps = uint32_t(number(*v6, "reps", fb::Config::kMaxReps));
        else if (auto v7 = value("min-reps")) f.stop.min_reps = uint32_t(number(*v7, "min-reps", fb::Config::kMaxReps));
        else if (auto v8 = value("budget-ms")) f.stop.budget_ms = uint32_t(number(*v8, "budget-ms", fb::Config::kMaxBudgetMs));
        else if (auto v9 = value("target-permille")) f.stop.target_permille = uint32_t(number(*v9, "target-permille", fb::Config::kMaxTarget));
        else if (auto v10 = value("samples")) f.samples = *v10;
        else argv[out++] = argv[i];
    }
    argc = out;
    argv[argc] = nullptr;
    return f;
}

int pin(int cpu) {
    if (cpu < 0) cpu = sched_getcpu();
    if (cpu < 0 || cpu >= CPU_SETSIZE) usage_error(fmt::format("cannot tell which CPU this is: {}", strerror(errno)));
    if (int err = fb::try_pin(0, cpu); err != 0)
        usage_error(fmt::format("cannot pin to CPU {}: {} (see /sys/devices/system/cpu/online)", cpu, strerror(err)));
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

// What common/measure.h asks of us around a cell: the pattern's preparation; no hops, no guest
// PMU, no watchdog here.
struct Hooks {
    void prepare(const fb::Pattern& p, const fb::Buffer& b) { p.prepare(b); }
    void counters_before() {}
    void counters_after(int32_t) {}
    void tick(uint32_t) {}
};

measure::StopRule stop_rule() {
    measure::StopRule r;
    r.min_reps = std::min(g.stop.min_reps, g.stop.reps);
    r.max_reps = g.stop.reps;
    r.target_permille = g.stop.target_permille;
    r.budget_tsc = uint64_t(g.stop.budget_ms) * uint64_t(g.tsc_hz / 1000.0);
    return r;
}

void write_samples(const nlohmann::json& line) {
    if (g.samples) *g.samples << line.dump() << "\n" << std::flush;
}

// The empty bracket's median (to choose k) and the timing floor (nop as a batch cell), as the guest does.
template <bool kRdtscp>
void calibrate() {
    for (uint32_t i = 0; i < kBracketReps; ++i) g.scratch[i] = int64_t(measure::time_empty<kRdtscp>());
    measure::sort(g.scratch.data(), kBracketReps);
    g.empty_bracket = uint64_t(g.scratch[kBracketReps / 2]);
    Hooks hooks;
    size_t nop = size_t(fb::find_pattern("nop") - fb::kPatterns);
    measure::Plan plan{measure::Method::batch, measure::kMaxBatch, 2, {kCalibrationReps, kCalibrationReps, 0, 0}};
    measure::Samples s{g.value.data(), g.ref.data(), g.scratch.data(), uint32_t(g.value.size())};
    measure::Outcome o = measure::measure_cell<kRdtscp>(nop, fb::Buffer{g.arena, 0, g.line}, plan, s, g.empty_bracket, hooks);
    std::vector<uint64_t> value(g.value.begin(), g.value.begin() + o.n), ref(g.ref.begin(), g.ref.begin() + o.n);
    g.floor_cycles = fb::timing_floor(fb::estimates(value, ref, plan.k));
    write_samples({{"calibration", {{"k", plan.k}, {"tsc", value}, {"ref", ref}}}, {"bracket", g.empty_bracket}});
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

// The counting pass: the body alone between enable and disable, prepare outside, kCountedOps times.
void count_body(benchmark::State& state, const fb::Pattern& p, const fb::Buffer& b) {
    std::vector<std::pair<std::string, std::string>> missing = g.unopened;
    if (g.counters && g.counters->any_available()) {
        std::vector<double> sum;
        std::vector<fb::CounterValue> last;
        std::vector<bool> ok;
        for (uint64_t i = 0; i < kCountedOps; ++i) {
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
            state.counters["perf_" + last[e].name] = sum[e] / double(kCountedOps) - over;
            if (last[e].scaling != 1.0) state.counters["perf_" + last[e].name + "_scaling"] = last[e].scaling;
        }
        state.counters["counted_ops"] = double(kCountedOps);
    } else if (g.counters) {
        for (const auto& v : g.counters->read())
            missing.emplace_back(v.name, v.unavailable.empty() ? "no value" : v.unavailable);
    }
    if (!missing.empty()) state.SetLabel(unavailable_label(missing));
}

template <bool kRdtscp>
void run_cell(benchmark::State& state, const fb::Pattern* p, uint64_t footprint) {
    fb::Buffer b{g.arena, footprint, g.line};
    size_t index = size_t(p - fb::kPatterns);
    Hooks hooks;
    measure::Plan plan;
    plan.method = measure::method_for(*p, footprint, 1);
    plan.warmup = g.stop.warmup;
    plan.stop = stop_rule();
    measure::Samples s{g.value.data(), g.ref.data(), g.scratch.data(), uint32_t(g.value.size())};
    measure::Outcome o{};
    uint64_t t0 = x86::tsc_begin();
    for (auto _ : state) {
        o = measure::measure_cell<kRdtscp>(index, b, plan, s, g.empty_bracket, hooks);
        state.SetIterationTime(double(x86::tsc_begin() - t0) / g.tsc_hz);
    }
    std::vector<uint64_t> value(g.value.begin(), g.value.begin() + o.n), ref(g.ref.begin(), g.ref.begin() + o.n);
    std::vector<double> cost = fb::estimates(value, ref, plan.k);
    std::nth_element(cost.begin(), cost.begin() + long(cost.size() / 2), cost.end());
    state.counters["cost_cycles"] = cost.empty() ? 0 : cost[cost.size() / 2];
    state.counters["n"] = o.n;
    state.counters["k"] = plan.k;
    state.counters["ops"] = double(o.ops);
    state.counters["floor_cycles"] = g.floor_cycles;
    state.counters["bracket_cycles"] = double(g.empty_bracket);
    write_samples({{"name", fb::native_benchmark_name(p->name, footprint)}, {"method", measure::method_name(plan.method)},
                   {"k", plan.k}, {"ops", o.ops}, {"stop", measure::stop_name(o.stop)}, {"tsc", value}, {"ref", ref}});
    count_body(state, *p, b);
}

void refuse(benchmark::State& state, const std::string& why) {
    state.SkipWithError(why.c_str());
    for (auto _ : state) {
    }
}

// Wraps a reporter and drops the "/manual_time" and "/iterations:1" Google Benchmark appends to
// names, so entries are named exactly "<pattern>/<footprint_bytes>/native/native", as guest cells are.
class CellNames final : public benchmark::BenchmarkReporter {
public:
    explicit CellNames(benchmark::BenchmarkReporter* inner) : inner_(inner) {}
    bool ReportContext(const Context& c) override {
        sync();
        return inner_->ReportContext(c);
    }
    void ReportRuns(const std::vector<Run>& runs) override {
        std::vector<Run> renamed = runs;
        for (auto& r : renamed) r.run_name.time_type.clear(), r.run_name.iterations.clear();
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

bool has_flag(int argc, char** argv, const char* name) {
    std::string flag = std::string("--") + name;
    for (int i = 1; i < argc; ++i)
        if (std::string(argv[i]) == flag || std::string(argv[i]).rfind(flag + "=", 0) == 0) return true;
    return false;
}

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
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;

    // The guest's parser checks patterns, footprints, skips and the stopping rule as the guest would.
    const fb::RunOptions& st = flags.stop;
    std::string cmdline = fmt::format("patterns={} footprints={} warmup={} reps={} min_reps={} target={} budget_ms={}", flags.patterns,
                                      flags.footprints, st.warmup, st.reps, st.min_reps, st.target_permille, st.budget_ms);
    if (!flags.skip.empty()) cmdline += " skip=" + flags.skip;
    fb::Config config;
    fb::ConfigError err = fb::parse_config(fb::Str(cmdline.c_str()), config);
    if (err.message) usage_error(fmt::format("{}: '{}'", err.message, std::string(err.token.p, err.token.n)));
    g.stop = config;
    if (!flags.samples.empty()) {
        g.samples = std::make_unique<std::ofstream>(flags.samples, std::ios::trunc);
        if (!*g.samples) usage_error(fmt::format("cannot write {}: {}", flags.samples, strerror(errno)));
    }

    int cpu = pin(flags.cpu);
    g.line = x86::clflush_line_bytes();
    g.rdtscp = x86::has(x86::Feature::rdtscp);
    uint64_t llc = x86::llc_bytes(), largest = 0;
    struct Planned {
        const fb::Pattern* p;
        uint64_t footprint;
        bool resolved;
    };
    std::vector<Planned> plan;
    fb::for_each_cell_of_phase(config, 0, [&](const fb::PlannedCell& cell) {
        if (cell.step) return;  // paced steps need a guest; the host refuses --pace with native
        bool ok = true;
        uint64_t bytes = cell.footprint ? fb::resolve_footprint(*cell.footprint, llc, ok) : 0;
        plan.push_back({cell.pattern, bytes, ok});
        if (ok) largest = std::max(largest, bytes);
    });
    std::string arena = map_arena(largest);
    fb::TscRate rate = fb::native_tsc_rate();
    g.tsc_hz = double(rate.khz) * 1000.0;
    size_t room = std::max<size_t>(config.reps, kBracketReps);
    g.value.resize(room), g.ref.resize(room), g.scratch.resize(room);
    if (g.rdtscp) calibrate<true>();
    else calibrate<false>();
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
        benchmark::RegisterBenchmark(name.c_str(), fn, c.p, c.footprint)->UseManualTime()->Iterations(1);
    }

    auto hv = x86::hypervisor_vendor();
    benchmark::AddCustomContext("flushbench_version", std::string(FLUSHBENCH_VERSION) + " (" + FLUSHBENCH_GIT_COMMIT + ")");
    benchmark::AddCustomContext("flushbench_backend", fb::kNativeBackend);
    benchmark::AddCustomContext("tsc_khz", std::to_string(rate.khz));
    benchmark::AddCustomContext("tsc_khz_source", rate.source);
    benchmark::AddCustomContext("invariant_tsc", x86::has(x86::Feature::invtsc) ? "yes" : "no: the TSC rate may follow the core clock");
    benchmark::AddCustomContext("bracket", g.rdtscp ? "lfence;rdtsc;lfence | work | rdtscp;lfence (the guest's, common/measure.h)"
                                                    : "lfence;rdtsc;lfence | work | lfence;rdtsc;lfence (no RDTSCP)");
    benchmark::AddCustomContext("timing", "each cell once (Iterations(1)), measured by common/measure.h: batch (T(2k) - T(k)) / k for "
                                          "per-op patterns, paired with the empty bracket for the rest, until the median is known "
                                          "or the budget is spent; manual time is the time that took; cost_cycles the median cost, "
                                          "the raw brackets in the --samples file");
    benchmark::AddCustomContext("overhead_cycles", std::to_string(g.empty_bracket));
    benchmark::AddCustomContext("floor_cycles", fmt::format("{}", g.floor_cycles));
    benchmark::AddCustomContext("line_bytes", std::to_string(g.line));
    benchmark::AddCustomContext("llc_bytes", std::to_string(llc));
    benchmark::AddCustomContext("cpu", std::to_string(cpu));
    benchmark::AddCustomContext("hypervisor", hv.s[0] ? std::string(hv.s) + ": this \"native\" host is itself a virtual machine" : "none");
    benchmark::AddCustomContext("arena", arena);
    benchmark::AddCustomContext("stop", fmt::format("warmup {}, reps {} to {}, target {} permille, budget {} ms", st.warmup, st.min_reps,
                                                    st.reps, st.target_permille, st.budget_ms));
    benchmark::AddCustomContext("patterns", flags.patterns);
    benchmark::AddCustomContext("footprints", flags.footprints);
    std::string counters = "perf_event on this thread, user+kernel (Split::all), body only, per operation, minus an empty enable/disable;";
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
