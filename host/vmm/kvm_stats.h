// KVM's binary statistics (Documentation/virt/kvm/api.rst, KVM_GET_STATS_FD, Linux 5.14+): the
// per-VM and per-vCPU counters debugfs shows, readable by the VMM itself. The layout is
// self-describing (header, descriptors, data), so it is read once and the data re-read per snapshot.
//
// Keys: a stat of one u64 is stored under its name ("exits", "halt_exits"); a stat of N > 1
// values (the linear and log2 histograms, per-level arrays) is stored element-wise as
// "name[0]" .. "name[N-1]", so nothing is lost and a sum is one loop away.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "host/vmm/vm.h"

namespace fb {

class Vcpu;

struct KvmStats {
    std::string id;  // the kernel's name, e.g. "kvm-1234/vcpu-0"
    std::map<std::string, uint64_t> values;
    std::string unavailable;  // why values is empty; "" when it is not
};

class KvmStatsReader {
public:
    // Refuses layouts beyond these: far above any kernel's (a few hundred stats, 48-byte names).
    static constexpr uint32_t kMaxDescriptors = 4096;
    static constexpr uint32_t kMaxNameBytes = 4096;
    static constexpr uint64_t kMaxDataBytes = 1ull << 20;

    // A reader that yields `unavailable` when the capability or the ioctl is missing.
    static KvmStatsReader for_vm(const Vm& vm);
    static KvmStatsReader for_vcpu(const Vm& vm, const Vcpu& vcpu);

    bool available() const { return unavailable_.empty(); }
    const std::string& unavailable() const { return unavailable_; }

    // One pread of the data block; the descriptors were read at construction.
    KvmStats snapshot() const;

private:
    struct Stat {
        std::string name;
        uint32_t offset = 0;  // within the data block
        uint16_t count = 0;   // u64 values
    };
    KvmStatsReader() = default;
    void open(int vm_or_vcpu_fd, const Vm& vm);
    void parse();

    UniqueFd fd_;
    std::string id_;
    std::vector<Stat> stats_;
    uint64_t data_offset_ = 0;
    uint64_t data_bytes_ = 0;
    std::string unavailable_;
};

}  // namespace fb
