#include "host/run/matrix.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
// Header-only on purpose: Debian's pkg-config line for toml++ selects its shared library, but the
// parser is only needed here and a header-only build keeps the host library's link line unchanged.
#include <toml++/toml.h>

#include "common/config.h"
#include "common/patterns.h"

namespace fb {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kTopKeys = {"name", "description", "backends", "modes", "patterns", "footprints",
                                           "reps", "warmup", "min_reps", "target_pct", "budget_ms", "cell_timeout",
                                           "counters", "skip", "placement",
                                           "set", "machine", "mem_mib", "vfio", "vfio_baseline", "vfio_pci"};
const std::vector<std::string> kPlacementKeys = {"name", "cpu", "migrate_ms", "dirty_mask"};
const std::vector<std::string> kSetKeys = {"name",  "patterns",  "footprints",     "reps",     "warmup",  "min_reps", "target_pct", "budget_ms",  "pace",
                                           "pace_footprint", "pace_rounds", "neighbour", "slice_ms", "neighbour_bytes"};
// The names options.h gives the backends and modes: a matrix accepts exactly those.
const std::vector<std::string> kBackends = backend_names();
const std::vector<std::string> kModes = mode_names();
const std::vector<std::string> kMachines = {"microvm", "pc", "q35"};

constexpr int64_t kMaxCellTimeout = 3600, kMaxCpu = 4095, kMaxMigrateMs = 60000, kMaxMemMib = 3072;

std::vector<std::string> pattern_names() {
    std::vector<std::string> v;
    for (const auto& p : kPatterns) v.push_back(p.name);
    return v;
}

// "a,b,c" -> {"a", "b", "c"}: the command line's lists, as a matrix holds them.
std::vector<std::string> split_commas(const std::string& list) {
    std::vector<std::string> out;
    std::stringstream ss(list);
    for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
    return out;
}

std::string joined(const std::vector<std::string>& v, std::string_view sep = ", ") {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) s += (i ? std::string(sep) : "") + v[i];
    return s;
}

const char* type_name(const toml::node& n) {
    switch (n.type()) {
        case toml::node_type::table: return "a table";
        case toml::node_type::array: return "an array";
        case toml::node_type::string: return "a string";
        case toml::node_type::integer: return "an integer";
        case toml::node_type::floating_point: return "a floating-point number";
        case toml::node_type::boolean: return "a boolean";
        case toml::node_type::date: return "a date";
        case toml::node_type::time: return "a time";
        case toml::node_type::date_time: return "a date-time";
        default: return "nothing";
    }
}

// Characters the guest's command line and the wire format carry unchanged in a skip reason.
bool valid_reason(std::string_view r) {
    if (r.empty() || r.size() > Config::kMaxReasonLen) return false;
    return std::all_of(r.begin(), r.end(), [](char c) { return std::isalnum(uint8_t(c)) || c == '-' || c == '_' || c == '.'; });
}

class Parser {
public:
    explicit Parser(std::string file) : file_(std::move(file)) {}

    [[noreturn]] void fail(const toml::source_region& where, const std::string& what) const {
        throw MatrixError(fmt::format("{}:{}:{}: {}", file_, where.begin.line, where.begin.column, what), file_,
                          where.begin.line, where.begin.column);
    }

    // "unknown <what> 'x' (did you mean 'y'?)", or the list of valid words when nothing is close.
    [[noreturn]] void fail_unknown(const toml::source_region& where, std::string_view what, std::string_view word,
                                   const std::vector<std::string>& valid) const {
        std::string near = nearest(word, valid);
        if (!near.empty()) fail(where, fmt::format("unknown {} '{}' (did you mean '{}'?)", what, word, near));
        fail(where, fmt::format("unknown {} '{}' (valid: {})", what, word, joined(valid)));
    }

    void check_keys(const toml::table& t, const std::vector<std::string>& valid, std::string_view where) const {
        for (auto&& [k, v] : t) {
            (void)v;
            if (std::find(valid.begin(), valid.end(), k.str()) == valid.end())
                fail_unknown(k.source(), where.empty() ? "key" : fmt::format("key in [[{}]]", where), k.str(), valid);
        }
    }

