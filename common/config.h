// The run configuration, as the guest receives it on its command line (Multiboot/PVH cmdline or the
// direct entry's boot info) and as the host composes it. One parser, used by both sides:
//
//   patterns=wbinvd,clflush footprints=0,4K,1M,2xLLC reps=31 warmup=3 skip=clwb:hangs-here
//   pmu=auto|off phases=1 from=0 inject=hang@3 (fault injection, for tests)
//   pace=idle:2000,wbinvd@100:2000,wbinvd@max:2000 pace_footprint=4K tsc_khz=2445000
//   pace_rounds=3 pace_seed=1 (interleaved rounds of the paced steps: pace_schedule below)
//   mask_width=4 (direct entry only: before every whole-cache flush, run on 4 pCPUs)
//   min_reps=5 target=10 budget_ms=200 (a cell stops once its median is known to target/1000, or
//   after budget_ms of repetitions; reps is the most it runs, min_reps the fewest: common/measure.h)
//
// `patterns=none` runs no measured cells (a run of paced steps only). Paced steps follow the
// measured cells in every phase: the guest issues the pattern at a fixed rate (or back to back)
// for a fixed time, so a host neighbour can see what a given flush rate costs it.
//
// A first token without "=" is the image path GRUB prepends, and is ignored.
#pragma once

#include "common/patterns.h"
#include "common/text.h"

namespace fb {

struct FootprintSpec {
    uint64_t bytes;     // absolute size, when llc_times == 0
    uint32_t llc_times; // N in "NxLLC": resolved against the LLC the CPU reports
};

// One paced step: `pattern` issued at `rate_hz` (0: back to back) for `ms`, or nothing at all (idle).
struct PaceStep {
    uint8_t pattern = 0;  // index into kPatterns; "nop" for idle
    uint32_t rate_hz = 0;
    uint32_t ms = 0;
    bool idle = false;
};

// Fault injection for the harness's own tests: what the guest does when it reaches one cell.
enum class Inject : uint8_t { none, hang, triple_fault, flood, panic };

struct Config {
    static constexpr size_t kMaxFootprints = 16;
    static constexpr size_t kMaxPaceSteps = 16;
    // A paced step keeps a uniform random subset of its operations' timings (reservoir sampling):
    // at "max" it may run millions, and every sample is a record to stream.
    static constexpr uint32_t kPaceSamples = 4096;
    static constexpr size_t kMaxReasonLen = 48;

    uint8_t pattern_order[kPatternCount] = {};  // indices into kPatterns, in the order asked
    size_t pattern_count = 0;
    FootprintSpec footprints[kMaxFootprints] = {};
    size_t footprint_count = 0;
    uint32_t reps = 31;              // the most measured repetitions a cell runs
    uint32_t warmup = 3;
    uint32_t min_reps = 5;           // the fewest, whatever the stopping rule says
    uint32_t target_permille = 10;   // stop once the median's 95% interval is this narrow (0: never)
    uint32_t budget_ms = 0;          // stop after this much measuring (0: no budget; needs a TSC rate)
    uint32_t phases = 1;  // the built-in VMM toggles snoop-control mode between phases
    uint32_t from = 0;    // first cell id to run: the host resumes a plan after a hung cell
    bool pmu = true;
    Inject inject = Inject::none;
    uint32_t inject_cell = 0;
    bool skipped[kPatternCount] = {};
    char skip_reason[kPatternCount][kMaxReasonLen + 1] = {};
    PaceStep pace[kMaxPaceSteps] = {};
    size_t pace_count = 0;
    FootprintSpec pace_footprint = {4 * 1024, 0};   // what each paced operation dirties first
    uint32_t pace_rounds = 0;                       // 0: the steps once, as listed; R: pace_schedule's rounds
    uint64_t pace_seed = 1;                         // the rounds' shuffles
    uint64_t tsc_khz = 0;                           // from the host (KVM_GET_TSC_KHZ); 0: the guest's own
    // KVM flushes every pCPU in the vCPU's wbinvd_dirty_mask: the pCPUs it was loaded on since its
    // last WBINVD. With mask_width = K > 1 the guest hops K times through the VMM's K-CPU hop set
    // (boot.h kHopPort) before each whole-cache flush, untimed, so that K pCPUs are in the mask.
    uint32_t mask_width = 1;

