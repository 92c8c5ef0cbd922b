// `flushbench probe` (probe.h): one check per capability, each with its detail and its fix. Over
// 500 lines because it is a list of independent checks of the same shape; each reads on its own.
#include "host/env/probe.h"

#include "host/counters/perf_counters.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <linux/perf_event.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <system_error>
#include <utility>

#include <fmt/format.h>

#include "common/x86/cpu.h"
#include "host/env/cpuinfo.h"
#include "host/sys/fd.h"
#include "host/sys/kvm.h"
#include "host/sys/perf_event.h"
#include "host/sys/sysfs.h"
#include "host/vfio/vfio_sysfs.h"

extern char** environ;

namespace fb {

namespace fs = std::filesystem;

namespace {

// ---- small OS helpers ----------------------------------------------------------------------------

std::string errno_text(int e) { return std::error_code(e, std::generic_category()).message(); }

bool path_exists(const fs::path& p) {
    std::error_code ec;
    return fs::exists(p, ec);
}

bool is_dir(const fs::path& p) {
    std::error_code ec;
    return fs::is_directory(p, ec);
}

std::vector<std::string> dir_names(const fs::path& dir) {
    std::vector<std::string> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        out.push_back(it->path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
    return s;
}

std::string find_on_path(const std::string& name, const std::string& path_env) {
    std::string path = path_env;
    if (path.empty()) {
        const char* p = std::getenv("PATH");
        path = p ? p : "/usr/local/bin:/usr/bin:/bin";
    }
    std::stringstream ss(path);
    for (std::string dir; std::getline(ss, dir, ':');) {
        if (dir.empty()) continue;
        fs::path cand = fs::path(dir) / name;
        std::error_code ec;
        if (fs::is_regular_file(cand, ec) && ::access(cand.c_str(), X_OK) == 0) return cand.string();
    }
    return {};
}

// Runs argv without a shell, stdout+stderr captured, killed after `timeout`. nullopt if it could not
// run, was killed, or exited non-zero.
std::optional<std::string> run_capture(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) != 0) return std::nullopt;
    UniqueFd rd(pipefd[0]), wr(pipefd[1]);

    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, wr.get(), 1);
    posix_spawn_file_actions_adddup2(&fa, wr.get(), 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) return std::nullopt;
    wr.reset();

