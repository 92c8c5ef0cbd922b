#include "host/neighbour_results.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>

#include <fmt/format.h>

#include "host/statistics.h"

namespace fb {
using nlohmann::json;

json neighbour_start_chunk(uint32_t run, const std::string& backend, int vcpu_cpu, const Neighbour& n) {
    return {{"kind", "neighbour"}, {"run", run}, {"backend", backend}, {"cpu", n.cpu()}, {"vcpu_cpu", vcpu_cpu},
            {"slice_ms", n.slice().count()}, {"buffer_bytes", n.buffer_bytes()}};
}

json neighbour_slices_chunk(uint32_t run, const std::vector<NeighbourSlice>& slices, bool capped) {
    json rows = json::array();
    for (const auto& s : slices)
        rows.push_back({s.start_ns, s.end_ns, s.chase_ns, s.chase_loads, s.stream_gbs, s.stream_bytes, s.cpu, s.preemptions});
    return {{"kind", "neighbour_slices"}, {"run", run}, {"capped", capped}, {"slices", rows}};
}

namespace {

struct RunSeries {
    json meta;
    bool capped = false;
    std::vector<NeighbourSlice> slices;
};

NeighbourSlice slice_from(const json& row) {
    if (!row.is_array() || row.size() != 8) throw std::runtime_error("a neighbour slice is not an 8-element row");
    NeighbourSlice s;
    s.start_ns = row[0].get<int64_t>();
    s.end_ns = row[1].get<int64_t>();
    s.chase_ns = row[2].is_number() ? row[2].get<double>() : std::numeric_limits<double>::quiet_NaN();
    s.chase_loads = row[3].get<uint64_t>();
    s.stream_gbs = row[4].is_number() ? row[4].get<double>() : std::numeric_limits<double>::quiet_NaN();
    s.stream_bytes = row[5].get<uint64_t>();
    s.cpu = row[6].get<int>();
    s.preemptions = row[7].get<uint64_t>();
    return s;
}

std::map<uint32_t, RunSeries> collect(const std::vector<json>& series) {
    std::map<uint32_t, RunSeries> runs;
    for (const auto& chunk : series) {
        std::string kind = chunk.value("kind", "");
        if (kind != "neighbour" && kind != "neighbour_slices") continue;
        RunSeries& r = runs[chunk.at("run").get<uint32_t>()];
        if (kind == "neighbour") {
            if (r.meta.is_null()) r.meta = chunk;
            continue;
        }
        r.capped = r.capped || chunk.value("capped", false);
        for (const auto& row : chunk.at("slices")) r.slices.push_back(slice_from(row));
    }
    for (auto& [run, r] : runs) {
        (void)run;
        std::sort(r.slices.begin(), r.slices.end(), [](const auto& a, const auto& b) { return a.start_ns < b.start_ns; });
    }
    return runs;
}

double seconds(int64_t ns, int64_t t0) { return double(ns - t0) / 1e9; }

// A slowdown counts only beyond the idle steps' own drift (`band`): on a shared host the neighbour
// moves by a percent or two between two idle steps, and with hundreds of slices even that is
// "significant".
std::string verdict(const WindowEffect& e, bool baseline, double band) {
    if (!std::isfinite(e.slowdown.lo) || !std::isfinite(e.slowdown.hi))
        return e.note.empty() ? "not enough slices to compare" : e.note;
    if (baseline) return "baseline (idle)";
    if (e.significant && e.slowdown.lo > 1 + band) return "slower, beyond idle drift";
    if (e.significant && e.slowdown.hi < 1 - band) return "faster, beyond idle drift";
    if (e.significant) return fmt::format("within idle drift (+-{:.1f}%)", band * 100);
    return "no significant effect";
}

}  // namespace

json neighbour_results(const std::vector<json>& series, const std::vector<Cell>& cells) {
    json out = json::array();
    for (auto& [run, r] : collect(series)) {
        if (r.slices.empty() && r.meta.is_null()) continue;
        int64_t t0 = r.slices.empty() ? 0 : r.slices.front().start_ns;
        json j = r.meta.is_null() ? json{{"run", run}} : r.meta;
        j.erase("kind");
        j["capped"] = r.capped;
        j["t0_ns"] = t0;
        j["clock"] = "CLOCK_MONOTONIC";
        json cols = {{"start_s", json::array()}, {"end_s", json::array()}, {"chase_ns", json::array()}, {"stream_gbs", json::array()},
                     {"preemptions", json::array()}};
        for (const auto& s : r.slices) {
            cols["start_s"].push_back(seconds(s.start_ns, t0));
            cols["end_s"].push_back(seconds(s.end_ns, t0));
            cols["chase_ns"].push_back(s.chase_ns);
            cols["stream_gbs"].push_back(s.stream_gbs);
            cols["preemptions"].push_back(s.preemptions);  // > 0: time off the CPU is in the slice
        }
        j["slices"] = cols;

        // This run's finished paced steps, and per mode the pooled slices of its idle steps.
        std::vector<const Cell*> steps;
        for (const auto& c : cells)
            if (c.extra.value("run", 0u) == run && c.pace && c.pace->finished && c.status == CellStatus::ok) steps.push_back(&c);
        std::map<std::string, std::vector<NeighbourSlice>> idle_by_mode;
        for (const Cell* c : steps)
            if (c->pace->rate == "idle") {
                auto in = slices_within(r.slices, c->pace->host_start_ns, c->pace->host_end_ns);
                auto& pool = idle_by_mode[c->mode];
                pool.insert(pool.end(), in.begin(), in.end());
            }
        // Per step its effect against the idle pool of its mode, and per mode how far the idle
        // steps themselves stray from that pool (their drift).
        std::vector<std::optional<WindowEffect>> effects;
        std::map<std::string, double> drift;
        for (const Cell* c : steps) {
            auto idle = idle_by_mode.find(c->mode);
            effects.emplace_back();
            if (idle == idle_by_mode.end()) continue;
            effects.back() = window_effect(slices_within(r.slices, c->pace->host_start_ns, c->pace->host_end_ns), idle->second);
            if (c->pace->rate == "idle" && std::isfinite(effects.back()->slowdown.estimate))
                drift[c->mode] = std::max(drift[c->mode], std::abs(effects.back()->slowdown.estimate - 1));
        }
        json windows = json::array();
        for (size_t i = 0; i < steps.size(); ++i) {
            const Cell* c = steps[i];
            const Pace& p = *c->pace;
            double band = drift[c->mode];
            json w = {{"label", c->label()}, {"mode", c->mode}, {"pattern", c->pattern}, {"rate", p.rate}, {"ms", p.ms},
                      {"footprint_bytes", c->footprint_bytes}, {"start_s", seconds(p.host_start_ns, t0)},
                      {"end_s", seconds(p.host_end_ns, t0)}, {"ops", p.ops}, {"late", p.late}, {"baseline", p.rate == "idle"},
                      {"idle_drift", band}};
            if (double hz = p.achieved_hz(c->tsc_khz); std::isfinite(hz)) w["achieved_hz"] = hz;
            if (!effects[i]) {
                const char* note = "no idle step in this mode to compare with: add idle:MS to --pace";
                w["effect"] = {{"slices", slices_within(r.slices, p.host_start_ns, p.host_end_ns).size()}, {"note", note}};
                w["verdict"] = note;
            } else {
                w["effect"] = to_json(*effects[i]);
                w["verdict"] = verdict(*effects[i], p.rate == "idle", band);
            }
            windows.push_back(std::move(w));
        }
        j["windows"] = windows;
        out.push_back(std::move(j));
    }
    return out;
}

std::string neighbour_summary(const json& results) {
    std::string out;
    for (const auto& run : results) {
        out += fmt::format("\nneighbour on CPU {} (vCPU on {}), {} ms slices over {} KiB: pointer-chase slowdown vs guest idle\n",
                           run.value("cpu", -1), run.value("vcpu_cpu", -1), run.value("slice_ms", 0), run.value("buffer_bytes", uint64_t{0}) >> 10);
        out += fmt::format("{:<16} {:<14} {:>7} {:>9} {:>24}  {}\n", "step", "mode", "slices", "ns/load", "slowdown [95% CI]", "verdict");
        for (const auto& w : run.value("windows", json::array())) {
            const json& e = w.value("effect", json::object());
            auto num = [](const json& v) { return v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN(); };
            double med = e.contains("chase_ns") ? num(e["chase_ns"].value("median", json())) : std::numeric_limits<double>::quiet_NaN();
            std::string ratio = "-", said = w.value("verdict", "");
            if (e.contains("slowdown")) {
                const json& s = e["slowdown"];
                ratio = fmt::format("{:.3f} [{:.3f}, {:.3f}]", num(s.value("estimate", json())), num(s.value("lo", json())), num(s.value("hi", json())));
            }
            out += fmt::format("{:<16} {:<14} {:>7} {:>9.2f} {:>24}  {}\n", w.value("label", "?"), w.value("mode", "?"),
                               e.value("slices", 0), med, ratio, said);
        }
    }
    return out;
}

}  // namespace fb
