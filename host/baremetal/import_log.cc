#include "host/baremetal/import_log.h"

#include <algorithm>
#include <ctime>
#include <fstream>
#include <iterator>
#include <memory>
#include <set>
#include <stdexcept>
#include <string_view>

#include <fmt/format.h>

#include "common/config.h"
#include "common/patterns.h"
#include "common/wire.h"
#include "host/results/results.h"
#include "host/run/runner.h"

namespace fb {
using nlohmann::json;

namespace {

constexpr std::string_view kRecordStart = "FB1 ";
constexpr size_t kMaxRecordsPerLine = 64;
// A record whose values contain "FB1 " spans several pieces; more than a few means garbage, and
// the bound keeps a hostile line linear in its length.
constexpr size_t kMaxPiecesPerRecord = 4;
constexpr size_t kMaxRejoinLines = 8;
constexpr size_t kNoiseKept = 200;  // noise goes to the stream only for its tail and its count

Str str(std::string_view s) { return {s.data(), s.size()}; }

// Removes what transports add and records never contain: CR, NUL and other control bytes, bytes
// above 0x7e, and terminal escape sequences (CSI "ESC [ ... final", OSC "ESC ] ... BEL|ESC \",
// charset "ESC ( X", and two-byte "ESC X").
std::string sanitize(std::string_view raw, uint64_t& removed) {
    std::string out;
    out.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
        auto c = uint8_t(raw[i]);
        if (c == 0x1b) {
            size_t start = i;
            if (i + 1 < raw.size() && raw[i + 1] == '[') {
                i += 2;
                while (i < raw.size() && !(uint8_t(raw[i]) >= 0x40 && uint8_t(raw[i]) <= 0x7e)) ++i;
            } else if (i + 1 < raw.size() && raw[i + 1] == ']') {
                i += 2;
                while (i < raw.size() && raw[i] != '\a' && !(raw[i] == 0x1b && i + 1 < raw.size() && raw[i + 1] == '\\')) ++i;
                if (i < raw.size() && raw[i] == 0x1b) ++i;
            } else if (i + 1 < raw.size() && (raw[i + 1] == '(' || raw[i + 1] == ')')) {
                i += 2;
            } else {
                i += 1;
            }
            if (i >= raw.size()) i = raw.size() - 1;
            removed += i - start + 1;
            continue;
        }
        if (c < 0x20 || c > 0x7e) {
            if (c != '\t') {
                ++removed;
                continue;
            }
        }
        out.push_back(char(c));
    }
    return out;
}

wire::Error parse(std::string_view line, wire::Record& rec) {
    if (line.size() >= wire::kMaxLine) return line.substr(0, 2) == "FB" ? wire::Error::too_long : wire::Error::noise;
    return wire::parse_line(str(line), rec);
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    size_t from = 0;
    while (from <= s.size()) {
        size_t at = s.find(sep, from);
        if (at == std::string::npos) at = s.size();
        out.push_back(s.substr(from, at - from));
        from = at + 1;
    }
    return out;
}

class Importer {
public:
    explicit Importer(const ImportOptions& opts) : opts_(opts) {}

    void run(const std::string& text) {
        std::vector<std::string> lines;
        for (size_t from = 0; from < text.size();) {
            size_t nl = text.find('\n', from);
            if (nl == std::string::npos) nl = text.size();
            std::string_view raw(text.data() + from, nl - from);
            lines.push_back(sanitize(raw, r_.repaired_bytes));
            from = nl + 1;
        }
        r_.lines = lines.size();
        for (size_t i = 0; i < lines.size(); ++i) line(lines, i);
        finish_boot("the log ends inside this cell: the machine hung or reset, or the capture stopped");
        warn();
    }

    ImportResult take() { return std::move(r_); }

private:
    // One sanitized line; may consume following lines when it rejoins a wrapped record.
    void line(const std::vector<std::string>& lines, size_t& i) {
        line_no_ = i + 1;
        const std::string& l = lines[i];
        std::vector<size_t> at;
        for (size_t p = l.find(kRecordStart); p != std::string::npos && at.size() < kMaxRecordsPerLine; p = l.find(kRecordStart, p + 1))
            at.push_back(p);
        if (at.empty()) return l.rfind("FB", 0) == 0 ? feed_checked(l) : feed_noise(l);
        if (at[0] > 0) {
            std::string prefix = l.substr(0, at[0]);
            if (prefix.rfind("FB", 0) == 0) feed_checked(prefix);
            else feed_noise(prefix);
        }
        wire::Record rec;
        for (size_t k = 0; k < at.size();) {
            // The shortest run of pieces from here that is a whole record ("FB1 " may sit in a value).
            bool found = false;
            for (size_t j = k; j < at.size() && j < k + kMaxPiecesPerRecord && !found; ++j) {
                size_t end = j + 1 < at.size() ? at[j + 1] : l.size();
                std::string_view piece(l.data() + at[k], end - at[k]);
                if (parse(piece, rec) == wire::Error::none) {
                    if (at[0] > 0 && k == 0) ++r_.resynced;
                    feed_record(piece, rec);
                    k = j + 1;
                    found = true;
                }
            }
            if (found) continue;
            size_t end = k + 1 < at.size() ? at[k + 1] : l.size();
            std::string piece = l.substr(at[k], end - at[k]);
            if (k + 1 == at.size() && rejoin(lines, i, piece)) return;
            feed_checked(piece);
            ++k;
        }
    }

