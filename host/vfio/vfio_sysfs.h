// What a VFIO file means for KVM's WBINVD handling, read from sysfs alone.
//
// Attaching a VFIO group (/dev/vfio/N) or device cdev (/dev/vfio/devices/vfioX) to a VM through the
// KVM-VFIO device registers non-coherent DMA when any device behind it lacks
// IOMMU_CAP_ENFORCE_CACHE_COHERENCY; from then on KVM executes the guest's WBINVD for real instead of
// skipping it. That capability is per IOMMU unit: Intel VT-d has it when ECAP bit 7 (snoop control)
// is set, AMD-Vi always has it, virtio-iommu never does, and mdev / no-IOMMU devices have no IOMMU.
// This file answers "which mode will this file put the VM in, and why" before the VM exists.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fb {

enum class VfioFileKind {
    not_vfio,
    group,          // /dev/vfio/N: legacy group of IOMMU group N
    noiommu_group,  // /dev/vfio/noiommu-N: vfio.enable_unsafe_noiommu_mode, no DMA translation at all
    device_cdev,    // /dev/vfio/devices/vfioX (or noiommu-vfioX): one device, iommufd era (6.6+)
};

enum class IommuType {
    unknown,
    intel_vtd,     // coherent iff ECAP.SC (bit 7)
    amd_vi,        // always enforces coherency
    virtio_iommu,  // paravirtual (nested setups): never reports ENFORCE_CACHE_COHERENCY
    none_mdev,     // mediated device: the parent driver does the DMA, no IOMMU in the path
    none_noiommu,  // VFIO no-IOMMU mode
};

enum class Coherency { unknown, coherent, noncoherent };

const char* to_string(VfioFileKind k);
const char* to_string(IommuType t);
const char* to_string(Coherency c);

// One IOMMU unit from /sys/class/iommu. A DMAR unit is one whose type is intel_vtd.
struct IommuUnit {
    std::string name;            // dmar0, ivhd0, virtio0, ...
    IommuType type = IommuType::unknown;
    std::optional<uint64_t> ecap;  // intel_vtd: the extended capability register
    bool snoop_control = false;  // intel_vtd: ECAP.SC
    Coherency coherency = Coherency::unknown;
    std::string reason;          // why coherency is what it is (or why unknown)
};
using DmarUnit = IommuUnit;

// A member device of a VFIO file.
struct VfioDevice {
    std::string name;    // PCI BDF (0000:01:00.0), mdev UUID, or platform device name
    std::string bus;     // pci, mdev, platform, ... (from the subsystem link; empty if unknown)
    std::string driver;  // bound driver (vfio-pci, mtty, ...); empty when unbound
    std::string mdev_parent, mdev_type;  // mdev only
    IommuUnit iommu;     // name empty for mdev / no-IOMMU devices
};

struct VfioFileInfo {
    std::string path;
    VfioFileKind kind = VfioFileKind::not_vfio;
    std::optional<uint32_t> iommu_group;
    std::string cdev;                // vfioX, for device_cdev
    std::vector<VfioDevice> devices;
    Coherency verdict = Coherency::unknown;
    std::string explanation;         // one paragraph: what KVM will do with this file, and why
    std::string fix;                 // how to get the other mode (or a usable file), concretely
};

// Never throws on odd sysfs content: whatever cannot be read or parsed ends as unknown with a reason.
// The /dev path need not exist: its name is enough; when it exists, its st_rdev is looked up in
// <sysfs_root>/dev/char, which also catches renamed nodes and non-VFIO files.
VfioFileInfo describe_vfio_file(const std::string& path, const std::string& sysfs_root = "/sys");

std::vector<IommuUnit> list_iommu_units(const std::string& sysfs_root = "/sys");
std::vector<DmarUnit> list_dmar_units(const std::string& sysfs_root = "/sys");

// What mdev types the loaded parent drivers offer (/sys/class/mdev_bus/*/mdev_supported_types/*).
struct MdevType {
    std::string parent;   // mtty, 0000:00:02.0, ...
    std::string type_id;  // mtty-2, i915-GVTg_V5_4, ...
    std::string name;     // the type's human name; may be empty
    std::optional<uint64_t> available_instances;
    std::string create_path;  // echo $(uuidgen) > this
};
std::vector<MdevType> list_mdev_types(const std::string& sysfs_root = "/sys");

// Group files and device cdevs under <dev_root>/vfio, naturally sorted; the container
// (/dev/vfio/vfio) is not listed because KVM-VFIO rejects it.
std::vector<std::string> list_vfio_files(const std::string& dev_root = "/dev");

void to_json(nlohmann::json& j, const IommuUnit& u);
void to_json(nlohmann::json& j, const VfioDevice& d);
void to_json(nlohmann::json& j, const VfioFileInfo& f);

}  // namespace fb
