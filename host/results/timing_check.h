// Whether a run's timings can be trusted, said up front: the run's timing floor, the self-check
// that costs known to be zero measure zero within it, and whether the host emulates guest
// instructions that never exit on VMX/SVM (the TSC bracket itself).
//
// - floor: how far nop's per-op estimate strays from zero in 95 of 100 repetitions (statistics.h
//   timing_floor), from the calibration the guest (or flushbench-native) makes at each boot: nop as
//   a batch cell of the largest k; the widest of the run's boots. Costs at or below max(floor, half
//   their own interval) print as "below floor (±X cycles)".
// - check: nop's own cell (batch: the bracket and the loop cancel, nothing remains) and dirty at 0 bytes
//   (paired with itself: the bracket cancels, nothing remains) must be zero within max(floor, half
//   their own interval), and no cell may measure clearly below zero. A failure labels the run.
// - emulation: a cell whose kvm:kvm_emulate_insn count far exceeds the exits its pattern causes
//   (CPUID, port I/O and WBINVD exit once per operation; nop, dirty and the flushes by line never)
//   means KVM emulates the guest's instructions: the bracket, not just the operation, runs in
//   KVM's emulator, as on this project's build machines (kvm_pvm).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/results/cell.h"

namespace fb {

// {cell, kvm_emulate_insn, expected_exits, ops} when this cell shows KVM emulating its instructions.
std::optional<nlohmann::json> cell_emulation(const Cell& c);

// One entry per (run, backend) of these cells: {run, backend, floor_cycles, floor_source,
// check: passed|failed|unchecked, problems: [...], emulation: {detected, cells: [...]}}.
nlohmann::json timing_check(const std::vector<Cell>& cells);

// The lines to print before a run's results when a check failed or emulation was detected.
std::vector<std::string> timing_warnings(const nlohmann::json& timing);

}  // namespace fb
