// Host-side hardware and software counters around a measurement phase, on one thread (the vCPU's).
//
// Events are named the way users know them (perf's "cycles", "LLC-load-misses", or a PMU's own
// "INST_RETIRED.ANY", "ls_dispatch") and encoded by libpfm4 for perf_event_open. The guest/host split
// is perf_event_attr's exclude_host / exclude_guest: with exclude_host a counter on the vCPU thread
// counts only while the CPU is in guest mode, so one cell shows how much of a WBINVD's cost is the
// guest's and how much is KVM's on the host. Software events (task-clock, context switches) are
// always attempted: they work where no hardware PMU is exposed, e.g. inside a VM without a vPMU.
//
// Nothing here reports a counter it could not read as 0: such a counter carries `unavailable` with
// the kernel's reason and the fix.
#pragma once

#include <linux/perf_event.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "host/sys/fd.h"
#include "host/sys/perf_event.h"

namespace fb {

struct CounterValue {
    std::string name;             // as the user gave it: "cycles", "INST_RETIRED.ANY"
    std::string unit;             // "count", or "ns" for task-clock / cpu-clock
    std::string source;           // "perf_event cpu (perf::PERF_COUNT_HW_CPU_CYCLES, guest only)"
    std::optional<double> value;  // already scaled when multiplexed; empty when unavailable
    std::string unavailable;      // why there is no value, and the fix; empty when value is set
    double scaling = 1.0;         // time_enabled / time_running when multiplexed, 1.0 otherwise
};

// Which CPU mode a counter counts in. Split::all counts both; guest_only sets exclude_host,
// host_only sets exclude_guest. The kernel ignores both flags for software events: their source
// says "not split" and their value is the thread's total in either split.
enum class Split { all, guest_only, host_only };
const char* to_string(Split split);

struct EventEncoding {
    std::string name;      // the user's name
    perf_event_attr attr;  // type, config, exclude_* (split applied); flags for grouping are CounterGroup's
    std::string pmu;       // the kernel PMU that counts it, one perf_event group each: "cpu", "software", ...
    std::string pfm_name;  // libpfm4's canonical "pmu::EVENT:UMASK" (without modifiers)
};

// Encodes with libpfm4's pfm_get_os_event_encoding(PFM_OS_PERF_EVENT_EXT), counting user and kernel
// mode. libpfm4 excludes the guest by default (modifiers mg=0 mh=1); the `split` argument always
// decides exclude_guest/exclude_host, whatever mg/mh the name carries. An unknown name throws
// std::invalid_argument with one line: up to 5 near matches among the events of the PMUs libpfm4
// detected on this CPU, and the fix (`flushbench probe` lists countable events).
EventEncoding encode_event(const std::string& name, Split split);

// A multiplexed counter runs for time_running of the time_enabled it was asked to count; perf scales
// the count by enabled/running. running == 0 means the event never got a counter: no value at all.
struct ScaledCount {
    std::optional<double> value;
    double scaling = 1.0;
    std::string unavailable;
};
ScaledCount scale_count(uint64_t count, uint64_t time_enabled, uint64_t time_running);

// The events of one phase on one thread: one perf_event group per kernel PMU (a group is scheduled
// onto the PMU all together or not at all, so its members share time_enabled/time_running and their
// ratios are exact even when multiplexed). Counts since the last start().
class CounterGroup {
   public:
    // tid: the thread to count (0 = the calling thread); the counters follow it across CPUs.
    // Events that cannot be opened become unavailable (the kernel's error and the fix); an unknown
    // event name throws std::invalid_argument (from encode_event), as that is a usage error.
    static CounterGroup open(pid_t tid, const std::vector<std::string>& events, Split split);

    CounterGroup(CounterGroup&&) noexcept = default;
    CounterGroup& operator=(CounterGroup&&) noexcept = default;
    CounterGroup(const CounterGroup&) = delete;
    CounterGroup& operator=(const CounterGroup&) = delete;
    ~CounterGroup() = default;

    void start();                            // PERF_EVENT_IOC_RESET + ENABLE on every group leader
    void stop();                             // PERF_EVENT_IOC_DISABLE: the counts stay readable until the next start()
    std::vector<CounterValue> read() const;  // one per requested event, in request order
    bool any_available() const;              // at least one event opened
    Split split() const { return split_; }
    pid_t tid() const { return tid_; }

   private:
    CounterGroup() = default;
    struct Event {
        CounterValue info;  // name, unit, source; unavailable when it did not open
        int leader = -1;    // index into leaders_
        uint64_t id = 0;    // PERF_EVENT_IOC_ID, how a group read names its values
        UniqueFd fd;
    };
    struct Leader {
        int fd = -1;                  // the leader event's fd (owned by its Event)
        std::vector<size_t> members;  // indices into events_, leader first
        // Snapshot at start(): RESET zeroes the counts but not time_enabled/time_running.
        uint64_t enabled_at_start = 0, running_at_start = 0;
        std::string pmu;
    };
    struct GroupRead {
        bool ok = false;
        std::string error;
        uint64_t enabled = 0, running = 0;
        std::vector<std::pair<uint64_t, uint64_t>> values;  // {id, count}
    };
    static GroupRead read_group(int fd);

    pid_t tid_ = 0;
    Split split_ = Split::all;
    std::vector<Event> events_;
    std::vector<Leader> leaders_;
};

// task-clock, context-switches, cpu-migrations, page-faults: counted by the kernel itself, so they
// exist on every Linux host, PMU or not.
std::vector<std::string> software_events();

// What this host can count, for `flushbench probe`: the software events, perf's generic hardware
// events, then the events libpfm4 knows for the detected CPU PMU, each kept only if
// perf_event_open() on the calling thread accepts it. At most `max` names.
std::vector<std::string> countable_events(size_t max);

}  // namespace fb
