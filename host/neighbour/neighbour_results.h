// The neighbour's slices in a results file: journal chunks while a run goes on, then, at the
// end, `flushbench_neighbour` in the results document. Each paced step of the guest is a window
// of host time. Drift cannot fool the comparison: each active step is compared with the idle
// steps right before and after it (the guest runs them interleaved, in shuffled rounds: common/
// config.h pace_schedule), an effect counts only beyond the difference between those two idle
// steps, slices the neighbour lost its CPU in are left out, and a step's verdict needs every round
// to agree.
//
//   flushbench_neighbour: [{run, backend, cpu, vcpu_cpu, slice_ms, buffer_bytes, capped, t0_ns,
//     slices: {start_s, end_s, chase_ns, stream_gbs, preemptions},  (times in seconds from t0_ns)
//     windows: [{label, step, round, mode, pattern, rate, ms, footprint_bytes, start_s, end_s, ops,
//                achieved_hz, late, baseline, preempted_slices, compared_with, idle_drift,
//                effect: {slices, slowdown, stream_ratio, ...}, verdict}],
//     steps: [{step, mode, rounds: [{round, label, slowdown, idle_drift, call}], slowdown, verdict}]}]
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/results/cell.h"
#include "host/neighbour/neighbour.h"

namespace fb {

// Written once per neighbour start (a resumed run starts it again).
nlohmann::json neighbour_start_chunk(uint32_t run, const std::string& backend, int vcpu_cpu, const Neighbour& n);
// Slices as they finish, compact rows:
// [start_ns, end_ns, chase_ns, chase_loads, stream_gbs, stream_bytes, cpu, preemptions].
nlohmann::json neighbour_slices_chunk(uint32_t run, const std::vector<NeighbourSlice>& slices, bool capped);

// The results document's flushbench_neighbour (an empty array when no run had a neighbour).
// Throws std::runtime_error on chunks it cannot read.
nlohmann::json neighbour_results(const std::vector<nlohmann::json>& series, const std::vector<Cell>& cells);

// One line per step for the terminal: its rounds' slowdowns and the verdict.
std::string neighbour_summary(const nlohmann::json& results);

}  // namespace fb
