// A run, resolved and checked before anything boots: the backend, the guest's configuration (parsed
// once, by the guest's own parser), the boots and their snoop-control phases, guest RAM, CPU
// placement, and the VFIO files opened and in their containers. Bad options fail here, as a
// UsageError or EnvironmentError naming the fix, before any results file exists.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "host/results/cell.h"
#include "host/run/options.h"
#include "host/vfio/vfio_attachment.h"
#include "host/vfio/vfio_sysfs.h"

namespace fb {

struct Phase {
    std::string mode;   // coherent, noncoherent
    std::string label;  // the results' mode: coherent, noncoherent, coherent-repeat
};

// Everything one run needs, resolved and checked before anything boots.
struct Plan {
    Backend backend = Backend::kvm;  // resolved: kvm, qemu-kvm, qemu-tcg or native
    bool emulated = false;
    Config config;         // what the guest will parse (checked here with the same parser)
    std::string cmdline;   // patterns/footprints/reps/warmup/skip: the guest's command line
    std::vector<std::vector<Phase>> boots;  // kvm: one boot with every phase; qemu: one boot per mode
    uint64_t mem_bytes = 0;
    uint64_t tsc_khz = 0;
    std::string image;
    std::optional<VfioFileInfo> vfio, vfio_baseline;
    // kvm: the files opened and in their containers at planning time, so that a busy, non-viable
    // or unsupported file stops the run before anything is written; shared by every boot.
    std::shared_ptr<VfioAttachment> vfio_attachment, baseline_attachment;
    std::vector<std::string> qemu_baseline;  // qemu: BDFs passed in every boot (--vfio-baseline)
    std::vector<int> hop_cpus;  // kvm with --dirty-mask K >= 2: the K CPUs the vCPU hops through
    int vcpu_cpu = -1;       // where the vCPU (kvm) or QEMU (qemu-*) is pinned; -1: unpinned
    int neighbour_cpu = -1;  // where the host neighbour runs; -1: no neighbour
};

Plan make_plan(const RunOptions& o);
// make_plan, with the failure printed as one line: returns the exit status, or nothing when `plan` is set.
std::optional<int> checked_plan(const RunOptions& o, Plan& plan);

// The guest's configuration for a run, checked by the guest's own parser (UsageError naming the
// offending token), and the one way it becomes a guest command line (format_config).
Config guest_config(const RunOptions& o);
std::string config_line(const Config& c);

// The guest image built with this flushbench (build/guest/flushbench-guest.elf).
std::string default_guest_image();

// Cells in the whole plan: every boot's phases.
uint32_t planned_cells(const Plan& plan);

// Cells a boot never got to, so that none goes missing from the results: the plan's walk
// (common/cell_plan.h) from `first_id`, footprints as the guest resolved them when it said (its
// `config` record), else against this host's LLC.
std::vector<Cell> cells_from(const Plan& plan, uint32_t first_id, uint32_t phase_count, const std::vector<uint64_t>& guest_footprints);

}  // namespace fb