    // A logger that wrapped a long record: the pieces concatenated are the record, CRC and all.
    bool rejoin(const std::vector<std::string>& lines, size_t& i, const std::string& head) {
        std::string joined = head;
        wire::Record rec;
        for (size_t m = 1; m <= kMaxRejoinLines && i + m < lines.size(); ++m) {
            const std::string& next = lines[i + m];
            if (next.find(kRecordStart) != std::string::npos || joined.size() + next.size() >= wire::kMaxLine) return false;
            joined += next;
            if (parse(joined, rec) == wire::Error::none) {
                ++r_.rejoined;
                feed_record(joined, rec);
                i += m;
                return true;
            }
        }
        return false;
    }

    void feed_noise(std::string_view l) {
        // Firmware and GRUB output before the first record is expected: only its amount is kept.
        if (!stream_) return ++r_.noise_before_first_record, void();
        stream_->feed_line(std::string(l.substr(0, kNoiseKept)) + "\n");
    }

    // Starts with "FB" but did not parse: the stream counts it corrupt (and marks an open cell).
    void feed_checked(std::string_view l) {
        wire::Record rec;
        wire::Error e = parse(l, rec);
        if (e == wire::Error::none) return feed_record(l, rec);
        if (e == wire::Error::noise) return feed_noise(l);
        r_.corrupt.push_back({line_no_, std::string(std::string_view(wire::error_name(e).p, wire::error_name(e).n)),
                              std::string(l.substr(0, 1100))});
        ensure_stream();
        if (l.size() >= wire::kMaxLine) stream_->feed_line(std::string(l.substr(0, wire::kMaxLine)));  // too_long
        else stream_->feed_line(std::string(l) + "\n");
    }

    void feed_record(std::string_view l, const wire::Record& rec) {
        std::string_view type(rec.type.p, rec.type.n);
        if (type == "hello") {
            if (stream_ && (stream_->health().records > 0 || stream_->open_cell()))
                finish_boot("the machine restarted inside this cell (a new boot follows in the log)");
            if (!stream_ || stream_->health().records > 0) new_boot();
            r_.boots.back().first_line = line_no_;
        }
        ensure_stream();
        if (type == "config") {
            json cfg = json::object();
            for (size_t f = 0; f < rec.count; ++f)
                cfg[std::string(rec.fields[f].key.p, rec.fields[f].key.n)] = std::string(rec.fields[f].value.p, rec.fields[f].value.n);
            r_.boots.back().config = cfg;
        }
        if (type == "cell") {
            uint64_t id;
            if (rec.get_u64("id", id)) last_cell_id_ = id, seen_ids_.insert(id);
        }
        stream_->feed_line(std::string(l) + "\n");
    }

    void ensure_stream() {
        if (!stream_) new_boot();
    }

    void new_boot() {
        stream_ = std::make_unique<RecordStream>();
        seen_ids_.clear();
        last_cell_id_.reset();
        r_.boots.emplace_back();
        r_.boots.back().first_line = line_no_;
        size_t boot = r_.boots.size() - 1;
        stream_->on_cell([this, boot](Cell&& c) {
            c.extra["boot"] = boot;
            c.extra["log_line"] = line_no_;
            if (last_cell_id_) c.extra["cell_id"] = *last_cell_id_;
            add(std::move(c));
        });
    }

    void add(Cell c) {
        c.backend = kNativeRing0Backend;
        c.mode = "native";
        if (opts_.tsc_khz) c.tsc_khz = opts_.tsc_khz;
        if (stream_) {
            auto hv = stream_->hello().find("hv");
            if (hv != stream_->hello().end() && hv->second != "none") {
                c.extra["hypervisor"] = hv->second;
                // TCG executes WBINVD and CLFLUSH* as no-ops: its figures are functional only.
                c.emulated = hv->second.rfind("TCG", 0) == 0;
            }
        }
        r_.cells.push_back(std::move(c));
    }

