// The kernel's own record of what KVM did with non-coherent DMA, counted with kprobes (perf_event's
// kprobe PMU, Linux 4.17+, root): how often KVM registered and unregistered non-coherent DMA, how
// many guest WBINVDs it emulated, and on which pCPUs it then ran WBINVD.
//
// - kvm_arch_register_noncoherent_dma / _unregister_: the only switch of kvm->arch's
//   noncoherent_dma_count, called from the KVM-VFIO device when a file's coherency changes the
//   VM's; counted for this process's threads (inherited by threads created after open()).
// - kvm_emulate_wbinvd: every guest WBINVD exit (VMX reason 54, SVM 0x89), coherent or not.
// - the function KVM runs on each pCPU of the vCPU's wbinvd_dirty_mask: wbinvd_ipi (kvm.ko, up to
//   mid-2025) or __wbinvd (arch/x86/lib/cache-smp.c, from wbinvd_on_cpus_mask() since). It runs in
//   IPI context on the target CPU, whatever task is there, so it is counted per CPU, host-wide.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/sys/fd.h"

namespace fb {

// One kprobe counter: a function's hits for one scope.
class KprobeCounter {
public:
    enum class Scope {
        process,  // the calling thread and every thread it creates afterwards
        host,     // every task, host-wide, as host-wide per-CPU events summed
        host_cpu  // every task on one CPU
    };
    // Throws std::runtime_error with the kernel's reason and the fix (no kprobe PMU, not root, no
    // such function). `function` must be a string literal: the kernel reads the name again from
    // this address whenever a new thread inherits the counter (perf_kprobe_init() on clone).
    static KprobeCounter open(const char* function, Scope scope, int cpu = -1);
    uint64_t read() const;

private:
    std::vector<UniqueFd> fds_;
};

// Cumulative counts since the probes were opened.
struct CoherencyCounts {
    uint64_t registered = 0, unregistered = 0;  // kvm_arch_(un)register_noncoherent_dma
    uint64_t wbinvd_exits = 0;                  // kvm_emulate_wbinvd
    std::map<int, uint64_t> flushes_per_cpu;    // wbinvd_ipi / __wbinvd, per target CPU
    uint64_t flushes() const;
    // KVM's state for the VMs these counts cover: more registrations than unregistrations.
    bool noncoherent_registered() const { return registered > unregistered; }
    CoherencyCounts operator-(const CoherencyCounts& before) const;
};
nlohmann::json to_json(const CoherencyCounts& c);

class CoherencyProbes {
public:
    // process_scope: registrations and exits counted for this process's threads (open before the
    // vCPU thread exists); otherwise host-wide (a QEMU child does the KVM-VFIO work). Never throws:
    // what cannot be opened makes the probes unavailable, with the reason.
    static CoherencyProbes open(bool process_scope);

    bool available() const { return unavailable_.empty(); }
    const std::string& unavailable() const { return unavailable_; }
    CoherencyCounts read() const;
    // {"scope": ..., "functions": {...}} or {"unavailable": reason}
    nlohmann::json describe() const;

private:
    std::string unavailable_;
    bool process_scope_ = false;
    std::string flush_function_;
    std::optional<KprobeCounter> registered_, unregistered_, exits_;
    std::map<int, KprobeCounter> flushes_;
};

// The functions KVM has run on flushed CPUs across kernel versions, newest last.
inline constexpr const char* kFlushFunctions[] = {"wbinvd_ipi", "__wbinvd"};

}  // namespace fb
