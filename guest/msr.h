// RDMSR and WRMSR (ring 0). Which MSR is which: common/x86/msr_index.h, shared with the host.
#pragma once

#include <stdint.h>

#include "common/x86/msr_index.h"

namespace fb::guest {

using x86::Msr;

[[gnu::always_inline]] inline uint64_t rdmsr(Msr m) {
    uint32_t lo, hi;
    asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(uint32_t(m)));
    return uint64_t(hi) << 32 | lo;
}
[[gnu::always_inline]] inline void wrmsr(Msr m, uint64_t v) {
    asm volatile("wrmsr" ::"c"(uint32_t(m)), "a"(uint32_t(v)), "d"(uint32_t(v >> 32)) : "memory");
}

}  // namespace fb::guest
