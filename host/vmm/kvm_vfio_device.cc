#include "host/vmm/kvm_vfio_device.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <system_error>

#include <fmt/format.h>

namespace fb {

static_assert(KvmVfioDevice::kDeviceType == KVM_DEV_TYPE_VFIO);
static_assert(KvmVfioDevice::kGroupFile == KVM_DEV_VFIO_GROUP);
static_assert(KvmVfioDevice::kFileAdd == KVM_DEV_VFIO_GROUP_ADD);
static_assert(KvmVfioDevice::kFileDel == KVM_DEV_VFIO_GROUP_DEL);

namespace {

// What the fd refers to, for messages: /proc/self/fd/N names the file (or "pipe:[123]").
std::string describe_fd(int fd) {
    char buf[PATH_MAX];
    std::string link = fmt::format("/proc/self/fd/{}", fd);
    ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
    if (n <= 0) return fmt::format("fd {}", fd);
    return fmt::format("fd {} ({})", fd, std::string_view(buf, size_t(n)));
}

}  // namespace

const char* to_string(VfioFileError e) {
    switch (e) {
        case VfioFileError::not_vfio_file:
            return "not_vfio_file";
        case VfioFileError::already_added:
            return "already_added";
        case VfioFileError::not_added:
            return "not_added";
        case VfioFileError::bad_fd:
            return "bad_fd";
        case VfioFileError::other:
            return "other";
    }
    return "?";
}

KvmVfioDevice::KvmVfioDevice(const Vm& vm) {
    kvm_create_device cd{};
    cd.type = kDeviceType;
    if (::ioctl(vm.fd(), KVM_CREATE_DEVICE, &cd) != 0) {
        int err = errno;
        if (err == ENODEV)
            throw std::runtime_error("this kernel's KVM has no KVM-VFIO device: build it with CONFIG_KVM_VFIO=y");
        if (err == EBUSY || err == EEXIST)
            throw std::runtime_error("this VM already has a KVM-VFIO device: KVM allows one per VM, reuse it");
        throw_kvm_error("KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO)", err);
    }
    fd_ = UniqueFd(int(cd.fd));
}

bool KvmVfioDevice::supported(const Vm& vm) {
    kvm_create_device cd{};
    cd.type = kDeviceType;
    cd.flags = KVM_CREATE_DEVICE_TEST;
    return ::ioctl(vm.fd(), KVM_CREATE_DEVICE, &cd) == 0;
}

void KvmVfioDevice::add_file(int file_fd) { set_file_attr(kFileAdd, file_fd, "add"); }
void KvmVfioDevice::del_file(int file_fd) { set_file_attr(kFileDel, file_fd, "remove"); }

void KvmVfioDevice::set_file_attr(uint64_t attr, int file_fd, const char* what) {
    // KVM reads an int32 fd from addr (kvm_vfio_set_file()).
    int32_t fd32 = file_fd;
    kvm_device_attr a{};
    a.group = kGroupFile;
    a.attr = attr;
    a.addr = reinterpret_cast<uint64_t>(&fd32);
    if (::ioctl(fd_.get(), KVM_SET_DEVICE_ATTR, &a) == 0) return;

    int err = errno;
    std::string file = describe_fd(file_fd);
    switch (err) {
        case EINVAL:
            throw KvmVfioError(VfioFileError::not_vfio_file, err,
                               fmt::format("{} is not a VFIO group or device file (kernel said EINVAL): "
                                           "pass /dev/vfio/N or /dev/vfio/devices/vfioX",
                                           file));
        case EEXIST:
            throw KvmVfioError(
                VfioFileError::already_added, err,
                fmt::format("{} is already added to this VM's KVM-VFIO device (EEXIST): add it once", file));
        case ENOENT:
            throw KvmVfioError(
                VfioFileError::not_added, err,
                fmt::format("{} was never added to this VM's KVM-VFIO device (ENOENT): nothing to remove", file));
        case EBADF:
            throw KvmVfioError(VfioFileError::bad_fd, err,
                               fmt::format("fd {} is not open (EBADF): open the VFIO file first", file_fd));
        default:
            throw KvmVfioError(
                VfioFileError::other, err,
                fmt::format("KVM-VFIO: cannot {} {}: {}", what, file, std::generic_category().message(err)));
    }
}

bool KvmVfioDevice::has_attr(uint32_t group, uint64_t attr) const {
    kvm_device_attr a{};
    a.group = group;
    a.attr = attr;
    return ::ioctl(fd_.get(), KVM_HAS_DEVICE_ATTR, &a) == 0;
}

}  // namespace fb
