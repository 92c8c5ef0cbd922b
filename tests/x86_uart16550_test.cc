// common/x86/uart16550.h on the host: the register layout and bits against the PC16550D datasheet,
// and the divisor arithmetic. The guest's driver writes these and the VMM's model answers them, so
// a wrong number here would still let the two agree with each other: only the datasheet catches it.
#include "common/x86/uart16550.h"

#include <gtest/gtest.h>

#include "common/boot.h"

namespace fb::x86::uart16550 {
namespace {

TEST(X86Uart16550, RegistersSitAtTheDatasheetOffsets) {
    EXPECT_EQ(kData, 0);
    EXPECT_EQ(kDivisorLow, 0);
    EXPECT_EQ(kIer, 1);
    EXPECT_EQ(kDivisorHigh, 1);
    EXPECT_EQ(kIir, 2);
    EXPECT_EQ(kFcr, 2);
    EXPECT_EQ(kLcr, 3);
    EXPECT_EQ(kMcr, 4);
    EXPECT_EQ(kLsr, 5);
    EXPECT_EQ(kMsr, 6);
    EXPECT_EQ(kScr, 7);
    EXPECT_EQ(kRegisters, 8);
    for (uint16_t offset : {kData, kIer, kIir, kLcr, kMcr, kLsr, kMsr, kScr}) EXPECT_LT(offset, kRegisters);
    EXPECT_EQ(boot::kCom1 + kLsr, 0x3fd) << "COM1's line status register";
}

TEST(X86Uart16550, BitsAreTheDatasheetOnes) {
    EXPECT_EQ(kLsrThre, 0x20);
    EXPECT_EQ(kLsrTemt, 0x40);
    EXPECT_EQ(kLcrDlab, 0x80);
    EXPECT_EQ(kLcr8N1, 0x03) << "WLS = 11 (8 bits), STB = 0 (1 stop bit), PEN = 0";
    EXPECT_EQ(kLcr8N1 & kLcrDlab, 0) << "setting the line format leaves the divisor latch";
    EXPECT_EQ(kIirNoInterruptPending, 0x01);
    EXPECT_EQ(kIerNone, 0x00);
    EXPECT_EQ(kFcrEnable | kFcrClearReceive | kFcrClearTransmit | kFcrTrigger14, 0xC7)
        << "FIFOs on and cleared, 14-byte trigger: what every PC console driver writes";
    EXPECT_EQ(kMcrDtr | kMcrRts, 0x03);
}

TEST(X86Uart16550, DivisorComesFromThe1_8432MHzClock) {
    EXPECT_EQ(kMaxBaud, 1843200u / 16);
    EXPECT_EQ(divisor_for(115200), 1);
    EXPECT_EQ(divisor_for(38400), 3);
    EXPECT_EQ(divisor_for(9600), 12);
    EXPECT_EQ(divisor_for(50), 2304) << "the slowest rate needs DLM too";
}

}  // namespace
}  // namespace fb::x86::uart16550