    std::string string(const toml::node& n, std::string_view key) const {
        if (!n.is_string()) fail(n.source(), fmt::format("'{}' must be a string, not {}", key, type_name(n)));
        return n.as_string()->get();
    }

    int64_t integer(const toml::node& n, std::string_view key, int64_t lo, int64_t hi, std::string_view why = {}) const {
        if (!n.is_integer()) fail(n.source(), fmt::format("'{}' must be an integer, not {}", key, type_name(n)));
        int64_t v = n.as_integer()->get();
        if (v < lo || v > hi)
            fail(n.source(), fmt::format("'{}' = {} is out of range: use {} to {}{}{}", key, v, lo, hi, why.empty() ? "" : " ", why));
        return v;
    }

    const toml::array& array(const toml::node& n, std::string_view key, bool allow_empty) const {
        if (!n.is_array()) fail(n.source(), fmt::format("'{}' must be an array, e.g. {} = [\"...\"], not {}", key, key, type_name(n)));
        const toml::array& a = *n.as_array();
        if (!allow_empty && a.empty()) fail(n.source(), fmt::format("'{}' must not be empty", key));
        return a;
    }

    std::vector<std::string> strings(const toml::node& n, std::string_view key, bool allow_empty) const {
        std::vector<std::string> out;
        for (const auto& e : array(n, key, allow_empty)) {
            if (!e.is_string()) fail(e.source(), fmt::format("'{}' must hold strings, not {}", key, type_name(e)));
            out.push_back(e.as_string()->get());
        }
        return out;
    }

    // Words from a fixed vocabulary, each at most once.
    std::vector<std::string> words(const toml::node& n, std::string_view key, std::string_view what,
                                   const std::vector<std::string>& valid) const {
        std::vector<std::string> out;
        for (const auto& e : array(n, key, false)) {
            if (!e.is_string()) fail(e.source(), fmt::format("'{}' must hold strings, not {}", key, type_name(e)));
            std::string w = e.as_string()->get();
            if (std::find(valid.begin(), valid.end(), w) == valid.end()) fail_unknown(e.source(), what, w, valid);
            if (std::find(out.begin(), out.end(), w) != out.end()) fail(e.source(), fmt::format("{} '{}' listed twice", what, w));
            out.push_back(w);
        }
        return out;
    }

    std::vector<std::string> patterns(const toml::node& n) const {
        std::vector<std::string> valid = pattern_names();
        valid.insert(valid.end(), {"all", "memtypes", "none"});
        auto out = words(n, "patterns", "pattern", valid);
        for (const char* group : {"all", "memtypes", "none"})
            if (out.size() > 1 && std::find(out.begin(), out.end(), group) != out.end())
                fail(n.source(), fmt::format("'patterns' lists '{}' with other patterns: use [\"{}\"] alone or name each pattern", group, group));
        return out;
    }

    // Paced steps, each checked by the guest's own parser: "idle:2000", "wbinvd@100:2000".
    std::vector<std::string> pace(const toml::node& n) const {
        std::vector<std::string> out = strings(n, "pace", false);
        const auto& a = *n.as_array();
        if (out.size() > Config::kMaxPaceSteps)
            fail(n.source(), fmt::format("'pace' has {} steps: a run takes at most {}", out.size(), Config::kMaxPaceSteps));
        for (size_t i = 0; i < out.size(); ++i) {
            Config c;
            std::string one = "pace=" + out[i];
            ConfigError e = parse_config(Str(one.c_str()), c);
            if (e.message) fail(a[i].source(), fmt::format("pace step '{}': {}", out[i], e.message));
        }
        return out;
    }

