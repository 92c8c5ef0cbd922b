// flushbench: what does a cache flush cost a KVM guest, and everyone else on the host, with and
// without IOMMU snoop control? Subcommands: probe, run, patterns.
#include <csignal>
#include <cstdio>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/patterns.h"
#include "host/probe.h"
#include "host/runner.h"

namespace {

std::string joined_argv(int argc, char** argv) {
    std::string s;
    for (int i = 0; i < argc; ++i) s += (i ? " " : "") + std::string(argv[i]);
    return s;
}

// The pattern table as data, for plots and for anyone scripting around flushbench.
nlohmann::json patterns_json() {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& p : fb::kPatterns)
        a.push_back({{"name", p.name}, {"group", fb::group_name(p.group)}, {"memtype", fb::mem_type_name(p.memtype)},
                     {"feature", fb::x86::feature_name(p.needs)}, {"ring0", p.ring0},
                     {"uses_footprint", p.uses_footprint}, {"unit", fb::unit_name(p.unit)}, {"what", p.what}});
    return {{"patterns", a}, {"guest_default_footprints", fb::kDefaultFootprints}};
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);  // a closed pager must not kill a run before it writes results
    CLI::App app{"flushbench: the cost of guest cache flushes under KVM, with and without IOMMU snoop control"};
    app.set_version_flag("--version", std::string(FLUSHBENCH_VERSION) + " (" + FLUSHBENCH_GIT_COMMIT + ")");
    app.require_subcommand(1);

    auto* probe = app.add_subcommand("probe", "what this host offers: KVM flavour, KVM-VFIO, VFIO coherency, counters, QEMU");
    bool probe_json = false;
    probe->add_flag("--json", probe_json, "print JSON: {\"capabilities\": [{name, available, detail, fix}]}");

    auto* pats = app.add_subcommand("patterns", "list the flush patterns (the table shared by guest, native runs and plots)");
    bool pats_json = false;
    pats->add_flag("--json", pats_json, "print JSON");

    fb::RunOptions ro;
    bool quick = false;
    int timeout_s = 10;
    auto* run = app.add_subcommand("run", "boot the guest and measure every (pattern, footprint) cell");
    run->add_option("--backend", ro.backend, "auto (kvm if /dev/kvm works, else qemu-tcg), kvm, qemu-kvm, qemu-tcg")
        ->check(CLI::IsMember({"auto", "kvm", "qemu-kvm", "qemu-tcg"}))->capture_default_str();
    run->add_option("--mode", ro.mode, "coherent, noncoherent (needs --vfio or --vfio-pci), both (A/B/A in one VM on kvm)")
        ->check(CLI::IsMember({"coherent", "noncoherent", "both"}))->capture_default_str();
    run->add_option("--vfio", ro.vfio, "VFIO group (/dev/vfio/N) or device cdev (/dev/vfio/devices/vfioX) without snoop control");
    run->add_option("--vfio-baseline", ro.vfio_baseline, "a coherent VFIO file attached during the coherent phases");
    run->add_option("--vfio-pci", ro.vfio_pci, "qemu backends: PCI device (BDF) to pass through");
    run->add_option("--machine", ro.machine, "qemu backends: microvm (PVH, fast), pc or q35 (Multiboot)")
        ->check(CLI::IsMember({"microvm", "pc", "q35"}))->capture_default_str();
    run->add_option("--patterns", ro.patterns, "comma list of patterns, or all (see `flushbench patterns`)")->capture_default_str();
    run->add_option("--footprints", ro.footprints, "comma list: bytes with K/M/G, or NxLLC")->capture_default_str();
    run->add_option("--reps", ro.reps, "measured repetitions per cell")->check(CLI::Range(1u, fb::Config::kMaxReps))->capture_default_str();
    run->add_option("--warmup", ro.warmup, "discarded repetitions per cell")->check(CLI::Range(0u, fb::Config::kMaxWarmup))->capture_default_str();
    run->add_option("--skip", ro.skip, "patterns never to run, as name[:reason],...");
    run->add_option("--vcpu-cpu", ro.vcpu_cpu, "pin the vCPU (kvm) or QEMU (qemu-*) to this host CPU");
    run->add_option("--migrate-ms", ro.migrate_ms, "kvm: move the vCPU to the next CPU this often (widens wbinvd_dirty_mask)");
    run->add_option("--mem-mib", ro.mem_mib, "guest RAM; default: sized to the largest footprint");
    run->add_option("--cell-timeout", timeout_s, "seconds of guest silence before a cell is declared hung")
        ->check(CLI::Range(1, 3600))->capture_default_str();
    run->add_option("--image", ro.image, "guest kernel ELF (default: the one built with this flushbench)");
    run->add_option("--out", ro.out, "results file (default results/<UTC-time>-<host>.json)");
    run->add_flag("--quick", quick, "small matrix: footprints 0,4K,64K, 11 reps, 2 warm-up, 5 s cell timeout");
    run->add_flag("--quiet", ro.quiet, "no per-cell progress lines");
    std::string resume;
    run->add_option("--resume", resume, "continue an interrupted run from its <out>.partial journal (other options come from it)");
    // The harness's own fault-injection tests (README, "Bad inputs and faults"); hidden from --help.
    run->add_option("--inject", ro.inject, "guest misbehaves at a cell: hang@N, triple_fault@N, flood@N, panic@N")->group("");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : fb::kExitUsage;
    }

    if (*probe) {
        auto caps = fb::probe_host();
        if (probe_json) std::cout << fb::probe_to_json(caps).dump(2) << "\n";
        else std::cout << fb::format_probe_table(caps);
        return 0;
    }
    if (*pats) {
        if (pats_json) {
            std::cout << patterns_json().dump(2) << "\n";
        } else {
            for (const auto& p : fb::kPatterns)
                fmt::print("{:<11} {:<8} {:<14} {:<5} {}\n", p.name, fb::group_name(p.group), fb::unit_name(p.unit),
                           p.ring0 ? "ring0" : "any", p.what);
        }
        return 0;
    }
    if (!resume.empty()) return fb::resume_benchmark(resume, ro.quiet);
    if (quick) {
        if (run->count("--footprints") == 0) ro.footprints = "0,4K,64K";
        if (run->count("--reps") == 0) ro.reps = 11;
        if (run->count("--warmup") == 0) ro.warmup = 2;
        if (run->count("--cell-timeout") == 0) timeout_s = 5;
    }
    ro.cell_timeout = std::chrono::seconds(timeout_s);
    ro.command_line = joined_argv(argc, argv);
    return fb::run_benchmark(ro);
}
