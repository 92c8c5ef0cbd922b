// The 16550 UART as a polling driver and a model of it see it: register offsets from the base port
// and the bits flushbench uses. The guest's console driver (guest/serial.h) writes them; the VMM's
// UART model (host/vmm/vmm_guest.cc) answers them. National Semiconductor PC16550D datasheet,
// "Register Summary" and the register descriptions that follow it.
#pragma once

#include <stdint.h>

namespace fb::x86::uart16550 {

inline constexpr uint16_t kRegisters = 8;  // base + 0..7

// Offsets. While LCR.DLAB is set, 0 and 1 address the baud-rate divisor latch instead.
inline constexpr uint16_t kData = 0;         // RBR on read, THR on write; DLL with DLAB
inline constexpr uint16_t kIer = 1;          // interrupt enable; DLM with DLAB
inline constexpr uint16_t kIir = 2;          // interrupt identification on read ...
inline constexpr uint16_t kFcr = 2;          // ... FIFO control on write
inline constexpr uint16_t kLcr = 3;          // line control
inline constexpr uint16_t kMcr = 4;          // modem control
inline constexpr uint16_t kLsr = 5;          // line status
inline constexpr uint16_t kMsr = 6;          // modem status
inline constexpr uint16_t kScr = 7;          // scratch: no effect, reads back what was written
inline constexpr uint16_t kDivisorLow = 0;   // DLL, with DLAB
inline constexpr uint16_t kDivisorHigh = 1;  // DLM, with DLAB

inline constexpr uint8_t kIerNone = 0x00;  // no interrupts: the driver polls

inline constexpr uint8_t kIirNoInterruptPending = 0x01;

inline constexpr uint8_t kFcrEnable = 0x01;
inline constexpr uint8_t kFcrClearReceive = 0x02;
inline constexpr uint8_t kFcrClearTransmit = 0x04;
inline constexpr uint8_t kFcrTrigger14 = 0xc0;  // receive interrupt at 14 bytes

inline constexpr uint8_t kLcr8N1 = 0x03;   // 8 data bits, no parity, 1 stop bit
inline constexpr uint8_t kLcrDlab = 0x80;  // divisor latch access

inline constexpr uint8_t kMcrDtr = 0x01;
inline constexpr uint8_t kMcrRts = 0x02;

inline constexpr uint8_t kLsrThre = 0x20;  // transmitter holding register empty: room for a byte
inline constexpr uint8_t kLsrTemt = 0x40;  // transmitter empty: holding and shift register both

// The divisor for `baud` from the PC's 1.8432 MHz clock, 16 samples a bit: 115200 baud is 1.
inline constexpr uint32_t kMaxBaud = 115200;
constexpr uint16_t divisor_for(uint32_t baud) { return uint16_t(kMaxBaud / baud); }

}  // namespace fb::x86::uart16550