    // The guest's own footprint parser decides, so a matrix accepts exactly what `--footprints` does.
    std::vector<std::string> footprints(const toml::node& n) const {
        std::vector<std::string> out;
        std::vector<FootprintSpec> seen;
        const auto& a = array(n, "footprints", false);
        if (a.size() > Config::kMaxFootprints)
            fail(n.source(), fmt::format("'footprints' has {} entries: a run takes at most {}; split them over [[set]]s", a.size(), Config::kMaxFootprints));
        for (const auto& e : a) {
            std::string text;
            if (e.is_integer()) {
                int64_t v = e.as_integer()->get();
                if (v < 0) fail(e.source(), fmt::format("footprint {} is negative", v));
                text = std::to_string(v);
            } else if (e.is_string()) {
                text = e.as_string()->get();
            } else {
                fail(e.source(), fmt::format("a footprint is a string like \"4K\" or \"2xLLC\", or an integer of bytes, not {}", type_name(e)));
            }
            FootprintSpec f{};
            if (!config_detail::parse_footprint(Str(text.c_str()), f))
                fail(e.source(), fmt::format("bad footprint '{}': use bytes with an optional K/M/G suffix (\"64K\"), or NxLLC (\"2xLLC\", N <= 64)", text));
            for (const auto& s : seen)
                if (s.bytes == f.bytes && s.llc_times == f.llc_times) fail(e.source(), fmt::format("footprint '{}' listed twice", text));
            seen.push_back(f);
            out.push_back(text);
        }
        return out;
    }

    std::string skips(const toml::node& n) const {
        if (!n.is_table()) fail(n.source(), fmt::format("'skip' must be a table of pattern = \"reason\", e.g. skip = {{ clwb = \"hangs-here\" }}, not {}", type_name(n)));
        std::string out;
        for (auto&& [k, v] : *n.as_table()) {
            if (!find_pattern(Str(k.str().data(), k.str().size()))) fail_unknown(k.source(), "pattern", k.str(), pattern_names());
            std::string reason = string(v, fmt::format("skip.{}", k.str()));
            if (!valid_reason(reason))
                fail(v.source(), fmt::format("skip reason '{}' must be 1-{} characters of letters, digits, '-', '_' or '.' (it travels on the guest's command line)",
                                             reason, Config::kMaxReasonLen));
            out += (out.empty() ? "" : ",") + std::string(k.str()) + ":" + reason;
        }
        return out;
    }

    std::vector<Placement> placements(const toml::node& n) const {
        if (!n.is_array_of_tables())
            fail(n.source(), fmt::format("'placement' must be an array of tables: write [[placement]] sections, not {}", type_name(n)));
        std::vector<Placement> out;
        for (const auto& e : *n.as_array()) {
            const toml::table& t = *e.as_table();
            check_keys(t, kPlacementKeys, "placement");
            Placement p;
            if (auto* v = t.get("cpu")) p.cpu = int(integer(*v, "cpu", 0, kMaxCpu));
            if (auto* v = t.get("migrate_ms")) p.migrate_ms = uint32_t(integer(*v, "migrate_ms", 1, kMaxMigrateMs));
            if (auto* v = t.get("dirty_mask")) p.dirty_mask = uint32_t(integer(*v, "dirty_mask", 1, Config::kMaxMaskWidth));
            if (auto* v = t.get("name")) p.name = string(*v, "name");
            if (p.name.empty()) {
                if (p.migrate_ms) p.name = fmt::format("migrate-{}ms", p.migrate_ms);
                if (p.dirty_mask) p.name = fmt::format("mask{}", p.dirty_mask);
                if (p.cpu >= 0) p.name += fmt::format("{}cpu{}", p.name.empty() ? "" : "-from-", p.cpu);
                if (p.name.empty()) p.name = "unpinned";
            }
            for (const auto& q : out)
                if (q.name == p.name) fail(e.source(), fmt::format("two placements named '{}': give one a distinct name", p.name));
            out.push_back(p);
        }
        if (out.empty()) fail(n.source(), "'placement' is empty: remove it for one unpinned placement");
        return out;
    }

