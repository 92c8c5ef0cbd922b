// One boot of the guest, whatever runs it: one adapter per backend (backend_kvm.cc: our VMM, every
// snoop-control phase in one VM; backend_qemu.cc: QEMU, one boot per mode; backend_native.cc: host
// user space, no boot at all). Each feeds the guest's records to the stream and says how it ended.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/evidence/mode_evidence.h"
#include "host/results/record_stream.h"
#include "host/run/plan.h"

namespace fb {

class CellSink;

// One boot's end, whatever ran it.
struct BootEnd {
    enum class Kind { exited, hung, crashed, interrupted, failed } kind = Kind::failed;
    uint32_t exit_code = 0;
    std::string detail;
};

// What a boot works with and what it leaves behind.
struct Boot {
    const Plan& plan;
    const RunOptions& options;
    const std::vector<Phase>& phases;  // kvm: every phase of the run; qemu: this boot's one
    const std::string& cmdline;        // the guest's (config_line)
    RecordStream& stream;
    ModeWitness& witness;              // the kernel's evidence for the phases' mode labels
    std::function<void(const std::string&)> contradicted;  // the evidence contradicts a label: stop
    nlohmann::json& facts;             // the boot's own record in the results' boots log
    nlohmann::json& cell_extra;        // kvm: host counters for the cell the next "end" record completes
    uint64_t& tsc_khz;                 // kvm: the vCPU's rate, once it exists
};

BootEnd boot_kvm(Boot& boot);
BootEnd boot_qemu(Boot& boot);

// One flushbench-native process for the whole run (all or nothing, also when resuming).
void run_native_into(const RunOptions& o, CellSink& sink, const std::vector<Cell>& already, uint32_t run_index);

}  // namespace fb
