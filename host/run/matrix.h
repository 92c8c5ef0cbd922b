// Benchmark matrix files (bench/matrices/*.toml): backends x snoop-control modes x placements of
// the vCPU x sets of (patterns x footprints), with repetitions, warm-up, per-cell timeout and the
// counters to collect. A matrix expands into `flushbench run` invocations (RunOptions); the
// runner decides how to walk them. Every mistake in a file is reported as file:line:column with
// the nearest valid word, because a matrix is typed by hand before an hour-long run.
//
//   name = "example"
//   backends = ["kvm"]                      # auto, kvm, qemu-kvm, qemu-tcg
//   modes = ["coherent", "noncoherent"]     # both listed: one A/B/A run (mode "both")
//   patterns = ["wbinvd", "clflush"]        # or ["all"]
//   footprints = ["0", "4K", "1M", "2xLLC"] # strings as on the command line, or integers (bytes)
//   reps = 101                              # the most repetitions a cell runs
//   warmup = 5
//   min_reps = 5                            # the fewest
//   target_pct = 1                          # stop once the median's 95% interval is 1% wide
//   budget_ms = 200                         # or after 200 ms of measuring (0: no budget)
//   cell_timeout = 30                       # seconds of guest silence before a cell is hung
//   counters = ["cycles", "kvm:kvm_exit"]   # event names, stored for the counter collector
//   skip = { clwb = "hangs-on-this-kvm" }   # pattern = reason
//   vfio = "/dev/vfio/12"                   # also vfio_baseline, vfio_pci = [BDF...], machine, mem_mib
//   [[placement]]                           # none: one unpinned placement
//   cpu = 2                                 # pin the vCPU (kvm) or QEMU (qemu-*)
//   [[placement]]
//   migrate_ms = 1                          # kvm: move the vCPU between CPUs this often
//   dirty_mask = 4                          # kvm: run on 4 pCPUs before each WBINVD
//   [[set]]                                 # none: one set from the top-level patterns/footprints
//   name = "per-line"
//   patterns = ["clflush", "clflushopt"]    # a set may override patterns, footprints, reps, warmup
//   footprints = ["4K", "1M"]
//   [[set]]                                 # the host neighbour during paced guest steps
//   name = "neighbour"
//   neighbour = "auto"                      # or a CPU; the vCPU is pinned elsewhere
//   pace = ["idle:2000", "wbinvd@100:2000", "wbinvd@max:2000", "idle:2000"]   # default: kDefaultPace
//   pace_footprint = "64K"                  # also slice_ms, neighbour_bytes
#pragma once

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "host/run/runner.h"

namespace fb {

// One line: "<file>:<line>:<column>: <what> (did you mean '<nearest>'?)".
class MatrixError : public std::runtime_error {
public:
    MatrixError(const std::string& message, std::string file, uint32_t line, uint32_t column)
        : std::runtime_error(message), file_(std::move(file)), line_(line), column_(column) {}
    const std::string& file() const { return file_; }
    uint32_t line() const { return line_; }
    uint32_t column() const { return column_; }

private:
    std::string file_;
    uint32_t line_, column_;
};

// Where the vCPU runs. cpu < 0, migrate_ms == 0 and dirty_mask == 0: wherever the scheduler puts it.
struct Placement {
    std::string name;  // "cpu2", "migrate-1ms", "mask4", "unpinned" unless given
    int cpu = -1;
    uint32_t migrate_ms = 0;
    uint32_t dirty_mask = 0;  // kvm: K pCPUs in wbinvd_dirty_mask before each WBINVD (--dirty-mask)
};

// Patterns measured over the same footprints: one boot's plan. Sets exist because the costs differ
// by orders of magnitude (a per-line CLFLUSH sweep of 2xLLC takes far longer than one WBINVD).
struct PatternSet {
    std::string name;
    std::vector<std::string> patterns;    // names from the pattern table, or {"all"}
    std::vector<std::string> footprints;  // as `--footprints` takes them: "0", "4K", "2xLLC"
    uint32_t reps = 31, warmup = 3;
    uint32_t min_reps = 5, target_permille = 10, budget_ms = 1000;  // the stopping rule (common/measure.h)
    // Paced steps and the host neighbour (`--pace`, `--neighbour`): a set with a neighbour runs
    // no cells unless it names patterns, and the default steps unless it names its own.
    std::vector<std::string> pace;
    std::string pace_footprint;
    uint32_t pace_rounds = 0;
    std::string neighbour;  // "", "auto" or a CPU number
    uint32_t slice_ms = 10;
    uint64_t neighbour_bytes = 0;
};

// One `flushbench run` of the matrix.
struct MatrixRun {
    std::string label;                  // "<set> <backend> <mode> <placement>"
    RunOptions options;                 // only the fields a matrix sets differ from RunOptions{}
    std::vector<std::string> counters;  // stored, not interpreted: the counter collector's business
    // The equivalent command line flags (without the counters, which have no flag).
    std::vector<std::string> cli_args() const;
};

struct Matrix {
    std::string name, description;
    std::string source;  // file the matrix came from
    std::vector<std::string> backends{"auto"};
    std::vector<std::string> modes{"coherent"};
    std::vector<Placement> placements;  // never empty after parsing
    std::vector<PatternSet> sets;       // never empty after parsing
    std::chrono::seconds cell_timeout{10};
    std::vector<std::string> counters;
    std::string skip;  // "pattern:reason,...", as `--skip` takes it
    std::string machine = "microvm";
    uint64_t mem_mib = 0;
    std::string vfio, vfio_baseline;
    std::vector<std::string> vfio_pci;

    // Backend-major, then mode, placement and set. Modes listing both coherent and noncoherent become
    // one run in mode "both": on kvm that is A/B/A inside one VM, which cancels drift between modes.
    std::vector<MatrixRun> expand() const;
};

// Throw MatrixError (file:line:column and a suggestion) on any unknown key or bad value.
Matrix parse_matrix(std::string_view toml_text, const std::string& source_name);
Matrix load_matrix(const std::string& path);

// "quick", "default", "full" name the shipped files in <source>/bench/matrices/; anything else
// is a path. Throws MatrixError when neither exists.
std::string find_matrix(const std::string& name_or_path);

// Levenshtein distance and the nearest candidate within a distance worth suggesting ("" if none).
size_t edit_distance(std::string_view a, std::string_view b);
std::string nearest(std::string_view word, const std::vector<std::string>& candidates);

}  // namespace fb