    std::vector<PatternSet> sets(const toml::node& n, const PatternSet& defaults) const {
        if (!n.is_array_of_tables())
            fail(n.source(), fmt::format("'set' must be an array of tables: write [[set]] sections, not {}", type_name(n)));
        std::vector<PatternSet> out;
        for (const auto& e : *n.as_array()) {
            const toml::table& t = *e.as_table();
            check_keys(t, kSetKeys, "set");
            PatternSet s = defaults;
            s.name = fmt::format("set{}", out.size() + 1);
            set_common(t, s);
            if (auto* v = t.get("name")) s.name = string(*v, "name");
            for (const auto& q : out)
                if (q.name == s.name) fail(e.source(), fmt::format("two sets named '{}': give one a distinct name", s.name));
            out.push_back(s);
        }
        if (out.empty()) fail(n.source(), "'set' is empty: remove it to use the top-level patterns and footprints");
        return out;
    }

    // Keys a [[set]] shares with the top level.
    void set_common(const toml::table& t, PatternSet& s) const {
        if (auto* v = t.get("patterns")) s.patterns = patterns(*v);
        if (auto* v = t.get("footprints")) s.footprints = footprints(*v);
        if (auto* v = t.get("reps")) s.reps = uint32_t(integer(*v, "reps", 1, Config::kMaxReps, "(measured repetitions per cell)"));
        if (auto* v = t.get("warmup")) s.warmup = uint32_t(integer(*v, "warmup", 0, Config::kMaxWarmup, "(discarded repetitions per cell)"));
        if (auto* v = t.get("min_reps")) s.min_reps = uint32_t(integer(*v, "min_reps", 1, Config::kMaxReps, "(the fewest repetitions per cell)"));
        if (auto* v = t.get("target_pct")) {
            double pct = v->is_integer() ? double(v->as_integer()->get()) : v->is_floating_point() ? v->as_floating_point()->get() : -1;
            if (pct < 0 || pct > 100) fail(v->source(), "'target_pct' is a percentage of the median, 0-100 (0: never stop early)");
            s.target_permille = uint32_t(pct * 10 + 0.5);
        }
        if (auto* v = t.get("budget_ms")) s.budget_ms = uint32_t(integer(*v, "budget_ms", 0, Config::kMaxBudgetMs, "(ms of measuring per cell)"));
        if (auto* v = t.get("pace")) s.pace = pace(*v);
        if (auto* v = t.get("pace_footprint")) {
            s.pace_footprint = string(*v, "pace_footprint");
            FootprintSpec f;
            if (!config_detail::parse_footprint(Str(s.pace_footprint.c_str()), f))
                fail(v->source(), fmt::format("pace_footprint '{}': use bytes with an optional K/M/G suffix, or NxLLC", s.pace_footprint));
        }
        if (auto* v = t.get("neighbour")) {
            if (v->is_integer()) s.neighbour = std::to_string(integer(*v, "neighbour", 0, kMaxCpu));
            else if ((s.neighbour = string(*v, "neighbour")) != "auto") fail(v->source(), "'neighbour' is a CPU number or \"auto\"");
        }
        if (auto* v = t.get("slice_ms")) s.slice_ms = uint32_t(integer(*v, "slice_ms", 2, 1000, "(the neighbour's time slice)"));
        if (auto* v = t.get("neighbour_bytes")) s.neighbour_bytes = uint64_t(integer(*v, "neighbour_bytes", 4096, int64_t(1) << 34));
        if (auto* v = t.get("pace_rounds")) s.pace_rounds = uint32_t(integer(*v, "pace_rounds", 0, Config::kMaxPaceRounds, "(0: the steps once)"));
        else if (!s.neighbour.empty()) s.pace_rounds = kDefaultPaceRounds;
        if (!s.neighbour.empty() && s.pace.empty()) s.pace = split_commas(kDefaultPace);
        if (!s.neighbour.empty() && !t.get("patterns")) s.patterns = {"none"};
    }

