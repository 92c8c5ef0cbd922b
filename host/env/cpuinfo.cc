#include "host/env/cpuinfo.h"

#include <sstream>

#include "host/sys/sysfs.h"

namespace fb {

CpuInfo read_cpuinfo(const std::string& proc_root) {
    CpuInfo kv;
    auto text = read_sysfs_attr(proc_root + "/cpuinfo");
    if (!text) return kv;
    std::stringstream ss(*text);
    for (std::string line; std::getline(ss, line);) {
        if (line.find_first_not_of(" \t") == std::string::npos) break;
        auto colon = line.find(':');
        if (colon == std::string::npos) continue;
        kv[trim(line.substr(0, colon))] = trim(line.substr(colon + 1));
    }
    return kv;
}

namespace {

bool has_flag(const CpuInfo& cpuinfo, const std::string& flag) {
    auto it = cpuinfo.find("flags");
    if (it == cpuinfo.end()) return false;
    std::stringstream ss(it->second);
    for (std::string f; ss >> f;)
        if (f == flag) return true;
    return false;
}

}  // namespace

bool cpuinfo_has(const CpuInfo& cpuinfo, x86::Feature feature) {
    const x86::FeatureBit* b = x86::feature_bit(feature);
    return b && b->cpuinfo && has_flag(cpuinfo, b->cpuinfo);
}

}  // namespace fb