    std::string out;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    bool timed_out = false;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            timed_out = true;
            break;
        }
        pollfd p{rd.get(), POLLIN, 0};
        int n = ::poll(&p, 1, int(left.count()));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) continue;
        char buf[4096];
        ssize_t got = ::read(rd.get(), buf, sizeof buf);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) break;
        if (out.size() < (1u << 20)) out.append(buf, size_t(got));
    }
    if (timed_out) ::kill(pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (timed_out || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
    return out;
}

// modprobe advice is useless on a kernel without module support; say so where it matters.
std::string module_note(const std::string& proc_root) {
    if (!path_exists(proc_root + "/modules"))
        return " (this kernel has no loadable-module support, no /proc/modules: the driver must be built in)";
    return {};
}

// "491520K" -> bytes, as sysfs cache/index*/size prints it.
std::optional<uint64_t> parse_cache_size(const std::string& s) {
    if (s.empty()) return std::nullopt;
    uint64_t mult = 1;
    std::string num = s;
    char last = s.back();
    if (last == 'K' || last == 'M' || last == 'G') {
        mult = last == 'K' ? 1024 : last == 'M' ? 1024 * 1024 : 1024ull * 1024 * 1024;
        num.pop_back();
    }
    auto v = parse_dec_u64(num);
    if (!v) return std::nullopt;
    return *v * mult;
}

struct Llc {
    uint64_t bytes = 0;
    std::string source;  // "L3, sysfs" / "cpuid"
};

Llc find_llc(const std::string& sysfs_root) {
    Llc best;
    uint64_t best_level = 0;
    fs::path cache = fs::path(sysfs_root) / "devices/system/cpu/cpu0/cache";
    for (const auto& idx : dir_names(cache)) {
        if (idx.rfind("index", 0) != 0) continue;
        auto level = parse_dec_u64(read_sysfs_attr((cache / idx / "level").string()).value_or(""));
        auto size = parse_cache_size(read_sysfs_attr((cache / idx / "size").string()).value_or(""));
        auto type = read_sysfs_attr((cache / idx / "type").string()).value_or("");
        if (!level || !size || type == "Instruction") continue;
        if (*level >= best_level) best_level = *level, best = {*size, fmt::format("L{}, sysfs", *level)};
    }
    if (best.bytes == 0) {
        if (uint64_t b = x86::llc_bytes()) best = {b, "cpuid"};
    }
    return best;
}

std::string human_bytes(uint64_t b) {
    if (b >= (1ull << 20) && b % (1ull << 20) == 0) return fmt::format("{} MiB", b >> 20);
    if (b >= (1ull << 10) && b % (1ull << 10) == 0) return fmt::format("{} KiB", b >> 10);
    return fmt::format("{} B", b);
}

std::string flavour_of_module(const std::string& m) {
    if (m == "kvm_intel") return "vmx";
    if (m == "kvm_amd") return "svm";
    return m;
}

// ---- the capabilities, one function each, in probe order -----------------------------------------

Capability probe_kvm(const ProbeOptions& o) {
    Capability c{"kvm", false, "", ""};
    std::string path = o.dev_root + "/kvm";
    std::string flavour = kvm_flavour(o.sysfs_root);
    KvmOpen k = open_kvm(path);
    if (!k.fd) {
        c.detail = fmt::format("{}; flavour={}", k.why, flavour);
        c.fix = k.err == EACCES || k.err == EPERM ? k.fix : k.fix + module_note(o.proc_root);
        return c;
    }
    const UniqueFd& kvm = k.fd;
    int api = ::ioctl(kvm.get(), KVM_GET_API_VERSION, 0);
    if (api != KVM_API_VERSION) {
        c.detail = api < 0 ? fmt::format("KVM_GET_API_VERSION failed: {}", errno_text(errno))
                           : fmt::format("KVM API version {}, expected {}", api, KVM_API_VERSION);
        c.detail += ", flavour=" + flavour;
        c.fix = "use a kernel whose KVM speaks API 12 (every mainline kernel since 2.6.22)";
        return c;
    }
    c.available = true;
    c.detail = fmt::format("{} opened, KVM API {}, flavour={}", path, api, flavour);
    if (flavour != "vmx" && flavour != "svm")
        c.detail += " (not VMX/SVM: exit and emulation costs differ from hardware-virtualized KVM)";
    return c;
}

Capability probe_kvm_vfio_device(const ProbeOptions& o) {
    Capability c{"kvm_vfio_device", false, "", ""};
    std::string path = o.dev_root + "/kvm";
    KvmOpen k = open_kvm(path);
    const UniqueFd& kvm = k.fd;
    if (!kvm) {
        c.detail = k.why;
        c.fix = "make /dev/kvm usable first (see kvm)";
        return c;
    }
    int vmfd = create_vm_fd(kvm.get());
    UniqueFd vm(vmfd);
    if (!vm) {
        c.detail = fmt::format("KVM_CREATE_VM failed: {}", errno_text(errno));
        c.fix = "KVM cannot create VMs here: check dmesg, and that no other hypervisor owns VT-x/AMD-V";
        return c;
    }
    kvm_create_device cd{};
    cd.type = KVM_DEV_TYPE_VFIO;
    if (::ioctl(vm.get(), KVM_CREATE_DEVICE, &cd) != 0) {
        int e = errno;
        c.detail = fmt::format("KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO) failed: {}", errno_text(e));
        c.fix = e == ENODEV ? "this KVM has no KVM-VFIO device: use a kernel built with CONFIG_KVM_VFIO"
                            : "check dmesg; the KVM-VFIO device is how VFIO files reach KVM's non-coherent DMA tracking";
        return c;
    }
    UniqueFd dev(int(cd.fd));
    c.available = true;
    c.detail = "KVM_CREATE_DEVICE(KVM_DEV_TYPE_VFIO) succeeded: VFIO files can be attached with KVM_DEV_VFIO_FILE_ADD";
    return c;
}

Capability probe_vfio(const ProbeOptions& o) {
    Capability c{"vfio", false, "", ""};
    fs::path dir = fs::path(o.dev_root) / "vfio";
    if (!is_dir(dir)) {
        bool loaded = is_dir(fs::path(o.sysfs_root) / "module" / "vfio");
        c.detail = fmt::format("no {} ({})", dir.string(),
                               loaded ? "vfio is loaded, but no device is bound to it"
                                      : "no /sys/module/vfio: VFIO is neither built in nor loaded");
        c.fix = "bind a device to a VFIO driver: modprobe vfio-pci; echo vfio-pci > "
                "/sys/bus/pci/devices/BDF/driver_override; echo BDF > /sys/bus/pci/devices/BDF/driver/unbind; "
                "echo BDF > /sys/bus/pci/drivers_probe (needs an IOMMU), or create an mdev (see mdev)" +
                module_note(o.proc_root);
        return c;
    }
    c.available = true;
    auto files = list_vfio_files(o.dev_root);
    if (files.empty()) {
        c.detail = fmt::format("{} exists but holds no group or device files: no device is bound to a VFIO driver",
                               dir.string());
        return c;
    }
    std::vector<std::string> parts;
    for (const auto& f : files) {
        VfioFileInfo info = describe_vfio_file(f, o.sysfs_root);
        std::vector<std::string> units;
        for (const auto& d : info.devices)
            units.push_back(d.iommu.name.empty() ? std::string(to_string(d.iommu.type)) : d.iommu.name);
        units.erase(std::unique(units.begin(), units.end()), units.end());
        parts.push_back(fmt::format("{}={}{}", fs::path(f).filename().string(), to_string(info.verdict),
                                    units.empty() ? "" : " (" + join(units, ",") + ")"));
    }
    c.detail = fmt::format("{}: {}", dir.string(), join(parts, ", "));
    return c;
}

Capability probe_iommu(const ProbeOptions& o) {
    Capability c{"iommu_snoop_control", false, "", ""};
    auto units = list_iommu_units(o.sysfs_root);
    if (units.empty()) {
        std::vector<std::string> args;
        std::stringstream ss(read_sysfs_attr(o.proc_root + "/cmdline").value_or(""));
        for (std::string a; ss >> a;)
            if (a.find("iommu") != std::string::npos) args.push_back(a);
        c.detail = fmt::format("no IOMMU units in {}/class/iommu (kernel command line: {})", o.sysfs_root,
                               args.empty() ? "no iommu options" : join(args, " "));
        c.fix = "enable VT-d / AMD-Vi in firmware and boot with intel_iommu=on (Intel; AMD-Vi is on by default)";
        // QEMU's emulated VT-d reports ECAP.SC only with snoop-control=on, so a nested setup can pick its mode.
        if (cpuinfo_has(read_cpuinfo(o.proc_root), x86::Feature::hypervisor))
            c.fix += "; inside a VM, give it a vIOMMU (QEMU -device intel-iommu,caching-mode=on) and bind an emulated "
                     "PCI device such as e1000 to vfio-pci: ECAP.SC is clear (non-coherent) unless snoop-control=on "
                     "(coherent; QEMU refuses that for vhost/VFIO-backed devices)";
        c.fix += ". Without an IOMMU only mdev devices give VFIO files, and those are always non-coherent";
        return c;
    }
    c.available = true;
    std::vector<std::string> parts;
    for (const auto& u : units) {
        switch (u.type) {
            case IommuType::intel_vtd:
                parts.push_back(u.ecap ? fmt::format("{} VT-d ecap=0x{:x} SC={} ({})", u.name, *u.ecap,
                                                     u.snoop_control ? 1 : 0, to_string(u.coherency))
                                       : fmt::format("{} VT-d, {}", u.name, u.reason));
                break;
            case IommuType::amd_vi: parts.push_back(u.name + " AMD-Vi (always coherent)"); break;
            case IommuType::virtio_iommu: parts.push_back(u.name + " virtio-iommu (non-coherent)"); break;
            default: parts.push_back(u.name + " " + u.reason); break;
        }
    }
    c.detail = join(parts, "; ");
    return c;
}

Capability probe_mdev(const ProbeOptions& o) {
    Capability c{"mdev", false, "", ""};
    auto types = list_mdev_types(o.sysfs_root);
    if (types.empty()) {
        c.detail = fmt::format("no mdev types offered ({}/class/mdev_bus {})", o.sysfs_root,
                               is_dir(fs::path(o.sysfs_root) / "class" / "mdev_bus") ? "is empty" : "does not exist");
        c.fix = "modprobe mtty (kernel sample driver, CONFIG_SAMPLE_VFIO_MDEV_MTTY), then echo $(uuidgen) > "
                "/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create gives a non-coherent VFIO group; "
                "mdpy/mbochs or i915 GVT-g (i915.enable_gvt=1, kvmgt) work too" +
                module_note(o.proc_root);
        return c;
    }
    c.available = true;
    std::vector<std::string> parts;
    for (const auto& t : types)
        parts.push_back(fmt::format("{}/{}{} available_instances={}", t.parent, t.type_id,
                                    t.name.empty() ? "" : " \"" + t.name + "\"",
                                    t.available_instances ? std::to_string(*t.available_instances) : "?"));
    c.detail = join(parts, ", ") + " (an mdev has no IOMMU: its VFIO group is non-coherent)";
    return c;
}

Capability probe_perf(const ProbeOptions& o) {
    Capability c{"hw_perf_counters", false, "", ""};
    perf_event_attr attr{};
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_HARDWARE;
    attr.config = PERF_COUNT_HW_CPU_CYCLES;
    attr.disabled = 1;
    attr.exclude_kernel = 1;  // user-only needs the least privilege (perf_event_paranoid <= 2)
    attr.exclude_hv = 1;
    UniqueFd fd(perf_event_open(&attr, 0, -1, -1));
    auto sources = dir_names(fs::path(o.sysfs_root) / "bus" / "event_source" / "devices");
    if (fd) {
        c.available = true;
        c.detail = fmt::format("perf_event_open(cycles) on this thread succeeded; PMUs: {}", join(sources, ", "));
        return c;
    }
    int e = errno;
    std::string paranoid = read_sysfs_attr(o.proc_root + "/sys/kernel/perf_event_paranoid").value_or("?");
    bool cpu_pmu = std::any_of(sources.begin(), sources.end(), [](const std::string& s) {
        return s == "cpu" || s.rfind("cpu_", 0) == 0 || s.rfind("armv8", 0) == 0;
    });
    c.detail = fmt::format("perf_event_open(cycles) failed: {}; perf_event_paranoid={}", errno_text(e), paranoid);
    if (e == EACCES || e == EPERM) {
        c.fix = "sysctl kernel.perf_event_paranoid=1 (or run as root / grant CAP_PERFMON)";
    } else if (!cpu_pmu) {
        c.detail += fmt::format("; no hardware PMU exposed: {}/bus/event_source/devices has only {}", o.sysfs_root,
                                sources.empty() ? "nothing" : join(sources, ", "));
        c.fix = "run on bare metal or give the VM a virtual PMU (QEMU -cpu host,pmu=on; libvirt <pmu state='on'/>); "
                "TSC timings do not need it, counter columns will be empty";
    } else {
        c.fix = "the CPU PMU exists but refused a cycles event: check that no other tool (NMI watchdog: "
                "sysctl kernel.nmi_watchdog=0) holds the counters, and dmesg";
    }
    return c;
}

Capability probe_tracepoints(const ProbeOptions& o) {
    Capability c{"kvm_tracepoints", false, "", ""};
    static const char* const kEvents[] = {"kvm_exit", "kvm_entry", "kvm_emulate_insn", "kvm_pio", "kvm_userspace_exit"};
    const fs::path roots[] = {fs::path(o.sysfs_root) / "kernel/tracing", fs::path(o.sysfs_root) / "kernel/debug/tracing"};
    for (const auto& root : roots) {
        fs::path kvm = root / "events" / "kvm";
        if (!is_dir(kvm)) continue;
        std::vector<std::string> have, missing;
        for (const char* ev : kEvents) (is_dir(kvm / ev) ? have : missing).push_back(ev);
        c.available = true;
        c.detail = fmt::format("{}: {} exist{}", kvm.string(), join(have, ", "), have.size() == 1 ? "s" : "");
        if (!missing.empty()) c.detail += "; missing: " + join(missing, ", ");
        c.detail += " (whether they fire under this KVM is measured per run)";
        return c;
    }
    bool mounted = !dir_names(roots[0]).empty() || !dir_names(roots[1]).empty();
    auto fs_list = read_sysfs_attr(o.proc_root + "/filesystems");
    bool supported = !fs_list || fs_list->find("tracefs") != std::string::npos;
    if (mounted) {
        c.detail = "tracefs is mounted but has no events/kvm";
        c.fix = "the kvm module provides the kvm:* events: load it (modprobe kvm)" + module_note(o.proc_root);
    } else if (supported) {
        c.detail = fmt::format("tracefs is not mounted at {} or {} (flushbench does not mount it)", roots[0].string(),
                               roots[1].string());
        c.fix = "mount -t tracefs nodev /sys/kernel/tracing";
    } else {
        c.detail = "this kernel has no tracefs (not in /proc/filesystems)";
        c.fix = "use a kernel built with CONFIG_FTRACE and CONFIG_TRACING";
    }
    return c;
}

Capability probe_pcm(const ProbeOptions& o) {
    Capability c{"intel_pcm", false, "", ""};
    std::string pcm = find_on_path("pcm", o.path_env);
    auto cpuinfo = read_cpuinfo(o.proc_root);
    std::string vendor = cpuinfo.count("vendor_id") ? cpuinfo["vendor_id"] : "unknown";
    fs::path msr = fs::path(o.dev_root) / "cpu/0/msr";
    bool intel = vendor == "GenuineIntel", have_msr = path_exists(msr);
    c.detail = fmt::format("pcm {}; vendor {}; {} {}", pcm.empty() ? "not on PATH" : "at " + pcm, vendor,
                           msr.string(), have_msr ? "exists" : "missing");
    c.available = !pcm.empty() && intel && have_msr;
    if (c.available) {
        if (cpuinfo_has(cpuinfo, x86::Feature::hypervisor))
            c.detail += " (under a hypervisor PCM usually cannot reach the uncore counters)";
        return c;
    }
    std::vector<std::string> fixes;
    if (!intel) fixes.push_back(fmt::format("PCM supports Intel processors only (this CPU is {})", vendor));
    if (pcm.empty()) fixes.push_back("apt-get install pcm");
    if (!have_msr) fixes.push_back("modprobe msr" + module_note(o.proc_root));
    c.fix = join(fixes, "; ");
    return c;
}

Capability probe_qemu(const ProbeOptions& o) {
    Capability c{"qemu", false, "", ""};
    std::string qemu = find_on_path("qemu-system-x86_64", o.path_env);
    if (qemu.empty()) {
        c.detail = "qemu-system-x86_64 not on PATH";
        c.fix = "apt-get install qemu-system-x86";
        return c;
    }
    if (!o.run_qemu) {
        c.available = true;
        c.detail = qemu + " (not run)";
        return c;
    }
    using namespace std::chrono_literals;
    auto version = run_capture({qemu, "--version"}, 10s);
    if (!version) {
        c.detail = qemu + " --version failed or timed out";
        c.fix = "run `" + qemu + " --version` by hand to see why; reinstall qemu-system-x86";
        return c;
    }
    std::string first = version->substr(0, version->find('\n'));
    auto machines = run_capture({qemu, "-machine", "help"}, 10s);
    bool microvm = false;
    if (machines) {
        std::stringstream ss(*machines);
        for (std::string line; std::getline(ss, line);)
            if (line.rfind("microvm", 0) == 0) microvm = true;
    }
    c.available = true;
    c.detail = fmt::format("{}: {}; microvm {}", qemu, first,
                           !machines ? "unknown (-machine help failed)" : microvm ? "available" : "not available");
    return c;
}

Capability probe_cpu(const ProbeOptions& o) {
    Capability c{"cpu", true, "", ""};
    auto ci = read_cpuinfo(o.proc_root);
    auto get = [&](const char* k) { return ci.count(k) ? ci[k] : std::string("?"); };
    Llc llc = find_llc(o.sysfs_root);
    std::string hv = "no hypervisor bit";
    if (cpuinfo_has(ci, x86::Feature::hypervisor)) {
        auto v = x86::hypervisor_vendor();
        hv = v.s[0] ? fmt::format("hypervisor bit set ({})", v.s) : "hypervisor bit set";
    }
    c.detail = fmt::format("{}, {} family {} model {} stepping {}, microcode {}, LLC {}, {}", get("model name"),
                           get("vendor_id"), get("cpu family"), get("model"), get("stepping"), get("microcode"),
                           llc.bytes ? human_bytes(llc.bytes) + " (" + llc.source + ")" : "unknown", hv);
    return c;
}

Capability probe_kernel(const ProbeOptions&) {
    Capability c{"kernel", true, "", ""};
    utsname u{};
    if (::uname(&u) != 0) {
        c.detail = "uname failed: " + errno_text(errno);
        return c;
    }
    c.detail = fmt::format("{} {} {}", u.sysname, u.release, u.version);
    return c;
}

Capability probe_frequency(const ProbeOptions& o) {
    Capability c{"frequency_scaling", false, "", ""};
    fs::path cpu = fs::path(o.sysfs_root) / "devices/system/cpu";
    auto governor = read_sysfs_attr((cpu / "cpu0/cpufreq/scaling_governor").string());
    if (!governor) {
        if (cpuinfo_has(read_cpuinfo(o.proc_root), x86::Feature::hypervisor)) {
            c.detail = "no cpufreq (virtual machine?): the host decides the frequency, it cannot be pinned from here";
            c.fix = "pin the frequency on the physical host (cpupower frequency-set -g performance; disable turbo) "
                    "and compare numbers only within one run";
        } else {
            c.detail = "no cpufreq driver loaded: firmware controls the frequency and turbo state is unknown";
            c.fix = "load a cpufreq driver (intel_pstate / amd-pstate / acpi-cpufreq) and set the performance "
                    "governor, or disable turbo in firmware";
        }
        return c;
    }
    auto driver = read_sysfs_attr((cpu / "cpu0/cpufreq/scaling_driver").string()).value_or("?");
    // intel_pstate: no_turbo=1 means turbo off; acpi-cpufreq / amd-pstate: boost=1 means turbo on.
    std::optional<bool> turbo;
    std::string turbo_fix;
    if (auto nt = parse_dec_u64(read_sysfs_attr((cpu / "intel_pstate/no_turbo").string()).value_or(""))) {
        turbo = *nt == 0;
        turbo_fix = "echo 1 > /sys/devices/system/cpu/intel_pstate/no_turbo";
    } else if (auto b = parse_dec_u64(read_sysfs_attr((cpu / "cpufreq/boost").string()).value_or(""))) {
        turbo = *b != 0;
        turbo_fix = "echo 0 > /sys/devices/system/cpu/cpufreq/boost";
    } else if (auto pb = parse_dec_u64(read_sysfs_attr((cpu / "cpu0/cpufreq/boost").string()).value_or(""))) {
        turbo = *pb != 0;
        turbo_fix = "echo 0 | tee /sys/devices/system/cpu/cpu*/cpufreq/boost";
    }
    bool perf_gov = *governor == "performance";
    std::string turbo_text = !turbo ? "turbo not controllable here" : *turbo ? "turbo on" : "turbo off";
    c.detail = fmt::format("driver {}, governor {}, {}", driver, *governor, turbo_text);
    c.available = perf_gov && !turbo.value_or(false);
    if (c.available) {
        c.detail += ": stable";
        return c;
    }
    c.detail += ": numbers will be noisy";
    std::vector<std::string> fixes;
    if (!perf_gov) fixes.push_back("cpupower frequency-set -g performance");
    if (turbo.value_or(false)) fixes.push_back(turbo_fix);
    c.fix = join(fixes, "; ");
    return c;
}

// The probe table, like kvm-unit-tests' test table: adding a capability is one line.
using ProbeFn = Capability (*)(const ProbeOptions&);
// What `run --events` can count here, by actually opening each (hardware and software).
Capability probe_countable(const ProbeOptions&) {
    Capability c{"countable_events", false, "", ""};
    auto events = countable_events(64);
    c.available = !events.empty();
    c.detail = events.empty() ? "no perf event could be opened" : join(events, ", ");
    if (!c.available) c.fix = "check /proc/sys/kernel/perf_event_paranoid (run as root or lower it)";
    return c;
}

constexpr ProbeFn kProbes[] = {
    probe_kvm,  probe_kvm_vfio_device, probe_vfio, probe_iommu, probe_mdev,   probe_perf,
    probe_countable, probe_tracepoints, probe_pcm, probe_qemu, probe_cpu,   probe_kernel, probe_frequency,
};

}  // namespace

