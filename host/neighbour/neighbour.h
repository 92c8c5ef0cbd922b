// The neighbour: another tenant's view of a guest's cache flushes. With non-coherent DMA, KVM
// executes a real WBINVD on the host for every guest WBINVD, and a physical WBINVD writes back and
// invalidates the shared last-level cache, not just the vCPU's own caches. The neighbour is a host
// thread pinned to a CPU other than the vCPU's that keeps one buffer (half the LLC, at most 16 MiB, by default)
// cache-resident and probes it in back-to-back time slices: half a slice pointer-chasing a random
// cycle over the buffer's lines (ns per dependent load), half streaming through it (GB/s). When
// the LLC is flushed under it, the chase's LLC hits turn into memory loads and the slice shows it.
// The guest's phases are windows of host CLOCK_MONOTONIC time; window_effect() compares the
// slices inside one window with those of a guest-idle baseline.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/results/statistics.h"

namespace fb {

inline constexpr size_t kNeighbourLineBytes = 64;
inline constexpr uint64_t kNeighbourMinBufferBytes = 64 * 1024;
// The default buffer is half the LLC, at most 16 MiB: a VM may be told of a whole host's L3
// (480 MiB on our build machine, where a chase over 64 MiB already runs at memory latency), and
// an LLC slice per core complex on real servers is 16-105 MiB.
inline constexpr uint64_t kNeighbourMaxDefaultBufferBytes = 16ull << 20;
// "neighbr!" in ASCII: the chase order is the same on every run and every host (std::mt19937_64's
// output is fixed by the C++ standard; draws are reduced with %, not a library distribution).
inline constexpr uint64_t kChaseSeed = 0x6e65696768627221ull;
// Memory bound for slices not yet take()n (~130 MB; 5.5 h of 10 ms slices).
inline constexpr size_t kNeighbourMaxHeldSlices = 2'000'000;

struct NeighbourOptions {
    int cpu = -1;                         // must be >= 0; resolve "auto" with pick_neighbour_cpu
    std::chrono::milliseconds slice{10};  // 2 ms .. 1000 ms
    // 0: half the LLC CPUID reports, within [64 KiB, 16 MiB]; rounded down to lines. A VM may report
    // the host's whole L3 while other tenants hold most of it: check that chase_ns is an LLC latency.
    uint64_t buffer_bytes = 0;
};

struct NeighbourSlice {
    int64_t start_ns = 0, end_ns = 0;  // CLOCK_MONOTONIC; a slice starts where the previous ended
    double chase_ns = 0;               // mean ns per dependent load over the chase half
    uint64_t chase_loads = 0;
    double stream_gbs = 0;             // 1e9 bytes/s over the streaming half
    uint64_t stream_bytes = 0;
    int cpu = -1;                      // sched_getcpu() at the slice's end
    // Involuntary context switches during the slice: its times then include time off the CPU,
    // which is the host scheduler's doing, not the caches'.
    uint64_t preemptions = 0;
};

class Neighbour {
public:
    // Starts the pinned thread; returns once it is pinned, its buffer is warm and the first slice
    // has begun. Throws std::runtime_error (one line naming the fix) when the options are out of
    // range, the CPU is not one this process may use, or the buffer cannot be had.
    static Neighbour start(const NeighbourOptions& options);
    ~Neighbour();  // stops the thread if it still runs
    Neighbour(Neighbour&&) noexcept;
    Neighbour& operator=(Neighbour&&) noexcept;
    Neighbour(const Neighbour&) = delete;
    Neighbour& operator=(const Neighbour&) = delete;

    // Ends the slice in progress unrecorded (it is shorter than the others), joins the thread and
    // returns the slices not yet taken. Later calls return nothing. Rethrows what ended the thread
    // early, if anything did (out of memory).
    std::vector<NeighbourSlice> stop();
    // Moves out the slices finished so far, e.g. to journal them while the neighbour runs.
    std::vector<NeighbourSlice> take();

    int cpu() const;
    uint64_t buffer_bytes() const;
    std::chrono::milliseconds slice() const;
    // True once kNeighbourMaxHeldSlices slices were waiting to be taken: slicing stopped there.
    bool capped() const;

private:
    struct State;
    explicit Neighbour(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

// A CPU this process may run on other than `avoid` (the vCPU's), preferring one that shares
// avoid's last-level cache (a flush elsewhere does not reach it) and is not its SMT sibling (which
// would also share its core's L1 and L2). -1 with `why` set when there is none; on success `why`
// names any compromise (an SMT sibling, or no LLC in common), else it is empty.
int pick_neighbour_cpu(int avoid, std::string& why);
// The same over an explicit CPU set and sysfs tree (tests).
int pick_neighbour_cpu(int avoid, std::string& why, std::span<const int> allowed, const std::string& sysfs_root);

// Writes the chase into `lines` lines of 64 bytes at `buffer`: each line's first 8 bytes point to
// the next line of one random cycle through all of them (Sattolo's algorithm). Touches every line.
void build_chase(void* buffer, size_t lines, uint64_t seed = kChaseSeed);

// The slices entirely inside [start_ns, end_ns]: a guest phase's samples.
std::vector<NeighbourSlice> slices_within(std::span<const NeighbourSlice> all, int64_t start_ns, int64_t end_ns);

inline constexpr size_t kMinWindowSlices = 3;

// Slices are consecutive, not independent draws: one flush burst can slow several in a row, so
// the interval and p-value are optimistic when the effect is bursty. They rank windows; they are
// not exact error rates.
struct WindowEffect {
    size_t slices = 0, baseline_slices = 0;        // compared: slices nothing preempted
    size_t preempted = 0, baseline_preempted = 0;  // left out: slices with preemptions > 0
    Summary chase, stream;       // chase_ns and stream_gbs of the window's slices
    Interval slowdown;           // median chase_ns(window) / median chase_ns(baseline), ratio_ci
    Interval stream_ratio;       // median stream_gbs(window) / median stream_gbs(baseline)
    MannWhitney chase_test;      // window vs baseline chase_ns, two-sided
    double alpha = 0.05;
    bool significant = false;    // chase_test.p < alpha and the slowdown interval excludes 1
    std::string note;            // why a figure is NaN, when one is
};
// Preempted slices are left out; fewer than kMinWindowSlices left on either side: ratios and p are
// NaN, with a note.
WindowEffect window_effect(std::span<const NeighbourSlice> window, std::span<const NeighbourSlice> baseline,
                           double alpha = 0.05);

nlohmann::json to_json(const NeighbourSlice& s);
nlohmann::json to_json(const WindowEffect& e);  // NaN as null

}  // namespace fb
