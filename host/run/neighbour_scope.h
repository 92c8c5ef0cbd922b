#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "host/neighbour/neighbour.h"
#include "host/results/results.h"
#include "host/run/plan.h"
#include "host/run/progress.h"

namespace fb {

// The host neighbour for one run: started before the guest boots, stopped after its last cell,
// its slices journaled with every cell so that an interrupted run keeps them.
class NeighbourScope {
public:
    NeighbourScope(const Plan& plan, const RunOptions& o, uint32_t run, ResultsWriter& results, CellSink& sink, bool quiet);
    ~NeighbourScope();
    NeighbourScope(const NeighbourScope&) = delete;
    NeighbourScope& operator=(const NeighbourScope&) = delete;

private:
    void journal(const std::vector<NeighbourSlice>& slices);
    uint32_t run_;
    ResultsWriter& results_;
    CellSink& sink_;
    std::unique_ptr<Neighbour> neighbour_;
};

}  // namespace fb
