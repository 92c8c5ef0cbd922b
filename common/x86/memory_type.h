// Memory types and the two registers that hold them: IA32_PAT, eight types a page-table entry
// selects by index (paging.h), and IA32_MTRR_DEF_TYPE, the type of memory no MTRR range covers.
// Intel SDM vol. 3A, "Memory Cache Control": "Methods of Caching Available", "IA32_PAT MSR",
// "MTRRdefType Register".
#pragma once

#include <stdint.h>

namespace fb::x86 {

// The architectural encodings; UC- exists only in the PAT.
enum class MemoryType : uint8_t { uc = 0, wc = 1, wt = 4, wp = 5, wb = 6, uc_minus = 7 };

inline constexpr unsigned kPatEntries = 8;

// IA32_PAT holding PA0..PA7, one byte each, PA0 lowest.
constexpr uint64_t pat_value(const MemoryType (&entries)[kPatEntries]) {
    uint64_t v = 0;
    for (unsigned i = 0; i < kPatEntries; ++i) v |= uint64_t(entries[i]) << (8 * i);
    return v;
}

constexpr MemoryType pat_entry(uint64_t pat, unsigned index) { return MemoryType(pat >> (8 * index) & 0x7); }

// With MTRRs disabled every access is uncacheable whatever the PAT says; E turns them on. FE
// (bit 10) would add the fixed ranges below 1 MiB, which nothing here programs.
inline constexpr uint64_t kMtrrDefTypeEnable = 1ull << 11;

constexpr uint64_t mtrr_def_type(MemoryType default_type) { return kMtrrDefTypeEnable | uint64_t(default_type); }

}  // namespace fb::x86
