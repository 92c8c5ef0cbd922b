#include "host/run/neighbour_scope.h"

#include <fmt/format.h>

#include "host/exit_status.h"
#include "host/neighbour/neighbour_results.h"

namespace fb {

NeighbourScope::NeighbourScope(const Plan& plan, const RunOptions& o, uint32_t run, ResultsWriter& results, CellSink& sink, bool quiet)
    : run_(run), results_(results), sink_(sink) {
    if (plan.neighbour_cpu < 0) return;
    NeighbourOptions no;
    no.cpu = plan.neighbour_cpu;
    no.slice = std::chrono::milliseconds(o.slice_ms);
    no.buffer_bytes = o.neighbour_bytes;
    try {
        neighbour_ = std::make_unique<Neighbour>(Neighbour::start(no));
    } catch (const std::exception& e) {
        throw EnvironmentError(fmt::format("the neighbour could not start: {}", e.what()));
    }
    results_.add_series(neighbour_start_chunk(run, std::string(to_string(plan.backend)), plan.vcpu_cpu, *neighbour_));
    if (!quiet)
        fmt::print(stderr, "flushbench: neighbour on CPU {} ({} KiB, {} ms slices), vCPU pinned to CPU {}\n", neighbour_->cpu(),
                   neighbour_->buffer_bytes() >> 10, o.slice_ms, plan.vcpu_cpu);
    sink_.after_add([this] { journal(neighbour_->take()); });
}

NeighbourScope::~NeighbourScope() {
    if (!neighbour_) return;
    sink_.after_add(nullptr);
    try {
        journal(neighbour_->stop());
    } catch (const std::exception& e) {
        fmt::print(stderr, "flushbench: the neighbour's last slices were lost: {}\n", e.what());
    }
}

void NeighbourScope::journal(const std::vector<NeighbourSlice>& slices) {
    if (!slices.empty()) results_.add_series(neighbour_slices_chunk(run_, slices, neighbour_->capped()));
}

}  // namespace fb
