#include "host/counters/cell_counters.h"

namespace fb {
using nlohmann::json;

json to_json(const CounterValue& v) {
    json j = {{"name", v.name}, {"unit", v.unit}, {"source", v.source}, {"scaling", v.scaling}};
    if (v.value) j["value"] = *v.value;
    else j["unavailable"] = v.unavailable;  // never a silent 0
    return j;
}

void CellCounters::start() {
    if (!opened_) open();
    for (auto& g : groups_) g.group.start();
    if (trace_) trace_->start();
}

json CellCounters::stop() {
    json out = json::object();
    for (auto& g : groups_) {
        g.group.stop();
        json values = json::array();
        for (const auto& v : g.group.read()) values.push_back(to_json(v));
        out[g.label] = values;
    }
    if (trace_) {
        trace_->stop();
        out["kvm_exits"] = trace_->result();
    } else {
        out["kvm_exits"] = {{"unavailable", trace_error_}};
    }
    if (!open_error_.empty()) out["unavailable"] = open_error_;
    return out;
}

void CellCounters::open() {
    opened_ = true;
    try {
        if (!events_.empty()) {
            groups_.push_back({"guest_only", CounterGroup::open(0, events_, Split::guest_only)});
            groups_.push_back({"host_only", CounterGroup::open(0, events_, Split::host_only)});
        }
        groups_.push_back({"software", CounterGroup::open(0, software_events(), Split::all)});
    } catch (const std::exception& e) {
        open_error_ = e.what();
    }
    try {
        trace_ = std::make_unique<KvmExitTrace>(KvmExitTrace::open(0));
        if (!trace_->available()) trace_error_ = trace_->result().value("unavailable", "tracepoints unavailable"), trace_.reset();
    } catch (const std::exception& e) {
        trace_error_ = e.what();
    }
}

}  // namespace fb
