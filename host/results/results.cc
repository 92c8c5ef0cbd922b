#include "host/results/results.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "common/patterns.h"
#include "host/results/statistics.h"

namespace fb {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void write_all(int fd, const std::string& text, const std::string& path) {
    size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw std::runtime_error(fmt::format("cannot write {}: {} (free some space or choose another --out)", path, strerror(errno)));
        done += size_t(n);
    }
}

double ns_from_cycles(double cycles, uint64_t tsc_khz) { return cycles * 1e6 / double(tsc_khz); }

}  // namespace

json pattern_table_json() {
    json a = json::array();
    for (const auto& p : kPatterns)
        a.push_back({{"name", p.name}, {"group", group_name(p.group)}, {"memtype", mem_type_name(p.memtype)},
                     {"operation", p.operation}, {"feature", x86::feature_name(p.needs)}, {"ring0", p.ring0},
                     {"whole_cache", p.whole_cache}, {"exits", p.exits}, {"uses_footprint", p.uses_footprint}, {"unit", unit_name(p.unit)},
                     {"what", p.what}});
    return a;
}

std::string benchmark_name(const Cell& c) {
    return fmt::format("{}/{}/{}/{}", c.label(), c.footprint_bytes, c.backend, c.mode);
}

json cell_to_json(const Cell& c) {
    json j = {{"pattern", c.pattern}, {"footprint_bytes", c.footprint_bytes}, {"backend", c.backend},
              {"mode", c.mode}, {"phase", c.phase}, {"unit", c.unit}, {"status", to_string(c.status)},
              {"reason", c.reason}, {"emulated", c.emulated}, {"warmup", c.warmup},
              {"tsc_overhead", c.tsc_overhead}, {"tsc_khz", c.tsc_khz}, {"line_bytes", c.line_bytes},
              {"tsc", c.tsc}, {"guest_pmu", c.guest_pmu}, {"guest_pmu_unavailable", c.guest_pmu_unavailable},
              {"last_output", c.last_output}, {"extra", c.extra}, {"mode_evidence", c.mode_evidence}};
    if (!c.method.empty())
        j["measure"] = {{"method", c.method}, {"k", c.batch}, {"ops", c.ops}, {"stop", c.stop}, {"ref", c.ref}};
    if (std::isfinite(c.floor_cycles)) j["floor_cycles"] = c.floor_cycles;
    if (c.fault)
        j["fault"] = {{"vector", c.fault->vector}, {"error_code", c.fault->error_code}, {"rip", c.fault->rip}, {"cr2", c.fault->cr2}};
    if (c.mapping)
        j["mapping"] = {{"asked", c.mapping->asked}, {"mapped", c.mapping->mapped}, {"pat", fmt::format("0x{:016x}", c.mapping->pat)}};
    if (c.pace) {
        const Pace& p = *c.pace;
        j["pace"] = {{"label", c.label()}, {"rate", p.rate}, {"ms", p.ms}, {"finished", p.finished}, {"ops", p.ops}, {"late", p.late},
                     {"elapsed_tsc", p.elapsed_tsc}, {"host_start_ns", p.host_start_ns}, {"host_end_ns", p.host_end_ns},
                     {"step", c.step_label()}, {"round", p.round}, {"slot", p.slot}};
        if (double hz = p.achieved_hz(c.tsc_khz); std::isfinite(hz)) j["pace"]["achieved_hz"] = hz;
    }
    return j;
}