    // Closes the current boot: its open cell becomes hung, announced cells that never came are listed.
    void finish_boot(const std::string& open_reason) {
        if (!stream_) return;
        ImportedBoot& b = r_.boots.back();
        size_t boot = r_.boots.size() - 1;
        if (const auto& open = stream_->open_cell()) {
            Cell c = *open;
            c.tsc.clear();
            c.guest_pmu.clear();
            c.status = CellStatus::hung;
            c.reason = open_reason;
            c.last_output = stream_->tail();
            c.extra["boot"] = boot;
            c.extra["cell_id"] = stream_->open_cell_id();
            add(std::move(c));
        }
        b.hello = stream_->hello();
        b.health = stream_->health();
        b.finished = stream_->finished();
        b.guest_error = stream_->guest_error();
        b.cells_received = stream_->cells_done();
        if (!b.finished && b.config) add_missing(b, boot);
        stream_.reset();
    }

    // The guest's plan, in its own order (common/config.h, cells_per_phase): phase, pattern, footprint.
    void add_missing(ImportedBoot& b, size_t boot) {
        const json& cfg = *b.config;
        uint64_t phases = 1, from = 0, total = 0, warmup = 0;
        auto num = [&](const char* key, uint64_t& out) {
            if (cfg.contains(key)) parse_u64(Str(cfg[key].get_ref<const std::string&>().c_str()), out);
        };
        num("phases", phases);
        num("from", from);
        num("cells", total);
        num("warmup", warmup);
        std::vector<uint64_t> footprints;
        for (const auto& f : split(cfg.value("footprints", ""), ',')) {
            uint64_t v;
            if (parse_u64(Str(f.c_str()), v)) footprints.push_back(v);
        }
        uint64_t max_seen = seen_ids_.empty() ? 0 : *seen_ids_.rbegin();
        uint64_t id = 0;
        for (uint64_t ph = 0; ph < std::min<uint64_t>(phases, Config::kMaxPhases); ++ph)
            for (const auto& name : split(cfg.value("patterns", ""), ',')) {
                const Pattern* p = find_pattern(Str(name.c_str()));
                if (!p) continue;
                std::vector<uint64_t> fps = p->uses_footprint ? footprints : std::vector<uint64_t>{0};
                for (uint64_t fp : fps) {
                    uint64_t this_id = id++;
                    if (this_id < from || this_id >= total || seen_ids_.count(this_id)) continue;
                    Cell c;
                    c.pattern = p->name;
                    c.footprint_bytes = fp;
                    c.phase = uint32_t(ph);
                    c.unit = unit_name(p->unit);
                    c.warmup = uint32_t(warmup);
                    bool lost = !seen_ids_.empty() && this_id < max_seen;
                    c.status = lost ? CellStatus::corrupt : CellStatus::crashed;
                    c.reason = lost ? "none of this cell's records arrived intact (see the corrupt lines)"
                                    : "never ran: the log ends before this cell began";
                    c.extra["boot"] = boot;
                    c.extra["cell_id"] = this_id;
                    add(std::move(c));
                    ++b.cells_missing;
                }
            }
    }

    void warn() {
        if (r_.boots.empty()) {
            r_.warnings.push_back("no flushbench records in the log: is it the COM1 capture (115200 8N1) of a flushbench ISO boot?");
            return;
        }
        if (r_.boots.size() > 1)
            r_.warnings.push_back(fmt::format("{} boots in one log: every boot's cells are kept, so names repeat", r_.boots.size()));
        for (size_t i = 0; i < r_.boots.size(); ++i) {
            const auto& b = r_.boots[i];
            auto get = [&](const char* k) {
                auto it = b.hello.find(k);
                return it == b.hello.end() ? std::string() : it->second;
            };
            if (b.hello.empty()) r_.warnings.push_back(fmt::format("boot {}: no hello record (the start of the boot is missing from the log)", i));
            if (!get("hv").empty() && get("hv") != "none")
                r_.warnings.push_back(fmt::format("boot {}: the kernel ran under a hypervisor ({}), not on bare metal", i, get("hv")));
            if (get("tsc_khz") == "unknown" && !opts_.tsc_khz)
                r_.warnings.push_back(fmt::format("boot {}: the CPU does not report its TSC rate: times are in cycles (pass --tsc-khz)", i));
            if (!b.finished) r_.warnings.push_back(fmt::format("boot {}: no summary record: the run did not finish in this log", i));
            if (b.guest_error) r_.warnings.push_back(fmt::format("boot {}: the kernel reported: {}", i, *b.guest_error));
        }
    }

    const ImportOptions& opts_;
    ImportResult r_;
    std::unique_ptr<RecordStream> stream_;
    std::set<uint64_t> seen_ids_;
    std::optional<uint64_t> last_cell_id_;
    size_t line_no_ = 0;
};

}  // namespace

