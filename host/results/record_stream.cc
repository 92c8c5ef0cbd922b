#include "host/results/record_stream.h"
#include "host/sys/clock.h"

#include <time.h>

#include <fmt/format.h>

#include "common/config.h"
#include "common/measure.h"
#include "common/patterns.h"

namespace fb {
namespace {

std::string_view view(Str s) { return {s.p, s.n}; }
Str str(std::string_view s) { return {s.data(), s.size()}; }

// Parses a comma list of at most `max` u64 values; false on any junk.
bool parse_list(Str s, std::vector<uint64_t>& out, size_t max) {
    out.clear();
    Splitter it(s, ',');
    Str item;
    while (it.next(item)) {
        uint64_t v;
        if (out.size() == max || !parse_u64(item, v)) return false;
        out.push_back(v);
    }
    return true;
}


// "idle", "max", or a rate the guest's parser would accept.
bool valid_pace(Str s) {
    uint64_t hz;
    return s == Str("idle") || s == Str("max") || (parse_u64(s, hz) && hz >= 1 && hz <= Config::kMaxPaceRate);
}

std::optional<CellStatus> status_from(Str s) {
    for (auto st : {CellStatus::ok, CellStatus::unsupported, CellStatus::skipped, CellStatus::fault})
        if (s == Str(to_string(st))) return st;
    return std::nullopt;
}

}  // namespace

std::optional<uint64_t> RecordStream::hello_u64(const std::string& key) const {
    auto it = hello_.find(key);
    uint64_t v;
    if (it == hello_.end() || !parse_u64(str(it->second), v)) return std::nullopt;
    return v;
}

void RecordStream::keep_tail(std::string_view bytes) {
    tail_.append(bytes);
    if (tail_.size() > kTailBytes) tail_.erase(0, tail_.size() - kTailBytes);
}

void RecordStream::feed_bytes(std::string_view chunk) {
    keep_tail(chunk);
    for (char c : chunk)
        if (assembler_.push(c)) handle_line(view(assembler_.line()), assembler_.error());
}

void RecordStream::feed_line(std::string_view line) {
    keep_tail(line);
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    if (line.size() >= wire::kMaxLine) return handle_line(line.substr(0, 64), wire::Error::too_long);
    handle_line(line, wire::Error::none);
}

void RecordStream::protocol_error(std::string what) {
    ++health_.protocol_errors;
    if (health_.first_errors.size() < kMaxErrors) health_.first_errors.push_back(std::move(what));
}

void RecordStream::handle_line(std::string_view line, wire::Error assembler_error) {
    wire::Record rec;
    wire::Error e = assembler_error != wire::Error::none ? assembler_error : wire::parse_line(str(line), rec);
    if (e == wire::Error::noise) {
        ++health_.noise_lines;
        return;
    }
    if (e != wire::Error::none) {
        ++health_.corrupt_lines;
        if (health_.first_errors.size() < kMaxErrors)
            health_.first_errors.push_back(fmt::format("{}: {:.60}", view(wire::error_name(e)), line));
        // A lost line inside a cell means lost samples or a lost verdict: the cell cannot be trusted.
        if (open_) close_open(CellStatus::corrupt, fmt::format("record stream corrupted ({})", view(wire::error_name(e))));
        return;
    }
    ++health_.records;
    handle_record(rec);
}

void RecordStream::close_open(CellStatus status, std::string reason) {
    Cell c = std::move(*open_);
    open_.reset();
    c.status = status;
    c.reason = std::move(reason);
    ++cells_done_;
    if (on_cell_) on_cell_(std::move(c));
}

void RecordStream::handle_record(const wire::Record& r) {
    auto type = view(r.type);
    auto u64 = [&](const char* key, uint64_t& out) {
        if (r.get_u64(key, out)) return true;
        protocol_error(fmt::format("{} record without a numeric '{}'", type, key));
        return false;
    };

    if (type == "hello") {
        hello_.clear();
        for (size_t i = 0; i < r.count; ++i) hello_[std::string(view(r.fields[i].key))] = std::string(view(r.fields[i].value));
        if (hello_["v"] != std::to_string(wire::kVersion))
            protocol_error(fmt::format("guest speaks record version {}, host expects {}", hello_["v"], wire::kVersion));
    } else if (type == "phase") {
        uint64_t phase;
        if (u64("index", phase) && phase < Config::kMaxPhases && on_phase_) on_phase_(uint32_t(phase));
    } else if (type == "cell") {
        if (open_) close_open(CellStatus::corrupt, "guest began a new cell before ending this one");
        uint64_t id, phase, footprint, reps, warmup;
        Str pattern, unit;
        if (!u64("id", id) || !u64("phase", phase) || !u64("footprint", footprint) || !u64("reps", reps) ||
            !u64("warmup", warmup))
            return;
        if (!r.get("pattern", pattern) || !find_pattern(pattern)) return protocol_error("cell record names no known pattern");
        if (reps > Config::kMaxReps || warmup > Config::kMaxWarmup || phase >= Config::kMaxPhases)
            return protocol_error("cell record out of range");
        Cell c;
        c.pattern = std::string(view(pattern));
        c.footprint_bytes = footprint;
        c.phase = uint32_t(phase);
        c.warmup = uint32_t(warmup);
        c.unit = r.get("unit", unit) ? std::string(view(unit)) : unit_name(find_pattern(pattern)->unit);
        if (auto khz = hello_u64("tsc_khz")) c.tsc_khz = *khz;
        if (auto line = hello_u64("line"); line && *line && *line <= 4096) c.line_bytes = uint32_t(*line);
        Str pace;
        if (r.get("pace", pace)) {
            uint64_t ms = 0;
            if (!valid_pace(pace) || !r.get_u64("ms", ms) || ms < Config::kMinPaceMs || ms > Config::kMaxPaceMs)
                return protocol_error("cell record with a malformed pace");
            c.pace = Pace{std::string(view(pace)), uint32_t(ms)};
            c.pace->host_start_ns = monotonic_ns();
            uint64_t round = 0, slot = 0;
            if (r.get_u64("round", round)) {
                if (round >= Config::kMaxPaceRounds || !r.get_u64("slot", slot) || slot > 2 * Config::kMaxPaceSteps)
                    return protocol_error("cell record with a malformed pace round");
                c.pace->round = int(round), c.pace->slot = uint32_t(slot);
            }
        }
        Str memtype;
        if (r.get("memtype", memtype)) c.mapping = GuestMapping{std::string(view(memtype)).substr(0, 8), "", 0};
        c.tsc.reserve(reps);
        open_ = std::move(c);
        open_id_ = id;
        open_reps_ = reps;
        if (on_cell_begin_) on_cell_begin_();
    } else if (type == "samples") {
        uint64_t id, seq;
        if (!u64("id", id) || !u64("seq", seq)) return;
        if (!open_ || id != open_id_) return protocol_error("samples for a cell that is not open");
        if (seq != open_->tsc.size()) return close_open(CellStatus::corrupt, "samples out of sequence (records lost)");
        std::vector<uint64_t> tsc, ref;
        Str list, ref_list;
        if (!r.get("tsc", list) || !parse_list(list, tsc, wire::kSamplesPerRecord) || tsc.empty() ||
            open_->tsc.size() + tsc.size() > open_reps_)
            return close_open(CellStatus::corrupt, "malformed samples record");
        // Reference brackets come with every chunk or with none.
        bool has_ref = r.get("ref", ref_list);
        bool had_ref = !open_->ref.empty();
        if ((!open_->tsc.empty() && has_ref != had_ref) ||
            (has_ref && (!parse_list(ref_list, ref, tsc.size()) || ref.size() != tsc.size())))
            return close_open(CellStatus::corrupt, "malformed reference brackets");
        open_->ref.insert(open_->ref.end(), ref.begin(), ref.end());
        for (size_t i = 0; i < r.count; ++i) {
            auto key = view(r.fields[i].key);
            if (key == "id" || key == "seq" || key == "tsc" || key == "ref") continue;
            std::vector<uint64_t> values;
            auto& series = open_->guest_pmu[std::string(key)];
            if (open_->guest_pmu.size() > 8 || !parse_list(r.fields[i].value, values, tsc.size()) ||
                values.size() != tsc.size() || series.size() != open_->tsc.size())
                return close_open(CellStatus::corrupt, fmt::format("malformed counter series '{}'", key));
            series.insert(series.end(), values.begin(), values.end());
        }
        open_->tsc.insert(open_->tsc.end(), tsc.begin(), tsc.end());
    } else if (type == "paced") {
        uint64_t id, ops, late, tsc;
        if (!u64("id", id) || !u64("ops", ops) || !u64("late", late) || !u64("tsc", tsc)) return;
        if (!open_ || id != open_id_ || !open_->pace) return protocol_error("paced record for a paced step that is not open");
        if (open_->pace->finished) return close_open(CellStatus::corrupt, "paced record sent twice");
        open_->pace->host_end_ns = monotonic_ns();
        open_->pace->finished = true;
        open_->pace->ops = ops;
        open_->pace->late = late;
        open_->pace->elapsed_tsc = tsc;
    } else if (type == "fault") {
        uint64_t id;
        if (!u64("id", id) || !open_ || id != open_id_) return protocol_error("fault for a cell that is not open");
        GuestFault f;
        uint64_t vector = 0;
        if (!u64("vector", vector) || vector > 255) return protocol_error("fault record without a valid vector");
        f.vector = uint32_t(vector);
        r.get_u64("error", f.error_code);
        r.get_u64("rip", f.rip);
        r.get_u64("cr2", f.cr2);
        open_->fault = f;
    } else if (type == "end") {
        uint64_t id, n, overhead;
        Str status_text, reason;
        if (!u64("id", id) || !u64("n", n) || !u64("overhead", overhead)) return;
        if (!open_ || id != open_id_) return protocol_error("end for a cell that is not open");
        auto status = r.get("status", status_text) ? status_from(status_text) : std::nullopt;
        if (!status) return close_open(CellStatus::corrupt, "end record with an unknown status");
        if (n != open_->tsc.size()) return close_open(CellStatus::corrupt, fmt::format("guest reported {} samples, {} arrived", n, open_->tsc.size()));
        bool idle = open_->pace && open_->pace->rate == "idle";  // idles run no operation to time
        if (*status == CellStatus::ok && n == 0 && !idle) return close_open(CellStatus::corrupt, "ok cell without samples");
        if (*status == CellStatus::ok && open_->pace && !open_->pace->finished)
            return close_open(CellStatus::corrupt, "paced step ended without its paced record");
        open_->tsc_overhead = overhead;
        Str mapped;
        uint64_t pat = 0;
        if (open_->mapping && r.get("mapped", mapped) && r.get_u64("pat", pat)) {
            open_->mapping->mapped = std::string(view(mapped)).substr(0, 8);
            open_->mapping->pat = pat;
        }
        Str pmu_reason;
        if (r.get("pmu_reason", pmu_reason)) open_->guest_pmu_unavailable = std::string(view(pmu_reason));
        Str method, stop;
        if (r.get("method", method)) {
            uint64_t k = 0, ops = 0;
            std::string m(view(method)), st = r.get("stop", stop) ? std::string(view(stop)) : "";
            if ((m != "batch" && m != "paired") || !r.get_u64("k", k) || k < 1 || k > measure::kMaxBatch || !r.get_u64("ops", ops) ||
                (st != "precise" && st != "budget" && st != "max_reps") || (m == "paired" && k != 1))
                return close_open(CellStatus::corrupt, "end record with a malformed method");
            if (open_->ref.size() != open_->tsc.size()) return close_open(CellStatus::corrupt, "measured cell without its reference brackets");
            open_->method = m, open_->batch = uint32_t(k), open_->ops = ops, open_->stop = st;
        } else if (!open_->ref.empty()) {
            return close_open(CellStatus::corrupt, "reference brackets without a method");
        }
        close_open(*status, r.get("reason", reason) ? std::string(view(reason)) : std::string());
    } else if (type == "calib") {
        // The timing floor's samples (guest/main.cc calibrate_floor): "id" is the batch's k.
        uint64_t k, seq;
        std::vector<uint64_t> value, ref;
        Str vl, rl;
        if (!u64("id", k) || !u64("seq", seq)) return;
        if (k < 1 || k > measure::kMaxBatch || seq != calib_.value.size() || !r.get("tsc", vl) || !r.get("ref", rl) ||
            !parse_list(vl, value, wire::kSamplesPerRecord) || !parse_list(rl, ref, value.size()) || value.size() != ref.size() ||
            calib_.value.size() + value.size() > kMaxCalibration || (calib_.k && calib_.k != k))
            return protocol_error("malformed calibration record");
        calib_.k = uint32_t(k);
        calib_.value.insert(calib_.value.end(), value.begin(), value.end());
        calib_.ref.insert(calib_.ref.end(), ref.begin(), ref.end());
    } else if (type == "summary") {
        if (open_) close_open(CellStatus::corrupt, "summary arrived while the cell was open");
        summary_seen_ = true;
    } else if (type == "error" || type == "panic") {
        Str msg;
        std::string text = r.get("msg", msg) ? std::string(view(msg)) : std::string(type);
        Str token;
        if (r.get("token", token)) text += fmt::format(" (at '{}')", view(token));
        uint64_t vec;
        if (type == "panic" && r.get_u64("vector", vec)) text = fmt::format("guest kernel exception, vector {}", vec);
        guest_error_ = text;
    } else if (type == "config") {
        Str list;
        std::vector<uint64_t> footprints;
        if (!r.get("footprints", list) || (list.n && !parse_list(list, footprints, Config::kMaxFootprints)))
            return protocol_error("config record without a valid footprints list");
        guest_footprints_ = std::move(footprints);
    } else if (type == "tick") {
        // Only proves the guest is alive (the caller's watchdog sees the bytes arrive).
    } else {
        protocol_error(fmt::format("unknown record type '{}'", type));
    }
}

}  // namespace fb
