// The KVM-VFIO pseudo device (virt/kvm/vfio.c): the one path by which KVM learns that a VM has
// assigned devices whose DMA may not snoop the CPU caches. While any added VFIO file's devices
// lack IOMMU_CAP_ENFORCE_CACHE_COHERENCY, KVM registers non-coherent DMA and a guest WBINVD
// becomes a real WBINVD on every pCPU the vCPU ran on (wbinvd_dirty_mask) instead of a no-op.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "host/vmm/vm.h"

namespace fb {

enum class VfioFileError {
    not_vfio_file,  // EINVAL: the fd is not a VFIO group (/dev/vfio/N) or device cdev
    already_added,  // EEXIST
    not_added,      // ENOENT: del of a file that was never added
    bad_fd,         // EBADF: not an open fd
    other,          // anything else; errno() says what
};

const char* to_string(VfioFileError e);

class KvmVfioError : public std::runtime_error {
public:
    KvmVfioError(VfioFileError kind, int err, const std::string& message)
        : std::runtime_error(message), kind_(kind), errno_(err) {}
    VfioFileError kind() const { return kind_; }
    int error_number() const { return errno_; }

private:
    VfioFileError kind_;
    int errno_;
};

class KvmVfioDevice {
public:
    // uapi names: the "FILE" names (Linux 6.6+) are aliases of the older "GROUP" ones.
    static constexpr uint32_t kDeviceType = 4;  // KVM_DEV_TYPE_VFIO
    static constexpr uint32_t kGroupFile = 1;   // KVM_DEV_VFIO_FILE, was KVM_DEV_VFIO_GROUP
    static constexpr uint64_t kFileAdd = 1;     // KVM_DEV_VFIO_FILE_ADD
    static constexpr uint64_t kFileDel = 2;     // KVM_DEV_VFIO_FILE_DEL

    // KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO). KVM allows one per VM (EBUSY for a second).
    explicit KvmVfioDevice(const Vm& vm);
    // KVM_CREATE_DEVICE_TEST: does this KVM offer the device at all (CONFIG_KVM_VFIO)?
    static bool supported(const Vm& vm);

    int fd() const { return fd_.get(); }

    // Throw KvmVfioError. A file stays added until del_file() or the VM's end.
    void add_file(int file_fd);
    void del_file(int file_fd);
    // KVM_HAS_DEVICE_ATTR: true if the kernel knows the group/attribute pair.
    bool has_attr(uint32_t group, uint64_t attr) const;

private:
    void set_file_attr(uint64_t attr, int file_fd, const char* what);
    UniqueFd fd_;
};

}  // namespace fb
