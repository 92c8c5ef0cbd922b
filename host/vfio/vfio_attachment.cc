#include "host/vfio/vfio_attachment.h"

#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

namespace fb {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// iommufd uapi (include/uapi/linux/iommufd.h, Linux 6.2+; GET_HW_INFO 6.6+) and the vfio cdev
// ioctls (6.6+): Debian 12's linux-libc-dev (6.1) has neither, so the layouts are spelled here.
constexpr unsigned kIommufdType = ';';
constexpr unsigned kIommufdCmdIoasAlloc = 0x81;
constexpr unsigned kIommufdCmdGetHwInfo = 0x8a;
struct IommuIoasAlloc {
    uint32_t size, flags, out_ioas_id;
};
struct IommuHwInfo {
    uint32_t size, flags, dev_id, data_len;
    uint64_t data_uptr;
    uint32_t out_data_type, reserved;
    uint64_t out_capabilities;
};
struct IommuHwInfoVtd {
    uint32_t flags, reserved;
    uint64_t cap_reg, ecap_reg;
};
constexpr uint32_t kHwInfoTypeIntelVtd = 1;
struct VfioDeviceBindIommufd {
    uint32_t argsz, flags;
    int32_t iommufd;
    uint32_t out_devid;
};
struct VfioDeviceAttachIommufdPt {
    uint32_t argsz, flags, pt_id;
};
constexpr unsigned long kIommuIoasAlloc = _IO(kIommufdType, kIommufdCmdIoasAlloc);
constexpr unsigned long kIommuGetHwInfo = _IO(kIommufdType, kIommufdCmdGetHwInfo);
constexpr unsigned long kVfioDeviceBindIommufd = _IO(VFIO_TYPE, VFIO_BASE + 18);
constexpr unsigned long kVfioDeviceAttachIommufdPt = _IO(VFIO_TYPE, VFIO_BASE + 19);
constexpr uint64_t kVtdEcapSnoopControl = 1u << 7;

[[noreturn]] void fail(const std::string& message) {
    throw VfioAttachError(VfioAttachError::Kind::environment, message);
}

// "pid 812 (qemu-system-x86)" for every process with `path` open: the group file is exclusive,
// so the user needs to know whom to stop.
std::string holders_of(const std::string& path) {
    std::string out;
    std::error_code ec;
    for (fs::directory_iterator p("/proc", ec), end; !ec && p != end; p.increment(ec)) {
        std::string pid = p->path().filename().string();
        if (pid.find_first_not_of("0123456789") != std::string::npos || pid == std::to_string(getpid())) continue;
        std::error_code fec;
        for (fs::directory_iterator f(p->path() / "fd", fec), fend; !fec && f != fend; f.increment(fec)) {
            std::error_code lec;
            if (fs::read_symlink(f->path(), lec) != path) continue;
            std::string comm;
            std::ifstream(p->path() / "comm") >> comm;
            out += fmt::format("{}pid {} ({})", out.empty() ? "" : ", ", pid, comm);
            break;
        }
    }
    return out.empty() ? "another process" : out;
}

UniqueFd open_or_explain(const std::string& path, const char* what) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd >= 0) return UniqueFd(fd);
    int err = errno;
    switch (err) {
        case EBUSY:
            fail(fmt::format("{} is in use by {}: a VFIO {} opens once; stop that process or pass another file", path,
                             holders_of(path), what));
        case EACCES:
        case EPERM:
            fail(fmt::format("cannot open {}: {} (run as root, or chown the file to your user)", path, strerror(err)));
        case ENOENT:
        case ENODEV:
            fail(fmt::format("{} does not exist: bind the device to vfio-pci first (ls /dev/vfio lists the VFIO files)", path));
        default:
            fail(fmt::format("cannot open {}: {}", path, strerror(err)));
    }
}

}  // namespace

std::vector<VfioDevice> devices_blocking_vfio(const VfioFileInfo& info) {
    // Drivers with driver_managed_dma (vfio-*, pci-stub, pcieport) may share a group with VFIO.
    std::vector<VfioDevice> out;
    for (const auto& d : info.devices) {
        const std::string& drv = d.driver;
        bool ok = drv.empty() || drv.rfind("vfio", 0) == 0 || drv == "pci-stub" || drv == "pcieport" || d.bus == "mdev";
        if (!ok) out.push_back(d);
    }
    return out;
}

std::string describe_blocking(const std::vector<VfioDevice>& devices) {
    std::string s;
    for (const auto& d : devices) s += fmt::format("{}{} (bound to {})", s.empty() ? "" : ", ", d.name, d.driver);
    return s;
}

