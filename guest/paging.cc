#include "guest/paging.h"

#include "common/x86/cache.h"
#include "common/x86/cpu.h"
#include "guest/cr.h"
#include "guest/msr.h"

namespace fb::guest {
namespace {

constexpr uint64_t kPresent = 1, kWritable = 2, kPwt = 1 << 3, kPcd = 1 << 4, kLarge = 1 << 7;
constexpr uint64_t kTypeBits = kPwt | kPcd;

alignas(4096) uint64_t pml4[512];
alignas(4096) uint64_t pdpt[512];
alignas(4096) uint64_t pd[4][512];  // 4 x 1 GiB

uint64_t type_bits(MemType t) {
    switch (t) {
        case MemType::wb: return 0;
        case MemType::wc: return kPwt;
        case MemType::uc_minus: return kPcd;
        case MemType::uc: return kPcd | kPwt;
    }
    return 0;
}

uint64_t& entry_for(uint64_t addr) { return pd[addr >> 30][(addr >> 21) & 511]; }

}  // namespace

uint64_t Paging::pat_ = 0;

void Paging::init() {
    for (uint64_t g = 0; g < 4; ++g) {
        for (uint64_t i = 0; i < 512; ++i) pd[g][i] = (g << 30 | i << 21) | kPresent | kWritable | kLarge;
        pdpt[g] = reinterpret_cast<uint64_t>(pd[g]) | kPresent | kWritable;
    }
    pml4[0] = reinterpret_cast<uint64_t>(pdpt) | kPresent | kWritable;
    // With MTRRs disabled every access is uncacheable whatever the PAT says (SDM 11.11.2.1).
    // Firmware enables them on real machines and on QEMU's pc; a bare VMM and microvm may not.
    // Only then does the kernel enable them, write-back by default: it never overrides firmware.
    if (x86::cpuid(1).edx >> 12 & 1) {
        mtrr_at_boot_ = rdmsr(Msr::mtrr_def_type);
        if (!(mtrr_at_boot_ >> 11 & 1)) {
            wrmsr(Msr::mtrr_def_type, 1ull << 11 | 6);
            enabled_mtrrs_ = true;
        }
    }
    // SDM 11.12.4: flush caches and TLBs when the PAT changes, so no line keeps an old type.
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
        e = (e & ~kTypeBits) | type_bits(type);
    }
    write_cr3(read_cr3());
}

MemType Paging::type_of(uint64_t addr) {
    uint64_t bits = entry_for(addr) & kTypeBits;
    if (bits == (kPcd | kPwt)) return MemType::uc;
    if (bits == kPcd) return MemType::uc_minus;
    if (bits == kPwt) return MemType::wc;
    return MemType::wb;
}

}  // namespace fb::guest
