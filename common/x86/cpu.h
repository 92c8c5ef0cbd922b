// CPU identification (vendor, caches, TSC rate) and the timing instructions. Usable in ring 0 and
// in user space, so the guest kernel and the native host runs share it. Feature bits: cpu_features.h.
#pragma once

#include <stdint.h>

#include "common/x86/cpu_features.h"
#include "common/x86/cpuid.h"

namespace fb::x86 {

// LFENCE before RDTSC keeps earlier instructions from drifting into the timed region (Intel SDM
// and AMD APM both document LFENCE as dispatch-serializing for this purpose; on AMD it needs
// the LFENCE-serializing MSR bit, which every kernel since 2018 sets).
[[gnu::always_inline]] inline uint64_t tsc_begin() {
    uint32_t lo, hi;
    asm volatile("lfence\n\trdtsc\n\tlfence" : "=a"(lo), "=d"(hi)::"memory");
    return uint64_t(hi) << 32 | lo;
}

// RDTSCP waits for the timed work to finish; the trailing LFENCE keeps later work out.
// Without RDTSCP (QEMU's default qemu64 model), LFENCE before RDTSC does the waiting.
template <bool kRdtscp>
[[gnu::always_inline]] inline uint64_t tsc_end() {
    uint32_t lo, hi;
    if constexpr (kRdtscp) {
        uint32_t aux;
        asm volatile("rdtscp\n\tlfence" : "=a"(lo), "=d"(hi), "=c"(aux)::"memory");
    } else {
        asm volatile("lfence\n\trdtsc\n\tlfence" : "=a"(lo), "=d"(hi)::"memory");
    }
    return uint64_t(hi) << 32 | lo;
}

[[gnu::always_inline]] inline void compiler_barrier() { asm volatile("" ::: "memory"); }
[[gnu::always_inline]] inline void pause() { asm volatile("pause"); }

// 12-byte vendor strings: "GenuineIntel", "AuthenticAMD"; hypervisor: "KVMKVMKVM\0\0\0", ...
struct Vendor {
    char s[13];
};

inline Vendor cpu_vendor() {
    auto r = cpuid(0);
    Vendor v{};
    uint32_t regs[3] = {r.ebx, r.edx, r.ecx};
    for (int i = 0; i < 12; ++i) v.s[i] = char(regs[i / 4] >> (8 * (i % 4)));
    return v;
}

// Empty when CPUID.1:ECX[31] is clear (bare metal).
inline Vendor hypervisor_vendor(uint32_t* max_leaf = nullptr) {
    Vendor v{};
    if (!has(Feature::hypervisor)) return v;
    auto r = cpuid(kHypervisorLeaves);
    uint32_t regs[3] = {r.ebx, r.ecx, r.edx};
    for (int i = 0; i < 12; ++i) v.s[i] = char(regs[i / 4] >> (8 * (i % 4)));
    if (max_leaf) *max_leaf = r.eax;
    return v;
}

inline bool is_amd() {
    auto v = cpu_vendor();
    return v.s[0] == 'A' && v.s[1] == 'u';  // AuthenticAMD
}

// Cache line size CLFLUSH operates on (CPUID.1:EBX[15:8] * 8), 64 when not reported.
inline uint32_t clflush_line_bytes() {
    uint32_t l = (cpuid(1).ebx >> 8 & 0xff) * 8;
    return l ? l : 64;
}

// Size of the last-level cache as the CPU (or the hypervisor's CPUID) reports it; 0 if unknown.
// Intel: deterministic cache parameters, leaf 4; AMD: leaf 0x8000001D (TopologyExtensions).
inline uint64_t llc_bytes() {
    uint32_t leaf = 4;
    if (is_amd()) {
        if (!leaf_exists(0x8000001D) || !has(Feature::topoext)) {
            // Legacy AMD: L3 size in 512 KiB units, 0x80000006.EDX[31:18].
            if (!leaf_exists(0x80000006)) return 0;
            uint64_t l3 = uint64_t(cpuid(0x80000006).edx >> 18) * 512 * 1024;
            return l3 ? l3 : uint64_t(cpuid(0x80000006).ecx >> 16) * 1024;
        }
        leaf = 0x8000001D;
    } else if (!leaf_exists(4)) {
        return 0;
    }
    uint64_t best = 0;
    uint32_t best_level = 0;
    for (uint32_t i = 0; i < 16; ++i) {
        auto r = cpuid(leaf, i);
        uint32_t type = r.eax & 0x1f;
        if (type == 0) break;
        if (type == 2) continue;  // instruction cache
        uint32_t level = r.eax >> 5 & 7;
        uint64_t ways = (r.ebx >> 22) + 1, parts = (r.ebx >> 12 & 0x3ff) + 1, line = (r.ebx & 0xfff) + 1;
        uint64_t sets = uint64_t(r.ecx) + 1;
        if (level >= best_level) best_level = level, best = ways * parts * line * sets;
    }
    return best;
}

// TSC frequency in kHz and where it came from; 0 / "unknown" when no leaf reports it.
struct TscFreq {
    uint64_t khz;
    const char* source;
};

inline TscFreq tsc_frequency() {
    uint32_t hv_max = 0;
    Vendor hv = hypervisor_vendor(&hv_max);
    // KVM, VMware and others publish the TSC rate in the timing leaf 0x40000010 (EAX, kHz).
    if (hv.s[0] && hv_max >= 0x40000010) {
        uint32_t khz = cpuid(0x40000010).eax;
        if (khz) return {khz, "cpuid-0x40000010"};
    }
    if (leaf_exists(0x15)) {
        auto r = cpuid(0x15);  // TSC = crystal * EBX / EAX
        if (r.eax && r.ebx && r.ecx) return {uint64_t(r.ecx) * r.ebx / r.eax / 1000, "cpuid-0x15"};
    }
    if (leaf_exists(0x16)) {
        uint32_t mhz = cpuid(0x16).eax & 0xffff;  // base frequency: equals the TSC rate on Intel
        if (mhz) return {uint64_t(mhz) * 1000, "cpuid-0x16"};
    }
    return {0, "unknown"};
}

}  // namespace fb::x86
