// One measured cell: a pattern at a footprint, on a backend, in a snoop-control mode. What the guest
// streamed (or the backend observed, for hung/crashed) lands here, and results.h writes it out.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fb {

struct Summary;  // statistics.h

// corrupt: the guest's records for this cell failed their checksum or contradicted each other.
enum class CellStatus { ok, unsupported, skipped, fault, hung, crashed, corrupt };

inline const char* to_string(CellStatus s) {
    switch (s) {
        case CellStatus::ok: return "ok";
        case CellStatus::unsupported: return "unsupported";
        case CellStatus::skipped: return "skipped";
        case CellStatus::fault: return "fault";
        case CellStatus::hung: return "hung";
        case CellStatus::crashed: return "crashed";
        case CellStatus::corrupt: return "corrupt";
    }
    return "?";
}

// Measured: the cell's outcome is a result (ok, or a well-formed "cannot run here").
inline bool is_measured(CellStatus s) {
    return s == CellStatus::ok || s == CellStatus::unsupported || s == CellStatus::skipped;
}

// An exception the guest took inside the cell's timed code.
struct GuestFault {
    uint32_t vector = 0;
    uint64_t error_code = 0;
    uint64_t rip = 0;
    uint64_t cr2 = 0;
};

// A paced step (common/config.h): the guest issued the pattern at a rate for a time, while the host
// watched the clock. host_*_ns are CLOCK_MONOTONIC when the step's "cell" and "paced" records
// arrived: the window a host neighbour's slices are matched against.
struct Pace {
    std::string rate;  // "idle", "max" or operations per second
    uint32_t ms = 0;   // asked duration
    bool finished = false;  // the "paced" record arrived
    uint64_t ops = 0, late = 0, elapsed_tsc = 0;  // as the guest counted them
    int64_t host_start_ns = 0, host_end_ns = 0;
    int round = -1;     // pace_rounds: the round it ran in (common/config.h pace_schedule); -1: listed once
    uint32_t slot = 0;  // its position within the round

    // Operations per second by the guest's own clock; NaN until the step finished or without a rate.
    double achieved_hz(uint64_t tsc_khz) const {
        if (!finished || !elapsed_tsc || !tsc_khz) return std::numeric_limits<double>::quiet_NaN();
        return double(ops) * double(tsc_khz) * 1000.0 / double(elapsed_tsc);
    }
};

// How a memory-type pattern's buffer was mapped, as the guest read its page table and PAT MSR
// back: what the guest asked for is what its page table says, whatever KVM then makes of it.
struct GuestMapping {
    std::string asked;   // wb, wc, uc (the pattern's memory type)
    std::string mapped;  // the page table's type after the change
    uint64_t pat = 0;    // IA32_PAT as the guest read it
};

struct Cell {
    // Identity.
    std::string pattern;
    uint64_t footprint_bytes = 0;
    std::string backend;  // kvm, qemu-kvm, qemu-tcg, native, native-ring0
    std::string mode;     // coherent, noncoherent, native
    uint32_t phase = 0;   // A/B/A phase index within one boot (kvm backend)
    std::string unit;     // per-op or per-footprint (pattern table)

    // Outcome.
    CellStatus status = CellStatus::ok;
    std::string reason;          // why unsupported/skipped/fault/hung/crashed
    bool emulated = false;       // TCG: timings are functional only
    uint32_t warmup = 0;         // repetitions run and discarded
    uint64_t tsc_overhead = 0;   // median empty-bracket cost, TSC cycles (legacy cells and paced steps subtract it)
    uint64_t tsc_khz = 0;        // 0 = unknown
    uint32_t line_bytes = 64;
    std::vector<uint64_t> tsc;   // raw per-repetition TSC deltas: T(2k) (batch) or the pattern's bracket (paired)
    std::vector<uint64_t> ref;   // the reference brackets: T(k) (batch) or the empty bracket (paired)
    std::string method;          // "batch" or "paired" (common/measure.h); empty for legacy cells and paced steps
    uint32_t batch = 1;          // k: operations in T(k)
    uint64_t ops = 0;            // operations issued, pilot and warm-up included
    std::string stop;            // why the repetitions stopped: precise, budget, max_reps
    double floor_cycles = std::numeric_limits<double>::quiet_NaN();  // the boot's timing floor
    // summarize(net_cycles()), computed once when the cell is final (statistics.h cell_summary):
    // the progress line, the results file, the timing check and the table all print the same one.
    std::shared_ptr<const Summary> net_summary;
    std::map<std::string, std::vector<uint64_t>> guest_pmu;  // per-repetition guest RDPMC deltas
    std::string guest_pmu_unavailable;                       // reason, when guest_pmu is empty
    std::optional<GuestFault> fault;
    std::string last_output;     // tail of guest output, kept for hung/crashed cells
    nlohmann::json extra = nlohmann::json::object();  // backend facts: KVM stats deltas, exit counts
    std::optional<Pace> pace;    // set for paced steps
    std::optional<GuestMapping> mapping;  // set for memory-type cells that ran
    // What the kernel said about the mode label while this cell ran (host/mode_evidence.h):
    // {verdict: confirmed|contradicted|unverified, source, summary, run, boot, phase, counts...}.
    nlohmann::json mode_evidence = nlohmann::json::object();

    // What results and comparisons call the cell: the pattern, or "wbinvd@100", "clflush@max",
    // "idle" for paced steps (which must never pool with the measured cells of the same pattern);
    // in rounds, "wbinvd@100:r2" and "idle:r2.4" (round 2, slot 4), one name per cell.
    std::string label() const {
        if (!pace || pace->round < 0) return step_label();
        if (pace->rate == "idle") return "idle:r" + std::to_string(pace->round) + "." + std::to_string(pace->slot);
        return step_label() + ":r" + std::to_string(pace->round);
    }
    // The step whatever its round: what a neighbour's verdict is about.
    std::string step_label() const {
        if (!pace) return pattern;
        return pace->rate == "idle" ? std::string("idle") : pattern + "@" + pace->rate;
    }
};

}  // namespace fb
