// What sysfs says about a VFIO file (vfio_sysfs.h): its group, devices, drivers, IOMMU and snoop
// control, with the fix for each refusal. One concept; about 500 lines of sysfs reading.
#include "host/vfio/vfio_sysfs.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

#include <fmt/format.h>

#include "host/sys/sysfs.h"

namespace fb {

namespace fs = std::filesystem;

const char* to_string(VfioFileKind k) {
    switch (k) {
        case VfioFileKind::not_vfio: return "not_vfio";
        case VfioFileKind::group: return "group";
        case VfioFileKind::noiommu_group: return "noiommu_group";
        case VfioFileKind::device_cdev: return "device_cdev";
    }
    return "?";
}

const char* to_string(IommuType t) {
    switch (t) {
        case IommuType::unknown: return "unknown";
        case IommuType::intel_vtd: return "intel_vtd";
        case IommuType::amd_vi: return "amd_vi";
        case IommuType::virtio_iommu: return "virtio_iommu";
        case IommuType::none_mdev: return "none_mdev";
        case IommuType::none_noiommu: return "none_noiommu";
    }
    return "?";
}

const char* to_string(Coherency c) {
    switch (c) {
        case Coherency::unknown: return "unknown";
        case Coherency::coherent: return "coherent";
        case Coherency::noncoherent: return "noncoherent";
    }
    return "?";
}

// ---- sysfs text ----------------------------------------------------------------------------------

namespace {

bool all_digits(const std::string& s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

std::optional<uint32_t> parse_u32(const std::string& s) {
    auto v = parse_dec_u64(s);
    if (!v || *v > UINT32_MAX) return std::nullopt;
    return uint32_t(*v);
}

bool exists_nofollow(const fs::path& p) {
    std::error_code ec;
    return fs::exists(fs::symlink_status(p, ec));
}

bool is_dir(const fs::path& p) {
    std::error_code ec;
    return fs::is_directory(p, ec);
}

// Name of what a sysfs link points at ("dmar0" for .../virtual/iommu/dmar0); empty if no link.
std::string link_basename(const fs::path& link) {
    std::error_code ec;
    fs::path target = fs::read_symlink(link, ec);
    if (ec) return {};
    target = target.lexically_normal();
    if (!target.has_filename()) target = target.parent_path();
    return target.filename().string();
}

// Follows sysfs's relative links; falls back to the unresolved path so callers still get a
// useful name when a (fake or racing) tree has a dangling link.
fs::path resolve(const fs::path& p) {
    std::error_code ec;
    fs::path r = fs::canonical(p, ec);
    return ec ? p : r;
}

std::vector<fs::path> list_dir(const fs::path& dir) {
    std::vector<fs::path> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) out.push_back(it->path());
    return out;
}

// "vfio10" after "vfio9", "noiommu-2" after "7": the order ls -v gives, which is what users expect.
bool natural_less(const std::string& a, const std::string& b) {
    size_t i = 0, j = 0;
    while (i < a.size() && j < b.size()) {
        if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
            size_t i2 = i, j2 = j;
            while (i2 < a.size() && std::isdigit(static_cast<unsigned char>(a[i2]))) ++i2;
            while (j2 < b.size() && std::isdigit(static_cast<unsigned char>(b[j2]))) ++j2;
            std::string na = a.substr(i, i2 - i), nb = b.substr(j, j2 - j);
            na.erase(0, std::min(na.find_first_not_of('0'), na.size()));
            nb.erase(0, std::min(nb.find_first_not_of('0'), nb.size()));
            if (na.size() != nb.size()) return na.size() < nb.size();
            if (na != nb) return na < nb;
            i = i2, j = j2;
        } else {
            if (a[i] != b[j]) return a[i] < b[j];
            ++i, ++j;
        }
    }
    return a.size() - i < b.size() - j;
}

}  // namespace

// ---- IOMMU units -----------------------------------------------------------------------------------