Cell cell_from_json(const json& j) {
    Cell c;
    c.pattern = j.at("pattern").get<std::string>();
    c.footprint_bytes = j.at("footprint_bytes").get<uint64_t>();
    c.backend = j.at("backend").get<std::string>();
    c.mode = j.at("mode").get<std::string>();
    c.phase = j.value("phase", 0u);
    c.unit = j.value("unit", "");
    std::string status = j.at("status").get<std::string>();
    bool known = false;
    for (auto s : {CellStatus::ok, CellStatus::unsupported, CellStatus::skipped, CellStatus::fault, CellStatus::hung,
                   CellStatus::crashed, CellStatus::corrupt})
        if (status == to_string(s)) c.status = s, known = true;
    if (!known) throw std::runtime_error(fmt::format("unknown cell status '{}'", status));
    c.reason = j.value("reason", "");
    c.emulated = j.value("emulated", false);
    c.warmup = j.value("warmup", 0u);
    c.tsc_overhead = j.value("tsc_overhead", uint64_t{0});
    c.tsc_khz = j.value("tsc_khz", uint64_t{0});
    c.line_bytes = j.value("line_bytes", 64u);
    c.tsc = j.value("tsc", std::vector<uint64_t>{});
    c.guest_pmu = j.value("guest_pmu", std::map<std::string, std::vector<uint64_t>>{});
    c.guest_pmu_unavailable = j.value("guest_pmu_unavailable", "");
    c.last_output = j.value("last_output", "");
    c.extra = j.value("extra", json::object());
    c.mode_evidence = j.value("mode_evidence", json::object());  // absent before schema 4
    if (j.contains("measure")) {  // absent before schema 5: those cells subtract tsc_overhead
        const auto& m = j["measure"];
        c.method = m.at("method").get<std::string>();
        c.batch = m.value("k", 1u);
        c.ops = m.value("ops", uint64_t{0});
        c.stop = m.value("stop", "");
        c.ref = m.value("ref", std::vector<uint64_t>{});
        if ((c.method != "batch" && c.method != "paired") || c.batch < 1 || c.ref.size() != c.tsc.size())
            throw std::runtime_error(fmt::format("cell {}: malformed measure (method, k, ref)", c.pattern));
    }
    if (j.contains("floor_cycles") && j["floor_cycles"].is_number()) c.floor_cycles = j["floor_cycles"].get<double>();
    if (j.contains("fault")) {
        const auto& f = j["fault"];
        c.fault = GuestFault{f.value("vector", 0u), f.value("error_code", uint64_t{0}), f.value("rip", uint64_t{0}), f.value("cr2", uint64_t{0})};
    }
    if (j.contains("mapping")) {
        const auto& m = j["mapping"];
        c.mapping = GuestMapping{m.value("asked", ""), m.value("mapped", ""), std::stoull(m.value("pat", "0"), nullptr, 16)};
    }
    if (j.contains("pace")) {
        const auto& p = j["pace"];
        c.pace = Pace{p.at("rate").get<std::string>(), p.value("ms", 0u), p.value("finished", false), p.value("ops", uint64_t{0}),
                      p.value("late", uint64_t{0}), p.value("elapsed_tsc", uint64_t{0}), p.value("host_start_ns", int64_t{0}),
                      p.value("host_end_ns", int64_t{0}), p.value("round", -1), p.value("slot", 0u)};
    }
    return c;
}

std::vector<json> benchmark_entries(const Cell& c, int family_index, int instance_index) {
    std::string name = benchmark_name(c);
    const Pattern* p = find_pattern(c.pattern.c_str());
    uint64_t lines = c.line_bytes ? c.footprint_bytes / c.line_bytes : 0;
    json common = {{"family_index", family_index}, {"per_family_instance_index", instance_index}, {"run_name", name},
                   {"threads", 1}, {"pattern", c.label()}, {"footprint_bytes", c.footprint_bytes}, {"backend", c.backend},
                   {"mode", c.mode}, {"phase", c.phase}, {"status", to_string(c.status)}, {"emulated", c.emulated},
                   {"unit", c.unit.empty() && p ? unit_name(p->unit) : c.unit}, {"lines", lines},
                   {"overhead_cycles", c.tsc_overhead}, {"time_source", c.tsc_khz ? "tsc" : "unavailable"},
                   {"mode_evidence", c.mode_evidence.value("verdict", "unverified")}};
    if (!c.tsc_khz) common["time_unavailable_reason"] = "TSC frequency unknown: real_time and cpu_time hold TSC cycles, not ns";
    std::vector<json> out;
    if (c.tsc.empty()) {
        // Google Benchmark's own shape for a benchmark that could not run.
        json e = common;
        e.update({{"name", name}, {"run_type", "iteration"}, {"repetitions", 0}, {"repetition_index", 0},
                  {"iterations", 0}, {"real_time", 0}, {"cpu_time", 0}, {"time_unit", "ns"}, {"error_occurred", true},
                  {"error_message", c.reason.empty() ? std::string(to_string(c.status)) : fmt::format("{}: {}", to_string(c.status), c.reason)}});
        out.push_back(std::move(e));
        return out;
    }
    // real_time and cpu_time hold each repetition's cost (net_cycles, the estimator's difference,
    // common/measure.h) as time, so compare.py compares costs, not brackets; `cycles` is the raw
    // value bracket and `ref_cycles` its reference. The aggregates are statistics.h's, computed once.
    auto time_of = [&](double cycles) { return c.tsc_khz ? ns_from_cycles(cycles, c.tsc_khz) : cycles; };
    std::vector<double> net = net_cycles(c);
    bool per_line = lines && p && p->unit == Unit::per_footprint;
    if (!c.method.empty()) common.update({{"method", c.method}, {"k", c.batch}, {"ops", c.ops}, {"stop", c.stop}});
    for (size_t i = 0; i < c.tsc.size(); ++i) {
        json e = common;
        e.update({{"name", name}, {"run_type", "iteration"}, {"repetitions", c.tsc.size()}, {"repetition_index", i},
                  {"iterations", 1}, {"real_time", time_of(net[i])}, {"cpu_time", time_of(net[i])}, {"time_unit", "ns"},
                  {"cycles", c.tsc[i]}, {"net_cycles", net[i]}});
        if (i < c.ref.size()) e["ref_cycles"] = c.ref[i];
        if (per_line) e["net_cycles_per_line"] = net[i] / double(lines);
        for (const auto& [counter, values] : c.guest_pmu)
            if (i < values.size()) e["guest_" + counter] = values[i];
        if (c.guest_pmu.empty()) e["guest_pmu"] = "unavailable: " + (c.guest_pmu_unavailable.empty() ? std::string("not reported") : c.guest_pmu_unavailable);
        out.push_back(std::move(e));
    }
    Summary s = cell_summary(c);
    CostReading reading = read_cost(s, c.floor_cycles);
    struct Agg {
        const char* name;
        double net;
        bool pct;
    } aggs[] = {{"mean", s.mean, false}, {"median", s.median, false}, {"stddev", s.stddev, false}, {"cv", s.cv, true}};
    for (const auto& a : aggs) {
        if (!std::isfinite(a.net)) continue;  // undefined (a cv whose mean is 0, a stddev of one): not written as a number
        json e = common;
        e.update({{"name", name + "_" + a.name}, {"run_type", "aggregate"}, {"aggregate_name", a.name},
                  {"aggregate_unit", a.pct ? "percentage" : "time"}, {"repetitions", c.tsc.size()}, {"iterations", c.tsc.size()},
                  {"real_time", a.pct ? a.net : time_of(a.net)}, {"cpu_time", a.pct ? a.net : time_of(a.net)}, {"time_unit", "ns"},
                  {"net_cycles", a.net}});
        if (!a.pct && per_line) e["net_cycles_per_line"] = a.net / double(lines);
        if (std::string(a.name) == "median") e.update({{"below_floor", reading.below_floor}, {"resolution_cycles", reading.bound}});
        out.push_back(std::move(e));
    }
    return out;
}

