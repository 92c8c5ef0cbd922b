// The option table (host/run/options.h): one row per `flushbench run` option drives the CLI, the
// matrix overrides, the journal's JSON and a matrix run's command line.
#include "host/run/options.h"

#include <gtest/gtest.h>

#include <CLI/CLI.hpp>

#include <set>
#include <string>

#include "host/run/options_cli.h"

namespace fb {
namespace {

TEST(RunOptionNames, EveryBackendAndModeRoundTripsAndUnknownNamesAreRefused) {
    for (Backend b : all_backends()) EXPECT_EQ(backend_from_string(to_string(b)), b) << to_string(b);
    for (Mode m : all_modes()) EXPECT_EQ(mode_from_string(to_string(m)), m) << to_string(m);
    EXPECT_EQ(to_string(Backend::qemu_tcg), "qemu-tcg");
    EXPECT_EQ(to_string(Backend::automatic), "auto");
    EXPECT_FALSE(backend_from_string("qemu_tcg"));
    EXPECT_FALSE(mode_from_string("Coherent"));
}

TEST(RunOptionTable, FlagsAndKeysAreUnique) {
    std::set<std::string> flags, keys;
    for (const auto& row : run_option_table()) {
        EXPECT_TRUE(keys.insert(row.key).second) << row.key;
        if (row.flag) {
            EXPECT_TRUE(flags.insert(row.flag).second) << row.flag;
        }
        EXPECT_TRUE(row.help && *row.help) << row.key;
    }
}

RunOptions changed_everywhere() {
    RunOptions o;
    o.backend = Backend::qemu_kvm, o.mode = Mode::both, o.vfio = "/dev/vfio/7", o.vfio_baseline = "/dev/vfio/8";
    o.vfio_pci = {"0000:01:00.0", "0000:02:00.0"}, o.machine = "q35", o.patterns = "wbinvd", o.footprints = "4K,2xLLC";
    o.skip = "clwb:x", o.reps = 9, o.warmup = 1, o.min_reps = 9, o.target_permille = 25, o.budget_ms = 77, o.vcpu_cpu = 1;
    o.migrate_ms = 5, o.dirty_mask = 2, o.mem_mib = 512, o.cell_timeout = std::chrono::seconds(42), o.image = "g.elf";
    o.out = "r.json", o.inject = "hang@3", o.events = {"cycles"}, o.variant = "mask2", o.pace = "idle:100";
    o.pace_footprint = "8K", o.pace_rounds = 2, o.neighbour = "1", o.slice_ms = 5, o.neighbour_bytes = 4096;
    return o;
}

TEST(RunOptionTable, TheJournalKeepsEveryOption) {
    RunOptions o = changed_everywhere();
    nlohmann::json j = to_json(o);
    EXPECT_EQ(j["backend"], "qemu-kvm");
    EXPECT_EQ(j["target_permille"], 25);
    EXPECT_EQ(j["cell_timeout_s"], 42);
    EXPECT_EQ(to_json(run_options_from_json(j)), j);
    EXPECT_EQ(run_options_from_json(j).cell_timeout.count(), 42);
}

TEST(RunOptionTable, OlderJournalsKeepTheBehaviourTheyRanWith) {
    nlohmann::json old = {{"backend", "kvm"}, {"mode", "coherent"}, {"patterns", "all"}, {"footprints", "0,4K"}, {"reps", 13}, {"warmup", 2}};
    RunOptions o = run_options_from_json(old);
    EXPECT_EQ(o.min_reps, 13u) << "before adaptive repetitions every cell ran to reps";
    EXPECT_EQ(o.target_permille, 0u);
    EXPECT_EQ(o.budget_ms, 0u);
    EXPECT_EQ(o.pace_rounds, 0u) << "before rounds the paced steps ran once";
    EXPECT_EQ(o.cell_timeout.count(), 10);
    old.erase("reps");
    EXPECT_THROW(run_options_from_json(old), std::runtime_error);
    old["reps"] = 13, old["mode"] = "sometimes";
    try {
        run_options_from_json(old);
        FAIL() << "accepted an unknown mode";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("'mode'"), std::string::npos) << e.what();
    }
}

TEST(RunOptionTable, TheCliIsMadeFromTheTableAndOverridesOnlyWhatWasGiven) {
    CLI::App app;
    RunOptions cli;
    add_run_options(app, cli);
    for (const auto& row : run_option_table())
        if (row.flag && !row.own_cli) {
            EXPECT_NO_THROW(app.get_option(row.flag)) << row.flag;
        }
    app.parse("--mode both --target-pct 2.5 --cell-timeout 30 --reps 7", false);
    EXPECT_EQ(cli.mode, Mode::both);
    EXPECT_EQ(cli.target_permille, 25u);
    EXPECT_EQ(cli.cell_timeout.count(), 30);
    RunOptions from_matrix = changed_everywhere();
    override_given(app, cli, from_matrix);
    EXPECT_EQ(from_matrix.mode, Mode::both);
    EXPECT_EQ(from_matrix.reps, 7u);
    EXPECT_EQ(from_matrix.target_permille, 25u);
    EXPECT_EQ(from_matrix.patterns, "wbinvd") << "not given: the matrix's value stays";
    EXPECT_EQ(from_matrix.backend, Backend::qemu_kvm);

    CLI::App bad;
    RunOptions b;
    add_run_options(bad, b);
    EXPECT_THROW(bad.parse("--reps 0", false), CLI::ValidationError);
    EXPECT_THROW(bad.parse("--backend qemu", false), CLI::ValidationError);
}

TEST(RunOptionTable, ArgsReproduceTheOptions) {
    RunOptions o = changed_everywhere();
    o.out.clear(), o.inject.clear(), o.variant.clear();  // not run flags a matrix line repeats
    auto args = run_option_args(o);
    CLI::App app;
    RunOptions back;
    add_run_options(app, back);
    std::string dirty;
    app.add_option("--dirty-mask", dirty);
    std::vector<std::string> reversed(args.rbegin(), args.rend());
    app.parse(reversed);
    back.dirty_mask = uint32_t(std::stoul(dirty));
    EXPECT_EQ(to_json(back), to_json(o));
}

}  // namespace
}  // namespace fb
