// The flush patterns: one table, compiled into the guest kernel, the native host runs and (through
// `flushbench patterns --json`) the plots. Adding a pattern is adding one line to kPatterns.
#pragma once

#include "common/text.h"
#include "common/x86/cache.h"
#include "common/x86/cpu.h"
#include "common/x86/io.h"

namespace fb {

// Where the pattern works: a footprint of `bytes` at `base`, walked in `line` steps.
struct Buffer {
    volatile uint8_t* base;
    uint64_t bytes;
    uint32_t line;
};

// How a sample is normalised for reporting: per executed instruction, or per footprint (the host
// also derives per-line figures by dividing by bytes / line).
enum class Unit : uint8_t { per_op, per_footprint };

// The memory type a pattern's buffer is mapped with, through the guest's PAT. With IOMMU snoop
// control KVM forces write-back on Intel (the guest's choice is ignored); without it, and always
// on AMD NPT, the guest PAT is honoured.
enum class MemType : uint8_t { wb, wc, uc_minus, uc };

inline constexpr const char* mem_type_name(MemType t) {
    switch (t) {
        case MemType::wb: return "wb";
        case MemType::wc: return "wc";
        case MemType::uc_minus: return "uc-";
        case MemType::uc: return "uc";
    }
    return "?";
}

// Which `patterns=` keyword selects a pattern: `all` is the flush group, `memtypes` the other.
enum class Group : uint8_t { flush, memtype };

inline constexpr uint16_t kUnusedPort = 0x80;  // POST-code port: no device, so a pure exit round trip

namespace patterns {

inline void none(const Buffer&) {}

// Writing one byte per line makes every line of the footprint dirty (Modified) in the cache.
inline void dirty(const Buffer& b) {
    for (uint64_t off = 0; off < b.bytes; off += b.line) b.base[off] = uint8_t(off >> 6);
}
inline void cpuid(const Buffer&) { x86::cpuid(0); }
inline void pio(const Buffer&) { x86::outb(kUnusedPort, 0); }
inline void wbinvd(const Buffer&) { x86::wbinvd(); }
inline void wbnoinvd(const Buffer&) { x86::wbnoinvd(); }
// MFENCE: CLFLUSH is ordered against stores but not complete until a fence retires.
inline void clflush(const Buffer& b) {
    for (uint64_t off = 0; off < b.bytes; off += b.line) x86::clflush(b.base + off);
    x86::mfence();
}
inline void clflushopt(const Buffer& b) {
    for (uint64_t off = 0; off < b.bytes; off += b.line) x86::clflushopt(b.base + off);
    x86::sfence();
}
inline void clwb(const Buffer& b) {
    for (uint64_t off = 0; off < b.bytes; off += b.line) x86::clwb(b.base + off);
    x86::sfence();
}
// Every quadword, in order: what a memory type changes (WC combines writes, UC reaches memory
// on every access).
inline void read_all(const Buffer& b) {
    uint64_t sum = 0;
    for (uint64_t off = 0; off + 8 <= b.bytes; off += 8) sum += *reinterpret_cast<volatile uint64_t*>(b.base + off);
    asm volatile("" ::"r"(sum));
}
inline void write_all(const Buffer& b) {
    for (uint64_t off = 0; off + 8 <= b.bytes; off += 8) *reinterpret_cast<volatile uint64_t*>(b.base + off) = off;
    x86::sfence();  // WC stores are weakly ordered: drain them inside the timed region
}
// Dirty, then flush: the timed read must come from memory.
inline void dirty_then_flush(const Buffer& b) {
    dirty(b);
    clflush(b);
}

}  // namespace patterns

struct Pattern {
    const char* name;
    Group group;
    x86::Feature needs;          // CPUID feature the body's instruction requires
    bool ring0;                  // privileged: WBINVD, port I/O (guest and bare metal only)
    bool whole_cache;            // flushes the CPU's caches: KVM runs it on every pCPU of wbinvd_dirty_mask
    bool exits;                  // every operation is a VM exit under KVM (CPUID, port I/O, WBINVD)
    bool uses_footprint;         // run once per footprint; otherwise once, footprint 0
    Unit unit;
    void (*prepare)(const Buffer&);  // untimed, before every repetition
    void (*body)(const Buffer&);     // timed
    MemType memtype;                 // how the guest maps the buffer for this pattern
    const char* operation;           // what the body does, the same across memory types (plots group by it)
    const char* what;
};

// clang-format off
inline constexpr Pattern kPatterns[] = {
    //name         group           needs                     ring0  whole  exits  fp     unit                prepare          body                  memtype      operation
    {"nop",        Group::flush,   x86::Feature::none,       false, false, false, false, Unit::per_op,        patterns::none,  patterns::none,       MemType::wb, "nop",        "empty timed region: the measurement overhead"},
    {"cpuid",      Group::flush,   x86::Feature::none,       false, false, true,  false, Unit::per_op,        patterns::none,  patterns::cpuid,      MemType::wb, "cpuid",      "CPUID leaf 0: an unconditional VM exit, handled in the kernel"},
    {"pio",        Group::flush,   x86::Feature::none,       true,  false, true,  false, Unit::per_op,        patterns::none,  patterns::pio,        MemType::wb, "pio",        "OUT to an unused port: an exit round trip through the VMM"},
    {"dirty",      Group::flush,   x86::Feature::none,       false, false, false, true,  Unit::per_footprint, patterns::none,  patterns::dirty,      MemType::wb, "dirty",      "store one byte per line: the cost of dirtying alone"},
    {"wbinvd",     Group::flush,   x86::Feature::none,       true,  true,  true,  true,  Unit::per_op,        patterns::dirty, patterns::wbinvd,     MemType::wb, "wbinvd",     "WBINVD after dirtying the footprint"},
    {"wbnoinvd",   Group::flush,   x86::Feature::wbnoinvd,   true,  true,  true,  true,  Unit::per_op,        patterns::dirty, patterns::wbnoinvd,   MemType::wb, "wbnoinvd",   "WBNOINVD after dirtying the footprint"},
    {"clflush",    Group::flush,   x86::Feature::clflush,    false, false, false, true,  Unit::per_footprint, patterns::dirty, patterns::clflush,    MemType::wb, "clflush",    "CLFLUSH every dirty line, then MFENCE"},
    {"clflushopt", Group::flush,   x86::Feature::clflushopt, false, false, false, true,  Unit::per_footprint, patterns::dirty, patterns::clflushopt, MemType::wb, "clflushopt", "CLFLUSHOPT every dirty line, then SFENCE"},
    {"clwb",       Group::flush,   x86::Feature::clwb,       false, false, false, true,  Unit::per_footprint, patterns::dirty, patterns::clwb,       MemType::wb, "clwb",       "CLWB every dirty line, then SFENCE"},
    // Memory types (ring 0: they need the guest's page tables).
    {"read_wb",    Group::memtype, x86::Feature::none,       true,  false, false, true,  Unit::per_footprint, patterns::none,  patterns::read_all,   MemType::wb, "read",       "sequential read of a write-back buffer"},
    {"read_wc",    Group::memtype, x86::Feature::none,       true,  false, false, true,  Unit::per_footprint, patterns::none,  patterns::read_all,   MemType::wc, "read",       "sequential read of a write-combining buffer"},
    {"read_uc",    Group::memtype, x86::Feature::none,       true,  false, false, true,  Unit::per_footprint, patterns::none,  patterns::read_all,   MemType::uc, "read",       "sequential read of an uncacheable buffer"},
    {"write_wb",   Group::memtype, x86::Feature::none,       true,  false, false, true,  Unit::per_footprint, patterns::none,  patterns::write_all,  MemType::wb, "write",      "sequential write of a write-back buffer, then SFENCE"},
    {"write_wc",   Group::memtype, x86::Feature::none,       true,  false, false, true,  Unit::per_footprint, patterns::none,  patterns::write_all,  MemType::wc, "write",      "sequential write of a write-combining buffer, then SFENCE"},
    {"write_uc",   Group::memtype, x86::Feature::none,       true,  false, false, true,  Unit::per_footprint, patterns::none,  patterns::write_all,  MemType::uc, "write",      "sequential write of an uncacheable buffer, then SFENCE"},
    {"rflush_wb",  Group::memtype, x86::Feature::clflush,    true,  false, false, true,  Unit::per_footprint, patterns::dirty_then_flush, patterns::read_all, MemType::wb, "rflush", "read after dirty + CLFLUSH, write-back"},
    {"rflush_wc",  Group::memtype, x86::Feature::clflush,    true,  false, false, true,  Unit::per_footprint, patterns::dirty_then_flush, patterns::read_all, MemType::wc, "rflush", "read after dirty + CLFLUSH, write-combining"},
    {"rflush_uc",  Group::memtype, x86::Feature::clflush,    true,  false, false, true,  Unit::per_footprint, patterns::dirty_then_flush, patterns::read_all, MemType::uc, "rflush", "read after dirty + CLFLUSH, uncacheable"},
};
// clang-format on

inline constexpr size_t kPatternCount = sizeof(kPatterns) / sizeof(kPatterns[0]);

inline const Pattern* find_pattern(Str name) {
    for (const auto& p : kPatterns)
        if (Str(p.name) == name) return &p;
    return nullptr;
}

inline constexpr const char* group_name(Group g) { return g == Group::flush ? "flush" : "memtype"; }

inline constexpr const char* unit_name(Unit u) { return u == Unit::per_op ? "per-op" : "per-footprint"; }

}  // namespace fb
