// Decodes the guest's record stream (common/wire.h) into Cells. The guest is untrusted: every
// line is checked (checksum, grammar, field ranges, sample sequence), nothing it says can make
// the host allocate without bound, and a stream that breaks mid-cell leaves that cell marked
// rather than dropped.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/wire.h"
#include "host/results/cell.h"

namespace fb {

class RecordStream {
public:
    using CellFn = std::function<void(Cell&&)>;
    using PhaseFn = std::function<void(uint32_t phase)>;

    // Called for every finished cell, in stream order.
    void on_cell(CellFn fn) { on_cell_ = std::move(fn); }
    // Called when the guest starts a phase; the vCPU is stopped during the call on the kvm backend.
    void on_phase(PhaseFn fn) { on_phase_ = std::move(fn); }
    // Called when a valid "cell" record opens a cell (before any of its samples).
    void on_cell_begin(std::function<void()> fn) { on_cell_begin_ = std::move(fn); }

    // Serial: arbitrary chunks, records among console text.
    void feed_bytes(std::string_view chunk);
    // Record port: exactly one record, with or without its "\n".
    void feed_line(std::string_view line);

    // The guest's timing-floor samples (nop as a batch of k, raw): the floor below which a cost is
    // not told from zero (host/statistics.h timing_floor).
    struct Calibration {
        uint32_t k = 0;
        std::vector<uint64_t> value, ref;
    };
    const Calibration& calibration() const { return calib_; }
    static constexpr size_t kMaxCalibration = 1024;

    // The footprints as the guest resolved them (its `config` record: NxLLC against the guest's own
    // LLC), in the order of its configuration; empty until the record arrives. 0: unresolvable.
    const std::vector<uint64_t>& guest_footprints() const { return guest_footprints_; }

    // Whatever the guest said about itself (the hello record's fields).
    const std::map<std::string, std::string>& hello() const { return hello_; }
    std::optional<uint64_t> hello_u64(const std::string& key) const;
    bool finished() const { return summary_seen_; }
    // An "error" or "panic" record: the guest could not run (bad config, no memory, ...).
    const std::optional<std::string>& guest_error() const { return guest_error_; }
    // The cell the guest began and never ended: the one that hung or crashed.
    const std::optional<Cell>& open_cell() const { return open_; }
    // Cells the guest announced but never began, by (phase, pattern, footprint) order, are the
    // runner's business: it knows the plan.
    uint64_t cells_done() const { return cells_done_; }
    // The guest's id of the open cell (meaningful while open_cell() has a value).
    uint64_t open_cell_id() const { return open_id_; }

    struct Health {
        uint64_t records = 0, noise_lines = 0, corrupt_lines = 0, protocol_errors = 0;
        std::vector<std::string> first_errors;  // at most kMaxErrors, for the report
    };
    const Health& health() const { return health_; }
    // The last few KiB of raw guest output, for hung or crashed cells.
    std::string tail() const { return tail_; }

    static constexpr size_t kMaxErrors = 16;
    static constexpr size_t kTailBytes = 4096;

private:
    void handle_line(std::string_view line, wire::Error assembler_error);
    void handle_record(const wire::Record& r);
    void protocol_error(std::string what);
    void keep_tail(std::string_view bytes);
    void close_open(CellStatus status, std::string reason);

    wire::LineAssembler assembler_;
    CellFn on_cell_;
    PhaseFn on_phase_;
    std::function<void()> on_cell_begin_;
    std::map<std::string, std::string> hello_;
    Calibration calib_;
    std::vector<uint64_t> guest_footprints_;
    std::optional<std::string> guest_error_;
    std::optional<Cell> open_;
    uint64_t open_id_ = 0, open_reps_ = 0;
    uint64_t cells_done_ = 0;
    bool summary_seen_ = false;
    Health health_;
    std::string tail_;
};

}  // namespace fb
