#include "host/counters/kernel_probes.h"

#include <linux/perf_event.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include <fmt/format.h>

#include "host/sys/cpus.h"
#include "host/sys/perf_event.h"
#include "host/sys/sysfs.h"

namespace fb {
using nlohmann::json;

namespace {

constexpr const char* kRegister = "kvm_arch_register_noncoherent_dma";
constexpr const char* kUnregister = "kvm_arch_unregister_noncoherent_dma";
constexpr const char* kWbinvdExit = "kvm_emulate_wbinvd";

// The kprobe PMU's type number, or the reason there is none.
int kprobe_pmu_type(std::string& why) {
    auto t = read_sysfs_attr("/sys/bus/event_source/devices/kprobe/type");
    auto v = t ? parse_dec_u64(*t) : std::nullopt;
    if (!v) {
        why = "no kprobe PMU (/sys/bus/event_source/devices/kprobe): the kernel lacks CONFIG_KPROBE_EVENTS";
        return -1;
    }
    return int(*v);
}

std::string open_fix(int err, const char* function) {
    switch (err) {
        case EACCES:
        case EPERM:
            return "creating kprobes needs root (CAP_PERFMON and CAP_SYS_ADMIN)";
        case ENOENT:
        case EINVAL:
            return fmt::format("the kernel has no probe-able function {} (kvm module not loaded, or the function was renamed in this "
                               "kernel version)",
                               function);
        case EADDRNOTAVAIL:
            return fmt::format("{} names several kernel functions; kprobes refuse ambiguous names", function);
        default:
            return std::strerror(err);
    }
}

}  // namespace

KprobeCounter KprobeCounter::open(const char* function, Scope scope, int cpu) {
    std::string why;
    int type = kprobe_pmu_type(why);
    if (type < 0) throw std::runtime_error(why);
    auto open_one = [&](pid_t pid, int on_cpu) {
        perf_event_attr a{};
        a.size = sizeof a;
        a.type = uint32_t(type);
        a.config1 = reinterpret_cast<uint64_t>(function);  // kprobe_func
        a.config2 = 0;                                             // probe_offset
        a.inherit = scope == Scope::process;
        int fd = perf_event_open(&a, pid, on_cpu, -1);
        if (fd < 0) {
            int err = errno;
            throw std::runtime_error(fmt::format("kprobe on {}: {} ({})", function, std::strerror(err), open_fix(err, function)));
        }
        return UniqueFd(fd);
    };
    KprobeCounter k;
    switch (scope) {
        case Scope::process:
            k.fds_.push_back(open_one(0, -1));
            break;
        case Scope::host_cpu:
            k.fds_.push_back(open_one(-1, cpu));
            break;
        case Scope::host:
            for (int c : online_cpus()) k.fds_.push_back(open_one(-1, c));
            break;
    }
    return k;
}

uint64_t KprobeCounter::read() const {
    // An inherited counter's read sums the threads that inherited it (perf_event_read_value()).
    uint64_t total = 0;
    for (const auto& fd : fds_) {
        uint64_t v = 0;
        if (::read(fd.get(), &v, sizeof v) == ssize_t(sizeof v)) total += v;
    }
    return total;
}

uint64_t CoherencyCounts::flushes() const {
    uint64_t n = 0;
    for (const auto& [cpu, v] : flushes_per_cpu) n += v;
    return n;
}

CoherencyCounts CoherencyCounts::operator-(const CoherencyCounts& b) const {
    CoherencyCounts d;
    d.registered = registered - b.registered;
    d.unregistered = unregistered - b.unregistered;
    d.wbinvd_exits = wbinvd_exits - b.wbinvd_exits;
    for (const auto& [cpu, v] : flushes_per_cpu) {
        auto it = b.flushes_per_cpu.find(cpu);
        uint64_t n = v - (it == b.flushes_per_cpu.end() ? 0 : it->second);
        if (n) d.flushes_per_cpu[cpu] = n;
    }
    return d;
}

json to_json(const CoherencyCounts& c) {
    json per_cpu = json::object();
    for (const auto& [cpu, v] : c.flushes_per_cpu)
        if (v) per_cpu[std::to_string(cpu)] = v;
    return {{"register", c.registered}, {"unregister", c.unregistered}, {"wbinvd_exits", c.wbinvd_exits},
            {"wbinvd_flushes", c.flushes()}, {"wbinvd_flushes_per_cpu", per_cpu}};
}

CoherencyProbes CoherencyProbes::open(bool process_scope) {
    CoherencyProbes p;
    p.process_scope_ = process_scope;
    auto scope = process_scope ? KprobeCounter::Scope::process : KprobeCounter::Scope::host;
    try {
        p.registered_ = KprobeCounter::open(kRegister, scope);
        p.unregistered_ = KprobeCounter::open(kUnregister, scope);
        p.exits_ = KprobeCounter::open(kWbinvdExit, scope);
        std::string tried;
        for (const char* f : kFlushFunctions) {
            try {
                std::map<int, KprobeCounter> per_cpu;
                for (int c : online_cpus()) per_cpu.emplace(c, KprobeCounter::open(f, KprobeCounter::Scope::host_cpu, c));
                p.flushes_ = std::move(per_cpu);
                p.flush_function_ = f;
                break;
            } catch (const std::exception& e) {
                tried += fmt::format("{}{}", tried.empty() ? "" : "; ", e.what());
            }
        }
        if (p.flush_function_.empty()) throw std::runtime_error(tried);
    } catch (const std::exception& e) {
        CoherencyProbes none;
        none.unavailable_ = e.what();
        return none;
    }
    return p;
}

CoherencyCounts CoherencyProbes::read() const {
    CoherencyCounts c;
    if (!available()) return c;
    c.registered = registered_->read();
    c.unregistered = unregistered_->read();
    c.wbinvd_exits = exits_->read();
    for (const auto& [cpu, k] : flushes_) c.flushes_per_cpu[cpu] = k.read();
    return c;
}

json CoherencyProbes::describe() const {
    if (!available()) return {{"unavailable", unavailable_}};
    std::string scope = process_scope_ ? "this process's threads" : "host-wide";
    return {{"method", "kprobes (perf_event kprobe PMU)"},
            {"functions",
             {{"register", kRegister}, {"unregister", kUnregister}, {"wbinvd_exits", kWbinvdExit}, {"wbinvd_flushes", flush_function_}}},
            {"scope", {{"register", scope}, {"unregister", scope}, {"wbinvd_exits", scope}, {"wbinvd_flushes", "host-wide, per target CPU"}}}};
}

}  // namespace fb
