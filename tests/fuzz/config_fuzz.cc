// The guest's command-line parser runs in ring 0 with no allocator: any input must parse or fail
// cleanly, whatever parses must stay inside the configuration's fixed bounds, and format_config
// must give it back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fb::Config c;
    fb::ConfigError e = fb::parse_config(fb::Str(reinterpret_cast<const char*>(data), size), c);
    if (e.message) return 0;
    if (c.pattern_count > fb::kPatternCount || c.footprint_count > fb::Config::kMaxFootprints) abort();
    if (c.reps < 1 || c.reps > fb::Config::kMaxReps || c.phases < 1 || c.phases > fb::Config::kMaxPhases) abort();
    for (size_t i = 0; i < c.pattern_count; ++i)
        if (c.pattern_order[i] >= fb::kPatternCount) abort();
    (void)fb::cells_per_phase(c);
    // Whatever parses, formats to a line that parses back to the same configuration.
    char line[8192];
    fb::FixedWriter w(line, sizeof line);
    fb::format_config(c, w);
    if (w.overflowed()) abort();
    fb::Config back;
    if (fb::parse_config(w.str(), back).message || !fb::same_config(c, back)) abort();
    return 0;
}
