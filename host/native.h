// Native baselines from host user space: flushbench-native (bench/native_bench.cc) runs the pattern
// table's user-space patterns with Google Benchmark; this turns its JSON into Cells (backend
// "native", mode "native") so that guest and native results share one file and one schema.
//
// What flushbench-native reports, per repetition (Google Benchmark "iteration" entry), as user
// counters: tsc_cycles_median (the median TSC cycles of one bracket among the repetition's
// iterations; the bracket is the guest's, common/x86/cpu.h), tsc_cycles_mean (what real_time
// holds, in ns), tsc_cycles_min, overhead_cycles (median of the empty bracket, measured like the
// guest's), net_cycles (median - overhead), net_cycles_per_line, counted_iterations and
// perf_<event> (per iteration, body only) for every host counter that opened. A Cell's sample
// for a repetition is its tsc_cycles_median. Counters that did
// not open are named in the label ("counters unavailable: ..."): Google Benchmark counters are
// numbers. Context (AddCustomContext): tsc_khz, tsc_khz_source, line_bytes, cpu, hypervisor, ...
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/cell.h"

namespace fb {

struct RunOptions;

inline constexpr const char* kNativeBackend = "native";
inline constexpr const char* kNativeMode = "native";

// The error messages flushbench-native gives the patterns it registers but cannot run; the
// converter recognises them (status unsupported, or skipped for --skip), anything else is a fault.
inline constexpr const char* kNeedsRing0 = "needs ring 0";  // native_refusal_ring0() begins with it
inline constexpr const char* kCpuLacksPrefix = "cpu lacks ";
inline constexpr const char* kSkippedPrefix = "skipped: ";
inline constexpr const char* kLlcUnknown = "llc size unknown: NxLLC footprints need CPUID leaf 4 or 0x8000001D";

// "needs ring 0 (wbinvd: WBINVD after dirtying the footprint); boot the microkernel bare metal with
// `flushbench image`": privileged instructions, port I/O, or the guest's own page tables (PAT).
std::string native_refusal_ring0(const char* pattern, const char* what);

// Google Benchmark JSON as nlohmann::json. Google Benchmark writes NaN and Infinity for a counter
// whose aggregate divides by zero (the cv of a counter that stayed 0), which JSON lacks (Python
// reads them, nlohmann does not): outside strings they become null. Throws std::runtime_error
// when the text is not JSON.
nlohmann::json parse_gbench_json(const std::string& text);

// "<pattern>/<footprint_bytes>/native/native"
std::string native_benchmark_name(const std::string& pattern, uint64_t footprint_bytes);

struct NativeResults {
    std::vector<Cell> cells;  // in the order the program reported them
    nlohmann::json context;   // the program's Google Benchmark context (with its custom fields)
};

// Converts flushbench-native --benchmark_format=json output. Throws std::runtime_error (one line,
// saying what is wrong) when the text is not JSON, not Google Benchmark's schema, names a pattern
// the table does not have, or lacks per-repetition entries (--benchmark_report_aggregates_only).
NativeResults parse_native_json(const std::string& gbench_json_text);
std::vector<Cell> native_cells(const std::string& gbench_json_text);

// The TSC rate the native program converts cycles to time with, and where it came from: CPUID
// (0x40000010 hypervisor timing leaf, 0x15 crystal ratio), else KVM_GET_TSC_KHZ on a scratch vCPU
// (the kernel's own calibrated tsc_khz), else CPUID 0x16 (nominal), else a 100 ms calibration
// against CLOCK_MONOTONIC_RAW.
struct TscRate {
    uint64_t khz = 0;
    std::string source;
};
TscRate native_tsc_rate();

struct NativeOptions {
    std::string binary;                    // empty: default_native_binary()
    std::string patterns = "all";
    std::string footprints = "0,4K,64K,1M";
    std::string skip;                      // pattern[:reason],...
    uint32_t reps = 11;                    // Google Benchmark repetitions (one Cell sample each)
    uint32_t warmup = 3;                   // untimed brackets before each run's timed loop
    int cpu = -1;                          // -1: the CPU the program starts on
    double min_time = 0;                   // seconds per repetition; 0: the program's default
    std::vector<std::string> extra_args;   // passed through (e.g. --benchmark_filter=...)
    bool echo_stderr = true;               // let the program's stderr through (progress, warnings)
};

// build/bin/flushbench-native beside the running binary, else the build tree's.
std::string default_native_binary();

// The argv run_native_bench executes (JSON on stdout).
std::vector<std::string> native_argv(const NativeOptions& o);

// Spawns flushbench-native and converts its output. Throws std::runtime_error when the program is
// missing (with the fix), exits non-zero (with its stderr's last line), or prints no usable JSON.
NativeResults run_native_bench(const NativeOptions& o);


}  // namespace fb
