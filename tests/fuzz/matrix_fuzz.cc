// Matrix files are user input: any text must parse or fail with a MatrixError, never crash, and
// whatever parses must expand to runs the runner could check.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "host/run/matrix.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text(reinterpret_cast<const char*>(data), size);
    try {
        fb::Matrix m = fb::parse_matrix(text, "fuzz.toml");
        auto runs = m.expand();
        if (m.sets.empty() || m.placements.empty()) abort();  // parse guarantees both
        for (const auto& r : runs)
            if (r.options.reps == 0) abort();
    } catch (const fb::MatrixError&) {
    }
    return 0;
}
