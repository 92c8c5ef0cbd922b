// Fleet comparison (fleet.h): hosts read, grouped by their probe and mode evidence, and compared
// cell by cell against a baseline. Longer than most files (about 600 lines) because the grouping
// facets, the per-cell ratio with its interval and the table are one comparison, read together.
#include "host/results/fleet.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <tuple>

#include <fmt/format.h>

#include "common/patterns.h"
#include "host/results/results.h"
#include "host/results/statistics.h"

namespace fb {
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The files fleet/site.yml fetches into each host's directory.
constexpr const char* kHostFiles[] = {"results.json", "probe.json", "status.json"};

json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// The file's JSON; null when it is absent; `damage` says why it could not be used.
json read_json(const fs::path& p, std::string& damage) {
    std::error_code ec;
    if (!fs::exists(p, ec)) return nullptr;
    std::ifstream in(p);
    json j = json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        damage = fmt::format("{} is not a JSON object (damaged, or cut short)", p.filename().string());
        return nullptr;
    }
    return j;
}

const json& at_path(const json& j, std::initializer_list<const char*> keys) {
    static const json null_json;
    const json* cur = &j;
    for (const char* k : keys) {
        if (!cur->is_object() || !cur->contains(k)) return null_json;
        cur = &(*cur)[k];
    }
    return *cur;
}

std::string text(const json& j) { return j.is_string() ? j.get<std::string>() : std::string(); }

const json& probe_capability(const json& probe, const std::string& name) {
    static const json null_json;
    const json& caps = at_path(probe, {"capabilities"});
    if (caps.is_array())
        for (const auto& c : caps)
            if (c.is_object() && c.value("name", "") == name) return c;
    return null_json;
}

bool contains(const std::string& s, const char* what) { return s.find(what) != std::string::npos; }

// The KVM and VFIO changes host/env/regime.h describes: group coherency from the container before
// 6.2, device-assignment mode on any VFIO file before 6.17.
std::string kernel_range(const std::string& release) {
    int major = 0, minor = 0;
    if (std::sscanf(release.c_str(), "%d.%d", &major, &minor) != 2) return "linux-unknown";
    if (major < 6 || (major == 6 && minor < 2)) return "linux<6.2";
    if (major == 6 && minor < 17) return "linux6.2-6.16";
    return "linux6.17+";
}

int snoop_rank(const std::string& s) {
    if (s == "snoop-control") return 0;
    if (s == "no-snoop-control") return 1;
    if (s == "no-iommu") return 2;
    return 3;
}

int kernel_rank(const std::string& k) {
    if (k == "linux<6.2") return 0;
    if (k == "linux6.2-6.16") return 1;
    if (k == "linux6.17+") return 2;
    return 3;
}

using FacetKey = std::tuple<int, int, std::string, std::string, std::string, std::string>;
FacetKey facet_key(const HostFacets& f) { return {snoop_rank(f.snoop), kernel_rank(f.kernel), f.snoop, f.kernel, f.cpu, f.kvm}; }
std::string group_name(const HostFacets& f) { return fmt::format("{} | {} | {} | {}", f.snoop, f.kernel, f.cpu, f.kvm); }

// One host's cells of one row, pooled (the coherent phases of an A/B/A run are one population).
struct Series {
    std::vector<double> net;
    std::vector<std::string> statuses, reasons;
    std::string unit;
    double floor = std::numeric_limits<double>::quiet_NaN();  // the largest timing floor of its boots
};

void add_floor(Series& s, double floor) {
    if (std::isfinite(floor) && !(floor <= s.floor)) s.floor = floor;
}

std::string pooled_status(const Series& s) {
    for (const auto& st : s.statuses)
        if (st != "ok") return st;
    return "ok";
}

using RowKey = std::tuple<std::string, uint64_t, std::string, std::string>;  // pattern, footprint, backend, mode

bool row_less(const RowKey& a, const RowKey& b) {
    auto rank = [](const std::string& name) {
        const Pattern* p = find_pattern(name.c_str());
        return p ? size_t(p - kPatterns) : kPatternCount;
    };
    return std::make_tuple(rank(std::get<0>(a)), a) < std::make_tuple(rank(std::get<0>(b)), b);
}