    Matrix matrix(const toml::table& t) const {
        check_keys(t, kTopKeys, "");
        Matrix m;
        m.source = file_;
        m.name = fs::path(file_).stem().string();
        if (auto* v = t.get("name")) m.name = string(*v, "name");
        if (auto* v = t.get("description")) m.description = string(*v, "description");
        if (auto* v = t.get("backends")) m.backends = words(*v, "backends", "backend", kBackends);
        if (auto* v = t.get("modes")) {
            m.modes = words(*v, "modes", "mode", kModes);
            if (m.modes.size() > 1 && std::find(m.modes.begin(), m.modes.end(), "both") != m.modes.end())
                fail(v->source(), "'modes' lists 'both' with another mode: 'both' already runs coherent and noncoherent");
        }
        PatternSet top;
        top.name = "all";
        top.patterns = {"all"};
        {
            RunOptions defaults;
            top.reps = defaults.reps;
            top.warmup = defaults.warmup;
            top.min_reps = defaults.min_reps;
            top.target_permille = defaults.target_permille;
            top.budget_ms = defaults.budget_ms;
            top.footprints = split_commas(defaults.footprints);
        }
        set_common(t, top);
        if (auto* v = t.get("set")) m.sets = sets(*v, top);
        else m.sets = {top};
        if (auto* v = t.get("cell_timeout")) m.cell_timeout = std::chrono::seconds(integer(*v, "cell_timeout", 1, kMaxCellTimeout, "seconds"));
        if (auto* v = t.get("counters")) {
            m.counters = strings(*v, "counters", true);
            for (size_t i = 0; i < m.counters.size(); ++i)
                if (m.counters[i].empty()) fail((*v->as_array())[i].source(), "an empty counter name");
        }
        if (auto* v = t.get("skip")) m.skip = skips(*v);
        if (auto* v = t.get("placement")) m.placements = placements(*v);
        else m.placements = {Placement{"unpinned", -1, 0}};
        if (auto* v = t.get("machine")) {
            m.machine = string(*v, "machine");
            if (std::find(kMachines.begin(), kMachines.end(), m.machine) == kMachines.end()) fail_unknown(v->source(), "machine", m.machine, kMachines);
        }
        if (auto* v = t.get("mem_mib")) m.mem_mib = uint64_t(integer(*v, "mem_mib", 64, kMaxMemMib, "(the guest maps RAM below 3 GiB)"));
        if (auto* v = t.get("vfio")) m.vfio = string(*v, "vfio");
        if (auto* v = t.get("vfio_baseline")) m.vfio_baseline = string(*v, "vfio_baseline");
        if (auto* v = t.get("vfio_pci")) m.vfio_pci = strings(*v, "vfio_pci", true);

        // Our VMM is the only backend that owns the vCPU thread, so only it can migrate it ("auto"
        // is let through: it is kvm wherever /dev/kvm works, and the runner refuses it otherwise).
        auto moving = std::find_if(m.placements.begin(), m.placements.end(), [](const Placement& p) { return p.migrate_ms || p.dirty_mask; });
        if (moving != m.placements.end())
            for (const auto& b : m.backends)
                if (b != "kvm" && b != "auto") {
                    const toml::node* where = t.get("placement");
                    fail(where->source(), fmt::format("a placement with {} needs backends = [\"kvm\"], but backend '{}' is listed "
                                                      "(QEMU's vCPU threads are its own): put qemu backends in another matrix",
                                                      moving->migrate_ms ? "migrate_ms" : "dirty_mask", b));
                }
        return m;
    }

private:
    std::string file_;
};

}  // namespace

size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); ++j)
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

std::string nearest(std::string_view word, const std::vector<std::string>& candidates) {
    std::string best;
    size_t best_d = SIZE_MAX;
    for (const auto& c : candidates) {
        size_t d = edit_distance(word, c);
        if (d < best_d) best_d = d, best = c;
    }
    // A suggestion further away than a third of the word (and at least 2 edits) is noise.
    size_t limit = std::max<size_t>(2, word.size() / 3);
    return best_d <= limit ? best : std::string();
}

