// 16550 UART on COM1: the console on QEMU and on bare metal (where IPMI SOL usually captures it).
#pragma once

#include "common/boot.h"
#include "common/text.h"
#include "common/x86/io.h"
#include "common/x86/uart16550.h"

namespace fb::guest {

class Serial final {
public:
    static void init() {
        namespace U = x86::uart16550;
        using x86::outb;
        constexpr uint16_t divisor = U::divisor_for(kBaud);
        outb(kBase + U::kIer, U::kIerNone);
        outb(kBase + U::kLcr, U::kLcrDlab);
        outb(kBase + U::kDivisorLow, uint8_t(divisor));
        outb(kBase + U::kDivisorHigh, uint8_t(divisor >> 8));
        outb(kBase + U::kLcr, U::kLcr8N1);  // and DLAB off
        outb(kBase + U::kFcr, U::kFcrEnable | U::kFcrClearReceive | U::kFcrClearTransmit | U::kFcrTrigger14);
        outb(kBase + U::kMcr, U::kMcrDtr | U::kMcrRts);
    }
    static void write(Str s) {
        for (size_t i = 0; i < s.n; ++i) put(s[i]);
    }

private:
    static constexpr uint16_t kBase = boot::kCom1;
    static constexpr uint32_t kBaud = 115200;
    static void put(char c) {
        // Wait for room however long the reader takes: a byte written into a full transmitter is
        // lost, and a lost byte corrupts a record (QEMU stops draining while its host reader lags).
        // A machine without a UART reads LSR as 0xff, "room", and never waits; a reader that never
        // drains is the host watchdog's to call hung.
        while (!(x86::inb(kBase + x86::uart16550::kLsr) & x86::uart16550::kLsrThre)) asm volatile("pause");
        x86::outb(kBase + x86::uart16550::kData, uint8_t(c));
    }
};

}  // namespace fb::guest
