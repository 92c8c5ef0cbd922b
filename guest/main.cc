// The flushbench guest: parse the configuration, describe the CPU, then run every cell
// (pattern x footprint) and stream its raw samples as wire records. Nothing here allocates;
// nothing here trusts that an instruction exists until CPUID says so.
// Just over 500 lines: the cell loop, the paced steps and the record stream are the guest's one
// flow, read top to bottom.
#include "common/boot.h"
#include "common/cell_plan.h"
#include "common/config.h"
#include "common/measure.h"
#include "common/patterns.h"
#include "common/wire.h"
#include "common/x86/cache.h"
#include "common/x86/cpu.h"
#include "common/x86/io.h"
#include "guest/boot_info.h"
#include "guest/cr.h"
#include "guest/idt.h"
#include "guest/msr.h"
#include "guest/paging.h"
#include "guest/pmu.h"
#include "guest/records.h"
#include "guest/recovery.h"
#include "guest/serial.h"

extern "C" char __image_end[];

namespace fb::guest {
namespace {

using wire::Writer;

constexpr uint32_t kBracketReps = 101;  // the empty bracket's median: what choosing k needs
constexpr uint32_t kCalibrationReps = 31;  // the timing floor: nop as a batch cell

uint64_t tsc_samples[Config::kMaxReps];  // the value brackets (and a paced step's reservoir)
uint64_t ref_samples[Config::kMaxReps];  // the reference brackets
int64_t scratch[Config::kMaxReps];       // the stopping rule's sort
uint64_t pmc_samples[Pmu::kMaxCounters][Config::kMaxReps];

Config config;
x86::TscFreq tsc_freq{0, "unknown"};
uint64_t tsc_overhead = 0;   // the empty bracket's median: paced steps' timings carry it
uint64_t empty_bracket = 0;  // the same, for choosing a batch's k
uint64_t llc = 0;
uint32_t line = 64;
bool has_rdtscp = false;
bool direct_entry = false;  // flushbench's VMM: the record and hop ports exist
Buffer arena{};  // all RAM above the image, 2 MiB aligned

struct Tally {
    uint64_t cells, ok, unsupported, fault, skipped;
} tally{};

[[noreturn]] void stop(boot::ExitCode code) {
    x86::outl(boot::kExitPort, uint32_t(code));
    // Still running: bare metal, or QEMU without isa-debug-exit.
    Serial::write("flushbench: run finished, halting\n");
    halt_forever();
}

void emit_hello(const BootFacts& boot) {
    Writer w("hello");
    w.field("v", uint64_t(wire::kVersion)).field("entry", entry_name(boot.entry));
    w.field("vendor", x86::cpu_vendor().s);
    auto sig = x86::cpuid(1).eax;
    uint32_t family = (sig >> 8 & 0xf) + ((sig >> 8 & 0xf) == 0xf ? (sig >> 20 & 0xff) : 0);
    uint32_t model = (sig >> 4 & 0xf) | ((family >= 6) ? (sig >> 16 & 0xf) << 4 : 0);
    w.field("family", family).field("model", model).field("stepping", sig & 0xf);
    auto hv = x86::hypervisor_vendor();
    w.field("hv", hv.s[0] ? Str(hv.s) : Str("none"));
    char features[160];
    FixedWriter fw(features, sizeof features);
    const x86::Feature reported[] = {x86::Feature::clflush, x86::Feature::clflushopt, x86::Feature::clwb,
                                     x86::Feature::wbnoinvd, x86::Feature::rdtscp,     x86::Feature::invtsc,
                                     x86::Feature::pdcm,     x86::Feature::perfctr_core};
    for (auto f : reported) {
        if (!x86::has(f)) continue;
        if (fw.size()) fw.put(',');
        fw.put(x86::feature_name(f));
    }
    w.field("features", fw.size() ? fw.str() : Str("none"));
    if (tsc_freq.khz) w.field("tsc_khz", tsc_freq.khz);
    else w.field("tsc_khz", "unknown");
    w.field("tsc_src", tsc_freq.source);
    w.field("llc", llc).field("line", line);
    w.field("ram_end", boot.ram_end).hex("arena", uint64_t(arena.base)).field("arena_bytes", arena.bytes);
    w.hex("pat", Paging::pat()).hex("mtrr_def_type", Paging::mtrr_def_type_at_boot());
    if (Paging::enabled_mtrrs()) w.field("mtrr", "enabled-by-kernel");
    w.field("pmu", Pmu::available() ? Pmu::kind() : "unavailable");
    if (!Pmu::available()) w.field("pmu_reason", Pmu::unavailable_reason());
    else {
        char names[64];
        FixedWriter nw(names, sizeof names);
        for (int i = 0; i < Pmu::count(); ++i) {
            if (i) nw.put(',');
            nw.put(Pmu::name(i));
        }
        w.field("pmu_counters", nw.str());
    }
    w.field("overhead", tsc_overhead).field("bracket", empty_bracket);
    Records::emit(w);
}

void emit_config() {
    Writer w("config");
    char buf[256];
    FixedWriter pw(buf, sizeof buf);
    for (size_t i = 0; i < config.pattern_count; ++i) {
        if (i) pw.put(',');
        pw.put(kPatterns[config.pattern_order[i]].name);
    }
    w.field("patterns", pw.str());
    uint64_t fps[Config::kMaxFootprints];
    for (size_t i = 0; i < config.footprint_count; ++i) {
        bool ok;
        fps[i] = resolve_footprint(config.footprints[i], llc, ok);
    }
    w.list("footprints", fps, config.footprint_count);
    w.field("reps", config.reps).field("warmup", config.warmup).field("phases", config.phases);
    w.field("from", config.from).field("cells", cells_per_phase(config) * config.phases);
    if (config.mask_width > 1) w.field("mask_width", config.mask_width);
    if (config.pace_count) {
        bool ok;
        w.field("pace_steps", uint64_t(config.pace_count)).field("pace_footprint", resolve_footprint(config.pace_footprint, llc, ok));
        w.field("pace_rounds", config.pace_rounds);
    }
    Records::emit(w);
}

// Maps the cell's buffer with the pattern's memory type for the cell's lifetime. SDM 11.12.4:
// lines cached under the old type must go before the new one applies, hence the WBINVDs.
class MappedAs {
public:
    MappedAs(const Buffer& b, const Pattern& p)
        : base_(uint64_t(b.base)), bytes_(b.bytes), changed_(p.memtype != MemType::wb), reported_(p.group == Group::memtype) {
        if (changed_) {
            x86::wbinvd();
            Paging::set_type(base_, bytes_, p.memtype);
        }
        mapped_ = Paging::type_of(base_);  // read back: what the page table now says, WB included
    }
    ~MappedAs() {
        if (!changed_) return;
        x86::wbinvd();
        Paging::set_type(base_, bytes_, MemType::wb);
    }

