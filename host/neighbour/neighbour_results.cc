#include "host/neighbour/neighbour_results.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>

#include <fmt/format.h>

#include "host/results/statistics.h"

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

// A preempted slice timed the host scheduler (another thread had the CPU), not the caches: left
// out of every comparison, and counted.
std::vector<NeighbourSlice> clean(std::vector<NeighbourSlice> slices) {
    slices.erase(std::remove_if(slices.begin(), slices.end(), [](const NeighbourSlice& s) { return s.preemptions > 0; }), slices.end());
    return slices;
}

std::vector<NeighbourSlice> slices_of(const RunSeries& r, const Cell& c) {
    return slices_within(r.slices, c.pace->host_start_ns, c.pace->host_end_ns);
}

double median_chase(const std::vector<NeighbourSlice>& slices) {
    std::vector<double> v;
    for (const auto& s : slices) v.push_back(s.chase_ns);
    return v.empty() ? std::numeric_limits<double>::quiet_NaN() : median(v);
}

enum class Call { slower, faster, none, unknown };

// One step in one round against the idle steps on either side of it: an effect counts only beyond
// the drift between those two (on a shared host the neighbour moves by percents while the guest
// idles, and with hundreds of slices even that is "significant").
Call call_of(const WindowEffect& e, double drift) {
    if (!std::isfinite(e.slowdown.lo) || !std::isfinite(e.slowdown.hi)) return Call::unknown;
    if (e.significant && e.slowdown.lo > 1 + drift) return Call::slower;
    if (e.significant && e.slowdown.hi < 1 - drift) return Call::faster;
    return Call::none;
}

const char* call_name(Call c) {
    switch (c) {
        case Call::slower: return "slower, beyond idle drift";
        case Call::faster: return "faster, beyond idle drift";
        case Call::none: return "no effect beyond idle drift";
        case Call::unknown: return "not enough slices to compare";
    }
    return "?";
}

