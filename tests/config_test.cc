// The run-configuration parser the guest uses on its command line (common/config.h).
#include "common/config.h"

#include <gtest/gtest.h>

#include <string>

namespace fb {
namespace {

std::string name_at(const Config& c, size_t i) { return kPatterns[c.pattern_order[i]].name; }

std::string formatted(const Config& c) {
    char buf[4096];
    FixedWriter w(buf, sizeof buf);
    format_config(c, w);
    EXPECT_FALSE(w.overflowed());
    return std::string(buf, w.size());
}

// The host serialises the parsed Config for every boot; what the guest parses back must be it.
class ConfigRoundTrip : public ::testing::TestWithParam<const char*> {};

TEST_P(ConfigRoundTrip, FormatThenParseGivesTheSameConfig) {
    Config c;
    ASSERT_EQ(parse_config(GetParam(), c).message, nullptr);
    std::string line = formatted(c);
    Config back;
    ConfigError e = parse_config(Str(line.c_str()), back);
    ASSERT_EQ(e.message, nullptr) << e.message << " in: " << line;
    EXPECT_TRUE(same_config(c, back)) << GetParam() << " -> " << line;
    EXPECT_EQ(formatted(back), line);  // a fixed point: formatting is canonical
}

INSTANTIATE_TEST_SUITE_P(
    Lines, ConfigRoundTrip,
    ::testing::Values("", "patterns=none pace=idle:100,wbinvd@max:200", "patterns=memtypes footprints=0,1,4K,3M,5G,2xLLC",
                      "patterns=wbinvd,clflush reps=7 warmup=0 min_reps=7 target=0 budget_ms=250 phases=3 from=5 pmu=off",
                      "skip=clwb:hangs-here,wbinvd tsc_khz=2445000 mask_width=4 inject=flood@3",
                      "pace=idle:2000,wbinvd@100:2000,clflush@max:1000 pace_footprint=1xLLC pace_rounds=3 pace_seed=18446744073709551615",
                      "patterns=all patterns=nop footprints=0,4K footprints=1M"));

TEST(Config, SameConfigSeesEveryField) {
    Config a, b;
    ASSERT_EQ(parse_config("", a).message, nullptr);
    ASSERT_EQ(parse_config("", b).message, nullptr);
    EXPECT_TRUE(same_config(a, b));
    for (const char* change : {"reps=30", "warmup=2", "min_reps=4", "target=5", "budget_ms=1", "phases=2", "from=1", "pmu=off",
                               "skip=nop:x", "pace=idle:10", "pace_footprint=8K", "pace_rounds=1", "pace_seed=2", "tsc_khz=1000",
                               "mask_width=2", "inject=hang@0", "patterns=nop", "footprints=0"}) {
        ASSERT_EQ(parse_config(change, b).message, nullptr) << change;
        EXPECT_FALSE(same_config(a, b)) << change;
    }
}

TEST(Config, DefaultsRunEveryPatternOverTheDefaultFootprints) {
    Config c;
    ConfigError e = parse_config("", c);
    ASSERT_EQ(e.message, nullptr);
    size_t flush = 0;
    for (const auto& p : kPatterns) flush += p.group == Group::flush;
    EXPECT_EQ(c.pattern_count, flush);  // "all" is the flush group; "memtypes" selects the rest
    EXPECT_EQ(c.reps, 31u);
    EXPECT_EQ(c.warmup, 3u);
    EXPECT_EQ(c.phases, 1u);
    EXPECT_TRUE(c.pmu);
    ASSERT_GE(c.footprint_count, 2u);
    EXPECT_EQ(c.footprints[0].bytes, 0u);
    // The defaults reach at least twice the LLC.
    EXPECT_EQ(c.footprints[c.footprint_count - 1].llc_times, 2u);
}

TEST(Config, ParsesTheDocumentedExample) {
    Config c;
    ConfigError e = parse_config("patterns=wbinvd,clflush footprints=4K,1M,64M,2xLLC reps=7 warmup=2 phases=3 pmu=off", c);
    ASSERT_EQ(e.message, nullptr) << e.message;
    ASSERT_EQ(c.pattern_count, 2u);
    EXPECT_EQ(name_at(c, 0), "wbinvd");
    EXPECT_EQ(name_at(c, 1), "clflush");
    ASSERT_EQ(c.footprint_count, 4u);
    EXPECT_EQ(c.footprints[0].bytes, 4096u);
    EXPECT_EQ(c.footprints[1].bytes, 1u << 20);
    EXPECT_EQ(c.footprints[2].bytes, 64u << 20);
    EXPECT_EQ(c.footprints[3].llc_times, 2u);
    EXPECT_EQ(c.reps, 7u);
    EXPECT_EQ(c.warmup, 2u);
    EXPECT_EQ(c.phases, 3u);
    EXPECT_FALSE(c.pmu);
}

TEST(Config, MemtypesSelectsTheMemoryTypePatterns) {
    Config c;
    ASSERT_EQ(parse_config("patterns=memtypes", c).message, nullptr);
    ASSERT_GT(c.pattern_count, 0u);
    for (size_t i = 0; i < c.pattern_count; ++i) EXPECT_EQ(kPatterns[c.pattern_order[i]].group, Group::memtype);
}

TEST(Config, IgnoresTheImagePathGrubPrepends) {
    Config c;
    ConfigError e = parse_config("/boot/flushbench-guest.elf reps=5", c);
    ASSERT_EQ(e.message, nullptr);
    EXPECT_EQ(c.reps, 5u);
}

TEST(Config, SkipRecordsWhy) {
    Config c;
    ASSERT_EQ(parse_config("skip=clwb:hangs-on-kvm_pvm,wbnoinvd", c).message, nullptr);
    size_t clwb = size_t(find_pattern("clwb") - kPatterns), wbnoinvd = size_t(find_pattern("wbnoinvd") - kPatterns);
    EXPECT_TRUE(c.skipped[clwb]);
    EXPECT_STREQ(c.skip_reason[clwb], "hangs-on-kvm_pvm");
    EXPECT_TRUE(c.skipped[wbnoinvd]);
    EXPECT_STREQ(c.skip_reason[wbnoinvd], "excluded");
}

struct Bad {
    std::string cmdline;  // may hold NUL bytes: the guest's command line is untrusted bytes
    std::string token;
};

class ConfigRejects : public ::testing::TestWithParam<Bad> {};

TEST_P(ConfigRejects, WithAMessageAndTheOffendingToken) {
    Config c;
    ConfigError e = parse_config(Str(GetParam().cmdline.data(), GetParam().cmdline.size()), c);
    ASSERT_NE(e.message, nullptr) << GetParam().cmdline;
    EXPECT_EQ(std::string(e.token.p, e.token.n), GetParam().token);
}

INSTANTIATE_TEST_SUITE_P(BadInput, ConfigRejects,
                         ::testing::Values(Bad{"patterns=wbinvd,bogus", "bogus"}, Bad{"patterns=nop,nop", "nop"},
                                           Bad{"footprints=4X", "4X"}, Bad{"footprints=0xLLC", "0xLLC"},
                                           Bad{"footprints=99999999999999999999", "99999999999999999999"},
                                           Bad{"reps=0", "0"}, Bad{"reps=100001", "100001"},
                                           Bad{"warmup=-1", "-1"}, Bad{"phases=9", "9"},
                                           Bad{"colour=blue", "colour=blue"}, Bad{"reps=3 stray", "stray"},
                                           Bad{"reps=", "reps="}, Bad{"pmu=maybe", "pmu=maybe"},
                                           Bad{"skip=nosuch", "nosuch"}, Bad{std::string("skip=clwb:a\0b", 13), std::string("clwb:a\0b", 8)}, Bad{"pace=wbinvd:2000", "wbinvd:2000"},
                                           Bad{"pace=wbinvd@0:2000", "wbinvd@0:2000"}, Bad{"pace=idle:5", "idle:5"},
                                           Bad{"pace=wbinvd@fast:100", "wbinvd@fast:100"}, Bad{"pace=nosuch@10:100", "nosuch@10:100"},
                                           Bad{"pace_footprint=4X", "pace_footprint=4X"}, Bad{"tsc_khz=5", "tsc_khz=5"}),
                         [](const ::testing::TestParamInfo<Bad>& param) { return std::to_string(param.index); });

TEST(Config, ResolvesLlcMultiples) {
    bool ok;
    EXPECT_EQ(resolve_footprint({0, 2}, 32u << 20, ok), 64u << 20);
    EXPECT_TRUE(ok);
    resolve_footprint({0, 2}, 0, ok);
    EXPECT_FALSE(ok);  // LLC unknown: the guest reports the cell unsupported instead of guessing
    EXPECT_EQ(resolve_footprint({4096, 0}, 0, ok), 4096u);
    EXPECT_TRUE(ok);
}

TEST(Config, PaceStepsFollowTheCellsOfEveryPhase) {
    Config c;
    ConfigError e = parse_config("patterns=wbinvd footprints=4K,1M pace=idle:2000,wbinvd@100:1500,clflush@max:10 "
                                 "pace_footprint=1xLLC tsc_khz=2445000 phases=3", c);
    ASSERT_EQ(e.message, nullptr) << e.message;
    ASSERT_EQ(c.pace_count, 3u);
    EXPECT_TRUE(c.pace[0].idle);
    EXPECT_EQ(c.pace[0].ms, 2000u);
    EXPECT_STREQ(kPatterns[c.pace[1].pattern].name, "wbinvd");
    EXPECT_EQ(c.pace[1].rate_hz, 100u);
    EXPECT_FALSE(c.pace[1].idle);
    EXPECT_EQ(c.pace[2].rate_hz, 0u);  // max: back to back
    EXPECT_EQ(c.pace[2].ms, 10u);
    EXPECT_EQ(c.pace_footprint.llc_times, 1u);
    EXPECT_EQ(c.tsc_khz, 2445000u);
    EXPECT_EQ(cells_per_phase(c), 2u + 3u);  // wbinvd at two footprints, then three paced steps
}

TEST(Config, PatternsNoneLeavesOnlyThePacedSteps) {
    Config c;
    ASSERT_EQ(parse_config("patterns=none pace=idle:100", c).message, nullptr);
    EXPECT_EQ(c.pattern_count, 0u);
    EXPECT_EQ(cells_per_phase(c), 1u);
    ASSERT_EQ(parse_config("patterns=none", c).message, nullptr);
    EXPECT_EQ(cells_per_phase(c), 0u);  // the host refuses to boot for nothing
}

TEST(Patterns, NamesAreUniqueAndFindable) {
    for (size_t i = 0; i < kPatternCount; ++i) {
        EXPECT_EQ(find_pattern(kPatterns[i].name), &kPatterns[i]);
        for (size_t j = i + 1; j < kPatternCount; ++j) EXPECT_STRNE(kPatterns[i].name, kPatterns[j].name);
    }
    EXPECT_EQ(find_pattern("nosuch"), nullptr);
}

// Rounds: every active step between two idle steps, each round in its own shuffled order, the same
// for the same seed (host and guest both expand the plan).
TEST(Config, PaceRoundsInterleaveIdleStepsAndShuffleTheActiveOnes) {
    Config c;
    ASSERT_EQ(parse_config("patterns=none pace=idle:300,wbinvd@100:300,wbinvd@max:300,clflush@max:300 pace_rounds=3 pace_seed=7", c)
                  .message,
              nullptr);
    PacedSlot slots[kMaxPacedSlots];
    uint32_t n = pace_schedule(c, slots);
    ASSERT_EQ(n, 3u * (2 * 3 + 1));
    EXPECT_EQ(cells_per_phase(c), n);
    std::string orders[3];
    for (uint32_t i = 0; i < n; ++i) {
        const PacedSlot& s = slots[i];
        EXPECT_EQ(s.round, int(i / 7));
        EXPECT_EQ(s.slot, i % 7);
        EXPECT_EQ(c.pace[s.step].idle, s.slot % 2 == 0) << "idle, active, idle, ... within a round";
        if (!c.pace[s.step].idle) orders[s.round] += char('0' + s.step);
    }
    for (const auto& o : orders) EXPECT_EQ(std::string(o).size(), 3u);
    EXPECT_FALSE(orders[0] == orders[1] && orders[1] == orders[2]) << "shuffled per round";
    PacedSlot again[kMaxPacedSlots];
    ASSERT_EQ(pace_schedule(c, again), n);
    for (uint32_t i = 0; i < n; ++i) EXPECT_EQ(again[i].step, slots[i].step);
    ASSERT_EQ(parse_config("patterns=none pace=idle:300,wbinvd@100:300", c).message, nullptr);
    EXPECT_EQ(pace_schedule(c, slots), 2u) << "no rounds: the steps once, as listed";
    EXPECT_EQ(slots[1].round, -1);
    EXPECT_NE(parse_config("pace_rounds=17", c).message, nullptr);
}

}  // namespace
}  // namespace fb
