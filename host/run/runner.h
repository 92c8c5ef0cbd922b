// `flushbench run`: turns options into boots, boots into cells, cells into a results file.
// Backends: kvm (our VMM; all snoop-control phases inside one VM, toggled through the KVM-VFIO
// device), qemu-kvm and qemu-tcg (one boot per mode). A cell that hangs or crashes is recorded
// as such and the guest is rebooted to continue after it; nothing measured is ever lost.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/config.h"
#include "host/exit_status.h"
#include "host/results/cell.h"

namespace fb {

struct RunOptions {
    std::string backend = "auto";            // auto, kvm, qemu-kvm, qemu-tcg
    std::string mode = "coherent";           // coherent, noncoherent, both
    std::string vfio;                        // VFIO group or device cdev for the noncoherent phase
    std::string vfio_baseline;               // a coherent VFIO file (kvm) or PCI BDF (qemu) attached throughout
    std::vector<std::string> vfio_pci;       // qemu backends: devices QEMU passes through
    std::string machine = "microvm";         // qemu backends
    std::string patterns = "all";
    std::string footprints = "0,4K,64K,1M";
    std::string skip;                        // pattern[:reason],... never run
    uint32_t reps = 31, warmup = 3;          // reps: the most a cell runs (common/measure.h)
    uint32_t min_reps = 5;                   // the fewest
    uint32_t target_permille = 10;           // stop once the median's 95% interval is this narrow (0: never)
    uint32_t budget_ms = 1000;               // stop after this much measuring per cell (0: no budget)
    int vcpu_cpu = -1;                       // pin the vCPU (kvm) or QEMU (qemu-*) to this CPU
    uint32_t migrate_ms = 0;                 // kvm: move the vCPU between CPUs this often
    uint32_t dirty_mask = 0;                 // kvm: K > 0 puts K pCPUs in wbinvd_dirty_mask before each WBINVD
    uint64_t mem_mib = 0;                    // 0: sized to the largest footprint
    std::chrono::seconds cell_timeout{10};   // silence after which a cell is declared hung
    std::string image;                       // guest ELF; default: the one built beside us
    std::string out;                         // results file; default results/<UTC>-<host>.json
    std::string command_line;                // recorded in the results
    std::string inject;                      // fault injection for the harness's tests: kind@cell
    std::vector<std::string> events = {"cycles", "instructions", "LLC-load-misses"};  // host counters (kvm)
    std::string variant;                     // appended to mode labels ("coherent+cpu2"): matrix placements
    // Paced steps after the measured cells of every phase (common/config.h): "idle:2000,wbinvd@100:2000".
    std::string pace;
    std::string pace_footprint = "4K";       // dirtied before every paced operation
    uint32_t pace_rounds = 0;                // 0: the steps once, as listed; R: interleaved, shuffled rounds (common/config.h)
    // The host neighbour (host/neighbour.h): "" off, "auto" or a CPU number. With it, the vCPU is
    // pinned too (to a CPU other than the neighbour's), and slices are matched to paced steps.
    std::string neighbour;
    uint32_t slice_ms = 10;
    uint64_t neighbour_bytes = 0;            // 0: half the LLC
    bool quiet = false;
};

nlohmann::json to_json(const RunOptions& o);
RunOptions run_options_from_json(const nlohmann::json& j);

// Resolves, checks and runs. Prints progress and a summary; returns an ExitStatus.
int run_benchmark(const RunOptions& opts);

// Every run of an expanded matrix into one results file.
int run_matrix(const std::vector<RunOptions>& runs, const std::string& out, const std::string& command_line, bool quiet,
               const nlohmann::json& matrix);

// Continues an interrupted run from its journal (<out>.partial): the same options, the cells
// already measured kept, the rest run.
int resume_benchmark(const std::string& journal, bool quiet);

// The paced steps a neighbour run uses when none are given: WBINVD from 100/s to back to back and a
// CLFLUSH loop for comparison, 400 ms each, in kDefaultPaceRounds shuffled rounds with a 400 ms idle
// step on each side of every active one (common/config.h pace_schedule).
inline constexpr const char* kDefaultPace = "idle:400,wbinvd@100:400,wbinvd@10000:400,wbinvd@max:400,clflush@max:400";
inline constexpr uint32_t kDefaultPaceRounds = 3;

// The guest's configuration for a run, checked by the guest's own parser (UsageError naming the
// offending token), and the one way it becomes a guest command line (format_config).
Config guest_config(const RunOptions& o);
std::string config_line(const Config& c);

// The guest image built with this flushbench (build/guest/flushbench-guest.elf).
std::string default_guest_image();

}  // namespace fb
