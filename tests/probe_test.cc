// probe_host() must tell the truth about the machine it runs on. Each test here looks at the
// machine itself, independently of probe.cc, and checks the probe agrees; nothing machine-specific
// is hard-coded, so the same tests hold on a VMX, SVM or PVM host, with or without VFIO.
#include "host/env/probe.h"
#include "host/env/regime.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;

namespace fb {
namespace {

const std::vector<std::string> kOrder = {"kvm",     "kvm_vfio_device", "vfio",      "iommu_snoop_control",
                                         "mdev",    "hw_perf_counters", "countable_events", "kvm_tracepoints", "intel_pcm",
                                         "qemu",    "cpu",             "kernel",    "frequency_scaling"};

// One probe of the real machine for the whole suite: it runs QEMU twice and creates a VM.
const std::vector<Capability>& real_caps() {
    static const std::vector<Capability> caps = probe_host();
    return caps;
}

const Capability& cap(const std::vector<Capability>& caps, const std::string& name) {
    for (const auto& c : caps)
        if (c.name == name) return c;
    static const Capability missing{"<missing>", false, "", ""};
    ADD_FAILURE() << "no capability " << name;
    return missing;
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

// What a shell would say, for cross-checking PATH lookups and QEMU's own output.
std::string shell(const std::string& cmd) {
    std::string out;
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
        char buf[4096];
        size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
        ::pclose(p);
    }
    return out;
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

std::string cpuinfo_field(const std::string& key) {
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);) {
        if (line.rfind(key, 0) != 0) continue;
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        std::string k = line.substr(0, colon);
        k.erase(k.find_last_not_of(" \t") + 1);
        if (k != key) continue;
        std::string v = line.substr(colon + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
    }
    return {};
}

TEST(ProbeHost, ReportsEveryCapabilityInOrder) {
    const auto& caps = real_caps();
    std::vector<std::string> names;
    for (const auto& c : caps) names.push_back(c.name);
    EXPECT_EQ(names, kOrder);
}

TEST(ProbeHost, EveryCapabilityExplainsItselfAndEveryNoHasAFix) {
    for (const auto& c : real_caps()) {
        EXPECT_FALSE(c.detail.empty()) << c.name;
        if (!c.available) {
            EXPECT_FALSE(c.fix.empty()) << c.name << ": " << c.detail;
        }
    }
}

TEST(ProbeHost, KvmMatchesOpeningDevKvm) {
    int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    bool ok = fd >= 0 && ::ioctl(fd, KVM_GET_API_VERSION, 0) == 12;
    if (fd >= 0) ::close(fd);
    const auto& c = cap(real_caps(), "kvm");
    EXPECT_EQ(c.available, ok) << c.detail;

    // The flavour is whatever kvm_* modules /sys/module shows (kvm_pvm on the PVM build hosts).
    std::vector<std::string> expected;
    std::error_code ec;
    for (fs::directory_iterator it("/sys/module", ec), end; !ec && it != end; it.increment(ec)) {
        std::string m = it->path().filename().string();
        if (m.rfind("kvm_", 0) != 0) continue;
        expected.push_back(m == "kvm_intel" ? "vmx" : m == "kvm_amd" ? "svm" : m);
    }
    EXPECT_TRUE(contains(c.detail, "flavour=")) << c.detail;
    if (expected.empty()) {
        EXPECT_TRUE(contains(c.detail, "flavour=none")) << c.detail;
    }
    for (const auto& f : expected) {
        EXPECT_TRUE(contains(c.detail, f)) << f << " missing from: " << c.detail;
        EXPECT_TRUE(contains(kvm_flavour(), f)) << kvm_flavour();
    }
}

TEST(ProbeHost, KvmVfioDeviceMatchesCreatingOne) {
    bool ok = false;
    int kvm = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm >= 0) {
        int vm = ::ioctl(kvm, KVM_CREATE_VM, 0);
        if (vm >= 0) {
            kvm_create_device cd{};
            cd.type = KVM_DEV_TYPE_VFIO;
            if (::ioctl(vm, KVM_CREATE_DEVICE, &cd) == 0) {
                ok = true;
                ::close(int(cd.fd));
            }
            ::close(vm);
        }
        ::close(kvm);
    }
    const auto& c = cap(real_caps(), "kvm_vfio_device");
    EXPECT_EQ(c.available, ok) << c.detail;
}

TEST(ProbeHost, VfioMatchesDevVfio) {
    const auto& c = cap(real_caps(), "vfio");
    EXPECT_EQ(c.available, fs::is_directory("/dev/vfio")) << c.detail;
}

TEST(ProbeHost, HwPerfCountersMatchOpeningCycles) {
    perf_event_attr attr{};
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_HARDWARE;
    attr.config = PERF_COUNT_HW_CPU_CYCLES;
    attr.disabled = 1;
    attr.exclude_kernel = 1;
    attr.exclude_hv = 1;
    int fd = int(::syscall(SYS_perf_event_open, &attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC));
    int err = errno;
    if (fd >= 0) ::close(fd);
    const auto& c = cap(real_caps(), "hw_perf_counters");
    EXPECT_EQ(c.available, fd >= 0) << c.detail;
    if (fd < 0) {
        EXPECT_TRUE(contains(c.detail, std::strerror(err))) << c.detail;
    }
}

TEST(ProbeHost, KvmTracepointsMatchTracefs) {
    bool mounted = fs::is_directory("/sys/kernel/tracing/events/kvm") ||
                   fs::is_directory("/sys/kernel/debug/tracing/events/kvm");
    const auto& c = cap(real_caps(), "kvm_tracepoints");
    EXPECT_EQ(c.available, mounted) << c.detail;
    if (mounted) {
        EXPECT_TRUE(contains(c.detail, "kvm_exit")) << c.detail;
    }
}

TEST(ProbeHost, IntelPcmNeedsBinaryIntelAndMsr) {
    bool binary = !shell("command -v pcm 2>/dev/null").empty();
    bool intel = cpuinfo_field("vendor_id") == "GenuineIntel";
    bool msr = fs::exists("/dev/cpu/0/msr");
    const auto& c = cap(real_caps(), "intel_pcm");
    EXPECT_EQ(c.available, binary && intel && msr) << c.detail;
    if (!binary) {
        EXPECT_TRUE(contains(c.fix, "apt-get install pcm")) << c.fix;
    }
    if (!msr) {
        EXPECT_TRUE(contains(c.fix, "modprobe msr")) << c.fix;
    }
    if (!intel) {
        EXPECT_TRUE(contains(c.fix, "Intel")) << c.fix;
    }
}

TEST(ProbeHost, QemuMatchesWhich) {
    std::string path = first_line(shell("which qemu-system-x86_64 2>/dev/null"));
    const auto& c = cap(real_caps(), "qemu");
    EXPECT_EQ(c.available, !path.empty()) << c.detail;
    if (path.empty()) return;
    EXPECT_TRUE(contains(c.detail, path)) << c.detail;
    EXPECT_TRUE(contains(c.detail, first_line(shell(path + " --version 2>&1")))) << c.detail;
    bool microvm = contains("\n" + shell(path + " -machine help 2>&1"), "\nmicrovm");
    EXPECT_TRUE(contains(c.detail, microvm ? "microvm available" : "microvm not available")) << c.detail;
}

TEST(ProbeHost, CpuAndKernelDescribeThisMachine) {
    const auto& cpu = cap(real_caps(), "cpu");
    EXPECT_TRUE(cpu.available);
    EXPECT_TRUE(contains(cpu.detail, cpuinfo_field("model name"))) << cpu.detail;
    EXPECT_TRUE(contains(cpu.detail, cpuinfo_field("vendor_id"))) << cpu.detail;
    bool hv = contains(" " + cpuinfo_field("flags") + " ", " hypervisor ");
    EXPECT_TRUE(contains(cpu.detail, hv ? "hypervisor bit set" : "no hypervisor bit")) << cpu.detail;

    utsname u{};
    ASSERT_EQ(::uname(&u), 0);
    const auto& k = cap(real_caps(), "kernel");
    EXPECT_TRUE(k.available);
    EXPECT_TRUE(contains(k.detail, u.release)) << k.detail;
}

TEST(ProbeHost, FrequencyScalingReportsCpufreqOrItsAbsence) {
    const auto& c = cap(real_caps(), "frequency_scaling");
    std::ifstream gov("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor");
    std::string g;
    if (gov >> g) {
        EXPECT_TRUE(contains(c.detail, "governor " + g)) << c.detail;
        if (g != "performance") {
            EXPECT_FALSE(c.available);
        }
    } else {
        EXPECT_TRUE(contains(c.detail, "no cpufreq")) << c.detail;
    }
}

TEST(ProbeHost, JsonListsAllCapabilitiesWithFourKeys) {
    nlohmann::json j = probe_to_json(real_caps());
    ASSERT_TRUE(j.contains("capabilities"));
    ASSERT_TRUE(j["capabilities"].is_array());
    ASSERT_EQ(j["capabilities"].size(), kOrder.size());
    for (size_t i = 0; i < kOrder.size(); ++i) {
        const auto& e = j["capabilities"][i];
        EXPECT_EQ(e.size(), 4u) << e.dump();
        EXPECT_EQ(e.at("name"), kOrder[i]);
        EXPECT_TRUE(e.at("available").is_boolean());
        EXPECT_TRUE(e.at("detail").is_string());
        EXPECT_TRUE(e.at("fix").is_string());
        if (!e["available"].get<bool>()) {
            EXPECT_FALSE(e["fix"].get<std::string>().empty()) << e.dump();
        }
    }
}

TEST(ProbeHost, TableHasOneLinePerCapabilityAndFixesUnderNos) {
    const auto& caps = real_caps();
    std::stringstream ss(format_probe_table(caps));
    std::vector<std::string> lines;
    for (std::string l; std::getline(ss, l);) lines.push_back(l);
    size_t i = 0;
    for (const auto& c : caps) {
        ASSERT_LT(i, lines.size());
        EXPECT_EQ(lines[i].rfind(c.name + " ", 0), 0u) << lines[i];
        EXPECT_TRUE(contains(lines[i], c.available ? " yes " : " no ")) << lines[i];
        EXPECT_TRUE(contains(lines[i], c.detail)) << lines[i];
        ++i;
        if (!c.available) {
            ASSERT_LT(i, lines.size());
            EXPECT_EQ(lines[i].rfind(" ", 0), 0u) << "fix line must be indented: " << lines[i];
            EXPECT_TRUE(contains(lines[i], "fix: " + c.fix)) << lines[i];
            ++i;
        }
    }
    EXPECT_EQ(i, lines.size());
}

TEST(ProbeHost, FingerprintMatchesThisMachine) {
    HostFingerprint f = host_fingerprint();
    char host[256] = {};
    ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
    EXPECT_EQ(f.hostname, host);
    EXPECT_EQ(f.cpu_model, cpuinfo_field("model name"));
    EXPECT_EQ(f.cpu_vendor, cpuinfo_field("vendor_id"));
    EXPECT_EQ(f.kvm_flavour, kvm_flavour());
    EXPECT_EQ(f.online_cpus, uint32_t(::sysconf(_SC_NPROCESSORS_ONLN)));
    utsname u{};
    ASSERT_EQ(::uname(&u), 0);
    EXPECT_TRUE(contains(f.kernel, u.release));
    nlohmann::json j = f;
    for (const char* k : {"hostname", "cpu_model", "cpu_vendor", "microcode", "kernel", "kvm_flavour", "llc_bytes",
                          "online_cpus"})
        EXPECT_TRUE(j.contains(k)) << k;
}

// The same probe over fake trees: the paths a bare-metal VT-d host with mtty would show.
class FakeHost : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/fb_probe_XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        base_ = tmpl;
        o_.sysfs_root = (base_ / "sys").string();
        o_.proc_root = (base_ / "proc").string();
        o_.dev_root = (base_ / "dev").string();
        o_.path_env = (base_ / "bin").string();
        o_.run_qemu = false;
        for (const char* d : {"sys", "proc", "dev", "bin"}) fs::create_directories(base_ / d);
        write("proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
                              "model name\t: Fake Xeon\nstepping\t: 8\nmicrocode\t: 0x2b000111\nflags\t\t: fpu sse2\n\n"
                              "processor\t: 1\nvendor_id\t: Other\n");
        write("proc/sys/kernel/perf_event_paranoid", "2\n");
        write("proc/modules", "");
        write("sys/module/kvm_intel/parameters/nested", "Y\n");
        write("sys/devices/virtual/iommu/dmar0/intel-iommu/ecap", "f050da\n");
        link("sys/class/iommu/dmar0", "sys/devices/virtual/iommu/dmar0");
        write("sys/devices/virtual/mtty/mtty/mdev_supported_types/mtty-2/name", "Dual-port-serial\n");
        write("sys/devices/virtual/mtty/mtty/mdev_supported_types/mtty-2/available_instances", "12\n");
        link("sys/class/mdev_bus/mtty", "sys/devices/virtual/mtty/mtty");
        write("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "powersave\n");
        write("sys/devices/system/cpu/cpu0/cpufreq/scaling_driver", "intel_pstate\n");
        write("sys/devices/system/cpu/intel_pstate/no_turbo", "0\n");
        write("sys/devices/system/cpu/cpu0/cache/index3/level", "3\n");
        write("sys/devices/system/cpu/cpu0/cache/index3/type", "Unified\n");
        write("sys/devices/system/cpu/cpu0/cache/index3/size", "61440K\n");
        for (const char* ev : {"kvm_exit", "kvm_entry", "kvm_pio"})
            fs::create_directories(base_ / "sys/kernel/tracing/events/kvm" / ev);
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(base_, ec);
    }
    void write(const std::string& at, const std::string& text) {
        fs::create_directories((base_ / at).parent_path());
        std::ofstream(base_ / at) << text;
    }
    void link(const std::string& at, const std::string& target) {
        fs::path a = base_ / at;
        fs::create_directories(a.parent_path());
        fs::create_directory_symlink((base_ / target).lexically_relative(a.parent_path()), a);
    }
    fs::path base_;
    ProbeOptions o_;
};

