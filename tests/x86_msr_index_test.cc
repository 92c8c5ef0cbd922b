// common/x86/msr_index.h on the host: the MSR numbers against Intel SDM vol. 4 and AMD APM vol. 2,
// and the array accessors against the layouts those manuals give.
#include "common/x86/msr_index.h"

#include <gtest/gtest.h>

#include <set>

namespace fb::x86 {
namespace {

TEST(X86MsrIndex, NumbersAreTheArchitecturalOnes) {
    EXPECT_EQ(uint32_t(Msr::efer), 0xC0000080u);
    EXPECT_EQ(uint32_t(Msr::pat), 0x277u);
    EXPECT_EQ(uint32_t(Msr::mtrr_def_type), 0x2FFu);
    EXPECT_EQ(uint32_t(Msr::perf_capabilities), 0x345u);
    EXPECT_EQ(uint32_t(Msr::perfevtsel0), 0x186u);
    EXPECT_EQ(uint32_t(Msr::pmc0), 0xC1u);
    EXPECT_EQ(uint32_t(Msr::perf_global_ctrl), 0x38Fu);
    EXPECT_EQ(uint32_t(Msr::amd_perf_ctl_legacy), 0xC0010000u);
    EXPECT_EQ(uint32_t(Msr::amd_perf_ctr_legacy), 0xC0010004u);
    EXPECT_EQ(uint32_t(Msr::amd_perf_ctl_core), 0xC0010200u);
}

TEST(X86MsrIndex, IntelCountersAreConsecutive) {
    EXPECT_EQ(intel_perfevtsel(0), Msr::perfevtsel0);
    EXPECT_EQ(uint32_t(intel_perfevtsel(3)), 0x189u);  // IA32_PERFEVTSEL3
    EXPECT_EQ(intel_pmc(0), Msr::pmc0);
    EXPECT_EQ(uint32_t(intel_pmc(3)), 0xC4u);  // IA32_PMC3
}

TEST(X86MsrIndex, AmdLegacyBlockIsFourControlsThenFourCounters) {
    EXPECT_EQ(uint32_t(amd_perf_ctl(false, 0)), 0xC0010000u);
    EXPECT_EQ(uint32_t(amd_perf_ctl(false, 3)), 0xC0010003u);
    EXPECT_EQ(uint32_t(amd_perf_ctr(false, 0)), 0xC0010004u);
    EXPECT_EQ(uint32_t(amd_perf_ctr(false, 3)), 0xC0010007u);
}

TEST(X86MsrIndex, AmdPerfCtrExtCoreInterleavesSixPairs) {
    std::set<uint32_t> seen;
    for (uint32_t i = 0; i < 6; ++i) {
        EXPECT_EQ(uint32_t(amd_perf_ctl(true, i)), 0xC0010200u + 2 * i);
        EXPECT_EQ(uint32_t(amd_perf_ctr(true, i)), uint32_t(amd_perf_ctl(true, i)) + 1);
        EXPECT_TRUE(seen.insert(uint32_t(amd_perf_ctl(true, i))).second);
        EXPECT_TRUE(seen.insert(uint32_t(amd_perf_ctr(true, i))).second);
    }
    EXPECT_EQ(uint32_t(amd_perf_ctr(true, 5)), 0xC001020Bu);  // PERF_CTR5, the last
}

}  // namespace
}  // namespace fb::x86
