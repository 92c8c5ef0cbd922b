#include "host/vmm/kvm_stats.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include <fmt/format.h>

#include "host/vmm/vcpu.h"

namespace fb {
namespace {

// pread until `bytes` arrived or the file ended; false on error or a short file.
bool pread_all(int fd, void* buf, size_t bytes, uint64_t offset) {
    auto* p = static_cast<uint8_t*>(buf);
    while (bytes) {
        ssize_t n = ::pread(fd, p, bytes, off_t(offset));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        p += n, bytes -= size_t(n), offset += uint64_t(n);
    }
    return true;
}

// struct kvm_stats_desc without its flexible name[]: Debian 12's uapi headers make C++ see it as
// 20 bytes with the name at offset 17 (a 1-byte empty struct from __DECLARE_FLEX_ARRAY); the
// kernel writes 16 bytes, then the name.
struct StatsDesc {
    uint32_t flags;
    int16_t exponent;
    uint16_t size;  // u64 values
    uint32_t offset;
    uint32_t bucket_size;
};
static_assert(sizeof(StatsDesc) == 16);

struct LayoutError {
    std::string why;
};

}  // namespace

KvmStatsReader KvmStatsReader::for_vm(const Vm& vm) {
    KvmStatsReader r;
    r.open(vm.fd(), vm);
    return r;
}

KvmStatsReader KvmStatsReader::for_vcpu(const Vm& vm, const Vcpu& vcpu) {
    KvmStatsReader r;
    r.open(vcpu.fd(), vm);
    return r;
}

void KvmStatsReader::open(int vm_or_vcpu_fd, const Vm& vm) {
    if (!vm.check_extension(KVM_CAP_BINARY_STATS_FD)) {
        unavailable_ = "KVM_CAP_BINARY_STATS_FD is absent (Linux before 5.14 or a KVM without binary stats)";
        return;
    }
    int fd = ::ioctl(vm_or_vcpu_fd, KVM_GET_STATS_FD, 0);
    if (fd < 0) {
        unavailable_ = fmt::format("KVM_GET_STATS_FD failed: {}", std::generic_category().message(errno));
        return;
    }
    fd_ = UniqueFd(fd);
    try {
        parse();
    } catch (const LayoutError& e) {
        stats_.clear();
        unavailable_ = "KVM stats fd has an unexpected layout: " + e.why;
    }
}

void KvmStatsReader::parse() {
    kvm_stats_header h{};
    if (!pread_all(fd_.get(), &h, sizeof h, 0)) throw LayoutError{"short header"};
    if (h.name_size == 0 || h.name_size > kMaxNameBytes) throw LayoutError{fmt::format("name_size {}", h.name_size)};
    if (h.num_desc > kMaxDescriptors) throw LayoutError{fmt::format("num_desc {}", h.num_desc)};

    std::vector<char> id(h.name_size);
    if (!pread_all(fd_.get(), id.data(), id.size(), h.id_offset)) throw LayoutError{"short id string"};
    id_.assign(id.data(), strnlen(id.data(), id.size()));

    // Each descriptor is the fixed part followed by name_size bytes of NUL-padded name.
    const size_t entry = sizeof(StatsDesc) + h.name_size;
    std::vector<uint8_t> descs(entry * h.num_desc);  // both bounded above: no overflow
    if (!pread_all(fd_.get(), descs.data(), descs.size(), h.desc_offset)) throw LayoutError{"short descriptor block"};

    data_offset_ = h.data_offset;
    data_bytes_ = 0;
    for (uint32_t i = 0; i < h.num_desc; ++i) {
        const uint8_t* d = descs.data() + i * entry;
        StatsDesc desc;
        std::memcpy(&desc, d, sizeof desc);
        const char* name = reinterpret_cast<const char*>(d + sizeof(StatsDesc));
        Stat s;
        s.name.assign(name, strnlen(name, h.name_size));
        s.offset = desc.offset;
        s.count = desc.size;
        if (s.name.empty()) throw LayoutError{fmt::format("descriptor {} has no name", i)};
        uint64_t end = uint64_t(s.offset) + uint64_t(s.count) * sizeof(uint64_t);
        if (end > kMaxDataBytes) throw LayoutError{fmt::format("{} ends at data byte {}", s.name, end)};
        if (s.count == 0) continue;
        data_bytes_ = std::max(data_bytes_, end);
        stats_.push_back(std::move(s));
    }
}

KvmStats KvmStatsReader::snapshot() const {
    KvmStats out;
    out.id = id_;
    if (!available()) {
        out.unavailable = unavailable_;
        return out;
    }
    std::vector<uint64_t> data(data_bytes_ / sizeof(uint64_t) + 1);
    if (!pread_all(fd_.get(), data.data(), data_bytes_, data_offset_)) {
        out.unavailable = "short read of the KVM stats data block";
        return out;
    }
    const auto* bytes = reinterpret_cast<const uint8_t*>(data.data());
    for (const Stat& s : stats_) {
        for (uint16_t k = 0; k < s.count; ++k) {
            uint64_t v;
            std::memcpy(&v, bytes + s.offset + k * sizeof(uint64_t), sizeof v);  // offsets need not be aligned
            out.values[s.count == 1 ? s.name : fmt::format("{}[{}]", s.name, k)] = v;
        }
    }
    return out;
}

}  // namespace fb
