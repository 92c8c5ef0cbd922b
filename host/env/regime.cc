#include "host/env/regime.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>

#include <vector>

#include <fmt/format.h>

#include "common/x86/cpu.h"
#include "host/vfio/vfio_attachment.h"
#include "host/vfio/vfio_sysfs.h"

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

// Non-coherent mode is reachable only through a file the kernel would really accept: each VFIO
// file sysfs calls non-coherent is opened and put in its container, the way a run attaches it, and
// the container's answer decides (a cdev is asked by a run, after KVM knows it). What refuses
// (busy, not viable, no type1 backend) says why.
struct Reach {
    bool reachable = false;
    json files = json::array();
    std::string how;
};

Reach noncoherent_reach(const ProbeOptions& o) {
    Reach r;
    std::string first;
    for (const auto& f : list_vfio_files(o.dev_root)) {
        VfioFileInfo info = describe_vfio_file(f, o.sysfs_root);
        if (info.verdict != Coherency::noncoherent) continue;
        json entry = {{"path", f}};
        try {
            VfioAttachment a = VfioAttachment::open(info, o.dev_root);
            const KernelCoherency& k = a.coherency();
            bool ok = k.says != Coherency::coherent;
            entry["reachable"] = ok;
            entry["kernel"] = k.says == Coherency::unknown ? "asked when a run attaches it (" + k.detail + ")" : k.detail;
            if (ok && first.empty()) first = f;
        } catch (const VfioAttachError& e) {
            entry["reachable"] = false;
            entry["refused"] = e.what();
        }
        r.files.push_back(entry);
    }
    r.reachable = !first.empty();
    auto types = list_mdev_types(o.sysfs_root);
    if (r.reachable) r.how = "attach " + first + " with --vfio (kvm backend) or its device with --vfio-pci (qemu backends)";
    else if (!types.empty())
        r.how = fmt::format("create an mdev of {}/{} first (echo $(uuidgen) > {}), then pass its group with --vfio", types[0].parent,
                            types[0].type_id, types[0].create_path);
    else if (!r.files.empty()) r.how = "every non-coherent VFIO file here was refused: see files[].refused for the fix";
    else r.how = "no VFIO file without snoop control and no mdev type here: see `flushbench probe` (vfio, mdev) for the fix";
    return r;
}

// "6.1.0-57-amd64" -> {6, 1}; {0, 0} when unreadable.
std::pair<int, int> kernel_version(const std::string& release) {
    int major = 0, minor = 0;
    if (std::sscanf(release.c_str(), "%d.%d", &major, &minor) != 2) return {0, 0};
    return {major, minor};
}

}  // namespace

json kernel_regime(const std::string& release) {
    // Plain copies: clang before 16 cannot capture structured bindings in a lambda.
    const auto version = kernel_version(release);
    const int major = version.first, minor = version.second;
    auto before = [&](int M, int m) { return major < M || (major == M && minor < m); };
    bool known = major > 0;
    json k = {{"release", release}};
    k["vfio_group_coherency"] =
        !known          ? "unknown kernel version: flushbench puts every group in a type1 container before adding it to KVM, which is right for all"
        : before(6, 2)  ? "KVM asks a group's container whether its DMA is coherent, and calls a group without a container coherent "
                          "(Linux before 6.2): flushbench, like QEMU, puts every group in a type1 container before adding it to KVM"
                        : "KVM asks the devices' IOMMU (IOMMU_CAP_ENFORCE_CACHE_COHERENCY) directly (Linux 6.2+); flushbench still "
                          "puts groups in a container first, as QEMU does";
    k["device_assignment"] =
        !known || before(6, 17)
            ? "adding any VFIO file to KVM also starts device-assignment mode (extra work on VM entries; Linux before 6.17): compare a "
              "coherent file (--vfio-baseline) against the non-coherent one, not against no file"
            : "adding a VFIO file no longer starts device-assignment mode (Linux 6.17+): no file and a coherent file compare alike";
    k["ignore_guest_pat_quirk"] = "KVM_X86_QUIRK_IGNORE_GUEST_PAT exists from Linux 6.16 (backported to 6.12.y); whether this KVM "
                                  "offers it is under memtype";
    return k;
}

json host_regime(const ProbeOptions& o) {
    std::string flavour = kvm_flavour(o.sysfs_root);
    Reach reach = noncoherent_reach(o);
    json wbinvd = {
        {"coherent", "trapped and skipped: one exit, no flush (no VFIO file attached, or only files whose IOMMU enforces snoop control)"},
        {"noncoherent", "executed for real on every pCPU in the vCPU's wbinvd_dirty_mask (the CPUs it ran on since its last "
                        "WBINVD), by IPI, waiting for all: caches other tenants share are written back and emptied"},
        {"noncoherent_reachable", reach.reachable},
        {"files", reach.files},
        {"how", reach.how}};
    utsname u{};
    std::string release = ::uname(&u) == 0 ? u.release : "";

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
    return {{"wbinvd", wbinvd}, {"memtype", memtype}, {"kernel", kernel_regime(release)}};
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
    for (const auto& f : w.value("files", json::array()))
        out += fmt::format("  {}: {}\n", f.value("path", ""),
                           f.value("reachable", false) ? "non-coherent, accepted: " + f.value("kernel", "") : "refused: " + f.value("refused", f.value("kernel", "")));
    if (r.contains("kernel")) {
        const json& k = r.at("kernel");
        out += fmt::format("  kernel {}:\n", k.value("release", "?"));
        out += fmt::format("    VFIO groups: {}\n", k.value("vfio_group_coherency", ""));
        out += fmt::format("    device assignment: {}\n", k.value("device_assignment", ""));
        out += fmt::format("    guest PAT: {}\n", k.value("ignore_guest_pat_quirk", ""));
    }
    return out;
}

}  // namespace fb