namespace {

// The verdict comes from the same facts the kernel's iommu_ops->capable(ENFORCE_CACHE_COHERENCY)
// uses: intel_iommu_capable() returns ecap_sc_support(), amd_iommu_capable() returns true,
// viommu_capable() does not handle the cap (false).
IommuUnit describe_unit(const fs::path& unit_dir, const std::string& name) {
    IommuUnit u;
    u.name = name;
    if (is_dir(unit_dir / "intel-iommu") || name.rfind("dmar", 0) == 0) {
        u.type = IommuType::intel_vtd;
        fs::path ecap_path = unit_dir / "intel-iommu" / "ecap";
        auto text = read_sysfs_attr(ecap_path.string());
        if (!text) {
            u.reason = fmt::format("VT-d unit {}: cannot read {}", name, ecap_path.string());
            return u;
        }
        auto ecap = parse_hex_u64(*text);
        if (!ecap) {
            u.reason = fmt::format("VT-d unit {}: ecap '{}' is not a hex number", name, *text);
            return u;
        }
        u.ecap = *ecap;
        u.snoop_control = (*ecap >> 7) & 1;
        u.coherency = u.snoop_control ? Coherency::coherent : Coherency::noncoherent;
        u.reason = fmt::format("VT-d unit {} ECAP=0x{:x}: snoop control (bit 7) {}", name, *ecap,
                               u.snoop_control ? "set, DMA is forced to snoop" : "clear, DMA may bypass the CPU caches");
        return u;
    }
    if (is_dir(unit_dir / "amd-iommu") || name.rfind("ivhd", 0) == 0) {
        u.type = IommuType::amd_vi;
        u.coherency = Coherency::coherent;
        u.reason = fmt::format("AMD-Vi unit {}: AMD-Vi always enforces cache coherency", name);
        return u;
    }
    if (name.rfind("virtio", 0) == 0 || link_basename(unit_dir / "device" / "driver") == "virtio_iommu") {
        u.type = IommuType::virtio_iommu;
        u.coherency = Coherency::noncoherent;
        u.reason = fmt::format("virtio-iommu unit {}: virtio-iommu cannot enforce cache coherency", name);
        return u;
    }
    u.reason = fmt::format("IOMMU unit {} has neither intel-iommu/ nor amd-iommu/ attributes; "
                           "its coherency cannot be read from sysfs",
                           name);
    return u;
}

}  // namespace

std::vector<IommuUnit> list_iommu_units(const std::string& sysfs_root) {
    std::vector<IommuUnit> units;
    for (const auto& p : list_dir(fs::path(sysfs_root) / "class" / "iommu"))
        units.push_back(describe_unit(resolve(p), p.filename().string()));
    std::sort(units.begin(), units.end(), [](const auto& a, const auto& b) { return natural_less(a.name, b.name); });
    return units;
}

std::vector<DmarUnit> list_dmar_units(const std::string& sysfs_root) {
    auto units = list_iommu_units(sysfs_root);
    std::erase_if(units, [](const IommuUnit& u) { return u.type != IommuType::intel_vtd; });
    return units;
}

std::vector<MdevType> list_mdev_types(const std::string& sysfs_root) {
    std::vector<MdevType> types;
    for (const auto& parent : list_dir(fs::path(sysfs_root) / "class" / "mdev_bus")) {
        for (const auto& t : list_dir(parent / "mdev_supported_types")) {
            MdevType m;
            m.parent = parent.filename().string();
            m.type_id = t.filename().string();
            m.name = read_sysfs_attr((t / "name").string()).value_or("");
            if (auto n = read_sysfs_attr((t / "available_instances").string())) m.available_instances = parse_dec_u64(*n);
            m.create_path = (t / "create").string();
            types.push_back(std::move(m));
        }
    }
    std::sort(types.begin(), types.end(), [](const MdevType& a, const MdevType& b) {
        return a.parent != b.parent ? natural_less(a.parent, b.parent) : natural_less(a.type_id, b.type_id);
    });
    return types;
}

