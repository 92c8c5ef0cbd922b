// Where records go: the VMM's record port (one exit per record) when the direct entry offered
// one, else COM1 byte by byte (QEMU, bare metal).
#pragma once

#include "common/boot.h"
#include "common/wire.h"
#include "common/x86/io.h"
#include "guest/serial.h"

namespace fb::guest {

class Records final {
public:
    static void use_port(uint16_t port) { port_ = port; }
    static void emit(wire::Writer& w) {
        Str line = w.finish();
        if (!port_) return Serial::write(line);
        buffer_.len = uint32_t(line.n);
        for (size_t i = 0; i < line.n; ++i) buffer_.data[i] = line[i];
        x86::outl(port_, uint32_t(reinterpret_cast<uint64_t>(&buffer_)));
    }

private:
    static inline uint16_t port_ = 0;
    alignas(64) static inline boot::RecordBuffer buffer_{};
};

}  // namespace fb::guest
