#include "host/sys/kvm.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <system_error>

#include <fmt/format.h>

namespace fb {

KvmOpen open_kvm(const std::string& path) {
    KvmOpen k;
    k.fd = UniqueFd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (k.fd) return k;
    k.err = errno;
    switch (k.err) {
        case ENOENT:
        case ENODEV:
        case ENXIO:
            k.why = fmt::format("{} does not exist", path);
            k.fix = "load KVM (modprobe kvm_intel or kvm_amd) and enable VT-x/AMD-V in the firmware; inside a VM, "
                    "enable nested virtualization on its host";
            break;
        case EACCES:
        case EPERM:
            k.why = fmt::format("{}: permission denied", path);
            k.fix = "add the user to the kvm group (usermod -aG kvm $USER, log in again) or run as root";
            break;
        default:
            k.why = fmt::format("cannot open {}: {}", path, std::generic_category().message(k.err));
            k.fix = "check dmesg for KVM errors";
    }
    return k;
}

int create_vm_fd(int kvm_fd) {
    constexpr int kAttempts = 10;
    int fd = -1;
    for (int attempt = 0; attempt < kAttempts; ++attempt) {
        fd = ::ioctl(kvm_fd, KVM_CREATE_VM, 0);
        if (fd >= 0 || errno != EINTR) break;
    }
    return fd;
}

}  // namespace fb