    // Memory-type cells report their mapping, write-back ones too.
    bool reported() const { return reported_; }
    MemType mapped() const { return mapped_; }

private:
    uint64_t base_, bytes_;
    bool changed_, reported_;
    MemType mapped_ = MemType::wb;
};

// `with_ref`: measured cells carry their reference brackets; a paced step's reservoir has none.
void emit_samples(const char* type, uint64_t id, uint32_t n, bool with_ref) {
    for (uint32_t from = 0; from < n; from += wire::kSamplesPerRecord) {
        uint32_t k = n - from < wire::kSamplesPerRecord ? n - from : uint32_t(wire::kSamplesPerRecord);
        Writer w(type);
        w.field("id", id).field("seq", from).list("tsc", tsc_samples + from, k);
        if (with_ref) w.list("ref", ref_samples + from, k);
        for (int c = 0; c < Pmu::count() && type[0] == 's'; ++c) w.list(Pmu::name(c), pmc_samples[c] + from, k);
        Records::emit(w);
    }
}

// How a measured cell was measured, for its end record.
struct Measured {
    measure::Method method = measure::Method::paired;
    uint32_t k = 1;
    uint64_t ops = 0;
    measure::Stop stop = measure::Stop::max_reps;
};

void emit_end(uint64_t id, const char* status, uint32_t n, const char* reason = nullptr, const MappedAs* mapping = nullptr,
              const Measured* how = nullptr) {
    Writer w("end");
    w.field("id", id).field("status", status).field("n", n).field("warmup", config.warmup);
    w.field("overhead", tsc_overhead);
    if (how) {
        w.field("method", measure::method_name(how->method)).field("k", how->k).field("ops", how->ops);
        w.field("stop", measure::stop_name(how->stop));
    }
    if (reason) w.field("reason", reason);
    // The mapping as the guest reads it back: page-table type and the PAT MSR behind it.
    if (mapping && mapping->reported()) w.field("mapped", mem_type_name(mapping->mapped())).hex("pat", rdmsr(Msr::pat));
    if (!Pmu::available()) w.field("pmu", "unavailable").field("pmu_reason", Pmu::unavailable_reason());
    Records::emit(w);
}

// Long cells stay visibly alive for the host's watchdog, without a record inside a timed region.
void maybe_tick(uint64_t id, uint32_t rep, uint64_t& last) {
    uint64_t now = x86::tsc_begin();
    uint64_t period = tsc_freq.khz ? tsc_freq.khz * 1000 : 3000000000ull;
    if (now - last < period) return;
    last = now;
    Records::emit(Writer("tick").field("id", id).field("rep", rep));
}

// Untimed work before every repetition: the pattern's own preparation, then, before a whole-cache
// flush, mask_width hops through the VMM's hop set, so that KVM has loaded the vCPU on that many
// pCPUs since its last WBINVD (each load adds the pCPU to wbinvd_dirty_mask; each WBINVD clears it).
void prepare(const Pattern& p, const Buffer& buf) {
    p.prepare(buf);
    if (!p.whole_cache || config.mask_width < 2 || !direct_entry) return;
    for (uint32_t i = 0; i < config.mask_width; ++i) x86::outb(boot::kHopPort, 0);
}

// What common/measure.h asks of the kernel around a cell: preparation, the guest PMU around the
// value bracket, a tick for the host's watchdog, the TSC.
struct CellEnv {
    explicit CellEnv(uint64_t cell) : id(cell) {}
    uint64_t id;
    uint64_t last_tick = x86::tsc_begin();
    uint64_t c0[Pmu::kMaxCounters] = {};
    void prepare(const Pattern& p, const Buffer& b) { guest::prepare(p, b); }
    void counters_before() { Pmu::read(c0); }
    void counters_after(int32_t rep) {
        uint64_t c1[Pmu::kMaxCounters];
        Pmu::read(c1);
        if (rep >= 0)
            for (int c = 0; c < Pmu::count(); ++c) pmc_samples[c][rep] = c1[c] - c0[c];
    }
    void tick(uint32_t rep) { maybe_tick(id, rep, last_tick); }
};

measure::StopRule stop_rule() {
    measure::StopRule r;
    r.min_reps = config.min_reps < config.reps ? config.min_reps : config.reps;
    r.max_reps = config.reps;
    r.target_permille = config.target_permille;
    r.budget_tsc = tsc_freq.khz ? uint64_t(config.budget_ms) * tsc_freq.khz : 0;  // no clock, no budget
    return r;
}

// A cell's repetitions, by the estimator its pattern and footprint call for (common/measure.h).
template <bool kRdtscp>
uint32_t measure_cell(uint64_t id, size_t index, const Buffer& buf, Measured& how) {
    const Pattern& p = kPatterns[index];
    CellEnv env(id);
    measure::Plan plan;
    plan.method = measure::method_for(p, buf.bytes, config.mask_width);
    plan.warmup = config.warmup;
    plan.stop = stop_rule();
    measure::Samples s{tsc_samples, ref_samples, scratch, Config::kMaxReps};
    measure::Outcome o = measure::measure_cell<kRdtscp>(index, buf, plan, s, empty_bracket, env);
    how.method = plan.method, how.k = plan.k, how.ops += o.ops, how.stop = o.stop;
    return o.n;
}

// The empty bracket's median, for choosing k, and (as tsc_overhead) what a paced step's timings carry.
template <bool kRdtscp>
uint64_t calibrate_bracket() {
    for (uint32_t i = 0; i < kBracketReps; ++i) scratch[i] = int64_t(measure::time_empty<kRdtscp>());
    measure::sort(scratch, kBracketReps);
    return uint64_t(scratch[kBracketReps / 2]);
}

// The run's timing floor: nop as a batch cell of the largest k, streamed raw ("calib" records);
// the host turns its spread into the floor below which a cost is not told from zero.
template <bool kRdtscp>
void calibrate_floor() {
    size_t nop = size_t(find_pattern("nop") - kPatterns);
    CellEnv env(~0ull);
    measure::Plan plan{measure::Method::batch, measure::kMaxBatch, 2, {kCalibrationReps, kCalibrationReps, 0, 0}};
    measure::Samples s{tsc_samples, ref_samples, scratch, Config::kMaxReps};
    measure::Outcome o = measure::measure_cell<kRdtscp>(nop, Buffer{arena.base, 0, line}, plan, s, empty_bracket, env);
    emit_samples("calib", plan.k, o.n, true);  // "id" is k: a calib record belongs to no cell
}

// The harness's fault-injection tests: misbehave the way real guests and KVMs do, inside an open cell.
void inject_fault() {
    switch (config.inject) {
        case Inject::none: return;
        case Inject::hang:  // like CLWB and VMMCALL on some KVMs: no exit, no output, forever
            for (;;) asm volatile("pause");
        case Inject::triple_fault: {  // an IDT that cannot deliver anything: #BP -> #DF -> shutdown
            struct [[gnu::packed]] {
                uint16_t limit;
                uint64_t base;
            } empty{0, 0};
            asm volatile("lidt %0; int3" ::"m"(empty));
            halt_forever();
        }
        case Inject::flood: {  // console garbage, forged and corrupted records, an oversized line
            for (int i = 0; i < 200; ++i) Serial::write("garbage \x01\x7f line that is not a record\n");
            Records::emit(Writer("samples").field("id", 1u << 30).field("seq", 0));  // valid CRC, wrong cell
            Serial::write("FB1 samples id=0 seq=0 tsc=1,2,3 #00000000\n");               // bad CRC
            for (int i = 0; i < 3000; ++i) Serial::write("x");                          // oversized
            Serial::write("\n");
            return;
        }
        case Inject::panic:
            Records::emit(Writer("panic").field("msg", "injected"));
            stop(boot::ExitCode::panic);
    }
}

// Ends the cell unless its pattern can run here: skipped by the host, an instruction this CPU
// lacks, a footprint that cannot be resolved or does not fit.
bool may_run(uint64_t id, const Pattern& p, uint64_t footprint, bool resolved) {
    size_t index = size_t(&p - kPatterns);
    if (config.skipped[index]) {
        ++tally.skipped;
        emit_end(id, "skipped", 0, config.skip_reason[index]);
        return false;
    }
    char why[40];
    FixedWriter r(why, sizeof why - 1);
    if (!x86::has(p.needs)) r.put("cpu-lacks-"), r.put(x86::feature_name(p.needs));
    else if (!resolved) r.put("llc-size-unknown");
    else if (footprint > arena.bytes) r.put("footprint-exceeds-guest-ram");
    if (!r.size()) return true;
    why[r.size()] = 0;
    ++tally.unsupported;
    emit_end(id, "unsupported", 0, why);
    return false;
}

// The cell's code took an exception (Recovery jumped back here): #UD means the instruction is
// missing after all, anything else is a fault.
void end_with_fault(uint64_t id, const Pattern& p) {
    const FaultInfo& f = Recovery::last();
    Writer fw("fault");
    fw.field("id", id).field("pattern", p.name).field("vector", f.vector).hex("error", f.error_code);
    fw.hex("rip", f.rip).hex("cr2", f.cr2);
    Records::emit(fw);
    if (f.vector == vector::invalid_opcode) {
        ++tally.unsupported;
        return emit_end(id, "unsupported", 0, "invalid-opcode-exception");
    }
    ++tally.fault;
    emit_end(id, "fault", 0, "exception-in-cell");
}

// Runs a cell's timed work over its buffer, mapped as the pattern asks, under the recovery point:
// an exception inside ends the cell as a fault; otherwise its samples and end go out.
template <class Timed>
void run_guarded(uint64_t id, const Pattern& p, const Buffer& buf, const Measured* how, Timed timed) {
    MappedAs mapping(buf, p);
    volatile uint32_t stored = 0;
    if (FB_TRY()) {
        stored = timed(buf);
        Recovery::set_armed(false);
    } else {
        return end_with_fault(id, p);
    }
    emit_samples("samples", id, stored, how != nullptr);
    ++tally.ok;
    emit_end(id, "ok", stored, nullptr, &mapping, how);
}

// Announces a cell with its "cell" record (`more` adds the fields of its kind), then plays the
// harness's fault injection if this is the cell it names.
template <class More>
void announce(uint64_t id, uint32_t phase, const Pattern& p, uint64_t footprint, uint32_t reps, uint32_t warmup, More more) {
    Writer w("cell");
    w.field("id", id).field("phase", phase).field("pattern", p.name).field("footprint", footprint);
    w.field("reps", reps).field("warmup", warmup).field("unit", unit_name(p.unit));
    if (p.group == Group::memtype) w.field("memtype", mem_type_name(p.memtype));
    more(w);
    Records::emit(w);
    if (config.inject != Inject::none && id == config.inject_cell) inject_fault();
}

void run_cell(const PlannedCell& cell) {
    ++tally.cells;
    uint64_t id = cell.id;
    if (id < config.from) return;  // ran in an earlier boot
    const Pattern& p = *cell.pattern;
    bool resolved = true;
    uint64_t footprint = cell.footprint ? resolve_footprint(*cell.footprint, llc, resolved) : 0;
    announce(id, cell.phase, p, footprint, config.reps, config.warmup, [](Writer&) {});
    if (!may_run(id, p, footprint, resolved)) return;
    Measured how;
    run_guarded(id, p, {arena.base, footprint, line}, &how, [&](const Buffer& buf) {
        size_t index = size_t(&p - kPatterns);
        return has_rdtscp ? measure_cell<true>(id, index, buf, how) : measure_cell<false>(id, index, buf, how);
    });
}

// xorshift64: the reservoir's coin; any fixed sequence will do, it only has to be uniform.
uint64_t next_random(uint64_t& state) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

// A paced step: the pattern issued every `period` TSC cycles (back to back at "max"), or nothing
// (idle), until `ms` have passed. The guest keeps running either way, so the only difference a
// host neighbour can see between steps is the flushing. Each operation is prepare (untimed, as
// in a cell) then the timed body; a reservoir keeps a uniform sample of their timings.
template <bool kRdtscp>
uint32_t pace(uint64_t id, const PaceStep& step, const Pattern& p, const Buffer& buf, uint64_t khz) {
    const uint64_t duration = uint64_t(step.ms) * khz, period = step.rate_hz ? khz * 1000 / step.rate_hz : 0;
    uint64_t ops = 0, late = 0, rng = 0x9e3779b97f4a7c15ull ^ id;
    uint32_t stored = 0;
    uint64_t start = x86::tsc_begin(), next = start, last_tick = start, now = start;
    while ((now = x86::tsc_begin()) - start < duration) {
        if (step.idle || now < next) {
            asm volatile("pause");
            continue;
        }
        if (period) {
            if (now - next > period) ++late, next = now;  // fell behind: no catch-up burst
            next += period;
        }
        prepare(p, buf);
        uint64_t t0 = x86::tsc_begin();
        p.body(buf);
        uint64_t t1 = x86::tsc_end<kRdtscp>();
        if (stored < Config::kPaceSamples) tsc_samples[stored++] = t1 - t0;
        else if (uint64_t j = next_random(rng) % (ops + 1); j < Config::kPaceSamples) tsc_samples[j] = t1 - t0;
        ++ops;
        maybe_tick(id, uint32_t(ops), last_tick);
    }
    Records::emit(Writer("paced").field("id", id).field("ops", ops).field("late", late).field("tsc", now - start));
    return stored;
}

void run_paced(const PlannedCell& cell) {
    const PaceStep& step = *cell.step;
    const PacedSlot& slot = cell.slot;
    ++tally.cells;
    uint64_t id = cell.id;
    if (id < config.from) return;
    const Pattern& p = *cell.pattern;
    bool resolved = true;
    uint64_t footprint = cell.footprint ? resolve_footprint(*cell.footprint, llc, resolved) : 0;
    announce(id, cell.phase, p, footprint, Config::kPaceSamples, 0, [&](Writer& w) {
        if (step.idle) w.field("pace", "idle");
        else if (!step.rate_hz) w.field("pace", "max");
        else w.field("pace", step.rate_hz);
        w.field("ms", step.ms);
        if (slot.round >= 0) w.field("round", uint64_t(slot.round)).field("slot", uint64_t(slot.slot));
    });
    if (!may_run(id, p, footprint, resolved)) return;
    if (!tsc_freq.khz) {  // a rate needs a clock
        ++tally.unsupported;
        return emit_end(id, "unsupported", 0, "tsc-frequency-unknown");
    }
    run_guarded(id, p, {arena.base, footprint, line}, nullptr, [&](const Buffer& buf) {
        return has_rdtscp ? pace<true>(id, step, p, buf, tsc_freq.khz) : pace<false>(id, step, p, buf, tsc_freq.khz);
    });
}

void run_phase(uint32_t phase) {
    uint32_t per_phase = cells_per_phase(config);
    if ((phase + 1) * per_phase <= config.from) {
        tally.cells += per_phase;
        return;
    }
    Records::emit(Writer("phase").field("index", phase));
    for_each_cell_of_phase(config, phase, [](const PlannedCell& cell) { cell.step ? run_paced(cell) : run_cell(cell); });
}

}  // namespace

// Called by every exception stub. Inside a cell, jump back to the runner; outside, the kernel
// itself is broken: say where, and stop with a status that says so.
extern "C" void isr_dispatch(ExceptionFrame* f) {
    if (f->vector == vector::nmi) return;
    Recovery::last() = {f->vector, f->error_code, f->rip, f->vector == vector::page_fault ? read_cr2() : 0};
    if (JmpBuf* p = Recovery::point()) {
        Recovery::set_armed(false);
        fb_longjmp(p, 1);
    }
    Records::emit(Writer("panic").field("vector", f->vector).hex("error", f->error_code).hex("rip", f->rip));
    stop(boot::ExitCode::panic);
}

extern "C" [[noreturn]] void kmain(uint32_t entry_kind, uint64_t info) {
    Entry entry = Entry(entry_kind);
    BootFacts boot = read_boot_facts(entry, info);
    Records::use_port(boot.record_port);
    direct_entry = boot.record_port != 0;
    if (!boot.record_port) Serial::init();
    Idt::init();
    Paging::init();
    Serial::write("flushbench guest: booted\n");  // for people watching a console; not a record

    if (boot.problem) {
        Records::emit(Writer("error").field("msg", boot.problem));
        stop(boot::ExitCode::panic);
    }
    ConfigError err = parse_config(boot.cmdline, config);
    if (err.message) {
        Records::emit(Writer("error").field("msg", err.message).field("token", err.token));
        stop(boot::ExitCode::bad_config);
    }

    uint64_t base = (reinterpret_cast<uint64_t>(__image_end) + Paging::kPageBytes - 1) & ~(Paging::kPageBytes - 1);
    if (boot.ram_end <= base) {
        Records::emit(Writer("error").field("msg", "guest-ram-too-small").field("ram_end", boot.ram_end));
        stop(boot::ExitCode::panic);
    }
    arena = {reinterpret_cast<volatile uint8_t*>(base), boot.ram_end - base, 0};
    line = x86::clflush_line_bytes();
    llc = x86::llc_bytes();
    tsc_freq = config.tsc_khz ? x86::TscFreq{config.tsc_khz, "host"} : x86::tsc_frequency();
    Pmu::init(config.pmu);
    has_rdtscp = x86::has(x86::Feature::rdtscp);
    tsc_overhead = empty_bracket = has_rdtscp ? calibrate_bracket<true>() : calibrate_bracket<false>();
    emit_hello(boot);
    emit_config();
    if (has_rdtscp) calibrate_floor<true>();
    else calibrate_floor<false>();

    for (uint32_t phase = 0; phase < config.phases; ++phase) run_phase(phase);

    Writer s("summary");
    s.field("cells", tally.cells - config.from).field("ok", tally.ok).field("unsupported", tally.unsupported);
    s.field("fault", tally.fault).field("skipped", tally.skipped);
    Records::emit(s);
    stop(boot::ExitCode::done);
}

}  // namespace fb::guest
