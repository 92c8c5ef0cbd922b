// Control registers and TLB maintenance.
#pragma once

#include <stdint.h>

namespace fb::guest {

[[gnu::always_inline]] inline uint64_t read_cr2() {
    uint64_t v;
    asm volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}
[[gnu::always_inline]] inline uint64_t read_cr3() {
    uint64_t v;
    asm volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}
// Writing CR3 flushes every non-global TLB entry: how a memory-type change takes effect.
[[gnu::always_inline]] inline void write_cr3(uint64_t v) { asm volatile("mov %0, %%cr3" ::"r"(v) : "memory"); }

[[noreturn, gnu::always_inline]] inline void halt_forever() {
    for (;;) asm volatile("cli; hlt");
}

}  // namespace fb::guest
