// The native backend: the pattern table in host user space (flushbench-native), no VM.
#include <algorithm>

#include "host/run/boot.h"
#include "host/run/native.h"
#include "host/run/progress.h"

namespace fb {

void run_native_into(const RunOptions& o, CellSink& sink, const std::vector<Cell>& already, uint32_t run_index) {
    if (std::any_of(already.begin(), already.end(), [&](const Cell& c) { return c.extra.value("run", 0u) == run_index; })) return;
    NativeOptions no;
    no.patterns = o.patterns;
    no.footprints = o.footprints;
    no.skip = o.skip;
    no.reps = o.reps;
    no.warmup = o.warmup;
    no.min_reps = o.min_reps;
    no.target_permille = o.target_permille;
    no.budget_ms = o.budget_ms;
    no.cpu = o.vcpu_cpu;
    no.echo_stderr = !o.quiet;
    NativeResults r = run_native_bench(no);
    for (auto& c : r.cells) {
        uint64_t khz = c.tsc_khz;
        c.mode_evidence = {{"verdict", to_string(Verdict::confirmed)}, {"source", "native"},
                           {"summary", "host user space: no VM, so no snoop-control mode"}};
        sink.add(std::move(c), {"native", "native"}, khz);
    }
}

}  // namespace fb
