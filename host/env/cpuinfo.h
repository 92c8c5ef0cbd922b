// /proc/cpuinfo as the kernel reports the first CPU: its "key : value" lines, and whether the
// kernel lists a CPUID feature (common/x86/cpu_features.h) among its flags. Linux derives the
// flags from CPUID but may clear a bit it distrusts or was told to (clearcpuid=), so a flag here
// is the kernel's word; x86::has() is the CPU's.
#pragma once

#include <map>
#include <string>

#include "common/x86/cpu_features.h"

namespace fb {

using CpuInfo = std::map<std::string, std::string>;

// The first processor's block: all CPUs of one socket report the same model. Empty when the
// file cannot be read. proc_root lets tests point it at a fake tree.
CpuInfo read_cpuinfo(const std::string& proc_root = "/proc");

// Whether "flags" names the feature's Linux flag; false for a feature Linux prints no flag for.
bool cpuinfo_has(const CpuInfo& cpuinfo, x86::Feature feature);

}  // namespace fb
