// KVM exit attribution for one vCPU thread around a measurement phase, the way `perf kvm stat` does
// it: every kvm:kvm_exit on the thread is sampled (perf_event_open on the tracepoint, sample_period 1,
// PERF_SAMPLE_RAW into a ring buffer), its exit_reason decoded with the running kernel's format file,
// and timed to the thread's next kvm:kvm_entry. The time therefore includes everything KVM (and, for
// exits to userspace, the VMM) does before re-entering: a guest WBINVD under non-coherent DMA shows
// up as the WBINVD reason's mean_ns. Sampling costs each exit a perf record, so exit latencies read
// a little high, as with perf kvm stat.
//
// Some KVMs never fire kvm_exit (the nested, paging-based kvm_pvm of our build machines). There the
// tracepoints KVM's common code fires still work, and are counted instead: kvm:kvm_emulate_insn (an
// instruction KVM emulated), kvm:kvm_pio (a port access), kvm:kvm_userspace_exit (KVM_RUN returned
// to the VMM). `source` says which was used.
//
// The tracepoints live in tracefs. If it is not mounted and we are root, it is mounted at
// /sys/kernel/tracing (and `tracefs` in the result says so); otherwise the result is `unavailable`.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "host/counters/kvm_exits.h"
#include "host/counters/tracepoint_format.h"

namespace fb {

// Where tracefs is, mounting it if it is not and we may.
struct TracefsLocation {
    std::string root;  // "/sys/kernel/tracing"; empty when unavailable
    bool mounted_by_us = false;
    std::string unavailable;  // why there is no root, and the fix
};
TracefsLocation locate_tracefs(bool may_mount = true);

class KvmExitTrace {
   public:
    // Opens the tracepoints for thread `tid` (0 = the calling thread). Never throws for a host that
    // lacks them: result() then carries `unavailable`. Callable from the vCPU thread itself.
    static KvmExitTrace open(pid_t tid);
    // The same machinery on other tracepoints ("kvm:kvm_emulate_insn"): `exit_event` is sampled, its
    // `reason_field` decoded as an exit reason and timed to the next `entry_event`. For testing the
    // sampling path on a KVM whose kvm_exit never fires.
    static KvmExitTrace open(pid_t tid, const std::string& exit_event, const std::string& entry_event,
                             const std::string& reason_field);

    KvmExitTrace(KvmExitTrace&&) noexcept;
    KvmExitTrace& operator=(KvmExitTrace&&) noexcept;
    KvmExitTrace(const KvmExitTrace&) = delete;
    KvmExitTrace& operator=(const KvmExitTrace&) = delete;
    ~KvmExitTrace();

    // Bracket one phase; start() forgets the previous phase. stop() drains every sample.
    void start();
    void stop();

    // {source, by_reason: {name: {count, timed, total_ns, mean_ns, isa, code}}, counts: {"kvm:kvm_exit": n, ...},
    //  duration_ns, tracefs, [exits_sampled], [note], [lost_samples], [unavailable_events: {event: reason}],
    //  [unavailable]}
    // by_reason is empty unless source is "kvm:kvm_exit".
    nlohmann::json result() const;
    bool available() const;

    // The decoding state, public so tests can feed it raw records.
    struct Decoder {
        const TracepointFormat* exit_fmt = nullptr;
        const TracepointFormat* entry_fmt = nullptr;
        Isa fallback_isa = Isa::unknown;  // when the kvm_exit format has no isa field
        std::string reason_field = "exit_reason";
        struct Reason {
            uint64_t count = 0, timed = 0, total_ns = 0;
            Isa isa = Isa::unknown;  // whose numbering `code` is in (VMX reason 54 and SVM 0x89 are WBINVD)
            uint64_t code = 0;
        };
        std::map<std::string, Reason> by_reason;
        std::optional<std::pair<uint64_t, std::string>> pending;  // {time of the exit, its reason}
        uint64_t exits = 0, entries = 0, undecodable = 0;

        void reset();
        // One PERF_SAMPLE_RAW payload with its sample time; tells exit from entry by common_type.
        void on_sample(uint64_t time_ns, std::span<const uint8_t> raw);
        // An exit still waiting for its entry at stop() is counted, not timed.
        void finish();
    };

   private:
    struct State;  // fds, ring buffer, reader thread: in kvm_trace.cc
    explicit KvmExitTrace(std::unique_ptr<State> state);
    std::unique_ptr<State> s_;
};

}  // namespace fb
