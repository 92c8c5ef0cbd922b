// Entries of 4-level paging as the identity maps here build them: the guest's page tables
// (guest/paging.cc, guest/boot.S) and the VMM's boot tables for the direct entry (host/vmm/vm.cc).
// Intel SDM vol. 3A, "4-Level Paging and 5-Level Paging" (the entry-format tables) and "Selecting
// a Memory Type from the PAT"; AMD APM vol. 2, "Long-Mode Page Translation".
#pragma once

#include <stdint.h>

namespace fb::x86 {

inline constexpr uint64_t kPtePresent = 1ull << 0;
inline constexpr uint64_t kPteWritable = 1ull << 1;
inline constexpr uint64_t kPtePwt = 1ull << 3;        // PAT index bit 0
inline constexpr uint64_t kPtePcd = 1ull << 4;        // PAT index bit 1
inline constexpr uint64_t kPtePs = 1ull << 7;         // in a PDPTE or PDE: the entry maps a page itself
inline constexpr uint64_t kPteLargePat = 1ull << 12;  // PAT index bit 2 of a 2 MiB or 1 GiB page
                                                      // (bit 7 of a 4 KiB PTE, which the PS bit holds here)

inline constexpr uint64_t kEntriesPerTable = 512;
inline constexpr uint64_t kLargePageBytes = 2ull << 20;  // what a PDE with PS maps

// An entry pointing to the next-level table. Present and writable: the leaf decides access.
constexpr uint64_t table_entry(uint64_t table_address) { return table_address | kPtePresent | kPteWritable; }

// A present, writable 2 MiB page at `address` (2 MiB aligned), memory type from PAT index 0.
constexpr uint64_t large_page_entry(uint64_t address) { return address | kPtePresent | kPteWritable | kPtePs; }

// The bits of a 2 MiB entry that select PAT entry `index` (0-7), and back.
inline constexpr uint64_t kLargePagePatIndexBits = kPtePwt | kPtePcd | kPteLargePat;
constexpr uint64_t large_page_pat_bits(unsigned index) {
    return (index & 1 ? kPtePwt : 0) | (index & 2 ? kPtePcd : 0) | (index & 4 ? kPteLargePat : 0);
}
constexpr unsigned large_page_pat_index(uint64_t entry) {
    return (entry & kPtePwt ? 1 : 0) | (entry & kPtePcd ? 2 : 0) | (entry & kPteLargePat ? 4 : 0);
}

}  // namespace fb::x86
