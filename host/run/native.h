// Native baselines from host user space: flushbench-native (bench/native_bench.cc) runs the pattern
// table's user-space patterns with Google Benchmark, measured by the guest's own code
// (common/measure.h); this turns its output into Cells (backend "native", mode "native") so that
// guest and native results share one file and one schema.
//
// What flushbench-native reports: per cell, one Google Benchmark "iteration" entry (Iterations(1),
// manual time: the time the cell's repetitions took) with user counters cost_cycles (median
// cost), n, k, ops, floor_cycles, bracket_cycles and perf_<event> (per operation, the counting
// pass) for every host counter that opened; counters that did not open are named in the label
// ("counters unavailable: ..."). The raw per-repetition brackets (value and reference, the method,
// k, ops and why it stopped) and the timing-floor calibration go to the --samples file, one JSON
// object per line. Context (AddCustomContext): tsc_khz, tsc_khz_source, line_bytes, cpu, ...
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/results/cell.h"

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

// Converts flushbench-native --benchmark_format=json output and its --samples file. Throws
// std::runtime_error (one line, saying what is wrong) when the text is not JSON, not Google
// Benchmark's schema, names a pattern the table does not have, or a measured cell has no samples.
NativeResults parse_native_json(const std::string& gbench_json_text, const std::string& samples_text);
std::vector<Cell> native_cells(const std::string& gbench_json_text, const std::string& samples_text);

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
    uint32_t warmup = 3, reps = 31, min_reps = 5, target_permille = 10, budget_ms = 1000;  // the stopping rule
    std::string samples;                   // the --samples file (run_native_bench makes a temporary one)
    int cpu = -1;                          // -1: the CPU the program starts on
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