std::vector<std::string> list_vfio_files(const std::string& dev_root) {
    fs::path vfio = fs::path(dev_root) / "vfio";
    std::vector<std::string> groups, cdevs;
    for (const auto& p : list_dir(vfio)) {
        std::string n = p.filename().string();
        if (n == "vfio" || n == "devices") continue;  // the container; the cdev directory
        groups.push_back(n);
    }
    for (const auto& p : list_dir(vfio / "devices")) cdevs.push_back(p.filename().string());
    std::sort(groups.begin(), groups.end(), natural_less);
    std::sort(cdevs.begin(), cdevs.end(), natural_less);
    std::vector<std::string> out;
    for (const auto& g : groups) out.push_back((vfio / g).string());
    for (const auto& c : cdevs) out.push_back((vfio / "devices" / c).string());
    return out;
}

// ---- VFIO files ------------------------------------------------------------------------------------

namespace {

constexpr const char* kHowToGetNoncoherent =
    "For the non-coherent mode attach a VFIO file whose devices lack IOMMU snoop control: a device "
    "behind an Intel VT-d unit whose ECAP bit 7 (SC) is clear (cat /sys/class/iommu/dmar*/intel-iommu/ecap), "
    "or an mdev device, which has no IOMMU at all (AMD-Vi always enforces coherency, so on AMD hosts mdev is "
    "the way). With the mtty sample driver (CONFIG_SAMPLE_VFIO_MDEV_MTTY): modprobe mtty; U=$(uuidgen); "
    "echo $U > /sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create (the mdev core binds it to "
    "mtty's VFIO driver); its group is /dev/vfio/$(basename $(readlink /sys/bus/mdev/devices/$U/iommu_group)). "
    "mdpy, mbochs and i915 GVT-g mdev types work the same way.";

constexpr const char* kHowToGetCoherent =
    "For the coherent mode attach a VFIO file whose devices sit behind an IOMMU that enforces coherency: any "
    "AMD-Vi unit, or an Intel VT-d unit with ECAP bit 7 (snoop control) set. Bind a PCI device to vfio-pci: "
    "modprobe vfio-pci; echo vfio-pci > /sys/bus/pci/devices/BDF/driver_override; "
    "echo BDF > /sys/bus/pci/devices/BDF/driver/unbind; echo BDF > /sys/bus/pci/drivers_probe; the group is "
    "/dev/vfio/$(basename $(readlink /sys/bus/pci/devices/BDF/iommu_group)). Compare against that rather than "
    "against no VFIO file: on kernels before mid-2025 attaching any VFIO file also puts KVM in device-assignment "
    "mode, which adds work on every VM entry.";

constexpr const char* kWhatIsAVfioFile =
    "Pass a VFIO group (/dev/vfio/N) or a VFIO device cdev (/dev/vfio/devices/vfioX); ls /dev/vfio lists them. "
    "They exist only once a device is bound to a VFIO driver: vfio-pci for a PCI device behind an IOMMU, or an "
    "mdev such as mtty (modprobe mtty; echo $(uuidgen) > "
    "/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create).";

struct NameGuess {
    VfioFileKind kind = VfioFileKind::not_vfio;
    std::optional<uint32_t> group;
    std::string cdev;
    std::string why_not;  // for not_vfio
};

// The kernel names group nodes "%s%d" with "noiommu-" for no-IOMMU groups (drivers/vfio/group.c) and
// device cdevs "vfio%d" (with the same prefix for no-IOMMU devices) under vfio/devices/.
NameGuess guess_from_class_name(const std::string& cls, const std::string& name) {
    NameGuess g;
    if (cls == "vfio") {
        if (all_digits(name)) {
            g.kind = VfioFileKind::group;
            g.group = parse_u32(name);
        } else if (name.rfind("noiommu-", 0) == 0 && all_digits(name.substr(8))) {
            g.kind = VfioFileKind::noiommu_group;
            g.group = parse_u32(name.substr(8));
        } else if (name == "vfio") {
            g.why_not = "it is the VFIO container (/dev/vfio/vfio), not a group or device; KVM-VFIO rejects it with EINVAL";
        } else {
            g.why_not = fmt::format("'{}' is not a VFIO group name (a number, or noiommu-N)", name);
        }
        if ((g.kind == VfioFileKind::group || g.kind == VfioFileKind::noiommu_group) && !g.group) {
            g.kind = VfioFileKind::not_vfio;
            g.why_not = fmt::format("group number in '{}' is out of range", name);
        }
    } else if (cls == "vfio-dev" || cls == "devices") {
        std::string n = name.rfind("noiommu-", 0) == 0 ? name.substr(8) : name;
        if (n.rfind("vfio", 0) == 0 && all_digits(n.substr(4))) {
            g.kind = VfioFileKind::device_cdev;
            g.cdev = name;
        } else {
            g.why_not = fmt::format("'{}' is not a VFIO device cdev name (vfioN)", name);
        }
    } else {
        g.why_not = "not under /dev/vfio or /dev/vfio/devices";
    }
    return g;
}

NameGuess guess_from_path(const fs::path& p, const std::string& sysfs_root, std::string& note) {
    std::string name = p.filename().string();
    std::string parent = p.parent_path().filename().string();
    NameGuess g = guess_from_class_name(parent, name);

    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) return g;  // judged by name only: fine for fake trees and plans
    if (!S_ISCHR(st.st_mode)) {
        NameGuess n;
        n.why_not = "it exists but is not a character device";
        return n;
    }
    // The node's device number names the kernel object, whatever the node is called.
    unsigned maj = major(st.st_rdev), min = minor(st.st_rdev);
    fs::path link = fs::path(sysfs_root) / "dev" / "char" / fmt::format("{}:{}", maj, min);
    std::error_code ec;
    fs::path target = fs::read_symlink(link, ec);
    if (ec) {
        note = fmt::format("char device {}:{} not found under {}; judged by name", maj, min, link.parent_path().string());
        return g;
    }
    target = target.lexically_normal();
    std::string kname = target.filename().string();
    std::string kclass = target.parent_path().filename().string();
    if (kclass == "vfio" || kclass == "vfio-dev") return guess_from_class_name(kclass, kname);
    NameGuess n;
    n.why_not = kname == "vfio" && kclass == "misc"
                    ? "it is the VFIO container (/dev/vfio/vfio), not a group or device; KVM-VFIO rejects it with EINVAL"
                    : fmt::format("char device {}:{} is {}/{}, not a VFIO group or device", maj, min, kclass, kname);
    return n;
}

