// x86 port I/O. Ring 0 in the guest; in a VM every access is an exit to the VMM.
#pragma once

#include <stdint.h>

namespace fb::x86 {

[[gnu::always_inline]] inline void outb(uint16_t port, uint8_t v) { asm volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
[[gnu::always_inline]] inline void outl(uint16_t port, uint32_t v) { asm volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
[[gnu::always_inline]] inline uint8_t inb(uint16_t port) {
    uint8_t v;
    asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}

}  // namespace fb::x86
