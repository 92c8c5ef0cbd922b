// `flushbench compare results/fleet/<run>` (host/results/fleet.h): hosts are grouped by what their
// probe and mode evidence say, a known shift between groups shows as its ratio with an interval
// around it, a host without results is listed with the reason the playbook wrote, and bad input
// (no host directory, a baseline that names nothing) is one line naming the fix.
#include "tests/synthetic_samples.h"
#include "host/results/fleet.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <fmt/format.h>

#include "host/results/results.h"

namespace fb {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using test::samples;

Cell make_cell(const std::string& pattern, uint64_t fp, std::vector<uint64_t> tsc, const std::string& mode = "coherent") {
    Cell c;
    c.pattern = pattern;
    c.footprint_bytes = fp;
    c.backend = "kvm";
    c.mode = mode;
    c.unit = "per-footprint";
    c.tsc = std::move(tsc);
    c.tsc_overhead = 100;
    c.tsc_khz = 2600000;
    c.floor_cycles = 50;
    c.guest_pmu_unavailable = "test";
    // What the kernel says in each mode (host/evidence/mode_evidence.h).
    c.mode_evidence = mode == "noncoherent" ? json{{"verdict", "confirmed"}, {"source", "vfio-container+kprobes"}}
                                            : json{{"verdict", "confirmed"}, {"source", "no-vfio-file"}};
    return c;
}

json results(const std::string& hostname, const std::string& vendor, const std::string& kernel, const std::string& flavour,
             const std::vector<Cell>& cells) {
    json ctx = {{"host_name", hostname},
                {"flushbench", {{"schema_version", kResultsSchemaVersion}, {"git_commit", "0123456789ab"},
                                {"host", {{"hostname", hostname}, {"cpu_vendor", vendor}, {"cpu_model", vendor + " Test CPU"},
                                          {"kernel", kernel + " #1 SMP"}, {"kvm_flavour", flavour}}}}}};
    return ResultsWriter::document(ctx, cells);
}

// `flushbench probe --json` as far as grouping reads it.
json probe(const std::string& iommu_detail, bool iommu) {
    return {{"capabilities", {{{"name", "iommu_snoop_control"}, {"available", iommu}, {"detail", iommu_detail}, {"fix", ""}}}}};
}

class FleetCompare : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / fmt::format("fleet_test_{}_{}", getpid(), ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    void write(const std::string& host, const std::string& file, const json& j) {
        fs::create_directories(dir_ / host);
        std::ofstream(dir_ / host / file) << j.dump();
    }

    // Two hosts with snoop control (VT-d SC=1), one without (its noncoherent cells are confirmed)
    // whose coherent cells cost what theirs do and whose noncoherent WBINVDs cost 3 times more,
    // and one host the playbook could not reach.
    void write_fleet() {
        write("intel-sc-1", "results.json", results("same-machine", "GenuineIntel", "6.8.0-40-generic", "vmx",
                                                    {make_cell("wbinvd", 4096, samples(1, 31, 10000, 200))}));
        write("intel-sc-1", "probe.json", probe("dmar0 VT-d ecap=0xf0050da SC=1 (coherent)", true));
        write("intel-sc-1", "status.json", {{"state", "ok"}, {"stage", "run"}, {"exit_code", 0}});
        write("intel-sc-2", "results.json", results("same-machine", "GenuineIntel", "6.8.0-40-generic", "vmx",
                                                    {make_cell("wbinvd", 4096, samples(2, 31, 10000, 200))}));
        write("intel-sc-2", "probe.json", probe("dmar0 VT-d ecap=0xf0050da SC=1 (coherent)", true));
        write("intel-nosc", "results.json",
              results("same-machine", "GenuineIntel", "6.8.0-40-generic", "vmx",
                      {make_cell("wbinvd", 4096, samples(3, 31, 10000, 200)),
                       make_cell("wbinvd", 4096, samples(4, 31, 30000, 600), "noncoherent"),
                       make_cell("wbinvd", 4096, samples(5, 31, 10000, 200))}));
        write("intel-nosc", "probe.json", probe("dmar0 VT-d ecap=0xf00505a SC=0 (non-coherent)", true));
        write("gone", "status.json", {{"state", "unreachable"}, {"stage", "connect"},
                                      {"reason", "Failed to connect to the host via ssh: Connection refused"}});
        fs::create_directories(dir_ / ".ship");  // the tarballs: not a host
    }

    static const json& row(const json& cmp, const std::string& mode) {
        for (const auto& r : cmp["rows"])
            if (r["mode"] == mode) return r;
        throw std::runtime_error("no row in mode " + mode);
    }
    static const json& cell(const json& r, const std::string& host) {
        for (const auto& c : r["cells"])
            if (c["host"] == host) return c;
        throw std::runtime_error("no cell of " + host);
    }

    fs::path dir_;
};

TEST_F(FleetCompare, HostsAreGroupedByTheirEvidenceAndComparedWithTheSnoopControlGroup) {
    write_fleet();
    Fleet fleet = load_fleet(dir_.string());
    ASSERT_EQ(fleet.hosts.size(), 4u);  // .ship is not a host
    json cmp = compare_fleet(fleet);

    ASSERT_EQ(cmp["groups"].size(), 2u);
    EXPECT_EQ(cmp["groups"][0]["facets"]["snoop"], "snoop-control");  // snoop control first: the default baseline
    EXPECT_EQ(cmp["groups"][0]["facets"]["kernel"], "linux6.2-6.16");
    EXPECT_EQ(cmp["groups"][0]["facets"]["kvm"], "vmx");
    EXPECT_EQ(cmp["groups"][0]["hosts"], json({"intel-sc-1", "intel-sc-2"}));
    EXPECT_EQ(cmp["groups"][1]["facets"]["snoop"], "no-snoop-control");
    EXPECT_NE(cmp["groups"][1]["snoop_evidence"][0].get<std::string>().find("mode evidence"), std::string::npos);
    EXPECT_EQ(cmp["baseline"]["kind"], "group");
    EXPECT_EQ(cmp["baseline"]["hosts"], json({"intel-sc-1", "intel-sc-2"}));

    // Coherent against coherent: alike. Noncoherent against the group's coherent cells: about 3x.
    const json& coherent = cell(row(cmp, "coherent"), "intel-nosc");
    EXPECT_EQ(coherent["n"], 62);  // the A/B/A run's two coherent phases, pooled
    EXPECT_NEAR(coherent["ratio"].get<double>(), 1.0, 0.03);
    const json& noncoherent = cell(row(cmp, "noncoherent"), "intel-nosc");
    EXPECT_EQ(noncoherent["baseline_mode"], "coherent");
    EXPECT_NEAR(noncoherent["ratio"].get<double>(), (30000 - 100.0) / (10000 - 100.0), 0.1);
    EXPECT_LT(noncoherent["ratio_ci"][0].get<double>(), noncoherent["ratio"].get<double>());
    EXPECT_GT(noncoherent["ratio_ci"][1].get<double>(), noncoherent["ratio"].get<double>());
    EXPECT_TRUE(noncoherent["significant"].get<bool>());
    EXPECT_EQ(row(cmp, "noncoherent")["baseline"]["n"], 62);  // both baseline hosts' repetitions
    EXPECT_TRUE(cell(row(cmp, "coherent"), "intel-sc-1")["in_baseline"].get<bool>());

    std::string table = format_fleet_table(cmp);
    for (const char* host : {"intel-sc-1", "intel-sc-2", "intel-nosc", "gone"}) EXPECT_NE(table.find(host), std::string::npos) << table;
    EXPECT_NE(table.find("unreachable at connect: Failed to connect"), std::string::npos) << table;
    EXPECT_NE(table.find("x3."), std::string::npos) << table;
}

TEST_F(FleetCompare, BaselineIsAHostAGroupOrAFacet) {
    write_fleet();
    Fleet fleet = load_fleet(dir_.string());
    json by_host = compare_fleet(fleet, "intel-sc-2");
    EXPECT_EQ(by_host["baseline"]["kind"], "host");
    EXPECT_EQ(by_host["baseline"]["hosts"], json({"intel-sc-2"}));
    EXPECT_TRUE(cell(row(by_host, "coherent"), "intel-sc-1").contains("ratio"));

    json by_group = compare_fleet(fleet, "G2");
    EXPECT_EQ(by_group["baseline"]["hosts"], json({"intel-nosc"}));
    json by_facet = compare_fleet(fleet, "snoop-control");
    EXPECT_EQ(by_facet["baseline"]["kind"], "facet");
    EXPECT_EQ(by_facet["baseline"]["hosts"], json({"intel-sc-1", "intel-sc-2"}));

    try {
        compare_fleet(fleet, "intel-sc-9");
        FAIL() << "a baseline naming nothing must be refused";
    } catch (const FleetInputError& e) {
        std::string what = e.what();
        EXPECT_EQ(what.find('\n'), std::string::npos) << what;
        EXPECT_NE(what.find("--baseline intel-sc-9"), std::string::npos) << what;
        EXPECT_NE(what.find("intel-sc-1, intel-sc-2, intel-nosc"), std::string::npos) << what;  // the fix: what exists
    }
    // A host without results cannot be the baseline: it says why.
    EXPECT_THROW(
        try { compare_fleet(fleet, "gone"); } catch (const FleetInputError& e) {
            EXPECT_NE(std::string(e.what()).find("Connection refused"), std::string::npos) << e.what();
            throw;
        },
        FleetInputError);
}

TEST_F(FleetCompare, DamagedResultsMakeOneHostUnavailableNotTheFleet) {
    write_fleet();
    fs::create_directories(dir_ / "torn");
    std::ofstream(dir_ / "torn" / "results.json") << "{\"context\": {";
    json cmp = compare_fleet(load_fleet(dir_.string()));
    bool listed = false;
    for (const auto& h : cmp["hosts"])
        if (h["name"] == "torn") {
            listed = true;
            EXPECT_TRUE(h["results"].is_null());
            EXPECT_NE(h["unavailable"].get<std::string>().find("results.json is not a JSON object"), std::string::npos);
        }
    EXPECT_TRUE(listed);
}

TEST_F(FleetCompare, CostsBelowTheFloorHaveNoRatio) {
    write("a", "results.json", results("m", "AuthenticAMD", "6.1.0-18-amd64", "svm", {make_cell("nop", 0, samples(7, 31, 120, 30))}));
    write("b", "results.json", results("m", "AuthenticAMD", "6.1.0-18-amd64", "svm", {make_cell("nop", 0, samples(8, 31, 140, 10))}));
    json cmp = compare_fleet(load_fleet(dir_.string()));
    EXPECT_EQ(cmp["baseline"]["kind"], "host");  // one group: the first host
    const json& b = cell(row(cmp, "coherent"), "b");
    EXPECT_TRUE(b["below_floor"].get<bool>());
    EXPECT_FALSE(b.contains("ratio"));
    EXPECT_NE(format_fleet_table(cmp).find("below floor"), std::string::npos);
}

TEST_F(FleetCompare, ADirectoryWithoutHostsIsRefusedWithTheFix) {
    std::ofstream(dir_ / "stray.json") << "{}";
    try {
        load_fleet(dir_.string());
        FAIL() << "a directory without host directories must be refused";
    } catch (const FleetInputError& e) {
        EXPECT_NE(std::string(e.what()).find("results/fleet/<run>"), std::string::npos) << e.what();
    }
}

}  // namespace
}  // namespace fb