// Without a baseline cell in a mode (a host with snoop control has no noncoherent cells), the
// comparison that matters is against the baseline's coherent cell: what losing snoop control costs.
std::string fallback_mode(const std::string& mode) {
    return mode.rfind("noncoherent", 0) == 0 ? "coherent" + mode.substr(11) : std::string();
}

// A median as the table shows it: "below floor (±X)" where it cannot be told from zero.
std::string median_label(const json& x) {
    if (x.value("below_floor", false)) return fmt::format("below floor (±{})", cycles_label(x.value("resolution_cycles", json(nullptr))));
    return cycles_label(x.value("median", json(nullptr)));
}

std::string join(const std::vector<std::string>& v, const char* sep) { return fmt::format("{}", fmt::join(v, sep)); }

}  // namespace

HostFacets host_facets(const json& results, const json& probe) {
    HostFacets f;
    const json& fbctx = at_path(results, {"context", "flushbench"});
    const json& fp = at_path(fbctx, {"host"});

    // Snoop control: the kernel's own word in the results first (host/evidence/mode_evidence.h),
    // then what the probe found.
    size_t noncoherent_confirmed = 0, coherent_file_confirmed = 0;
    std::set<std::string> sources;
    const json& cells = at_path(results, {"flushbench_cells"});
    if (cells.is_array())
        for (const auto& c : cells) {
            if (!c.is_object()) continue;
            const json& ev = at_path(c, {"mode_evidence"});
            if (text(at_path(ev, {"verdict"})) != "confirmed") continue;
            std::string mode = text(at_path(c, {"mode"})), source = text(at_path(ev, {"source"}));
            if (mode.rfind("noncoherent", 0) == 0) ++noncoherent_confirmed, sources.insert(source);
            // A coherent phase confirmed by the file's own IOMMU: the file's devices have snoop control.
            else if (mode.rfind("coherent", 0) == 0 && (contains(source, "vfio-container") || contains(source, "iommufd-hw-info")))
                ++coherent_file_confirmed, sources.insert(source);
        }
    const json& regime = probe.is_object() && probe.contains("regime") ? probe["regime"] : at_path(fbctx, {"regime"});
    const json& iommu = probe_capability(probe, "iommu_snoop_control");
    if (noncoherent_confirmed) {
        f.snoop = "no-snoop-control";
        f.snoop_evidence = fmt::format("mode evidence: KVM ran the guest's WBINVDs for real ({} noncoherent cells confirmed by {})",
                                       noncoherent_confirmed, join({sources.begin(), sources.end()}, ", "));
    } else if (coherent_file_confirmed) {
        f.snoop = "snoop-control";
        f.snoop_evidence = fmt::format("mode evidence: the attached VFIO file's IOMMU enforces coherency ({} coherent cells confirmed by {})",
                                       coherent_file_confirmed, join({sources.begin(), sources.end()}, ", "));
    } else if (at_path(regime, {"wbinvd", "noncoherent_reachable"}) == json(true)) {
        const json& files = at_path(regime, {"wbinvd", "files"});
        f.snoop = "no-snoop-control";
        f.snoop_evidence = fmt::format("probe: a VFIO file without snoop control is reachable ({}), but no noncoherent cell was run",
                                       files.is_array() && !files.empty() ? text(at_path(files[0], {"path"})) : "regime.wbinvd");
    } else if (iommu.is_object()) {
        std::string detail = text(at_path(iommu, {"detail"}));
        if (at_path(iommu, {"available"}) != json(true)) f.snoop = "no-iommu";
        else if (contains(detail, "SC=0") || contains(detail, "(non-coherent)")) f.snoop = "no-snoop-control";
        else if (contains(detail, "SC=1") || contains(detail, "always coherent")) f.snoop = "snoop-control";
        else f.snoop = "snoop-unknown";
        f.snoop_evidence = "probe iommu_snoop_control: " + detail;
    } else {
        f.snoop = "snoop-unknown";
        f.snoop_evidence = "no probe.json, and no cell whose mode evidence names the IOMMU";
    }

    // Kernel: the fingerprint's "release version", else the probe's regime.
    std::string release = text(at_path(fp, {"kernel"}));
    if (release.empty()) release = text(at_path(regime, {"kernel", "release"}));
    f.kernel_release = release.substr(0, release.find(' '));
    f.kernel = kernel_range(f.kernel_release);

    std::string vendor = text(at_path(fp, {"cpu_vendor"})), model = text(at_path(fp, {"cpu_model"}));
    if (vendor.empty() && model.empty()) {  // the probe's cpu line: "<model name>, <vendor> family ..., ..."
        std::string detail = text(at_path(probe_capability(probe, "cpu"), {"detail"}));
        size_t comma = detail.find(", ");
        model = detail.substr(0, comma);
        if (comma != std::string::npos) vendor = detail.substr(comma + 2, detail.find(' ', comma + 2) - comma - 2);
    }
    f.cpu = vendor.empty() ? model : model.empty() ? vendor : vendor + " " + model;
    if (f.cpu.empty()) f.cpu = "cpu-unknown";

    f.kvm = text(at_path(fp, {"kvm_flavour"}));
    if (f.kvm.empty()) f.kvm = text(at_path(fbctx, {"kvm_flavour"}));
    if (f.kvm.empty()) {  // the probe's kvm line: "... flavour=kvm_pvm (...)"
        std::string detail = text(at_path(probe_capability(probe, "kvm"), {"detail"}));
        if (size_t at = detail.find("flavour="); at != std::string::npos) {
            std::string rest = detail.substr(at + 8);
            f.kvm = rest.substr(0, rest.find_first_of(" ,;("));
        }
    }
    if (f.kvm.empty()) f.kvm = "kvm-unknown";
    return f;
}

