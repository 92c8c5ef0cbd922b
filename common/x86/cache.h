// Cache-maintenance instructions: the subjects of the benchmark. WBINVD and WBNOINVD are
// privileged (ring 0 only); the CLFLUSH family and the fences run anywhere.
#pragma once

#include <stdint.h>

namespace fb::x86 {

[[gnu::always_inline]] inline void wbinvd() { asm volatile("wbinvd" ::: "memory"); }
// F3 0F 09. Encoded by hand for assemblers that predate it; executes as WBINVD on CPUs without
// CPUID.80000008H:EBX[9], so callers must check the feature rather than wait for #UD.
[[gnu::always_inline]] inline void wbnoinvd() { asm volatile(".byte 0xf3, 0x0f, 0x09" ::: "memory"); }
[[gnu::always_inline]] inline void clflush(const volatile void* p) { asm volatile("clflush %0" ::"m"(*static_cast<const volatile char*>(p)) : "memory"); }
// 66 0F AE /7 and 66 0F AE /6, by hand for the same reason.
[[gnu::always_inline]] inline void clflushopt(const volatile void* p) {
    asm volatile(".byte 0x66; clflush %0" ::"m"(*static_cast<const volatile char*>(p)) : "memory");
}
[[gnu::always_inline]] inline void clwb(const volatile void* p) {
    asm volatile(".byte 0x66; xsaveopt %0" ::"m"(*static_cast<const volatile char*>(p)) : "memory");
}
[[gnu::always_inline]] inline void sfence() { asm volatile("sfence" ::: "memory"); }
[[gnu::always_inline]] inline void mfence() { asm volatile("mfence" ::: "memory"); }

}  // namespace fb::x86
