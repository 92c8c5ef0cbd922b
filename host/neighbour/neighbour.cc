#include "host/neighbour/neighbour.h"

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <future>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "common/x86/cpu.h"
#include "host/sys/cpus.h"
#include "host/sys/fd.h"
#include "host/sys/sysfs.h"
#include "host/sys/clock.h"

namespace fb {
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr auto kMinSlice = std::chrono::milliseconds(2);
constexpr auto kMaxSlice = std::chrono::milliseconds(1000);
// The clock is read once per batch, so its ~20 ns (vDSO) is well under 1% of the work it times:
// 1024 LLC loads take tens of microseconds, a 64 KiB chunk several.
constexpr int kChaseBatch = 1024;
constexpr size_t kStreamChunkBytes = 64 * 1024;
constexpr size_t kHugePageBytes = 2 * 1024 * 1024;

// Involuntary context switches of the calling thread so far.
uint64_t preemptions_so_far() {
    rusage ru{};
    return getrusage(RUSAGE_THREAD, &ru) == 0 ? uint64_t(ru.ru_nivcsw) : 0;
}


// The buffer is only ever accessed as uintptr_t, so the chase and the stream read one object type.
uintptr_t* line_slot(std::byte* base, size_t line) {
    return static_cast<uintptr_t*>(static_cast<void*>(base + line * kNeighbourLineBytes));
}

// Dependent loads: each address is the value the previous load returned.
[[gnu::noinline]] uintptr_t chase(uintptr_t p, uint64_t loads) {
    for (uint64_t i = 0; i < loads; ++i) p = *reinterpret_cast<const uintptr_t*>(p);
    asm volatile("" ::"r"(p));  // the result is "used", so the loads stay
    return p;
}

[[gnu::noinline]] void stream(const std::byte* from, size_t bytes) {
    const auto* w = static_cast<const uintptr_t*>(static_cast<const void*>(from));
    uintptr_t sum = 0;
    for (size_t i = 0; i < bytes / sizeof(uintptr_t); ++i) sum += w[i];
    asm volatile("" ::"r"(sum));
}

std::string choose_cpu_hint() {
    auto cpus = allowed_cpus();
    return fmt::format("choose one of {} with --neighbour", cpu_list(cpus));
}


// The CPUs sharing `cpu`'s highest-level data or unified cache.
std::optional<std::vector<int>> llc_sharers(const std::string& sysfs_root, int cpu) {
    fs::path dir = fs::path(sysfs_root) / fmt::format("devices/system/cpu/cpu{}/cache", cpu);
    std::error_code ec;
    std::optional<std::vector<int>> best;
    uint64_t best_level = 0;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
        if (entry.path().filename().string().rfind("index", 0) != 0) continue;
        auto level = parse_dec_u64(read_sysfs_attr((entry.path() / "level").string()).value_or(""));
        if (!level || read_sysfs_attr((entry.path() / "type").string()) == "Instruction" || *level < best_level) continue;
        if (auto sharers = read_cpu_list((entry.path() / "shared_cpu_list").string())) best_level = *level, best = sharers;
    }
    return best;
}

bool contains(const std::optional<std::vector<int>>& list, int cpu) {
    return list && std::find(list->begin(), list->end(), cpu) != list->end();
}

uint64_t resolve_buffer_bytes(uint64_t requested) {
    uint64_t llc = x86::llc_bytes();
    if (requested == 0) {
        if (llc == 0)
            throw std::runtime_error("the LLC size is unknown (no CPUID leaf 4 or 0x8000001D): give the neighbour's "
                                     "buffer size with --neighbour-bytes");
        requested = std::clamp(llc / 2, kNeighbourMinBufferBytes, kNeighbourMaxDefaultBufferBytes);
    } else if (requested < kNeighbourMinBufferBytes) {
        throw std::runtime_error(fmt::format("neighbour buffer of {} bytes is under 64 KiB: choose at least 64K with "
                                             "--neighbour-bytes", requested));
    } else if (llc != 0 && requested > llc) {
        // Larger than the LLC, the chase misses whether or not anyone flushes it.
        throw std::runtime_error(fmt::format("neighbour buffer of {} bytes exceeds the {}-byte LLC, so it cannot stay "
                                             "cache-resident: choose at most {} with --neighbour-bytes",
                                             requested, llc, llc));
    }
    return requested / kNeighbourLineBytes * kNeighbourLineBytes;
}

}  // namespace