Matrix parse_matrix(std::string_view toml_text, const std::string& source_name) {
    // Matrix files are ASCII. Debian's toml++ reaches __builtin_unreachable on some non-ASCII
    // characters (found by tests/fuzz/matrix_fuzz), so nothing else gets near it.
    uint32_t line = 1, column = 1;
    for (char ch : toml_text) {
        if (static_cast<unsigned char>(ch) >= 0x80)
            throw MatrixError(fmt::format("{}:{}:{}: non-ASCII character: matrix files are plain ASCII", source_name, line, column),
                              source_name, line, column);
        if (ch == '\n') ++line, column = 1;
        else ++column;
    }
    toml::table t;
    try {
        t = toml::parse(toml_text, source_name);
    } catch (const toml::parse_error& e) {
        const auto& b = e.source().begin;
        throw MatrixError(fmt::format("{}:{}:{}: {}", source_name, b.line, b.column, e.description()), source_name, b.line, b.column);
    }
    return Parser(source_name).matrix(t);
}

Matrix load_matrix(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw MatrixError(fmt::format("{}: cannot read the matrix file (see bench/matrices/ for examples)", path), path, 0, 0);
    std::stringstream ss;
    ss << in.rdbuf();
    return parse_matrix(ss.str(), path);
}

std::string find_matrix(const std::string& name_or_path) {
    if (fs::exists(name_or_path)) return name_or_path;
    bool bare = name_or_path.find('/') == std::string::npos && name_or_path.find('.') == std::string::npos;
    if (bare) {
        fs::path shipped = fs::path(FLUSHBENCH_SOURCE_DIR) / "bench" / "matrices" / (name_or_path + ".toml");
        if (fs::exists(shipped)) return shipped.string();
    }
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(fs::path(FLUSHBENCH_SOURCE_DIR) / "bench" / "matrices", ec))
        if (e.path().extension() == ".toml") names.push_back(e.path().stem().string());
    std::sort(names.begin(), names.end());
    std::string near = bare ? nearest(name_or_path, names) : std::string();
    throw MatrixError(fmt::format("{}: no such matrix file{} (shipped: {})", name_or_path,
                                  near.empty() ? "" : fmt::format(" (did you mean '{}'?)", near), joined(names)),
                      name_or_path, 0, 0);
}

std::vector<MatrixRun> Matrix::expand() const {
    bool coherent = std::find(modes.begin(), modes.end(), "coherent") != modes.end();
    bool noncoherent = std::find(modes.begin(), modes.end(), "noncoherent") != modes.end();
    std::vector<std::string> run_modes = coherent && noncoherent ? std::vector<std::string>{"both"} : modes;
    std::vector<MatrixRun> runs;
    for (const auto& backend : backends)
        for (const auto& mode : run_modes)
            for (const auto& place : placements)
                for (const auto& set : sets) {
                    if (backend == "native" && !set.pace.empty()) continue;  // paced steps need a guest
                    MatrixRun r;
                    r.label = fmt::format("{} {} {} {}", set.name, backend, mode, place.name);
                    RunOptions& o = r.options;
                    o.backend = *backend_from_string(backend);  // checked against kBackends when parsed
                    o.mode = *mode_from_string(mode);
                    o.patterns = joined(set.patterns, ",");
                    o.footprints = joined(set.footprints, ",");
                    o.reps = set.reps;
                    o.warmup = set.warmup;
                    o.min_reps = set.min_reps;
                    o.target_permille = set.target_permille;
                    o.budget_ms = set.budget_ms;
                    o.pace = joined(set.pace, ",");
                    if (!set.pace_footprint.empty()) o.pace_footprint = set.pace_footprint;
                    o.pace_rounds = set.pace_rounds;
                    o.neighbour = set.neighbour;
                    o.slice_ms = set.slice_ms;
                    o.neighbour_bytes = set.neighbour_bytes;
                    o.skip = skip;
                    o.vcpu_cpu = place.cpu;
                    o.migrate_ms = place.migrate_ms;
                    o.dirty_mask = place.dirty_mask;
                    if (placements.size() > 1) o.variant = place.name;  // keeps benchmark names unique
                    o.cell_timeout = cell_timeout;
                    o.machine = machine;
                    o.mem_mib = mem_mib;
                    o.vfio = vfio;
                    o.vfio_baseline = vfio_baseline;
                    o.vfio_pci = vfio_pci;
                    r.counters = counters;
                    runs.push_back(std::move(r));
                }
    return runs;
}

std::vector<std::string> MatrixRun::cli_args() const { return run_option_args(options); }

}  // namespace fb
