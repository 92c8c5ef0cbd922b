// 16550 UART on COM1: the console on QEMU and on bare metal (where IPMI SOL usually captures it).
#pragma once

#include "common/boot.h"
#include "common/text.h"
#include "common/x86/io.h"

namespace fb::guest {

class Serial final {
public:
    static void init() {
        using x86::outb;
        outb(kBase + 1, 0x00);  // no interrupts: the kernel polls
        outb(kBase + 3, 0x80);  // DLAB on
        outb(kBase + 0, 0x01);  // divisor 1: 115200 baud
        outb(kBase + 1, 0x00);
        outb(kBase + 3, 0x03);  // 8N1, DLAB off
        outb(kBase + 2, 0xC7);  // FIFO on, cleared
        outb(kBase + 4, 0x03);  // DTR, RTS
    }
    static void write(Str s) {
        for (size_t i = 0; i < s.n; ++i) put(s[i]);
    }

private:
    static constexpr uint16_t kBase = boot::kCom1;
    static void put(char c) {
        // Wait for room however long the reader takes: a byte written into a full transmitter is
        // lost, and a lost byte corrupts a record (QEMU stops draining while its host reader lags).
        // A machine without a UART reads LSR as 0xff, "room", and never waits; a reader that never
        // drains is the host watchdog's to call hung.
        while (!(x86::inb(kBase + 5) & 0x20)) asm volatile("pause");
        x86::outb(kBase, uint8_t(c));
    }
};

}  // namespace fb::guest
