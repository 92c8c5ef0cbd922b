// How a cell's cost is measured: one TSC bracket, two estimators and one stopping rule, compiled
// into the guest kernel and into the native benchmark alike. Freestanding, no allocation: the
// caller owns the sample arrays.
//
// On hosts whose TSC reads trap or whose KVM emulates the bracket's instructions, an empty bracket
// costs thousands of cycles with a spread of thousands; subtracting one calibrated overhead from
// other brackets then measures noise (and prints negative costs). So no sample here is a single
// bracket minus a constant:
//
// - batch (per-op patterns at footprint 0: nop, cpuid, pio, WBINVD/WBNOINVD with nothing to
//   dirty): each repetition times k and 2k back-to-back operations, in loops that run the same
//   number of iterations with kUnroll and 2 x kUnroll inlined copies per iteration, and the sample
//   is (T(2k) - T(k)) / k. The bracket and the loop cancel; only the operations remain (after
//   nanoBench's N versus 2N copies). k puts the bracket at most 1/kBracketShare of T(k).
// - paired (everything else): each repetition times a reference bracket and the pattern's bracket
//   back to back, alternating which goes first, and the sample is their difference. Drift and
//   the bracket's own cost cancel repetition by repetition; its spread remains, and is reported.
//   The reference of a pattern whose body walks the footprint is that body over 0 bytes (the same
//   code, so its loop's set-up cancels too and the sample is the lines' cost); otherwise it is the
//   empty bracket (the cost of WBINVD after dirtying is the WBINVD's).
//
// A cell stops when the 95% interval of its median is within target_permille of the median, or its
// time budget is spent, or it reached max_reps; never before min_reps (Stop names which). The
// logic (run, choose_batch) takes its timers from its caller, so tests drive it with synthetic ones.
#pragma once

#include "common/patterns.h"
#include "common/x86/cpu.h"

