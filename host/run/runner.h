// `flushbench run`: turns options into boots, boots into cells, cells into a results file.
// Backends: kvm (our VMM; all snoop-control phases inside one VM, toggled through the KVM-VFIO
// device), qemu-kvm and qemu-tcg (one boot per mode). A cell that hangs or crashes is recorded
// as such and the guest is rebooted to continue after it; nothing measured is ever lost.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/exit_status.h"
#include "host/run/options.h"

namespace fb {

// Resolves, checks and runs. Prints progress and a summary; returns an ExitStatus.
int run_benchmark(const RunOptions& opts);

// Every run of an expanded matrix into one results file.
int run_matrix(const std::vector<RunOptions>& runs, const std::string& out, const std::string& command_line, bool quiet,
               const nlohmann::json& matrix);

// Continues an interrupted run from its journal (<out>.partial): the same options, the cells
// already measured kept, the rest run.
int resume_benchmark(const std::string& journal, bool quiet);

}  // namespace fb
