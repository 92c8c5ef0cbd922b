#include "guest/paging.h"

#include "common/x86/cache.h"
#include "common/x86/cpu_features.h"
#include "guest/cr.h"
#include "guest/msr.h"

namespace fb::guest {
namespace {

alignas(4096) uint64_t pml4[512];
alignas(4096) uint64_t pdpt[512];
alignas(4096) uint64_t pd[4][512];  // 4 x 1 GiB

constexpr MemType kMemTypes[] = {MemType::wb, MemType::wc, MemType::uc_minus, MemType::uc};

// The PAT entry each pattern memory type is mapped through.
constexpr unsigned pat_index(MemType t) {
    switch (t) {
        case MemType::wb: return 0;
        case MemType::wc: return 1;
        case MemType::uc_minus: return 2;
        case MemType::uc: return 3;
    }
    return 0;
}
static_assert(Paging::kPatLayout[pat_index(MemType::wb)] == x86::MemoryType::wb);
static_assert(Paging::kPatLayout[pat_index(MemType::wc)] == x86::MemoryType::wc);
static_assert(Paging::kPatLayout[pat_index(MemType::uc_minus)] == x86::MemoryType::uc_minus);
static_assert(Paging::kPatLayout[pat_index(MemType::uc)] == x86::MemoryType::uc);

uint64_t& entry_for(uint64_t addr) { return pd[addr >> 30][(addr >> 21) & 511]; }

}  // namespace

uint64_t Paging::pat_ = 0;

void Paging::init() {
    for (uint64_t g = 0; g < 4; ++g) {
        for (uint64_t i = 0; i < x86::kEntriesPerTable; ++i)
            pd[g][i] = x86::large_page_entry(g << 30 | i * x86::kLargePageBytes);
        pdpt[g] = x86::table_entry(reinterpret_cast<uint64_t>(pd[g]));
    }
    pml4[0] = x86::table_entry(reinterpret_cast<uint64_t>(pdpt));
    // With MTRRs disabled every access is uncacheable whatever the PAT says (SDM vol. 3A, "MTRRdefType
    // Register"). Firmware enables them on real machines and on QEMU's pc; a bare VMM and microvm
    // may not. Only then does the kernel enable them, write-back by default: it never overrides firmware.
    if (x86::has(x86::Feature::mtrr)) {
        mtrr_at_boot_ = rdmsr(Msr::mtrr_def_type);
        if (!(mtrr_at_boot_ & x86::kMtrrDefTypeEnable)) {
            wrmsr(Msr::mtrr_def_type, x86::mtrr_def_type(x86::MemoryType::wb));
            enabled_mtrrs_ = true;
        }
    }
    // SDM vol. 3A, "Programming the PAT": flush caches and TLBs when the PAT changes, so no line
    // keeps an old type.
    wrmsr(Msr::pat, kPatValue);
    x86::wbinvd();
    write_cr3(reinterpret_cast<uint64_t>(pml4));
    pat_ = rdmsr(Msr::pat);
}

void Paging::set_type(uint64_t base, uint64_t bytes, MemType type) {
    uint64_t end = base + bytes;
    if (end > kMappedBytes || end < base) end = kMappedBytes;
    for (uint64_t a = base & ~(kPageBytes - 1); a < end; a += kPageBytes) {
        uint64_t& e = entry_for(a);
        e = (e & ~x86::kLargePagePatIndexBits) | x86::large_page_pat_bits(pat_index(type));
    }
    write_cr3(read_cr3());
}

MemType Paging::type_of(uint64_t addr) {
    unsigned index = x86::large_page_pat_index(entry_for(addr));
    for (MemType t : kMemTypes)
        if (pat_index(t) == index) return t;
    return MemType::wb;
}

}  // namespace fb::guest