json ImportResult::facts() const {
    json boots_json = json::array();
    for (const auto& b : boots) {
        json hb = {{"first_line", b.first_line}, {"guest", b.hello}, {"finished", b.finished},
                   {"cells_received", b.cells_received}, {"cells_missing", b.cells_missing},
                   {"records", b.health.records}, {"noise_lines", b.health.noise_lines},
                   {"corrupt_lines", b.health.corrupt_lines}, {"protocol_errors", b.health.protocol_errors},
                   {"errors", b.health.first_errors}};
        if (b.config) hb["config"] = *b.config;
        if (b.guest_error) hb["guest_error"] = *b.guest_error;
        boots_json.push_back(std::move(hb));
    }
    json corrupt_json = json::array();
    for (const auto& c : corrupt) corrupt_json.push_back({{"line", c.line}, {"error", c.error}, {"text", c.text}});
    return {{"source", "serial log"}, {"lines", lines}, {"noise_before_first_record", noise_before_first_record}, {"repaired_bytes", repaired_bytes}, {"resynced_records", resynced},
            {"rejoined_records", rejoined}, {"corrupt_lines", corrupt_json}, {"boots", boots_json}, {"warnings", warnings}};
}

ImportResult import_serial_log(const std::string& text, const ImportOptions& opts) {
    Importer im(opts);
    im.run(text);
    return im.take();
}

int run_import(const std::string& log_path, const std::string& out, const std::string& command_line, const ImportOptions& opts) {
    std::ifstream in(log_path, std::ios::binary);
    if (!in) {
        fmt::print(stderr, "flushbench: cannot read {}: pass the serial capture of a flushbench ISO boot\n", log_path);
        return kExitUsage;
    }
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ImportResult r = import_serial_log(text, opts);
    if (r.boots.empty()) {
        fmt::print(stderr, "flushbench: {}: {}\n", log_path, r.warnings.empty() ? "no flushbench records" : r.warnings.front());
        return kExitUsage;
    }
    // The context describes the machine that ran the kernel (its hello), not the one importing.
    const auto& hello = r.boots.front().hello;
    auto hello_u64 = [&](const char* k) {
        uint64_t v = 0;
        auto it = hello.find(k);
        if (it != hello.end()) parse_u64(Str(it->second.c_str()), v);
        return v;
    };
    uint64_t khz = opts.tsc_khz ? opts.tsc_khz : hello_u64("tsc_khz");
    char date[64];
    std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S+00:00", std::gmtime(&now));
    bool emulated = std::any_of(r.cells.begin(), r.cells.end(), [](const Cell& c) { return c.emulated; });
    json fbctx = {{"schema_version", kResultsSchemaVersion}, {"version", FLUSHBENCH_VERSION}, {"git_commit", FLUSHBENCH_GIT_COMMIT},
                  {"command_line", command_line}, {"backend", kNativeRing0Backend}, {"mode", "native"}, {"emulated", emulated},
                  {"log", log_path}, {"tsc_khz_source", opts.tsc_khz ? "--tsc-khz" : "the kernel's CPUID (hello tsc_src)"},
                  {"run", r.facts()}};
    json ctx = {{"date", date}, {"host_name", "bare metal (imported serial log)"}, {"executable", "flushbench-guest.elf"},
                {"num_cpus", 1}, {"mhz_per_cpu", khz / 1000}, {"cpu_scaling_enabled", false}, {"library_build_type", "release"},
                {"caches", json::array({{{"type", "Unified"}, {"level", 3}, {"size", hello_u64("llc")}, {"num_sharing", 0}}})},
                {"flushbench", fbctx}};
    try {
        write_file_atomically(out, ResultsWriter::document(ctx, r.cells).dump(1) + "\n");
    } catch (const std::exception& e) {
        fmt::print(stderr, "flushbench: {}\n", e.what());
        return kExitEnvironment;
    }
    std::map<CellStatus, uint32_t> counts;
    uint32_t failed = 0;
    for (const auto& c : r.cells) {
        ++counts[c.status];
        if (!is_measured(c.status)) ++failed;
    }
    std::string parts;
    for (const auto& [st, n] : counts) parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", n, to_string(st));
    for (const auto& w : r.warnings) fmt::print(stderr, "flushbench: warning: {}\n", w);
    for (const auto& c : r.corrupt) fmt::print(stderr, "flushbench: {}:{}: corrupt ({}): {:.100}\n", log_path, c.line, c.error, c.text);
    fmt::print(stderr, "flushbench: {} cells from {} boot(s) ({}) -> {}\n", r.cells.size(), r.boots.size(), parts.empty() ? "none" : parts, out);
    return failed || !r.corrupt.empty() ? kExitCellsFailed : kExitOk;
}

}  // namespace fb
