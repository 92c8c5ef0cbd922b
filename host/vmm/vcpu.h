// One KVM vCPU: its fd, its shared kvm_run page, long-mode state for the direct boot, and the
// KVM_RUN ioctl in three layers as in the KVM selftests:
//   run()      throws unless KVM_RUN returned an exit to handle;
//   _run()     returns 0 or -errno, and -EINTR only when interrupt() asked for it;
//   raw_run()  the bare ioctl (the selftests' __vcpu_run(); names with "__" are reserved in C++).
#pragma once

#include <linux/kvm.h>
#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "host/sys/cpus.h"
#include "host/vmm/vm.h"

namespace fb {

class Vcpu {
public:
    // Called by Vm::add_vcpu(): KVM_CREATE_VCPU, the kvm_run mapping, and the host's supported
    // CPUID (KVM starts a vCPU with an empty CPUID table, which no kernel boots on).
    Vcpu(const Vm& vm, uint32_t id);
    ~Vcpu() = default;
    Vcpu(const Vcpu&) = delete;
    Vcpu& operator=(const Vcpu&) = delete;

    uint32_t id() const { return id_; }
    int fd() const { return fd_.get(); }
    // The page KVM shares with userspace: exit reason and exit data. Valid for the Vcpu's life.
    kvm_run& run_state() { return *run_; }
    size_t run_state_bytes() const { return run_map_.size(); }

    kvm_regs regs() const;
    void set_regs(const kvm_regs& regs);
    kvm_sregs sregs() const;
    void set_sregs(const kvm_sregs& sregs);

    // 64-bit ring 0 with paging at cr3, flat segments from the GDT Vm::setup_direct_boot() wrote.
    void setup_long_mode(uint64_t cr3);
    // The direct entry of common/boot.h: RIP, RDI = kDirectMagic, RSI = BootInfo, IF = 0.
    void setup_direct_entry(uint64_t rip, uint64_t boot_info_gpa);

    void run();
    int _run();
    int raw_run();

    // Callable from any thread: makes the current or next KVM_RUN return EINTR, and keeps doing
    // so until clear_interrupt(). immediate_exit covers a vCPU thread between ioctls (KVM reads it
    // on entry); the signal kicks one already inside KVM_RUN.
    void interrupt();
    void clear_interrupt();
    bool interrupt_requested() const { return interrupt_requested_.load(std::memory_order_acquire); }

private:
    uint32_t id_;
    UniqueFd fd_;
    Mapping run_map_;
    kvm_run* run_ = nullptr;
    std::atomic<bool> interrupt_requested_{false};
    std::mutex runner_lock_;  // keeps runner_ alive while interrupt() signals it
    pthread_t runner_{};
    bool in_run_ = false;
};

}  // namespace fb
