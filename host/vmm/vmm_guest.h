// Boots the flushbench guest kernel on flushbench's own VMM (Vm + Vcpu over /dev/kvm) and runs
// its vCPU on a dedicated thread while the caller's thread keeps the watchdog. Port I/O is the
// guest's only voice (common/boot.h): COM1 text, one record-port exit per record, an exit port.
// Everything the guest hands over is untrusted: a bad record address or length is counted as a
// protocol error, never followed.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/vmm/kvm_stats.h"
#include "host/vmm/vcpu.h"
#include "host/vmm/vm.h"

namespace fb {

class ElfImage;

// Called on the vCPU thread while the vCPU is stopped in userspace: a handler that toggles the
// KVM-VFIO device on a phase record does so between two guest instructions.
struct VmmEvents {
    virtual ~VmmEvents() = default;
    virtual void on_serial(std::string_view bytes) = 0;  // COM1 data bytes of one exit
    virtual void on_record(std::string_view line) = 0;   // one RecordBuffer's bytes, as sent
};

struct VmmOptions {
    uint64_t mem_bytes = 1ull << 30;
    std::string cmdline;
    std::optional<int> cpu;  // pin the vCPU thread here (and start migration here)
    // Migration: re-pin the vCPU thread to the next CPU of migrate_cpus (default: every CPU this
    // process may use) every migrate_every_ms and/or every migrate_every_exits exits; 0 = off.
    // KVM records each pCPU a vCPU ran on in wbinvd_dirty_mask, and with non-coherent DMA a
    // guest WBINVD is executed on all of them: migration widens the flush.
    std::chrono::milliseconds migrate_every_ms{0};
    uint64_t migrate_every_exits = 0;
    std::vector<int> migrate_cpus;
    // The hop set (common/boot.h kHopPort): each OUT to the hop port re-pins the vCPU thread to the
    // next CPU of this list, cyclically, before the vCPU runs again. Starts on hop_cpus[0].
    std::vector<int> hop_cpus;
};

struct VmmExitCounts {
    uint64_t serial = 0;      // OUTs to the COM1 data register
    uint64_t uart_other = 0;  // other COM1 accesses (LSR polls, line setup)
    uint64_t record = 0;
    uint64_t exit_port = 0;
    uint64_t hop = 0;       // OUTs to the hop port
    uint64_t io_other = 0;  // ports nobody owns (0x80 of the pio pattern)
    uint64_t mmio = 0;
    uint64_t interrupted = 0;  // KVM_RUN returned EINTR on our request
    uint64_t other = 0;        // exits we could only note (KVM_EXIT_INTR with rc 0, ...)
    uint64_t total() const { return serial + uart_other + record + exit_port + hop + io_other + mmio + interrupted + other; }
};

struct VmmOutcome {
    enum class Kind { exited, shutdown, halted, hung, crashed, interrupted };
    Kind kind = Kind::crashed;
    uint32_t exit_code = 0;  // the value written to boot::kExitPort, when kind == exited
    std::string detail;      // one line: what happened, with RIP where it helps
    VmmExitCounts exits;
    uint64_t protocol_errors = 0;
    std::string last_protocol_error;
    uint64_t migrations = 0;
    std::vector<int> cpus_used;  // CPUs the vCPU thread was pinned to, in order; empty if unpinned
    std::chrono::microseconds wall{0};
};

const char* to_string(VmmOutcome::Kind k);

struct VmmKvmStats {
    KvmStats vm, vcpu;
};

class VmmGuest {
public:
    VmmGuest(const ElfImage& image, VmmOptions opts, VmmEvents& events);
    ~VmmGuest();
    VmmGuest(const VmmGuest&) = delete;
    VmmGuest& operator=(const VmmGuest&) = delete;

    // Runs the guest to its end. The watchdog fires when neither a serial byte nor a record
    // arrives for `watchdog` (CLWB and VMMCALL never complete on some KVMs): outcome hung.
    // Once per VmmGuest. Rethrows what an event handler threw, after stopping the vCPU.
    VmmOutcome run(std::chrono::milliseconds watchdog);
    // From any thread or a signal handler: ends run() with outcome interrupted.
    void stop() { stop_requested_.store(true, std::memory_order_relaxed); }

    Vm& vm() { return *vm_; }
    Vcpu& vcpu() { return vm_->vcpu(0); }
    // VM and vCPU binary stats; from on_record it is the state with the vCPU stopped.
    VmmKvmStats kvm_stats() const { return {vm_stats_.snapshot(), vcpu_stats_.snapshot()}; }

private:
    void vcpu_thread();
    bool handle_exit(kvm_run& run);  // false: the run is over
    void handle_uart(uint16_t offset, bool out, uint8_t* data, uint32_t size, uint32_t count);
    void request_interrupt(VmmOutcome::Kind why);
    void handle_record(uint32_t gpa);
    void protocol_error(std::string what);
    void finish(VmmOutcome::Kind kind, std::string detail);
    std::string rip_note();
    void touch() { last_activity_ns_.store(now_ns(), std::memory_order_relaxed); }
    static int64_t now_ns();

    void migrate(pid_t tid);  // re-pins the vCPU thread (kernel tid) to the next migration CPU
    void hop();               // vCPU thread: re-pins itself to the next CPU of the hop set

    VmmOptions opts_;
    VmmEvents& events_;
    std::unique_ptr<Vm> vm_;
    KvmStatsReader vm_stats_, vcpu_stats_;

    // UART state the guest can observe.
    uint8_t lcr_ = 0, scr_ = 0;

    // Written by the vCPU thread; read after join.
    VmmOutcome outcome_;
    std::exception_ptr handler_error_;

    std::atomic<bool> stop_requested_{false};
    std::atomic<int> interrupt_reason_{-1};  // a VmmOutcome::Kind, set before Vcpu::interrupt()
    std::atomic<int64_t> last_activity_ns_{0};
    std::atomic<pid_t> vcpu_tid_{0};
    bool started_ = false;
    std::chrono::milliseconds watchdog_{0};

    std::mutex done_lock_;
    std::condition_variable done_cv_;
    bool done_ = false;

    std::mutex migrate_lock_;  // both threads migrate: by exits (vCPU) and by time (watchdog)
    std::vector<int> migrate_cpus_;
    size_t migrate_index_ = 0;
    uint64_t migrations_ = 0;
    std::vector<int> cpus_used_;
    uint64_t exits_since_migration_ = 0;  // vCPU thread only
    size_t hop_index_ = 0;                // vCPU thread only
};

}  // namespace fb
