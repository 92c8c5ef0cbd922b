// perf_event counters by libpfm4 name (perf_counters.h): encoding, guest/host splits, groups and
// their reads with scaling and the reason when unavailable. About 540 lines: encoding and reading
// share the per-PMU quirks, which are clearer side by side than split across files.
#include "host/counters/perf_counters.h"

#include <perfmon/pfmlib_perf_event.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <stdexcept>

#include <fmt/format.h>

namespace fb {

namespace {

namespace fs = std::filesystem;

void pfm_init() {
    static std::once_flag once;
    static int rc = PFM_SUCCESS;
    std::call_once(once, [] { rc = pfm_initialize(); });
    if (rc != PFM_SUCCESS) throw std::runtime_error(fmt::format("libpfm4: pfm_initialize: {}", pfm_strerror(rc)));
}

std::string upper(std::string s) {
    for (char& c : s) c = char(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

std::string lower(std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> row(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            size_t up = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diag = up;
        }
    }
    return row[b.size()];
}

struct PfmPmu {
    pfm_pmu_t id;
    std::string name;
};

std::vector<PfmPmu> present_pmus() {
    std::vector<PfmPmu> out;
    for (int i = PFM_PMU_NONE; i < PFM_PMU_MAX; ++i) {  // pfm_for_all_pmus() is C: enum++
        pfm_pmu_info_t info{};
        info.size = sizeof info;
        auto p = static_cast<pfm_pmu_t>(i);
        if (pfm_get_pmu_info(p, &info) == PFM_SUCCESS && info.is_present) out.push_back({p, info.name});
    }
    return out;
}

// What a user could have meant: perf's generic names (libpfm4's "perf" PMU aliases, shown lowercase
// as perf prints them) and, for each CPU PMU libpfm4 detected, EVENT and EVENT.UMASK.
const std::vector<std::string>& known_event_names() {
    static std::vector<std::string> names;
    static std::once_flag once;
    std::call_once(once, [] {
        for (const auto& pmu : present_pmus()) {
            pfm_pmu_info_t info{};
            info.size = sizeof info;
            if (pfm_get_pmu_info(pmu.id, &info) != PFM_SUCCESS) continue;
            bool generic = pmu.name == "perf" || pmu.name == "perf_raw";
            for (int e = info.first_event; e != -1; e = pfm_get_event_next(e)) {
                pfm_event_info_t ev{};
                ev.size = sizeof ev;
                if (pfm_get_event_info(e, PFM_OS_NONE, &ev) != PFM_SUCCESS) continue;
                std::string n = ev.name;
                if (generic) {
                    if (n.rfind("PERF_COUNT_", 0) != 0) names.push_back(lower(n));
                    continue;
                }
                names.push_back(n);
                for (int a = 0; a < ev.nattrs; ++a) {
                    pfm_event_attr_info_t at{};
                    at.size = sizeof at;
                    if (pfm_get_event_attr_info(e, a, PFM_OS_NONE, &at) == PFM_SUCCESS && at.type == PFM_ATTR_UMASK)
                        names.push_back(n + "." + at.name);
                }
            }
        }
        std::sort(names.begin(), names.end());
        names.erase(std::unique(names.begin(), names.end()), names.end());
    });
    return names;
}

std::vector<std::string> near_matches(const std::string& name, size_t max) {
    // Compare the event part only: no "pmu::" prefix, no ":modifier" suffix.
    std::string q = name;
    if (auto p = q.find("::"); p != std::string::npos) q = q.substr(p + 2);
    if (auto p = q.find(':'); p != std::string::npos) q = q.substr(0, p);
    q = upper(q);
    std::vector<std::pair<size_t, std::string>> scored;
    for (const auto& cand : known_event_names()) scored.push_back({edit_distance(q, upper(cand)), cand});
    std::sort(scored.begin(), scored.end());
    std::vector<std::string> out;
    size_t limit = std::max<size_t>(3, q.size() / 2);  // beyond this a "match" only adds noise
    for (const auto& [d, cand] : scored) {
        if (out.size() == max || d > limit) break;
        out.push_back(cand);
    }
    return out;
}

// The kernel PMU an encoded event lands on: one perf_event group per PMU.
std::string kernel_pmu(uint32_t type) {
    switch (type) {
        case PERF_TYPE_HARDWARE:
        case PERF_TYPE_HW_CACHE:
        case PERF_TYPE_RAW:
            return "cpu";
        case PERF_TYPE_SOFTWARE:
            return "software";
        case PERF_TYPE_TRACEPOINT:
            return "tracepoint";
        case PERF_TYPE_BREAKPOINT:
            return "breakpoint";
        default:
            break;
    }
    std::error_code ec;
    for (const auto& d : fs::directory_iterator("/sys/bus/event_source/devices", ec)) {
        std::ifstream in(d.path() / "type");
        uint32_t t = 0;
        if (in >> t && t == type) return d.path().filename().string();
    }
    return fmt::format("type{}", type);
}

std::vector<std::string> sysfs_pmus() {
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& d : fs::directory_iterator("/sys/bus/event_source/devices", ec))
        out.push_back(d.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

bool cpu_pmu_exposed() {
    for (const auto& s : sysfs_pmus())
        if (s == "cpu" || s.rfind("cpu_", 0) == 0 || s.rfind("armv8", 0) == 0) return true;
    return false;
}

std::string paranoid() {
    std::ifstream in("/proc/sys/kernel/perf_event_paranoid");
    std::string v;
    return in >> v ? v : "?";
}

std::string join(const std::vector<std::string>& v, const char* sep) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
    return s;
}

// "perf_event_open: <strerror> (<what to do>)": the reason a counter has no value.
std::string open_error(int err, const EventEncoding& enc, Split split, pid_t tid) {
    std::string fix;
    bool hw = enc.pmu != "software" && enc.pmu != "tracepoint";
    switch (err) {
        case EACCES:
        case EPERM:
            fix = fmt::format(
                "perf_event_paranoid={}: run as root, grant CAP_PERFMON, or sysctl "
                "kernel.perf_event_paranoid=1 (kernel and guest mode need <= 1)",
                paranoid());
            break;
        case ENOENT:
        case EOPNOTSUPP:
        case ENODEV:
            if (hw && !cpu_pmu_exposed())
                fix = fmt::format(
                    "no hardware PMU exposed: /sys/bus/event_source/devices has only {}; run on bare "
                    "metal or give the VM a vPMU (QEMU -cpu host,pmu=on; libvirt <pmu state='on'/>)",
                    join(sysfs_pmus(), ", "));
            else if (split != Split::all && err == EOPNOTSUPP)
                fix =
                    "this PMU cannot count guest and host mode apart (exclude_guest/exclude_host): count without the "
                    "split";
            else
                fix = fmt::format("the {} PMU does not take this encoding ({}): check `perf list`", enc.pmu,
                                  enc.pfm_name);
            break;
        case EINVAL:
            fix = split != Split::all ? "the PMU refused the attributes: some PMUs cannot split guest and host mode, "
                                        "count without the split"
                                      : fmt::format("the {} PMU refused the encoding ({})", enc.pmu, enc.pfm_name);
            break;
        case ESRCH:
            fix = fmt::format("thread {} does not exist (any more)", tid);
            break;
        case EMFILE:
            fix = "too many open files: raise ulimit -n";
            break;
        case EBUSY:
            fix =
                "the counter is held exclusively (another perf or PCM session; the NMI watchdog: sysctl "
                "kernel.nmi_watchdog=0)";
            break;
        default:
            fix = "see perf_event_open(2)";
            break;
    }
    return fmt::format("perf_event_open: {} ({})", std::strerror(err), fix);
}

std::string unit_of(const perf_event_attr& a) {
    bool clock =
        a.type == PERF_TYPE_SOFTWARE && (a.config == PERF_COUNT_SW_TASK_CLOCK || a.config == PERF_COUNT_SW_CPU_CLOCK);
    return clock ? "ns" : "count";
}

std::string source_of(const EventEncoding& enc, Split split) {
    std::string s = fmt::format("perf_event {} ({}", enc.pmu, enc.pfm_name);
    if (enc.pmu == "software" && split != Split::all)
        s += ", not split: the kernel counts software events in guest and host mode alike";
    else if (split == Split::guest_only)
        s += ", guest mode only";
    else if (split == Split::host_only)
        s += ", host mode only";
    return s + ")";
}

}  // namespace

const char* to_string(Split split) {
    switch (split) {
        case Split::all:
            return "all";
        case Split::guest_only:
            return "guest_only";
        case Split::host_only:
            return "host_only";
    }
    return "all";
}

EventEncoding encode_event(const std::string& name, Split split) {
    pfm_init();
    EventEncoding enc;
    enc.name = name;
    std::memset(&enc.attr, 0, sizeof enc.attr);
    enc.attr.size = sizeof enc.attr;
    pfm_perf_encode_arg_t arg;
    std::memset(&arg, 0, sizeof arg);
    arg.size = sizeof arg;
    arg.attr = &enc.attr;
    char* fstr = nullptr;
    arg.fstr = &fstr;
    int rc = pfm_get_os_event_encoding(name.c_str(), PFM_PLM0 | PFM_PLM3, PFM_OS_PERF_EVENT_EXT, &arg);
    if (rc != PFM_SUCCESS) {
        auto near = near_matches(name, 5);
        std::vector<std::string> pmus;
        for (const auto& p : present_pmus()) pmus.push_back(p.name);
        throw std::invalid_argument(fmt::format(
            "unknown event \"{}\" (libpfm4: {}; it knows the PMUs {}){}; `flushbench probe` lists the events this host "
            "can count",
            name, pfm_strerror(rc), join(pmus, ", "), near.empty() ? "" : "; did you mean " + join(near, ", ")));
    }
    // fstr is "pmu::EVENT:UMASK:u=1:k=1:mg=0:mh=1": keep the name part, drop the modifier values.
    std::string full = fstr ? fstr : name;
    std::free(fstr);
    std::string canon, rest = full;
    if (auto p = full.find("::"); p != std::string::npos) {
        canon = full.substr(0, p + 2);
        rest = full.substr(p + 2);
    }
    bool first = true;
    for (size_t pos = 0; pos <= rest.size();) {
        size_t next = std::min(rest.find(':', pos), rest.size());
        std::string part = rest.substr(pos, next - pos);
        if (!part.empty() && part.find('=') == std::string::npos) {
            canon += (first ? "" : ":") + part;
            first = false;
        }
        pos = next + 1;
    }
    enc.pfm_name = canon;
    // libpfm4 defaults to mh=1 (exclude_guest): the split decides, not the library's default.
    enc.attr.exclude_guest = split == Split::host_only;
    enc.attr.exclude_host = split == Split::guest_only;
    enc.pmu = kernel_pmu(enc.attr.type);
    return enc;
}

ScaledCount scale_count(uint64_t count, uint64_t time_enabled, uint64_t time_running) {
    ScaledCount s;
    if (time_enabled == 0) {
        s.unavailable = "not counted: the counter was never enabled during the phase";
        return s;
    }
    if (time_running == 0) {
        s.unavailable =
            "not counted: the event never got a hardware counter during the phase (more events than "
            "counters, or the NMI watchdog holds one: sysctl kernel.nmi_watchdog=0)";
        return s;
    }
    s.scaling = double(time_enabled) / double(time_running);
    s.value = double(count) * s.scaling;
    return s;
}

CounterGroup CounterGroup::open(pid_t tid, const std::vector<std::string>& events, Split split) {
    CounterGroup g;
    g.tid_ = tid;
    g.split_ = split;
    std::map<std::string, int> last_leader;  // pmu -> index into leaders_ of its newest group
    for (const auto& name : events) {
        EventEncoding enc = encode_event(name, split);
        Event ev;
        ev.info.name = name;
        ev.info.unit = unit_of(enc.attr);
        ev.info.source = source_of(enc, split);
        perf_event_attr a = enc.attr;
        a.read_format =
            PERF_FORMAT_GROUP | PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING | PERF_FORMAT_ID;
        a.inherit = 0;  // the vCPU thread only, not threads it might create

        int fd = -1, err = 0;
        auto it = last_leader.find(enc.pmu);
        if (it != last_leader.end()) {
            a.disabled = 0;  // a member counts whenever its leader is enabled
            fd = perf_event_open(&a, tid, -1, g.leaders_[size_t(it->second)].fd);
            if (fd >= 0) ev.leader = it->second;
        }
        if (fd < 0) {
            // Alone: a group that would no longer fit the PMU's counters starts a new one.
            a.disabled = 1;
            fd = perf_event_open(&a, tid, -1, -1);
            if (fd < 0 && (errno == EACCES || errno == EPERM) && !a.exclude_kernel) {
                // perf_event_paranoid=2 still allows user-mode counting: a partial count, said so.
                int first = errno;
                perf_event_attr u = a;
                u.exclude_kernel = 1;
                u.exclude_hv = 1;
                fd = perf_event_open(&u, tid, -1, -1);
                if (fd >= 0)
                    ev.info.source += fmt::format(
                        " user mode only: perf_event_paranoid={} forbids kernel and guest "
                        "counting; run as root or sysctl kernel.perf_event_paranoid=1",
                        paranoid());
                else if (errno == EACCES || errno == EPERM)
                    errno = first;
                // else: the event cannot be counted at all (no PMU): that reason outranks the permission one
            }
            if (fd >= 0) {
                Leader l;
                l.fd = fd;
                l.pmu = enc.pmu;
                g.leaders_.push_back(std::move(l));
                ev.leader = int(g.leaders_.size() - 1);
                last_leader[enc.pmu] = ev.leader;
            } else {
                err = errno;
            }
        }
        if (fd < 0) {
            ev.info.unavailable = open_error(err, enc, split, tid);
        } else {
            ev.fd = UniqueFd(fd);
            if (::ioctl(fd, PERF_EVENT_IOC_ID, &ev.id) != 0) {
                ev.info.unavailable = fmt::format("PERF_EVENT_IOC_ID: {}", std::strerror(errno));
                ev.leader = -1;
            } else {
                g.leaders_[size_t(ev.leader)].members.push_back(g.events_.size());
            }
        }
        g.events_.push_back(std::move(ev));
    }
    return g;
}

CounterGroup::GroupRead CounterGroup::read_group(int fd) {
    GroupRead r;
    // PERF_FORMAT_GROUP | TOTAL_TIME_ENABLED | TOTAL_TIME_RUNNING | ID:
    // { u64 nr; u64 time_enabled; u64 time_running; { u64 value; u64 id; } cntr[nr]; }
    std::vector<uint64_t> buf(3 + 2 * 64);
    ssize_t n = ::read(fd, buf.data(), buf.size() * sizeof(uint64_t));
    if (n < 0) {
        r.error = fmt::format("read: {}", std::strerror(errno));
        return r;
    }
    if (size_t(n) < 3 * sizeof(uint64_t) || buf[0] > 64 || size_t(n) < (3 + 2 * buf[0]) * sizeof(uint64_t)) {
        r.error = fmt::format("read: short group record ({} bytes)", n);
        return r;
    }
    r.enabled = buf[1];
    r.running = buf[2];
    for (uint64_t i = 0; i < buf[0]; ++i) r.values.push_back({buf[4 + 2 * i], buf[3 + 2 * i]});
    r.ok = true;
    return r;
}

void CounterGroup::start() {
    for (auto& l : leaders_) {
        ::ioctl(l.fd, PERF_EVENT_IOC_RESET, PERF_IOC_FLAG_GROUP);
        GroupRead r = read_group(l.fd);
        l.enabled_at_start = r.ok ? r.enabled : 0;
        l.running_at_start = r.ok ? r.running : 0;
    }
    for (auto& l : leaders_) ::ioctl(l.fd, PERF_EVENT_IOC_ENABLE, 0);
}

void CounterGroup::stop() {
    for (auto& l : leaders_) ::ioctl(l.fd, PERF_EVENT_IOC_DISABLE, 0);
}

std::vector<CounterValue> CounterGroup::read() const {
    std::vector<GroupRead> reads;
    for (const auto& l : leaders_) reads.push_back(read_group(l.fd));
    std::vector<CounterValue> out;
    for (const auto& ev : events_) {
        CounterValue v = ev.info;
        if (ev.leader < 0) {
            out.push_back(std::move(v));
            continue;
        }
        const Leader& l = leaders_[size_t(ev.leader)];
        const GroupRead& r = reads[size_t(ev.leader)];
        if (!r.ok) {
            v.unavailable = r.error;
        } else {
            auto it = std::find_if(r.values.begin(), r.values.end(), [&](const auto& p) { return p.first == ev.id; });
            if (it == r.values.end()) {
                v.unavailable = "missing from its group's read";
            } else {
                ScaledCount s = scale_count(it->second, r.enabled - l.enabled_at_start, r.running - l.running_at_start);
                v.value = s.value;
                v.scaling = s.scaling;
                v.unavailable = s.unavailable;
            }
        }
        out.push_back(std::move(v));
    }
    return out;
}

bool CounterGroup::any_available() const {
    return std::any_of(events_.begin(), events_.end(), [](const Event& e) { return e.leader >= 0; });
}

std::vector<std::string> software_events() {
    return {"task-clock", "context-switches", "cpu-migrations", "page-faults"};
}

std::vector<std::string> countable_events(size_t max) {
    std::vector<std::string> candidates = {
        "task-clock",
        "cpu-clock",
        "context-switches",
        "cpu-migrations",
        "page-faults",
        "minor-faults",
        "major-faults",
        "cycles",
        "instructions",
        "ref-cycles",
        "bus-cycles",
        "branches",
        "branch-misses",
        "cache-references",
        "cache-misses",
        "LLC-loads",
        "LLC-load-misses",
        "LLC-stores",
        "LLC-store-misses",
        "L1-dcache-loads",
        "L1-dcache-load-misses",
        "dTLB-loads",
        "dTLB-load-misses",
        "iTLB-load-misses",
        "stalled-cycles-frontend",
        "stalled-cycles-backend",
    };
    try {
        pfm_init();
        for (const auto& pmu : present_pmus()) {
            if (pmu.name == "perf" || pmu.name == "perf_raw") continue;
            pfm_pmu_info_t info{};
            info.size = sizeof info;
            if (pfm_get_pmu_info(pmu.id, &info) != PFM_SUCCESS) continue;
            for (int e = info.first_event; e != -1; e = pfm_get_event_next(e)) {
                pfm_event_info_t ev{};
                ev.size = sizeof ev;
                if (pfm_get_event_info(e, PFM_OS_NONE, &ev) == PFM_SUCCESS)
                    candidates.push_back(pmu.name + "::" + ev.name);
            }
        }
    } catch (const std::exception&) {
        // Without libpfm4 there is nothing to encode; the loop below finds nothing.
    }
    std::vector<std::string> out;
    for (const auto& name : candidates) {
        if (out.size() >= max) break;
        try {
            EventEncoding enc = encode_event(name, Split::all);
            enc.attr.disabled = 1;
            int fd = perf_event_open(&enc.attr, 0, -1, -1);
            if (fd < 0 && (errno == EACCES || errno == EPERM)) {  // as CounterGroup: user mode still counts
                enc.attr.exclude_kernel = 1;
                enc.attr.exclude_hv = 1;
                fd = perf_event_open(&enc.attr, 0, -1, -1);
            }
            if (fd >= 0) {
                ::close(fd);
                out.push_back(name);
            }
        } catch (const std::exception&) {
        }
    }
    return out;
}

}  // namespace fb
