// Interrupt descriptor table: a gate for each of the 32 exception vectors. Interrupts stay
// masked for the whole run (the kernel polls), so external vectors never arrive.
#pragma once

#include <stdint.h>

namespace fb::guest {

// What the entry stub in boot.S pushes, lowest address first.
struct ExceptionFrame {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error_code;
    uint64_t rip, cs, rflags, rsp, ss;  // pushed by the CPU
};

namespace vector {
inline constexpr uint64_t invalid_opcode = 6;  // #UD: instruction the CPU (or VMM) does not offer
inline constexpr uint64_t nmi = 2;
inline constexpr uint64_t page_fault = 14;
}  // namespace vector

class Idt final {
public:
    static void init();
};

}  // namespace fb::guest