json make_context(json flushbench) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    char date[64];
    std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S+00:00", std::gmtime(&now));
    json ctx = {{"date", date}, {"host_name", host}, {"executable", "flushbench"},
                {"num_cpus", std::thread::hardware_concurrency()}, {"library_build_type", "release"},
                {"flushbench", std::move(flushbench)}};
    double load[3];
    if (getloadavg(load, 3) == 3) ctx["load_avg"] = {load[0], load[1], load[2]};
    // Google Benchmark's fields for the CPU; mhz from /proc/cpuinfo, absent when unreadable.
    std::ifstream cpuinfo("/proc/cpuinfo");
    std::string line;
    while (std::getline(cpuinfo, line))
        if (line.rfind("cpu MHz", 0) == 0) {
            ctx["mhz_per_cpu"] = std::lround(std::stod(line.substr(line.find(':') + 1)));
            break;
        }
    std::string gov;
    std::ifstream("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") >> gov;
    ctx["cpu_scaling_enabled"] = !gov.empty() && gov != "performance";
    json caches = json::array();
    for (int i = 0; i < 8; ++i) {
        fs::path dir = fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}", i);
        if (!fs::exists(dir)) break;
        std::string type, size, shared;
        int level = 0;
        std::ifstream(dir / "type") >> type;
        std::ifstream(dir / "level") >> level;
        std::ifstream(dir / "size") >> size;
        uint64_t bytes = size.empty() ? 0 : std::stoull(size) * (size.back() == 'K' ? 1024 : size.back() == 'M' ? 1 << 20 : 1);
        std::ifstream(dir / "shared_cpu_list") >> shared;
        caches.push_back({{"type", type}, {"level", level}, {"size", bytes}, {"num_sharing", 0}});
    }
    ctx["caches"] = caches;
    return ctx;
}

json ResultsWriter::document(const json& context, const std::vector<Cell>& cells) {
    json doc = {{"context", context}, {"benchmarks", json::array()}};
    std::map<std::string, int> family, instances;
    for (const auto& c : cells) {
        auto [it, fresh] = family.emplace(c.label(), int(family.size()));
        (void)fresh;
        for (auto& e : benchmark_entries(c, it->second, instances[c.label()]++)) doc["benchmarks"].push_back(std::move(e));
    }
    json all = json::array();
    for (const auto& c : cells) {
        json j = cell_to_json(c);
        j["name"] = benchmark_name(c);
        if (!c.tsc.empty()) {
            Summary st = cell_summary(c);  // net TSC cycles
            CostReading r = read_cost(st, c.floor_cycles);
            j["stats"] = to_json(st);
            j["stats"]["below_floor"] = r.below_floor;
            j["stats"]["resolution_cycles"] = r.bound;  // what "below floor (±X cycles)" prints
        }
        all.push_back(std::move(j));
    }
    doc["flushbench_cells"] = std::move(all);  // every cell, raw samples and verdicts included
    return doc;
}

