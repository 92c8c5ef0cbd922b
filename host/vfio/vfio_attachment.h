// A VFIO file opened and attached to an IOMMU backend the way the kernel expects before KVM may
// be told about it, and the kernel's own answer about its DMA coherency.
//
// KVM decides whether a VM has non-coherent DMA by asking vfio_file_enforced_coherent() about each
// file added to its KVM-VFIO device. Linux 6.1 answers from the group's container and says
// "coherent" for a group that has none; 6.2 and later ask the devices' IOMMU. QEMU always puts a
// group in a type1 container first, and so do we, on every kernel. A device cdev (iommufd, 6.6+)
// is added to KVM first, then bound to iommufd and attached to an IOAS: the kernel documents
// FILE_ADD before BIND (Documentation/virt/kvm/devices/vfio.rst) because some drivers need the kvm
// pointer when the device opens.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "host/vfio/vfio_sysfs.h"
#include "host/sys/fd.h"

namespace fb {

// Why a VFIO file cannot be attached. usage: the file is not a VFIO file at all (exit 2);
// environment: the host is not set up for it, and the message names the fix (exit 3).
class VfioAttachError : public std::runtime_error {
public:
    enum class Kind { usage, environment };
    VfioAttachError(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
    Kind kind() const { return kind_; }

private:
    Kind kind_;
};

// What the kernel itself reports about a file's DMA coherency, and from where.
struct KernelCoherency {
    Coherency says = Coherency::unknown;
    std::string source;  // "vfio-container" or "iommufd-hw-info"; empty when unknown
    std::string detail;  // the ioctl and the value it returned, or why there is no answer
};

class VfioAttachment {
public:
    // Group: opened, checked viable, put in a new container with the type1v2 backend (type1 on
    // kernels without v2, the no-IOMMU backend for noiommu groups). Cdev: /dev/iommu and the cdev
    // opened; bind() follows the first KVM add. Throws VfioAttachError with one line and the fix.
    static VfioAttachment open(const VfioFileInfo& info, const std::string& dev_root = "/dev");

    VfioAttachment(VfioAttachment&&) noexcept = default;
    VfioAttachment& operator=(VfioAttachment&&) noexcept = default;

    int fd() const { return file_.get(); }  // what KVM_DEV_VFIO_FILE_ADD takes
    const std::string& path() const { return path_; }
    bool is_cdev() const { return cdev_; }
    // Cdev only, once, after the first KVM_DEV_VFIO_FILE_ADD: BIND_IOMMUFD, IOAS_ALLOC,
    // ATTACH_IOMMUFD_PT. A no-op for groups and for a bound cdev.
    void bind();

    const KernelCoherency& coherency() const { return coherency_; }
    // {path, kind, backend (type1v2/type1/noiommu/iommufd), coherency {says, source, detail}}
    nlohmann::json to_json() const;

private:
    VfioAttachment() = default;
    void open_group(const VfioFileInfo& info, const std::string& dev_root);
    void open_cdev(const VfioFileInfo& info, const std::string& dev_root);

    std::string path_;
    bool cdev_ = false, bound_ = false;
    std::string backend_;
    UniqueFd file_, container_, iommufd_;
    KernelCoherency coherency_;
};

// The devices of a VFIO file that keep its group from being viable: bound to a driver that is
// neither a VFIO driver nor one the kernel lets share a group with VFIO (pci-stub, pcieport).
std::vector<VfioDevice> devices_blocking_vfio(const VfioFileInfo& info);
// "0000:00:04.1 (bound to e1000)" for each of them, joined with ", ".
std::string describe_blocking(const std::vector<VfioDevice>& devices);
// The shell lines that bind a PCI device to vfio-pci instead of its current driver.
std::string bind_to_vfio_pci_fix(const std::string& bdf);

}  // namespace fb
