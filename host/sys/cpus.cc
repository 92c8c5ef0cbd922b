#include "host/sys/cpus.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <stdexcept>
#include <system_error>

#include <fmt/format.h>

#include "host/sys/sysfs.h"

namespace fb {

int try_pin(pid_t tid, int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) return EINVAL;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(tid, sizeof set, &set) == 0 ? 0 : errno;
}

void pin_thread(pid_t tid, int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE)
        throw std::runtime_error(fmt::format("CPU {} does not exist: pick one of {}", cpu, cpu_list(allowed_cpus())));
    int err = try_pin(tid, cpu);
    if (err == 0) return;
    if (err == EINVAL)
        throw std::runtime_error(
            fmt::format("CPU {} does not exist or is outside this process's affinity: pick one of {}", cpu,
                        cpu_list(allowed_cpus())));
    throw std::system_error(err, std::generic_category(), fmt::format("sched_setaffinity to CPU {}", cpu));
}

void pin_current_thread(int cpu) { pin_thread(0, cpu); }

void unpin_current_thread() {
    cpu_set_t set;
    if (::sched_getaffinity(::getpid(), sizeof set, &set) == 0) ::sched_setaffinity(0, sizeof set, &set);
}

std::vector<int> allowed_cpus() {
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> cpus;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
    for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) cpus.push_back(c);
    return cpus;
}

std::string cpu_list(std::span<const int> cpus) {
    std::string s;
    for (size_t i = 0; i < cpus.size();) {
        size_t j = i;
        while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
        s += (s.empty() ? "" : ",") + (j == i ? std::to_string(cpus[i]) : fmt::format("{}-{}", cpus[i], cpus[j]));
        i = j + 1;
    }
    return s.empty() ? "none" : s;
}

std::optional<std::vector<int>> parse_cpu_list(const std::string& text) {
    std::vector<int> cpus;
    if (text.empty()) return cpus;
    size_t pos = 0;
    while (pos <= text.size()) {
        size_t comma = std::min(text.find(',', pos), text.size());
        std::string piece = text.substr(pos, comma - pos);
        size_t dash = piece.find('-');
        auto lo = parse_dec_u64(piece.substr(0, dash));
        auto hi = dash == std::string::npos ? lo : parse_dec_u64(piece.substr(dash + 1));
        if (!lo || !hi || *lo > *hi || *hi >= CPU_SETSIZE) return std::nullopt;
        for (uint64_t c = *lo; c <= *hi; ++c) cpus.push_back(int(c));
        pos = comma + 1;
    }
    return cpus;
}

std::optional<std::vector<int>> read_cpu_list(const std::string& file) {
    auto text = read_sysfs_attr(file);
    return text ? parse_cpu_list(*text) : std::nullopt;
}

std::vector<int> online_cpus() {
    auto cpus = read_cpu_list("/sys/devices/system/cpu/online");
    return cpus && !cpus->empty() ? *cpus : allowed_cpus();
}

}  // namespace fb