VfioDevice describe_device(const fs::path& entry, bool noiommu_file, const std::string& group_name) {
    VfioDevice d;
    d.name = entry.filename().string();
    fs::path dir = resolve(entry);
    d.bus = link_basename(dir / "subsystem");
    d.driver = link_basename(dir / "driver");

    if (exists_nofollow(dir / "mdev_type")) {
        // An mdev has no dev->iommu, so device_iommu_capable(ENFORCE_CACHE_COHERENCY) is false.
        if (d.bus.empty()) d.bus = "mdev";
        d.mdev_type = link_basename(dir / "mdev_type");
        d.mdev_parent = dir.parent_path().filename().string();
        d.iommu.type = IommuType::none_mdev;
        d.iommu.coherency = Coherency::noncoherent;
        d.iommu.reason = fmt::format("mdev of type {} on {}, which has no IOMMU: its DMA is done by the parent "
                                     "driver with nothing forcing it to snoop",
                                     d.mdev_type.empty() ? "?" : d.mdev_type, d.mdev_parent);
        return d;
    }
    if (exists_nofollow(dir / "iommu")) {
        d.iommu = describe_unit(resolve(dir / "iommu"), link_basename(dir / "iommu"));
        return d;
    }
    // VFIO gives devices without an IOMMU a fake group named "vfio-noiommu" (no-IOMMU mode and
    // emulated-IOMMU drivers alike); such a device has no dev->iommu either.
    if (noiommu_file || group_name == "vfio-noiommu") {
        d.iommu.type = IommuType::none_noiommu;
        d.iommu.coherency = Coherency::noncoherent;
        d.iommu.reason = fmt::format("no IOMMU (VFIO {} group): nothing translates or snoop-forces its DMA",
                                     noiommu_file ? "no-IOMMU mode" : "emulated-IOMMU");
        return d;
    }
    d.iommu.reason = "no iommu link in sysfs, which a device in a regular VFIO group should have "
                     "(sysfs unreadable, or the device is being removed?)";
    return d;
}

