// The one execution path of a run (plan.h, boot_group.h, progress.h), fresh or resumed, single or
// from a matrix, and the results context it starts the file with.
#include "host/run/runner.h"

#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <map>
#include <memory>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "host/env/probe.h"
#include "host/env/regime.h"
#include "host/neighbour/neighbour_results.h"
#include "host/results/compare.h"
#include "host/results/results.h"
#include "host/results/timing_check.h"
#include "host/run/boot.h"
#include "host/run/boot_group.h"
#include "host/run/neighbour_scope.h"
#include "host/run/plan.h"
#include "host/run/progress.h"
#include "host/run/signals.h"

namespace fb {
using nlohmann::json;

namespace {

std::string utc_stamp() {
    char buf[32];
    std::time_t now = std::time(nullptr);
    std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", std::gmtime(&now));
    return buf;
}

// The one execution path of fresh and resumed runs, single or from a matrix: every run's boots
// into one results file, then the final file with statistics.
int execute(const std::vector<Plan>& plans, const std::vector<RunOptions>& runs, ResultsWriter& results, bool quiet) {
    SignalScope signals;
    std::vector<Cell> already = results.cells();
    uint32_t total = 0;
    for (const auto& p : plans) total += planned_cells(p);
    int status = kExitOk;
    std::string failure;
    json boots_log = json::array();
    {
        CellSink sink(results, total, quiet);
        for (size_t i = 0; i < plans.size() && !interrupted() && failure.empty(); ++i) {
            const Plan& plan = plans[i];
            if (!quiet)
                fmt::print(stderr, "flushbench: run {}/{}: {} boot(s) on {}, guest '{}'\n", i + 1, plans.size(), plan.boots.size(),
                           to_string(plan.backend), plan.cmdline);
            sink.begin_run(plan, uint32_t(i));
            try {
                if (plan.backend == Backend::native) {
                    run_native_into(runs[i], sink, already, uint32_t(i));
                    continue;
                }
                auto done = std::count_if(already.begin(), already.end(), [&](const Cell& c) { return c.extra.value("run", 0u) == i; });
                if (uint32_t(done) >= planned_cells(plan)) continue;  // resumed, and this run was complete
                NeighbourScope neighbour(plan, runs[i], uint32_t(i), results, sink, quiet);
                for (const auto& phases : plan.boots) {
                    if (interrupted()) break;
                    run_boot_group(plan, runs[i], phases, sink, boots_log, already, uint32_t(i));
                }
            } catch (const UsageError& e) {
                failure = e.what(), status = kExitUsage;
            } catch (const EnvironmentError& e) {
                failure = e.what(), status = kExitEnvironment;
            } catch (const std::exception& e) {
                failure = e.what(), status = kExitEnvironment;
            }
        }
    }
    if (!failure.empty()) fmt::print(stderr, "flushbench: {}\n", failure);

    const bool was_interrupted = interrupted();
    std::map<CellStatus, uint32_t> counts;
    for (const auto& c : results.cells()) ++counts[c.status];
    json phases = json::array();
    for (const auto& chunk : results.series())
        if (chunk.value("kind", "") == "phase_evidence") phases.push_back(chunk), phases.back().erase("kind");
    json timing = timing_check(results.cells());
    json summary = {{"boots", boots_log}, {"phases", phases}, {"timing", timing}, {"cells", results.cells().size()}, {"cells_planned", total},
                    {"resumed_cells", already.size()}, {"interrupted", was_interrupted}, {"error", failure},
                    {"derived", derived_ratios(results.cells())}};
    json extra = json::object();
    try {
        json nb = neighbour_results(results.series(), results.cells());
        if (!nb.empty()) extra["flushbench_neighbour"] = nb;
    } catch (const std::exception& e) {
        summary["neighbour_error"] = e.what();
        fmt::print(stderr, "flushbench: the neighbour's slices could not be analysed: {}\n", e.what());
    }
    try {
        std::string path = results.finish(summary, extra);
        std::string parts;
        for (const auto& [st, n] : counts) parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", n, to_string(st));
        fmt::print(stderr, "flushbench: {} of {} cells ({}) -> {}\n", results.cells().size(), total, parts.empty() ? "none" : parts, path);
        for (const auto& line : timing_warnings(timing)) fmt::print(stderr, "flushbench: {}\n", line);
        if (!quiet) fmt::print(stderr, "{}", summary_table(results.cells()));
        if (!quiet) fmt::print(stderr, "{}", floor_lines(timing));
        if (!quiet && extra.contains("flushbench_neighbour")) fmt::print(stderr, "{}", neighbour_summary(extra["flushbench_neighbour"]));
    } catch (const std::exception& e) {
        fmt::print(stderr, "flushbench: {}; every finished cell is still in {}\n", e.what(), results.journal());
        return kExitEnvironment;
    }
    if (was_interrupted) {
        fmt::print(stderr, "flushbench: interrupted; finished cells were written\n");
        return kExitInterrupted;
    }
    if (status != kExitOk) return status;
    for (const auto& [st, n] : counts)
        if (!is_measured(st) && n) return kExitCellsFailed;
    return kExitOk;
}

json base_context(const std::vector<Plan>& plans, const std::vector<RunOptions>& runs, const std::string& command_line) {
    const Plan& plan = plans.front();
    const RunOptions& o = runs.front();
    json recorded = json::array();
    for (size_t i = 0; i < runs.size(); ++i) {
        RunOptions r = runs[i];
        r.backend = plans[i].backend;  // "auto" resolved: a resumed run must use the same backend
        r.vcpu_cpu = plans[i].vcpu_cpu;
        recorded.push_back(to_json(r));
    }
    std::set<std::string> backends;
    bool emulated = false;
    for (const auto& p : plans) backends.insert(std::string(to_string(p.backend))), emulated = emulated || p.emulated;
    json fbctx = {{"schema_version", kResultsSchemaVersion}, {"version", FLUSHBENCH_VERSION},
                  {"git_commit", FLUSHBENCH_GIT_COMMIT}, {"command_line", command_line},
                  {"backend", backends.size() == 1 ? *backends.begin() : fmt::format("{}", fmt::join(backends, ","))},
                  {"emulated", emulated}, {"kvm_flavour", kvm_flavour()}, {"host", host_fingerprint()},
                  {"guest_cmdline", plan.cmdline}, {"mode", to_string(o.mode)}, {"machine", plan.backend == Backend::kvm ? "flushbench-vmm" : o.machine},
                  {"mem_bytes", plan.mem_bytes}, {"cell_timeout_s", o.cell_timeout.count()},
                  {"vcpu_cpu", o.vcpu_cpu}, {"migrate_ms", o.migrate_ms}, {"runs", recorded},
                  {"tsc_khz_source", "KVM_GET_TSC_KHZ on the vCPU (kvm) or on a scratch vCPU (qemu)"},
                  {"regime", host_regime()}, {"patterns", pattern_table_json()}};
    if (plan.vfio) fbctx["vfio"] = *plan.vfio;
    fbctx["vfio_baseline"] = plan.vfio_baseline ? json(*plan.vfio_baseline) : json(nullptr);
    if (emulated) fbctx["caveats"] = {"qemu-tcg: TCG treats WBINVD and CLFLUSH* as no-ops; timings are emulated, functional only"};
    if (!o.inject.empty()) fbctx["fault_injection"] = o.inject;
    return fbctx;
}

int start_runs(const std::vector<RunOptions>& runs, std::string out, const std::string& command_line, bool quiet, json extra) {
    std::vector<Plan> plans(runs.size());
    for (size_t i = 0; i < runs.size(); ++i)
        if (auto failed = checked_plan(runs[i], plans[i])) return *failed;
    json fbctx = base_context(plans, runs, command_line);
    fbctx.update(extra);
    if (out.empty()) {
        char host[256] = {};
        gethostname(host, sizeof host - 1);
        out = fmt::format("results/{}-{}.json", utc_stamp(), host);
    }
    std::unique_ptr<ResultsWriter> results;
    try {
        results = std::make_unique<ResultsWriter>(out, make_context(fbctx));
    } catch (const std::exception& e) {
        fmt::print(stderr, "flushbench: {}\n", e.what());
        return kExitEnvironment;
    }
    if (!quiet) fmt::print(stderr, "flushbench: journal {}\n", results->journal());
    return execute(plans, runs, *results, quiet);
}

}  // namespace

int run_benchmark(const RunOptions& o) { return start_runs({o}, o.out, o.command_line, o.quiet, json::object()); }

int run_matrix(const std::vector<RunOptions>& runs, const std::string& out, const std::string& command_line, bool quiet,
               const json& matrix) {
    if (runs.empty()) {
        fmt::print(stderr, "flushbench: the matrix expands to no runs\n");
        return kExitUsage;
    }
    return start_runs(runs, out, command_line, quiet, {{"matrix", matrix}});
}

int resume_benchmark(const std::string& journal, bool quiet) {
    std::unique_ptr<ResultsWriter> results;
    std::vector<RunOptions> runs;
    try {
        results = std::make_unique<ResultsWriter>(ResultsWriter::resume(journal));
        for (const auto& r : results->context().at("flushbench").at("runs")) runs.push_back(run_options_from_json(r));
    } catch (const std::exception& e) {
        fmt::print(stderr, "flushbench: cannot resume {}: {}\n", journal, e.what());
        return kExitUsage;
    }
    std::vector<Plan> plans(runs.size());
    for (size_t i = 0; i < runs.size(); ++i) {
        runs[i].quiet = quiet;
        if (auto failed = checked_plan(runs[i], plans[i])) return *failed;
    }
    if (!quiet) fmt::print(stderr, "flushbench: resuming {} with {} cells already measured\n", results->out(), results->cells().size());
    return execute(plans, runs, *results, quiet);
}

}  // namespace fb