    static constexpr uint32_t kMaxReps = 100000, kMaxWarmup = 10000, kMaxPhases = 8, kMaxMaskWidth = 64;
    static constexpr uint32_t kMaxTarget = 1000, kMaxBudgetMs = 600000, kMaxPaceRounds = 16;
    static constexpr uint32_t kMaxPaceRate = 10000000, kMinPaceMs = 10, kMaxPaceMs = 600000;
};

struct ConfigError {
    const char* message = nullptr;  // null when parsing succeeded
    Str token;                      // the offending token
};

inline constexpr const char* kDefaultFootprints = "0,4K,64K,1M,16M,1xLLC,2xLLC";

namespace config_detail {

inline bool parse_footprint(Str s, FootprintSpec& out) {
    // "2xLLC"
    if (s.n > 4 && s.sub(s.n - 4) == Str("xLLC")) {
        uint64_t k = 0;
        if (!parse_u64(s.sub(0, s.n - 4), k) || k == 0 || k > 64) return false;
        out = {0, uint32_t(k)};
        return true;
    }
    uint64_t bytes = 0;
    if (!parse_size(s, bytes) || bytes > (1ull << 40)) return false;
    out = {bytes, 0};
    return true;
}

inline ConfigError set_footprints(Config& c, Str list) {
    c.footprint_count = 0;
    Splitter it(list, ',');
    Str item;
    while (it.next(item)) {
        if (c.footprint_count == Config::kMaxFootprints) return {"too many footprints (at most 16)", item};
        FootprintSpec& f = c.footprints[c.footprint_count];
        if (!parse_footprint(item, f)) return {"bad footprint: use bytes with an optional K/M/G suffix, or NxLLC", item};
        for (size_t i = 0; i < c.footprint_count; ++i)
            if (c.footprints[i].bytes == f.bytes && c.footprints[i].llc_times == f.llc_times)
                return {"footprint listed twice", item};
        ++c.footprint_count;
    }
    return {};
}

inline ConfigError set_patterns(Config& c, Str list) {
    c.pattern_count = 0;
    if (list == Str("none")) return {};
    // "all": the flush patterns; "memtypes": the memory-type patterns.
    if (list == Str("all") || list == Str("memtypes")) {
        Group g = list == Str("all") ? Group::flush : Group::memtype;
        for (size_t i = 0; i < kPatternCount; ++i)
            if (kPatterns[i].group == g) c.pattern_order[c.pattern_count++] = uint8_t(i);
        return {};
    }
    bool seen[kPatternCount] = {};
    Splitter it(list, ',');
    Str item;
    while (it.next(item)) {
        const Pattern* p = find_pattern(item);
        if (!p) return {"unknown pattern (see the pattern table in README)", item};
        size_t idx = size_t(p - kPatterns);
        if (seen[idx]) return {"pattern listed twice", item};
        seen[idx] = true;
        c.pattern_order[c.pattern_count++] = uint8_t(idx);
    }
    return {};
}

inline ConfigError set_skips(Config& c, Str list) {
    Splitter it(list, ',');
    Str item;
    while (it.next(item)) {
        size_t colon = item.find(':');
        Str name = item.sub(0, colon), reason = colon < item.n ? item.sub(colon + 1) : Str("excluded");
        const Pattern* p = find_pattern(name);
        if (!p) return {"unknown pattern in skip", item};
        if (reason.empty() || reason.n > Config::kMaxReasonLen) return {"skip reason must be 1-48 characters", item};
        for (size_t i = 0; i < reason.n; ++i)  // it travels in records and results as text
            if (reason[i] <= ' ' || reason[i] > '~') return {"skip reason must be printable ASCII", item};
        size_t idx = size_t(p - kPatterns);
        c.skipped[idx] = true;
        for (size_t i = 0; i < reason.n; ++i) c.skip_reason[idx][i] = reason[i];
        c.skip_reason[idx][reason.n] = 0;
    }
    return {};
}

// "idle:2000", "wbinvd@100:2000" (100 per second for 2 s), "clflush@max:1000" (back to back).
inline ConfigError set_pace(Config& c, Str list) {
    c.pace_count = 0;
    Splitter it(list, ',');
    Str item;
    while (it.next(item)) {
        if (c.pace_count == Config::kMaxPaceSteps) return {"too many pace steps (at most 16)", item};
        size_t colon = item.find(':');
        uint64_t ms = 0;
        if (colon == item.n || !parse_u64(item.sub(colon + 1), ms) || ms < Config::kMinPaceMs || ms > Config::kMaxPaceMs)
            return {"pace step takes pattern@rate:ms or idle:ms, with ms 10-600000", item};
        Str what = item.sub(0, colon);
        PaceStep step;
        step.ms = uint32_t(ms);
        if (what == Str("idle")) {
            step.idle = true;
            step.pattern = uint8_t(find_pattern("nop") - kPatterns);
        } else {
            size_t at = what.find('@');
            if (at == what.n) return {"pace step takes pattern@rate:ms (rate per second, or max)", item};
            const Pattern* p = find_pattern(what.sub(0, at));
            if (!p) return {"unknown pattern in pace step", item};
            Str rate = what.sub(at + 1);
            uint64_t hz = 0;
            if (rate == Str("max")) hz = 0;
            else if (!parse_u64(rate, hz) || hz == 0 || hz > Config::kMaxPaceRate)
                return {"pace rate must be 1-10000000 per second, or max", item};
            step.pattern = uint8_t(p - kPatterns);
            step.rate_hz = uint32_t(hz);
        }
        c.pace[c.pace_count++] = step;
    }
    return {};
}

// "hang@3": at cell 3, spin forever; triple_fault, flood (garbage and oversized lines), panic.
inline ConfigError set_inject(Config& c, Str value) {
    size_t at = value.find('@');
    Str kind = value.sub(0, at);
    uint64_t cell = 0;
    if (at == value.n || !parse_u64(value.sub(at + 1), cell) || cell > (1u << 30)) return {"inject takes kind@cell", value};
    if (kind == Str("hang")) c.inject = Inject::hang;
    else if (kind == Str("triple_fault")) c.inject = Inject::triple_fault;
    else if (kind == Str("flood")) c.inject = Inject::flood;
    else if (kind == Str("panic")) c.inject = Inject::panic;
    else return {"inject kind must be hang, triple_fault, flood or panic", value};
    c.inject_cell = uint32_t(cell);
    return {};
}

inline ConfigError set_count(Str value, uint32_t lo, uint32_t hi, uint32_t& out, const char* what) {
    uint64_t v = 0;
    if (!parse_u64(value, v) || v < lo || v > hi) return {what, value};
    out = uint32_t(v);
    return {};
}

}  // namespace config_detail

// Parses a whole command line into `c` (which starts from its defaults).
inline ConfigError parse_config(Str cmdline, Config& c) {
    using namespace config_detail;
    c = Config{};
    ConfigError e = set_patterns(c, "all");
    if (!e.message) e = set_footprints(c, kDefaultFootprints);
    if (e.message) return e;
    Splitter words(cmdline, ' ');
    Str w;
    bool first = true;
    while (words.next(w)) {
        if (w.empty()) continue;
        size_t eq = w.find('=');
        if (eq == w.n) {
            if (first) {  // GRUB passes the image path as the first word
                first = false;
                continue;
            }
            return {"expected key=value", w};
        }
        first = false;
        Str key = w.sub(0, eq), value = w.sub(eq + 1);
        if (value.empty()) return {"empty value", w};
        if (key == Str("patterns")) e = set_patterns(c, value);
        else if (key == Str("footprints")) e = set_footprints(c, value);
        else if (key == Str("reps")) e = set_count(value, 1, Config::kMaxReps, c.reps, "reps must be 1-100000");
        else if (key == Str("warmup")) e = set_count(value, 0, Config::kMaxWarmup, c.warmup, "warmup must be 0-10000");
        else if (key == Str("phases")) e = set_count(value, 1, Config::kMaxPhases, c.phases, "phases must be 1-8");
        else if (key == Str("from")) e = set_count(value, 0, 1u << 30, c.from, "from must be a cell id");
        else if (key == Str("mask_width")) e = set_count(value, 1, Config::kMaxMaskWidth, c.mask_width, "mask_width must be 1-64");
        else if (key == Str("min_reps")) e = set_count(value, 1, Config::kMaxReps, c.min_reps, "min_reps must be 1-100000");
        else if (key == Str("target")) e = set_count(value, 0, Config::kMaxTarget, c.target_permille, "target must be 0-1000 (permille)");
        else if (key == Str("budget_ms")) e = set_count(value, 0, Config::kMaxBudgetMs, c.budget_ms, "budget_ms must be 0-600000");
        else if (key == Str("pace_rounds")) e = set_count(value, 0, Config::kMaxPaceRounds, c.pace_rounds, "pace_rounds must be 0-16");
        else if (key == Str("pace_seed")) {
            if (!parse_u64(value, c.pace_seed)) e = {"pace_seed must be a number", w};
        }
        else if (key == Str("skip")) e = set_skips(c, value);
        else if (key == Str("inject")) e = set_inject(c, value);
        else if (key == Str("pace")) e = set_pace(c, value);
        else if (key == Str("pace_footprint")) {
            if (!parse_footprint(value, c.pace_footprint)) e = {"bad pace_footprint: use bytes with an optional K/M/G suffix, or NxLLC", w};
        } else if (key == Str("tsc_khz")) {
            if (!parse_u64(value, c.tsc_khz) || c.tsc_khz < 1000 || c.tsc_khz > 100000000) e = {"tsc_khz must be 1000-100000000", w};
        }
        else if (key == Str("pmu")) {
            if (value == Str("auto")) c.pmu = true;
            else if (value == Str("off")) c.pmu = false;
            else e = {"pmu must be auto or off", w};
        } else {
            e = {"unknown key (patterns, footprints, reps, warmup, phases, from, skip, pmu, inject, pace, pace_footprint, pace_rounds, pace_seed, tsc_khz, mask_width, min_reps, target, budget_ms)", w};
        }
        if (e.message) return e;
    }
    return {};
}

namespace config_detail {

inline void put_footprint(FixedWriter& w, const FootprintSpec& f) {
    if (f.llc_times) return w.put_u64(f.llc_times), w.put("xLLC");
    // The largest exact suffix keeps the line short and as a person would write it.
    static constexpr struct { uint64_t unit; char suffix; } kUnits[] = {{1ull << 30, 'G'}, {1ull << 20, 'M'}, {1ull << 10, 'K'}};
    for (const auto& u : kUnits)
        if (f.bytes && f.bytes % u.unit == 0) return w.put_u64(f.bytes / u.unit), w.put(u.suffix);
    w.put_u64(f.bytes);
}

inline void put_key(FixedWriter& w, const char* key) {
    if (w.size()) w.put(' ');
    w.put(Str(key)), w.put('=');
}

inline void put_count(FixedWriter& w, const char* key, uint64_t v) { put_key(w, key), w.put_u64(v); }

}  // namespace config_detail

// The one way a Config becomes a command line: parse_config(format_config(c)) gives back c
// (same_config below). The host builds a Config once and sends every boot its own copy this way.
inline void format_config(const Config& c, FixedWriter& w) {
    using namespace config_detail;
    put_key(w, "patterns");
    if (!c.pattern_count) w.put("none");
    for (size_t i = 0; i < c.pattern_count; ++i) {
        if (i) w.put(',');
        w.put(Str(kPatterns[c.pattern_order[i]].name));
    }
    put_key(w, "footprints");
    for (size_t i = 0; i < c.footprint_count; ++i) {
        if (i) w.put(',');
        put_footprint(w, c.footprints[i]);
    }
    put_count(w, "reps", c.reps), put_count(w, "warmup", c.warmup), put_count(w, "min_reps", c.min_reps);
    put_count(w, "target", c.target_permille), put_count(w, "budget_ms", c.budget_ms);
    put_count(w, "phases", c.phases), put_count(w, "from", c.from);
    bool first_skip = true;
    for (size_t i = 0; i < kPatternCount; ++i) {
        if (!c.skipped[i]) continue;
        if (first_skip) put_key(w, "skip");
        else w.put(',');
        first_skip = false;
        w.put(Str(kPatterns[i].name)), w.put(':'), w.put(Str(c.skip_reason[i]));
    }
    if (!c.pmu) put_key(w, "pmu"), w.put("off");
    if (c.pace_count) {
        put_key(w, "pace");
        for (size_t i = 0; i < c.pace_count; ++i) {
            const PaceStep& s = c.pace[i];
            if (i) w.put(',');
            if (s.idle) w.put("idle");
            else {
                w.put(Str(kPatterns[s.pattern].name)), w.put('@');
                if (s.rate_hz) w.put_u64(s.rate_hz);
                else w.put("max");
            }
            w.put(':'), w.put_u64(s.ms);
        }
    }
    put_key(w, "pace_footprint"), put_footprint(w, c.pace_footprint);
    put_count(w, "pace_rounds", c.pace_rounds), put_count(w, "pace_seed", c.pace_seed);
    if (c.tsc_khz) put_count(w, "tsc_khz", c.tsc_khz);
    if (c.mask_width != 1) put_count(w, "mask_width", c.mask_width);
    if (c.inject != Inject::none) {
        static constexpr const char* kInjectNames[] = {"none", "hang", "triple_fault", "flood", "panic"};
        put_key(w, "inject"), w.put(Str(kInjectNames[size_t(c.inject)])), w.put('@'), w.put_u64(c.inject_cell);
    }
}

// Equal as configurations: what parse_config leaves past a list's count does not matter.
inline bool same_config(const Config& a, const Config& b) {
    auto same_fp = [](const FootprintSpec& x, const FootprintSpec& y) { return x.bytes == y.bytes && x.llc_times == y.llc_times; };
    if (a.pattern_count != b.pattern_count || a.footprint_count != b.footprint_count || a.pace_count != b.pace_count) return false;
    for (size_t i = 0; i < a.pattern_count; ++i)
        if (a.pattern_order[i] != b.pattern_order[i]) return false;
    for (size_t i = 0; i < a.footprint_count; ++i)
        if (!same_fp(a.footprints[i], b.footprints[i])) return false;
    for (size_t i = 0; i < a.pace_count; ++i) {
        const PaceStep &x = a.pace[i], &y = b.pace[i];
        if (x.pattern != y.pattern || x.rate_hz != y.rate_hz || x.ms != y.ms || x.idle != y.idle) return false;
    }
    for (size_t i = 0; i < kPatternCount; ++i) {
        if (a.skipped[i] != b.skipped[i]) return false;
        if (a.skipped[i] && !(Str(a.skip_reason[i]) == Str(b.skip_reason[i]))) return false;
    }
    return a.reps == b.reps && a.warmup == b.warmup && a.min_reps == b.min_reps && a.target_permille == b.target_permille &&
           a.budget_ms == b.budget_ms && a.phases == b.phases && a.from == b.from && a.pmu == b.pmu && a.inject == b.inject &&
           (a.inject == Inject::none || a.inject_cell == b.inject_cell) && same_fp(a.pace_footprint, b.pace_footprint) &&
           a.pace_rounds == b.pace_rounds && a.pace_seed == b.pace_seed && a.tsc_khz == b.tsc_khz && a.mask_width == b.mask_width;
}

// The paced steps of a phase, in the order they run. With pace_rounds = 0, the steps as listed.
// With R rounds (what a neighbour needs: drift between two far-apart idle steps must not read as an
// effect), each round runs the active steps in an order shuffled with pace_seed and the round, an
// idle step before, between and after them (the first idle step listed gives its length): idle,
// A, idle, B, idle, ... so that every active step has an idle step on each side to be compared with.
struct PacedSlot {
    uint8_t step;    // index into Config::pace
    int8_t round;    // -1: not in rounds
    uint8_t slot;    // position within its round
};
inline constexpr size_t kMaxPacedSlots = Config::kMaxPaceRounds * (2 * Config::kMaxPaceSteps + 1);

inline uint32_t pace_schedule(const Config& c, PacedSlot* out) {
    uint32_t n = 0;
    if (!c.pace_rounds) {
        for (size_t i = 0; i < c.pace_count; ++i) out[n++] = {uint8_t(i), -1, uint8_t(i)};
        return n;
    }
    int idle = -1;
    uint8_t active[Config::kMaxPaceSteps];
    uint32_t actives = 0;
    for (size_t i = 0; i < c.pace_count; ++i) {
        if (c.pace[i].idle) idle = idle < 0 ? int(i) : idle;
        else active[actives++] = uint8_t(i);
    }
    for (uint32_t r = 0; r < c.pace_rounds; ++r) {
        uint64_t state = (c.pace_seed + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t(r) + 1) * 0xbf58476d1ce4e5b9ull;
        for (uint32_t i = actives; i > 1; --i) {  // Fisher-Yates, xorshift64 draws
            state ^= state << 13, state ^= state >> 7, state ^= state << 17;
            uint32_t j = uint32_t(state % i);
            uint8_t t = active[i - 1];
            active[i - 1] = active[j], active[j] = t;
        }
        uint8_t slot = 0;
        for (uint32_t i = 0; i < actives; ++i) {
            if (idle >= 0) out[n++] = {uint8_t(idle), int8_t(r), slot++};
            out[n++] = {active[i], int8_t(r), slot++};
        }
        if (idle >= 0) out[n++] = {uint8_t(idle), int8_t(r), slot++};
    }
    return n;
}

// Cells per phase: footprint patterns once per footprint, the others once, then one per paced
// slot. Cell ids run phase-major, then in pattern order, then footprint order, then the pace
// schedule's order; host and guest both rely on it.
inline uint32_t cells_per_phase(const Config& c) {
    PacedSlot slots[kMaxPacedSlots];
    uint32_t n = pace_schedule(c, slots);
    for (size_t i = 0; i < c.pattern_count; ++i) n += kPatterns[c.pattern_order[i]].uses_footprint ? uint32_t(c.footprint_count) : 1;
    return n;
}

// Footprint in bytes for this CPU; 0 with ok=false when NxLLC is asked but the LLC is unknown.
inline uint64_t resolve_footprint(const FootprintSpec& f, uint64_t llc, bool& ok) {
    ok = f.llc_times == 0 || llc != 0;
    return f.llc_times ? llc * f.llc_times : f.bytes;
}

}  // namespace fb
