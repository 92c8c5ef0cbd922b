// The CPUID feature bits flushbench asks about, one table line each: the leaf, subleaf, register
// and bit that answer, the name results files and the guest's records use, and the flag Linux
// prints in /proc/cpuinfo for the same bit. The guest, the native runs and the host all ask here.
//
// Bit positions: Intel SDM vol. 2A, CPUID, "Feature Information Returned in the ECX/EDX
// Register" and "Structured Extended Feature Flags Enumeration Leaf"; AMD APM vol. 3, appendix E,
// "Obtaining Processor Information Via the CPUID Instruction".
#pragma once

#include <stdint.h>

#include "common/x86/cpuid.h"

namespace fb::x86 {

enum class Feature : uint8_t {
    none,  // always available: what a pattern needs when it needs nothing
    clflush,
    clflushopt,
    clwb,
    wbnoinvd,
    rdtscp,
    invtsc,
    hypervisor,
    pdcm,
    perfctr_core,
    self_snoop,
    mtrr,
    topoext,
};

struct FeatureBit {
    Feature feature;
    uint32_t leaf;
    uint32_t subleaf;
    CpuidReg reg;
    uint8_t bit;
    const char* name;     // as results, the guest's hello record and "cpu-lacks-<name>" spell it
    const char* cpuinfo;  // Linux's /proc/cpuinfo flag for this bit; nullptr where it prints none
};

// clang-format off
inline constexpr FeatureBit kFeatureBits[] = {
    // feature              leaf        sub  register       bit  name            /proc/cpuinfo
    {Feature::clflush,      0x00000001, 0, CpuidReg::edx, 19, "clflush",      "clflush"},
    {Feature::clflushopt,   0x00000007, 0, CpuidReg::ebx, 23, "clflushopt",   "clflushopt"},
    {Feature::clwb,         0x00000007, 0, CpuidReg::ebx, 24, "clwb",         "clwb"},
    // Without it F3 0F 09 executes as WBINVD, silently: the wbnoinvd pattern must check first.
    {Feature::wbnoinvd,     0x80000008, 0, CpuidReg::ebx,  9, "wbnoinvd",     "wbnoinvd"},
    {Feature::rdtscp,       0x80000001, 0, CpuidReg::edx, 27, "rdtscp",       "rdtscp"},
    // Invariant TSC: one rate in every P-, C- and T-state. Linux shows it as constant_tsc (which
    // it also sets by CPU model) and nonstop_tsc (which it sets from this bit alone).
    {Feature::invtsc,       0x80000007, 0, CpuidReg::edx,  8, "invtsc",       "nonstop_tsc"},
    {Feature::hypervisor,   0x00000001, 0, CpuidReg::ecx, 31, "hypervisor",   "hypervisor"},
    // Perfmon and debug capability: IA32_PERF_CAPABILITIES exists.
    {Feature::pdcm,         0x00000001, 0, CpuidReg::ecx, 15, "pdcm",         "pdcm"},
    // AMD PerfCtrExtCore: six core counters at 0xC0010200 instead of the four legacy ones.
    {Feature::perfctr_core, 0x80000001, 0, CpuidReg::ecx, 23, "perfctr_core", "perfctr_core"},
    // Self-snoop: only with it may KVM honour the guest's PAT without non-coherent DMA.
    {Feature::self_snoop,   0x00000001, 0, CpuidReg::edx, 27, "ss",           "ss"},
    // MTRRs and IA32_MTRR_DEF_TYPE exist.
    {Feature::mtrr,         0x00000001, 0, CpuidReg::edx, 12, "mtrr",         "mtrr"},
    // AMD TopologyExtensions: the cache hierarchy in leaf 0x8000001D.
    {Feature::topoext,      0x80000001, 0, CpuidReg::ecx, 22, "topoext",      "topoext"},
};
// clang-format on

// The table line for `f`; nullptr for Feature::none.
constexpr const FeatureBit* feature_bit(Feature f) {
    for (const FeatureBit& b : kFeatureBits)
        if (b.feature == f) return &b;
    return nullptr;
}

constexpr const char* feature_name(Feature f) {
    const FeatureBit* b = feature_bit(f);
    return b ? b->name : "none";
}

// Whether the answer of the feature's leaf and subleaf has its bit set.
constexpr bool feature_in(const FeatureBit& b, const CpuidRegs& answer) {
    return register_of(answer, b.reg) >> b.bit & 1;
}

inline bool has(Feature f) {
    const FeatureBit* b = feature_bit(f);
    if (!b) return true;  // Feature::none
    return leaf_exists(b->leaf) && feature_in(*b, cpuid(b->leaf, b->subleaf));
}

}  // namespace fb::x86