void build_chase(void* buffer, size_t lines, uint64_t seed) {
    auto* base = static_cast<std::byte*>(buffer);
    for (size_t i = 0; i < lines; ++i) *line_slot(base, i) = reinterpret_cast<uintptr_t>(line_slot(base, i));
    if (lines < 2) return;
    // Sattolo: swapping slot i only with a slot below i leaves one cycle through all lines, so the
    // chase visits every line before it repeats and no short loop stays in a private cache.
    std::mt19937_64 rng(seed);
    for (size_t i = lines - 1; i > 0; --i) std::swap(*line_slot(base, i), *line_slot(base, rng() % i));
}

struct Neighbour::State {
    NeighbourOptions options;
    uint64_t buffer_bytes = 0;
    std::atomic<bool> stopping{false};
    std::atomic<bool> capped{false};
    std::mutex lock;
    std::deque<NeighbourSlice> pending;  // a deque grows without copying (and timing) a big block
    std::exception_ptr failure;          // what ended the thread after start, if anything did
    std::thread thread;

    ~State() { join(); }
    void join() {
        stopping.store(true, std::memory_order_relaxed);
        if (thread.joinable()) thread.join();
    }

    void run(std::promise<void>& ready) {
        Mapping buffer;
        std::byte* base = nullptr;
        try {
            buffer = prepare(base);
        } catch (...) {
            ready.set_exception(std::current_exception());
            return;
        }
        try {
            slice_loop(base, ready);
        } catch (...) {
            std::lock_guard g(lock);
            failure = std::current_exception();
        }
    }

    // Pinned first, so the buffer's pages are faulted in (and placed) on the neighbour's CPU.
    Mapping prepare(std::byte*& base) {
        int cpu = options.cpu;
        if (int err = try_pin(0, cpu); err != 0)
            throw std::runtime_error(fmt::format("cannot pin the neighbour to CPU {} ({}): {}", cpu,
                                                 err == EINVAL ? "not allowed or offline" : std::strerror(err),
                                                 choose_cpu_hint()));
        if (int seen = sched_getcpu(); seen != cpu)
            throw std::runtime_error(fmt::format("the neighbour runs on CPU {} after pinning to CPU {}: {}", seen, cpu,
                                                 choose_cpu_hint()));
        // 2 MiB-aligned and huge-page backed where THP allows, so the chase needs few TLB entries
        // and times the caches rather than page walks.
        size_t mapped = buffer_bytes + kHugePageBytes;
        void* p = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            throw std::runtime_error(fmt::format("cannot map the neighbour's {}-byte buffer ({}): choose a smaller one "
                                                 "with --neighbour-bytes", buffer_bytes, std::strerror(errno)));
        Mapping buffer(p, mapped);
        base = static_cast<std::byte*>(p) + (kHugePageBytes - reinterpret_cast<uintptr_t>(p) % kHugePageBytes) % kHugePageBytes;
        madvise(base, buffer_bytes, MADV_HUGEPAGE);  // best effort: without THP the probe still works
        size_t lines = buffer_bytes / kNeighbourLineBytes;
        build_chase(base, lines);
        // Warm: one full lap of each access pattern, so the first slice finds the buffer cached.
        chase(reinterpret_cast<uintptr_t>(base), lines);
        stream(base, buffer_bytes);
        return buffer;
    }

    void slice_loop(std::byte* base, std::promise<void>& ready) {
        const int64_t slice_ns = std::chrono::nanoseconds(options.slice).count(), half_ns = slice_ns / 2;
        uintptr_t cursor = reinterpret_cast<uintptr_t>(base);
        size_t stream_at = 0;
        int64_t start = monotonic_ns();
        uint64_t preempted_before = preemptions_so_far();
        ready.set_value();
        for (;;) {
            // Each half ends at the first clock read past its deadline; that read is both the end
            // of what came before and the start of what follows.
            NeighbourSlice s;
            s.start_ns = start;
            int64_t t = start;
            do {
                cursor = chase(cursor, kChaseBatch);
                s.chase_loads += kChaseBatch;
                t = monotonic_ns();
            } while (t < start + half_ns && !stopping.load(std::memory_order_relaxed));
            if (t < start + half_ns) return;  // stopped mid-slice: a short slice is not a sample
            const int64_t middle = t;
            do {
                size_t bytes = std::min(kStreamChunkBytes, buffer_bytes - stream_at);
                stream(base + stream_at, bytes);
                s.stream_bytes += bytes;
                stream_at = stream_at + bytes == buffer_bytes ? 0 : stream_at + bytes;
                t = monotonic_ns();
            } while (t < start + slice_ns && !stopping.load(std::memory_order_relaxed));
            if (t < start + slice_ns) return;
            s.end_ns = t;
            s.chase_ns = double(middle - start) / double(s.chase_loads);
            s.stream_gbs = t > middle ? double(s.stream_bytes) / double(t - middle) : kNaN;  // bytes/ns = GB/s
            s.cpu = sched_getcpu();
            uint64_t preempted = preemptions_so_far();
            s.preemptions = preempted - std::exchange(preempted_before, preempted);
            {
                std::lock_guard g(lock);
                pending.push_back(s);
                if (pending.size() >= kNeighbourMaxHeldSlices) {
                    capped.store(true);
                    return;
                }
            }
            start = t;
        }
    }
};