TEST_F(FakeHost, ReadsEverythingFromTheRedirectedRoots) {
    auto caps = probe_host(o_);
    for (const auto& c : caps)
        if (!c.available) {
            EXPECT_FALSE(c.fix.empty()) << c.name;
        }

    const auto& kvm = cap(caps, "kvm");  // no <dev_root>/kvm
    EXPECT_FALSE(kvm.available);
    EXPECT_TRUE(contains(kvm.detail, "flavour=vmx")) << kvm.detail;
    EXPECT_FALSE(cap(caps, "kvm_vfio_device").available);
    EXPECT_FALSE(cap(caps, "vfio").available);

    const auto& iommu = cap(caps, "iommu_snoop_control");
    EXPECT_TRUE(iommu.available);
    EXPECT_TRUE(contains(iommu.detail, "dmar0 VT-d ecap=0xf050da SC=1")) << iommu.detail;

    const auto& mdev = cap(caps, "mdev");
    EXPECT_TRUE(mdev.available);
    EXPECT_TRUE(contains(mdev.detail, "mtty/mtty-2")) << mdev.detail;
    EXPECT_TRUE(contains(mdev.detail, "available_instances=12")) << mdev.detail;

    const auto& tp = cap(caps, "kvm_tracepoints");
    EXPECT_TRUE(tp.available);
    EXPECT_TRUE(contains(tp.detail, "kvm_exit, kvm_entry, kvm_pio exist")) << tp.detail;
    EXPECT_TRUE(contains(tp.detail, "missing: kvm_emulate_insn, kvm_userspace_exit")) << tp.detail;

    const auto& pcm = cap(caps, "intel_pcm");
    EXPECT_FALSE(pcm.available);
    EXPECT_TRUE(contains(pcm.fix, "apt-get install pcm")) << pcm.fix;
    EXPECT_TRUE(contains(pcm.fix, "modprobe msr")) << pcm.fix;

    const auto& qemu = cap(caps, "qemu");
    EXPECT_FALSE(qemu.available);
    EXPECT_TRUE(contains(qemu.fix, "qemu-system-x86")) << qemu.fix;

    const auto& cpu = cap(caps, "cpu");
    EXPECT_TRUE(contains(cpu.detail, "Fake Xeon, GenuineIntel family 6 model 143 stepping 8, microcode 0x2b000111"))
        << cpu.detail;
    EXPECT_TRUE(contains(cpu.detail, "LLC 60 MiB (L3, sysfs)")) << cpu.detail;
    EXPECT_TRUE(contains(cpu.detail, "no hypervisor bit")) << cpu.detail;

    const auto& freq = cap(caps, "frequency_scaling");
    EXPECT_FALSE(freq.available);
    EXPECT_TRUE(contains(freq.detail, "governor powersave, turbo on")) << freq.detail;
    EXPECT_TRUE(contains(freq.fix, "cpupower frequency-set -g performance")) << freq.fix;
    EXPECT_TRUE(contains(freq.fix, "intel_pstate/no_turbo")) << freq.fix;
}