void write_file_atomically(const std::string& path, const std::string& text) {
    fs::path p(path);
    fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
    std::string tmp = (dir / fmt::format(".{}.{}.tmp", p.filename().string(), getpid())).string();
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error(fmt::format("cannot write {}: {} (check the directory exists and is writable, or choose another --out)", path, strerror(errno)));
    try {
        write_all(fd, text, path);
        if (fsync(fd) != 0) throw std::runtime_error(fmt::format("cannot sync {}: {}", path, strerror(errno)));
    } catch (...) {
        ::close(fd);
        ::unlink(tmp.c_str());
        throw;
    }
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        int err = errno;
        ::unlink(tmp.c_str());
        throw std::runtime_error(fmt::format("cannot move results into {}: {}", path, strerror(err)));
    }
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) fsync(dfd), ::close(dfd);
}

ResultsWriter::ResultsWriter(std::string out, json context) : out_(std::move(out)), context_(std::move(context)) {
    fs::path dir = fs::path(out_).has_parent_path() ? fs::path(out_).parent_path() : fs::path(".");
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (::access(dir.c_str(), W_OK) != 0)
        throw std::runtime_error(fmt::format("results directory {} is not writable: choose another --out or fix its permissions", dir.string()));
    // A journal left by an interrupted run holds measured cells: never truncate it.
    if (fs::exists(journal()))
        throw std::runtime_error(fmt::format("{} exists: it holds the cells of an interrupted run; move it away or choose another --out", journal()));
    int fd = ::open(journal().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) throw std::runtime_error(fmt::format("cannot create {}: {} (choose another --out)", journal(), strerror(errno)));
    ::close(fd);
    append_line({{"context", context_}, {"out", out_}});
}

ResultsWriter ResultsWriter::resume(const std::string& journal) {
    std::ifstream in(journal);
    if (!in) throw std::runtime_error(fmt::format("cannot read {}: pass the .partial journal of an interrupted run", journal));
    ResultsWriter w;
    std::string line;
    size_t lineno = 0;
    while (std::getline(in, line)) {
        ++lineno;
        json j = json::parse(line, nullptr, false);
        // A crash can leave the last line half-written: everything before it is intact.
        if (j.is_discarded()) {
            if (in.peek() == EOF) break;
            throw std::runtime_error(fmt::format("{}:{}: not a journal line; the journal is damaged", journal, lineno));
        }
        if (lineno == 1) {
            if (!j.contains("context") || !j.contains("out")) throw std::runtime_error(fmt::format("{} is not a flushbench journal", journal));
            w.context_ = j["context"];
            w.out_ = j["out"].get<std::string>();
        } else if (j.contains("cell")) {
            w.cells_.push_back(cell_from_json(j["cell"]));
        } else if (j.contains("series")) {
            w.series_.push_back(j["series"]);
        }
    }
    if (w.out_.empty()) throw std::runtime_error(fmt::format("{} is empty: nothing to resume", journal));
    // Rewrite the journal without a torn tail, so appends continue from a clean line.
    std::string text = json({{"context", w.context_}, {"out", w.out_}}).dump() + "\n";
    for (const auto& c : w.cells_) text += json({{"cell", cell_to_json(c)}}).dump() + "\n";
    for (const auto& chunk : w.series_) text += json({{"series", chunk}}).dump() + "\n";
    write_file_atomically(w.journal(), text);
    return w;
}

void ResultsWriter::append_line(const json& j) {
    std::string text = j.dump() + "\n";
    int fd = ::open(journal().c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error(fmt::format("cannot append to {}: {}", journal(), strerror(errno)));
    try {
        write_all(fd, text, journal());
        if (fsync(fd) != 0) throw std::runtime_error(fmt::format("cannot sync {}: {}", journal(), strerror(errno)));
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
}

void ResultsWriter::add(const Cell& c) {
    append_line({{"cell", cell_to_json(c)}});
    cells_.push_back(c);
}

void ResultsWriter::add_series(const json& chunk) {
    append_line({{"series", chunk}});
    series_.push_back(chunk);
}

std::string ResultsWriter::finish(const json& run_summary, const json& extra) {
    json ctx = context_;
    ctx["flushbench"]["run"] = run_summary;
    json doc = document(ctx, cells_);
    doc.update(extra);
    write_file_atomically(out_, doc.dump(1) + "\n");
    ::unlink(journal().c_str());
    return out_;
}

}  // namespace fb
