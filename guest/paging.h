// Identity paging over the first 4 GiB with 2 MiB pages, and the PAT layout that lets a range be
// mapped write-back, write-combining or uncacheable. With IOMMU snoop control KVM forces guest
// memory to write-back on Intel (the guest's choice is ignored); without it the guest PAT is honoured.
#pragma once

#include <stdint.h>

#include "common/patterns.h"

namespace fb::guest {

class Paging final {
public:
    static constexpr uint64_t kPageBytes = 2ull << 20;
    static constexpr uint64_t kMappedBytes = 4ull << 30;
    // PA0..PA7 = WB, WC, UC-, UC, WB, WP, UC-, WT (the Linux layout): index = PCD*2 + PWT for
    // our four types, so 2 MiB entries never need their PAT bit.
    static constexpr uint64_t kPatValue = 0x0407050600070106ull;

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
