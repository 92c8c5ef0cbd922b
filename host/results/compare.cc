#include "host/results/compare.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <stdexcept>
#include <tuple>

#include <fmt/format.h>

#include "common/patterns.h"
#include "host/results/results.h"
#include "host/results/statistics.h"

namespace fb {
using nlohmann::json;

namespace {

// Compare.py needs two repetitions a side before it runs the U test; so do we.
constexpr size_t kMinSamples = 2;

// NaN has no JSON spelling: null says "undefined" to every reader.
json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
json pair(double lo, double hi) { return json::array({num(lo), num(hi)}); }

struct Column {
    size_t file = 0;
    std::string source, host, backend, mode, label;
    bool emulated = false;
    json fingerprint;
};

// One column's cells of one row, pooled: the coherent phases of an A/B/A run are one population.
struct Series {
    std::vector<double> net;
    std::vector<std::string> names, statuses, reasons;
    std::string unit;
    size_t pooled = 0;
};

using RowKey = std::pair<std::string, uint64_t>;  // pattern, footprint

size_t pattern_rank(const std::string& name) {
    const Pattern* p = find_pattern(name.c_str());
    return p ? size_t(p - kPatterns) : kPatternCount;
}

bool row_less(const RowKey& a, const RowKey& b) {
    return std::make_tuple(pattern_rank(a.first), a.first, a.second) < std::make_tuple(pattern_rank(b.first), b.first, b.second);
}

std::string host_of(const json& doc) {
    const json& ctx = doc.value("context", json::object());
    if (ctx.contains("flushbench") && ctx["flushbench"].contains("host") && ctx["flushbench"]["host"].contains("hostname"))
        return ctx["flushbench"]["host"]["hostname"].get<std::string>();
    return ctx.value("host_name", std::string("unknown-host"));
}

std::string ratio_label(const json& v) { return v.is_number() ? fmt::format("{:.3f}", v.get<double>()) : "-"; }

// Status of a pooled series: the first that is not ok says most about it.
std::string pooled_status(const Series& s) {
    for (const auto& st : s.statuses)
        if (st != "ok") return st;
    return s.statuses.empty() ? "missing" : "ok";
}

}  // namespace

std::string footprint_label(uint64_t b) {
    if (b == 0) return "0";
    if (b % (1ull << 30) == 0) return fmt::format("{}G", b >> 30);
    if (b % (1ull << 20) == 0) return fmt::format("{}M", b >> 20);
    if (b % 1024 == 0) return fmt::format("{}K", b >> 10);
    return std::to_string(b);
}

std::string cycles_label(const json& v) {
    if (!v.is_number()) return "-";
    double x = v.get<double>(), a = std::fabs(x);
    if (a >= 1e9) return fmt::format("{:.3g}G", x / 1e9);
    if (a >= 1e6) return fmt::format("{:.3g}M", x / 1e6);
    if (a >= 1e4) return fmt::format("{:.3g}k", x / 1e3);
    return fmt::format("{:.0f}", x);
}

json compare_samples(const std::vector<double>& x, const std::vector<double>& base, double alpha) {
    json c;
    if (x.size() < kMinSamples || base.size() < kMinSamples) {
        c["note"] = fmt::format("not compared: {} vs {} samples (at least {} a side)", x.size(), base.size(), kMinSamples);
        c["significant"] = false;
        c["p_value"] = nullptr;
        return c;
    }
    Interval r = ratio_ci(x, base), d = difference_ci(x, base);
    MannWhitney u = mann_whitney_u(x, base);
    c["ratio"] = num(r.estimate);
    c["ratio_ci"] = pair(r.lo, r.hi);
    c["difference"] = num(d.estimate);
    c["difference_ci"] = pair(d.lo, d.hi);
    c["p_value"] = num(u.p);
    c["u"] = u.u1;
    c["exact"] = u.exact;
    c["n"] = {x.size(), base.size()};
    c["significant"] = std::isfinite(u.p) && u.p < alpha;
    if (!std::isfinite(r.estimate)) c["note"] = "ratio undefined: the baseline's median net cycles are not positive";
    return c;
}

json compare_results(const std::vector<json>& files, const std::vector<std::string>& sources, double alpha) {
    std::vector<Column> columns;
    std::map<RowKey, std::map<size_t, Series>> rows;
    for (size_t f = 0; f < files.size(); ++f) {
        const json& doc = files[f];
        std::string source = f < sources.size() ? sources[f] : fmt::format("file {}", f + 1);
        if (!doc.is_object() || !doc.contains("flushbench_cells") || !doc["flushbench_cells"].is_array())
            throw std::runtime_error(fmt::format("{} is not a flushbench results file (it has no flushbench_cells)", source));
        std::string host = host_of(doc);
        json ctx_fb = doc.value("context", json::object()).value("flushbench", json::object());
        for (const auto& cj : doc["flushbench_cells"]) {
            Cell c;
            try {
                c = cell_from_json(cj);
            } catch (const std::exception& e) {
                throw std::runtime_error(fmt::format("{}: a damaged cell in flushbench_cells: {}", source, e.what()));
            }
            auto it = std::find_if(columns.begin(), columns.end(), [&](const Column& col) {
                return col.file == f && col.backend == c.backend && col.mode == c.mode;
            });
            if (it == columns.end()) {
                Column col{f, source, host, c.backend, c.mode, {}, ctx_fb.value("emulated", false), ctx_fb.value("host", json::object())};
                columns.push_back(col);
                it = columns.end() - 1;
            }
            it->emulated = it->emulated || c.emulated;
            Series& s = rows[{c.label(), c.footprint_bytes}][size_t(it - columns.begin())];
            auto net = net_cycles(c);
            s.net.insert(s.net.end(), net.begin(), net.end());
            s.names.push_back(benchmark_name(c));
            s.statuses.push_back(to_string(c.status));
            if (!c.reason.empty()) s.reasons.push_back(c.reason);
            if (s.unit.empty()) s.unit = c.unit;
            ++s.pooled;
        }
    }
    // Labels: host/backend/mode, with @<file> where two files would otherwise look the same.
    for (auto& col : columns) {
        col.label = fmt::format("{}/{}/{}", col.host, col.backend, col.mode);
        size_t same = size_t(std::count_if(columns.begin(), columns.end(), [&](const Column& o) {
            return o.host == col.host && o.backend == col.backend && o.mode == col.mode;
        }));
        if (same > 1) col.label += fmt::format("@{}", col.file + 1);
    }

    json out;
    out["alpha"] = alpha;
    out["statistic"] = "median of net TSC cycles per repetition (flushbench_cells[].tsc - tsc_overhead)";
    out["test"] = "Mann-Whitney U, two-sided (scipy.stats.mannwhitneyu method='auto' semantics, as compare.py)";
    out["bootstrap"] = {{"method", "percentile"}, {"resamples", kBootstrapResamples}, {"seed", kBootstrapSeed}, {"level", kConfidence}};
    out["baseline_rule"] = "same backend and mode in an earlier file, else same mode in an earlier file, else the row's first column";
    json cols = json::array();
    for (size_t i = 0; i < columns.size(); ++i) {
        const Column& c = columns[i];
        cols.push_back({{"index", i}, {"label", c.label}, {"file", c.file}, {"source", c.source}, {"host", c.host},
                        {"backend", c.backend}, {"mode", c.mode}, {"emulated", c.emulated}, {"fingerprint", c.fingerprint}});
    }
    out["columns"] = cols;

    std::vector<RowKey> keys;
    for (const auto& [k, v] : rows) keys.push_back(k);
    std::sort(keys.begin(), keys.end(), row_less);
    json jrows = json::array();
    for (const auto& key : keys) {
        const auto& series = rows[key];
        json row = {{"pattern", key.first}, {"footprint_bytes", key.second}, {"cells", json::array()}, {"comparisons", json::array()}};
        for (const auto& [ci, s] : series) {
            if (row.value("unit", "").empty() && !s.unit.empty()) row["unit"] = s.unit;
            json cell = {{"column", ci}, {"name", s.names.front()}, {"status", pooled_status(s)}, {"n", s.net.size()},
                         {"cells_pooled", s.pooled}};
            if (!s.reasons.empty()) cell["reason"] = s.reasons.front();
            if (!s.net.empty()) {
                Summary sum = summarize(s.net);
                cell["median"] = num(sum.median);
                cell["median_ci"] = pair(sum.median_ci.lo, sum.median_ci.hi);
                cell["outliers"] = sum.outliers.size();
            }
            row["cells"].push_back(cell);
        }
        size_t first = series.begin()->first;
        for (const auto& [ci, s] : series) {
            if (ci == first) continue;
            const Column& col = columns[ci];
            // Baseline: like for like in an earlier file, then same mode, then the row's first column.
            std::optional<size_t> base;
            for (int pass = 0; pass < 2 && !base; ++pass)
                for (const auto& [bi, bs] : series) {
                    (void)bs;
                    const Column& b = columns[bi];
                    if (b.file >= col.file) continue;
                    if (b.mode == col.mode && (pass == 1 || b.backend == col.backend)) {
                        base = bi;
                        break;
                    }
                }
            if (!base) base = first;
            json cmp = compare_samples(s.net, series.at(*base).net, alpha);
            cmp["column"] = ci;
            cmp["baseline"] = *base;
            row["comparisons"].push_back(cmp);
        }
        jrows.push_back(row);
    }
    out["rows"] = jrows;
    return out;
}

std::string format_compare_table(const json& cmp) {
    std::string out;
    out += "Columns:\n";
    for (const auto& c : cmp.at("columns")) {
        const json& fp = c.value("fingerprint", json::object());
        out += fmt::format("  [{}] {:<32} {}{}{}\n", c["index"].get<size_t>(), c["label"].get<std::string>(), c["source"].get<std::string>(),
                           fp.contains("cpu_model") ? fmt::format("  ({}, kernel {})", fp["cpu_model"].get<std::string>(), fp.value("kernel", std::string("?"))) : "",
                           c.value("emulated", false) ? "  EMULATED (TCG): timings are functional only" : "");
    }
    out += fmt::format("\n{:<12} {:>6}  {:>4} {:>4}  {:>10} {:>10}  {:>8}  {:<19}  {:>8}\n", "pattern", "bytes", "col", "vs",
                       "median", "baseline", "ratio", "95% CI of ratio", "p");
    size_t shown = 0, significant = 0;
    for (const auto& row : cmp.at("rows")) {
        auto median_of = [&](size_t col) -> json {
            for (const auto& c : row["cells"])
                if (c["column"].get<size_t>() == col) return c.value("median", json(nullptr));
            return nullptr;
        };
        auto status_of = [&](size_t col) -> std::string {
            for (const auto& c : row["cells"])
                if (c["column"].get<size_t>() == col) return c.value("status", std::string("?"));
            return "missing";
        };
        for (const auto& c : row["comparisons"]) {
            size_t col = c["column"].get<size_t>(), base = c["baseline"].get<size_t>();
            std::string ci = "-";
            if (c.contains("ratio_ci") && c["ratio_ci"][0].is_number() && c["ratio_ci"][1].is_number())
                ci = fmt::format("[{:.3f}, {:.3f}]", c["ratio_ci"][0].get<double>(), c["ratio_ci"][1].get<double>());
            std::string p = "-";
            if (c["p_value"].is_number()) {
                double pv = c["p_value"].get<double>();
                p = pv >= 1e-4 ? fmt::format("{:.4f}", pv) : fmt::format("{:.1e}", pv);
            }
            bool sig = c.value("significant", false);
            std::string note;
            if (status_of(col) != "ok" || status_of(base) != "ok") note = fmt::format("  ({} vs {})", status_of(col), status_of(base));
            else if (c.contains("note")) note = "  (" + c["note"].get<std::string>() + ")";
            // An emulated column's timings are functional only: its ratio is not a cost ratio.
            else if (cmp["columns"][col].value("emulated", false) || cmp["columns"][base].value("emulated", false)) note = "  (emulated)";
            out += fmt::format("{:<12} {:>6}  {:>4} {:>4}  {:>10} {:>10}  {:>8}  {:<19}  {:>8}{}{}\n", row["pattern"].get<std::string>(),
                               footprint_label(row["footprint_bytes"].get<uint64_t>()), fmt::format("[{}]", col), fmt::format("[{}]", base),
                               cycles_label(median_of(col)), cycles_label(median_of(base)), ratio_label(c.value("ratio", json(nullptr))),
                               ci, p, sig ? " *" : "", note);
            ++shown;
            significant += sig;
        }
    }
    if (!shown) out += "(no cell appears in more than one column: nothing to compare)\n";
    out += fmt::format("\nmedians are net TSC cycles (raw - the empty bracket); ratio = col / vs; * p < {} (Mann-Whitney U, two-sided); "
                       "{} of {} comparisons significant\n", cmp.value("alpha", kSignificance), significant, shown);
    return out;
}

json derived_ratios(const std::vector<Cell>& cells, double alpha) {
    // (pattern, footprint, backend, mode) -> pooled net samples.
    std::map<std::tuple<std::string, uint64_t, std::string, std::string>, std::vector<double>> pooled;
    for (const auto& c : cells) {
        if (c.tsc.empty()) continue;
        auto net = net_cycles(c);
        auto& v = pooled[{c.label(), c.footprint_bytes, c.backend, c.mode}];
        v.insert(v.end(), net.begin(), net.end());
    }
    auto is_native = [](const std::string& backend) { return backend.rfind("native", 0) == 0; };
    json out = json::array();
    auto add = [&](const char* kind, const std::string& pattern, uint64_t fp, const std::string& backend, const std::string& num_name,
                   const std::string& den_name, const std::vector<double>& a, const std::vector<double>& b) {
        json j = compare_samples(a, b, alpha);
        json e = {{"kind", kind}, {"pattern", pattern}, {"footprint_bytes", fp}, {"backend", backend},
                  {"numerator", num_name}, {"denominator", den_name}};
        if (j.contains("ratio")) {
            e["ratio"] = {{"estimate", j["ratio"]}, {"lo", j["ratio_ci"][0]}, {"hi", j["ratio_ci"][1]}, {"level", kConfidence}};
            e["difference"] = {{"estimate", j["difference"]}, {"lo", j["difference_ci"][0]}, {"hi", j["difference_ci"][1]}, {"level", kConfidence}};
        }
        e["p_value"] = j["p_value"];
        e["significant"] = j["significant"];
        if (j.contains("note")) e["note"] = j["note"];
        out.push_back(e);
    };
    for (const auto& [key, samples] : pooled) {
        const auto& [pattern, fp, backend, mode] = key;
        if (mode == "noncoherent") {
            auto it = pooled.find({pattern, fp, backend, "coherent"});
            if (it != pooled.end()) add("noncoherent/coherent", pattern, fp, backend, "noncoherent", "coherent", samples, it->second);
        }
        if (is_native(backend)) continue;
        // Guest over native: the same instruction at the same footprint outside any VM. The
        // difference is the trap overhead, what a VM exit (or an emulated flush) adds.
        for (const auto& [nkey, nsamples] : pooled) {
            const auto& [np, nfp, nbackend, nmode] = nkey;
            (void)nmode;
            if (np == pattern && nfp == fp && is_native(nbackend))
                add("guest/native", pattern, fp, backend, backend + "/" + mode, nbackend, samples, nsamples);
        }
    }
    return out;
}

}  // namespace fb