Neighbour::Neighbour(std::unique_ptr<State> state) : state_(std::move(state)) {}
Neighbour::~Neighbour() = default;
Neighbour::Neighbour(Neighbour&&) noexcept = default;
Neighbour& Neighbour::operator=(Neighbour&&) noexcept = default;

Neighbour Neighbour::start(const NeighbourOptions& options) {
    if (options.cpu < 0) throw std::runtime_error(fmt::format("no neighbour CPU given: {}", choose_cpu_hint()));
    if (options.cpu >= CPU_SETSIZE)
        throw std::runtime_error(fmt::format("CPU {} does not exist: {}", options.cpu, choose_cpu_hint()));
    if (options.slice < kMinSlice || options.slice > kMaxSlice)
        throw std::runtime_error(fmt::format("neighbour slice of {} ms is outside {}..{} ms: choose one in that range "
                                             "with --slice-ms", options.slice.count(), kMinSlice.count(),
                                             kMaxSlice.count()));
    auto state = std::make_unique<State>();
    state->options = options;
    state->buffer_bytes = resolve_buffer_bytes(options.buffer_bytes);
    std::promise<void> ready;
    auto started = ready.get_future();
    // The thread owns the promise: it may still be inside set_value() when this frame is gone.
    state->thread = std::thread([s = state.get(), ready = std::move(ready)]() mutable { s->run(ready); });
    try {
        started.get();
    } catch (...) {
        state->thread.join();
        throw;
    }
    return Neighbour(std::move(state));
}

std::vector<NeighbourSlice> Neighbour::stop() {
    if (!state_) return {};
    state_->join();
    auto slices = take();
    std::lock_guard g(state_->lock);
    if (auto failure = std::exchange(state_->failure, nullptr)) std::rethrow_exception(failure);
    return slices;
}

std::vector<NeighbourSlice> Neighbour::take() {
    if (!state_) return {};
    std::deque<NeighbourSlice> taken;
    {
        std::lock_guard g(state_->lock);  // held for a swap only: the neighbour never waits long
        taken.swap(state_->pending);
    }
    return {taken.begin(), taken.end()};
}

int Neighbour::cpu() const { return state_ ? state_->options.cpu : -1; }
uint64_t Neighbour::buffer_bytes() const { return state_ ? state_->buffer_bytes : 0; }
std::chrono::milliseconds Neighbour::slice() const { return state_ ? state_->options.slice : std::chrono::milliseconds(0); }
bool Neighbour::capped() const { return state_ && state_->capped.load(); }

int pick_neighbour_cpu(int avoid, std::string& why) { return pick_neighbour_cpu(avoid, why, allowed_cpus(), "/sys"); }

int pick_neighbour_cpu(int avoid, std::string& why, std::span<const int> allowed, const std::string& sysfs_root) {
    why.clear();
    if (avoid < 0) {
        why = "the vCPU is not pinned, so no CPU is certainly free of it: pin it with --vcpu-cpu";
        return -1;
    }
    auto siblings = read_cpu_list((fs::path(sysfs_root) / fmt::format("devices/system/cpu/cpu{}/topology/thread_siblings_list", avoid)).string());
    auto sharers = llc_sharers(sysfs_root, avoid);
    // Lower is better: shares the LLC (sees the flush) without sharing the core; then unknown
    // topology; then an SMT sibling (sees it, but also competes for the core); then another LLC,
    // where a flush of avoid's LLC may never arrive.
    auto rank = [&](int c) {
        bool sibling = contains(siblings, c);
        if (sibling) return 2;
        if (!siblings || !sharers) return 1;
        return contains(sharers, c) ? 0 : 3;
    };
    int best = -1;
    for (int c : allowed)
        if (c != avoid && (best < 0 || rank(c) < rank(best))) best = c;
    if (best < 0 && allowed.empty()) {
        why = "cannot tell which CPUs this process may use (sched_getaffinity failed): give --neighbour";
        return -1;
    }
    if (best < 0) {
        why = fmt::format("this process may run only on CPU {}, the vCPU's: allow another (taskset, cgroup cpuset)",
                          cpu_list(allowed));
        return -1;
    }
    switch (rank(best)) {
    case 1: why = fmt::format("CPU {}'s topology is not in sysfs: CPU {} may be its SMT sibling or on another LLC", avoid, best); break;
    case 2: why = fmt::format("CPU {} is CPU {}'s SMT sibling: it shares the core's L1, L2 and execution units too", best, avoid); break;
    case 3: why = fmt::format("CPU {} does not share CPU {}'s last-level cache: a flush of that cache may not reach it", best, avoid); break;
    default: break;
    }
    return best;
}

