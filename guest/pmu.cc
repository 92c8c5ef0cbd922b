#include "guest/pmu.h"

#include "common/x86/cpu.h"
#include "guest/msr.h"
#include "common/text.h"
#include "guest/recovery.h"

namespace fb::guest {
namespace {

constexpr uint64_t kUsr = 1 << 16, kOs = 1 << 17, kEnable = 1 << 22;

constexpr uint64_t evtsel(uint32_t event, uint32_t umask) {
    return (event & 0xff) | uint64_t(umask & 0xff) << 8 | kUsr | kOs | kEnable | uint64_t(event >> 8 & 0xf) << 32;
}

}  // namespace

bool Pmu::program_intel() {
    auto a = x86::cpuid(0xA);
    uint32_t version = a.eax & 0xff, counters = a.eax >> 8 & 0xff, mask_len = a.eax >> 24;
    if (version == 0 || counters == 0) {
        reason_ = "cpuid-0xa-reports-no-pmu";
        return false;
    }
    // EBX bit set = event NOT available, for the first mask_len architectural events.
    auto usable = [&](uint32_t bit) { return bit < mask_len && !(a.ebx >> bit & 1); };
    struct Want {
        const char* name;
        uint32_t bit, event, umask;
    } wants[] = {{"cycles", 0, 0x3C, 0x00}, {"instructions", 1, 0xC0, 0x00}, {"llc_misses", 4, 0x2E, 0x41}};
    uint32_t n = 0;
    for (auto& w : wants) {
        if (n == counters || !usable(w.bit)) continue;
        wrmsr(x86::intel_perfevtsel(n), 0);
        wrmsr(x86::intel_pmc(n), 0);
        wrmsr(x86::intel_perfevtsel(n), evtsel(w.event, w.umask));
        add(w.name, n++);
    }
    if (version >= 2) wrmsr(Msr::perf_global_ctrl, (1ull << n) - 1);
    kind_ = "intel-arch";
    return n > 0;
}

bool Pmu::program_amd() {
    // PerfCtrExtCore moves the counters to 0xC0010200 (CTL/CTR interleaved); without it, the K7
    // legacy block. Last-level-cache misses live in the L3 PMU, not in core counters.
    bool ext = x86::has(x86::Feature::perfctr_core);
    struct Want {
        const char* name;
        uint32_t event;
    } wants[] = {{"cycles", 0x76}, {"instructions", 0xC0}};
    uint32_t n = 0;
    for (auto& w : wants) {
        wrmsr(x86::amd_perf_ctl(ext, n), 0);
        wrmsr(x86::amd_perf_ctr(ext, n), 0);
        wrmsr(x86::amd_perf_ctl(ext, n), evtsel(w.event, 0));
        add(w.name, n++);
    }
    kind_ = ext ? "amd-perfctr-core" : "amd-legacy";
    return true;
}

// A hypervisor without a vPMU may accept the MSR writes and leave the counters at zero.
bool Pmu::counts_advance() {
    uint64_t before[kMaxCounters], after[kMaxCounters];
    read(before);
    for (int i = 0; i < 10000; ++i) asm volatile("" ::: "memory");  // work the counters must see
    read(after);
    return after[0] != before[0];
}

bool Pmu::program_and_check() {
    bool ok = x86::is_amd() ? program_amd() : program_intel();
    if (ok && !counts_advance()) {
        reason_ = "counters-do-not-advance";
        return false;
    }
    return ok;
}

void Pmu::init(bool wanted) {
    count_ = 0;
    if (!wanted) {
        reason_ = "disabled-by-config";
        return;
    }
    if (!x86::is_amd() && !x86::leaf_exists(0xA)) {
        reason_ = "cpuid-0xa-absent";
        return;
    }
    if (FB_TRY()) {
        bool ok = program_and_check();
        Recovery::set_armed(false);
        if (ok) reason_ = "";
        else count_ = 0;
    } else {
        count_ = 0;
        static char why[48];
        FixedWriter w(why, sizeof why - 1);
        uint64_t v = Recovery::last().vector;
        if (v == 13) w.put("pmu-msr-access-gp");        // the MSRs are not there
        else if (v == 6) w.put("rdpmc-invalid-opcode");  // QEMU TCG does not implement RDPMC
        else w.put("pmu-setup-exception-vector-"), w.put_u64(v);
        why[w.size()] = 0;
        reason_ = why;
    }
}

}  // namespace fb::guest
