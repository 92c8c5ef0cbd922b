#include "guest/idt.h"

extern "C" const uint64_t isr_stubs[32];

namespace fb::guest {
namespace {

struct [[gnu::packed]] Gate {
    uint16_t offset_lo, selector;
    uint8_t ist, type_attr;
    uint16_t offset_mid;
    uint32_t offset_hi, reserved;
};
static_assert(sizeof(Gate) == 16);

struct [[gnu::packed]] Pointer {
    uint16_t limit;
    uint64_t base;
};

alignas(16) Gate table[32];
constexpr uint16_t kKernelCs = 0x08;
constexpr uint8_t kInterruptGate = 0x8E;  // present, ring 0, 64-bit interrupt gate (IF cleared)

}  // namespace

void Idt::init() {
    for (int v = 0; v < 32; ++v) {
        uint64_t a = isr_stubs[v];
        table[v] = {uint16_t(a), kKernelCs, 0, kInterruptGate, uint16_t(a >> 16), uint32_t(a >> 32), 0};
    }
    Pointer p{sizeof(table) - 1, reinterpret_cast<uint64_t>(table)};
    asm volatile("lidt %0" ::"m"(p));
}

}  // namespace fb::guest
