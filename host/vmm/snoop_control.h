#pragma once

#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "host/evidence/mode_evidence.h"
#include "host/exit_status.h"
#include "host/vfio/vfio_attachment.h"
#include "host/vmm/kvm_vfio_device.h"
#include "host/vmm/vm.h"

namespace fb {

// Drives the KVM-VFIO device between phases, on the vCPU thread while the vCPU is stopped. The
// files were opened and put in their containers when the run was planned (vfio_attachment.h).
// Header-only on purpose: it is the KVM-VFIO policy of one phase change, read in one place.
class SnoopControl {
public:
    // `noncoherent`: attached in the noncoherent phases only; `baseline`: for the VM's whole life.
    SnoopControl(Vm& vm, std::shared_ptr<VfioAttachment> noncoherent, std::shared_ptr<VfioAttachment> baseline)
        : nc_(std::move(noncoherent)), baseline_(std::move(baseline)) {
        if (!KvmVfioDevice::supported(vm)) {
            if (nc_ || baseline_) throw EnvironmentError("this KVM cannot create a KVM-VFIO device (KVM_CREATE_DEVICE type 4 failed)");
            return;
        }
        device_ = std::make_unique<KvmVfioDevice>(vm);
        if (baseline_) add(*baseline_), baseline_->bind();
        // A cdev is bound to iommufd only after KVM knows it; it leaves again until its phase.
        if (nc_ && nc_->is_cdev()) add(*nc_), nc_->bind(), device_->del_file(nc_->fd());
    }
    bool device_created() const { return device_ != nullptr; }

    void enter(bool want_nc) {
        if (want_nc && !nc_attached_) add(*nc_), nc_attached_ = true;
        if (!want_nc && nc_attached_) device_->del_file(nc_->fd()), nc_attached_ = false;
    }
    // What is attached to the VM now, with the kernel's answer about each file.
    std::vector<AttachedFile> attached() const {
        std::vector<AttachedFile> a;
        if (baseline_) a.push_back({baseline_->path(), "baseline", baseline_->coherency()});
        if (nc_attached_) a.push_back({nc_->path(), "noncoherent", nc_->coherency()});
        return a;
    }

private:
    void add(const VfioAttachment& file) {
        try {
            device_->add_file(file.fd());
        } catch (const KvmVfioError& e) {
            if (e.kind() == VfioFileError::not_vfio_file)
                throw UsageError(fmt::format("{} is not a VFIO file (the kernel said EINVAL): pass /dev/vfio/N or /dev/vfio/devices/vfioX", file.path()));
            throw EnvironmentError(fmt::format("attaching {} to the KVM-VFIO device failed: {}", file.path(), e.what()));
        }
    }
    std::unique_ptr<KvmVfioDevice> device_;
    std::shared_ptr<VfioAttachment> nc_, baseline_;
    bool nc_attached_ = false;
};

}  // namespace fb