Fleet load_fleet(const std::string& dir) {
    Fleet fleet;
    fleet.dir = dir;
    std::string damage;
    fleet.record = read_json(fs::path(dir) / "fleet.json", damage);
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
        std::string name = e.path().filename().string();
        if (!e.is_directory() || name.empty() || name[0] == '.') continue;  // .ship: the tarballs
        bool is_host = std::any_of(std::begin(kHostFiles), std::end(kHostFiles), [&](const char* f) { return fs::exists(e.path() / f); });
        if (!is_host) continue;
        FleetHost h;
        h.name = name;
        std::string results_damage, probe_damage, status_damage;
        h.results = read_json(e.path() / "results.json", results_damage);
        h.probe = read_json(e.path() / "probe.json", probe_damage);
        h.status = read_json(e.path() / "status.json", status_damage);
        if (h.results.is_object() && !h.results.contains("flushbench_cells")) {
            results_damage = "results.json is not a flushbench results file (no flushbench_cells)";
            h.results = nullptr;
        }
        if (!results_damage.empty()) h.unavailable = results_damage;
        else if (h.results.is_null()) {
            std::string state = text(at_path(h.status, {"state"})), reason = text(at_path(h.status, {"reason"}));
            h.unavailable = state.empty() ? "no results.json (and no status.json saying why)"
                                          : fmt::format("{} at {}{}", state, text(at_path(h.status, {"stage"})), reason.empty() ? "" : ": " + reason);
        }
        h.facets = host_facets(h.results, h.probe);
        fleet.hosts.push_back(std::move(h));
    }
    if (ec) throw FleetInputError(fmt::format("cannot read {}: {}", dir, ec.message()));
    if (fleet.hosts.empty())
        throw FleetInputError(fmt::format("{} holds no host directories (<host>/results.json, probe.json or status.json): pass a fleet "
                                          "run's directory, results/fleet/<run>, as fleet/site.yml writes it",
                                          dir));
    std::sort(fleet.hosts.begin(), fleet.hosts.end(), [](const FleetHost& a, const FleetHost& b) { return a.name < b.name; });
    return fleet;
}

