// The guest is untrusted: whatever bytes it sends, the record parser and the cell decoder must
// neither crash nor grow without bound, and every cell they hand out must be self-consistent.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/wire.h"
#include "host/results/record_stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    // Serial path: arbitrary chunking.
    fb::RecordStream serial;
    serial.on_cell([](fb::Cell&& c) {
        // ok cells carry samples, except finished idle steps, which time nothing
        bool idle = c.pace && c.pace->rate == "idle" && c.pace->finished;
        if (c.status == fb::CellStatus::ok && c.tsc.empty() && !idle) abort();
        if (c.status == fb::CellStatus::ok && c.pace && !c.pace->finished) abort();  // a window needs its end
        for (const auto& [name, series] : c.guest_pmu)
            if (c.status == fb::CellStatus::ok && series.size() != c.tsc.size()) abort();
    });
    size_t chunk = size ? 1 + data[0] % 64 : 1;
    for (size_t i = 0; i < size; i += chunk) serial.feed_bytes(bytes.substr(i, chunk));
    if (serial.tail().size() > fb::RecordStream::kTailBytes) abort();
    // Record-port path: each line as one record.
    fb::RecordStream port;
    size_t start = 0;
    for (size_t i = 0; i <= size; ++i)
        if (i == size || bytes[i] == '\n') port.feed_line(bytes.substr(start, i - start)), start = i + 1;
    // The bare line parser.
    fb::wire::Record r;
    fb::wire::parse_line(fb::Str(bytes.data(), size), r);
    return 0;
}
