#include "host/run/progress.h"

#include <unistd.h>

#include <algorithm>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "host/results/statistics.h"

namespace fb {
using nlohmann::json;

CellSink::CellSink(ResultsWriter& results, uint32_t total, bool quiet)
    : results_(results), quiet_(quiet), tty_(isatty(STDERR_FILENO) == 1), total_(total), start_(Clock::now()) {
    resumed_ = done_ = uint32_t(results.cells().size());
}

CellSink::~CellSink() { end_progress(); }

void CellSink::add(Cell c, const Phase& phase, uint64_t tsc_khz) {
    c.backend = to_string(plan_->backend);
    c.mode = phase.label;
    c.emulated = plan_->emulated;
    c.extra["run"] = run_;
    if (!c.tsc_khz) c.tsc_khz = tsc_khz;
    finalize_summary(c);  // every printer below uses this one
    results_.add(c);
    ++done_;
    ++counts_[c.status];
    if (!quiet_) print(c);
    if (after_add_) after_add_();
}

void CellSink::add_evidence(json phase) {
    phase["kind"] = "phase_evidence";
    results_.add_series(phase);
}

// On a terminal: one line rewritten in place, with the current cell and the time left. In a
// pipe or a log: a plain line per cell.
void CellSink::print(const Cell& c) {
    std::string what;
    if (c.status == CellStatus::ok && c.pace && c.pace->rate == "idle") {
        what = fmt::format("idle {} ms", c.pace->ms);
    } else if (c.status == CellStatus::ok) {
        Summary s = cell_summary(c);
        CostReading r = read_cost(s, c.floor_cycles);
        what = r.below_floor ? cost_text(s, c.floor_cycles) : fmt::format("median {:>12.0f} cycles", s.median);
        if (c.tsc_khz && !r.below_floor) what += fmt::format(" ({:.2f} us)", s.median / double(c.tsc_khz) * 1000.0);
        if (!c.method.empty()) what += fmt::format(", {} reps ({})", c.tsc.size(), c.stop);
        if (c.pace && c.pace->finished) what += fmt::format(", {} ops in {} ms", c.pace->ops, c.pace->ms);
        if (c.emulated) what += " [emulated]";
    } else {
        what = c.reason;
    }
    std::string line = fmt::format("[{:>4}/{}] {:<8} {:<16} {:<14} {:>10} B  {:<11} {}", done_, total_, c.backend, c.mode,
                                   c.label(), c.footprint_bytes, to_string(c.status), what);
    if (!tty_) return fmt::print(stderr, "{}\n", line);
    if (!is_measured(c.status)) fmt::print(stderr, "\r\033[K{}\n", line);  // failures stay on screen
    double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    uint32_t fresh = done_ - resumed_;
    double left = fresh ? elapsed / fresh * double(total_ - done_) : 0;
    int width = 30, filled = total_ ? int(width * double(done_) / total_) : width;
    fmt::print(stderr, "\r\033[K[{}{}] {}/{} {}/{} {}  ~{:.0f}s left", std::string(size_t(filled), '#'),
               std::string(size_t(width - filled), '.'), done_, total_, c.label(), c.footprint_bytes, c.mode, left);
    progress_shown_ = true;
}

void CellSink::end_progress() {
    if (progress_shown_) fmt::print(stderr, "\n");
    progress_shown_ = false;
}

std::string floor_lines(const json& timing) {
    std::string out;
    for (const auto& t : timing) {
        const json& f = t["floor_cycles"];
        out += fmt::format("  timing floor, run {} ({}): {} ({}); self-check {}\n", t.value("run", 0u) + 1, t.value("backend", "?"),
                           f.is_number() ? fmt::format("±{:.1f} cycles", f.get<double>()) : std::string("unavailable"),
                           t.value("floor_source", ""), t.value("check", "?"));
    }
    return out;
}

std::string summary_table(const std::vector<Cell>& cells) {
    std::vector<std::string> columns;
    std::map<std::pair<std::string, uint64_t>, std::map<std::string, std::string>> rows;
    std::vector<std::pair<std::string, uint64_t>> order;
    std::map<std::string, std::set<std::string>> verdicts, sources, unverified;
    for (const auto& c : cells) {
        std::string col = c.backend + "/" + c.mode;
        if (std::find(columns.begin(), columns.end(), col) == columns.end()) columns.push_back(col);
        auto key = std::make_pair(c.label(), c.footprint_bytes);
        if (!rows.count(key)) order.push_back(key);
        std::string v = to_string(c.status);
        if (c.status == CellStatus::ok && !c.tsc.empty()) v = cost_text(cell_summary(c), c.floor_cycles);
        rows[key][col] = v;
        std::string verdict = c.mode_evidence.value("verdict", "unverified");
        verdicts[col].insert(verdict);
        if (std::string src = c.mode_evidence.value("source", ""); !src.empty()) sources[col].insert(src);
        if (verdict == "unverified") unverified[col].insert(c.mode_evidence.value("summary", "no evidence recorded"));
    }
    std::string out = fmt::format("\n{:<16} {:>10}", "pattern", "bytes");
    for (const auto& col : columns) out += fmt::format(" {:>28}", col);
    out += "   (median net TSC cycles, per op or per footprint)\n";
    for (const auto& key : order) {
        out += fmt::format("{:<16} {:>10}", key.first, key.second);
        for (const auto& col : columns) out += fmt::format(" {:>28}", rows[key].count(col) ? rows[key][col] : "-");
        out += "\n";
    }
    out += fmt::format("{:<27}", "mode evidence");
    for (const auto& col : columns) out += fmt::format(" {:>28}", fmt::format("{}", fmt::join(verdicts[col], "/")));
    out += "\n";
    for (const auto& col : columns) {
        if (!sources[col].empty()) out += fmt::format("  {}: {} ({})\n", col, fmt::join(verdicts[col], "/"), fmt::join(sources[col], ", "));
        for (const auto& why : unverified[col]) out += fmt::format("  {}: UNVERIFIED: {}\n", col, why);
    }
    return out;
}

}  // namespace fb
