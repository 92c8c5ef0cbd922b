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
        auto given = [&](const char* flag) { return run.count(flag) > 0; };
        if (given("--backend")) o.backend = cli.backend;
        if (given("--mode")) o.mode = cli.mode;
        if (given("--vfio")) o.vfio = cli.vfio;
        if (given("--vfio-baseline")) o.vfio_baseline = cli.vfio_baseline;
        if (given("--vfio-pci")) o.vfio_pci = cli.vfio_pci;
        if (given("--machine")) o.machine = cli.machine;
        if (given("--patterns")) o.patterns = cli.patterns;
        if (given("--footprints")) o.footprints = cli.footprints;
        if (given("--reps")) o.reps = cli.reps;
        if (given("--min-reps")) o.min_reps = cli.min_reps;
        if (given("--target-pct")) o.target_permille = cli.target_permille;
        if (given("--budget-ms")) o.budget_ms = cli.budget_ms;
        if (given("--warmup")) o.warmup = cli.warmup;
        if (given("--skip")) o.skip = cli.skip;
        if (given("--vcpu-cpu")) o.vcpu_cpu = cli.vcpu_cpu;
        if (given("--migrate-ms")) o.migrate_ms = cli.migrate_ms;
        if (given("--mem-mib")) o.mem_mib = cli.mem_mib;
        if (given("--cell-timeout")) o.cell_timeout = cli.cell_timeout;
        if (given("--image")) o.image = cli.image;
        if (given("--pace")) o.pace = cli.pace;
        if (given("--pace-footprint")) o.pace_footprint = cli.pace_footprint;
        if (given("--pace-rounds")) o.pace_rounds = cli.pace_rounds;
        if (given("--neighbour")) o.neighbour = cli.neighbour;
        if (given("--slice-ms")) o.slice_ms = cli.slice_ms;
        if (given("--neighbour-bytes")) o.neighbour_bytes = cli.neighbour_bytes;
        if (given("--events")) o.events = cli.events;
        else if (!r.counters.empty()) {  // tracepoints (kvm:*) are always traced; the rest are perf events
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
    int timeout_s = 10;
    auto* run = app.add_subcommand("run", "boot the guest and measure every (pattern, footprint) cell");
    run->add_option("--backend", ro.backend,
                    "auto (kvm if /dev/kvm works, else qemu-tcg), kvm, qemu-kvm, qemu-tcg, native (host user space)")
        ->check(CLI::IsMember({"auto", "kvm", "qemu-kvm", "qemu-tcg", "native"}))->capture_default_str();
    run->add_option("--mode", ro.mode, "coherent, noncoherent (needs --vfio or --vfio-pci), both (A/B/A in one VM on kvm)")
        ->check(CLI::IsMember({"coherent", "noncoherent", "both"}))->capture_default_str();
    run->add_option("--vfio", ro.vfio, "VFIO group (/dev/vfio/N) or device cdev (/dev/vfio/devices/vfioX) without snoop control");
    run->add_option("--vfio-baseline", ro.vfio_baseline, "a coherent VFIO file attached during the coherent phases");
    run->add_option("--vfio-pci", ro.vfio_pci, "qemu backends: PCI device (BDF) to pass through");
    run->add_option("--machine", ro.machine, "qemu backends: microvm (PVH, fast), pc or q35 (Multiboot)")
        ->check(CLI::IsMember({"microvm", "pc", "q35"}))->capture_default_str();
    run->add_option("--patterns", ro.patterns, "comma list of patterns, or all (see `flushbench patterns`)")->capture_default_str();
    run->add_option("--footprints", ro.footprints, "comma list: bytes with K/M/G, or NxLLC")->capture_default_str();
    run->add_option("--reps", ro.reps, "the most measured repetitions a cell runs")->check(CLI::Range(1u, fb::Config::kMaxReps))->capture_default_str();
    run->add_option("--min-reps", ro.min_reps, "the fewest measured repetitions a cell runs")
        ->check(CLI::Range(1u, fb::Config::kMaxReps))->capture_default_str();
    double target_pct = ro.target_permille / 10.0;
    run->add_option("--target-pct", target_pct,
                    "a cell stops once the 95% interval of its median is this narrow, in percent of the median (0: never)")
        ->check(CLI::Range(0.0, 100.0))->capture_default_str();
    run->add_option("--budget-ms", ro.budget_ms, "a cell stops after this much measuring (0: no budget; at least --min-reps)")
        ->check(CLI::Range(0u, fb::Config::kMaxBudgetMs))->capture_default_str();
    run->add_option("--warmup", ro.warmup, "discarded repetitions per cell")->check(CLI::Range(0u, fb::Config::kMaxWarmup))->capture_default_str();
    run->add_option("--skip", ro.skip, "patterns never to run, as name[:reason],...");
    run->add_option("--events", ro.events, "kvm backend: host counters per cell, split guest-only/host-only (libpfm4 names)")
        ->delimiter(',')->capture_default_str();
    run->add_option("--vcpu-cpu", ro.vcpu_cpu, "pin the vCPU (kvm) or QEMU (qemu-*) to this host CPU");
    run->add_option("--migrate-ms", ro.migrate_ms,
                    "kvm: move the vCPU to the next CPU this often; KVM's wbinvd_dirty_mask only grows when a move falls "
                    "between two WBINVDs, so this rarely widens a flush: use --dirty-mask for that");
    std::string dirty_masks;
    run->add_option("--dirty-mask", dirty_masks,
                    "kvm: widths like 1,2,4: one run per width K, the vCPU made to run on K pCPUs before each WBINVD, so "
                    "a non-coherent WBINVD flushes K CPUs");
    run->add_option("--mem-mib", ro.mem_mib, "guest RAM; default: sized to the largest footprint");
    run->add_option("--cell-timeout", timeout_s, "seconds of guest silence before a cell is declared hung")
        ->check(CLI::Range(1, 3600))->capture_default_str();
    run->add_option("--image", ro.image, "guest kernel ELF (default: the one built with this flushbench)");
    run->add_option("--out", ro.out, "results file (default results/<UTC-time>-<host>.json)");
    run->add_option("--pace", ro.pace, "paced guest steps after the cells: idle:MS, PATTERN@RATE:MS (RATE per second, or max)");
    run->add_option("--pace-footprint", ro.pace_footprint, "bytes each paced operation dirties first")->capture_default_str();
    run->add_option("--pace-rounds", ro.pace_rounds,
                    "run the paced steps in this many rounds, each shuffled, with an idle step on either side of every "
                    "active one (0: once, as listed; a neighbour run defaults to 3)")
        ->check(CLI::Range(0u, fb::Config::kMaxPaceRounds));
    run->add_option("--neighbour", ro.neighbour,
                    "host neighbour on CPU N (or auto): cache probe in time slices, compared across the paced steps; "
                    "implies --patterns none and the default --pace unless given");
    run->add_option("--slice-ms", ro.slice_ms, "neighbour time slice")->check(CLI::Range(2u, 1000u))->capture_default_str();
    run->add_option("--neighbour-bytes", ro.neighbour_bytes, "neighbour buffer (default: half the LLC)");
    run->add_flag("--quick", quick, "small matrix: footprints 0,4K,64K, 11 reps, 2 warm-up, 5 s cell timeout");
    run->add_flag("--quiet", ro.quiet, "no per-cell progress lines");
    std::string resume, matrix;
    run->add_option("--matrix", matrix, "TOML matrix: a file, or quick/default/full from bench/matrices; flags given too override it");
    run->add_option("--resume", resume, "continue an interrupted run from its <out>.partial journal (other options come from it)");
    // The harness's own fault-injection tests (README, "Bad inputs and faults"); hidden from --help.
    run->add_option("--inject", ro.inject, "guest misbehaves at a cell: hang@N, triple_fault@N, flood@N, panic@N")->group("");

    fb::RunOptions io;  // image: the guest configuration baked into the ISO
    auto* image = app.add_subcommand("image", "build a GRUB-bootable ISO that runs the microkernel on bare metal (ring 0)");
    image->add_option("--out", io.out, "the ISO to write")->required();
    image->add_option("--patterns", io.patterns, "as for run")->capture_default_str();
    image->add_option("--footprints", io.footprints, "as for run")->capture_default_str();
    image->add_option("--reps", io.reps, "as for run")->check(CLI::Range(1u, fb::Config::kMaxReps))->capture_default_str();
    image->add_option("--warmup", io.warmup, "as for run")->check(CLI::Range(0u, fb::Config::kMaxWarmup))->capture_default_str();
    image->add_option("--skip", io.skip, "as for run");
    image->add_option("--image", io.image, "guest kernel ELF (default: the one built with this flushbench)");

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
    ro.target_permille = uint32_t(target_pct * 10.0 + 0.5);
    if (quick) {
        if (run->count("--footprints") == 0) ro.footprints = "0,4K,64K";
        if (run->count("--reps") == 0) ro.reps = 11;
        if (run->count("--warmup") == 0) ro.warmup = 2;
        if (run->count("--budget-ms") == 0) ro.budget_ms = 100;
        if (run->count("--cell-timeout") == 0) timeout_s = 5;
    }
    ro.cell_timeout = std::chrono::seconds(timeout_s);
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
