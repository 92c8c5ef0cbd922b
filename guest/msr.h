// Model-specific registers the kernel touches, one line each.
#pragma once

#include <stdint.h>

namespace fb::guest {

enum class Msr : uint32_t {
    efer = 0xC0000080,            // long mode enable
    pat = 0x277,                  // page attribute table: memory type per PAT/PCD/PWT index
    mtrr_def_type = 0x2FF,        // MTRRs: enable bit 11, default memory type bits 7:0
    perf_capabilities = 0x345,    // Intel: full-width counter writes etc.
    perfevtsel0 = 0x186,          // Intel architectural PMU: event select, one per counter
    pmc0 = 0xC1,                  // Intel architectural PMU: counter values
    perf_global_ctrl = 0x38F,     // Intel PMU v2+: per-counter enable bits
    amd_perf_ctl_legacy = 0xC0010000,  // AMD K7 counters: PERF_CTL0..3
    amd_perf_ctr_legacy = 0xC0010004,  // AMD K7 counters: PERF_CTR0..3
    amd_perf_ctl_core = 0xC0010200,    // AMD PerfCtrExtCore: CTL/CTR interleaved, six counters
};

[[gnu::always_inline]] inline uint64_t rdmsr(Msr m) {
    uint32_t lo, hi;
    asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(uint32_t(m)));
    return uint64_t(hi) << 32 | lo;
}
[[gnu::always_inline]] inline void wrmsr(Msr m, uint64_t v) {
    asm volatile("wrmsr" ::"c"(uint32_t(m)), "a"(uint32_t(v)), "d"(uint32_t(v >> 32)) : "memory");
}
// For MSR arrays addressed by base + index.
[[gnu::always_inline]] inline void wrmsr(uint32_t m, uint64_t v) { wrmsr(Msr(m), v); }

}  // namespace fb::guest
