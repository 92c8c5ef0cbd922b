#include "host/regime.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <vector>

#include <fmt/format.h>

#include "common/x86/cpu.h"
#include "host/vfio_sysfs.h"

namespace fb {
using nlohmann::json;

namespace {

constexpr uint64_t kQuirkIgnoreGuestPat = 1u << 9;  // KVM_X86_QUIRK_IGNORE_GUEST_PAT, uapi asm/kvm.h

// KVM_CHECK_EXTENSION(KVM_CAP_DISABLE_QUIRKS2) returns the quirks this KVM lets userspace disable;
// KVM offers IGNORE_GUEST_PAT only with EPT on a CPU with self-snoop.
json guest_pat_quirk(const std::string& dev_root) {
    int fd = ::open((dev_root + "/kvm").c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return "unknown (cannot open /dev/kvm)";
    int mask = ::ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_DISABLE_QUIRKS2);
    ::close(fd);
    if (mask <= 0) return "not offered (no KVM_CAP_DISABLE_QUIRKS2)";
    return uint64_t(mask) & kQuirkIgnoreGuestPat ? "offered: a VMM may disable it to have the guest PAT honoured"
                                                 : "not offered by this KVM";
}

// A file that would make KVM register non-coherent DMA: a VFIO file whose IOMMU lacks snoop
// control, or an mdev type from which one can be created.
std::string noncoherent_source(const ProbeOptions& o) {
    for (const auto& f : list_vfio_files(o.dev_root))
        if (describe_vfio_file(f, o.sysfs_root).verdict == Coherency::noncoherent) return f + " (non-coherent)";
    auto types = list_mdev_types(o.sysfs_root);
    if (!types.empty()) return fmt::format("an mdev of {}/{} (create one: {})", types[0].parent, types[0].type_id, types[0].create_path);
    return "";
}

}  // namespace

json host_regime(const ProbeOptions& o) {
    std::string flavour = kvm_flavour(o.sysfs_root);
    std::string source = noncoherent_source(o);
    json wbinvd = {
        {"coherent", "trapped and skipped: one exit, no flush (no VFIO file attached, or only files whose IOMMU enforces snoop control)"},
        {"noncoherent", "executed for real on every pCPU in the vCPU's wbinvd_dirty_mask (the CPUs it ran on since its last "
                        "WBINVD), by IPI, waiting for all: caches other tenants share are written back and emptied"},
        {"noncoherent_reachable", !source.empty()},
        {"how", source.empty() ? "no VFIO file without snoop control and no mdev type here: see `flushbench probe` (vfio, mdev) for the fix"
                               : "attach " + source + " with --vfio (kvm backend) or --vfio-pci (qemu backends)"}};

    bool intel = !x86::is_amd();
    bool self_snoop = x86::has(x86::Feature::self_snoop);
    json memtype = {{"vendor", intel ? "intel" : "amd"}, {"flavour", flavour}, {"self_snoop", self_snoop},
                    {"ignore_guest_pat_quirk", guest_pat_quirk(o.dev_root)}};
    if (flavour == "vmx") {
        memtype["coherent"] = "guest PAT ignored: guest memory forced write-back (EPT ignore-PAT), unless the VMM disables "
                              "KVM_X86_QUIRK_IGNORE_GUEST_PAT (flushbench's VMM does not)";
        memtype["noncoherent"] = "guest PAT and MTRRs honoured: UC and WC mappings really are uncached / write-combining";
        memtype["expected"] = "coherent: WB, WC and UC cells cost the same; noncoherent: UC and WC reads far slower than WB";
        memtype["reason"] = "Intel EPT: KVM honours guest memory types only with non-coherent DMA registered";
    } else if (flavour == "svm") {
        memtype["coherent"] = "guest PAT honoured (AMD NPT combines guest and host PAT)";
        memtype["noncoherent"] = "guest PAT honoured, as in the coherent mode";
        memtype["expected"] = "both modes: UC and WC reads far slower than WB";
        memtype["reason"] = "AMD NPT always honours the guest's PAT";
    } else {
        memtype["coherent"] = "not covered by the EPT/NPT rules (" + flavour + ")";
        memtype["noncoherent"] = memtype["coherent"];
        memtype["expected"] = "unknown for this KVM: the memtype cells decide (UC reads near WB cost: guest PAT ignored; far above: honoured)";
        memtype["reason"] = fmt::format("KVM flavour {} is neither kvm_intel (EPT) nor kvm_amd (NPT)", flavour);
    }
    return {{"wbinvd", wbinvd}, {"memtype", memtype}};
}

std::string format_regime(const json& r) {
    const json& w = r.at("wbinvd");
    const json& m = r.at("memtype");
    std::string out = "\nregime (what losing IOMMU snoop control changes here):\n";
    out += fmt::format("  guest WBINVD, coherent:     {}\n", w.value("coherent", ""));
    out += fmt::format("  guest WBINVD, non-coherent: {}\n", w.value("noncoherent", ""));
    out += fmt::format("  non-coherent mode here:     {}: {}\n", w.value("noncoherent_reachable", false) ? "reachable" : "not reachable",
                       w.value("how", ""));
    out += fmt::format("  memory types ({}, {}, self-snoop {}):\n", m.value("vendor", ""), m.value("flavour", ""),
                       m.value("self_snoop", false) ? "yes" : "no");
    out += fmt::format("    coherent:     {}\n", m.value("coherent", ""));
    out += fmt::format("    non-coherent: {}\n", m.value("noncoherent", ""));
    out += fmt::format("    KVM_X86_QUIRK_IGNORE_GUEST_PAT: {}\n", m.value("ignore_guest_pat_quirk", ""));
    out += fmt::format("    expected: {}\n", m.value("expected", ""));
    return out;
}

}  // namespace fb
