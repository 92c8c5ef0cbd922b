#include "host/run/boot_group.h"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <utility>

#include <fmt/format.h>

#include "common/boot.h"
#include "host/counters/kernel_probes.h"
#include "host/counters/pcm_sidecar.h"
#include "host/evidence/mode_evidence.h"
#include "host/exit_status.h"
#include "host/results/statistics.h"
#include "host/run/boot.h"
#include "host/run/native.h"
#include "host/run/signals.h"

namespace fb {
using nlohmann::json;

void skip_after_failure(Config& c, const Cell& failed) {
    const Pattern* p = find_pattern(Str(failed.pattern.c_str()));
    if (!p) return;
    size_t i = size_t(p - kPatterns);
    if (c.skipped[i]) return;
    const char* why = failed.status == CellStatus::hung ? "hung-earlier-in-this-run" : "crashed-earlier-in-this-run";
    c.skipped[i] = true;
    std::snprintf(c.skip_reason[i], sizeof c.skip_reason[i], "%s", why);
}

double boot_floor(const RecordStream::Calibration& cal) {
    return timing_floor(estimates(cal.value, cal.ref, cal.k));
}

json calibration_json(const RecordStream::Calibration& cal) {
    if (cal.value.empty()) return {{"unavailable", "the guest sent no calibration (a guest older than this host?)"}};
    Summary s = summarize(estimates(cal.value, cal.ref, cal.k));
    return {{"method", "batch"}, {"pattern", "nop"}, {"k", cal.k}, {"n", s.n}, {"median_cycles", s.median},
            {"median_ci", to_json(s.median_ci)}, {"floor_cycles", boot_floor(cal)}};
}

void run_boot_group(const Plan& plan, const RunOptions& o, const std::vector<Phase>& phases, CellSink& sink, json& boots_log,
                    const std::vector<Cell>& already, uint32_t run_index) {
    uint32_t from = 0, cells_total = cells_per_phase(plan.config) * uint32_t(phases.size());
    Config boot_config = plan.config;  // each boot gets this, with its phases, first cell and skips
    // Resuming: this group's cells in the journal are its first ones, in id order; patterns that
    // hung or crashed stay skipped.
    for (const auto& c : already) {
        if (c.extra.value("run", 0u) != run_index) continue;
        if (std::none_of(phases.begin(), phases.end(), [&](const Phase& p) { return p.label == c.mode; })) continue;
        ++from;
        if (c.status == CellStatus::hung || c.status == CellStatus::crashed) skip_after_failure(boot_config, c);
    }
    uint64_t tsc_khz = plan.tsc_khz;
    // Paced steps keep their rates, and cells their time budgets, by the TSC rate the host knows,
    // not a guest guess (CPUID often has none).
    uint64_t guest_khz = plan.tsc_khz ? plan.tsc_khz : native_tsc_rate().khz;
    while (from < cells_total && !interrupted()) {
        boot_config.phases = uint32_t(phases.size());
        boot_config.from = from;
        boot_config.tsc_khz = guest_khz;
        std::string cmdline = config_line(boot_config);
        RecordStream stream;
        json facts = {{"cmdline", cmdline}}, cell_extra = json::object();
        // The kernel's evidence for this boot's mode labels. On the kvm backend the probes count
        // this process's KVM-VFIO work, so they open here, before the vCPU thread exists.
        ModeWitness witness(CoherencyProbes::open(plan.backend == Backend::kvm), run_index, uint32_t(boots_log.size()));
        std::optional<std::string> contradiction;  // once set, nothing more is written under a label
        auto contradicted = [&](const std::string& why) {
            if (!contradiction) contradiction = why;
            stop_current_guest();
        };
        stream.on_cell_begin([&] { witness.cell_begin(); });
        std::optional<double> floor;  // from the guest's calibration, once per boot
        stream.on_cell([&](Cell&& c) {
            if (contradiction) return;
            if (!floor) floor = boot_floor(stream.calibration());
            c.floor_cycles = *floor;
            c.extra = std::exchange(cell_extra, json::object());
            c.mode_evidence = witness.cell_end();
            if (c.mode_evidence.value("verdict", "") == to_string(Verdict::contradicted))
                return contradicted(contradiction_message(witness.phases().back()) + " (cell " + c.label() + ")");
            sink.add(std::move(c), phases.at(std::min<size_t>(c.phase, phases.size() - 1)), tsc_khz);
        });
        // Memory-controller traffic (WBINVD's write-backs are the physical cost) for the whole boot.
        PcmSidecar pcm = PcmSidecar::start(0.1);
        BootEnd end;
        Boot boot{plan, o, phases, cmdline, stream, witness, contradicted, facts, cell_extra, tsc_khz};
        try {
            end = plan.backend == Backend::kvm ? boot_kvm(boot) : boot_qemu(boot);
        } catch (...) {
            witness.end();
            for (const auto& p : witness.phases()) sink.add_evidence(to_json(p));
            throw;
        }
        witness.end();
        facts["mode_evidence"] = {{"kprobes", witness.describe_probes()}, {"phases", json::array()}};
        for (const auto& p : witness.phases()) {
            json j = to_json(p);
            sink.add_evidence(j);
            facts["mode_evidence"]["phases"].push_back({{"label", p.label}, {"verdict", j["verdict"]}, {"summary", j["summary"]}});
        }
        facts["pcm"] = pcm.stop();
        facts["end"] = {{"kind", int(end.kind)}, {"detail", end.detail}, {"cells", stream.cells_done()},
                        {"noise_lines", stream.health().noise_lines}, {"corrupt_lines", stream.health().corrupt_lines},
                        {"protocol_errors", stream.health().protocol_errors}, {"errors", stream.health().first_errors}};
        if (!stream.hello().empty()) facts["guest"] = stream.hello();
        facts["run"] = run_index;
        facts["calibration"] = calibration_json(stream.calibration());
        boots_log.push_back(facts);

        if (contradiction) throw ModeContradiction(*contradiction);
        if (end.kind == BootEnd::Kind::failed) throw EnvironmentError(fmt::format("{} could not run the guest: {}", to_string(plan.backend), end.detail));
        if (stream.guest_error() && stream.cells_done() == 0 && end.kind == BootEnd::Kind::exited &&
            end.exit_code == uint32_t(boot::ExitCode::bad_config))
            throw UsageError(fmt::format("the guest rejected its configuration: {}", *stream.guest_error()));
        if (stream.hello().empty() && end.kind == BootEnd::Kind::crashed && stream.health().records == 0)
            throw EnvironmentError(fmt::format("{} never heard from the guest: {}", to_string(plan.backend), end.detail));
        from += uint32_t(stream.cells_done());
        if (stream.finished() || interrupted()) break;
        if (end.kind == BootEnd::Kind::interrupted) break;

        Cell culprit;
        if (stream.open_cell()) {
            culprit = *stream.open_cell();
            from = uint32_t(stream.open_cell_id()) + 1;
        } else {
            // Died between cells: the next one never began. Record it and move past it.
            auto missing = cells_from(plan, from, uint32_t(phases.size()), stream.guest_footprints());
            if (missing.empty()) break;
            culprit = missing.front();
            ++from;
        }
        culprit.tsc.clear();
        culprit.guest_pmu.clear();
        culprit.last_output = stream.tail();
        if (!witness.phases().empty()) {
            const PhaseEvidence& p = witness.phases().back();
            culprit.mode_evidence = {{"run", p.run}, {"boot", p.boot}, {"phase", p.phase}, {"verdict", to_string(p.judgement.verdict)},
                                     {"source", p.judgement.source}, {"summary", p.judgement.summary}};
        }
        if (end.kind == BootEnd::Kind::hung) {
            culprit.status = CellStatus::hung;
            culprit.reason = fmt::format("no guest output for {} s; the watchdog stopped the guest", o.cell_timeout.count());
        } else {
            culprit.status = CellStatus::crashed;
            culprit.reason = end.detail.empty() ? "guest stopped without finishing" : end.detail;
            if (stream.guest_error()) culprit.reason += " (" + *stream.guest_error() + ")";
        }
        sink.add(culprit, phases.at(std::min<size_t>(culprit.phase, phases.size() - 1)), tsc_khz);
        skip_after_failure(boot_config, culprit);
    }
}

}  // namespace fb