std::string device_list(const std::vector<VfioDevice>& devs, Coherency only) {
    std::string s;
    for (const auto& d : devs) {
        if (d.iommu.coherency != only) continue;
        if (!s.empty()) s += "; ";
        s += d.name + ": " + d.iommu.reason;
    }
    return s;
}

void judge(VfioFileInfo& f) {
    std::string what = f.kind == VfioFileKind::device_cdev
                           ? fmt::format("{} (VFIO device cdev {})", f.path, f.cdev)
                           : fmt::format("{} (VFIO {}group {})", f.path,
                                         f.kind == VfioFileKind::noiommu_group ? "no-IOMMU " : "",
                                         f.iommu_group ? std::to_string(*f.iommu_group) : "?");
    bool any_non = false, any_unknown = false;
    for (const auto& d : f.devices) {
        any_non |= d.iommu.coherency == Coherency::noncoherent;
        any_unknown |= d.iommu.coherency == Coherency::unknown;
    }
    // KVM asks vfio_file_enforced_coherent(), which is false as soon as one device lacks the cap.
    if (any_non) {
        f.verdict = Coherency::noncoherent;
        f.explanation = fmt::format(
            "{}: {}. Attached through the KVM-VFIO device it makes KVM register non-coherent DMA: every guest "
            "WBINVD is then executed for real (on each pCPU the vCPU ran on since the last one), and on Intel "
            "KVM honours the guest's PAT memory types.",
            what, device_list(f.devices, Coherency::noncoherent));
        f.fix = kHowToGetCoherent;
    } else if (any_unknown) {
        f.verdict = Coherency::unknown;
        f.explanation = fmt::format("{}: cannot tell whether KVM will register non-coherent DMA: {}.", what,
                                    device_list(f.devices, Coherency::unknown));
        f.fix = "Run as root so sysfs is fully readable, and check the devices' IOMMU: readlink "
                "/sys/kernel/iommu_groups/N/devices/*/iommu; cat /sys/class/iommu/*/intel-iommu/ecap.";
    } else {
        f.verdict = Coherency::coherent;
        f.explanation = fmt::format(
            "{}: every device's IOMMU enforces cache coherency ({}). KVM does not register non-coherent DMA: "
            "a guest WBINVD still exits, but KVM skips it without flushing.",
            what, device_list(f.devices, Coherency::coherent));
        f.fix = kHowToGetNoncoherent;
    }
}

}  // namespace

