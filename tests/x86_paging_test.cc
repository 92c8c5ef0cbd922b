// common/x86/paging.h, memory_type.h and control_registers.h on the host: the bits against the
// Intel SDM vol. 3A tables and the helpers against entries worked out by hand. The guest's page
// tables and entry, and the VMM's boot tables, are built from these.
#include "common/x86/paging.h"
#include "common/x86/control_registers.h"
#include "common/x86/memory_type.h"

#include <gtest/gtest.h>

namespace fb::x86 {
namespace {

TEST(X86Paging, EntryBitsAreTheSdmOnes) {
    EXPECT_EQ(kPtePresent, 1u << 0);
    EXPECT_EQ(kPteWritable, 1u << 1);
    EXPECT_EQ(kPtePwt, 1u << 3);
    EXPECT_EQ(kPtePcd, 1u << 4);
    EXPECT_EQ(kPtePs, 1u << 7);
    EXPECT_EQ(kPteLargePat, 1u << 12);
    EXPECT_EQ(kEntriesPerTable * 8, 4096u) << "a table is one 4 KiB page of 8-byte entries";
    EXPECT_EQ(kEntriesPerTable * kLargePageBytes, 1ull << 30) << "a page directory maps 1 GiB";
}

TEST(X86Paging, HelpersBuildTheEntriesTheContractDescribes) {
    EXPECT_EQ(table_entry(0x2000), 0x2003u);
    EXPECT_EQ(large_page_entry(0), 0x83u);
    EXPECT_EQ(large_page_entry((1ull << 30) - (2ull << 20)), 0x3FE00083u) << "the VMM's last boot PDE";
    EXPECT_EQ(large_page_entry(3ull << 30), 0xC0000083u);
}

TEST(X86Paging, PatIndexBitsRoundTripAndStayClearOfTheAddress) {
    for (unsigned i = 0; i < kPatEntries; ++i) {
        uint64_t e = large_page_entry(5 * kLargePageBytes) | large_page_pat_bits(i);
        EXPECT_EQ(large_page_pat_index(e), i);
        EXPECT_EQ(e & ~kLargePagePatIndexBits, large_page_entry(5 * kLargePageBytes)) << i;
    }
    EXPECT_EQ(large_page_pat_bits(0), 0u) << "index 0 is the plain entry";
    EXPECT_EQ(large_page_pat_bits(3), kPtePcd | kPtePwt);
    EXPECT_EQ(kLargePagePatIndexBits & (kLargePageBytes - 1), kLargePagePatIndexBits)
        << "below bit 21, where a 2 MiB page's address starts";
    EXPECT_EQ(kLargePagePatIndexBits & (kPtePresent | kPteWritable | kPtePs), 0u);
}

TEST(X86MemoryType, EncodingsAreTheSdmOnes) {
    EXPECT_EQ(uint8_t(MemoryType::uc), 0);
    EXPECT_EQ(uint8_t(MemoryType::wc), 1);
    EXPECT_EQ(uint8_t(MemoryType::wt), 4);
    EXPECT_EQ(uint8_t(MemoryType::wp), 5);
    EXPECT_EQ(uint8_t(MemoryType::wb), 6);
    EXPECT_EQ(uint8_t(MemoryType::uc_minus), 7);
}

TEST(X86MemoryType, PatValuesMatchTheDocumentedLayouts) {
    using enum MemoryType;
    // The power-on value, SDM vol. 3A "IA32_PAT MSR".
    EXPECT_EQ(pat_value({wb, wt, uc_minus, uc, wb, wt, uc_minus, uc}), 0x0007040600070406u);
    // Linux's layout, which the guest programs (guest_boot_test reads it back from a booted guest).
    const MemoryType linux_layout[kPatEntries] = {wb, wc, uc_minus, uc, wb, wp, uc_minus, wt};
    uint64_t pat = pat_value(linux_layout);
    EXPECT_EQ(pat, 0x0407050600070106u);
    for (unsigned i = 0; i < kPatEntries; ++i) EXPECT_EQ(pat_entry(pat, i), linux_layout[i]) << i;
}

TEST(X86MemoryType, MtrrDefaultTypeEnablesWriteBack) {
    EXPECT_EQ(kMtrrDefTypeEnable, 1u << 11);
    EXPECT_EQ(mtrr_def_type(MemoryType::wb), 0x806u);
}

TEST(X86ControlRegisters, BitsAreTheSdmOnes) {
    EXPECT_EQ(kCr0Pe, 1u << 0);
    EXPECT_EQ(kCr0Mp, 1u << 1);
    EXPECT_EQ(kCr0Et, 1u << 4);
    EXPECT_EQ(kCr0Ne, 1u << 5);
    EXPECT_EQ(kCr0Wp, 1u << 16);
    EXPECT_EQ(kCr0Pg, 1ull << 31);
    EXPECT_EQ(kCr4Pae, 1u << 5);
    EXPECT_EQ(kCr4Osfxsr, 1u << 9);
    EXPECT_EQ(kCr4Osxmmexcpt, 1u << 10);
    EXPECT_EQ(kEferLme, 1u << 8);
    EXPECT_EQ(kEferLma, 1u << 10);
    // What the guest's 32-bit entry ORs into CR0 (guest/boot_constants.cc): the value it used to
    // spell as a literal.
    EXPECT_EQ(kCr0Pg | kCr0Wp | kCr0Pe, 0x80010001u);
    EXPECT_EQ(kCr0Pg >> 32, 0u) << "fits the 32-bit OR of the entry code";
}

}  // namespace
}  // namespace fb::x86
