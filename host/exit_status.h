// How flushbench ends, as a process exit status, and the errors that choose it.
#pragma once

#include <stdexcept>

namespace fb {

// Exit codes of `flushbench run` (and the other subcommands where they apply).
enum ExitStatus : int {
    kExitOk = 0,           // every cell ok, unsupported or skipped
    kExitCellsFailed = 1,  // some cells hung, crashed, faulted or came back corrupt
    kExitUsage = 2,        // bad usage or input
    kExitEnvironment = 3,  // this host lacks what was asked for
    kExitInterrupted = 130,
};

// Bad options or input: exit 2 with the message, one line naming the fix.
struct UsageError : std::invalid_argument {
    using std::invalid_argument::invalid_argument;
};
// This host lacks what was asked for: exit 3.
struct EnvironmentError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
// The kernel's evidence contradicts a phase's mode label: the run stops (exit 3).
struct ModeContradiction : EnvironmentError {
    using EnvironmentError::EnvironmentError;
};

}  // namespace fb
