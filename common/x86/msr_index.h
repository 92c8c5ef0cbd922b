// Model-specific register numbers, one line each, and the accessors for the MSR arrays (one
// register per counter). The guest reads and writes them through guest/msr.h; the host names them
// from here. Numbers: Intel SDM vol. 4, "Model-Specific Registers (MSRs)"; AMD APM vol. 2,
// appendix A, "MSR Cross-Reference".
#pragma once

#include <stdint.h>

namespace fb::x86 {

enum class Msr : uint32_t {
    efer = 0xC0000080,                 // long mode enable (bits: control_registers.h)
    pat = 0x277,                       // page attribute table: memory type per PAT/PCD/PWT index
    mtrr_def_type = 0x2FF,             // MTRRs: enable bit 11, default memory type bits 7:0
    perf_capabilities = 0x345,         // Intel: full-width counter writes etc.
    perfevtsel0 = 0x186,               // Intel architectural PMU: event select, one per counter
    pmc0 = 0xC1,                       // Intel architectural PMU: counter values
    perf_global_ctrl = 0x38F,          // Intel PMU v2+: per-counter enable bits
    amd_perf_ctl_legacy = 0xC0010000,  // AMD K7 counters: PERF_CTL0..3
    amd_perf_ctr_legacy = 0xC0010004,  // AMD K7 counters: PERF_CTR0..3
    amd_perf_ctl_core = 0xC0010200,    // AMD PerfCtrExtCore: CTL/CTR interleaved, six counters
};

// Intel's architectural PMU: IA32_PERFEVTSELn and IA32_PMCn, consecutive per counter.
constexpr Msr intel_perfevtsel(uint32_t counter) { return Msr(uint32_t(Msr::perfevtsel0) + counter); }
constexpr Msr intel_pmc(uint32_t counter) { return Msr(uint32_t(Msr::pmc0) + counter); }

// AMD's core counters: the legacy block has four CTLs then four CTRs; PerfCtrExtCore
// (cpu_features.h, perfctr_core) has six CTL/CTR pairs, interleaved.
constexpr Msr amd_perf_ctl(bool perfctr_core, uint32_t counter) {
    return perfctr_core ? Msr(uint32_t(Msr::amd_perf_ctl_core) + 2 * counter)
                        : Msr(uint32_t(Msr::amd_perf_ctl_legacy) + counter);
}
constexpr Msr amd_perf_ctr(bool perfctr_core, uint32_t counter) {
    return perfctr_core ? Msr(uint32_t(Msr::amd_perf_ctl_core) + 2 * counter + 1)
                        : Msr(uint32_t(Msr::amd_perf_ctr_legacy) + counter);
}

}  // namespace fb::x86
