// Matrix files (host/matrix.h): the shipped ones parse and expand as documented; every mistake in
// a hand-written one names file:line:column and, where one is close, the word that was meant.
#include "host/run/matrix.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace fb {
namespace {

std::string shipped(const char* name) { return std::string(FLUSHBENCH_SOURCE_DIR) + "/bench/matrices/" + name + ".toml"; }

// The one-line message parse_matrix throws for `text`, or "" when it parses.
std::string error_of(const std::string& text) {
    try {
        parse_matrix(text, "m.toml");
    } catch (const MatrixError& e) {
        return e.what();
    }
    return "";
}

bool has(const std::vector<std::string>& v, const std::string& s) { return std::find(v.begin(), v.end(), s) != v.end(); }

TEST(Matrix, ShippedMatricesParse) {
    for (const char* name : {"quick", "default", "full"}) {
        SCOPED_TRACE(name);
        Matrix m = load_matrix(shipped(name));
        EXPECT_EQ(m.name, name);
        EXPECT_FALSE(m.description.empty());
        EXPECT_FALSE(m.expand().empty());
        EXPECT_EQ(find_matrix(name), shipped(name));
    }
}

TEST(Matrix, QuickIsTheQuickFlag) {
    auto runs = load_matrix(shipped("quick")).expand();
    ASSERT_EQ(runs.size(), 1u);
    const RunOptions& o = runs[0].options;
    EXPECT_EQ(o.backend, Backend::automatic);
    EXPECT_EQ(o.mode, Mode::coherent);
    EXPECT_EQ(o.patterns, "all");
    EXPECT_EQ(o.footprints, "0,4K,64K");
    EXPECT_EQ(o.reps, 11u);
    EXPECT_EQ(o.warmup, 2u);
    EXPECT_EQ(o.cell_timeout.count(), 5);
}

// Found by the matrix fuzzer: Debian's toml++ hits __builtin_unreachable on U+00A1 in whitespace.
TEST(Matrix, NonAsciiIsRefusedWithItsPosition) {
    try {
        parse_matrix("name = \"x\"\nreps =\xc2\xa1 3\n", "m.toml");
        FAIL() << "accepted";
    } catch (const MatrixError& e) {
        EXPECT_NE(std::string(e.what()).find("m.toml:2:7: non-ASCII"), std::string::npos) << e.what();
    }
}

TEST(Matrix, DefaultSplitsWholeCacheAndPerLinePatterns) {
    Matrix m = load_matrix(shipped("default"));
    auto runs = m.expand();
    // Best guest backend: whole-cache, per-line, memory types, neighbour; native: all but the
    // neighbour (paced steps need a guest).
    ASSERT_EQ(runs.size(), 7u);
    EXPECT_EQ(runs[0].options.backend, Backend::automatic);
    EXPECT_EQ(runs[4].options.backend, Backend::native);
    EXPECT_EQ(runs[2].options.patterns, "memtypes");
    EXPECT_EQ(runs[3].options.neighbour, "auto");
    EXPECT_EQ(runs[3].options.patterns, "none");
    EXPECT_EQ(runs[3].options.pace, "idle:300,wbinvd@1000:300,wbinvd@max:300,clflush@max:300");
    EXPECT_EQ(runs[3].options.pace_rounds, 3u) << "a neighbour compares interleaved rounds";
    EXPECT_EQ(runs[0].options.patterns, "nop,cpuid,pio,dirty,wbinvd,wbnoinvd");
    EXPECT_EQ(runs[0].options.footprints, "0,4K,64K,1M");
    EXPECT_EQ(runs[1].options.footprints, "0,4K,64K");
    EXPECT_EQ(runs[0].options.reps, 31u);
    EXPECT_EQ(runs[0].options.min_reps, 5u);
    EXPECT_EQ(runs[0].options.budget_ms, 150u) << "the budget that keeps the default matrix under a minute";
    EXPECT_EQ(runs[0].options.target_permille, 10u);
    EXPECT_TRUE(has(runs[0].counters, "cycles"));
    auto args = runs[1].cli_args();
    EXPECT_TRUE(has(args, "--patterns") && has(args, "clflush,clflushopt,clwb")) << ::testing::PrintToString(args);
}

TEST(Matrix, NeighbourSetsCarryTheirPaceAndAreCheckedByTheGuestParser) {
    Matrix m = parse_matrix(R"(
backends = ["kvm", "native"]
[[set]]
name = "n"
neighbour = 1
pace = ["idle:500", "wbinvd@100:500"]
pace_footprint = "64K"
slice_ms = 5
)", "n.toml");
    auto runs = m.expand();
    ASSERT_EQ(runs.size(), 1u);  // no native run of paced steps
    EXPECT_EQ(runs[0].options.neighbour, "1");
    EXPECT_EQ(runs[0].options.pace, "idle:500,wbinvd@100:500");
    EXPECT_EQ(runs[0].options.pace_footprint, "64K");
    EXPECT_EQ(runs[0].options.slice_ms, 5u);
    auto args = runs[0].cli_args();
    EXPECT_TRUE(has(args, "--neighbour") && has(args, "--pace")) << ::testing::PrintToString(args);
    try {
        parse_matrix("[[set]]\nneighbour = \"auto\"\npace = [\"idle:500\", \"wbinvd@fast:500\"]\n", "bad.toml");
        FAIL() << "accepted";
    } catch (const MatrixError& e) {
        EXPECT_NE(std::string(e.what()).find("bad.toml:3:"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("wbinvd@fast:500"), std::string::npos) << e.what();
    }
}

TEST(Matrix, FullRunsBothModesInOneVmPerPlacement) {
    Matrix m = load_matrix(shipped("full"));
    auto runs = m.expand();
    ASSERT_EQ(runs.size(), 6u);  // 3 placements x 2 sets, modes merged into A/B/A
    for (const auto& r : runs) {
        EXPECT_EQ(r.options.mode, Mode::both);
        EXPECT_EQ(r.options.reps, 101u);
        EXPECT_TRUE(r.options.footprints.find("2xLLC") != std::string::npos);
    }
    EXPECT_EQ(runs[0].options.vcpu_cpu, 2);
    EXPECT_EQ(runs[2].options.dirty_mask, 2u);
    EXPECT_EQ(runs[2].label, "whole-cache kvm both mask2");
    EXPECT_EQ(runs[4].options.dirty_mask, 4u);
    EXPECT_EQ(runs[4].options.variant, "mask4");
}

TEST(Matrix, DirtyMaskPlacementsNameTheWidth) {
    Matrix m = parse_matrix("backends = [\"kvm\"]\n[[placement]]\ndirty_mask = 3\n[[placement]]\ncpu = 1\n", "m.toml");
    auto runs = m.expand();
    ASSERT_EQ(runs.size(), 2u);
    EXPECT_EQ(runs[0].options.dirty_mask, 3u);
    EXPECT_EQ(runs[0].options.variant, "mask3");
    auto args = runs[0].cli_args();
    EXPECT_NE(std::find(args.begin(), args.end(), "--dirty-mask"), args.end());
    std::string e;
    try {
        parse_matrix("backends = [\"qemu-tcg\"]\n[[placement]]\ndirty_mask = 2\n", "m.toml");
    } catch (const MatrixError& x) {
        e = x.what();
    }
    EXPECT_NE(e.find("a placement with dirty_mask needs backends = [\"kvm\"]"), std::string::npos) << e;
}

TEST(Matrix, DefaultsAndOverridesOfASet) {
    Matrix m = parse_matrix(R"(
patterns = ["wbinvd"]
footprints = ["4K", 65536]
reps = 7
skip = { clwb = "hangs-here" }
[[placement]]
cpu = 1
[[placement]]
migrate_ms = 5
[[set]]
[[set]]
name = "big"
footprints = ["2xLLC"]
reps = 3
)", "m.toml");
    auto runs = m.expand();
    ASSERT_EQ(runs.size(), 4u);
    EXPECT_EQ(runs[0].options.backend, Backend::automatic);
    EXPECT_EQ(runs[0].options.footprints, "4K,65536");
    EXPECT_EQ(runs[0].options.reps, 7u);
    EXPECT_EQ(runs[0].options.skip, "clwb:hangs-here");
    EXPECT_EQ(runs[0].options.vcpu_cpu, 1);
    EXPECT_EQ(runs[1].options.patterns, "wbinvd");  // inherited
    EXPECT_EQ(runs[1].options.reps, 3u);
    EXPECT_EQ(runs[1].label, "big auto coherent cpu1");
    EXPECT_EQ(runs[2].options.migrate_ms, 5u);
    EXPECT_EQ(runs[2].label, "set1 auto coherent migrate-5ms");
}

TEST(Matrix, UnknownKeySuggestsTheNearestAndNamesTheLine) {
    EXPECT_EQ(error_of("reps = 5\nfootprint = [\"4K\"]\n"), "m.toml:2:1: unknown key 'footprint' (did you mean 'footprints'?)");
    EXPECT_EQ(error_of("[[placement]]\ncpus = 1\n"), "m.toml:2:1: unknown key in [[placement]] 'cpus' (did you mean 'cpu'?)");
    EXPECT_EQ(error_of("[[sets]]\n"), "m.toml:1:3: unknown key 'sets' (did you mean 'set'?)");
    // Nothing close: list what is valid instead of guessing.
    std::string e = error_of("frobnicate = 1\n");
    EXPECT_NE(e.find("m.toml:1:1: unknown key 'frobnicate' (valid: name, description, backends"), std::string::npos) << e;
}

TEST(Matrix, WrongTypesAreNamed) {
    EXPECT_EQ(error_of("reps = \"31\"\n"), "m.toml:1:8: 'reps' must be an integer, not a string");
    EXPECT_EQ(error_of("patterns = \"wbinvd\"\n"), "m.toml:1:12: 'patterns' must be an array, e.g. patterns = [\"...\"], not a string");
    EXPECT_EQ(error_of("footprints = [1.5]\n"), "m.toml:1:15: a footprint is a string like \"4K\" or \"2xLLC\", or an integer of bytes, not a floating-point number");
    EXPECT_NE(error_of("[placement]\ncpu = 1\n").find("m.toml:1:1: 'placement' must be an array of tables"), std::string::npos);
}

TEST(Matrix, OutOfRangeValuesAreRejected) {
    EXPECT_EQ(error_of("\n\nreps = 0\n"), "m.toml:3:8: 'reps' = 0 is out of range: use 1 to 100000 (measured repetitions per cell)");
    EXPECT_NE(error_of("reps = 100001\n").find("out of range"), std::string::npos);
    EXPECT_NE(error_of("cell_timeout = 0\n").find("'cell_timeout' = 0 is out of range"), std::string::npos);
    EXPECT_NE(error_of("[[placement]]\nmigrate_ms = 0\n").find("m.toml:2:14: 'migrate_ms' = 0"), std::string::npos);
    EXPECT_NE(error_of("footprints = [\"4Q\"]\n").find("m.toml:1:15: bad footprint '4Q'"), std::string::npos);
    EXPECT_NE(error_of("footprints = [\"4K\", \"4096\"]\n").find("footprint '4096' listed twice"), std::string::npos);
}

TEST(Matrix, UnknownWordsInValues) {
    EXPECT_EQ(error_of("patterns = [\"wbinvd\", \"clfush\"]\n"), "m.toml:1:23: unknown pattern 'clfush' (did you mean 'clflush'?)");
    EXPECT_EQ(error_of("backends = [\"qemu-kv\"]\n"), "m.toml:1:13: unknown backend 'qemu-kv' (did you mean 'qemu-kvm'?)");
    EXPECT_EQ(error_of("modes = [\"noncoherant\"]\n"), "m.toml:1:10: unknown mode 'noncoherant' (did you mean 'noncoherent'?)");
    EXPECT_EQ(error_of("skip = { clwbb = \"x\" }\n"), "m.toml:1:10: unknown pattern 'clwbb' (did you mean 'clwb'?)");
    EXPECT_NE(error_of("patterns = [\"all\", \"nop\"]\n").find("'all' with other patterns"), std::string::npos);
    EXPECT_NE(error_of("modes = [\"both\", \"coherent\"]\n").find("'both' already runs"), std::string::npos);
}

TEST(Matrix, MigrationNeedsOurVmm) {
    std::string e = error_of("backends = [\"qemu-kvm\"]\n[[placement]]\nmigrate_ms = 1\n");
    EXPECT_NE(e.find("m.toml:2:1: a placement with migrate_ms needs backends = [\"kvm\"]"), std::string::npos) << e;
}

TEST(Matrix, TomlSyntaxErrorsCarryThePosition) {
    std::string e = error_of("reps = 5\nwarmup = = 3\n");
    EXPECT_EQ(e.rfind("m.toml:2:", 0), 0u) << e;
}

TEST(Matrix, FindMatrixSuggestsAShippedName) {
    try {
        find_matrix("defualt");
        FAIL() << "no error";
    } catch (const MatrixError& e) {
        EXPECT_NE(std::string(e.what()).find("did you mean 'default'?"), std::string::npos) << e.what();
    }
}

TEST(Matrix, EditDistance) {
    EXPECT_EQ(edit_distance("footprint", "footprints"), 1u);
    EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
    EXPECT_EQ(nearest("warmpu", {"reps", "warmup"}), "warmup");
    EXPECT_EQ(nearest("xyz", {"reps", "warmup"}), "");
}

}  // namespace
}  // namespace fb