std::string kvm_flavour(const std::string& sysfs_root) {
    std::vector<std::string> flavours;
    for (const auto& m : dir_names(fs::path(sysfs_root) / "module"))
        if (m.rfind("kvm_", 0) == 0) flavours.push_back(flavour_of_module(m));
    return flavours.empty() ? "none" : join(flavours, "+");
}

std::vector<Capability> probe_host(const ProbeOptions& opts) {
    std::vector<Capability> caps;
    for (ProbeFn fn : kProbes) caps.push_back(fn(opts));
    return caps;
}

void to_json(nlohmann::json& j, const Capability& c) {
    j = {{"name", c.name}, {"available", c.available}, {"detail", c.detail}, {"fix", c.fix}};
}

nlohmann::json probe_to_json(const std::vector<Capability>& caps) {
    return {{"capabilities", caps}};
}

std::string format_probe_table(const std::vector<Capability>& caps) {
    size_t w = 0;
    for (const auto& c : caps) w = std::max(w, c.name.size());
    std::string out;
    for (const auto& c : caps) {
        out += fmt::format("{:<{}}  {:<3}  {}\n", c.name, w, c.available ? "yes" : "no", c.detail);
        if (!c.available && !c.fix.empty()) out += fmt::format("{:<{}}       fix: {}\n", "", w, c.fix);
    }
    return out;
}

HostFingerprint host_fingerprint() {
    HostFingerprint f;
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) == 0) f.hostname = host;
    auto ci = read_cpuinfo("/proc");
    f.cpu_model = ci["model name"];
    f.cpu_vendor = ci["vendor_id"];
    f.microcode = ci["microcode"];
    utsname u{};
    if (::uname(&u) == 0) f.kernel = fmt::format("{} {}", u.release, u.version);
    f.kvm_flavour = kvm_flavour();
    f.llc_bytes = find_llc("/sys").bytes;
    long n = ::sysconf(_SC_NPROCESSORS_ONLN);
    f.online_cpus = n > 0 ? uint32_t(n) : 0;
    return f;
}

void to_json(nlohmann::json& j, const HostFingerprint& f) {
    j = {{"hostname", f.hostname},       {"cpu_model", f.cpu_model}, {"cpu_vendor", f.cpu_vendor},
         {"microcode", f.microcode},     {"kernel", f.kernel},       {"kvm_flavour", f.kvm_flavour},
         {"llc_bytes", f.llc_bytes},     {"online_cpus", f.online_cpus}};
}

}  // namespace fb
