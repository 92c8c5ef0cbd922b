// common/x86/cpu_features.h and cpuid.h on the host, the way Hedron tests its kernel headers: the
// header first (so a missing include shows here), then the table against the SDM's and APM's
// documented bit positions and its own invariants, then against this machine: what CPUID says to
// user space and what the kernel prints in /proc/cpuinfo.
#include "common/x86/cpu_features.h"

#include <gtest/gtest.h>

#include <iterator>
#include <set>
#include <string>
#include <tuple>

#include "common/wire.h"
#include "host/env/cpuinfo.h"

namespace fb::x86 {
namespace {

TEST(X86CpuFeatures, BitsAreWhereTheManualsPutThem) {
    struct Documented {
        Feature feature;
        uint32_t leaf, subleaf;
        CpuidReg reg;
        uint8_t bit;
    };
    // Intel SDM vol. 2A, CPUID; AMD APM vol. 3, appendix E. Written out again on purpose: a slip
    // in either copy fails here.
    const Documented documented[] = {
        {Feature::clflush, 0x1, 0, CpuidReg::edx, 19},
        {Feature::clflushopt, 0x7, 0, CpuidReg::ebx, 23},
        {Feature::clwb, 0x7, 0, CpuidReg::ebx, 24},
        {Feature::wbnoinvd, 0x80000008, 0, CpuidReg::ebx, 9},
        {Feature::rdtscp, 0x80000001, 0, CpuidReg::edx, 27},
        {Feature::invtsc, 0x80000007, 0, CpuidReg::edx, 8},
        {Feature::hypervisor, 0x1, 0, CpuidReg::ecx, 31},
        {Feature::pdcm, 0x1, 0, CpuidReg::ecx, 15},
        {Feature::perfctr_core, 0x80000001, 0, CpuidReg::ecx, 23},
        {Feature::self_snoop, 0x1, 0, CpuidReg::edx, 27},
        {Feature::mtrr, 0x1, 0, CpuidReg::edx, 12},
        {Feature::topoext, 0x80000001, 0, CpuidReg::ecx, 22},
    };
    ASSERT_EQ(std::size(documented), std::size(kFeatureBits)) << "a table line without a documented position here";
    for (const Documented& d : documented) {
        const FeatureBit* b = feature_bit(d.feature);
        ASSERT_NE(b, nullptr) << int(d.feature);
        EXPECT_EQ(b->leaf, d.leaf) << b->name;
        EXPECT_EQ(b->subleaf, d.subleaf) << b->name;
        EXPECT_EQ(b->reg, d.reg) << b->name;
        EXPECT_EQ(b->bit, d.bit) << b->name;
    }
}

TEST(X86CpuFeatures, TableIsOneLinePerFeature) {
    std::set<int> features;
    std::set<std::string> names, flags;
    std::set<std::tuple<uint32_t, uint32_t, CpuidReg, uint8_t>> positions;
    for (const FeatureBit& b : kFeatureBits) {
        EXPECT_NE(b.feature, Feature::none) << "none needs no bit";
        EXPECT_TRUE(features.insert(int(b.feature)).second) << b.name << " has two lines";
        EXPECT_TRUE(names.insert(b.name).second) << "two lines are named " << b.name;
        EXPECT_TRUE(positions.insert({b.leaf, b.subleaf, b.reg, b.bit}).second) << b.name << " repeats a bit";
        if (b.cpuinfo) {
            EXPECT_TRUE(flags.insert(b.cpuinfo).second) << "two lines claim the flag " << b.cpuinfo;
        }
        EXPECT_LT(b.bit, 32) << b.name << ": CPUID registers are 32 bits";
        EXPECT_TRUE(range_of(b.leaf) == kBasicLeaves || range_of(b.leaf) == kExtendedLeaves)
            << b.name << ": hypervisor leaves exist only under a hypervisor, so no feature may live there";
        EXPECT_EQ(feature_bit(b.feature), &b);
    }
}

TEST(X86CpuFeatures, NamesAreTheOnesResultsFilesCarry) {
    // Results files, the guest's hello record and "cpu-lacks-<name>" carry these spellings:
    // renaming one breaks reading older results.
    EXPECT_STREQ(feature_name(Feature::none), "none");
    EXPECT_STREQ(feature_name(Feature::clflush), "clflush");
    EXPECT_STREQ(feature_name(Feature::clflushopt), "clflushopt");
    EXPECT_STREQ(feature_name(Feature::clwb), "clwb");
    EXPECT_STREQ(feature_name(Feature::wbnoinvd), "wbnoinvd");
    EXPECT_STREQ(feature_name(Feature::rdtscp), "rdtscp");
    EXPECT_STREQ(feature_name(Feature::invtsc), "invtsc");
    EXPECT_STREQ(feature_name(Feature::hypervisor), "hypervisor");
    EXPECT_STREQ(feature_name(Feature::pdcm), "pdcm");
    EXPECT_STREQ(feature_name(Feature::perfctr_core), "perfctr_core");
    EXPECT_STREQ(feature_name(Feature::self_snoop), "ss");
    // A name travels as a wire value inside a comma-separated list.
    for (const FeatureBit& b : kFeatureBits)
        for (const char* c = b.name; *c; ++c) {
            EXPECT_TRUE(wire::is_value_char(*c)) << b.name;
            EXPECT_NE(*c, ',') << b.name;
        }
}

TEST(X86CpuFeatures, AnAnswerIsReadAtTheLinesRegisterAndBit) {
    const FeatureBit& clflushopt = *feature_bit(Feature::clflushopt);
    const FeatureBit& clwb = *feature_bit(Feature::clwb);
    CpuidRegs leaf7{};
    leaf7.ebx = 1u << 23;
    EXPECT_TRUE(feature_in(clflushopt, leaf7));
    EXPECT_FALSE(feature_in(clwb, leaf7));
    leaf7 = {~0u, 0, ~0u, ~0u};  // the bit, in any other register, does not count
    EXPECT_FALSE(feature_in(clflushopt, leaf7));
    const FeatureBit& hypervisor = *feature_bit(Feature::hypervisor);
    EXPECT_TRUE(feature_in(hypervisor, CpuidRegs{0, 0, 0x80000000u, 0}));

    CpuidRegs r{1, 2, 3, 4};
    EXPECT_EQ(register_of(r, CpuidReg::eax), 1u);
    EXPECT_EQ(register_of(r, CpuidReg::ebx), 2u);
    EXPECT_EQ(register_of(r, CpuidReg::ecx), 3u);
    EXPECT_EQ(register_of(r, CpuidReg::edx), 4u);
}

TEST(X86CpuFeatures, LeavesBelongToTheirRange) {
    EXPECT_EQ(range_of(0x7), kBasicLeaves);
    EXPECT_EQ(range_of(0x40000010), kHypervisorLeaves);
    EXPECT_EQ(range_of(0x80000008), kExtendedLeaves);
    // This CPU: leaves 1 and 0x80000001 exist on every x86-64 CPU (long mode itself is
    // CPUID.80000001H:EDX[29]); a leaf past its range's top does not.
    EXPECT_TRUE(leaf_exists(1));
    EXPECT_TRUE(leaf_exists(0x80000001));
    EXPECT_TRUE(cpuid(0x80000001).edx >> 29 & 1);
    EXPECT_FALSE(leaf_exists(0x3fffffff));
    EXPECT_FALSE(leaf_exists(0x8fffffff));
    EXPECT_TRUE(has(Feature::none));
    EXPECT_TRUE(has(Feature::clflush)) << "every x86-64 CPU has CLFLUSH (SSE2 requires it)";
}

// The kernel builds /proc/cpuinfo's flags from CPUID, so the flag a table line names must be
// there exactly when the line's bit is set. Linux may leave out a flag it does not know (an
// older kernel) or clears (errata, clearcpuid=), so in general only "flag => bit" holds; for
// the flags every kernel since 4.x prints straight from CPUID, both directions must.
TEST(X86CpuFeatures, KernelFlagsAgreeWithCpuidOnThisMachine) {
    CpuInfo ci = read_cpuinfo();
    if (!ci.count("flags")) GTEST_SKIP() << "/proc/cpuinfo has no flags line to compare with";
    const std::set<Feature> verbatim = {Feature::clflush, Feature::clflushopt, Feature::clwb,
                                        Feature::rdtscp,  Feature::hypervisor, Feature::mtrr};
    int compared = 0;
    for (const FeatureBit& b : kFeatureBits) {
        if (!b.cpuinfo) continue;
        ++compared;
        bool cpu = has(b.feature), kernel = cpuinfo_has(ci, b.feature);
        if (kernel) {
            EXPECT_TRUE(cpu) << b.cpuinfo << " is in /proc/cpuinfo but CPUID leaf " << std::hex << b.leaf << " bit "
                             << std::dec << int(b.bit) << " is clear: the table's position is wrong";
        }
        if (verbatim.count(b.feature)) {
            EXPECT_EQ(cpu, kernel) << b.name << ": CPUID says " << cpu << ", /proc/cpuinfo says " << kernel;
        }
    }
    EXPECT_GE(compared, 6);
}

TEST(X86CpuFeatures, CpuinfoFlagsAreMatchedWhole) {
    CpuInfo ci = {{"flags", "fpu clflushopt hypervisor_x nonstop_tsc"}};
    EXPECT_TRUE(cpuinfo_has(ci, Feature::clflushopt));
    EXPECT_FALSE(cpuinfo_has(ci, Feature::clflush)) << "a prefix of another flag";
    EXPECT_FALSE(cpuinfo_has(ci, Feature::hypervisor)) << "a flag that only starts with the name";
    EXPECT_TRUE(cpuinfo_has(ci, Feature::invtsc)) << "invtsc is Linux's nonstop_tsc";
    EXPECT_FALSE(cpuinfo_has(ci, Feature::none));
    EXPECT_FALSE(cpuinfo_has(CpuInfo{}, Feature::clflushopt));
}

}  // namespace
}  // namespace fb::x86
