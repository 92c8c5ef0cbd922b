#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/counters/kvm_trace.h"
#include "host/counters/perf_counters.h"

namespace fb {

// A counter as results carry it: its value, or "unavailable" with the reason (never a silent 0).
nlohmann::json to_json(const CounterValue& v);

// Host counters for one cell, opened lazily on the vCPU thread (the thread KVM_RUN runs on):
// the user's events split into guest-only and host-only groups (how much of a WBINVD's cost is
// the guest's and how much KVM's), software events, and KVM exit attribution.
class CellCounters {
public:
    explicit CellCounters(std::vector<std::string> events) : events_(std::move(events)) {}
    void start();
    nlohmann::json stop();

private:
    struct Labelled {
        std::string label;
        CounterGroup group;
    };
    void open();
    std::vector<std::string> events_;
    bool opened_ = false;
    std::vector<Labelled> groups_;
    std::unique_ptr<KvmExitTrace> trace_;
    std::string open_error_, trace_error_;
};

}  // namespace fb
