// The one place flushbench opens /dev/kvm and creates a VM fd: the VMM, the probe, the planner's
// "is KVM usable" check and the TSC-rate query all go through here, so they fail the same way.
#pragma once

#include <string>

#include "host/sys/fd.h"

namespace fb {

inline constexpr const char* kKvmPath = "/dev/kvm";

struct KvmOpen {
    UniqueFd fd;       // open on success
    int err = 0;       // errno of the failed open
    std::string why;   // "/dev/kvm does not exist", ...: empty on success
    std::string fix;   // what the user does about it
};

// Opens `path` (a test's stand-in for /dev/kvm) read-write, close-on-exec.
KvmOpen open_kvm(const std::string& path = kKvmPath);

// KVM_CREATE_VM, retried while the kernel returns EINTR (it waits on a lock; the selftests retry
// too). The VM fd, or -1 with errno set.
int create_vm_fd(int kvm_fd);

}  // namespace fb
