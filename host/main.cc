// flushbench: what does a cache flush cost a KVM guest, and everyone else on the host, with and
// without IOMMU snoop control? Subcommands: probe, run, patterns, image, import.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/patterns.h"
#include "host/results/compare.h"
#include "host/results/fleet.h"
#include "host/baremetal/import_log.h"
#include "host/run/matrix.h"
#include "host/baremetal/iso_image.h"
#include "host/run/native.h"
#include "host/env/probe.h"
#include "host/env/regime.h"
#include "host/results/results.h"
#include "host/run/options_cli.h"
#include "host/run/runner.h"

namespace {

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t comma = std::min(text.find(',', pos), text.size());
        out.push_back(text.substr(pos, comma - pos));
        pos = comma + 1;
    }
    return out;
}

std::string joined_argv(int argc, char** argv) {
    std::string s;
    for (int i = 0; i < argc; ++i) s += (i ? " " : "") + std::string(argv[i]);
    return s;
}

// The report package (report/, `python3 -m report`) draws with Debian's matplotlib and scipy, hence
// /usr/bin/python3 (see README); -P keeps the working directory off its import path. FLUSHBENCH_BIN
// names this binary, whose pattern table stands in for results files written without one.
int run_report(const std::vector<std::string>& inputs, std::string out, const char* module = "report") {
    if (out.empty()) out = "plots/" + std::filesystem::path(inputs.front()).stem().string();
    std::string pythonpath = FLUSHBENCH_SOURCE_DIR;
    if (const char* user = std::getenv("PYTHONPATH"); user && *user) pythonpath += std::string(":") + user;
    setenv("PYTHONPATH", pythonpath.c_str(), 1);
    std::error_code ec;
    std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (!ec) setenv("FLUSHBENCH_BIN", self.c_str(), 1);
    std::vector<std::string> args = {"/usr/bin/python3", "-P", "-m", module};
    args.insert(args.end(), inputs.begin(), inputs.end());
    args.insert(args.end(), {"--out", out});
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::fflush(nullptr);
    execv(argv[0], argv.data());
    fmt::print(stderr, "flushbench: cannot run {}: {} (apt-get install python3-matplotlib python3-scipy)\n", argv[0], std::strerror(errno));
    return fb::kExitEnvironment;
}

// A fleet run's directory (fleet/site.yml): its hosts side by side against a baseline host or group.
// `flushbench report DIR` draws the same comparison, so both read it from here.
std::optional<nlohmann::json> fleet_comparison(const std::string& dir, const std::string& baseline) {
    try {
        return fb::compare_fleet(fb::load_fleet(dir), baseline);
    } catch (const fb::FleetInputError& e) {
        fmt::print(stderr, "flushbench: {}\n", e.what());
        return std::nullopt;
    }
}

int run_fleet_report(const std::string& dir, const std::string& baseline, std::string out) {
    auto cmp = fleet_comparison(dir, baseline);
    if (!cmp) return fb::kExitUsage;
    if (out.empty()) out = "plots/fleet-" + std::filesystem::path(dir).filename().string();
    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    std::string json_path = out + "/fleet_comparison.json";
    std::ofstream(json_path) << cmp->dump(1) << "\n";
    if (ec || !std::filesystem::exists(json_path)) {
        fmt::print(stderr, "flushbench: cannot write {}: choose another --out\n", json_path);
        return fb::kExitEnvironment;
    }
    return run_report({json_path}, out, "report.fleet");
}

int run_compare(const std::vector<std::string>& inputs, bool as_json, const std::string& plots, const std::string& baseline) {
    bool fleet = inputs.size() == 1 && std::filesystem::is_directory(inputs.front());
    if (!fleet && std::any_of(inputs.begin(), inputs.end(), [](const std::string& p) { return std::filesystem::is_directory(p); })) {
        fmt::print(stderr, "flushbench: a fleet directory is compared on its own: flushbench compare results/fleet/<run>\n");
        return fb::kExitUsage;
    }
    if (!fleet && inputs.size() < 2) {
        fmt::print(stderr, "flushbench: compare needs two or more results files, or one fleet directory (results/fleet/<run>)\n");
        return fb::kExitUsage;
    }
    if (!fleet && !baseline.empty()) {
        fmt::print(stderr, "flushbench: --baseline chooses a host or group of a fleet directory: flushbench compare results/fleet/<run> --baseline HOST\n");
        return fb::kExitUsage;
    }
    if (fleet) {
        auto cmp = fleet_comparison(inputs.front(), baseline);
        if (!cmp) return fb::kExitUsage;
        if (as_json) std::cout << cmp->dump(2) << "\n";
        else std::cout << fb::format_fleet_table(*cmp);
        return plots.empty() ? 0 : run_fleet_report(inputs.front(), baseline, plots);
    }
    std::vector<nlohmann::json> docs;
    for (const auto& path : inputs) {
        std::ifstream in(path);
        nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
        if (j.is_discarded() || !j.contains("flushbench_cells")) {
            fmt::print(stderr, "flushbench: {} is not a flushbench results file (no flushbench_cells): pass files written by `flushbench run`\n", path);
            return fb::kExitUsage;
        }
        docs.push_back(std::move(j));
    }
    nlohmann::json cmp = fb::compare_results(docs, inputs);
    if (as_json) std::cout << cmp.dump(2) << "\n";
    else std::cout << fb::format_compare_table(cmp);
    if (!plots.empty()) return run_report(inputs, plots);
    return 0;
}