std::string bind_to_vfio_pci_fix(const std::string& bdf) {
    return fmt::format("echo vfio-pci > /sys/bus/pci/devices/{0}/driver_override; echo {0} > /sys/bus/pci/devices/{0}/driver/unbind; "
                       "echo {0} > /sys/bus/pci/drivers_probe",
                       bdf);
}

VfioAttachment VfioAttachment::open(const VfioFileInfo& info, const std::string& dev_root) {
    VfioAttachment a;
    a.path_ = info.path;
    switch (info.kind) {
        case VfioFileKind::not_vfio:
            throw VfioAttachError(VfioAttachError::Kind::usage,
                                  fmt::format("{} is not a VFIO group or device file: pass /dev/vfio/N or /dev/vfio/devices/vfioX", info.path));
        case VfioFileKind::group:
        case VfioFileKind::noiommu_group:
            a.open_group(info, dev_root);
            break;
        case VfioFileKind::device_cdev:
            a.open_cdev(info, dev_root);
            break;
    }
    return a;
}

void VfioAttachment::open_group(const VfioFileInfo& info, const std::string& dev_root) {
    file_ = open_or_explain(path_, "group");
    vfio_group_status status{};
    status.argsz = sizeof status;
    if (::ioctl(file_.get(), VFIO_GROUP_GET_STATUS, &status) != 0)
        fail(fmt::format("VFIO_GROUP_GET_STATUS on {}: {}", path_, strerror(errno)));
    if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE)) {
        auto blocking = devices_blocking_vfio(info);
        std::string who = blocking.empty() ? "a device of its IOMMU group is bound to a host driver (ls /sys/kernel/iommu_groups/N/devices)"
                                           : describe_blocking(blocking);
        fail(fmt::format("{} is not viable: {}; every device of an IOMMU group must be bound to vfio-pci or unbound: {}", path_, who,
                         blocking.empty() ? "bind them to vfio-pci" : bind_to_vfio_pci_fix(blocking.front().name)));
    }
    if (status.flags & VFIO_GROUP_FLAGS_CONTAINER_SET) fail(fmt::format("{} is already in a VFIO container: another user holds it", path_));

    std::string container = dev_root + "/vfio/vfio";
    int c = ::open(container.c_str(), O_RDWR | O_CLOEXEC);
    if (c < 0)
        fail(fmt::format("cannot open the VFIO container {}: {} (modprobe vfio; the kernel needs CONFIG_VFIO_CONTAINER or "
                         "CONFIG_IOMMUFD_VFIO_CONTAINER)",
                         container, strerror(errno)));
    container_ = UniqueFd(c);
    if (::ioctl(c, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
        fail(fmt::format("{} speaks VFIO API {}, flushbench speaks {}", container, ::ioctl(c, VFIO_GET_API_VERSION), VFIO_API_VERSION));

    // The backend must be chosen after a group is in the container (VFIO_SET_IOMMU needs one).
    int type = 0;
    if (info.kind == VfioFileKind::noiommu_group) {
        if (::ioctl(c, VFIO_CHECK_EXTENSION, VFIO_NOIOMMU_IOMMU) > 0) type = VFIO_NOIOMMU_IOMMU, backend_ = "noiommu";
        else fail(fmt::format("{} is a no-IOMMU group but the container offers no no-IOMMU backend: load vfio with enable_unsafe_noiommu_mode=1", path_));
    } else if (::ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) > 0) {
        type = VFIO_TYPE1v2_IOMMU, backend_ = "type1v2";
    } else if (::ioctl(c, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) > 0) {
        type = VFIO_TYPE1_IOMMU, backend_ = "type1";
    } else {
        fail(fmt::format("this kernel offers no VFIO type1 IOMMU backend for {} (VFIO_CHECK_EXTENSION: neither TYPE1v2 nor TYPE1): "
                         "modprobe vfio_iommu_type1 (CONFIG_VFIO_IOMMU_TYPE1)",
                         path_));
    }
    int cfd = c;
    if (::ioctl(file_.get(), VFIO_GROUP_SET_CONTAINER, &cfd) != 0) {
        int err = errno;
        if (err == EBUSY) fail(fmt::format("{} is already in a VFIO container (EBUSY): another user holds it", path_));
        fail(fmt::format("VFIO_GROUP_SET_CONTAINER for {}: {}", path_, strerror(err)));
    }
    if (::ioctl(c, VFIO_SET_IOMMU, type) != 0) fail(fmt::format("VFIO_SET_IOMMU({}) for {}: {}", backend_, path_, strerror(errno)));

    // The container's own answer: whether every IOMMU domain behind it enforces cache coherency
    // (snoop control). On 6.1 this is exactly what KVM asks; later kernels ask the devices' IOMMU,
    // which is what the container's domains were built from.
    int cc = ::ioctl(c, VFIO_CHECK_EXTENSION, VFIO_DMA_CC_IOMMU);
    if (cc < 0) {
        coherency_ = {Coherency::unknown, "", fmt::format("VFIO_CHECK_EXTENSION(VFIO_DMA_CC_IOMMU) failed: {}", strerror(errno))};
    } else {
        coherency_ = {cc ? Coherency::coherent : Coherency::noncoherent, "vfio-container",
                      fmt::format("VFIO_CHECK_EXTENSION(VFIO_DMA_CC_IOMMU) = {} on the {} container of {}", cc, backend_, path_)};
    }
}

