// The CR0, CR4 and EFER bits that enter long mode and keep it: the guest's 32-bit entry sets them
// itself (guest/boot.S, through guest/boot_constants.cc), flushbench's VMM loads them for the
// direct 64-bit entry (host/vmm/vcpu.cc). Intel SDM vol. 3A, "Control Registers" and "Extended
// Feature Enable Register"; AMD APM vol. 2, "System Registers".
#pragma once

#include <stdint.h>

namespace fb::x86 {

inline constexpr uint64_t kCr0Pe = 1ull << 0;   // protected mode
inline constexpr uint64_t kCr0Mp = 1ull << 1;   // with NE: x87/SSE faults are reported as #MF/#XM
inline constexpr uint64_t kCr0Et = 1ull << 4;   // reads as 1 on every CPU since the i486
inline constexpr uint64_t kCr0Ne = 1ull << 5;   // native x87 errors; VMX requires it set in a guest
inline constexpr uint64_t kCr0Wp = 1ull << 16;  // ring 0 honours read-only pages too
inline constexpr uint64_t kCr0Pg = 1ull << 31;  // paging: with EFER.LME, long mode

inline constexpr uint64_t kCr4Pae = 1ull << 5;          // 64-bit entries: long mode requires it
inline constexpr uint64_t kCr4Osfxsr = 1ull << 9;       // SSE usable without #UD
inline constexpr uint64_t kCr4Osxmmexcpt = 1ull << 10;  // SIMD exceptions as #XM, not #UD

inline constexpr uint64_t kEferLme = 1ull << 8;   // long mode enable: takes effect when CR0.PG is set
inline constexpr uint64_t kEferLma = 1ull << 10;  // long mode active: the CPU sets it; a VMM loading
                                                  // state directly sets it itself

}  // namespace fb::x86