namespace fb::measure {

inline constexpr uint32_t kUnroll = 8;         // copies per loop iteration in T(k); T(2k) has twice as many
inline constexpr uint32_t kMinBatch = kUnroll;
inline constexpr uint32_t kMaxBatch = 4096;
inline constexpr uint32_t kBracketShare = 100;  // k such that the bracket is at most 1% of T(k)
inline constexpr uint32_t kPilotReps = 5;       // pairs timed to estimate an operation's cost before choosing k

enum class Method : uint8_t { batch, paired };
inline constexpr const char* method_name(Method m) { return m == Method::batch ? "batch" : "paired"; }

// Batch needs operations that can run back to back: nothing to prepare between them (footprint 0)
// and no hops between two whole-cache flushes (the dirty mask must be refilled before each).
inline constexpr Method method_for(const Pattern& p, uint64_t footprint, uint32_t mask_width) {
    bool back_to_back = footprint == 0 && !(p.whole_cache && mask_width > 1);
    return p.unit == Unit::per_op && back_to_back ? Method::batch : Method::paired;
}

enum class Stop : uint8_t { precise, budget, max_reps };
inline constexpr const char* stop_name(Stop s) {
    return s == Stop::precise ? "precise" : s == Stop::budget ? "budget" : "max_reps";
}

struct StopRule {
    uint32_t min_reps = 5, max_reps = 31;
    uint32_t target_permille = 10;  // interval width as a fraction of the median; 0: never precise
    uint64_t budget_tsc = 0;        // TSC cycles of measured repetitions per cell; 0: no budget
};

// Whether a paired cell's reference is the body over 0 bytes (see above).
inline constexpr bool reference_at_zero(const Pattern& p) { return p.unit == Unit::per_footprint; }

// ---- the bracket -------------------------------------------------------------------------------

// Compiler barrier, LFENCE;RDTSC;LFENCE, the work, RDTSCP;LFENCE, barrier (common/x86/cpu.h).
template <bool kRdtscp, class Work>
[[gnu::always_inline]] inline uint64_t bracket(Work&& work) {
    x86::compiler_barrier();
    uint64_t t0 = x86::tsc_begin();
    work();
    uint64_t t1 = x86::tsc_end<kRdtscp>();
    x86::compiler_barrier();
    return t1 - t0;
}

// kCopies inlined copies of pattern I's body (a constant-expression call, so the compiler inlines
// it), each followed by a compiler barrier so that no copy merges with the next.
template <size_t I, uint32_t kCopies>
[[gnu::always_inline]] inline void copies(const Buffer& b) {
    if constexpr (kCopies > 0) {
        kPatterns[I].body(b);
        x86::compiler_barrier();
        copies<I, kCopies - 1>(b);
    }
}

// T(k) (doubled = false: iterations x kUnroll operations) or T(2k) (the same iterations, each with
// 2 x kUnroll operations): the loops differ only in the operations.
template <size_t I, bool kRdtscp>
uint64_t time_batch(const Buffer& b, uint32_t iterations, bool doubled) {
    if (doubled)
        return bracket<kRdtscp>([&] {
            for (uint32_t i = 0; i < iterations; ++i) copies<I, 2 * kUnroll>(b);
        });
    return bracket<kRdtscp>([&] {
        for (uint32_t i = 0; i < iterations; ++i) copies<I, kUnroll>(b);
    });
}

template <size_t I, bool kRdtscp>
uint64_t time_once(const Buffer& b) {
    return bracket<kRdtscp>([&] { copies<I, 1>(b); });
}

template <bool kRdtscp>
uint64_t time_empty() {
    return bracket<kRdtscp>([] {});
}

// One timer per pattern of the table, indexed like kPatterns.
using BatchTimer = uint64_t (*)(const Buffer&, uint32_t iterations, bool doubled);
using OnceTimer = uint64_t (*)(const Buffer&);

template <bool kRdtscp, size_t I = 0>
inline BatchTimer batch_timer(size_t index) {
    if constexpr (I < kPatternCount) return index == I ? &time_batch<I, kRdtscp> : batch_timer<kRdtscp, I + 1>(index);
    else return nullptr;
}
template <bool kRdtscp, size_t I = 0>
inline OnceTimer once_timer(size_t index) {
    if constexpr (I < kPatternCount) return index == I ? &time_once<I, kRdtscp> : once_timer<kRdtscp, I + 1>(index);
    else return nullptr;
}

// ---- statistics the guest can afford ------------------------------------------------------------

inline uint64_t isqrt(uint64_t v) {
    uint64_t r = 0, bit = uint64_t(1) << 62;
    while (bit > v) bit >>= 2;
    while (bit) {
        if (v >= r + bit) v -= r + bit, r = (r >> 1) + bit;
        else r >>= 1;
        bit >>= 2;
    }
    return r;
}

inline void sort(int64_t* a, uint32_t n) {  // Shell sort: no allocation, n at most a few thousand
    for (uint32_t gap = n / 2; gap > 0; gap /= 2)
        for (uint32_t i = gap; i < n; ++i)
            for (uint32_t j = i; j >= gap && a[j - gap] > a[j]; j -= gap) {
                int64_t t = a[j];
                a[j] = a[j - gap];
                a[j - gap] = t;
            }
}

// The distribution-free 95% interval of the median of sorted[0..n): the order statistics
// n/2 -+ 0.98 sqrt(n) (the binomial(n, 1/2) quantiles, normal approximation), clamped to the data.
struct MedianInterval {
    int64_t lo, median, hi;
};
inline MedianInterval median_interval(const int64_t* sorted, uint32_t n) {
    uint32_t half = uint32_t((isqrt(uint64_t(n) * 9604) + 99) / 100);  // ceil(0.98 sqrt(n)), 0.98^2 = 0.9604
    uint32_t mid = n / 2, lo = mid > half ? mid - half : 0, hi = mid + half < n ? mid + half : n - 1;
    return {sorted[lo], sorted[mid], sorted[hi]};
}

inline bool precise_enough(const MedianInterval& m, uint32_t target_permille) {
    uint64_t width = uint64_t(m.hi - m.lo), center = uint64_t(m.median < 0 ? -m.median : m.median);
    return target_permille && center && width * 1000 <= center * target_permille;
}

// ---- a cell ---------------------------------------------------------------------------------------

struct Plan {
    Method method = Method::paired;
    uint32_t k = 1;  // operations in T(k) (batch: chosen by measure_cell unless set); 1 for paired
    uint32_t warmup = 0;
    StopRule stop;
};

struct Samples {
    uint64_t* value;   // per repetition: T(2k) (batch) or the pattern's bracket (paired)
    uint64_t* ref;     // per repetition: T(k) (batch) or the reference bracket (paired)
    int64_t* scratch;  // room for the stopping rule's sort
    uint32_t capacity;
};

struct Outcome {
    uint32_t n = 0;    // measured repetitions stored
    uint64_t ops = 0;  // operations issued, warm-up included (each one a VM exit for the patterns
                       // that exit, which is how the kernel's counts are checked)
    Stop stop = Stop::max_reps;
};

// The repetitions of a cell, whatever times them. Env: prepare() (untimed, before every bracket of
// the pattern), batch(doubled) (T(k) or T(2k)), value() and reference() (the paired brackets),
// counters_before() / counters_after(rep) around the value bracket (rep < 0 for warm-up), tick(r)
// after each repetition (keeps a guest's watchdog fed) and now() (the TSC) for the budget. The
// hardware's Env is Timed below; tests give synthetic ones.
template <class Env>
Outcome run(const Plan& plan, Samples& s, Env& env) {
    Outcome o;
    uint32_t max = plan.stop.max_reps < s.capacity ? plan.stop.max_reps : s.capacity;
    uint32_t next_check = plan.stop.min_reps;
    uint64_t start = 0;
    for (uint32_t r = 0; r < plan.warmup + max; ++r) {
        bool measured = r >= plan.warmup;
        if (r == plan.warmup) start = env.now();
        int32_t rep = measured ? int32_t(r - plan.warmup) : -1;
        uint64_t value = 0, ref = 0;
        // Alternate which bracket goes first, so drift and order effects cancel too.
        if (plan.method == Method::batch) {
            env.prepare();
            if (r & 1) ref = env.batch(false);
            env.counters_before();
            value = env.batch(true);
            env.counters_after(rep);
            if (!(r & 1)) ref = env.batch(false);
            o.ops += 3ull * plan.k;
        } else {
            if (r & 1) ref = env.reference();
            env.prepare();
            env.counters_before();
            value = env.value();
            env.counters_after(rep);
            if (!(r & 1)) ref = env.reference();
            o.ops += 1;
        }
        env.tick(r);
        if (!measured) continue;
        s.value[o.n] = value;
        s.ref[o.n] = ref;
        ++o.n;
        if (o.n < plan.stop.min_reps) continue;
        if (plan.stop.budget_tsc && env.now() - start >= plan.stop.budget_tsc) {
            o.stop = Stop::budget;
            break;
        }
        if (o.n >= next_check && plan.stop.target_permille) {
            // The check sorts: cheap enough at these sizes, but not after every repetition.
            next_check = o.n + (o.n / 8 > 1 ? o.n / 8 : 1);
            for (uint32_t i = 0; i < o.n; ++i) s.scratch[i] = int64_t(s.value[i] - s.ref[i]);
            sort(s.scratch, o.n);
            if (precise_enough(median_interval(s.scratch, o.n), plan.stop.target_permille)) {
                o.stop = Stop::precise;
                break;
            }
        }
    }
    return o;
}

// k for a batch cell: a few T(kUnroll) / T(2 kUnroll) pairs estimate one operation's cost c, then
// k = kBracketShare x bracket / c, in whole loop iterations, within [kMinBatch, kMaxBatch].
// `batch(iterations, doubled)` times the loops; the pilot's operations count into `ops`.
template <class Batch>
uint32_t choose_batch(Batch&& batch, uint64_t empty_bracket, int64_t* scratch, uint64_t& ops) {
    for (uint32_t i = 0; i < kPilotReps; ++i) {
        uint64_t single = batch(1u, false), twice = batch(1u, true);
        scratch[i] = int64_t(twice - single);
        ops += 3 * kUnroll;
    }
    sort(scratch, kPilotReps);
    int64_t per_op = scratch[kPilotReps / 2] / int64_t(kUnroll);
    uint64_t want = per_op > 0 ? uint64_t(kBracketShare) * empty_bracket / uint64_t(per_op) : kMaxBatch;
    if (want < kMinBatch) want = kMinBatch;
    if (want > kMaxBatch) want = kMaxBatch;
    return uint32_t((want + kUnroll - 1) / kUnroll * kUnroll);
}

// The hardware's Env for pattern `index` over `b`: the timers above, and the caller's Hooks for
// the rest (prepare, counters, tick; the guest adds hops and its PMU).
template <bool kRdtscp, class Hooks>
struct Timed {
    size_t index;
    Buffer b;
    uint32_t iterations;  // k / kUnroll
    Hooks& hooks;
    void prepare() { hooks.prepare(kPatterns[index], b); }
    uint64_t batch(bool doubled) { return batch_timer<kRdtscp>(index)(b, iterations, doubled); }
    uint64_t value() { return once_timer<kRdtscp>(index)(b); }
    uint64_t reference() {
        return reference_at_zero(kPatterns[index]) ? once_timer<kRdtscp>(index)(Buffer{b.base, 0, b.line}) : time_empty<kRdtscp>();
    }
    void counters_before() { hooks.counters_before(); }
    void counters_after(int32_t rep) { hooks.counters_after(rep); }
    void tick(uint32_t r) { hooks.tick(r); }
    uint64_t now() { return x86::tsc_begin(); }
};

// A cell on the hardware: its k chosen (a batch whose plan has none yet), then its repetitions.
template <bool kRdtscp, class Hooks>
Outcome measure_cell(size_t index, const Buffer& b, Plan& plan, Samples& s, uint64_t empty_bracket, Hooks& hooks) {
    uint64_t pilot_ops = 0;
    if (plan.method == Method::batch && plan.k < kMinBatch) {
        BatchTimer timer = batch_timer<kRdtscp>(index);
        plan.k = choose_batch(
            [&](uint32_t iterations, bool doubled) {
                hooks.prepare(kPatterns[index], b);
                return timer(b, iterations, doubled);
            },
            empty_bracket, s.scratch, pilot_ops);
    }
    Timed<kRdtscp, Hooks> env{index, b, plan.k / kUnroll, hooks};
    Outcome o = run(plan, s, env);
    o.ops += pilot_ops;
    return o;
}

}  // namespace fb::measure