std::vector<NeighbourSlice> slices_within(std::span<const NeighbourSlice> all, int64_t start_ns, int64_t end_ns) {
    std::vector<NeighbourSlice> inside;
    for (const auto& s : all)
        if (s.start_ns >= start_ns && s.end_ns <= end_ns) inside.push_back(s);
    return inside;
}

WindowEffect window_effect(std::span<const NeighbourSlice> all_window, std::span<const NeighbourSlice> all_baseline, double alpha) {
    // A preempted slice timed the host scheduler (another task had the CPU), not the caches: left
    // out, and counted.
    auto unpreempted = [](std::span<const NeighbourSlice> slices) {
        std::vector<NeighbourSlice> kept;
        for (const auto& s : slices)
            if (s.preemptions == 0) kept.push_back(s);
        return kept;
    };
    const auto window = unpreempted(all_window), baseline = unpreempted(all_baseline);
    auto column = [](std::span<const NeighbourSlice> slices, double NeighbourSlice::*field) {
        std::vector<double> v;
        v.reserve(slices.size());
        for (const auto& s : slices) v.push_back(s.*field);
        return v;
    };
    auto chase = column(window, &NeighbourSlice::chase_ns), base_chase = column(baseline, &NeighbourSlice::chase_ns);
    auto stream = column(window, &NeighbourSlice::stream_gbs), base_stream = column(baseline, &NeighbourSlice::stream_gbs);

    WindowEffect e;
    e.slices = window.size();
    e.baseline_slices = baseline.size();
    e.alpha = alpha;
    e.preempted = all_window.size() - window.size();
    e.baseline_preempted = all_baseline.size() - baseline.size();
    e.chase = summarize(chase);
    e.stream = summarize(stream);
    if (e.slices < kMinWindowSlices || e.baseline_slices < kMinWindowSlices) {
        e.slowdown = e.stream_ratio = {kNaN, kNaN, kNaN};
        e.chase_test.p = kNaN;
        e.note = fmt::format("not compared: {} window vs {} baseline slices (at least {} a side)", e.slices,
                             e.baseline_slices, kMinWindowSlices);
        if (e.preempted + e.baseline_preempted > 0)
            e.note += fmt::format("; {} and {} more were preempted: other tasks had the neighbour's CPU, give it a quiet one",
                                  e.preempted, e.baseline_preempted);
        return e;
    }
    e.slowdown = ratio_ci(chase, base_chase);
    e.stream_ratio = ratio_ci(stream, base_stream);
    e.chase_test = mann_whitney_u(chase, base_chase);
    e.significant = e.chase_test.p < alpha && (e.slowdown.lo > 1 || e.slowdown.hi < 1);  // NaN compares false
    if (!std::isfinite(e.slowdown.lo) || !std::isfinite(e.stream_ratio.lo))
        e.note = "an interval is undefined: some bootstrap replicate's baseline median was not positive";
    return e;
}

namespace {
json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
json interval(const Interval& i) {
    return {{"estimate", num(i.estimate)}, {"lo", num(i.lo)}, {"hi", num(i.hi)}, {"level", kConfidence}};
}
}  // namespace

json to_json(const NeighbourSlice& s) {
    return {{"start_ns", s.start_ns}, {"end_ns", s.end_ns}, {"chase_ns", num(s.chase_ns)}, {"chase_loads", s.chase_loads},
            {"stream_gbs", num(s.stream_gbs)}, {"stream_bytes", s.stream_bytes}, {"cpu", s.cpu},
            {"preemptions", s.preemptions}};
}

json to_json(const WindowEffect& e) {
    json j = {{"slices", e.slices},
              {"baseline_slices", e.baseline_slices},
              {"preempted_slices", e.preempted},
              {"baseline_preempted_slices", e.baseline_preempted},
              {"chase_ns", to_json(e.chase)},
              {"stream_gbs", to_json(e.stream)},
              {"slowdown", interval(e.slowdown)},
              {"stream_ratio", interval(e.stream_ratio)},
              {"chase_test", {{"test", "mann-whitney-u, two-sided"}, {"u", e.chase_test.u1}, {"p", num(e.chase_test.p)},
                              {"exact", e.chase_test.exact}}},
              {"alpha", e.alpha},
              {"significant", e.significant},
              {"notes", "slices are consecutive, not independent: intervals and p are optimistic for bursty effects"}};
    if (!e.note.empty()) j["note"] = e.note;
    return j;
}

}  // namespace fb