// Expands the matrix into runs; flags given on the command line override every run's value.
int run_matrix_file(const std::string& name, const fb::RunOptions& cli, const CLI::App& run) {
    fb::Matrix m;
    try {
        m = fb::load_matrix(fb::find_matrix(name));
    } catch (const std::exception& e) {
        fmt::print(stderr, "flushbench: {}\n", e.what());
        return fb::kExitUsage;
    }
    std::vector<fb::RunOptions> runs;
    nlohmann::json labels = nlohmann::json::array();
    for (const auto& r : m.expand()) {
        fb::RunOptions o = r.options;
        fb::override_given(run, cli, o);
        if (run.count("--events") == 0 && !r.counters.empty()) {  // tracepoints (kvm:*) are always traced; the rest are perf events
            o.events.clear();
            for (const auto& c : r.counters)
                if (c.rfind("kvm:", 0) != 0) o.events.push_back(c);
        }
        o.inject = cli.inject;
        o.quiet = cli.quiet;
        o.command_line = cli.command_line;
        runs.push_back(o);
        labels.push_back(r.label);
    }
    nlohmann::json info = {{"name", m.name}, {"description", m.description}, {"source", m.source},
                           {"counters", m.counters}, {"runs", labels}};
    return fb::run_matrix(runs, cli.out, cli.command_line, cli.quiet, info);
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);  // a closed pager must not kill a run before it writes results
    CLI::App app{"flushbench: the cost of guest cache flushes under KVM, with and without IOMMU snoop control"};
    app.set_version_flag("--version", std::string(FLUSHBENCH_VERSION) + " (" + FLUSHBENCH_GIT_COMMIT + ")");
    app.require_subcommand(1);

    auto* probe = app.add_subcommand("probe", "what this host offers: KVM flavour, KVM-VFIO, VFIO coherency, counters, QEMU");
    bool probe_json = false;
    probe->add_flag("--json", probe_json, "print JSON: {\"capabilities\": [{name, available, detail, fix}], \"regime\": {wbinvd, memtype}}");

    auto* pats = app.add_subcommand("patterns", "list the flush patterns (the table shared by guest, native runs and plots)");
    bool pats_json = false;
    pats->add_flag("--json", pats_json, "print JSON");

    fb::RunOptions ro;
    bool quick = false;
    auto* run = app.add_subcommand("run", "boot the guest and measure every (pattern, footprint) cell");
    fb::add_run_options(*run, ro);
    std::string dirty_masks;  // a list of widths: one run each (the table's --dirty-mask row holds one)
    run->add_option("--dirty-mask", dirty_masks, fb::find_run_option("--dirty-mask")->help);
    run->add_flag("--quick", quick, "small matrix: footprints 0,4K,64K, 11 reps, 2 warm-up, 5 s cell timeout");
    run->add_flag("--quiet", ro.quiet, "no per-cell progress lines");
    std::string resume, matrix;
    run->add_option("--matrix", matrix, "TOML matrix: a file, or quick/default/full from bench/matrices; flags given too override it");
    run->add_option("--resume", resume, "continue an interrupted run from its <out>.partial journal (other options come from it)");

    fb::RunOptions io;  // image: the guest configuration baked into the ISO
    auto* image = app.add_subcommand("image", "build a GRUB-bootable ISO that runs the microkernel on bare metal (ring 0)");
    image->add_option("--out", io.out, "the ISO to write")->required();
    fb::add_run_options(*image, io, {"--patterns", "--footprints", "--reps", "--min-reps", "--target-pct", "--warmup", "--skip", "--image"});

    std::string import_log, import_out;
    uint64_t import_tsc_khz = 0;
    auto* import = app.add_subcommand("import", "turn a captured serial log of a bare-metal run into a results file");
    import->add_option("LOG", import_log, "the serial log (IPMI SOL, null-modem capture)")->required();
    import->add_option("--out", import_out, "results file to write")->required();
    import->add_option("--tsc-khz", import_tsc_khz, "the measured machine's TSC rate, when its CPUID does not report it");

    std::vector<std::string> report_inputs;
    std::string report_out;
    auto* report = app.add_subcommand("report", "figures (SVG, PNG), report.md and report.html from results files");
    std::string report_baseline;
    report->add_option("RESULTS", report_inputs, "results files, or one fleet run's directory (results/fleet/<run>)")
        ->required()->check(CLI::ExistingPath);
    report->add_option("--out", report_out, "directory (default plots/<first results file's name>/)");
    report->add_option("--baseline", report_baseline, "fleet directory: the baseline host, group (G1) or facet (default: see compare)");

    std::vector<std::string> compare_inputs;
    std::string compare_plots;
    bool compare_json = false;
    auto* compare = app.add_subcommand("compare", "per matching cell: ratio of medians, its interval, Mann-Whitney U p-value");
    std::string compare_baseline;
    compare->add_option("RESULTS", compare_inputs,
                        "two or more results files (e.g. one host with snoop control, one without), or one fleet run's directory")
        ->required()->expected(1, -1)->check(CLI::ExistingPath);
    compare->add_option("--baseline", compare_baseline,
                        "fleet directory: the host, group (G1) or facet (snoop-control, linux6.2-6.16, svm, ...) the others are "
                        "divided by (default: the first group when there are several, else the first host)");
    compare->add_flag("--json", compare_json, "print the comparison as JSON");
    compare->add_option("--plots", compare_plots, "also write the comparison figures into this directory");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : fb::kExitUsage;
    }

    if (*probe) {
        auto caps = fb::probe_host();
        auto regime = fb::host_regime();
        if (probe_json) {
            auto j = fb::probe_to_json(caps);
            j["regime"] = regime;
            std::cout << j.dump(2) << "\n";
        } else {
            std::cout << fb::format_probe_table(caps) << fb::format_regime(regime);
        }
        return 0;
    }
    if (*pats) {
        if (pats_json) {
            std::cout << nlohmann::json{{"patterns", fb::pattern_table_json()}, {"guest_default_footprints", fb::kDefaultFootprints}}.dump(2) << "\n";
        } else {
            for (const auto& p : fb::kPatterns)
                fmt::print("{:<11} {:<8} {:<14} {:<5} {}\n", p.name, fb::group_name(p.group), fb::unit_name(p.unit),
                           p.ring0 ? "ring0" : "any", p.what);
        }
        return 0;
    }
    if (*image) return fb::run_image(io);
    if (*report) {
        bool fleet = report_inputs.size() == 1 && std::filesystem::is_directory(report_inputs.front());
        if (fleet) return run_fleet_report(report_inputs.front(), report_baseline, report_out);
        if (!report_baseline.empty()) {
            fmt::print(stderr, "flushbench: --baseline chooses a host or group of a fleet directory: flushbench report results/fleet/<run> --baseline HOST\n");
            return fb::kExitUsage;
        }
        return run_report(report_inputs, report_out);
    }
    if (*compare) return run_compare(compare_inputs, compare_json, compare_plots, compare_baseline);
    if (*import) {
        fb::ImportOptions opts;
        opts.tsc_khz = import_tsc_khz;
        return fb::run_import(import_log, import_out, joined_argv(argc, argv), opts);
    }
    if (!resume.empty()) return fb::resume_benchmark(resume, ro.quiet);
    if (quick) {
        if (run->count("--footprints") == 0) ro.footprints = "0,4K,64K";
        if (run->count("--reps") == 0) ro.reps = 11;
        if (run->count("--warmup") == 0) ro.warmup = 2;
        if (run->count("--budget-ms") == 0) ro.budget_ms = 100;
        if (run->count("--cell-timeout") == 0) ro.cell_timeout = std::chrono::seconds(5);
    }
    ro.command_line = joined_argv(argc, argv);
    if (!ro.neighbour.empty()) {  // a neighbour run measures the paced steps, in rounds, not the cells
        if (run->count("--patterns") == 0) ro.patterns = "none";
        if (run->count("--pace") == 0) ro.pace = fb::kDefaultPace;
        if (run->count("--pace-rounds") == 0) ro.pace_rounds = fb::kDefaultPaceRounds;
    }
    if (!dirty_masks.empty()) {
        if (!matrix.empty()) {
            fmt::print(stderr, "flushbench: --dirty-mask with --matrix: give the widths as placements in the matrix (dirty_mask = K)\n");
            return fb::kExitUsage;
        }
        // One run per width, in one results file: the cost against the number of pCPUs flushed.
        std::vector<fb::RunOptions> runs;
        for (const auto& w : split_list(dirty_masks)) {
            uint64_t k = 0;
            if (!fb::parse_u64(fb::Str(w.c_str()), k) || k < 1 || k > fb::Config::kMaxMaskWidth) {
                fmt::print(stderr, "flushbench: --dirty-mask {}: widths are 1-{}, as a comma list (e.g. 1,2,4)\n", w, fb::Config::kMaxMaskWidth);
                return fb::kExitUsage;
            }
            fb::RunOptions o = ro;
            o.dirty_mask = uint32_t(k);
            o.variant = fmt::format("mask{}", k);
            runs.push_back(o);
        }
        return fb::run_matrix(runs, ro.out, ro.command_line, ro.quiet, {{"name", "dirty-mask"}, {"widths", dirty_masks}});
    }
    if (!matrix.empty()) return run_matrix_file(matrix, ro, *run);
    return fb::run_benchmark(ro);
}
