// What the user sees while a run goes and when it ends: every finished cell journaled and shown (a
// progress line on a terminal, a plain line per cell in a log), then the closing table with the
// kernel's word on each mode label, and each run's timing floor.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/results/cell.h"
#include "host/results/results.h"
#include "host/run/plan.h"

namespace fb {

// Labels, progress and persistence for every cell, in the order they finish.
class CellSink {
public:
    CellSink(ResultsWriter& results, uint32_t total, bool quiet);
    ~CellSink();
    CellSink(const CellSink&) = delete;
    CellSink& operator=(const CellSink&) = delete;

    void begin_run(const Plan& plan, uint32_t index) {
        plan_ = &plan;
        run_ = index;
    }
    // Labels the cell with the run's backend and the phase's mode, journals and shows it.
    void add(Cell c, const Phase& phase, uint64_t tsc_khz);
    // A phase's evidence (host/evidence/mode_evidence.h), journaled like a cell.
    void add_evidence(nlohmann::json phase);
    // Runs after every cell is journaled (the neighbour journals its slices with it).
    void after_add(std::function<void()> fn) { after_add_ = std::move(fn); }

    uint32_t done() const { return done_; }
    uint32_t total() const { return total_; }
    const std::map<CellStatus, uint32_t>& counts() const { return counts_; }

private:
    using Clock = std::chrono::steady_clock;
    void print(const Cell& c);
    void end_progress();

    ResultsWriter& results_;
    const Plan* plan_ = nullptr;
    uint32_t run_ = 0;
    bool quiet_, tty_, progress_shown_ = false;
    uint32_t done_ = 0, resumed_ = 0, total_ = 0;
    Clock::time_point start_;
    std::map<CellStatus, uint32_t> counts_;
    std::function<void()> after_add_;
};

// The terminal's closing table: median net TSC cycles per cell, one column per backend/mode, and
// under each column what the kernel said about its mode label.
std::string summary_table(const std::vector<Cell>& cells);
// Each run's timing floor (results' summary.timing), one line each, under the table.
std::string floor_lines(const nlohmann::json& timing);

}  // namespace fb
