// Boots until every cell of a group of phases is accounted for: after a hung or crashed cell the
// guest restarts at the next cell with the culprit's pattern skipped (it would hang again), and a
// resumed run starts after the cells its journal holds. Each boot's facts go to the boots log.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/results/cell.h"
#include "host/results/record_stream.h"
#include "host/run/plan.h"
#include "host/run/progress.h"

namespace fb {

void run_boot_group(const Plan& plan, const RunOptions& o, const std::vector<Phase>& phases, CellSink& sink, nlohmann::json& boots_log,
                    const std::vector<Cell>& already, uint32_t run_index);

// The boot's timing floor from the guest's nop calibration (statistics.h timing_floor), and the
// calibration as the boots log records it.
double boot_floor(const RecordStream::Calibration& cal);
nlohmann::json calibration_json(const RecordStream::Calibration& cal);

// A pattern whose cell hung or crashed is not run again in this run (the next boot skips it).
void skip_after_failure(Config& c, const Cell& failed);

}  // namespace fb