json compare_fleet(const Fleet& fleet, const std::string& baseline, double alpha) {
    // Groups: hosts with the same four facets, in facet order (snoop control first).
    std::map<FacetKey, std::vector<const FleetHost*>> by_facets;
    for (const auto& h : fleet.hosts)
        if (!h.results.is_null() || !h.probe.is_null()) by_facets[facet_key(h.facets)].push_back(&h);
    json groups = json::array();
    std::map<std::string, std::string> group_of;  // host -> group id
    for (const auto& [key, members] : by_facets) {
        const HostFacets& f = members.front()->facets;
        std::string id = fmt::format("G{}", groups.size() + 1);
        std::set<std::string> kernels, evidence;
        json names = json::array();
        for (const auto* h : members) {
            group_of[h->name] = id;
            names.push_back(h->name);
            if (!h->facets.kernel_release.empty()) kernels.insert(h->facets.kernel_release);
            evidence.insert(h->facets.snoop_evidence);
        }
        groups.push_back({{"id", id}, {"name", group_name(f)},
                          {"facets", {{"snoop", f.snoop}, {"kernel", f.kernel}, {"cpu", f.cpu}, {"kvm", f.kvm}}},
                          {"snoop_evidence", json(std::vector<std::string>(evidence.begin(), evidence.end()))},
                          {"kernels", json(std::vector<std::string>(kernels.begin(), kernels.end()))}, {"hosts", names}});
    }

    // Hosts with results, in group order: the table's columns.
    std::vector<const FleetHost*> columns;
    for (const auto& g : groups)
        for (const auto& name : g["hosts"])
            for (const auto& h : fleet.hosts)
                if (h.name == name && !h.results.is_null()) columns.push_back(&h);

    // The baseline: a host, a group, or the hosts sharing a facet value.
    json base = nullptr;
    std::set<std::string> base_hosts;
    auto with_results = [&](const json& names) {
        std::set<std::string> out;
        for (const auto& n : names)
            for (const auto* c : columns)
                if (c->name == n) out.insert(c->name);
        return out;
    };
    if (baseline.empty()) {
        std::vector<const json*> groups_with_results;
        for (const auto& g : groups)
            if (!with_results(g["hosts"]).empty()) groups_with_results.push_back(&g);
        if (groups_with_results.size() > 1) {
            base = {{"name", (*groups_with_results.front())["id"]}, {"kind", "group"}};
            base_hosts = with_results((*groups_with_results.front())["hosts"]);
        } else if (!columns.empty()) {
            base = {{"name", columns.front()->name}, {"kind", "host"}};
            base_hosts = {columns.front()->name};
        }
    } else {
        auto host = std::find_if(fleet.hosts.begin(), fleet.hosts.end(), [&](const FleetHost& h) { return h.name == baseline; });
        if (host != fleet.hosts.end()) {
            if (host->results.is_null())
                throw FleetInputError(fmt::format("--baseline {}: that host has no results ({}): choose another host or a group", baseline, host->unavailable));
            base = {{"name", baseline}, {"kind", "host"}};
            base_hosts = {baseline};
        }
        for (const auto& g : groups)
            if (base.is_null() && (g["id"] == baseline || g["name"] == baseline || fmt::format("g{}", g["id"].get<std::string>().substr(1)) == baseline)) {
                base_hosts = with_results(g["hosts"]);
                base = {{"name", g["id"]}, {"kind", "group"}};
            }
        if (base.is_null()) {
            for (const auto* c : columns) {
                const HostFacets& f = c->facets;
                if (f.snoop == baseline || f.kernel == baseline || f.cpu == baseline || f.kvm == baseline) base_hosts.insert(c->name);
            }
            if (!base_hosts.empty()) base = {{"name", baseline}, {"kind", "facet"}};
        }
        if (base_hosts.empty()) {
            std::vector<std::string> hosts, group_ids;
            std::set<std::string> facets;
            for (const auto* c : columns) {
                hosts.push_back(c->name);
                facets.insert({c->facets.snoop, c->facets.kernel, c->facets.kvm});
            }
            for (const auto& g : groups)
                if (!with_results(g["hosts"]).empty()) group_ids.push_back(g["id"].get<std::string>());
            throw FleetInputError(fmt::format("--baseline {}: no host with results, group or facet of {} has that name; choose a host ({}), a group ({}) "
                                              "or a facet ({})",
                                              baseline, fleet.dir, hosts.empty() ? "none has results" : join(hosts, ", "),
                                              group_ids.empty() ? "none" : join(group_ids, ", "),
                                              facets.empty() ? "none" : join({facets.begin(), facets.end()}, ", ")));
        }
    }
    if (!base.is_null()) base["hosts"] = std::vector<std::string>(base_hosts.begin(), base_hosts.end());

    // Every host's cells, pooled per (pattern, footprint, backend, mode).
    std::map<RowKey, std::map<std::string, Series>> rows;
    json hosts = json::array();
    for (const auto& h : fleet.hosts) {
        json jh = {{"name", h.name}, {"group", group_of.count(h.name) ? json(group_of[h.name]) : json(nullptr)},
                   {"state", at_path(h.status, {"state"})}, {"stage", at_path(h.status, {"stage"})},
                   {"reason", at_path(h.status, {"reason"})}, {"exit_code", at_path(h.status, {"exit_code"})},
                   {"resumed", at_path(h.status, {"resumed"})},
                   {"results", h.results.is_null() ? json(nullptr) : json((fs::path(fleet.dir) / h.name / "results.json").string())},
                   {"unavailable", h.unavailable.empty() ? json(nullptr) : json(h.unavailable)}};
        if (!h.results.is_null()) {
            const json& fbctx = at_path(h.results, {"context", "flushbench"});
            std::map<std::string, int> statuses, verdicts;
            bool emulated = at_path(fbctx, {"emulated"}) == json(true);
            size_t n = 0;
            for (const auto& cj : h.results["flushbench_cells"]) {
                Cell c;
                try {
                    c = cell_from_json(cj);
                } catch (const std::exception&) {
                    jh["damaged_cells"] = jh.value("damaged_cells", 0) + 1;
                    continue;
                }
                ++n;
                ++statuses[to_string(c.status)];
                ++verdicts[cj.is_object() && cj.contains("mode_evidence") ? text(at_path(cj, {"mode_evidence", "verdict"})) : "none"];
                emulated = emulated || c.emulated;
                Series& s = rows[{c.label(), c.footprint_bytes, c.backend, c.mode}][h.name];
                auto net = net_cycles(c);
                s.net.insert(s.net.end(), net.begin(), net.end());
                s.statuses.push_back(to_string(c.status));
                if (!c.reason.empty()) s.reasons.push_back(c.reason);
                if (s.unit.empty()) s.unit = c.unit;
                add_floor(s, c.floor_cycles);
            }
            jh.update({{"cells", n}, {"statuses", statuses}, {"verdicts", verdicts}, {"emulated", emulated},
                       {"commit", at_path(fbctx, {"git_commit"})}, {"fingerprint", at_path(fbctx, {"host"})}});
        }
        hosts.push_back(jh);
    }

    std::vector<RowKey> keys;
    for (const auto& [k, v] : rows) keys.push_back(k);
    std::sort(keys.begin(), keys.end(), row_less);
    json jrows = json::array();
    for (const auto& key : keys) {
        const auto& [pattern, footprint, backend, mode] = key;
        const auto& series = rows[key];
        // The baseline's pooled samples in this mode, else in its coherent counterpart.
        Series pooled;
        std::string base_mode;
        std::vector<std::string> pooled_from;
        for (const std::string& m : {mode, fallback_mode(mode)}) {
            if (m.empty() || !pooled_from.empty()) continue;
            auto it = rows.find({pattern, footprint, backend, m});
            if (it == rows.end()) continue;
            for (const auto& [host, s] : it->second)
                if (base_hosts.count(host) && !s.net.empty()) {
                    pooled.net.insert(pooled.net.end(), s.net.begin(), s.net.end());
                    add_floor(pooled, s.floor);
                    pooled_from.push_back(host);
                }
            if (!pooled_from.empty()) base_mode = m;
        }
        json row = {{"pattern", pattern}, {"footprint_bytes", footprint}, {"backend", backend}, {"mode", mode}, {"baseline", nullptr},
                    {"cells", json::array()}};
        bool base_below_floor = false;
        if (!pooled_from.empty()) {
            Summary sum = summarize(pooled.net);
            CostReading r = read_cost(sum, pooled.floor);
            base_below_floor = r.below_floor;
            row["baseline"] = {{"mode", base_mode}, {"n", pooled.net.size()}, {"median", num(sum.median)},
                               {"median_ci", {num(sum.median_ci.lo), num(sum.median_ci.hi)}}, {"below_floor", r.below_floor},
                               {"resolution_cycles", num(r.bound)}, {"hosts", pooled_from}};
        }
        for (const auto* col : columns) {
            auto it = series.find(col->name);
            if (it == series.end()) continue;
            const Series& s = it->second;
            if (!row.contains("unit") && !s.unit.empty()) row["unit"] = s.unit;
            json cell = {{"host", col->name}, {"status", pooled_status(s)}, {"n", s.net.size()}, {"in_baseline", base_hosts.count(col->name) > 0}};
            if (!s.reasons.empty()) cell["reason"] = s.reasons.front();
            bool below_floor = false;
            if (!s.net.empty()) {
                Summary sum = summarize(s.net);
                CostReading r = read_cost(sum, s.floor);
                below_floor = r.below_floor;
                cell["median"] = num(sum.median);
                cell["median_ci"] = {num(sum.median_ci.lo), num(sum.median_ci.hi)};
                cell["below_floor"] = r.below_floor;
                cell["resolution_cycles"] = num(r.bound);
            }
            if (base_mode != mode && !pooled_from.empty()) cell["baseline_mode"] = base_mode;
            if (base_hosts.count(col->name)) {
                // A baseline host is the reference, not compared with itself.
            } else if (pooled_from.empty()) {
                cell["note"] = "no baseline cell at this pattern, footprint and backend";
            } else if (below_floor || base_below_floor) {
                // A cost that cannot be told from zero has no ratio (statistics.h, read_cost).
                cell["note"] = fmt::format("not compared: {} below this host's timing floor", below_floor ? "this cell is" : "the baseline is");
            } else if (!s.net.empty()) {
                json cmp = compare_samples(s.net, pooled.net, alpha);
                cmp.erase("u");
                cmp.erase("n");  // the cell's own n stays; the baseline's is in the row
                cell.update(cmp);
            }
            row["cells"].push_back(cell);
        }
        jrows.push_back(row);
    }

    json out = {{"fleet", fleet.dir}, {"run", at_path(fleet.record, {"run"})}, {"commit", at_path(fleet.record, {"commit"})},
                {"ship", at_path(fleet.record, {"ship"})}, {"alpha", alpha},
                {"statistic", "median of net TSC cycles per repetition; ratio = host / baseline, a group's repetitions pooled"},
                {"test", "Mann-Whitney U, two-sided"},
                {"bootstrap", {{"method", "percentile"}, {"resamples", kBootstrapResamples}, {"seed", kBootstrapSeed}, {"level", kConfidence}}},
                {"baseline", base}, {"groups", groups}, {"hosts", hosts}, {"rows", jrows}};
    return out;
}

