// `flushbench import` reads serial logs captured from real machines (IPMI SOL, null-modem): any
// bytes must import or report what was corrupt, never crash; imported cells are self-consistent.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "host/baremetal/import_log.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fb::ImportResult r = fb::import_serial_log(std::string(reinterpret_cast<const char*>(data), size));
    for (const auto& c : r.cells)
        if (c.status == fb::CellStatus::ok && c.tsc.empty()) abort();
    return 0;
}