TEST_F(FakeHost, PinnedFrequencyIsStable) {
    write("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "performance\n");
    write("sys/devices/system/cpu/intel_pstate/no_turbo", "1\n");
    auto caps = probe_host(o_);
    const auto& c = cap(caps, "frequency_scaling");
    EXPECT_TRUE(c.available) << c.detail;
    EXPECT_TRUE(contains(c.detail, "turbo off")) << c.detail;
}

TEST_F(FakeHost, NoCpufreqInAVirtualMachineIsSaidPlainly) {
    fs::remove_all(base_ / "sys/devices/system/cpu/cpu0/cpufreq");
    write("proc/cpuinfo", "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu hypervisor\n");
    auto caps = probe_host(o_);
    const auto& c = cap(caps, "frequency_scaling");
    EXPECT_FALSE(c.available);
    EXPECT_TRUE(contains(c.detail, "no cpufreq (virtual machine?)")) << c.detail;
    EXPECT_FALSE(c.fix.empty());
    const auto& pcm = cap(caps, "intel_pcm");
    EXPECT_TRUE(contains(pcm.fix, "Intel processors only")) << pcm.fix;
}

TEST_F(FakeHost, NothingAtAllStillAnswersEveryLine) {
    fs::remove_all(base_ / "sys");
    fs::remove_all(base_ / "proc");
    auto caps = probe_host(o_);
    ASSERT_EQ(caps.size(), kOrder.size());
    for (const auto& c : caps) {
        EXPECT_FALSE(c.detail.empty()) << c.name;
        if (!c.available) {
            EXPECT_FALSE(c.fix.empty()) << c.name;
        }
    }
    EXPECT_TRUE(contains(cap(caps, "iommu_snoop_control").detail, "no IOMMU units in")) << cap(caps, "iommu_snoop_control").detail;
    EXPECT_TRUE(contains(cap(caps, "kvm").detail, "flavour=none"));
}

// The fake host is Intel with kvm_intel loaded and an mtty mdev type: the EPT rules apply and the
// non-coherent mode is one mdev away, which is not reachable until the mdev exists.
TEST_F(FakeHost, RegimeFollowsTheKvmFlavourAndTheNonCoherentSources) {
    auto r = host_regime(o_);
    EXPECT_FALSE(r["wbinvd"]["noncoherent_reachable"].get<bool>()) << "an mdev type is not yet a file";
    EXPECT_TRUE(contains(r["wbinvd"]["how"].get<std::string>(), "create an mdev of mtty/mtty-2")) << r["wbinvd"]["how"];
    // Every VFIO file that sysfs calls non-coherent was tried the way a run attaches it; the fake
    // tree's files are not real groups, so the kernel refuses them, with the reason.
    for (const auto& f : r["wbinvd"]["files"]) {
        EXPECT_FALSE(f.value("reachable", true)) << f.dump();
        EXPECT_FALSE(f.value("refused", "").empty()) << f.dump();
    }
    EXPECT_TRUE(contains(r["wbinvd"]["noncoherent"].get<std::string>(), "wbinvd_dirty_mask"));
    EXPECT_EQ(r["memtype"]["flavour"], "vmx");
    EXPECT_TRUE(contains(r["memtype"]["coherent"].get<std::string>(), "forced write-back"));
    EXPECT_TRUE(contains(r["memtype"]["noncoherent"].get<std::string>(), "honoured"));
    std::string text = format_regime(r);
    EXPECT_TRUE(contains(text, "non-coherent mode here:     not reachable")) << text;
    EXPECT_TRUE(r.contains("kernel")) << r.dump();
}

TEST(KernelRegime, KnowsWhereTheKernelChangedItsAnswers) {
    auto k61 = kernel_regime("6.1.0-57-amd64");
    EXPECT_TRUE(contains(k61["vfio_group_coherency"].get<std::string>(), "before 6.2")) << k61.dump();
    EXPECT_TRUE(contains(k61["device_assignment"].get<std::string>(), "before 6.17"));
    auto k612 = kernel_regime("6.12.117+deb12-amd64");
    EXPECT_TRUE(contains(k612["vfio_group_coherency"].get<std::string>(), "6.2+")) << k612.dump();
    EXPECT_TRUE(contains(k612["device_assignment"].get<std::string>(), "before 6.17"));
    auto k617 = kernel_regime("6.17.0");
    EXPECT_TRUE(contains(k617["device_assignment"].get<std::string>(), "6.17+")) << k617.dump();
    EXPECT_TRUE(contains(k617["ignore_guest_pat_quirk"].get<std::string>(), "6.12.y"));
    auto odd = kernel_regime("custom");
    EXPECT_TRUE(contains(odd["vfio_group_coherency"].get<std::string>(), "unknown kernel version")) << odd.dump();
}

TEST_F(FakeHost, RegimeWithoutVfioOrMdevSaysTheModeIsOutOfReach) {
    fs::remove_all(base_ / "sys/class/mdev_bus");
    fs::remove_all(base_ / "sys/module");
    auto r = host_regime(o_);
    EXPECT_FALSE(r["wbinvd"]["noncoherent_reachable"].get<bool>());
    EXPECT_TRUE(contains(r["wbinvd"]["how"].get<std::string>(), "flushbench probe"));
    EXPECT_EQ(r["memtype"]["flavour"], "none");
    EXPECT_TRUE(contains(r["memtype"]["expected"].get<std::string>(), "memtype cells decide"));
}

}  // namespace
}  // namespace fb
