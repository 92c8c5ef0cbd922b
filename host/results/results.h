// Results in Google Benchmark's JSON schema (context + benchmarks), so compare.py reads them
// unchanged, plus flushbench's own keys. Cells go to an fsync'd journal (<out>.partial, one JSON
// object a line) the moment they finish; the final file is written atomically at the end. A
// crash or Ctrl-C keeps every finished cell; ResultsWriter::resume() reads a journal back.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/results/cell.h"

namespace fb {

// Version of flushbench's own additions to the schema (context.flushbench, per-entry keys).
// 1: cells, samples, KVM statistics. 2: host counters per cell (extra.host_counters: guest_only,
// host_only, software, kvm_exits; each value or "unavailable" with the reason), stats per cell,
// context.flushbench.runs and run.derived. 3: paced steps (cell.pace), memory-type mappings
// (cell.mapping), flushbench_neighbour and context.flushbench.regime. 4: the kernel's evidence for
// mode labels (cell.mode_evidence, context.flushbench.run.phases) and the pattern table
// (context.flushbench.patterns). 5: measured cells carry their estimator (cell.measure: method, k,
// ops, stop, ref) and the boot's timing floor (cell.floor_cycles); run.timing; stats.below_floor.
inline constexpr int kResultsSchemaVersion = 5;

// The pattern table (common/patterns.h) as data, in table order: written into every results file
// (context.flushbench.patterns) so that reports need no pattern facts of their own.
nlohmann::json pattern_table_json();

// "<pattern>/<footprint_bytes>/<backend>/<mode>"
std::string benchmark_name(const Cell& c);

nlohmann::json cell_to_json(const Cell& c);
Cell cell_from_json(const nlohmann::json& j);  // throws nlohmann::json::exception on bad input

// Google Benchmark entries for one cell: one "iteration" per repetition plus the aggregates
// (mean, median, stddev, cv), or one errored entry when the cell has no samples.
std::vector<nlohmann::json> benchmark_entries(const Cell& c, int family_index, int instance_index);

// Google Benchmark's context fields for this host, with `flushbench` holding ours.
nlohmann::json make_context(nlohmann::json flushbench);

class ResultsWriter {
public:
    // Starts (or, with resume, reopens) the journal at out + ".partial". Throws std::runtime_error
    // with the path and the fix when the directory is not writable.
    ResultsWriter(std::string out, nlohmann::json context);
    static ResultsWriter resume(const std::string& journal);

    void add(const Cell& c);  // appended and fsync'd before it returns
    // Measurements beside the cells (the host neighbour's slices), journaled the same way; the
    // caller turns them into document keys at the end.
    void add_series(const nlohmann::json& chunk);
    // Writes the final file (tmp + fsync + rename) and removes the journal; returns its path.
    // `extra` holds top-level keys to add (e.g. flushbench_neighbour).
    std::string finish(const nlohmann::json& run_summary, const nlohmann::json& extra = nlohmann::json::object());

    const std::vector<Cell>& cells() const { return cells_; }
    const std::vector<nlohmann::json>& series() const { return series_; }
    const nlohmann::json& context() const { return context_; }
    const std::string& out() const { return out_; }
    std::string journal() const { return out_ + ".partial"; }

    // The complete document for a set of cells (also used by import and tests).
    static nlohmann::json document(const nlohmann::json& context, const std::vector<Cell>& cells);

private:
    ResultsWriter() = default;
    void append_line(const nlohmann::json& j);
    std::string out_;
    nlohmann::json context_;
    std::vector<Cell> cells_;
    std::vector<nlohmann::json> series_;
};

// Writes `text` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
void write_file_atomically(const std::string& path, const std::string& text);

}  // namespace fb
