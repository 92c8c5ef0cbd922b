// Identity paging over the first 4 GiB with 2 MiB pages, and the PAT layout that lets a range be
// mapped write-back, write-combining or uncacheable. With IOMMU snoop control KVM forces guest
// memory to write-back on Intel (the guest's choice is ignored); without it the guest PAT is honoured.
#pragma once

#include <stdint.h>

#include "common/patterns.h"
#include "common/x86/memory_type.h"
#include "common/x86/paging.h"

namespace fb::guest {

class Paging final {
public:
    static constexpr uint64_t kPageBytes = x86::kLargePageBytes;
    static constexpr uint64_t kMappedBytes = 4ull << 30;
    // PA0..PA7 as Linux programs them: the four types the patterns use sit at indices 0-3, which
    // PWT and PCD alone select, so 2 MiB entries never need their PAT bit.
    static constexpr x86::MemoryType kPatLayout[x86::kPatEntries] = {
        x86::MemoryType::wb, x86::MemoryType::wc, x86::MemoryType::uc_minus, x86::MemoryType::uc,
        x86::MemoryType::wb, x86::MemoryType::wp, x86::MemoryType::uc_minus, x86::MemoryType::wt};
    static constexpr uint64_t kPatValue = x86::pat_value(kPatLayout);

    // Builds the tables, programs the PAT and switches CR3. Call once, early.
    static void init();
    // Re-types [base, base+bytes) (2 MiB granular, rounded outward) and flushes the TLB.
    static void set_type(uint64_t base, uint64_t bytes, MemType type);
    static MemType type_of(uint64_t addr);
    static uint64_t pat() { return pat_; }
    // IA32_MTRR_DEF_TYPE as found at boot, and whether the kernel had to enable MTRRs.
    static uint64_t mtrr_def_type_at_boot() { return mtrr_at_boot_; }
    static bool enabled_mtrrs() { return enabled_mtrrs_; }

private:
    static uint64_t pat_;
    static inline uint64_t mtrr_at_boot_ = 0;
    static inline bool enabled_mtrrs_ = false;
};

}  // namespace fb::guest
