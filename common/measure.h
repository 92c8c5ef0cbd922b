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
// time budget is spent, or it reached max_reps; never before min_reps (stop_reason names which).
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
    uint32_t k = 1;  // operations in T(k) (batch); 1 for paired
    uint32_t warmup = 0;
    StopRule stop;
};

struct Samples {
    uint64_t* value;   // per repetition: T(2k) (batch) or the pattern's bracket (paired)
    uint64_t* ref;     // per repetition: T(k) (batch) or the empty bracket (paired)
    int64_t* scratch;  // room for the stopping rule's sort
    uint32_t capacity;
};

struct Outcome {
    uint32_t n = 0;    // measured repetitions stored
    uint64_t ops = 0;  // operations issued, pilot and warm-up included (each one a VM exit for
                       // the patterns that exit, which is how the kernel's counts are checked)
    Stop stop = Stop::max_reps;
};

// Env: prepare(p, b) (untimed, before every bracket of the pattern), counters_before() /
// counters_after(rep) around the value bracket (rep < 0 for warm-up), tick(rep) after each
// repetition (keeps the guest's watchdog fed), and now() (the TSC) for the budget.
template <bool kRdtscp, class Env>
Outcome run(size_t index, const Buffer& b, const Plan& plan, Samples& s, Env& env) {
    const Pattern& p = kPatterns[index];
    Outcome o;
    BatchTimer batch = batch_timer<kRdtscp>(index);
    OnceTimer once = once_timer<kRdtscp>(index);
    uint32_t iterations = plan.k / kUnroll;
    const Buffer none{b.base, 0, b.line};
    auto reference = [&] { return reference_at_zero(p) ? once(none) : time_empty<kRdtscp>(); };
    uint32_t max = plan.stop.max_reps < s.capacity ? plan.stop.max_reps : s.capacity;
    uint32_t next_check = plan.stop.min_reps;
    uint64_t start = 0;
    for (uint32_t r = 0; r < plan.warmup + max; ++r) {
        bool measured = r >= plan.warmup;
        if (r == plan.warmup) start = env.now();
        int32_t rep = measured ? int32_t(r - plan.warmup) : -1;
        uint64_t value = 0, ref = 0;
        if (plan.method == Method::batch) {
            // Alternate which bracket goes first, so drift and order effects cancel too.
            env.prepare(p, b);
            if (r & 1) ref = batch(b, iterations, false);
            env.counters_before();
            value = batch(b, iterations, true);
            env.counters_after(rep);
            if (!(r & 1)) ref = batch(b, iterations, false);
            o.ops += 3ull * plan.k;
        } else {
            if (r & 1) ref = reference();
            env.prepare(p, b);
            env.counters_before();
            value = once(b);
            env.counters_after(rep);
            if (!(r & 1)) ref = reference();
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
// k = kBracketShare x bracket / c, in whole loop iterations, within [kMinBatch, kMaxBatch]. The
// pilot's operations count into `ops`.
template <bool kRdtscp, class Env>
uint32_t choose_batch(size_t index, const Buffer& b, uint64_t empty_bracket, int64_t* scratch, uint64_t& ops, Env& env) {
    BatchTimer batch = batch_timer<kRdtscp>(index);
    for (uint32_t i = 0; i < kPilotReps; ++i) {
        env.prepare(kPatterns[index], b);
        uint64_t single = batch(b, 1, false), twice = batch(b, 1, true);
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

}  // namespace fb::measure