void VfioAttachment::open_cdev(const VfioFileInfo&, const std::string& dev_root) {
    cdev_ = true;
    backend_ = "iommufd";
    std::string iommu = dev_root + "/iommu";
    int fd = ::open(iommu.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0)
        fail(fmt::format("cannot open {}: {} (a device cdev needs iommufd: CONFIG_IOMMUFD; or pass the device's group /dev/vfio/N)", iommu,
                         strerror(errno)));
    iommufd_ = UniqueFd(fd);
    file_ = open_or_explain(path_, "device cdev");
    coherency_ = {Coherency::unknown, "", "not asked yet: the cdev is bound to iommufd after KVM learns of it"};
}

void VfioAttachment::bind() {
    if (!cdev_ || bound_) return;
    VfioDeviceBindIommufd b{sizeof b, 0, iommufd_.get(), 0};
    if (::ioctl(file_.get(), kVfioDeviceBindIommufd, &b) != 0) {
        int err = errno;
        if (err == EBUSY) fail(fmt::format("{} is already bound to an iommufd: another user holds it", path_));
        fail(fmt::format("VFIO_DEVICE_BIND_IOMMUFD on {}: {}", path_, strerror(err)));
    }
    IommuIoasAlloc ioas{sizeof ioas, 0, 0};
    if (::ioctl(iommufd_.get(), kIommuIoasAlloc, &ioas) != 0) fail(fmt::format("IOMMU_IOAS_ALLOC for {}: {}", path_, strerror(errno)));
    VfioDeviceAttachIommufdPt at{sizeof at, 0, ioas.out_ioas_id};
    if (::ioctl(file_.get(), kVfioDeviceAttachIommufdPt, &at) != 0)
        fail(fmt::format("VFIO_DEVICE_ATTACH_IOMMUFD_PT on {}: {}", path_, strerror(errno)));
    bound_ = true;

    // The IOMMU's own registers as the kernel reports them: on VT-d, ECAP bit 7 (snoop control) is
    // what intel-iommu answers for IOMMU_CAP_ENFORCE_CACHE_COHERENCY.
    IommuHwInfoVtd vtd{};
    IommuHwInfo hw{sizeof hw, 0, b.out_devid, sizeof vtd, reinterpret_cast<uint64_t>(&vtd), 0, 0, 0};
    if (::ioctl(iommufd_.get(), kIommuGetHwInfo, &hw) != 0) {
        coherency_ = {Coherency::unknown, "", fmt::format("IOMMU_GET_HW_INFO failed: {} (Linux 6.6+)", strerror(errno))};
    } else if (hw.out_data_type != kHwInfoTypeIntelVtd) {
        coherency_ = {Coherency::unknown, "",
                      fmt::format("IOMMU_GET_HW_INFO reports IOMMU type {}, whose coherency flushbench cannot read from its registers",
                                  hw.out_data_type)};
    } else {
        bool sc = vtd.ecap_reg & kVtdEcapSnoopControl;
        coherency_ = {sc ? Coherency::coherent : Coherency::noncoherent, "iommufd-hw-info",
                      fmt::format("IOMMU_GET_HW_INFO: VT-d ECAP {:#x}, snoop control (bit 7) {}", vtd.ecap_reg, sc ? "set" : "clear")};
    }
}

json VfioAttachment::to_json() const {
    return {{"path", path_}, {"kind", cdev_ ? "device_cdev" : "group"}, {"backend", backend_},
            {"coherency", {{"says", fb::to_string(coherency_.says)}, {"source", coherency_.source}, {"detail", coherency_.detail}}}};
}

}  // namespace fb
