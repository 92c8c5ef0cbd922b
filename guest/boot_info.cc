#include "guest/boot_info.h"

#include "common/boot.h"
#include "guest/paging.h"

namespace fb::guest {
namespace {

constexpr uint64_t kImageBase = boot::kImageBase;
constexpr uint64_t kMaxCmdline = 4096;
constexpr uint32_t kPvhMagic = 0x336ec578;
constexpr uint32_t kRamType = 1;  // e820 "usable", in Multiboot and PVH maps alike

template <typename T>
const T& at(uint64_t addr) { return *reinterpret_cast<const T*>(addr); }

Str c_string(uint64_t addr) {
    if (!addr) return {};
    const char* p = reinterpret_cast<const char*>(addr);
    size_t n = 0;
    while (n < kMaxCmdline && p[n]) ++n;
    return {p, n};
}

// The usable range that contains the image decides how much the kernel may use.
void consider(BootFacts& f, uint64_t base, uint64_t len, uint32_t type) {
    if (type != kRamType || base > kImageBase || base + len <= kImageBase) return;
    uint64_t end = base + len;
    f.ram_end = end > Paging::kMappedBytes ? Paging::kMappedBytes : end;
}

struct [[gnu::packed]] MultibootMmapEntry {
    uint32_t size;
    uint64_t addr, len;
    uint32_t type;
};

struct PvhMemmapEntry {
    uint64_t addr, size;
    uint32_t type, reserved;
};

}  // namespace

BootFacts read_boot_facts(Entry entry, uint64_t info) {
    BootFacts f{entry, {}};
    switch (entry) {
        case Entry::multiboot: {
            uint32_t flags = at<uint32_t>(info);
            if (flags & (1 << 2)) f.cmdline = c_string(at<uint32_t>(info + 16));
            if (flags & (1 << 6)) {
                uint64_t p = at<uint32_t>(info + 48), end = p + at<uint32_t>(info + 44);
                while (p < end) {
                    auto& e = at<MultibootMmapEntry>(p);
                    consider(f, e.addr, e.len, e.type);
                    p += e.size + 4;
                }
            } else if (flags & 1) {
                f.ram_end = kImageBase + uint64_t(at<uint32_t>(info + 8)) * 1024;
            }
            break;
        }
        case Entry::pvh: {
            if (at<uint32_t>(info) != kPvhMagic) {
                f.problem = "pvh-start-info-bad-magic";
                return f;
            }
            f.cmdline = c_string(at<uint64_t>(info + 24));
            if (at<uint32_t>(info + 4) >= 1) {  // memmap fields exist from version 1
                uint64_t map = at<uint64_t>(info + 40);
                uint32_t n = at<uint32_t>(info + 48);
                for (uint32_t i = 0; i < n && i < 128; ++i) {
                    auto& e = at<PvhMemmapEntry>(map + i * sizeof(PvhMemmapEntry));
                    consider(f, e.addr, e.size, e.type);
                }
            }
            break;
        }
        case Entry::direct: {
            auto& b = at<boot::BootInfo>(info);
            if (b.magic != boot::kDirectMagic || b.version != boot::kBootInfoVersion) {
                f.problem = "direct-boot-info-bad-magic-or-version";
                return f;
            }
            f.cmdline = c_string(b.cmdline_addr);
            f.record_port = b.record_port;
            consider(f, 0, b.mem_bytes, kRamType);
            break;
        }
    }
    if (!f.ram_end) f.problem = "no-memory-map-from-loader";
    return f;
}

}  // namespace fb::guest
