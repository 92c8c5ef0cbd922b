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

}  // namespace patterns

struct Pattern {
    const char* name;
    x86::Feature needs;          // CPUID feature the body's instruction requires
    bool ring0;                  // privileged: WBINVD, port I/O (guest and bare metal only)
    bool uses_footprint;         // run once per footprint; otherwise once, footprint 0
    Unit unit;
    void (*prepare)(const Buffer&);  // untimed, before every repetition
    void (*body)(const Buffer&);     // timed
    const char* what;
};

// clang-format off
inline constexpr Pattern kPatterns[] = {
    {"nop",        x86::Feature::none,       false, false, Unit::per_op,        patterns::none,  patterns::none,       "empty timed region: the measurement overhead"},
    {"cpuid",      x86::Feature::none,       false, false, Unit::per_op,        patterns::none,  patterns::cpuid,      "CPUID leaf 0: an unconditional VM exit, handled in the kernel"},
    {"pio",        x86::Feature::none,       true,  false, Unit::per_op,        patterns::none,  patterns::pio,        "OUT to an unused port: an exit round trip through the VMM"},
    {"dirty",      x86::Feature::none,       false, true,  Unit::per_footprint, patterns::none,  patterns::dirty,      "store one byte per line: the cost of dirtying alone"},
    {"wbinvd",     x86::Feature::none,       true,  true,  Unit::per_op,        patterns::dirty, patterns::wbinvd,     "WBINVD after dirtying the footprint"},
    {"wbnoinvd",   x86::Feature::wbnoinvd,   true,  true,  Unit::per_op,        patterns::dirty, patterns::wbnoinvd,   "WBNOINVD after dirtying the footprint"},
    {"clflush",    x86::Feature::clflush,    false, true,  Unit::per_footprint, patterns::dirty, patterns::clflush,    "CLFLUSH every dirty line, then MFENCE"},
    {"clflushopt", x86::Feature::clflushopt, false, true,  Unit::per_footprint, patterns::dirty, patterns::clflushopt, "CLFLUSHOPT every dirty line, then SFENCE"},
    {"clwb",       x86::Feature::clwb,       false, true,  Unit::per_footprint, patterns::dirty, patterns::clwb,       "CLWB every dirty line, then SFENCE"},
};
// clang-format on

inline constexpr size_t kPatternCount = sizeof(kPatterns) / sizeof(kPatterns[0]);

inline const Pattern* find_pattern(Str name) {
    for (const auto& p : kPatterns)
        if (Str(p.name) == name) return &p;
    return nullptr;
}

inline constexpr const char* unit_name(Unit u) { return u == Unit::per_op ? "per-op" : "per-footprint"; }

}  // namespace fb