std::string format_fleet_table(const json& cmp) {
    std::string out;
    const json& hosts = cmp.at("hosts");
    size_t with_results = size_t(std::count_if(hosts.begin(), hosts.end(), [](const json& h) { return h["results"].is_string(); }));
    out += fmt::format("fleet {}: {} hosts, {} with results", cmp.value("fleet", std::string()), hosts.size(), with_results);
    if (cmp["commit"].is_string()) out += fmt::format("; commit {} shipped as {}", cmp["commit"].get<std::string>().substr(0, 12), text(cmp["ship"]));
    out += "\n";
    const json& base = cmp.at("baseline");
    if (base.is_object())
        out += fmt::format("baseline: {} {} ({}); choose with --baseline HOST|GROUP|FACET\n", text(base["kind"]), text(base["name"]),
                           join(base["hosts"].get<std::vector<std::string>>(), ", "));

    out += "\ngroups (what each host's probe and mode evidence say):\n";
    for (const auto& g : cmp.at("groups")) {
        out += fmt::format("  {}  {}: {}\n", text(g["id"]), text(g["name"]), join(g["hosts"].get<std::vector<std::string>>(), ", "));
        for (const auto& why : g["snoop_evidence"]) out += fmt::format("      snoop control: {}\n", text(why));
        if (!g["kernels"].empty()) out += fmt::format("      kernels: {}\n", join(g["kernels"].get<std::vector<std::string>>(), ", "));
    }

    size_t w = 4;
    for (const auto& h : hosts) w = std::max(w, text(h["name"]).size());
    out += "\nhosts:\n";
    for (const auto& h : hosts) {
        std::string what;
        if (h["results"].is_string()) {
            std::vector<std::string> parts;
            for (const auto& [st, n] : h["statuses"].items()) parts.push_back(fmt::format("{} {}", n.get<int>(), st));
            std::vector<std::string> ev;
            for (const auto& [v, n] : h["verdicts"].items()) ev.push_back(fmt::format("{} {}", n.get<int>(), v));
            what = fmt::format("{} cells ({}); mode evidence: {}", h["cells"].get<size_t>(), join(parts, ", "), join(ev, ", "));
            if (h.value("emulated", false)) what += "; EMULATED (TCG): timings are functional only";
            std::string state = text(h["state"]);
            if (!state.empty() && state != "ok" && state != "skipped") what += fmt::format("; {}: {}", state, text(h["reason"]));
            if (h["resumed"] == json(true)) what += "; resumed its journal";
        } else {
            what = "no results: " + text(h["unavailable"]);
        }
        out += fmt::format("  {:<{}}  {:<3}  {}\n", text(h["name"]), w, h["group"].is_string() ? text(h["group"]) : "-", what);
    }

    // The table: one column per host with results, in group order.
    std::vector<std::string> columns;
    std::map<std::string, std::string> header;
    for (const auto& g : cmp.at("groups"))
        for (const auto& n : g["hosts"])
            for (const auto& h : hosts)
                if (h["name"] == n && h["results"].is_string()) {
                    columns.push_back(n.get<std::string>());
                    header[n] = fmt::format("{} [{}]{}", text(n), text(g["id"]), h.value("emulated", false) ? " emulated" : "");
                }
    if (columns.empty() || cmp.at("rows").empty()) {
        out += "\n(no host has results to compare)\n";
        return out;
    }
    bool group_base = base.is_object() && text(base["kind"]) != "host";
    std::vector<std::vector<std::string>> table;
    std::vector<std::string> head = {"pattern", "bytes", "backend/mode"};
    if (group_base) head.push_back(fmt::format("baseline {}", text(base["name"])));
    for (const auto& c : columns) head.push_back(header[c]);
    table.push_back(head);
    bool fell_back = false;
    size_t shown = 0, significant = 0;
    for (const auto& row : cmp.at("rows")) {
        std::vector<std::string> line = {text(row["pattern"]), footprint_label(row["footprint_bytes"].get<uint64_t>()),
                                         text(row["backend"]) + "/" + text(row["mode"])};
        if (group_base) {
            const json& b = row["baseline"];
            line.push_back(b.is_object() ? median_label(b) + (text(b["mode"]) != text(row["mode"]) ? " (" + text(b["mode"]) + ")" : "") : "-");
        }
        for (const auto& c : columns) {
            const json* cell = nullptr;
            for (const auto& x : row["cells"])
                if (x["host"] == c) cell = &x;
            if (!cell) {
                line.push_back("");
                continue;
            }
            const json& x = *cell;
            std::string s = x.contains("median") ? median_label(x) : text(x["status"]);
            if (x.contains("median") && text(x["status"]) != "ok") s += " " + text(x["status"]);
            if (x.value("in_baseline", false)) s += group_base ? " (in baseline)" : " (baseline)";
            else if (x.contains("ratio")) {
                std::string ci = x["ratio_ci"][0].is_number() && x["ratio_ci"][1].is_number()
                                     ? fmt::format(" [{:.2f}, {:.2f}]", x["ratio_ci"][0].get<double>(), x["ratio_ci"][1].get<double>())
                                     : "";
                s += x["ratio"].is_number() ? fmt::format(" x{:.3f}{}", x["ratio"].get<double>(), ci) : " x-";
                if (x.value("significant", false)) s += "*", ++significant;
                ++shown;
                if (x.contains("baseline_mode")) s += "+", fell_back = true;
            } else if (x.contains("median") && x.contains("note") && !x.value("below_floor", false)) {
                s += row["baseline"].value("below_floor", false) ? " (baseline below floor)" : " (not compared)";
            }
            line.push_back(s);
        }
        table.push_back(line);
    }
    std::vector<size_t> width(table.front().size(), 0);
    for (const auto& l : table)
        for (size_t i = 0; i < l.size(); ++i) width[i] = std::max(width[i], l[i].size());
    out += "\n";
    for (const auto& l : table) {
        std::string text_line;
        for (size_t i = 0; i < l.size(); ++i)  // bytes right-aligned, as numbers
            text_line += i == 1 ? fmt::format("{:>{}}  ", l[i], width[i]) : fmt::format("{:<{}}  ", l[i], width[i]);
        while (!text_line.empty() && text_line.back() == ' ') text_line.pop_back();
        out += text_line + "\n";
    }
    out += fmt::format("\nmedians: net TSC cycles per repetition; xR [lo, hi] = host median / baseline median and its 95% bootstrap interval; "
                       "* Mann-Whitney U p < {}; {} of {} comparisons significant\n",
                       cmp.value("alpha", kSignificance), significant, shown);
    if (group_base) out += "a group's baseline pools the repetitions of its hosts\n";
    if (fell_back) out += "+ against the baseline's coherent cell: the baseline has no cell in this mode (e.g. it has snoop control)\n";
    return out;
}

}  // namespace fb
