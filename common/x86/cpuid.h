// The CPUID instruction and how an answer is addressed: a leaf (EAX), a subleaf (ECX) and one of
// the four result registers. Usable in ring 0 and in user space, so the guest kernel, the native
// runs and the host's probe ask the same way.
#pragma once

#include <stdint.h>

namespace fb::x86 {

struct CpuidRegs {
    uint32_t eax, ebx, ecx, edx;
};

enum class CpuidReg : uint8_t { eax, ebx, ecx, edx };

[[gnu::always_inline]] inline CpuidRegs cpuid(uint32_t leaf, uint32_t subleaf = 0) {
    CpuidRegs r;
    asm volatile("cpuid" : "=a"(r.eax), "=b"(r.ebx), "=c"(r.ecx), "=d"(r.edx) : "a"(leaf), "c"(subleaf));
    return r;
}

constexpr uint32_t register_of(const CpuidRegs& r, CpuidReg which) {
    switch (which) {
        case CpuidReg::eax: return r.eax;
        case CpuidReg::ebx: return r.ebx;
        case CpuidReg::ecx: return r.ecx;
        case CpuidReg::edx: return r.edx;
    }
    return 0;
}

// Leaves come in ranges, each headed by a leaf whose EAX is the range's highest leaf: basic at 0,
// extended at 0x80000000, hypervisor at 0x40000000 (present only when CPUID.1:ECX[31] says a
// hypervisor is there). Intel answers a leaf beyond the top with the highest basic leaf's data
// (SDM vol. 2A, CPUID, "Input EAX Value"), so a leaf is read only after this check.
inline constexpr uint32_t kBasicLeaves = 0x00000000;
inline constexpr uint32_t kHypervisorLeaves = 0x40000000;
inline constexpr uint32_t kExtendedLeaves = 0x80000000;

constexpr uint32_t range_of(uint32_t leaf) { return leaf & 0xc0000000; }

// For basic and extended leaves; hypervisor leaves need the hypervisor bit first.
inline bool leaf_exists(uint32_t leaf) { return cpuid(range_of(leaf)).eax >= leaf; }

}  // namespace fb::x86
