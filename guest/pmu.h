// The guest's own PMU, when the hypervisor (or bare metal) offers one: Intel architectural
// performance monitoring (CPUID leaf 0xA) or AMD core counters. Read with RDPMC around each
// repetition; when there is none, every record says why.
#pragma once

#include <stdint.h>

namespace fb::guest {

class Pmu final {
public:
    static constexpr int kMaxCounters = 3;

    static void init(bool wanted);
    static bool available() { return count_ > 0; }
    static const char* unavailable_reason() { return reason_; }
    static const char* kind() { return kind_; }
    static int count() { return count_; }
    static const char* name(int i) { return names_[i]; }
    [[gnu::always_inline]] static inline void read(uint64_t* out);

private:
    static bool program_intel();
    static bool program_amd();
    static bool counts_advance();
    static bool program_and_check();
    static void add(const char* name, uint32_t rdpmc_index) {
        names_[count_] = name;
        index_[count_++] = rdpmc_index;
    }

    static inline int count_ = 0;
    static inline const char* names_[kMaxCounters] = {};
    static inline uint32_t index_[kMaxCounters] = {};
    static inline const char* reason_ = "not-initialised";
    static inline const char* kind_ = "none";
};

}  // namespace fb::guest

#include "guest/pmc.h"

[[gnu::always_inline]] inline void fb::guest::Pmu::read(uint64_t* out) {
    for (int i = 0; i < count_; ++i) out[i] = rdpmc(index_[i]);
}
