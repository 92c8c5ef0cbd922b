// What this host can measure, and what it cannot and why: `flushbench probe`.
//
// Every capability the runner depends on is checked by doing the real thing (open /dev/kvm, create a
// KVM-VFIO device, open a cycles counter), never by guessing from names, and every "no" says how to
// turn it into a "yes". The same facts feed the results' host fingerprint.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace fb {

struct Capability {
    std::string name;
    bool available = false;
    std::string detail;
    std::string fix;  // non-empty whenever !available
};

// Roots let tests point the probe at fake trees; the defaults are the real machine. Checks that need
// the kernel itself (ioctls, perf_event_open, CPUID, uname) always ask the running kernel.
struct ProbeOptions {
    std::string sysfs_root = "/sys";
    std::string proc_root = "/proc";
    std::string dev_root = "/dev";
    std::string path_env;  // PATH used to find pcm and qemu; empty means getenv("PATH")
    bool run_qemu = true;  // run qemu-system-x86_64 --version / -machine help
};

// In this order: kvm, kvm_vfio_device, vfio, iommu_snoop_control, mdev, hw_perf_counters,
// kvm_tracepoints, intel_pcm, qemu, cpu, kernel, frequency_scaling.
std::vector<Capability> probe_host(const ProbeOptions& opts = {});

// {"capabilities": [{name, available, detail, fix}, ...]}
nlohmann::json probe_to_json(const std::vector<Capability>& caps);

// One aligned line per capability; the fix on an indented line below each "no".
std::string format_probe_table(const std::vector<Capability>& caps);

// The KVM implementation behind /dev/kvm, from the loaded kvm_* modules: "vmx" (kvm_intel),
// "svm" (kvm_amd), otherwise the module name (e.g. "kvm_pvm"); several are joined with '+';
// "none" when no kvm_* module is present.
std::string kvm_flavour(const std::string& sysfs_root = "/sys");

// Identifies the machine a result came from.
struct HostFingerprint {
    std::string hostname;
    std::string cpu_model;
    std::string cpu_vendor;
    std::string microcode;
    std::string kernel;  // uname release + " " + version
    std::string kvm_flavour;
    uint64_t llc_bytes = 0;
    uint32_t online_cpus = 0;
};

HostFingerprint host_fingerprint();
void to_json(nlohmann::json& j, const HostFingerprint& f);
void to_json(nlohmann::json& j, const Capability& c);

}  // namespace fb