VfioFileInfo describe_vfio_file(const std::string& path, const std::string& sysfs_root) {
    VfioFileInfo f;
    f.path = path;
    std::string note;
    NameGuess g = guess_from_path(fs::path(path), sysfs_root, note);
    f.kind = g.kind;
    f.iommu_group = g.group;
    f.cdev = g.cdev;
    auto with_note = [&](std::string s) { return note.empty() ? s : s + " (" + note + ")"; };

    if (f.kind == VfioFileKind::not_vfio) {
        f.explanation = with_note(fmt::format("{} is not a VFIO file: {}.", path, g.why_not));
        f.fix = kWhatIsAVfioFile;
        return f;
    }

    fs::path sys(sysfs_root);
    std::string group_name;
    if (f.kind == VfioFileKind::device_cdev) {
        fs::path cdir = sys / "class" / "vfio-dev" / f.cdev;
        if (!exists_nofollow(cdir / "device")) {
            f.explanation = with_note(fmt::format("{}: {} has no device link; the device was unbound from VFIO "
                                                  "or sysfs is not readable.",
                                                  path, (cdir / "device").string()));
            f.fix = "ls /sys/class/vfio-dev to see the current VFIO device cdevs (kernel 6.6+ with "
                    "CONFIG_VFIO_DEVICE_CDEV); run as root.";
            return f;
        }
        fs::path dev = resolve(cdir / "device");
        if (std::string gn = link_basename(dev / "iommu_group"); !gn.empty()) {
            f.iommu_group = parse_u32(gn);
            group_name = read_sysfs_attr((sys / "kernel" / "iommu_groups" / gn / "name").string()).value_or("");
        }
        f.devices.push_back(describe_device(dev, f.cdev.rfind("noiommu-", 0) == 0, group_name));
    } else {
        fs::path gdir = sys / "kernel" / "iommu_groups" / std::to_string(*f.iommu_group);
        if (!is_dir(gdir / "devices")) {
            f.explanation = with_note(fmt::format("{}: IOMMU group {} is not in {}; the device was unbound or "
                                                  "the group number is wrong.",
                                                  path, *f.iommu_group, gdir.parent_path().string()));
            f.fix = "ls /dev/vfio and /sys/kernel/iommu_groups to find the current groups.";
            return f;
        }
        group_name = read_sysfs_attr((gdir / "name").string()).value_or("");
        auto members = list_dir(gdir / "devices");
        std::sort(members.begin(), members.end(),
                  [](const fs::path& a, const fs::path& b) { return natural_less(a.filename().string(), b.filename().string()); });
        for (const auto& m : members)
            f.devices.push_back(describe_device(m, f.kind == VfioFileKind::noiommu_group, group_name));
        if (f.devices.empty()) {
            f.explanation = with_note(fmt::format("{}: IOMMU group {} has no devices.", path, *f.iommu_group));
            f.fix = "Bind a device to a VFIO driver first; ls /sys/kernel/iommu_groups/*/devices.";
            return f;
        }
    }
    judge(f);
    f.explanation = with_note(std::move(f.explanation));
    return f;
}

void to_json(nlohmann::json& j, const IommuUnit& u) {
    j = {{"name", u.name},
         {"type", to_string(u.type)},
         {"coherency", to_string(u.coherency)},
         {"reason", u.reason}};
    if (u.ecap) {
        j["ecap"] = fmt::format("0x{:x}", *u.ecap);
        j["snoop_control"] = u.snoop_control;
    }
}

void to_json(nlohmann::json& j, const VfioDevice& d) {
    j = {{"name", d.name}, {"bus", d.bus}, {"driver", d.driver}, {"iommu", d.iommu}};
    if (!d.mdev_type.empty() || !d.mdev_parent.empty()) {
        j["mdev_parent"] = d.mdev_parent;
        j["mdev_type"] = d.mdev_type;
    }
}

void to_json(nlohmann::json& j, const VfioFileInfo& f) {
    j = {{"path", f.path},
         {"kind", to_string(f.kind)},
         {"iommu_group", f.iommu_group ? nlohmann::json(*f.iommu_group) : nlohmann::json(nullptr)},
         {"devices", f.devices},
         {"verdict", to_string(f.verdict)},
         {"explanation", f.explanation},
         {"fix", f.fix}};
    if (!f.cdev.empty()) j["cdev"] = f.cdev;
}

}  // namespace fb
