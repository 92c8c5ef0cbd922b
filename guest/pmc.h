// RDPMC: read a performance counter without the MSR path (ring 0 may always execute it).
#pragma once

#include <stdint.h>

namespace fb::guest {

[[gnu::always_inline]] inline uint64_t rdpmc(uint32_t index) {
    uint32_t lo, hi;
    asm volatile("rdpmc" : "=a"(lo), "=d"(hi) : "c"(index));
    return uint64_t(hi) << 32 | lo;
}

}  // namespace fb::guest