// The step's verdict from its rounds: an effect is reported only when every round agrees, and a
// single round never confirms one.
std::string step_verdict(const std::vector<Call>& calls) {
    size_t slower = size_t(std::count(calls.begin(), calls.end(), Call::slower));
    size_t faster = size_t(std::count(calls.begin(), calls.end(), Call::faster));
    size_t known = calls.size() - size_t(std::count(calls.begin(), calls.end(), Call::unknown));
    if (!known) return "not enough slices to compare";
    if (known == 1 && (slower || faster))
        return fmt::format("{} in its one round: unconfirmed (run --pace-rounds 3)", slower ? "slower" : "faster");
    if (slower == known) return fmt::format("slower, in every round ({} of {})", slower, known);
    if (faster == known) return fmt::format("faster, in every round ({} of {})", faster, known);
    return fmt::format("no effect beyond idle drift ({} slower, {} faster, {} neither, of {} rounds)", slower, faster,
                       known - slower - faster, known);
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

        // This run's finished paced steps in the order they ran.
        std::vector<const Cell*> steps;
        for (const auto& c : cells)
            if (c.extra.value("run", 0u) == run && c.pace && c.pace->finished && c.status == CellStatus::ok) steps.push_back(&c);
        std::stable_sort(steps.begin(), steps.end(),
                         [](const Cell* a, const Cell* b) { return a->pace->host_start_ns < b->pace->host_start_ns; });
        // The idle step before (dir -1) or after (+1) step i in the same phase.
        auto adjacent_idle = [&](size_t i, long dir) -> const Cell* {
            for (long k = long(i) + dir; k >= 0 && k < long(steps.size()); k += dir) {
                if (steps[size_t(k)]->mode != steps[i]->mode) return nullptr;
                if (steps[size_t(k)]->pace->rate == "idle") return steps[size_t(k)];
            }
            return nullptr;
        };

        json windows = json::array();
        std::map<std::pair<std::string, std::string>, std::vector<std::pair<size_t, Call>>> by_step;  // {mode, step} -> windows
        for (size_t i = 0; i < steps.size(); ++i) {
            const Cell* c = steps[i];
            const Pace& p = *c->pace;
            auto all = slices_of(r, *c);
            auto mine = clean(all);
            json w = {{"label", c->label()}, {"step", c->step_label()}, {"round", p.round}, {"mode", c->mode}, {"pattern", c->pattern},
                      {"rate", p.rate}, {"ms", p.ms}, {"footprint_bytes", c->footprint_bytes}, {"start_s", seconds(p.host_start_ns, t0)},
                      {"end_s", seconds(p.host_end_ns, t0)}, {"ops", p.ops}, {"late", p.late}, {"baseline", p.rate == "idle"},
                      {"preempted_slices", all.size() - mine.size()}};
            if (double hz = p.achieved_hz(c->tsc_khz); std::isfinite(hz)) w["achieved_hz"] = hz;
            if (p.rate == "idle") {
                w["verdict"] = "baseline (idle)";
                windows.push_back(std::move(w));
                continue;
            }
            const Cell* before = adjacent_idle(i, -1);
            const Cell* after = adjacent_idle(i, +1);
            if (!before && !after) {
                const char* note = "no idle step in this mode to compare with: add idle:MS to --pace";
                w["effect"] = {{"slices", mine.size()}, {"note", note}};
                w["verdict"] = note;
                windows.push_back(std::move(w));
                continue;
            }
            std::vector<NeighbourSlice> first, second;
            json compared = json::array();
            if (before) first = slices_of(r, *before), compared.push_back(before->label());
            if (after) second = slices_of(r, *after), compared.push_back(after->label());
            std::vector<NeighbourSlice> base = first;
            base.insert(base.end(), second.begin(), second.end());
            double a = median_chase(clean(first)), b = median_chase(clean(second));
            double drift = std::isfinite(a) && std::isfinite(b) && b > 0 ? std::fabs(a / b - 1) : 0.0;
            WindowEffect e = window_effect(all, base);
            Call call = call_of(e, drift);
            w["compared_with"] = compared;
            w["idle_drift"] = drift;
            w["effect"] = to_json(e);
            w["verdict"] = call == Call::unknown && !e.note.empty() ? e.note : call_name(call);
            by_step[{c->mode, c->step_label()}].push_back({windows.size(), call});
            windows.push_back(std::move(w));
        }
        // Per step, its rounds together.
        json summary = json::array();
        for (const auto& [key, found] : by_step) {
            std::vector<Call> calls;
            std::vector<double> estimates;
            json rounds = json::array();
            for (const auto& [wi, call] : found) {
                const json& w = windows[wi];
                const json sd = w["effect"].value("slowdown", json::object());
                calls.push_back(call);
                if (sd.contains("estimate") && sd["estimate"].is_number()) estimates.push_back(sd["estimate"].get<double>());
                rounds.push_back({{"round", w["round"]}, {"label", w["label"]}, {"slowdown", sd}, {"idle_drift", w.value("idle_drift", 0.0)},
                                  {"call", call_name(call)}});
            }
            json st = {{"step", key.second}, {"mode", key.first}, {"rounds", rounds}, {"verdict", step_verdict(calls)}};
            if (!estimates.empty()) {
                auto [lo, hi] = std::minmax_element(estimates.begin(), estimates.end());
                st["slowdown"] = {{"median", median(estimates)}, {"min", *lo}, {"max", *hi}};
            }
            summary.push_back(std::move(st));
        }
        j["windows"] = windows;
        j["steps"] = summary;
        out.push_back(std::move(j));
    }
    return out;
}

std::string neighbour_summary(const json& results) {
    std::string out;
    for (const auto& run : results) {
        out += fmt::format("\nneighbour on CPU {} (vCPU on {}), {} ms slices over {} KiB: pointer-chase slowdown against the idle "
                           "steps beside each step\n",
                           run.value("cpu", -1), run.value("vcpu_cpu", -1), run.value("slice_ms", 0),
                           run.value("buffer_bytes", uint64_t{0}) >> 10);
        out += fmt::format("{:<16} {:<14} {:>6} {:>28}  {}\n", "step", "mode", "rounds", "slowdown: median [min, max]", "verdict");
        for (const auto& st : run.value("steps", json::array())) {
            std::string ratio = "-";
            if (st.contains("slowdown")) {
                const json& s = st["slowdown"];
                ratio = fmt::format("{:.3f} [{:.3f}, {:.3f}]", s.value("median", 0.0), s.value("min", 0.0), s.value("max", 0.0));
            }
            out += fmt::format("{:<16} {:<14} {:>6} {:>28}  {}\n", st.value("step", "?"), st.value("mode", "?"), st["rounds"].size(), ratio,
                               st.value("verdict", ""));
        }
    }
    return out;
}

}  // namespace fb
