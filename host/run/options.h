// What `flushbench run` is asked to do. One table (kRunOptions) lists every option once, with its
// flag, its journal key, its help and its range: the CLI (options_cli.h), the matrix's command-line
// overrides, the journal's JSON and a matrix run's equivalent command line are all made from it.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace fb {

// Who runs the guest. `automatic`: kvm when /dev/kvm works, else qemu-tcg.
enum class Backend { automatic, kvm, qemu_kvm, qemu_tcg, native };
// Which snoop-control modes a run measures. `both`: coherent, noncoherent, coherent again (A/B/A).
enum class Mode { coherent, noncoherent, both };

// The names results files, matrices and the CLI use ("auto", "qemu-kvm", "noncoherent", ...).
std::string_view to_string(Backend b);
std::string_view to_string(Mode m);
std::optional<Backend> backend_from_string(std::string_view s);
std::optional<Mode> mode_from_string(std::string_view s);
std::span<const Backend> all_backends();
std::span<const Mode> all_modes();
// Their names in that order: the words the CLI and a matrix accept.
std::vector<std::string> backend_names();
std::vector<std::string> mode_names();

struct RunOptions {
    Backend backend = Backend::automatic;
    Mode mode = Mode::coherent;
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
    // The host neighbour (host/neighbour/): "" off, "auto" or a CPU number. With it, the vCPU is
    // pinned too (to a CPU other than the neighbour's), and slices are matched to paced steps.
    std::string neighbour;
    uint32_t slice_ms = 10;
    uint64_t neighbour_bytes = 0;            // 0: half the LLC
    bool quiet = false;
};

// One row of the option table. A member is one of these types; target_permille is given in
// percent on the command line (Scale::permille_as_percent).
using OptionMember = std::variant<std::string RunOptions::*, std::vector<std::string> RunOptions::*, uint32_t RunOptions::*,
                                  int RunOptions::*, uint64_t RunOptions::*, std::chrono::seconds RunOptions::*,
                                  Backend RunOptions::*, Mode RunOptions::*>;
struct RunOption {
    enum class Scale { none, permille_as_percent };
    const char* flag;    // "--reps"; nullptr: not a `run` flag of its own (set another way)
    const char* key;     // the journal's and the results context's key
    OptionMember member;
    const char* help;
    double lo = 0, hi = 0;  // accepted range, when lo < hi
    Scale scale = Scale::none;
    bool required = false;  // every journal has it (the rest have defaults for older journals)
    bool hidden = false;    // not in --help (the harness's own fault injection)
    bool own_cli = false;   // the CLI parses this flag itself (--dirty-mask takes a list of widths)
    const char* choices = nullptr;  // comma list of the accepted words, for a string
};
std::span<const RunOption> run_option_table();
const RunOption* find_run_option(std::string_view flag);

nlohmann::json to_json(const RunOptions& o);
// Journals from before a field existed get the behaviour they were run with.
RunOptions run_options_from_json(const nlohmann::json& j);

// The `flushbench run` flags that reproduce `o` (every option that differs from its default, and
// the stopping rule always, so that a line is readable on its own).
std::vector<std::string> run_option_args(const RunOptions& o);

// The paced steps a neighbour run uses when none are given: WBINVD from 100/s to back to back and a
// CLFLUSH loop for comparison, 400 ms each, in kDefaultPaceRounds shuffled rounds with a 400 ms idle
// step on each side of every active one (common/config.h pace_schedule).
inline constexpr const char* kDefaultPace = "idle:400,wbinvd@100:400,wbinvd@10000:400,wbinvd@max:400,clflush@max:400";
inline constexpr uint32_t kDefaultPaceRounds = 3;

}  // namespace fb
