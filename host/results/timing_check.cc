#include "host/results/timing_check.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include <fmt/format.h>

#include "common/patterns.h"
#include "host/results/statistics.h"

namespace fb {
using nlohmann::json;

namespace {

// Emulation, not exits: a cell may cause this many kvm_emulate_insn beyond twice its exits before
// the host is said to emulate (records and ticks cause a few).
constexpr uint64_t kEmulationSlack = 64;

std::optional<uint64_t> emulated_instructions(const Cell& c) {
    auto counters = c.extra.find("host_counters");
    if (counters == c.extra.end() || !counters->contains("kvm_exits")) return std::nullopt;
    const json& exits = (*counters)["kvm_exits"];
    if (!exits.contains("counts")) return std::nullopt;
    const json& n = exits["counts"].value("kvm:kvm_emulate_insn", json());
    if (!n.is_number_unsigned()) return std::nullopt;
    return n.get<uint64_t>();
}

}  // namespace

std::optional<json> cell_emulation(const Cell& c) {
    const Pattern* p = find_pattern(c.pattern.c_str());
    auto emulated = emulated_instructions(c);
    if (!p || !emulated || c.method.empty()) return std::nullopt;
    uint64_t exits = p->exits ? c.ops : 0;
    if (*emulated <= 2 * exits + kEmulationSlack) return std::nullopt;
    return json{{"cell", fmt::format("{}/{}/{}", c.label(), c.footprint_bytes, c.mode)}, {"kvm_emulate_insn", *emulated},
                {"expected_exits", exits}, {"ops", c.ops}};
}

json timing_check(const std::vector<Cell>& cells) {
    std::map<std::pair<uint32_t, std::string>, std::vector<const Cell*>> runs;
    for (const auto& c : cells)
        if (c.status == CellStatus::ok && !c.tsc.empty() && !c.pace) runs[{c.extra.value("run", 0u), c.backend}].push_back(&c);

    json out = json::array();
    for (const auto& [key, run] : runs) {
        // The floor: the calibration each boot makes (nop as a batch of the largest k); the widest.
        double floor = std::numeric_limits<double>::quiet_NaN();
        for (const Cell* c : run)
            if (std::isfinite(c->floor_cycles) && !(c->floor_cycles <= floor)) floor = c->floor_cycles;
        std::string source = std::isfinite(floor) ? "nop per op, calibrated at each boot (the widest)" : "";
        json problems = json::array(), emulating = json::array();
        bool checked = false;
        for (const Cell* c : run) {
            if (c->method.empty()) continue;  // cells from before the pairs: nothing to check
            Summary s = cell_summary(*c);
            double own = (s.median_ci.hi - s.median_ci.lo) / 2;
            double bound = std::isfinite(floor) ? std::max(floor, own) : own;
            std::string name = fmt::format("{}/{}/{}", c->label(), c->footprint_bytes, c->mode);
            bool zero_expected = c->pattern == "nop" || (c->pattern == "dirty" && c->footprint_bytes == 0);
            if (zero_expected) {
                checked = true;
                if (std::fabs(s.median) > bound)
                    problems.push_back(fmt::format("{} measures {:.1f} cycles (interval {:.1f} to {:.1f}), not zero within ±{:.1f}: the "
                                                   "bracket does not cancel here",
                                                   name, s.median, s.median_ci.lo, s.median_ci.hi, bound));
            } else if (s.median_ci.hi < -bound) {
                problems.push_back(fmt::format("{} measures below zero ({:.1f} cycles, interval {:.1f} to {:.1f})", name, s.median,
                                               s.median_ci.lo, s.median_ci.hi));
            }
            if (auto e = cell_emulation(*c)) emulating.push_back(*e);
        }
        bool tcg = std::any_of(run.begin(), run.end(), [](const Cell* c) { return c->emulated; });
        json entry = {{"run", key.first}, {"backend", key.second}, {"emulated_by_tcg", tcg},
                      {"floor_cycles", std::isfinite(floor) ? json(floor) : json(nullptr)},
                      {"floor_source", source.empty() ? "unavailable: no nop cell and no calibration" : source},
                      {"check", !checked ? "unchecked" : problems.empty() ? "passed" : "failed"}, {"problems", problems},
                      {"emulation", {{"detected", !emulating.empty()}, {"cells", emulating}}}};
        if (!checked) entry["note"] = "the run measured neither nop nor dirty at 0 bytes with the paired estimators";
        out.push_back(std::move(entry));
    }
    return out;
}

std::vector<std::string> timing_warnings(const json& timing) {
    std::vector<std::string> lines;
    for (const auto& t : timing) {
        std::string who = fmt::format("run {} ({})", t.value("run", 0u) + 1, t.value("backend", "?"));
        if (t.value("emulated_by_tcg", false))
            lines.push_back(fmt::format("EMULATED (TCG), {}: TCG treats WBINVD and CLFLUSH* as no-ops; timings are functional only", who));
        if (t.value("check", "") == "failed")
            for (const auto& p : t["problems"]) lines.push_back(fmt::format("TIMING CHECK FAILED, {}: {}", who, p.get<std::string>()));
        const json& e = t["emulation"];
        if (e.value("detected", false) && !e["cells"].empty()) {
            const json& first = e["cells"][0];
            lines.push_back(fmt::format("EMULATED INSTRUCTIONS, {}: this KVM emulates guest instructions that never exit on VMX/SVM "
                                        "({}: {} kvm_emulate_insn for {} expected exits; {} cells): costs include KVM's emulator, bracket and all",
                                        who, first.value("cell", "?"), first.value("kvm_emulate_insn", 0u),
                                        first.value("expected_exits", 0u), e["cells"].size()));
        }
    }
    return lines;
}

}  // namespace fb
