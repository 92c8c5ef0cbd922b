// Host CPUs: which ones this process may use, pinning threads to one, and the CPU-list text form
// sysfs and taskset use. Every layer that places work on a CPU (vCPU, QEMU, neighbour, native)
// goes through here.
#pragma once

#include <sys/types.h>

#include <optional>
#include <span>
#include <string>
#include <vector>

namespace fb {

// Pins the calling thread to one CPU; std::runtime_error naming the allowed CPUs if it cannot.
void pin_current_thread(int cpu);
// Pins another thread (by kernel tid): how a watchdog migrates a vCPU thread stuck in KVM_RUN.
void pin_thread(pid_t tid, int cpu);
// The same without throwing, for a child between fork and exec: 0 or the errno.
int try_pin(pid_t tid, int cpu);
// Lets the calling thread run on every CPU the process may use (undoes a pin it inherited).
void unpin_current_thread();
// The CPUs this process may run on (sched_getaffinity), ascending.
std::vector<int> allowed_cpus();
// {0, 1, 2, 5} -> "0-2,5"; "none" for no CPU.
std::string cpu_list(std::span<const int> cpus);
// "0-3,8,10-11" -> {0, 1, 2, 3, 8, 10, 11}; nullopt on anything else.
std::optional<std::vector<int>> parse_cpu_list(const std::string& text);
// The CPU list in a sysfs file (e.g. .../cpu/online, .../cache/index3/shared_cpu_list).
std::optional<std::vector<int>> read_cpu_list(const std::string& file);
// Every online CPU of the host, whatever this process may run on: where host-wide events count.
std::vector<int> online_cpus();

}  // namespace fb
